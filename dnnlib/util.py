"""Miscellaneous utilities: EasyDict, logging, cache dirs, name resolution, URL/file access, atomic writes."""

import contextlib
import ctypes
import fnmatch
import functools
import hashlib
import importlib
import inspect
import json
import io
import os
import re
import shutil
import sys
import tempfile
import types
import urllib.parse
import urllib.request
from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np

#----------------------------------------------------------------------------
# Convenience dict with attribute access. Pickles reference it as `dnnlib.util.EasyDict`.

class EasyDict(dict):
    """Convenience class that behaves like a dict but allows access with the attribute syntax."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name)

#----------------------------------------------------------------------------
# Tee stdout/stderr into a log file.

class Logger(object):
    """Redirect sys.stdout and sys.stderr to this object; everything is written to the console and to a file."""

    def __init__(self, file_name: Optional[str] = None, file_mode: str = 'w', should_flush: bool = True):
        self.file = open(file_name, file_mode) if file_name is not None else None
        self.should_flush = should_flush
        self.stdout, self.stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self

    def __enter__(self) -> 'Logger':
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.close()

    def write(self, text: Union[str, bytes]) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        if len(text) == 0: # workaround for a bug in VSCode debugger: sys.stdout.write(''); sys.stdout.flush() => crash
            return
        if self.file is not None:
            self.file.write(text)
        self.stdout.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()
        self.stdout.flush()

    # Some libraries (faulthandler, subprocess, tqdm) probe these on sys.stdout.
    def fileno(self) -> int:
        return self.stdout.fileno()

    def isatty(self) -> bool:
        return bool(getattr(self.stdout, 'isatty', lambda: False)())

    @property
    def encoding(self) -> str:
        return getattr(self.stdout, 'encoding', 'utf-8')

    def close(self) -> None:
        self.flush()
        # Only restore the streams if nobody replaced them after us.
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None

#----------------------------------------------------------------------------
# Cache directories.

_dnnlib_cache_dir = None

def set_cache_dir(path: Optional[str]) -> None:
    """Override the cache folder of make_cache_dir_path() (None: back to $DNNLIB_CACHE_DIR / the default)."""
    global _dnnlib_cache_dir
    _dnnlib_cache_dir = path

def make_cache_dir_path(*paths: str) -> str:
    """Return a path inside the cache dir: set_cache_dir() > $DNNLIB_CACHE_DIR > $HOME/.cache/dnnlib >
    %USERPROFILE%/.cache/dnnlib > a temp dir."""
    if _dnnlib_cache_dir is not None:
        return os.path.join(_dnnlib_cache_dir, *paths)
    if 'DNNLIB_CACHE_DIR' in os.environ:
        return os.path.join(os.environ['DNNLIB_CACHE_DIR'], *paths)
    if 'HOME' in os.environ:
        return os.path.join(os.environ['HOME'], '.cache', 'dnnlib', *paths)
    if 'USERPROFILE' in os.environ:
        return os.path.join(os.environ['USERPROFILE'], '.cache', 'dnnlib', *paths)
    return os.path.join(tempfile.gettempdir(), '.cache', 'dnnlib', *paths)

#----------------------------------------------------------------------------
# Small helpers.

def format_time(seconds: Union[int, float]) -> str:
    """Convert seconds to a human-readable string: '5s', '1m 05s', '1h 02m 05s', '1d 01h 01m'."""
    s = int(np.rint(seconds))
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    if s < 60:
        return f'{s}s'
    if s < 3600:
        return f'{m}m {s % 60:02}s'
    return f'{s // 3600}h {m:02}m {s % 60:02}s' if s < 86400 else f'{d}d {h:02}h {m:02}m'

def format_time_brief(seconds: Union[int, float]) -> str:
    """Like format_time() without the least significant unit (except below one hour): '1h 02m', '1d 01h'."""
    s = int(np.rint(seconds))
    if s < 3600:
        return format_time(s)
    return f'{s // 3600}h {s // 60 % 60:02}m' if s < 86400 else f'{s // 86400}d {s // 3600 % 24:02}h'

def tuple_product(t: Tuple) -> Any:
    """Product of the elements of `t` (1 for an empty tuple)."""
    return functools.reduce(lambda a, b: a * b, t, 1)

_str_to_ctype = dict(uint8=ctypes.c_ubyte, uint16=ctypes.c_uint16, uint32=ctypes.c_uint32, uint64=ctypes.c_uint64,
                     int8=ctypes.c_byte, int16=ctypes.c_int16, int32=ctypes.c_int32, int64=ctypes.c_int64,
                     float32=ctypes.c_float, float64=ctypes.c_double)

def get_dtype_and_ctype(type_obj: Any) -> Tuple[np.dtype, Any]:
    """Given a type name string (or an object having a __name__ attribute), return matching Numpy and ctypes types."""
    type_str = type_obj if isinstance(type_obj, str) else getattr(type_obj, '__name__', None) or str(type_obj)
    if type_str not in _str_to_ctype:
        raise ValueError(f'Unsupported type {type_str!r}; expected one of {sorted(_str_to_ctype)}')
    return np.dtype(type_str), _str_to_ctype[type_str]

def is_pickleable(obj: Any) -> bool:
    """Whether pickle.dumps(obj) succeeds."""
    import pickle
    try:
        pickle.dumps(obj)
        return True
    except Exception:
        return False

#----------------------------------------------------------------------------
# Resolve objects by dotted name ("module.sub.Class"), trying the longest importable module prefix.

def get_module_from_obj_name(obj_name: str) -> Tuple[types.ModuleType, str]:
    """Search for the module that defines the dotted name; return (module, name relative to the module)."""
    obj_name = re.sub('^np.', 'numpy.', obj_name)
    obj_name = re.sub('^tf.', 'tensorflow.', obj_name)
    parts = obj_name.split('.')
    name_pairs = [('.'.join(parts[:i]), '.'.join(parts[i:])) for i in range(len(parts), 0, -1)]

    for module_name, local_obj_name in name_pairs:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Only "this prefix is not a module" is a reason to try a shorter prefix; a missing
            # dependency *inside* an existing module is a real error that must surface.
            if err.name is not None and not module_name.startswith(err.name):
                raise
            continue
        try:
            get_obj_from_module(module, local_obj_name)
        except AttributeError:
            continue
        return module, local_obj_name

    raise ImportError(f'Cannot resolve {obj_name!r}: no importable module prefix defines it')

def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    """Traverse the object name (possibly dotted) inside the module and return the object."""
    if obj_name == '':
        return module
    obj = module
    for part in obj_name.split('.'):
        obj = getattr(obj, part)
    return obj

def get_obj_by_name(name: str) -> Any:
    """Find a Python object given its fully qualified name."""
    module, obj_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, obj_name)

def call_func_by_name(*args, func_name: Optional[str] = None, **kwargs) -> Any:
    """Find the function by its fully qualified name and call it with the given arguments."""
    if func_name is None:
        raise ValueError('call_func_by_name(): func_name must be given')
    func_obj = get_obj_by_name(func_name)
    if not callable(func_obj):
        raise TypeError(f'{func_name!r} is not callable')
    return func_obj(*args, **kwargs)

def construct_class_by_name(*args, class_name: Optional[str] = None, **kwargs) -> Any:
    """Find the class by its fully qualified name and construct it with the given arguments."""
    return call_func_by_name(*args, func_name=class_name, **kwargs)

def get_module_dir_by_obj_name(obj_name: str) -> str:
    """Get the directory path of the module containing the given object name."""
    module, _ = get_module_from_obj_name(obj_name)
    return os.path.dirname(inspect.getfile(module))

def is_top_level_function(obj: Any) -> bool:
    """Is the given object a top-level function, i.e., defined at module scope?"""
    return callable(obj) and obj.__name__ in sys.modules[obj.__module__].__dict__

def get_top_level_function_name(obj: Any) -> str:
    """Return the fully-qualified name of a top-level function."""
    assert is_top_level_function(obj)
    module = obj.__module__
    if module == '__main__':
        module = os.path.splitext(os.path.basename(sys.modules[module].__file__))[0]
    return module + '.' + obj.__name__

#----------------------------------------------------------------------------
# File system helpers.

def list_dir_recursively_with_ignore(dir_path: str, ignores: Optional[List[str]] = None,
                                     add_base_to_relative: bool = False) -> List[Tuple[str, str]]:
    """List (absolute path, relative path) of all files under dir_path, skipping fnmatch patterns in ignores."""
    assert os.path.isdir(dir_path)
    base_name = os.path.basename(os.path.normpath(dir_path))
    ignores = ignores or []
    result = []
    for root, dirs, files in os.walk(dir_path, topdown=True):
        for pattern in ignores:
            dirs[:] = [d for d in dirs if not fnmatch.fnmatch(d, pattern)]
            files = [f for f in files if not fnmatch.fnmatch(f, pattern)]
        abs_paths = [os.path.join(root, f) for f in files]
        rel_paths = [os.path.relpath(p, dir_path) for p in abs_paths]
        if add_base_to_relative:
            rel_paths = [os.path.join(base_name, p) for p in rel_paths]
        result += zip(abs_paths, rel_paths)
    return result

def copy_files_and_create_dirs(files: List[Tuple[str, str]]) -> None:
    """Copy (src, dst) pairs, creating destination directories as needed."""
    for src, dst in files:
        os.makedirs(os.path.dirname(dst) or '.', exist_ok=True)
        shutil.copyfile(src, dst)

@contextlib.contextmanager
def atomic_write(path: Union[str, os.PathLike], mode: str = 'wb', **open_kwargs) -> Iterator[Any]:
    """Write a file atomically: readers see either the old file or the complete new one, never a partial one.

    Writes to a temp file in the same directory, flushes and fsyncs it, then os.replace()s it onto `path`
    and fsyncs the directory. On any error the temp file is deleted and `path` is untouched.
    """
    if not mode.startswith('w') or '+' in mode:
        raise ValueError(f'atomic_write(): mode must be a write mode such as "wb" or "w", got {mode!r}')
    path = os.fspath(path)
    dir_name = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(dir_name):
        raise FileNotFoundError(f'atomic_write(): directory does not exist: {dir_name}')
    fd, tmp_path = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=dir_name)
    try:
        # mkstemp creates files with mode 0600; give the result the permissions a plain open() would.
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    with contextlib.suppress(OSError): # directory fsync is not supported everywhere (e.g. Windows)
        dir_fd = os.open(dir_name, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

def append_jsonl(path: Union[str, os.PathLike], obj: dict) -> None:
    """Append one JSON line to a .jsonl file atomically (rewrite + rename via atomic_write), so a killed process
    never leaves a torn line; a torn last line left by another tool is dropped. Writers in other processes (e.g.
    calc_metrics.py on a run that is still training) are serialised by a lock on the folder (POSIX)."""
    with _folder_lock(os.path.dirname(os.path.abspath(path))):
        old = b''
        if os.path.isfile(path):
            with open(path, 'rb') as f:
                old = f.read()
            old = old[:old.rfind(b'\n') + 1]
        with atomic_write(path, 'wb') as f:
            f.write(old + (json.dumps(obj) + '\n').encode('utf-8'))

@contextlib.contextmanager
def _folder_lock(folder: str) -> Iterator[None]:
    """Exclusive flock on a folder's descriptor for the duration of the block (no lock file to leave behind)."""
    try:
        import fcntl
    except ImportError: # Windows: single-writer assumption
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd) # closing releases the lock

