"""Tests for conv2d_gradfix: same values and gradients (to any order) as torch.nn.functional, flag semantics."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix

#----------------------------------------------------------------------------

@pytest.fixture
def custom_op(monkeypatch):
    """Force the custom autograd path for CPU tensors."""
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    monkeypatch.setattr(conv2d_gradfix, 'cpu_enabled', True)

# (transpose, stride, padding, dilation, groups, output_padding)
CASES = [
    (False, 1, 0, 1, 1, 0),
    (False, 2, 1, 1, 1, 0),
    (False, (2, 1), (0, 2), (1, 2), 2, 0),
    (True, 1, 0, 1, 1, 0),
    (True, 2, 1, 1, 1, 1),
    (True, (3, 2), (1, 0), 1, 2, (2, 0)),
]

def _ops(transpose, stride, padding, dilation, groups, output_padding):
    if transpose:
        mine = lambda x, w, b: conv2d_gradfix.conv_transpose2d(x, w, b, stride=stride, padding=padding,
                                                               output_padding=output_padding, groups=groups,
                                                               dilation=dilation)
        ref = lambda x, w, b: F.conv_transpose2d(x, w, b, stride=stride, padding=padding,
                                                 output_padding=output_padding, groups=groups, dilation=dilation)
    else:
        mine = lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation,
                                                     groups=groups)
        ref = lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return mine, ref

def _tensors(transpose, groups, dtype=torch.float64, size=(5, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    cin, cout = 2 * groups, 2 * groups
    x = torch.randn([2, cin, *size], generator=g, dtype=dtype, requires_grad=True)
    wshape = [cin, cout // groups, 3, 2] if transpose else [cout, cin // groups, 3, 2]
    w = torch.randn(wshape, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn([cout], generator=g, dtype=dtype, requires_grad=True)
    return x, w, b

#----------------------------------------------------------------------------

@pytest.mark.parametrize('case', CASES)
def test_values_and_gradients_match_functional(custom_op, case):
    mine, ref = _ops(*case)
    x, w, b = _tensors(case[0], case[4], dtype=torch.float32)
    y1, y2 = mine(x, w, b), ref(x, w, b)
    assert y1.shape == y2.shape
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)  # Same forward call.
    dy = torch.randn_like(y1)
    g1 = torch.autograd.grad(y1, [x, w, b], dy)
    g2 = torch.autograd.grad(y2, [x, w, b], dy)
    for a, r in zip(g1, g2):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)

@pytest.mark.parametrize('case', CASES)
def test_gradcheck_and_gradgradcheck(custom_op, case):
    mine, _ref = _ops(*case)
    x, w, b = _tensors(case[0], case[4], size=(4, 5))
    assert torch.autograd.gradcheck(mine, (x, w, b))
    assert torch.autograd.gradgradcheck(mine, (x, w, b))

def test_second_order_matches_functional(custom_op):
    # R1-style penalty: gradient wrt the input with create_graph, then backward into the weights.
    for transpose in (False, True):
        mine, ref = _ops(transpose, 2, 1, 1, 1, 1 if transpose else 0)
        grads = []
        for op in (mine, ref):
            x, w, b = _tensors(transpose, 1)
            gx, = torch.autograd.grad(op(x, w, b).tanh().sum(), x, create_graph=True)
            grads.append(torch.autograd.grad(gx.square().sum(), [x, w]))
        for a, r in zip(*grads):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)

def test_third_order(custom_op):
    x, w, b = _tensors(False, 1, size=(3, 3))
    x, w = x[:1, :1].detach().requires_grad_(True), w[:1, :1].detach().requires_grad_(True)
    f = lambda x, w: conv2d_gradfix.conv2d(x, w, padding=1)
    assert torch.autograd.gradgradcheck(lambda x, w: torch.autograd.grad(f(x, w).pow(3).sum(), [x, w],
                                                                         create_graph=True), (x, w))

#----------------------------------------------------------------------------

def test_no_weight_gradients(custom_op):
    x, w, b = _tensors(False, 1)
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled
        y = conv2d_gradfix.conv2d(x, w, b, padding=1)
        gx, gw = torch.autograd.grad(y.sum(), [x, w], allow_unused=True, create_graph=True)
    assert not conv2d_gradfix.weight_gradients_disabled
    assert gw is None and gx is not None
    # The input gradient still depends on w, so the second backward reaches the weights (R1 penalty).
    gw2, = torch.autograd.grad(gx.square().sum(), [w])
    x2, w2, b2 = _tensors(False, 1)
    gx_ref, = torch.autograd.grad(F.conv2d(x2, w2, b2, padding=1).sum(), [x2], create_graph=True)
    torch.testing.assert_close(gw2, torch.autograd.grad(gx_ref.square().sum(), [w2])[0])
    with conv2d_gradfix.no_weight_gradients(disable=False):
        assert not conv2d_gradfix.weight_gradients_disabled

def test_flags_select_path(monkeypatch):
    x, w, b = _tensors(False, 1)
    monkeypatch.setattr(conv2d_gradfix, 'enabled', False)
    assert 'ConvolutionBackward' in type(conv2d_gradfix.conv2d(x, w).grad_fn).__name__
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    monkeypatch.setattr(conv2d_gradfix, 'cpu_enabled', False)
    assert 'ConvolutionBackward' in type(conv2d_gradfix.conv2d(x, w).grad_fn).__name__
    monkeypatch.setattr(conv2d_gradfix, 'cpu_enabled', True)
    assert 'ConvolutionBackward' not in type(conv2d_gradfix.conv2d(x, w).grad_fn).__name__

def test_bad_arguments(custom_op):
    x, w, _b = _tensors(False, 1)
    with pytest.raises(ValueError, match='padding'):
        conv2d_gradfix.conv2d(x, w, padding='same')
    with pytest.raises(ValueError):
        conv2d_gradfix.conv2d(x, w, stride=(1, 2, 3))

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_functional(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    for case in CASES:
        mine, ref = _ops(*case)
        x, w, b = [t.detach().cuda().requires_grad_(True) for t in _tensors(case[0], case[4])]
        gx1, = torch.autograd.grad(mine(x, w, b).square().sum(), [x], create_graph=True)
        gx2, = torch.autograd.grad(ref(x, w, b).square().sum(), [x], create_graph=True)
        torch.testing.assert_close(gx1, gx2)
        torch.testing.assert_close(torch.autograd.grad(gx1.sum(), [w])[0], torch.autograd.grad(gx2.sum(), [w])[0])

#----------------------------------------------------------------------------
