"""Tests for dnnlib.registry: registration, lookup, error messages and plugin loading (entry points mocked)."""

import subprocess
import sys
import types

import pytest

from dnnlib import registry

#----------------------------------------------------------------------------

@pytest.fixture
def clean_registry(monkeypatch):
    # Isolate every test from registrations made by other modules.
    monkeypatch.setattr(registry, '_registry', {kind: {} for kind in registry.KINDS})
    monkeypatch.setattr(registry, '_entry_points_loaded', False)
    monkeypatch.setattr(registry, '_loaded_modules', set())
    return registry

def test_register_get_names(clean_registry):
    reg = clean_registry
    reg.register('loss', 'b', 'training.loss.StyleGAN2Loss')
    reg.register('loss', 'a', 'dnnlib.util.EasyDict')
    assert reg.names('loss') == ['a', 'b']
    assert reg.get('loss', 'b') == 'training.loss.StyleGAN2Loss'
    import dnnlib
    assert reg.resolve('loss', 'a') is dnnlib.EasyDict
    assert reg.names('metric') == []

    @reg.register('preset', 'tiny')
    def tiny(opts):
        return opts
    assert tiny.__name__ == 'tiny' # decorator returns the function unchanged
    assert reg.get('preset', 'tiny') is tiny
    assert reg.resolve('preset', 'tiny') is tiny
    assert set(reg.KINDS) == {'preset', 'network', 'loss', 'dataset', 'metric', 'depth_estimator', 'train_option'}

def test_errors_list_valid_names(clean_registry):
    reg = clean_registry
    reg.register('dataset', 'rgbd', 'x.Y')
    reg.register('dataset', 'rgb', 'x.Z')
    with pytest.raises(KeyError, match='rgb, rgbd'):
        reg.get('dataset', 'nope')
    with pytest.raises(ValueError, match='valid kinds'):
        reg.register('no_such_kind', 'a', 'x.Y')
    with pytest.raises(ValueError, match='valid kinds'):
        reg.names('no_such_kind')
    reg.register('dataset', 'rgb', 'x.Z') # same target again: fine
    with pytest.raises(ValueError, match='already registered'):
        reg.register('dataset', 'rgb', 'x.Other')
    reg.unregister('dataset', 'rgb')
    assert reg.names('dataset') == ['rgbd']

class _FakeEntryPoint:
    def __init__(self, name, value, obj):
        self.name, self.value, self._obj = name, value, obj
        self.loads = 0
    def load(self):
        self.loads += 1
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj

def test_load_plugins_entry_points_once(clean_registry, monkeypatch, tmp_path):
    reg = clean_registry
    setup_calls = []
    def setup():
        setup_calls.append(1)
        reg.register('metric', 'fake_metric', 'x.metric')
    module_ep = _FakeEntryPoint('mod', 'fake_plugin_pkg', types.ModuleType('fake_plugin_pkg'))
    func_ep = _FakeEntryPoint('func', 'fake_plugin_pkg:setup', setup)
    monkeypatch.setattr(registry, '_entry_points', lambda: [module_ep, func_ep])

    (tmp_path / 'my_cli_plugin.py').write_text(
        'from dnnlib import registry\nregistry.register("network", "from_cli", "my_cli_plugin.Net")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = reg.load_plugins(['my_cli_plugin'])
    assert loaded == ['fake_plugin_pkg', 'fake_plugin_pkg:setup', 'my_cli_plugin']
    assert reg.names('metric') == ['fake_metric'] and reg.names('network') == ['from_cli']
    assert reg.load_plugins(['my_cli_plugin']) == [] # entry points and modules load only once
    assert module_ep.loads == 1 and func_ep.loads == 1 and setup_calls == [1]

def test_load_plugins_clear_errors(clean_registry, monkeypatch):
    reg = clean_registry
    monkeypatch.setattr(registry, '_entry_points',
                        lambda: [_FakeEntryPoint('bad', 'bad_pkg.plugin', ImportError('no bad_pkg'))])
    with pytest.raises(ImportError, match=r"bad.*eg3d\.plugins.*no bad_pkg"):
        reg.load_plugins()
    with pytest.raises(ImportError, match='no_such_plugin_module_abc'):
        reg.load_plugins(['no_such_plugin_module_abc'])

def test_real_entry_point_lookup_and_torch_free():
    # The real importlib.metadata query must work, and importing the registry must not import torch.
    code = ('import sys; from dnnlib import registry; list(registry._entry_points()); '
            'assert "torch" not in sys.modules, "registry imported torch"; print("ok")')
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'

#----------------------------------------------------------------------------
