"""Fused bias + activation + gain + clamp, with a custom CUDA kernel and a pure-PyTorch reference.

API and semantics follow NVlabs StyleGAN3/EG3D (`bias_act(x, b, dim, act, alpha, gain, clamp, impl)`).
Deliberate deviation (SG2-ADA behaviour): if the CUDA plugin fails to build for a CUDA tensor, a
warning is issued once and the reference implementation is used instead of raising. Setting the
environment variable `EG3D_OPS_IMPL=ref` forces the reference implementation everywhere.
Nothing is compiled at import time; the plugin is built on first CUDA use.
"""

import os
from typing import Any, Optional

import numpy as np
import torch

import dnnlib
from .. import custom_ops
from .. import misc

#----------------------------------------------------------------------------
# Activation table. `ref` names the tensor the CUDA backward keeps ('x' = input, 'y' = output);
# `has_2nd_grad` says whether the second derivative is non-zero anywhere.

activation_funcs = {
    'linear':   dnnlib.EasyDict(func=lambda x, **_: x,                                           def_alpha=0,   def_gain=1,          cuda_idx=1, ref='',  has_2nd_grad=False),
    'relu':     dnnlib.EasyDict(func=lambda x, **_: torch.nn.functional.relu(x),                 def_alpha=0,   def_gain=np.sqrt(2), cuda_idx=2, ref='y', has_2nd_grad=False),
    'lrelu':    dnnlib.EasyDict(func=lambda x, alpha, **_: torch.nn.functional.leaky_relu(x, alpha), def_alpha=0.2, def_gain=np.sqrt(2), cuda_idx=3, ref='y', has_2nd_grad=False),
    'tanh':     dnnlib.EasyDict(func=lambda x, **_: torch.tanh(x),                               def_alpha=0,   def_gain=1,          cuda_idx=4, ref='y', has_2nd_grad=True),
    'sigmoid':  dnnlib.EasyDict(func=lambda x, **_: torch.sigmoid(x),                            def_alpha=0,   def_gain=1,          cuda_idx=5, ref='y', has_2nd_grad=True),
    'elu':      dnnlib.EasyDict(func=lambda x, **_: torch.nn.functional.elu(x),                  def_alpha=0,   def_gain=1,          cuda_idx=6, ref='y', has_2nd_grad=True),
    'selu':     dnnlib.EasyDict(func=lambda x, **_: torch.nn.functional.selu(x),                 def_alpha=0,   def_gain=1,          cuda_idx=7, ref='y', has_2nd_grad=True),
    'softplus': dnnlib.EasyDict(func=lambda x, **_: torch.nn.functional.softplus(x),             def_alpha=0,   def_gain=1,          cuda_idx=8, ref='y', has_2nd_grad=True),
    'swish':    dnnlib.EasyDict(func=lambda x, **_: torch.sigmoid(x) * x,                        def_alpha=0,   def_gain=np.sqrt(2), cuda_idx=9, ref='x', has_2nd_grad=True),
}

_plugin = custom_ops.LazyPlugin('bias_act', os.path.dirname(__file__))

#----------------------------------------------------------------------------

def _resolve(act: str, alpha: Any, gain: Any, clamp: Any):
    """Validate the activation arguments and convert them to Python floats (None -> defaults)."""
    if act not in activation_funcs:
        raise ValueError(f'bias_act: unknown activation {act!r}; expected one of {sorted(activation_funcs)}')
    if clamp is not None and not clamp >= 0:
        raise ValueError(f'bias_act: clamp must be None or >= 0, got {clamp!r}')
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp

def _check_bias(x: torch.Tensor, b: Optional[torch.Tensor], dim: int) -> None:
    if b is None:
        return
    if not isinstance(b, torch.Tensor) or b.ndim != 1:
        raise ValueError('bias_act: b must be a 1-D tensor')
    if not 0 <= dim < x.ndim:
        raise ValueError(f'bias_act: dim={dim} out of range for a {x.ndim}-D input')
    if b.shape[0] != x.shape[dim]:
        raise ValueError(f'bias_act: b has {b.shape[0]} elements but x.shape[{dim}] = {x.shape[dim]}')

#----------------------------------------------------------------------------

