"""Tests for torch_utils.ops.bias_act: reference path vs direct formulas, gradients, and the CUDA-path autograd logic."""

import math

import pytest
import torch

from torch_utils.ops import bias_act

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

# Direct formulas, written without the torch.nn.functional activations the op uses.
FORMULAS = {
    'linear':   lambda x, a: x,
    'relu':     lambda x, a: torch.where(x > 0, x, torch.zeros_like(x)),
    'lrelu':    lambda x, a: torch.where(x > 0, x, x * a),
    'tanh':     lambda x, a: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1),
    'sigmoid':  lambda x, a: 1 / (1 + torch.exp(-x)),
    'elu':      lambda x, a: torch.where(x > 0, x, torch.exp(x) - 1),
    'selu':     lambda x, a: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * (torch.exp(x) - 1)),
    'softplus': lambda x, a: torch.where(x > 20, x, torch.log(1 + torch.exp(x))),
    'swish':    lambda x, a: x / (1 + torch.exp(-x)),
}
DEF_GAIN = dict(relu=math.sqrt(2), lrelu=math.sqrt(2), swish=math.sqrt(2))

def test_table():
    assert set(bias_act.activation_funcs) == set(FORMULAS)
    for i, name in enumerate(['linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish']):
        spec = bias_act.activation_funcs[name]
        assert spec.cuda_idx == i + 1
        assert spec.def_gain == DEF_GAIN.get(name, 1)
        assert spec.def_alpha == (0.2 if name == 'lrelu' else 0)
        assert spec.ref == ('' if name == 'linear' else 'x' if name == 'swish' else 'y')
        assert spec.has_2nd_grad == (name not in ('linear', 'relu', 'lrelu'))

@pytest.mark.parametrize('act', list(FORMULAS))
def test_ref_matches_formulas(act):
    g = torch.Generator().manual_seed(0)
    x = torch.randn([3, 4, 5], generator=g, dtype=torch.float64) * 3
    x[0, 0, 0] = 25.0 # softplus threshold branch
    b = torch.randn([4], generator=g, dtype=torch.float64)
    for dim, bb in [(1, b), (2, torch.randn([5], generator=g, dtype=torch.float64)), (0, None)]:
        for alpha, gain, clamp in [(None, None, None), (0.1, 0.5, None), (0.3, 2.0, 0.7), (None, None, 0)]:
            y = bias_act.bias_act(x, bb, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp) # cpu -> ref
            v = x if bb is None else x + bb.reshape([-1 if i == dim else 1 for i in range(3)])
            e = FORMULAS[act](v, 0.2 if alpha is None else alpha) * (DEF_GAIN.get(act, 1) if gain is None else gain)
            if clamp is not None:
                e = torch.minimum(torch.maximum(e, torch.full_like(e, -clamp)), torch.full_like(e, clamp))
            assert y.shape == x.shape and y.dtype == x.dtype
            torch.testing.assert_close(y, e, rtol=1e-12, atol=1e-12)

def test_ref_details():
    x = torch.tensor([float('nan'), -5.0, 5.0])
    y = bias_act.bias_act(x, act='linear', clamp=1)
    assert torch.isnan(y[0]) and y[1:].tolist() == [-1.0, 1.0] # reference keeps NaN
    x = torch.randn([2, 3, 4, 4]).to(memory_format=torch.channels_last)
    assert bias_act.bias_act(x, impl='ref') is x # identity is a no-op
    for kwargs in [dict(act='gelu'), dict(clamp=-1), dict(b=torch.zeros([4])), dict(b=torch.zeros([3]), dim=4),
                   dict(impl='fast')]:
        with pytest.raises(ValueError):
            bias_act.bias_act(x, **kwargs)

@pytest.mark.parametrize('act', ['lrelu', 'tanh', 'softplus', 'swish', 'elu'])
def test_ref_gradcheck(act):
    x = torch.randn([2, 3, 2], dtype=torch.float64, requires_grad=True)
    b = torch.randn([3], dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=50)
    assert torch.autograd.gradcheck(fn, [x, b])
    assert torch.autograd.gradgradcheck(fn, [x, b])

#----------------------------------------------------------------------------
# CUDA-path autograd logic on CPU: the kernel is replaced by a transcription of its contract
# (bias_act.h / bias_act.cu), so gradcheck verifies both the Function wiring and the derivative formulas.

def _d1_d2_x(act, v):
    s = torch.sigmoid(v)
    if act == 'swish':
        return s * (1 + v * (1 - s)), s * (1 - s) * (2 + v * (1 - 2 * s))
    return torch.ones_like(v), torch.zeros_like(v)

