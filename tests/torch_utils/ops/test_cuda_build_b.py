"""Compile the filtered_lrelu CUDA plugin with nvcc (no GPU needed to build; running it needs one), and check the
plugin selection rules of filtered_lrelu (never built for CPU tensors, a failed build warns once)."""

import os
import shutil
import warnings

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import filtered_lrelu

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_plugin_compiles():
    if shutil.which('nvcc') is None:
        pytest.skip('nvcc not found on PATH')
    path = custom_ops.build_only(**filtered_lrelu._plugin.kwargs)
    assert os.path.isfile(path) and os.path.getsize(path) > 0

def test_plugin_sources_exist():
    kw = filtered_lrelu._plugin.kwargs
    for name in kw['sources'] + kw['headers']:
        assert os.path.isfile(os.path.join(kw['source_dir'], name)), name

#----------------------------------------------------------------------------

def test_cpu_never_builds(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError('plugin build attempted for a CPU tensor')
    monkeypatch.setattr(custom_ops, 'get_plugin', boom)
    x = torch.randn([1, 2, 4, 4])
    filtered_lrelu.filtered_lrelu(x, b=torch.zeros([2]), impl='cuda')
    assert filtered_lrelu._plugin.module is None

def test_failed_build_warns_once(monkeypatch):
    calls = []
    def failing_build(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError('simulated nvcc failure')
    monkeypatch.setattr(custom_ops, 'get_plugin', failing_build)
    monkeypatch.setattr(filtered_lrelu, '_plugin', custom_ops.LazyPlugin('filtered_lrelu', filtered_lrelu._plugin.kwargs['source_dir']))
    with pytest.warns(UserWarning, match='simulated nvcc failure'):
        assert filtered_lrelu._plugin.ready() is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert filtered_lrelu._plugin.ready() is False  # No second build attempt, no second warning.
    assert not caught
    assert len(calls) == 1 and calls[0]['module_name'] == 'filtered_lrelu_plugin'

#----------------------------------------------------------------------------
