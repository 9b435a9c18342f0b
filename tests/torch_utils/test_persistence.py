"""Tests for torch_utils.persistence: v6 pickle layout, loading without the defining module, hooks, deepcopy."""

import copy
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import dnnlib
from torch_utils import persistence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODULE_SRC = textwrap.dedent('''
    """Temporary network module for persistence tests."""
    import numpy as np
    import torch
    import dnnlib
    from torch_utils import persistence

    @persistence.persistent_class
    class TinyNet(torch.nn.Module):
        def __init__(self, in_dim, out_dim, cfg=None):
            super().__init__()
            self.fc = torch.nn.Linear(in_dim, out_dim)
            self.register_buffer('offset', torch.arange(out_dim, dtype=torch.float32))
            self.gain = float(np.sqrt(2))
            self.cfg = cfg
            self.child = Scale(out_dim)

        def forward(self, x):
            return self.child(self.fc(x) * self.gain + self.offset)

    @persistence.persistent_class
    class Scale(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.linspace(0.5, 1.5, dim))

        def forward(self, x):
            return x * self.scale
''')

def _write_module(tmp_path, name):
    path = tmp_path / f'{name}.py'
    path.write_text(MODULE_SRC)
    return path

def _import_fresh(tmp_path, name, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    return importlib.import_module(name)

def _globals_in_pickle(data: bytes):
    """Memo-aware scan of all global references (GLOBAL and STACK_GLOBAL) in a pickle."""
    found, memo, recent = set(), {}, []
    last = None # value pushed by the previous opcode (None if not a string)
    for op, arg, _pos in pickletools.genops(data):
        if op.name == 'GLOBAL':
            found.add(arg.replace(' ', '.'))
        elif op.name == 'STACK_GLOBAL':
            found.add(f'{recent[-2]}.{recent[-1]}')
        if op.name == 'MEMOIZE':
            memo[len(memo)] = last
            continue
        if op.name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
            memo[arg] = last
            continue
        if op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE', 'BINUNICODE8'):
            last = arg
        elif op.name in ('GET', 'BINGET', 'LONG_BINGET'):
            last = memo.get(arg)
        else:
            last = None
        if last is not None:
            recent.append(last)
    return found

def _find_meta(obj):
    """Decode the pickle with a recorder in place of _reconstruct_persistent_obj (no source is executed)."""
    metas = []
    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ('torch_utils.persistence', '_reconstruct_persistent_obj'):
                def record(meta):
                    metas.append(meta)
                    return meta
                return record
            return super().find_class(module, name)
    import io
    Recorder(io.BytesIO(obj)).load()
    return metas

#----------------------------------------------------------------------------

def test_decorator_properties(tmp_path, monkeypatch):
    _write_module(tmp_path, 'pers_mod_a')
    mod = _import_fresh(tmp_path, 'pers_mod_a', monkeypatch)
    net = mod.TinyNet(3, 4, cfg=dnnlib.EasyDict(a=1))
    cls = type(net)
    assert persistence.is_persistent(net) and persistence.is_persistent(cls)
    assert cls.__name__ == 'TinyNet' and cls.__module__ == 'torch_utils.persistence'
    assert cls.__qualname__ == 'persistent_class.<locals>.Decorator'
    assert persistence.persistent_class(cls) is cls # idempotent
    assert cls._orig_class_name == 'TinyNet' and cls._orig_module_src == MODULE_SRC
    assert net.init_args == (3, 4)
    kwargs = net.init_kwargs
    assert isinstance(kwargs, dnnlib.EasyDict) and kwargs.cfg == {'a': 1}
    kwargs.cfg.a = 99 # deep copies: the stored kwargs are untouched
    assert net.init_kwargs.cfg.a == 1
    class Sub(cls): # a plain subclass of a persistent class is not persistent itself
        pass
    assert not persistence.is_persistent(Sub)

def test_unpickleable_argument_fails_at_construction(tmp_path, monkeypatch):
    _write_module(tmp_path, 'pers_mod_b')
    mod = _import_fresh(tmp_path, 'pers_mod_b', monkeypatch)
    with pytest.raises(Exception):
        mod.TinyNet(3, 4, cfg=lambda: 0) # lambdas cannot be pickled

def test_pickle_layout(tmp_path, monkeypatch):
    _write_module(tmp_path, 'pers_mod_c')
    mod = _import_fresh(tmp_path, 'pers_mod_c', monkeypatch)
    net = mod.TinyNet(3, 4)
    data = pickle.dumps(net)
    project_globals = {g for g in _globals_in_pickle(data) if not g.startswith(('torch.', 'collections.', 'builtins.', 'copyreg.'))}
    assert project_globals == {'torch_utils.persistence._reconstruct_persistent_obj'}
    assert b'pers_mod_c' not in data # the class is never referenced by module name
    metas = _find_meta(data)
    assert [m['class_name'] for m in metas] == ['Scale', 'TinyNet'] # inner object completes first
    for meta in metas:
        assert set(meta) == {'type', 'version', 'module_src', 'class_name', 'state'}
        assert meta['type'] == 'class' and meta['version'] == 6 and meta['module_src'] == MODULE_SRC
    state = metas[1]['state']
    assert state['_init_args'] == (3, 4) and state['_init_kwargs'] == {}
    assert set(state['_modules']) == {'fc', 'child'} and 'offset' in state['_buffers']
    assert data.count(b'Temporary network module') == 1 # source stored once via the pickle memo

def test_load_in_subprocess_without_module(tmp_path, monkeypatch):
    path = _write_module(tmp_path, 'pers_mod_d')
    mod = _import_fresh(tmp_path, 'pers_mod_d', monkeypatch)
    torch.manual_seed(0)
    net = mod.TinyNet(3, 4).eval()
    x = torch.randn(2, 3)
    expected = net(x).detach().numpy()
    (tmp_path / 'net.pkl').write_bytes(pickle.dumps(dict(G=net)))
    np.save(tmp_path / 'x.npy', x.numpy())
    path.unlink() # the defining module is gone

    code = textwrap.dedent(f'''
        import pickle, sys, numpy as np, torch
        try:
            import pers_mod_d
            raise SystemExit('module unexpectedly importable')
        except ImportError:
            pass
        from torch_utils import persistence
        with open({str(tmp_path / 'net.pkl')!r}, 'rb') as f:
            G = pickle.load(f)['G']
        assert persistence.is_persistent(G) and type(G).__name__ == 'TinyNet'
        assert type(G).__module__ == 'torch_utils.persistence'
        assert sys.modules[type(G).__mro__[1].__module__].__name__.startswith('_imported_module_')
        assert G.init_args == (3, 4)
        y = G(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))).detach().numpy()
        np.save({str(tmp_path / 'y.npy')!r}, y)
        # Re-pickling a loaded object writes the original embedded source back out.
        G2 = pickle.loads(pickle.dumps(G))
        assert type(G2) is type(G)
        print('ok')
    ''')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path / '..'), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith('ok')
    np.testing.assert_array_equal(np.load(tmp_path / 'y.npy'), expected)

