"""Bilinear grid_sample with support for double backward (torch's own grid_sampler_2d_backward is not differentiable)."""

import torch

#----------------------------------------------------------------------------

enabled = False  # Use the double-differentiable wrapper? (False = plain torch.nn.functional.grid_sample.)

#----------------------------------------------------------------------------

def grid_sample(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """torch.nn.functional.grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False).

    With `enabled`, gradients of any order are available for `input` and `grad_output`, and the first and
    second-order paths through `grid` that EG3D's augment pipe and R1 penalty need; asking for a derivative of the
    grid gradient itself raises NotImplementedError.
    """
    if enabled:
        return _GridSample2dForward.apply(input, grid)
    return torch.nn.functional.grid_sample(input=input, grid=grid, mode='bilinear', padding_mode='zeros',
                                           align_corners=False)

#----------------------------------------------------------------------------
# aten enum values: interpolation 0 = bilinear, padding 0 = zeros.

def _forward(input, grid):
    return torch.grid_sampler_2d(input, grid, 0, 0, False)

def _backward(grad_output, input, grid, mask):
    """(grad_input, grad_grid) from the public aten op (torch 2.x argument list); entries not in mask are None."""
    gi, gg = torch.ops.aten.grid_sampler_2d_backward(grad_output, input, grid, 0, 0, False, list(mask))
    return (gi if mask[0] else None), (gg if mask[1] else None)

class _GridSample2dForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):
        if input.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != input.shape[0]:
            raise ValueError(f'grid_sample: expected input [N,C,H,W] and grid [N,H,W,2], got '
                             f'{list(input.shape)} and {list(grid.shape)}')
        ctx.save_for_backward(input, grid)
        return _forward(input, grid)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        if not any(ctx.needs_input_grad):
            return None, None
        return _GridSample2dBackward.apply(grad_output, input, grid, ctx.needs_input_grad[0],
                                           ctx.needs_input_grad[1])

#----------------------------------------------------------------------------
# (gi, gg) = B(go, input, grid). gi = S(grid)^T go is linear in go and independent of input, so for an upstream
# gradient ggi: d<ggi, gi>/d(go) = S(grid) ggi = grid_sample(ggi, grid), and d<ggi, gi>/d(grid) is the grid gradient
# of grid_sample(ggi, grid) against go. Both reuse the differentiable ops here, so higher orders keep working.

class _GridSample2dBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_output, input, grid, need_input, need_grid):
        ctx.set_materialize_grads(False)  # Lets backward tell an unused gg output (None) from a zero one.
        ctx.save_for_backward(grad_output, grid)
        return _backward(grad_output, input, grid, (need_input, need_grid))

    @staticmethod
    def backward(ctx, grad2_grad_input, grad2_grad_grid):
        grad_output, grid = ctx.saved_tensors
        if grad2_grad_grid is not None:
            raise NotImplementedError('grid_sample_gradfix: derivatives of the grid gradient are not supported')
        grad2_grad_output = grad2_grid = None
        if grad2_grad_input is not None:
            if ctx.needs_input_grad[0]:
                grad2_grad_output = _GridSample2dForward.apply(grad2_grad_input, grid)
            if ctx.needs_input_grad[2]:
                grad2_grid = _GridSample2dBackward.apply(grad_output, grad2_grad_input, grid, False, True)[1]
        return grad2_grad_output, None, grad2_grid, None, None

#----------------------------------------------------------------------------
