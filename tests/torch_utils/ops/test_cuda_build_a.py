"""Compile the bias_act and upfirdn2d CUDA plugins with nvcc (no GPU needed to build; running them needs one)."""

import os
import shutil
import warnings

import pytest

from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

#----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize('module', [bias_act, upfirdn2d], ids=['bias_act', 'upfirdn2d'])
def test_plugin_compiles(module):
    if shutil.which('nvcc') is None:
        pytest.skip('nvcc not found on PATH')
    path = custom_ops.build_only(**module._plugin.kwargs)
    assert os.path.isfile(path) and os.path.getsize(path) > 0

#----------------------------------------------------------------------------

def test_no_compile_at_import_and_cpu_never_builds(monkeypatch):
    # CPU tensors never touch the plugin, even with impl='cuda' (the default).
    import torch
    def boom(*args, **kwargs):
        raise AssertionError('plugin build attempted for a CPU tensor')
    monkeypatch.setattr(custom_ops, 'get_plugin', boom)
    x = torch.randn([1, 2, 4, 4])
    bias_act.bias_act(x, torch.zeros([2]), act='lrelu')
    upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1]))
    assert bias_act._plugin.module is None and upfirdn2d._plugin.module is None

@pytest.mark.parametrize('module', [bias_act, upfirdn2d], ids=['bias_act', 'upfirdn2d'])
def test_failed_build_warns_once(monkeypatch, module):
    calls = []
    def failing_build(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError('simulated nvcc failure')
    monkeypatch.setattr(custom_ops, 'get_plugin', failing_build)
    monkeypatch.setattr(module, '_plugin', custom_ops.LazyPlugin(module._plugin.op_name, module._plugin.kwargs['source_dir']))
    with pytest.warns(UserWarning, match='simulated nvcc failure'):
        assert module._plugin.ready() is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert module._plugin.ready() is False # no second build attempt, no second warning
    assert not caught
    assert len(calls) == 1 and calls[0]['module_name'] == module._plugin.kwargs['module_name']

#----------------------------------------------------------------------------