def test_deepcopy_and_reuse_of_live_module(tmp_path, monkeypatch):
    _write_module(tmp_path, 'pers_mod_e')
    mod = _import_fresh(tmp_path, 'pers_mod_e', monkeypatch)
    net = mod.TinyNet(2, 2)
    clone = copy.deepcopy(net)
    assert type(clone) is type(net) # identical source -> live module reused
    assert clone.fc.weight is not net.fc.weight
    torch.testing.assert_close(clone.fc.weight, net.fc.weight)
    loaded = pickle.loads(pickle.dumps(net))
    assert type(loaded) is type(net)

def test_import_hook_patches_source(tmp_path, monkeypatch):
    _write_module(tmp_path, 'pers_mod_f')
    mod = _import_fresh(tmp_path, 'pers_mod_f', monkeypatch)
    net = mod.TinyNet(2, 2)
    data = pickle.dumps(net)
    seen = []
    def hook(meta):
        seen.append((meta.class_name, type(meta.state).__name__))
        meta.module_src = meta.module_src.replace('x * self.scale', 'x * self.scale * 0 + 7')
        return meta
    monkeypatch.setattr(persistence, '_import_hooks', [])
    persistence.import_hook(hook)
    loaded = pickle.loads(data)
    assert ('TinyNet', 'EasyDict') in seen
    assert type(loaded) is not type(net) # patched source -> new module
    assert torch.all(loaded(torch.zeros(1, 2)) == 7)

def test_unpickling_errors_are_not_swallowed(tmp_path, monkeypatch):
    _write_module(tmp_path, 'pers_mod_g')
    mod = _import_fresh(tmp_path, 'pers_mod_g', monkeypatch)
    data = pickle.dumps(mod.TinyNet(2, 2))
    monkeypatch.setattr(persistence, '_import_hooks', [])
    persistence.import_hook(lambda meta: dnnlib.EasyDict(meta, module_src='import no_such_dep_for_test_xyz\n' + meta.module_src))
    n_modules = len(sys.modules)
    with pytest.raises(ModuleNotFoundError, match='no_such_dep_for_test_xyz'):
        pickle.loads(data)
    assert len(sys.modules) == n_modules # the half-executed module was removed again
    with pytest.raises((pickle.UnpicklingError, EOFError)):
        pickle.loads(data[: len(data) // 2]) # truncated file

#----------------------------------------------------------------------------
