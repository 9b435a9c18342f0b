"""Atomic writer for EG3D-layout dataset zips with 16-bit depth maps, labels and teacher embeddings."""

import contextlib
import errno
import io
import json
import os
import zipfile
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import PIL.Image

import dnnlib

DEPTH_SUFFIX = '_depth.png'
EMBEDDINGS_NAME = 'embeddings.npy'
DATASET_JSON = 'dataset.json'
DEPTH_MAX = 65535

#----------------------------------------------------------------------------
# Names (EG3D's dataset_tool: `<first 5 digits>/img<8 digits>.png`).

def image_fname(idx: int) -> str:
    idx_str = f'{idx:08d}'
    return f'{idx_str[:5]}/img{idx_str}.png'

def depth_fname(image_name: str) -> str:
    """`dir/stem.ext` -> `dir/stem_depth.png` (3DGP naming)."""
    return os.path.splitext(image_name)[0] + DEPTH_SUFFIX

def is_depth_fname(name: str) -> bool:
    return name.lower().endswith(DEPTH_SUFFIX)

def is_image_fname(name: str) -> bool:
    """Image files = PIL-known extensions, not depth maps, not hidden/metadata entries."""
    if name.endswith('/') or is_depth_fname(name) or os.path.basename(name).startswith('.'):
        return False
    PIL.Image.init()
    return os.path.splitext(name)[1].lower() in PIL.Image.EXTENSION

#----------------------------------------------------------------------------
# Encoding.

def encode_png(arr: np.ndarray) -> bytes:
    """uint8 HW / HWC (C = 1, 3, 4) or uint16 HW -> uncompressed PNG bytes (EG3D uses compress_level=0)."""
    if arr.dtype == np.uint16:
        if arr.ndim != 2:
            raise ValueError(f'16-bit PNGs must be single-channel HW, got shape {arr.shape}')
        img = PIL.Image.fromarray(arr) # mode I;16
    elif arr.dtype == np.uint8:
        img = PIL.Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    else:
        raise ValueError(f'encode_png(): expected uint8 or uint16, got {arr.dtype}')
    buf = io.BytesIO()
    img.save(buf, format='png', compress_level=0, optimize=False)
    return buf.getvalue()

def depth_to_uint16(depth: np.ndarray, lo: Optional[float] = None, hi: Optional[float] = None) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Quantise depth-like values (larger = farther) to [0, 65535]; per-image min-max unless lo/hi are given."""
    depth = np.asarray(depth, dtype=np.float64)
    if not np.all(np.isfinite(depth)):
        raise ValueError('depth map contains NaN or inf values')
    lo = float(depth.min()) if lo is None else float(lo)
    hi = float(depth.max()) if hi is None else float(hi)
    scale = DEPTH_MAX / (hi - lo) if hi > lo else 0.0 # constant map -> all zeros
    q = np.clip(np.rint((depth - lo) * scale), 0, DEPTH_MAX).astype(np.uint16)
    return q, (lo, hi)

def decode_depth_png(data: bytes, name: str = '<depth>') -> np.ndarray:
    """Depth PNG bytes -> uint16-range int32 HW. 8-bit maps are multiplied by 256 (3DGP), extra channels dropped."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = np.array(img)
    except Exception as err:
        raise IOError(f'{name}: cannot decode depth map ({type(err).__name__}: {err})') from None
    if arr.ndim == 3: # e.g. LeReS saved 2 channels: take the first
        arr = arr[:, :, 0]
    if arr.dtype == np.uint8:
        return arr.astype(np.int32) * 256
    if arr.dtype in (np.uint16, np.int32) or arr.dtype.str.endswith('u2') or arr.dtype.str.endswith('i4'):
        return np.clip(arr.astype(np.int32), 0, DEPTH_MAX)
    raise IOError(f'{name}: unsupported depth map dtype {arr.dtype}; expected an 8- or 16-bit grayscale PNG')

def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()

#----------------------------------------------------------------------------
# Atomic output.

class DiskFullError(IOError):
    """No space left while writing the output; the partial output was removed."""

def check_dest(dest: str, overwrite: bool) -> None:
    """Refuse a non-zip destination, a missing parent directory, or an existing file without overwrite."""
    if not str(dest).lower().endswith('.zip'):
        raise ValueError(f'--dest must be a .zip file path, got {dest!r}')
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f'Output directory does not exist: {parent}')
    if os.path.exists(dest) and not overwrite:
        raise FileExistsError(f'Output {dest!r} already exists; pass --overwrite to replace it')

class _Writer:
    def __init__(self, zf: zipfile.ZipFile):
        self.zf = zf
        self.names = set()

    def add(self, name: str, data: bytes) -> None:
        if name in self.names:
            raise ValueError(f'duplicate archive entry {name!r}')
        self.names.add(name)
        self.zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_STORED)

    def add_json(self, name: str, obj: Any) -> None:
        self.add(name, json.dumps(obj).encode('utf-8'))

    def add_npy(self, name: str, arr: np.ndarray) -> None:
        self.add(name, npy_bytes(arr))

@contextlib.contextmanager
def zip_writer(dest: str, overwrite: bool = False, check: bool = True) -> Iterator[_Writer]:
    """Write an uncompressed zip atomically (temp file + fsync + rename); on any error nothing lands at `dest`.

    A full disk (ENOSPC/EDQUOT) becomes a DiskFullError naming the destination.
    """
    if check:
        check_dest(dest, overwrite)
    try:
        with dnnlib.util.atomic_write(dest, 'wb') as f:
            with zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                yield _Writer(zf)
    except OSError as err:
        if err.errno in (errno.ENOSPC, getattr(errno, 'EDQUOT', errno.ENOSPC)):
            raise DiskFullError(f'No space left on device while writing {dest!r}; the partial output was removed '
                                f'and nothing was written under that name. Free space or choose another --dest.') from None
        raise

#----------------------------------------------------------------------------
# Reading and rewriting existing zips.

def open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f'Dataset zip not found: {path}') from None
    except (zipfile.BadZipFile, OSError) as err:
        raise IOError(f'{path}: not a readable zip file ({err})') from None

def read_dataset_json(zf: zipfile.ZipFile) -> Optional[Dict[str, Any]]:
    """The root `dataset.json` (or the only one anywhere in the archive), or None."""
    names = [n for n in zf.namelist() if os.path.basename(n) == DATASET_JSON]
    if not names:
        return None
    name = DATASET_JSON if DATASET_JSON in names else sorted(names, key=len)[0]
    try:
        return json.loads(zf.read(name).decode('utf-8'))
    except Exception as err:
        raise IOError(f'{zf.filename}: {name} is not valid JSON ({err})') from None

def list_images(zf: zipfile.ZipFile) -> list:
    return sorted(n for n in zf.namelist() if is_image_fname(n))

def rewrite_zip(src: str, dest: str, keep: Callable[[str], bool], fill: Callable[[_Writer], None], overwrite: bool) -> None:
    """Copy the entries of `src` accepted by `keep` byte for byte (no image re-encoding), then call `fill`
    to add new entries; written atomically to `dest` (which may equal `src`)."""
    in_place = os.path.abspath(src) == os.path.abspath(dest)
    with open_zip(src) as zin:
        with zip_writer(dest, overwrite=overwrite or in_place) as w:
            for info in zin.infolist():
                if not info.is_dir() and keep(info.filename):
                    w.add(info.filename, zin.read(info))
            fill(w)

#----------------------------------------------------------------------------
