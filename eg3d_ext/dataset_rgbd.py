"""RGB-D training dataset: EG3D ImageFolderDataset plus 16-bit depth maps and teacher embeddings as extras."""

import io
import os
import struct
import zipfile
from typing import Dict, Optional

import numpy as np
import torch

from eg3d_ext.datasets.zip_writer import EMBEDDINGS_NAME, decode_depth_png, depth_fname
from training.dataset import ImageFolderDataset

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
        fnames = self.image_fnames
        missing = [f for f in fnames if not self.has_file(depth_fname(f))]
        has_depth = len(missing) < len(fnames)
        self._use_depth = has_depth if use_depth is None else bool(use_depth)
        if (self._use_depth or require_depth) and missing:
            raise IOError(f'{path}: {len(missing)} of {len(fnames)} images have no depth map '
                          f'(e.g. {depth_fname(missing[0])!r}); add depth with `dataset_tool.py add-depth`')
        self._use_depth = self._use_depth or require_depth
        has_emb = embeddings_path is not None or self.has_file(EMBEDDINGS_NAME)
        self._use_embeddings = has_emb if use_embeddings is None else bool(use_embeddings)
        if (self._use_embeddings or require_embeddings) and not has_emb:
            raise IOError(f'{path}: embeddings are required but the dataset has no {EMBEDDINGS_NAME}; '
                          f'add them with `dataset_tool.py add-embeddings` or pass embeddings_path')
        self._use_embeddings = self._use_embeddings or require_embeddings
        if self._use_embeddings:
            emb = self._get_embeddings()
            if emb.ndim != 2 or emb.shape[0] != len(fnames):
                raise IOError(f'{path}: embeddings have shape {list(emb.shape)} but the dataset has '
                              f'{len(fnames)} images; expected [{len(fnames)}, D] in image order')

    # The base class already skips `*_depth.png` side files and opens the zip once per process.

    def __getstate__(self):
        return dict(super().__getstate__(), _embeddings=None)

    def _get_embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            if self._embeddings_path is not None:
                if not os.path.isfile(self._embeddings_path):
                    raise IOError(f'Embeddings file not found: {self._embeddings_path}')
                self._embeddings = np.load(self._embeddings_path, mmap_mode='r', allow_pickle=False)
            elif self.zip_info(EMBEDDINGS_NAME) is not None:
                self._embeddings = _memmap_npy_in_zip(self.path, self.zip_info(EMBEDDINGS_NAME))
            else:
                self._embeddings = np.load(os.path.join(self.path, EMBEDDINGS_NAME), mmap_mode='r', allow_pickle=False)
        return self._embeddings

    def _load_raw_depth(self, raw_idx: int) -> np.ndarray:
        """int32 [H,W] in [0, 65535]; 8-bit maps are scaled by 256 and extra channels dropped (3DGP)."""
        fname = depth_fname(self.image_fnames[raw_idx])
        try:
            with self.open_file(fname) as f:
                data = f.read()
        except (OSError, KeyError) as e:
            raise IOError(f'{self.path}: cannot read depth map {fname!r} ({e})') from e
        depth = decode_depth_png(data, f'{self.path}: depth map {fname!r}')
        if list(depth.shape) != self.image_shape[1:]:
            raise IOError(f'{self.path}: depth map {fname!r} is {depth.shape[1]}x{depth.shape[0]} but images are '
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
