"""Tests for torch_utils.custom_ops: CUDA discovery, build planning, locking, and a real tiny nvcc build."""

import os
import shutil
import stat
import subprocess
import sys
import time

import pytest
import torch

from torch_utils import custom_ops

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')

#----------------------------------------------------------------------------

def _fake_toolkit(root):
    """A folder that looks like a CUDA toolkit: bin/nvcc (a binary, not a script) and the runtime header."""
    os.makedirs(os.path.join(root, 'bin'))
    os.makedirs(os.path.join(root, 'include'))
    nvcc = os.path.join(root, 'bin', 'nvcc')
    with open(nvcc, 'wb') as f:
        f.write(b'\x7fELF fake')
    os.chmod(nvcc, 0o755)
    open(os.path.join(root, 'include', 'cuda_runtime_api.h'), 'w').close()
    return nvcc

def _wrapper(path, target):
    with open(path, 'w') as f:
        f.write(f'#!/bin/sh\nexec {target} "$@"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)

def test_find_cuda_home_through_wrapper_and_symlink(tmp_path, monkeypatch):
    real_nvcc = _fake_toolkit(str(tmp_path / 'cuda-99.1'))
    (tmp_path / 'wrappers').mkdir()
    _wrapper(str(tmp_path / 'wrappers' / 'nvcc-inner'), real_nvcc)
    _wrapper(str(tmp_path / 'wrappers' / 'nvcc-outer'), str(tmp_path / 'wrappers' / 'nvcc-inner'))
    (tmp_path / 'bin').mkdir()
    os.symlink(tmp_path / 'wrappers' / 'nvcc-outer', tmp_path / 'bin' / 'nvcc') # symlink -> wrapper -> wrapper
    monkeypatch.setenv('PATH', str(tmp_path / 'bin'))
    monkeypatch.delenv('CUDA_HOME', raising=False)
    monkeypatch.delenv('CUDA_PATH', raising=False)
    orig_is_toolkit = custom_ops._is_toolkit # hide this machine's /usr/local/cuda fallback
    monkeypatch.setattr(custom_ops, '_is_toolkit', lambda p: orig_is_toolkit(p) and not p.startswith('/usr/local'))
    assert custom_ops._resolve_nvcc(str(tmp_path / 'bin' / 'nvcc')) == os.path.realpath(real_nvcc)
    assert custom_ops.find_cuda_home() == os.path.realpath(str(tmp_path / 'cuda-99.1'))

    # An explicit, valid CUDA_HOME wins; an invalid one is ignored.
    other = tmp_path / 'other'
    _fake_toolkit(str(other))
    monkeypatch.setenv('CUDA_HOME', str(other))
    assert custom_ops.find_cuda_home() == str(other)
    monkeypatch.setenv('CUDA_HOME', str(tmp_path / 'does-not-exist'))
    assert custom_ops.find_cuda_home() == os.path.realpath(str(tmp_path / 'cuda-99.1'))
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    assert custom_ops.find_cuda_home() is None

def test_machine_nvcc_wrapper_resolves_to_toolkit():
    # On this project's machines /usr/local/bin/nvcc is a shell wrapper around the real toolkit's nvcc.
    nvcc = shutil.which('nvcc')
    if nvcc is None:
        pytest.skip('no nvcc on PATH')
    real = custom_ops._resolve_nvcc(nvcc)
    with open(real, 'rb') as f:
        assert not f.read(2) == b'#!' # resolved down to the binary
    home = custom_ops.find_cuda_home()
    assert home is not None and os.path.isfile(os.path.join(home, 'include', 'cuda_runtime_api.h'))

def test_pip_include_dirs_and_arch(tmp_path, monkeypatch):
    sp = tmp_path / 'site-packages'
    for pkg in ('cu13', 'cudnn', 'nccl'):
        (sp / 'nvidia' / pkg / 'include').mkdir(parents=True)
    monkeypatch.setattr(custom_ops, '_site_package_dirs', lambda: [str(sp)])
    assert custom_ops.find_pip_cuda_include_dirs() == [str(sp / 'nvidia' / 'cu13' / 'include'),
                                                       str(sp / 'nvidia' / 'cudnn' / 'include')]
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.6;9.0')
    assert custom_ops.default_arch_list() == '8.6;9.0'
    assert custom_ops._arch_key('8.6;9.0+PTX') == 'sm86_90PTX'
    monkeypatch.delenv('TORCH_CUDA_ARCH_LIST')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert custom_ops.default_arch_list() == '9.0'

def test_real_pip_headers_present_here():
    # The venv ships CUDA headers (cusparse.h, ...) that the system toolkit lacks; discovery must find them.
    dirs = custom_ops.find_pip_cuda_include_dirs()
    if torch.version.cuda is None:
        pytest.skip('CPU-only torch build: no nvidia pip packages expected')
    assert any(os.path.isfile(os.path.join(d, 'cusparse.h')) for d in dirs), dirs

#----------------------------------------------------------------------------

def test_plan_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(custom_ops.CustomOpsError, match='nope.cu'):
        custom_ops.get_plugin('x_plugin', ['nope.cu'], source_dir=str(tmp_path))
    (tmp_path / 'a.cu').write_text('// empty')
    monkeypatch.setattr(custom_ops, 'find_cuda_home', lambda: None)
    with pytest.raises(custom_ops.CustomOpsError, match='no CUDA toolkit found.*CUDA_HOME'):
        custom_ops.get_plugin('x_plugin', ['a.cu'], source_dir=str(tmp_path))
    fake = tmp_path / 'cuda'
    _fake_toolkit(str(fake))
    monkeypatch.setattr(custom_ops, 'find_cuda_home', lambda: str(fake))
    monkeypatch.setattr(custom_ops, 'find_pip_cuda_include_dirs', lambda: [])
    monkeypatch.delenv('CPATH', raising=False)
    with pytest.raises(custom_ops.CustomOpsError, match=r'cusparse\.h.*CPATH'):
        custom_ops.build_only('x_plugin', ['a.cu'], source_dir=str(tmp_path))
    assert 'x_plugin' not in custom_ops._cached_plugins

def test_plan_digest_tracks_sources_flags_and_arch(tmp_path, monkeypatch):
    fake = tmp_path / 'cuda'
    _fake_toolkit(str(fake))
    for h in ('cusparse.h', 'cublas_v2.h'):
        (fake / 'include' / h).write_text('')
    monkeypatch.setattr(custom_ops, 'find_cuda_home', lambda: str(fake))
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'ext'))
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '9.0')
    (tmp_path / 'k.cu').write_text('// v1')
    (tmp_path / 'k.h').write_text('// h1')
    plan = lambda **kw: custom_ops._plan('k_plugin', ['k.cu'], ['k.h'], str(tmp_path), kw)['build_dir']
    d1 = plan()
    assert d1.startswith(str(tmp_path / 'ext' / 'k_plugin') + os.sep) and d1.endswith('-sm90')
    assert plan() == d1
    assert plan(extra_cuda_cflags=['--use_fast_math']) != d1
    (tmp_path / 'k.h').write_text('// h2') # headers count
    d2 = plan()
    assert d2 != d1
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.0')
    assert plan().endswith('-sm80')

