"""Lazy building and loading of the CUDA extensions used by torch_utils.ops (ninja + nvcc via PyTorch).

Builds go to `<torch extensions dir>/<module_name>/<md5 of sources, flags and archs>-<arch key>/`, guarded by
an fcntl lock so that concurrent ranks build once. The CUDA toolkit is located automatically (see
find_cuda_home), headers missing from it are taken from pip's `nvidia/cu*/include` folders, and the target
architectures default to the visible GPUs (9.0 when there is none), so extensions can be compiled on a
machine without a GPU and reused on a GPU machine with the same architecture.
"""

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import traceback
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

#----------------------------------------------------------------------------

verbosity = 'brief' # Verbosity level: 'none', 'brief', 'full'.

_cached_plugins = dict() # {module_name: module}

class CustomOpsError(RuntimeError):
    """A CUDA extension could not be set up; the message says which file, tool or variable is missing."""

#----------------------------------------------------------------------------
# CUDA discovery.

def _is_toolkit(path: Optional[str]) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, 'bin', 'nvcc')) \
        and os.path.isfile(os.path.join(path, 'include', 'cuda_runtime_api.h'))

def _resolve_nvcc(nvcc: str) -> str:
    """Follow symlinks and simple wrapper scripts (`exec /path/to/nvcc "$@"`) to the real nvcc binary."""
    for _ in range(8): # bounded: wrappers may chain, but never loop forever
        nvcc = os.path.realpath(nvcc)
        try:
            with open(nvcc, 'rb') as f:
                head = f.read(4096)
        except OSError:
            return nvcc
        if not head.startswith(b'#!'):
            return nvcc # a real executable
        # Absolute paths in the script whose file name mentions nvcc, e.g. `exec /usr/local/cuda-13.0/bin/nvcc "$@"`.
        targets = re.findall(rb'(/[^\s\'";=]*nvcc[^\s\'";/]*)', head)
        targets = [t for t in targets if os.path.realpath(t) != nvcc.encode()]
        targets = [t.decode() for t in targets if os.path.isfile(t)]
        if not targets:
            return nvcc
        nvcc = targets[0]
    return nvcc