def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = 'linear',
             alpha: Optional[float] = None, gain: Optional[float] = None, clamp: Optional[float] = None,
             impl: str = 'cuda') -> torch.Tensor:
    r"""Fused bias, activation, gain and clamp.

    Adds `b` along dimension `dim`, applies `act`, scales by `gain` and clamps to `[-clamp, clamp]`.
    Supports first and second order gradients (CUDA path: not third).

    Args:
        x:      Input activation tensor, any shape.
        b:      Bias, 1-D tensor of length `x.shape[dim]` with x's dtype, or None.
        dim:    Dimension of `x` that `b` runs along (ignored without `b`).
        act:    Activation name, a key of `activation_funcs`.
        alpha:  Shape parameter (lrelu negative slope); None = table default.
        gain:   Output scaling; None = table default.
        clamp:  Clamp the output to `[-clamp, +clamp]`; None = no clamping.
        impl:   'cuda' (used only for CUDA tensors when the plugin builds) or 'ref'.

    Returns:
        Tensor of the same shape and dtype as `x`.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError('bias_act: x must be a tensor')
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"bias_act: impl must be 'ref' or 'cuda', got {impl!r}")
    if b is not None and b.dtype != x.dtype and torch.is_autocast_enabled(x.device.type):
        b = b.to(x.dtype) # --amp=bf16: layers cast b before autocast lowers x (the kernel needs one dtype)
    if impl == 'cuda' and x.is_cuda and not custom_ops.ref_forced() and _plugin.ready():
        return _bias_act_cuda(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp).apply(x, b)
    return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)

#----------------------------------------------------------------------------

@misc.profiled_function
def _bias_act_ref(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = 'linear',
                  alpha: Optional[float] = None, gain: Optional[float] = None,
                  clamp: Optional[float] = None) -> torch.Tensor:
    """Reference implementation of `bias_act()` using standard PyTorch ops."""
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    _check_bias(x, b, dim)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x

#----------------------------------------------------------------------------
# CUDA path: one pair of autograd Functions per argument combination (cached), so the
# Python floats are baked in and each backward can be differentiated once more.

_bias_act_cuda_cache = dict()
_null_cache = dict()

def _null(x: torch.Tensor) -> torch.Tensor:
    key = (x.device, x.dtype)
    if key not in _null_cache:
        _null_cache[key] = torch.empty([0], device=x.device, dtype=x.dtype)
    return _null_cache[key]

def _dense(x: torch.Tensor) -> torch.Tensor:
    """Contiguous or channels-last tensors go to the kernel as they are (layout is preserved)."""
    if x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()

def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Return `t` with exactly `ref`'s strides (the kernel walks all operands with one flat index)."""
    if t.shape == ref.shape and t.stride() == ref.stride():
        return t
    return torch.empty_like(ref).copy_(t)

def _bias_act_cuda(dim: int = 1, act: str = 'linear', alpha: Optional[float] = None,
                   gain: Optional[float] = None, clamp: Optional[float] = None):
    """Fast CUDA implementation of `bias_act()` (returns an autograd Function class)."""
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    key = (dim, act, alpha, gain, clamp)
    if key in _bias_act_cuda_cache:
        return _bias_act_cuda_cache[key]

    # Which tensor the backward needs: the input for x-referenced activations, the output for
    # y-referenced ones (and for linear+clamp, whose gradient mask needs the output), else none.
    ref_mode = 'x' if spec.ref == 'x' else ('y' if (spec.ref == 'y' or clamp >= 0) else '')
    is_identity = (act == 'linear' and gain == 1 and clamp < 0)
    reduce_dims = lambda t: [i for i in range(t.ndim) if i != dim]

    class BiasActCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b): # pylint: disable=arguments-differ
            _check_bias(x, b, dim)
            if b is not None and b.dtype != x.dtype:
                raise ValueError(f'bias_act: b must have the dtype of x ({x.dtype}), got {b.dtype}')
            x = _dense(x)
            b = b.contiguous() if b is not None else _null(x)
            ctx.has_bias = b.numel() > 0
            y = x
            if not is_identity or ctx.has_bias:
                y = _plugin.module.bias_act(x, b, _null(x), _null(x), _null(x), 0, dim, spec.cuda_idx, alpha, gain, clamp)
            ctx.save_for_backward(
                x if ref_mode == 'x' else _null(x),
                b if ref_mode == 'x' else _null(x),
                y if ref_mode == 'y' else _null(x))
            return y

        @staticmethod
        def backward(ctx, dy): # pylint: disable=arguments-differ
            x, b, y = ctx.saved_tensors
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = dy if is_identity else BiasActCudaGrad.apply(dy, x, b, y)
            if ctx.needs_input_grad[1]:
                db = dx.sum(reduce_dims(dx))
            return dx, db

    class BiasActCudaGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, dy, x, b, y): # pylint: disable=arguments-differ
            ref = x if x.numel() else (y if y.numel() else _dense(dy))
            dy = _like(dy, ref)
            dx = _plugin.module.bias_act(dy, b, x, y, dy, 1, dim, spec.cuda_idx, alpha, gain, clamp)
            ctx.save_for_backward(dy if spec.has_2nd_grad else _null(dy), x, b, y)
            return dx

        @staticmethod
        def backward(ctx, d_dx): # pylint: disable=arguments-differ
            dy, x, b, y = ctx.saved_tensors
            d_dy = d_x = d_b = d_y = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActCudaGrad.apply(d_dx, x, b, y)
            if spec.has_2nd_grad and any(ctx.needs_input_grad[1:]):
                d_dx = _like(d_dx, dy)
                d_ref = _plugin.module.bias_act(d_dx, b, x, y, dy, 2, dim, spec.cuda_idx, alpha, gain, clamp)
                if ref_mode == 'x':
                    d_x = d_ref
                    d_b = d_ref.sum(reduce_dims(d_ref)) if (ctx.needs_input_grad[2] and b.numel()) else None
                else:
                    d_y = d_ref
            return d_dy, d_x, d_b, d_y

    _bias_act_cuda_cache[key] = BiasActCuda
    return BiasActCuda

#----------------------------------------------------------------------------