def test_file_lock_excludes_other_processes(tmp_path):
    lock = str(tmp_path / 'sub' / 'x.lock')
    probe = ('import fcntl, sys; f = open(sys.argv[1], "a+")\n'
             'try:\n    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB); print("free")\n'
             'except BlockingIOError:\n    print("held")\n')
    run = lambda: subprocess.run([sys.executable, '-c', probe, lock], capture_output=True, text=True).stdout.strip()
    with custom_ops._file_lock(lock):
        assert run() == 'held'
    assert run() == 'free'

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_build_tiny_extension(tmp_path_factory, monkeypatch):
    if shutil.which('nvcc') is None and custom_ops.find_cuda_home() is None:
        pytest.skip('no nvcc / CUDA toolkit on this machine')
    if torch.version.cuda is None:
        pytest.skip('CPU-only torch build cannot build CUDA extensions')
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path_factory.mktemp('torch_ext')))
    t0 = time.time()
    so_path = custom_ops.build_only('add_one_test_plugin', ['add_one.cpp', 'add_one.cu'], headers=['add_one.h'],
                                    source_dir=DATA, timeout=900)
    build_time = time.time() - t0
    assert os.path.isfile(so_path) and so_path.endswith('add_one_test_plugin.so')
    build_dir = os.path.dirname(so_path)
    assert set(os.listdir(build_dir)) >= {'add_one.cpp', 'add_one.cu', 'add_one.h', 'build.ninja'}
    assert 'add_one_test_plugin' not in sys.modules # not imported here

    # A second build_only is a no-op (ninja finds everything up to date).
    t0 = time.time()
    assert custom_ops.build_only('add_one_test_plugin', ['add_one.cpp', 'add_one.cu'], headers=['add_one.h'],
                                 source_dir=DATA) == so_path
    assert time.time() - t0 < max(build_time / 2, 30)

    if not torch.cuda.is_available():
        return # the library exists; running the kernel needs a GPU
    module = custom_ops.get_plugin('add_one_test_plugin', ['add_one.cpp', 'add_one.cu'], headers=['add_one.h'],
                                   source_dir=DATA)
    assert os.path.dirname(module.__file__) == build_dir # reused the build_only() result
    x = torch.randn(1000, device='cuda')
    torch.testing.assert_close(module.add_one(x), x + 1, rtol=0, atol=0)
    assert custom_ops.get_plugin('add_one_test_plugin', []) is module # cached per process

#----------------------------------------------------------------------------

def test_build_error_names_missing_header(tmp_path, monkeypatch):
    # nvcc fails within seconds on a missing #include, before any PyTorch header is parsed.
    if custom_ops.find_cuda_home() is None or torch.version.cuda is None:
        pytest.skip('no CUDA toolkit / CPU-only torch build')
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'ext'))
    (tmp_path / 'bad.cu').write_text('#include "missing_header_xyz.h"\n__global__ void k() {}\n')
    with pytest.raises(custom_ops.CustomOpsError) as info:
        custom_ops.build_only('bad_test_plugin', ['bad.cu'], source_dir=str(tmp_path), timeout=300)
    msg = str(info.value)
    assert 'bad_test_plugin' in msg and 'Missing header(s): missing_header_xyz.h' in msg
    assert 'CUDA_HOME=' in msg and 'TORCH_CUDA_ARCH_LIST=' in msg

#----------------------------------------------------------------------------