#----------------------------------------------------------------------------
# URLs and downloads.

class MissingWeightsError(FileNotFoundError):
    """A pretrained file (weights, detector, ...) is neither available locally nor downloadable."""

def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """Determine whether the given object is a valid URL string."""
    if not isinstance(obj, str) or '://' not in obj:
        return False
    if allow_file_urls and obj.startswith('file://'):
        return True
    try:
        res = urllib.parse.urlparse(obj)
        if not res.scheme or not res.netloc or '.' not in res.netloc:
            return False
        res = urllib.parse.urlparse(urllib.parse.urljoin(obj, '/'))
        if not res.scheme or not res.netloc or '.' not in res.netloc:
            return False
    except Exception:
        return False
    return True

def url_cache_path(url: str, cache_dir: Optional[str] = None) -> str:
    """Local path where open_url() stores (and looks for) the download of `url`."""
    if cache_dir is None:
        cache_dir = make_cache_dir_path('downloads')
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    url_name = os.path.basename(urllib.parse.urlparse(url).path) or 'download'
    safe_name = re.sub(r'[^0-9a-zA-Z._-]', '_', url_name)[:128]
    return os.path.join(cache_dir, f'{url_md5}_{safe_name}')

def _offline() -> bool:
    return os.environ.get('DNNLIB_OFFLINE', '0').lower() not in ('', '0', 'false', 'no')

