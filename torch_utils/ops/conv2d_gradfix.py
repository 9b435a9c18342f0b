"""Drop-in conv2d / conv_transpose2d whose backward pass is made of ordinary convolutions, for fast double backward."""

import contextlib
import torch

#----------------------------------------------------------------------------
# Module flags (EG3D/StyleGAN3 API). Training and metric scripts set `enabled = True`.

enabled = False                     # Use the custom op at all? (False = plain torch.nn.functional calls.)
weight_gradients_disabled = False   # Skip weight gradients inside the custom op (see no_weight_gradients()).
cpu_enabled = True                  # Extension: also use the custom op for CPU tensors when `enabled`.

# Why CPU is on: the forward is the very same F.conv2d call and first-order backward is the same fused aten call, so
# values match the plain path; only create_graph backward differs, and there the custom op measured 7-20% faster for
# R1-style double backward on CPU (dense convs / conv2d_resample with FIR filters; plain backward: equal within noise).
# EG3D itself uses the custom op on CUDA+cuDNN only; set this False to get exactly that behaviour.

@contextlib.contextmanager
def no_weight_gradients(disable: bool = True):
    """Within the block, the custom op returns no gradient for `weight` (used around the R1 gradient computation)."""
    global weight_gradients_disabled
    old = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = old

#----------------------------------------------------------------------------

def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> torch.Tensor:
    """Same as torch.nn.functional.conv2d, with efficient higher-order gradients when the custom op is active."""
    if _should_use_custom_op(input):
        cfg = _make_cfg(False, weight.ndim, stride, padding, 0, dilation, groups)
        return _Conv2d.apply(input, weight, bias, cfg)
    return torch.nn.functional.conv2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding,
                                      dilation=dilation, groups=groups)

def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor = None, stride=1, padding=0,
                     output_padding=0, groups: int = 1, dilation=1) -> torch.Tensor:
    """Same as torch.nn.functional.conv_transpose2d, with efficient higher-order gradients when the custom op is active."""
    if _should_use_custom_op(input):
        cfg = _make_cfg(True, weight.ndim, stride, padding, output_padding, dilation, groups)
        return _Conv2d.apply(input, weight, bias, cfg)
    return torch.nn.functional.conv_transpose2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding,
                                                output_padding=output_padding, groups=groups, dilation=dilation)

#----------------------------------------------------------------------------

def _should_use_custom_op(input: torch.Tensor) -> bool:
    if not enabled:
        return False
    if input.device.type == 'cuda':
        return torch.backends.cudnn.enabled
    return cpu_enabled and input.device.type == 'cpu'

def _tuple(value, ndim):
    xs = tuple(value) if isinstance(value, (tuple, list)) else (value,) * ndim
    if len(xs) != ndim or not all(isinstance(x, int) and not isinstance(x, bool) for x in xs):
        raise ValueError(f'conv2d_gradfix: expected an int or {ndim} ints, got {value!r}')
    return xs

def _make_cfg(transpose, weight_ndim, stride, padding, output_padding, dilation, groups):
    """Hashable description of one convolution; everything but the tensors."""
    if weight_ndim != 4:
        raise ValueError(f'conv2d_gradfix: weight must be 4-D, got {weight_ndim}-D')
    if isinstance(padding, str):
        raise ValueError('conv2d_gradfix: string padding is not supported; pass ints')
    cfg = (bool(transpose), _tuple(stride, 2), _tuple(padding, 2), _tuple(output_padding, 2), _tuple(dilation, 2),
           int(groups))
    if any(s < 1 for s in cfg[1]) or any(p < 0 for p in cfg[2]) or any(d < 1 for d in cfg[4]) or cfg[5] < 1:
        raise ValueError(f'conv2d_gradfix: invalid convolution arguments {cfg}')
    return cfg

def _run(cfg, x, w, b=None):
    """Plain forward of the convolution described by cfg (no custom autograd)."""
    transpose, stride, padding, output_padding, dilation, groups = cfg
    if transpose:
        return torch.nn.functional.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
    return torch.nn.functional.conv2d(x, w, b, stride, padding, dilation, groups)