def _d1_d2_y(act, a, alpha):
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    if act == 'relu':    return torch.where(a > 0, one, zero), zero
    if act == 'lrelu':   return torch.where(a > 0, one, one * alpha), zero
    if act == 'tanh':    return 1 - a * a, -2 * a
    if act == 'sigmoid': return a * (1 - a), 1 - 2 * a
    if act == 'elu':     return torch.where(a > 0, one, a + 1), torch.where(a > 0, zero, one)
    if act == 'selu':    return torch.where(a > 0, one * SELU_SCALE, a + SELU_SCALE * SELU_ALPHA), torch.where(a > 0, zero, one)
    if act == 'softplus': return -torch.expm1(-a), torch.exp(-a)
    return one, zero

class _KernelStandIn:
    @staticmethod
    def bias_act(x, b, xref, yref, dy, grad, dim, act_idx, alpha, gain, clamp):
        act = [k for k, v in bias_act.activation_funcs.items() if v.cuda_idx == act_idx][0]
        bias = 0 if b.numel() == 0 else b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        if grad == 0:
            y = bias_act._bias_act_ref(x + bias, act=act, alpha=alpha, gain=gain)
            return y.clamp(-clamp, clamp) if clamp >= 0 else y
        mask = torch.ones_like(dy)
        d1, d2 = torch.ones_like(dy) * gain, torch.zeros_like(dy)
        if xref.numel():
            v = xref + bias
            d1, d2 = [d * gain for d in _d1_d2_x(act, v)]
            if clamp >= 0:
                mask = (bias_act._bias_act_ref(v, act=act, alpha=alpha, gain=gain).abs() < clamp).to(dy.dtype)
        elif yref.numel():
            if clamp >= 0:
                mask = (yref.abs() < clamp).to(dy.dtype)
            d1, d2 = _d1_d2_y(act, yref / gain, alpha)
            d1 = d1 * gain
        return dy * d1 * mask if grad == 1 else x * dy * d2 * mask

@pytest.mark.parametrize('act', list(FORMULAS))
@pytest.mark.parametrize('clamp', [None, 1.5])
def test_cuda_function_logic(monkeypatch, act, clamp):
    monkeypatch.setattr(bias_act._plugin, 'module', _KernelStandIn())
    g = torch.Generator().manual_seed(2)
    x = (torch.randn([2, 3, 2, 2], generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    b = torch.randn([3], generator=g, dtype=torch.float64).requires_grad_(True)
    cuda_fn = lambda x, b: bias_act._bias_act_cuda(dim=1, act=act, alpha=0.3, gain=1.7, clamp=clamp).apply(x, b)
    ref_fn = lambda x, b: bias_act._bias_act_ref(x, b, dim=1, act=act, alpha=0.3, gain=1.7, clamp=clamp)
    torch.testing.assert_close(cuda_fn(x, b), ref_fn(x, b), rtol=1e-12, atol=1e-12)
    # Gradients vs the reference up to second order (the reference is correct a.e.; avoid kinks at the clamp).
    y_r = ref_fn(x, b)
    unclamped = bias_act._bias_act_ref(x, b, dim=1, act=act, alpha=0.3, gain=1.7)
    assert clamp is None or ((unclamped.abs() - clamp).abs() > 1e-3).all() # data must avoid the clamp kink
    if clamp is not None and act not in ('tanh', 'sigmoid'): # these stay below 1.7 * 1 > clamp only partly
        assert (unclamped.abs() > clamp).any() # the gradient mask is exercised
    dy = torch.randn(y_r.shape, generator=g, dtype=torch.float64)
    w = torch.randn(y_r.shape, generator=g, dtype=torch.float64)
    outs = []
    for fn in (cuda_fn, ref_fn):
        gx, gb = torch.autograd.grad(fn(x, b), [x, b], dy, create_graph=True)
        s = (gx * w).sum() + gb.sum()
        ggx, ggb = torch.autograd.grad(s, [x, b], allow_unused=True) if s.requires_grad else (None, None)
        outs.append([gx, gb, ggx if ggx is not None else torch.zeros_like(x), ggb if ggb is not None else torch.zeros_like(b)])
    for c, r in zip(*outs):
        torch.testing.assert_close(c, r, rtol=1e-9, atol=1e-9)
    if bias_act.activation_funcs[act].has_2nd_grad:
        assert torch.autograd.gradgradcheck(cuda_fn, [x, b])

#----------------------------------------------------------------------------

@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs CUDA')])])
def test_autocast_casts_bias_to_the_input_dtype(device):
    """--amp=bf16: layers hand over an fp32 bias with a bf16 input; the op (and the CUDA kernel) take x's dtype."""
    x = torch.randn([2, 3, 4, 4], device=device)
    b = torch.randn([3], device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        y = bias_act.bias_act(x.bfloat16(), b, act='lrelu')
    assert y.dtype == torch.bfloat16
    ref = bias_act._bias_act_ref(x.bfloat16().float(), b.bfloat16().float(), act='lrelu')
    torch.testing.assert_close(y.float(), ref, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match='dtype'): # the kernel path itself still refuses mixed dtypes
        bias_act._bias_act_cuda(dim=1, act='lrelu', alpha=None, gain=None, clamp=None).apply(x.bfloat16(), b)
