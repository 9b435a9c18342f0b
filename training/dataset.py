"""Image datasets in the EG3D/StyleGAN layout: a folder or uncompressed zip of images plus an optional dataset.json."""

import json
import os
import zipfile
from typing import Any, Optional

import numpy as np
import PIL.Image
import torch

import dnnlib

try:
    import pyspng  # optional fast PNG decoder
except ImportError:
    pyspng = None

#----------------------------------------------------------------------------
# Abstract base: labels, max_size subsetting, x-flip doubling.

class Dataset(torch.utils.data.Dataset):
    def __init__(self,
        name:        str,           # Name of the dataset.
        raw_shape:   list,          # Shape of the raw image data (NCHW).
        max_size:    Optional[int] = None,  # Artificially limit the size of the dataset. None = no limit.
        use_labels:  bool = False,  # Enable conditioning labels? False = label dimension is zero.
        xflip:       bool = False,  # Artificially double the size of the dataset via x-flips.
        random_seed: int = 0,       # Random seed to use when applying max_size.
    ):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._raw_labels_std = None
        self._label_shape = None

        # Subset: a random choice of max_size items, kept in sorted order (applied before xflip).
        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if (max_size is not None) and (self._raw_idx.size > max_size):
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])

        # x-flip: second half of the dataset repeats the first half, mirrored (labels unchanged).
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    def _get_raw_labels(self) -> np.ndarray:
        if self._raw_labels is None:
            self._raw_labels = self._load_raw_labels() if self._use_labels else None
            if self._raw_labels is None:
                self._raw_labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            if self._raw_labels.dtype not in (np.float32, np.int64) or self._raw_labels.shape[0] != self._raw_shape[0]:
                raise ValueError(f'{self._name}: labels must be float32 [N, D] or int64 [N] with N = {self._raw_shape[0]}')
            if self._raw_labels.dtype == np.int64 and (self._raw_labels.ndim != 1 or np.any(self._raw_labels < 0)):
                raise ValueError(f'{self._name}: class labels must be non-negative integers, one per image')
            self._raw_labels_std = self._raw_labels.std(0)
        return self._raw_labels

    def close(self) -> None:  # to be overridden by subclass
        pass

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:  # to be overridden by subclass
        raise NotImplementedError

    def _load_raw_labels(self) -> Optional[np.ndarray]:  # to be overridden by subclass
        raise NotImplementedError

    def __getstate__(self):
        # Workers re-read labels lazily; raw label arrays can be large.
        return dict(self.__dict__, _raw_labels=None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __len__(self) -> int:
        return self._raw_idx.size

    def __getitem__(self, idx: int):
        image = self._load_raw_image(self._raw_idx[idx])
        assert isinstance(image, np.ndarray)
        if list(image.shape) != self.image_shape:
            raise IOError(f'{self._name}: image {self._raw_idx[idx]} has shape {list(image.shape)}, '
                          f'expected {self.image_shape} like the first image')
        assert image.dtype == np.uint8
        if self._xflip[idx]:
            assert image.ndim == 3  # CHW
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            label = onehot
        return label.copy()

    def get_details(self, idx: int) -> Any:
        d = dict(raw_idx=int(self._raw_idx[idx]), xflip=(int(self._xflip[idx]) != 0),
                 raw_label=self._get_raw_labels()[self._raw_idx[idx]].copy())
        return dnnlib.EasyDict(d)

    def get_label_std(self) -> np.ndarray:
        self._get_raw_labels()
        return self._raw_labels_std

    @property
    def name(self) -> str:
        return self._name

    @property
    def image_shape(self) -> list:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        assert len(self.image_shape) == 3  # CHW
        return self.image_shape[0]

    @property
    def resolution(self) -> int:
        assert len(self.image_shape) == 3  # CHW
        if self.image_shape[1] != self.image_shape[2]:
            raise IOError(f'{self._name}: images are {self.image_shape[2]}x{self.image_shape[1]}, '
                          f'but training needs square images')
        return self.image_shape[1]

    @property
    def label_shape(self) -> list:
        if self._label_shape is None:
            raw_labels = self._get_raw_labels()
            if raw_labels.dtype == np.int64:
                self._label_shape = [int(np.max(raw_labels)) + 1]
            else:
                self._label_shape = list(raw_labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self) -> bool:
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self) -> bool:
        return self._get_raw_labels().dtype == np.int64

#----------------------------------------------------------------------------
# Folder or zip of images.

