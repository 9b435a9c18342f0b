"""Fused multiply-add `a * b + c` with a gradient that reduces over broadcast dimensions."""

import torch

#----------------------------------------------------------------------------

def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Return `c + a * b` (via `torch.addcmul`); each gradient is summed back to its input's shape."""
    return _FusedMultiplyAdd.apply(a, b, c)

#----------------------------------------------------------------------------

class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c): # pylint: disable=arguments-differ
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return out

    @staticmethod
    def backward(ctx, dout): # pylint: disable=arguments-differ
        a, b = ctx.saved_tensors
        da = db = dc = None
        # Plain differentiable ops, so double backward (e.g. R1 through modulated conv) works.
        if ctx.needs_input_grad[0]:
            da = _unbroadcast(dout * b, a.shape)
        if ctx.needs_input_grad[1]:
            db = _unbroadcast(dout * a, b.shape)
        if ctx.needs_input_grad[2]:
            dc = _unbroadcast(dout, ctx.c_shape)
        return da, db, dc

#----------------------------------------------------------------------------

def _unbroadcast(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum `x` over the dimensions that broadcasting expanded, so that it gets `shape`."""
    lead = x.ndim - len(shape)
    assert lead >= 0
    dims = list(range(lead)) + [lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1]
    if dims:
        x = x.sum(dim=dims, keepdim=True)
    x = x.reshape(shape)
    assert x.shape == shape
    return x

#----------------------------------------------------------------------------
