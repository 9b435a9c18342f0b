"""RGB-D training dataset: EG3D ImageFolderDataset plus 16-bit depth maps and teacher embeddings as extras."""

import io
import os
import struct
import zipfile
from typing import Dict, Optional

import numpy as np
import PIL.Image
import torch

from training.dataset import ImageFolderDataset

DEPTH_SUFFIX = '_depth.png'
EMBEDDINGS_NAME = 'embeddings.npy'

#----------------------------------------------------------------------------

def _memmap_npy_in_zip(zip_path: str, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map an uncompressed .npy member of a zip (no copy into RAM); compressed members are loaded."""
    if info.compress_type != zipfile.ZIP_STORED:
        with zipfile.ZipFile(zip_path) as zf:
            return np.load(io.BytesIO(zf.read(info)), allow_pickle=False)
    with open(zip_path, 'rb') as f:
        f.seek(info.header_offset)
        header = f.read(30)
        if header[:4] != b'PK\x03\x04':
            raise IOError(f'{zip_path}: bad local header for {info.filename}')
        name_len, extra_len = struct.unpack('<HH', header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    return np.memmap(zip_path, dtype=dtype, mode='r', offset=offset, shape=shape, order='F' if fortran else 'C')

#----------------------------------------------------------------------------

class RGBDDataset(ImageFolderDataset):
    """Items are `(img uint8 [3,H,W], label, extras)`; extras = {'depth': float32 [1,H,W] in [-1,1),
    'embedding': float32 [D]} for what the dataset has (or what is required).

    Depth: `<stem>_depth.png` (16-bit, larger = farther) -> v / 65536 * 2 - 1 (3DGP); x-flipped with the image.
    Embeddings: `embeddings.npy` [N, D] inside the zip (memory-mapped) or at `embeddings_path`, in image order;
    not flipped (3DGP).
    """

    def __init__(self,
        path:               str,                    # Folder or zip in the EG3D layout.
        resolution:         Optional[int] = None,   # Ensure specific resolution.
        use_depth:          Optional[bool] = None,  # None = when the dataset has depth maps.
        use_embeddings:     Optional[bool] = None,  # None = when the dataset has embeddings.
        require_depth:      bool = False,           # Error out if depth maps are missing.
        require_embeddings: bool = False,           # Error out if embeddings are missing.
        embeddings_path:    Optional[str] = None,   # .npy outside the dataset; overrides the one inside.
        **super_kwargs,                             # Arguments for training.dataset.Dataset.
    ):
        super().__init__(path, resolution, **super_kwargs)
        self._embeddings_path, self._embeddings = embeddings_path, None
        missing = [f for f in self._image_fnames if self._depth_fname(f) not in self._all_fnames]
        has_depth = len(missing) < len(self._image_fnames)
        self._use_depth = has_depth if use_depth is None else bool(use_depth)
        if (self._use_depth or require_depth) and missing:
            raise IOError(f'{path}: {len(missing)} of {len(self._image_fnames)} images have no depth map '
                          f'(e.g. {self._depth_fname(missing[0])!r}); add depth with `dataset_tool.py add-depth`')
        self._use_depth = self._use_depth or require_depth
        has_emb = embeddings_path is not None or EMBEDDINGS_NAME in self._all_fnames
        self._use_embeddings = has_emb if use_embeddings is None else bool(use_embeddings)
        if (self._use_embeddings or require_embeddings) and not has_emb:
            raise IOError(f'{path}: embeddings are required but the dataset has no {EMBEDDINGS_NAME}; '
                          f'add them with `dataset_tool.py add-embeddings` or pass embeddings_path')
        self._use_embeddings = self._use_embeddings or require_embeddings
        if self._use_embeddings:
            emb = self._get_embeddings()
            if emb.ndim != 2 or emb.shape[0] != len(self._image_fnames):
                raise IOError(f'{path}: embeddings have shape {list(emb.shape)} but the dataset has '
                              f'{len(self._image_fnames)} images; expected [{len(self._image_fnames)}, D] in image order')

    @staticmethod
    def _file_ext(fname: str) -> str:
        # Depth maps sit beside the images but are not training images.
        if fname.lower().endswith(DEPTH_SUFFIX):
            return DEPTH_SUFFIX
        return os.path.splitext(fname)[1].lower()

    def _get_zipfile(self) -> zipfile.ZipFile:
        # A zip handle inherited through fork (DataLoader workers) shares its file offset with the parent and
        # corrupts reads (Bad CRC-32): each process opens its own.
        if self._zipfile is not None and getattr(self, '_zip_pid', None) != os.getpid():
            self._zipfile = None
        self._zip_pid = os.getpid()
        return super()._get_zipfile()

    @staticmethod
    def _depth_fname(fname: str) -> str:
        return os.path.splitext(fname)[0] + DEPTH_SUFFIX

    def __getstate__(self):
        return dict(super().__getstate__(), _embeddings=None)

    def _get_embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            if self._embeddings_path is not None:
                if not os.path.isfile(self._embeddings_path):
                    raise IOError(f'Embeddings file not found: {self._embeddings_path}')
                self._embeddings = np.load(self._embeddings_path, mmap_mode='r', allow_pickle=False)
            elif self._type == 'zip':
                self._embeddings = _memmap_npy_in_zip(self._path, self._get_zipfile().getinfo(EMBEDDINGS_NAME))
            else:
                self._embeddings = np.load(os.path.join(self._path, EMBEDDINGS_NAME), mmap_mode='r', allow_pickle=False)
        return self._embeddings

    def _load_raw_depth(self, raw_idx: int) -> np.ndarray:
        """int32 [H,W] in [0, 65535]; 8-bit maps are scaled by 256 and extra channels dropped (3DGP)."""
        fname = self._depth_fname(self._image_fnames[raw_idx])
        try:
            with self._open_file(fname) as f:
                depth = np.array(PIL.Image.open(io.BytesIO(f.read())))
        except (OSError, ValueError, KeyError, PIL.UnidentifiedImageError) as e:
            raise IOError(f'{self._path}: cannot read depth map {fname!r} ({e})') from e
        if depth.ndim == 3:
            depth = depth[:, :, 0]
        depth = depth.astype(np.int32) * 256 if depth.dtype == np.uint8 else depth.astype(np.int32)
        if list(depth.shape) != self.image_shape[1:]:
            raise IOError(f'{self._path}: depth map {fname!r} is {depth.shape[1]}x{depth.shape[0]} but images are '
                          f'{self.image_shape[2]}x{self.image_shape[1]}')
        return depth

    def __getitem__(self, idx: int):
        image, label = super().__getitem__(idx)
        raw_idx, xflip = int(self._raw_idx[idx]), bool(self._xflip[idx])
        extras: Dict[str, torch.Tensor] = {}
        if self._use_depth:
            depth = self._load_raw_depth(raw_idx).astype(np.float32) / 65536 * 2 - 1
            if xflip:
                depth = depth[:, ::-1]
            extras['depth'] = torch.from_numpy(depth[np.newaxis].copy())
        if self._use_embeddings:
            extras['embedding'] = torch.from_numpy(np.array(self._get_embeddings()[raw_idx], dtype=np.float32))
        return image, label, extras

    @property
    def has_depth(self) -> bool:
        return self._use_depth

    @property
    def has_embeddings(self) -> bool:
        return self._use_embeddings

    @property
    def embedding_dim(self) -> int:
        return int(self._get_embeddings().shape[1]) if self._use_embeddings else 0

#----------------------------------------------------------------------------