class ImageFolderDataset(Dataset):
    """Images of a folder or zip, sorted by path. Side files that share an image extension but are not training images
    (RGB-D depth maps `<stem>_depth.png`, macOS `._*` resource forks) are not listed, so RGB-D zips work in EG3D
    tools and metrics. The zip is opened lazily by each process (forked DataLoader workers must not share a handle)."""

    side_file_suffixes = ('_depth.png',) # lower-case name endings of non-image files with image extensions

    def __init__(self,
        path:       str,                    # Path to directory or zip.
        resolution: Optional[int] = None,   # Ensure specific resolution, None = highest available.
        **super_kwargs,                     # Additional arguments for the Dataset base class.
    ):
        self._path = path
        self._zipfile = None
        self._zip_pid = None

        if os.path.isdir(self._path):
            self._type = 'dir'
            self._all_fnames = {os.path.relpath(os.path.join(root, fname), start=self._path)
                                for root, _dirs, files in os.walk(self._path) for fname in files}
        elif self._file_ext(self._path) == '.zip' and os.path.isfile(self._path):
            self._type = 'zip'
            try:
                self._all_fnames = set(self._get_zipfile().namelist())
            except zipfile.BadZipFile as e:
                raise IOError(f'{path}: not a valid zip archive ({e})') from e
        else:
            raise IOError(f'Path must point to a directory or zip: {path!r}')

        PIL.Image.init()
        self._image_fnames = sorted(f for f in self._all_fnames if self.is_image_file(f))
        if len(self._image_fnames) == 0:
            raise IOError(f'No image files found in the specified path: {path!r}')

        name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        raw_shape = [len(self._image_fnames)] + list(self._load_raw_image(0).shape)
        if resolution is not None and (raw_shape[2] != resolution or raw_shape[3] != resolution):
            raise IOError(f'{path}: images are {raw_shape[3]}x{raw_shape[2]}, expected {resolution}x{resolution} '
                          f'(first image {self._image_fnames[0]!r})')
        super().__init__(name=name, raw_shape=raw_shape, **super_kwargs)

    @staticmethod
    def _file_ext(fname: str) -> str:
        return os.path.splitext(fname)[1].lower()

    @classmethod
    def is_image_file(cls, fname: str) -> bool:
        """A training image: PIL-readable extension, not a side file (depth map) and not a macOS `._*` fork."""
        low = fname.replace('\\', '/').lower()
        base = os.path.basename(low)
        if base.startswith('._') or low.startswith('__macosx/') or '/__macosx/' in low:
            return False
        return cls._file_ext(low) in PIL.Image.EXTENSION and not low.endswith(tuple(cls.side_file_suffixes))

    def _get_zipfile(self) -> zipfile.ZipFile:
        assert self._type == 'zip'
        # A handle inherited through fork shares its file offset with the parent process: concurrent reads then
        # fail with "Bad CRC-32". Each process therefore opens its own.
        if self._zipfile is not None and self._zip_pid != os.getpid():
            self._zipfile = None
        if self._zipfile is None:
            self._zipfile = zipfile.ZipFile(self._path)
            self._zip_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname: str):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    # Public file access for subclasses and tools (e.g. RGB-D side files, embeddings).
    @property
    def path(self) -> str:
        return self._path

    @property
    def image_fnames(self) -> list:
        """Relative paths of the images, in raw-index order (the dataset's own list: do not modify)."""
        return self._image_fnames

    def has_file(self, fname: str) -> bool:
        return fname in self._all_fnames

    def open_file(self, fname: str):
        """Binary file object for a file of the dataset (relative path as listed); use as a context manager."""
        return self._open_file(fname)

    def zip_info(self, fname: str) -> Optional[zipfile.ZipInfo]:
        """The zip member's ZipInfo (offsets, compression), or None for folder datasets."""
        return self._get_zipfile().getinfo(fname) if self._type == 'zip' else None

    def close(self) -> None:
        try:
            if self._zipfile is not None and self._zip_pid == os.getpid():
                self._zipfile.close()
        finally:
            self._zipfile = None

    def __getstate__(self):
        # Zip handles cannot cross process boundaries; each worker re-opens lazily.
        return dict(super().__getstate__(), _zipfile=None)

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                if pyspng is not None and self._file_ext(fname) == '.png':
                    image = pyspng.load(f.read())
                else:
                    image = np.array(PIL.Image.open(f))
        except (OSError, ValueError, PIL.UnidentifiedImageError) as e:
            raise IOError(f'{self._path}: cannot read image {fname!r} ({e})') from e
        if image.ndim == 2:
            image = image[:, :, np.newaxis]  # HW => HWC
        if image.dtype != np.uint8:
            raise IOError(f'{self._path}: image {fname!r} has dtype {image.dtype}, expected 8-bit')
        return image.transpose(2, 0, 1)  # HWC => CHW

    def _load_raw_labels(self) -> Optional[np.ndarray]:
        fname = 'dataset.json'
        if fname not in self._all_fnames:
            return None
        with self._open_file(fname) as f:
            try:
                labels = json.load(f).get('labels')
            except (ValueError, AttributeError) as e:
                raise ValueError(f'{self._path}: dataset.json is not a JSON object with a "labels" key ({e})') from e
        if labels is None:
            return None
        labels = {str(k).replace('\\', '/'): v for k, v in labels}
        keys = [f.replace('\\', '/') for f in self._image_fnames]
        missing = [k for k in keys if k not in labels]
        if missing:
            raise ValueError(f'{self._path}: dataset.json has no label for {len(missing)} image(s), '
                             f'e.g. {missing[0]!r}')
        values = [labels[k] for k in keys]
        try:
            labels = np.array(values)
        except ValueError as e:  # ragged lists
            raise ValueError(f'{self._path}: labels in dataset.json differ in length ({e})') from e
        if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
            return labels.astype(np.int64)
        if labels.ndim == 2 and np.issubdtype(labels.dtype, np.number):
            return labels.astype(np.float32)
        raise ValueError(f'{self._path}: labels must all be integers (classes) or equal-length lists of numbers; '
                         f'got array of shape {labels.shape} and dtype {labels.dtype}')

#----------------------------------------------------------------------------
