"""upfirdn2d CPU fast path (polyphase / strided / separable slices) against the reference: values and 1st/2nd gradients."""

import numpy as np
import pytest
import torch

from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------

CASES = [ # (taps, separable, up, down, padding, flip, gain)
    ([1, 3, 3, 1], None, 2, 1, [2, 1, 2, 1], False, 4.0),       # upsample2d
    ([1, 3, 3, 1], None, 1, 2, [1, 1, 1, 1], False, 1.0),       # downsample2d
    ([1, 3, 3, 1], None, 1, 1, [2, 1, 2, 1], True, 1.0),        # filter2d
    ([1, 3, 3, 1], True, 2, 2, 1, True, 3.0),                   # up and down
    ([1, 3, 3, 1], False, [1, 3], [2, 1], [3, -1, -2, 2], False, 1.0), # per-axis, crop
    (list(np.hanning(14)[1:-1]), True, 2, 1, [6, 5, 6, 5], False, 4.0), # 12-tap separable
    ([2.0], True, 1, 1, 0, False, 2.0),                         # 1 tap
    ([[1, 2, 0], [0, 1, 3], [2, 0, 1]], None, 2, 1, [1, 2, 0, 1], False, 1.0), # non-separable 2-D
    ([[1, 2, 0], [0, 1, 3], [2, 0, 1]], None, 1, 3, 0, True, 1.0),
    ([0, 1, 2, 1], True, 3, 1, [2, 2, 1, 1], False, 1.0),       # zero first tap
    (None, None, 1, 3, 0, False, 1.0),                          # no filter
]

def _filter(taps, separable, dtype=torch.float32):
    return None if taps is None else upfirdn2d.setup_filter(taps, separable=separable)

def _run(x, case, impl):
    taps, sep, up, down, pad, flip, gain = case
    return upfirdn2d.upfirdn2d(x, _filter(taps, sep), up=up, down=down, padding=pad, flip_filter=flip, gain=gain, impl=impl)

@pytest.mark.parametrize('case', CASES, ids=[str(i) for i in range(len(CASES))])
def test_forward_and_grad_match_reference(case):
    g = torch.Generator().manual_seed(0)
    x = torch.randn([2, 3, 11, 13], generator=g, dtype=torch.float64, requires_grad=True)
    y_fast, y_ref = _run(x, case, 'cuda'), _run(x, case, 'ref') # impl='cuda' on a CPU tensor = the fast path
    assert y_fast.shape == y_ref.shape and y_fast.dtype == y_ref.dtype
    # Tolerance: the reference scales float32 taps by the gain in float32, the fast path in float64.
    assert torch.allclose(y_fast, y_ref, rtol=0, atol=1e-6 * float(y_ref.detach().abs().max()))
    dy = torch.randn(y_ref.shape, generator=g, dtype=torch.float64)
    gx_fast, = torch.autograd.grad(y_fast, x, dy)
    gx_ref, = torch.autograd.grad(y_ref, x, dy)
    assert torch.allclose(gx_fast, gx_ref, rtol=0, atol=1e-6 * float(gx_ref.abs().max()))

@pytest.mark.parametrize('case', [CASES[0], CASES[1], CASES[4], CASES[7]])
def test_second_order_gradients(case):
    x = torch.randn([1, 2, 6, 7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: _run(t, case, 'cuda'), [x])

def test_float32_tolerance_and_inplace_output():
    x = torch.randn([2, 8, 32, 32])
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for fn in (upfirdn2d.upsample2d, upfirdn2d.downsample2d, upfirdn2d.filter2d):
        a, b = fn(x, f), fn(x, f, impl='ref')
        assert (a - b).abs().max() <= 1e-6 * b.abs().max()
    y = upfirdn2d.upsample2d(x.requires_grad_(True), f)
    y.add_(1).sum().backward() # the networks add the ToRGB residual in place: output must not be a view
    assert x.grad.shape == x.shape

def test_flag_off_is_reference(monkeypatch):
    x = torch.randn([1, 2, 8, 8])
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    monkeypatch.setattr(upfirdn2d, 'cpu_fast', False)
    assert torch.equal(upfirdn2d.upsample2d(x, f), upfirdn2d.upsample2d(x, f, impl='ref'))
    monkeypatch.setattr(upfirdn2d, 'cpu_fast', True)
    monkeypatch.setenv('EG3D_OPS_IMPL', 'ref')
    assert torch.equal(upfirdn2d.upsample2d(x, f), upfirdn2d.upsample2d(x, f, impl='ref'))

def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match='smaller than the filter'):
        upfirdn2d.upfirdn2d(torch.zeros([1, 1, 2, 2]), upfirdn2d.setup_filter([1, 1, 1, 1]))

#----------------------------------------------------------------------------