def _adjoint_cfg(cfg, x_shape, y_shape, w_shape):
    """Config of the convolution that maps dL/dy to dL/dx (the transpose of the forward op), sized to x_shape."""
    transpose, stride, padding, _output_padding, dilation, groups = cfg
    if transpose:
        # The adjoint of a transposed conv is a strided conv; its output size comes out exactly right.
        return (False, stride, padding, (0, 0), dilation, groups)
    # A conv loses the remainder of (size + 2p - dilated kernel) / stride; give it back as output_padding.
    op = []
    for i in range(2):
        k = w_shape[2 + i]
        natural = (y_shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k - 1) + 1
        op.append(x_shape[2 + i] - natural)
    return (True, stride, padding, tuple(op), dilation, groups)

def _weight_grad(cfg, grad_output, input, w_shape):
    """dL/dw for the op described by cfg, from the public aten op (works on CPU and CUDA)."""
    transpose, stride, padding, output_padding, dilation, groups = cfg
    w_dummy = grad_output.new_empty(w_shape)  # Only its shape/dtype/device are read.
    return torch.ops.aten.convolution_backward(grad_output, input, w_dummy, None, list(stride), list(padding),
                                               list(dilation), transpose, list(output_padding), groups,
                                               [False, True, False])[1]

#----------------------------------------------------------------------------
# y = conv(x, w) + b. Backward: dx = conv^T(dy, w) (again this op, so it is differentiable by the same rules),
# dw = _Conv2dGradWeight(dy, x), db = sum(dy).

class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, cfg):
        ctx.cfg = cfg
        ctx.x_shape = input.shape
        ctx.w_shape = weight.shape
        ctx.save_for_backward(input if weight.requires_grad else None, weight if input.requires_grad else None)
        y = _run(cfg, input, weight, bias)
        ctx.y_shape = y.shape
        return y

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        cfg = ctx.cfg
        grad_input = grad_weight = grad_bias = None
        need_w = ctx.needs_input_grad[1] and not weight_gradients_disabled
        if not torch.is_grad_enabled():
            # First-order only (no create_graph): one fused aten call is the fastest way, as in native autograd.
            transpose, stride, padding, output_padding, dilation, groups = cfg
            x = input if input is not None else grad_output.new_empty(ctx.x_shape)
            w = weight if weight is not None else grad_output.new_empty(ctx.w_shape)
            mask = [ctx.needs_input_grad[0], need_w, ctx.needs_input_grad[2]]
            grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_output, x, w, [ctx.w_shape[1] * groups if transpose else ctx.w_shape[0]], list(stride),
                list(padding), list(dilation), transpose, list(output_padding), groups, mask)
            return grad_input, grad_weight, grad_bias, None
        if ctx.needs_input_grad[0]:
            adj = _adjoint_cfg(cfg, ctx.x_shape, ctx.y_shape, ctx.w_shape)
            grad_input = _Conv2d.apply(grad_output, weight, None, adj)
            assert grad_input.shape == ctx.x_shape
        if need_w:
            grad_weight = _Conv2dGradWeight.apply(grad_output, input, ctx.w_shape, cfg)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(dim=[0, 2, 3])
        return grad_input, grad_weight, grad_bias, None

#----------------------------------------------------------------------------
# gw = G(dy, x), bilinear in (dy, x). For an upstream gradient ggw: d<ggw, gw>/d(dy) = conv(x, ggw) and
# d<ggw, gw>/dx = conv^T(dy, ggw), both expressed with _Conv2d so that further orders work too.

class _Conv2dGradWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_output, input, w_shape, cfg):
        ctx.cfg = cfg
        ctx.w_shape = w_shape
        ctx.input_shape = input.shape
        ctx.save_for_backward(grad_output if input.requires_grad else None,
                              input if grad_output.requires_grad else None)
        return _weight_grad(cfg, grad_output, input, w_shape)

    @staticmethod
    def backward(ctx, grad2_grad_weight):
        grad_output, input = ctx.saved_tensors
        cfg = ctx.cfg
        grad2_grad_output = grad2_input = None
        if ctx.needs_input_grad[0]:
            grad2_grad_output = _Conv2d.apply(input, grad2_grad_weight, None, cfg)
        if ctx.needs_input_grad[1]:
            adj = _adjoint_cfg(cfg, ctx.input_shape, grad_output.shape, ctx.w_shape)
            grad2_input = _Conv2d.apply(grad_output, grad2_grad_weight, None, adj)
        return grad2_grad_output, grad2_input, None, None

#----------------------------------------------------------------------------