def find_cuda_home() -> Optional[str]:
    """Root of the CUDA toolkit to build with, or None.

    Order: $CUDA_HOME / $CUDA_PATH if they hold a toolkit; the toolkit behind the `nvcc` on PATH (symlinks
    and wrapper scripts resolved); /usr/local/cuda.
    """
    for var in ('CUDA_HOME', 'CUDA_PATH'):
        if _is_toolkit(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which('nvcc')
    if nvcc is not None:
        home = os.path.dirname(os.path.dirname(_resolve_nvcc(nvcc)))
        if _is_toolkit(home):
            return home
    if _is_toolkit('/usr/local/cuda'):
        return os.path.realpath('/usr/local/cuda')
    return None

def _site_package_dirs() -> List[str]:
    dirs = [os.path.dirname(os.path.dirname(torch.__file__))] # site-packages holding this torch
    with contextlib.suppress(Exception):
        dirs += site.getsitepackages()
    with contextlib.suppress(Exception):
        dirs.append(site.getusersitepackages())
    dirs += [sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']]
    result = []
    for d in dirs:
        if d and os.path.isdir(d) and os.path.realpath(d) not in [os.path.realpath(r) for r in result]:
            result.append(d)
    return result

def find_pip_cuda_include_dirs() -> List[str]:
    """Header folders of pip's NVIDIA packages (`site-packages/nvidia/cu*/include`, e.g. nvidia/cu13/include)."""
    found = []
    for sp in _site_package_dirs():
        for d in sorted(glob.glob(os.path.join(sp, 'nvidia', 'cu*', 'include'))):
            if os.path.isdir(d) and d not in found:
                found.append(d)
    return found

def default_arch_list() -> str:
    """$TORCH_CUDA_ARCH_LIST, else the compute capabilities of the visible GPUs, else '9.0'."""
    env = os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if env:
        return env
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ';'.join(f'{major}.{minor}' for major, minor in caps)
    return '9.0'

def _arch_key(arch_list: str) -> str:
    return 'sm' + '_'.join(re.sub(r'[^0-9a-zA-Z]', '', a) for a in re.split(r'[;\s]+', arch_list) if a)

def extensions_root() -> str:
    """Folder under which extensions are built ($TORCH_EXTENSIONS_DIR or PyTorch's default location)."""
    root = os.environ.get('TORCH_EXTENSIONS_DIR')
    if root:
        return root
    cuda = (torch.version.cuda or 'cpu').replace('.', '')
    return os.path.join(os.path.expanduser('~'), '.cache', 'torch_extensions',
                        f'py{sys.version_info.major}{sys.version_info.minor}_cu{cuda}')

def _missing_headers(cuda_home: str, include_dirs: Sequence[str]) -> List[str]:
    """Names of the headers needed by <torch/extension.h> + CUDA that are found nowhere (empty = fine)."""
    missing = []
    for header in ('cuda_runtime_api.h', 'cusparse.h', 'cublas_v2.h'):
        dirs = [os.path.join(cuda_home, 'include')] + list(include_dirs)
        dirs += [d for d in os.environ.get('CPATH', '').split(os.pathsep) if d]
        if not any(os.path.isfile(os.path.join(d, header)) for d in dirs):
            missing.append(header)
    return missing

#----------------------------------------------------------------------------
# Build environment and locking.

@contextlib.contextmanager
def _build_env(cuda_home: str, include_dirs: Sequence[str], arch_list: str) -> Iterator[None]:
    """Temporarily point PyTorch's extension builder at the right toolkit, headers and archs."""
    import torch.utils.cpp_extension as cpp_ext
    saved_env = {k: os.environ.get(k) for k in ('CUDA_HOME', 'CPATH', 'TORCH_CUDA_ARCH_LIST')}
    saved_home = cpp_ext.CUDA_HOME
    try:
        os.environ['CUDA_HOME'] = cuda_home
        cpp_ext.CUDA_HOME = cuda_home # computed once at import time by PyTorch (often wrongly, e.g. /usr/local)
        cpath = [d for d in os.environ.get('CPATH', '').split(os.pathsep) if d]
        os.environ['CPATH'] = os.pathsep.join(cpath + [d for d in include_dirs if d not in cpath]) # user's first
        os.environ['TORCH_CUDA_ARCH_LIST'] = arch_list
        yield
    finally:
        cpp_ext.CUDA_HOME = saved_home
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """Exclusive inter-process lock; released by the OS if the holder dies (no stale locks)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'a+') as f:
        try:
            import fcntl
        except ImportError: # Windows: PyTorch's own FileLock inside load() still serialises builds
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)

#----------------------------------------------------------------------------

def _plan(module_name: str, sources: Sequence[str], headers: Sequence[str], source_dir: Optional[str],
          build_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Validate inputs and find everything the build needs; raises CustomOpsError naming what is missing."""
    if source_dir is not None:
        sources = [os.path.join(source_dir, fname) for fname in sources]
        headers = [os.path.join(source_dir, fname) for fname in headers]
    sources = [os.path.abspath(s) for s in sources]
    headers = [os.path.abspath(h) for h in headers]
    missing = [f for f in sources + headers if not os.path.isfile(f)]
    if missing:
        raise CustomOpsError(f'Cannot build {module_name!r}: source file(s) not found: {", ".join(missing)}')

    cuda_home = find_cuda_home()
    if cuda_home is None:
        raise CustomOpsError(f'Cannot build {module_name!r}: no CUDA toolkit found. Put nvcc on PATH or set CUDA_HOME '
                             f'to a folder containing bin/nvcc and include/cuda_runtime_api.h.')
    include_dirs = find_pip_cuda_include_dirs()
    missing_headers = _missing_headers(cuda_home, include_dirs)
    if missing_headers:
        raise CustomOpsError(f'Cannot build {module_name!r}: header(s) {", ".join(missing_headers)} not found in '
                             f'{os.path.join(cuda_home, "include")}, in $CPATH or in site-packages nvidia/cu*/include '
                             f'({", ".join(include_dirs) or "none found"}). Install the CUDA toolkit headers or add '
                             f'their folder to CPATH.')
    arch_list = default_arch_list()

    # The digest covers everything that changes the binary, so a stale build is never reused.
    md5 = hashlib.md5()
    for path in sources + headers:
        md5.update(os.path.basename(path).encode() + b'\0')
        with open(path, 'rb') as f:
            md5.update(f.read())
    md5.update(json.dumps([sorted((k, repr(v)) for k, v in build_kwargs.items()), arch_list,
                           torch.__version__]).encode())
    build_dir = os.path.join(extensions_root(), module_name, f'{md5.hexdigest()}-{_arch_key(arch_list)}')
    return dict(module_name=module_name, sources=sources, headers=headers, cuda_home=cuda_home,
                include_dirs=include_dirs, arch_list=arch_list, build_dir=build_dir, build_kwargs=build_kwargs)

def _build(plan: Dict[str, Any], import_module: bool) -> Tuple[Any, str]:
    """Compile (if needed) into plan['build_dir']; returns (module or None, path of the shared library)."""
    import torch.utils.cpp_extension as cpp_ext
    build_dir = plan['build_dir']
    all_files = plan['sources'] + plan['headers']
    with _file_lock(build_dir + '.lock'):
        # Compile copies in the digest folder when everything lives in one folder (relative #includes keep
        # working, and an edited source can never be mixed with an old build).
        sources = plan['sources']
        if len({os.path.dirname(f) for f in all_files}) == 1:
            os.makedirs(build_dir, exist_ok=True)
            for src in all_files:
                dst = os.path.join(build_dir, os.path.basename(src))
                if not os.path.isfile(dst):
                    shutil.copyfile(src, dst + '.tmp')
                    os.replace(dst + '.tmp', dst)
            sources = [os.path.join(build_dir, os.path.basename(f)) for f in plan['sources']]
        else:
            os.makedirs(build_dir, exist_ok=True)

        with _build_env(plan['cuda_home'], plan['include_dirs'], plan['arch_list']):
            try:
                module = cpp_ext.load(name=plan['module_name'], sources=sources, build_directory=build_dir,
                                      verbose=(verbosity == 'full'), **plan['build_kwargs'])
            except (ImportError, OSError) as err:
                so_path = os.path.join(build_dir, plan['module_name'] + '.so')
                if not import_module and os.path.isfile(so_path):
                    return None, so_path # compiled fine; only loading failed (e.g. no driver here)
                raise CustomOpsError(f'Built {plan["module_name"]!r} in {build_dir} but could not import it: {err}') from err
            except Exception as err:
                raise CustomOpsError(_explain_build_error(plan, err)) from err
    return module, getattr(module, '__file__', os.path.join(build_dir, plan['module_name'] + '.so'))

def _explain_build_error(plan: Dict[str, Any], err: Exception) -> str:
    text = str(err)
    missing = sorted(set(re.findall(r'fatal error: ([^\s:]+): No such file', text)))
    hint = f' Missing header(s): {", ".join(missing)} (add their folder to CPATH).' if missing else ''
    tail = '\n'.join(text.strip().splitlines()[-25:])
    return (f'Failed to build CUDA extension {plan["module_name"]!r} in {plan["build_dir"]} with '
            f'CUDA_HOME={plan["cuda_home"]}, TORCH_CUDA_ARCH_LIST={plan["arch_list"]}, extra include dirs='
            f'{plan["include_dirs"]}.{hint} Set torch_utils.custom_ops.verbosity = "full" for the full compiler '
            f'output. Last lines:\n{tail}')

#----------------------------------------------------------------------------

def get_plugin(module_name: str, sources: Sequence[str], headers: Optional[Sequence[str]] = None,
               source_dir: Optional[str] = None, **build_kwargs) -> Any:
    """Build (once, cached on disk and per process) and import a CUDA extension module.

    Args:
        module_name:  Name of the extension (the .cpp must use PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)).
        sources:      .cpp/.cu files, relative to source_dir if given.
        headers:      Extra files that the sources #include (they enter the cache digest).
        source_dir:   Folder of sources and headers.
        build_kwargs: Passed to torch.utils.cpp_extension.load (e.g. extra_cuda_cflags=['--use_fast_math']).

    Returns:
        The imported extension module.
    """
    assert verbosity in ['none', 'brief', 'full']
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]
    if verbosity == 'full':
        print(f'Setting up PyTorch plugin "{module_name}"...')
    elif verbosity == 'brief':
        print(f'Setting up PyTorch plugin "{module_name}"... ', end='', flush=True)
    try:
        plan = _plan(module_name, list(sources), list(headers or []), source_dir, build_kwargs)
        module, _ = _build(plan, import_module=True)
    except BaseException:
        if verbosity == 'brief':
            print('Failed!')
        raise
    if verbosity == 'full':
        print(f'Done setting up PyTorch plugin "{module_name}".')
    elif verbosity == 'brief':
        print('Done.')
    _cached_plugins[module_name] = module
    return module

class LazyPlugin:
    """The CUDA extension of one op (`<op>.cpp`, `<op>.cu`, `<op>.h` in `source_dir`), built on first use, never at
    import. A failed build warns once (with the traceback) and the op keeps using its reference implementation."""

    def __init__(self, op_name: str, source_dir: str, extra_cuda_cflags: Sequence[str] = ('--use_fast_math',)):
        self.op_name = op_name
        self.kwargs = dict(module_name=f'{op_name}_plugin', sources=[f'{op_name}.cpp', f'{op_name}.cu'],
                           headers=[f'{op_name}.h'], source_dir=source_dir, extra_cuda_cflags=list(extra_cuda_cflags))
        self.module: Any = None
        self.failed = False

    def ready(self) -> bool:
        """Build/load the extension once; False (now and on every later call) if that failed."""
        if self.module is None and not self.failed:
            try:
                self.module = get_plugin(**self.kwargs)
            except Exception: # any build/import problem -> reference fallback
                warnings.warn(f'Failed to build CUDA kernels for {self.op_name}; falling back to the slow reference '
                              'implementation. Details:\n\n' + traceback.format_exc(), stacklevel=3)
                self.failed = True
        return self.module is not None

def ref_forced() -> bool:
    """True when the environment variable EG3D_OPS_IMPL=ref forces every op onto its reference implementation."""
    return os.environ.get('EG3D_OPS_IMPL', '').lower() == 'ref'

def build_only(module_name: str, sources: Sequence[str], headers: Optional[Sequence[str]] = None,
               source_dir: Optional[str] = None, timeout: Optional[float] = None, **build_kwargs) -> str:
    """Compile an extension exactly as get_plugin() would (same folder, so get_plugin() reuses it) without
    importing it into this process; works without a GPU. Returns the path of the built shared library.

    torch.utils.cpp_extension.load() always imports what it builds, and its build-only internals are private,
    so the build runs in a child Python process; a failure to import there (e.g. no CUDA driver) is tolerated
    once the library exists. Build errors are re-raised here as CustomOpsError.
    """
    plan = _plan(module_name, list(sources), list(headers or []), source_dir, build_kwargs) # fail fast, clearly
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = json.dumps(dict(module_name=module_name, sources=plan['sources'], headers=plan['headers'],
                           build_kwargs=build_kwargs, verbosity=verbosity))
    code = 'import sys; sys.path.insert(0, sys.argv[2]); from torch_utils import custom_ops; custom_ops._build_only_main(sys.argv[1])'
    out = subprocess.run([sys.executable, '-c', code, args, root], capture_output=True, text=True, timeout=timeout)
    if verbosity == 'full':
        print(out.stdout, end='')
    for line in out.stdout.splitlines():
        if line.startswith('@@BUILT@@'):
            return line[len('@@BUILT@@'):]
        if line.startswith('@@ERROR@@'):
            raise CustomOpsError(json.loads(line[len('@@ERROR@@'):]))
    tail = '\n'.join((out.stdout + out.stderr).strip().splitlines()[-40:])
    raise CustomOpsError(f'build_only({module_name!r}) failed (exit code {out.returncode}):\n{tail}')

def _build_only_main(args_json: str) -> None:
    """Entry point of the child process started by build_only(); reports on stdout with markers."""
    global verbosity
    args = json.loads(args_json)
    verbosity = args['verbosity']
    try:
        plan = _plan(args['module_name'], args['sources'], args['headers'], None, args['build_kwargs'])
        _, path = _build(plan, import_module=False)
    except CustomOpsError as err:
        print('@@ERROR@@' + json.dumps(str(err)), flush=True)
        return
    print('@@BUILT@@' + path, flush=True)

#----------------------------------------------------------------------------