def open_url(url: str, cache_dir: Optional[str] = None, num_attempts: int = 10, verbose: bool = True,
             return_filename: bool = False, cache: bool = True) -> Any:
    """Open a local path, a file:// URL or an http(s) URL (downloaded once into the cache dir) for binary reading.

    Raises MissingWeightsError (a FileNotFoundError) naming the URL and the local path where the file can be
    placed by hand when the file is missing or cannot be downloaded (e.g. offline, or $DNNLIB_OFFLINE=1).
    """
    assert num_attempts >= 1
    if return_filename and not cache:
        raise ValueError('open_url(): return_filename=True requires cache=True')

    # Plain paths and file:// URLs.
    if not re.match('^[a-z]+://', url):
        if not os.path.isfile(url):
            raise MissingWeightsError(f'File not found: {url!r} (no such local file; it is not a URL either)')
        return url if return_filename else open(url, 'rb')
    if url.startswith('file://'):
        filename = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
        if re.match(r'^/[a-zA-Z]:', filename): # file:///C:/... on Windows
            filename = filename[1:]
        if not os.path.isfile(filename):
            raise MissingWeightsError(f'File not found: {url} (looked at local path {filename})')
        return filename if return_filename else open(filename, 'rb')
    if not is_url(url):
        raise ValueError(f'open_url(): not a valid URL: {url!r}')

    # Reuse a cached download (a file placed there by hand counts too).
    cache_file = url_cache_path(url, cache_dir)
    if cache and os.path.isfile(cache_file):
        return cache_file if return_filename else open(cache_file, 'rb')

    def missing(reason: str) -> MissingWeightsError:
        return MissingWeightsError(f'Cannot obtain {url}: {reason}. Download it yourself and place it at: {cache_file}')

    if _offline():
        raise missing('offline mode ($DNNLIB_OFFLINE is set)')

    import requests # imported lazily so that `import dnnlib` stays light
    url_data, last_error = None, 'unknown error'
    if verbose:
        print(f'Downloading {url} ...', end='', flush=True)
    for _attempt in range(num_attempts):
        try:
            with requests.get(url, timeout=(10, 120)) as res:
                if 400 <= res.status_code < 500: # client errors will not go away by retrying
                    last_error = f'HTTP {res.status_code}'
                    break
                res.raise_for_status()
                if len(res.content) == 0:
                    raise IOError('No data received')
                url_data = res.content
                break
        except Exception as err: # network errors: retry
            last_error = f'{type(err).__name__}: {err}'
    if verbose:
        print(' done' if url_data is not None else ' failed')
    if url_data is None:
        raise missing(last_error)

    if cache:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with atomic_write(cache_file, 'wb') as f:
            f.write(url_data)
        if return_filename:
            return cache_file
    return io.BytesIO(url_data)

#----------------------------------------------------------------------------
