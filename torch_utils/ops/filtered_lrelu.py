"""Filtered leaky ReLU (StyleGAN3): bias, FIR upsample, leaky ReLU/gain/clamp, FIR downsample, with a fused CUDA kernel.

API and reference semantics follow NVlabs StyleGAN3/EG3D. The CUDA kernel is this project's own design (see
filtered_lrelu.h): one kernel per call for the forward pass, and the gradient of the whole chain is the same kind of
chain with the two stages swapped, run on a recorded uint8 mask of which activation branch each sample took.
Deliberate deviation: if the plugin fails to build for a CUDA tensor, a warning is issued once and the reference
implementation runs instead of raising. `EG3D_OPS_IMPL=ref` forces the reference everywhere.
"""

import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import custom_ops
from .. import misc
from . import bias_act
from . import upfirdn2d

IntOrPair = Union[int, Sequence[int]]

_plugin = custom_ops.LazyPlugin('filtered_lrelu', os.path.dirname(__file__))

#----------------------------------------------------------------------------
# Own argument parsers: unlike upfirdn2d, numpy integers are accepted (StyleGAN3 layers pass them).

def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

def _parse_padding(padding: IntOrPair) -> List[int]:
    if _is_int(padding):
        padding = [padding, padding]
    if not (isinstance(padding, (list, tuple)) and len(padding) in (2, 4) and all(_is_int(p) for p in padding)):
        raise ValueError(f'filtered_lrelu: padding must be an int, [px, py] or [px0, px1, py0, py1], got {padding!r}')
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    return padding

def _get_filter_size(f: Optional[torch.Tensor]) -> Tuple[int, int]:
    """(width, height) of a 1-D (separable) or 2-D filter; None counts as 1x1."""
    if f is None:
        return 1, 1
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2)):
        raise ValueError('filtered_lrelu: filters must be None or 1-D/2-D tensors')
    if f.dtype != torch.float32 or f.requires_grad:
        raise ValueError('filtered_lrelu: filters must be float32 and must not require grad')
    return int(f.shape[-1]), int(f.shape[0])

def _check_args(x, fu, fd, b, up, down, padding, gain, slope, clamp):
    """Validate everything once; return (padding list, gain, slope, clamp) as Python values."""
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError('filtered_lrelu: x must be a 4-D tensor [N, C, H, W]')
    fu_w, fu_h = _get_filter_size(fu)
    fd_w, fd_h = _get_filter_size(fd)
    if b is not None:
        if not (isinstance(b, torch.Tensor) and b.ndim == 1 and b.shape[0] == x.shape[1] and b.dtype == x.dtype):
            raise ValueError('filtered_lrelu: b must be a 1-D tensor of length C with the dtype of x')
    for name, v in (('up', up), ('down', down)):
        if not (_is_int(v) and v >= 1):
            raise ValueError(f'filtered_lrelu: {name} must be an int >= 1, got {v!r}')
    px0, px1, py0, py1 = _parse_padding(padding)
    gain, slope = float(gain), float(slope)
    if not (gain == gain and slope == slope):
        raise ValueError('filtered_lrelu: gain and slope must not be NaN')
    if clamp is not None and not float(clamp) >= 0:
        raise ValueError(f'filtered_lrelu: clamp must be None or >= 0, got {clamp!r}')
    clamp = -1.0 if clamp is None else float(clamp)  # -1 = no clamping (kernel convention)
    H, W = int(x.shape[2]), int(x.shape[3])
    out_w = (W * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (H * up + py0 + py1 - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    if W * up + px0 + px1 < fu_w or H * up + py0 + py1 < fu_h or out_w < 1 or out_h < 1:
        raise ValueError('filtered_lrelu: input too small for the given filters and padding')
    return [px0, px1, py0, py1], gain, slope, clamp, (out_h, out_w)

#----------------------------------------------------------------------------

def filtered_lrelu(x: torch.Tensor, fu: Optional[torch.Tensor] = None, fd: Optional[torch.Tensor] = None,
                   b: Optional[torch.Tensor] = None, up: int = 1, down: int = 1, padding: IntOrPair = 0,
                   gain: float = np.sqrt(2), slope: float = 0.2, clamp: Optional[float] = None,
                   flip_filter: bool = False, impl: str = 'cuda') -> torch.Tensor:
    r"""Add bias, upsample with `fu`, leaky ReLU, scale by `gain`, clamp, downsample with `fd`.

    Args:
        x:           Float tensor [N, C, H, W].
        fu:          float32 upsampling FIR filter [taps] (separable) or [fh, fw]; None = identity.
        fd:          float32 downsampling FIR filter, same format; None = identity.
        b:           Bias [C] with x's dtype, or None.
        up:          Integer upsampling factor.
        down:        Integer downsampling factor.
        padding:     int, [px, py] or [px0, px1, py0, py1] on the upsampled image (numpy ints accepted).
        gain:        Scale after the leaky ReLU.
        slope:       Negative slope of the leaky ReLU.
        clamp:       Clamp the activations to [-clamp, +clamp] after the gain; None = no clamping.
        flip_filter: False = convolution with the filters, True = correlation.
        impl:        'cuda' (used only for CUDA tensors when the plugin builds) or 'ref'.

    Returns:
        Tensor [N, C, out_h, out_w] with x's dtype, out = (in*up + pad0 + pad1 - (fu-1) - (fd-1) + (down-1)) // down.
    """
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"filtered_lrelu: impl must be 'ref' or 'cuda', got {impl!r}")
    if (impl == 'cuda' and isinstance(x, torch.Tensor) and x.is_cuda and not custom_ops.ref_forced()
            and x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) and _plugin.ready()):
        return _filtered_lrelu_cuda(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                                    clamp=clamp, flip_filter=flip_filter)
    return _filtered_lrelu_ref(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                               clamp=clamp, flip_filter=flip_filter)

#----------------------------------------------------------------------------

@misc.profiled_function
def _filtered_lrelu_ref(x: torch.Tensor, fu: Optional[torch.Tensor] = None, fd: Optional[torch.Tensor] = None,
                        b: Optional[torch.Tensor] = None, up: int = 1, down: int = 1, padding: IntOrPair = 0,
                        gain: float = np.sqrt(2), slope: float = 0.2, clamp: Optional[float] = None,
                        flip_filter: bool = False) -> torch.Tensor:
    """Reference implementation of `filtered_lrelu()` composed of bias_act and upfirdn2d (any-order gradients)."""
    padding, gain, slope, clamp, out_hw = _check_args(x, fu, fd, b, up, down, padding, gain, slope, clamp)
    x = bias_act.bias_act(x=x, b=b)
    x = upfirdn2d.upfirdn2d(x=x, f=fu, up=int(up), padding=padding, gain=int(up) ** 2, flip_filter=flip_filter)
    x = bias_act.bias_act(x=x, act='lrelu', alpha=slope, gain=gain, clamp=(None if clamp < 0 else clamp))
    x = upfirdn2d.upfirdn2d(x=x, f=fd, down=int(down), flip_filter=flip_filter)
    misc.assert_shape(x, [None, None, *out_hw])
    return x

#----------------------------------------------------------------------------
# CUDA path. A "chain" is DOWN_f2(ACT(UP_f1(x))) with geometry (up, down, pad1, pad2). Its gradient under a recorded
# mask is the chain (down, up, adjoint pads) with flipped, swapped filters; that chain is linear, so its own gradient
# is the original geometry again: any order of gradients works.

def _corr_filter(f: Optional[torch.Tensor], flip_filter: bool, gain: float, device) -> torch.Tensor:
    """2-D float32 cross-correlation kernel for the plugin."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=device)
    if f.ndim == 1:
        f = torch.outer(f, f)
    if not flip_filter:
        f = f.flip([0, 1])
    return (f * gain).to(device=device, dtype=torch.float32).contiguous()

def _mid_size(in_hw, f1, up, pad1):
    return (in_hw[0] * up + pad1[2] + pad1[3] - f1.shape[0] + 1, in_hw[1] * up + pad1[0] + pad1[1] - f1.shape[1] + 1)

def _adjoint(geom, in_hw, mid_hw, out_hw, f1, f2):
    """Geometry of the gradient chain (maps out -> in through the same intermediate grid)."""
    up, down, (a0x, _a1x, a0y, _a1y), (b0x, _b1x, b0y, _b1y), gain, slope = geom
    pad1 = [f2.shape[1] - 1 - b0x, mid_hw[1] - out_hw[1] * down + b0x,
            f2.shape[0] - 1 - b0y, mid_hw[0] - out_hw[0] * down + b0y]
    pad2 = [f1.shape[1] - 1 - a0x, in_hw[1] * up - up - mid_hw[1] + 1 + a0x,
            f1.shape[0] - 1 - a0y, in_hw[0] * up - up - mid_hw[0] + 1 + a0y]
    return (down, up, pad1, pad2, gain, slope)

def _run_plugin(x, f1, f2, b, mask, geom, clamp, mode):
    up, down, pad1, pad2, gain, slope = geom
    empty = x.new_empty([0])
    return _plugin.module.filtered_lrelu(x.contiguous(), f1, f2, empty if b is None else b.contiguous(),
                                  empty.to(torch.uint8) if mask is None else mask, up, down, *pad1, *pad2,
                                  gain, slope, clamp, mode)

class _MaskedChain(torch.autograd.Function):
    """Linear chain DOWN_f2(mask_factor * UP_f1(g)); used for the gradients of the CUDA path."""
    @staticmethod
    def forward(ctx, g, mask, f1, f2, geom):
        y = _run_plugin(g, f1, f2, None, mask, geom, -1.0, 2)
        ctx.save_for_backward(mask, f1, f2)
        ctx.geom, ctx.in_hw, ctx.out_hw = geom, tuple(g.shape[2:]), tuple(y.shape[2:])
        return y

    @staticmethod
    def backward(ctx, dy):
        mask, f1, f2 = ctx.saved_tensors
        adj = _adjoint(ctx.geom, ctx.in_hw, tuple(mask.shape[2:]), ctx.out_hw, f1, f2)
        return _MaskedChain.apply(dy, mask, f2.flip([0, 1]), f1.flip([0, 1]), adj), None, None, None, None

class _FilteredLReLUCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, f1, f2, geom, clamp):
        need_mask = x.requires_grad or (b is not None and b.requires_grad)
        mask = None
        if need_mask:
            mid_hw = _mid_size(x.shape[2:], f1, geom[0], geom[2])
            mask = torch.zeros([x.shape[0], x.shape[1], *mid_hw], dtype=torch.uint8, device=x.device)
        y = _run_plugin(x, f1, f2, b, mask, geom, clamp, 1 if need_mask else 0)
        ctx.save_for_backward(mask, f1, f2)
        ctx.geom, ctx.in_hw, ctx.out_hw = geom, tuple(x.shape[2:]), tuple(y.shape[2:])
        return y

    @staticmethod
    def backward(ctx, dy):
        mask, f1, f2 = ctx.saved_tensors
        adj = _adjoint(ctx.geom, ctx.in_hw, tuple(mask.shape[2:]), ctx.out_hw, f1, f2)
        dx = _MaskedChain.apply(dy, mask, f2.flip([0, 1]), f1.flip([0, 1]), adj)
        db = dx.sum(dim=[0, 2, 3]) if ctx.needs_input_grad[1] else None
        return dx, db, None, None, None, None

def _filtered_lrelu_cuda(x: torch.Tensor, fu: Optional[torch.Tensor] = None, fd: Optional[torch.Tensor] = None,
                         b: Optional[torch.Tensor] = None, up: int = 1, down: int = 1, padding: IntOrPair = 0,
                         gain: float = np.sqrt(2), slope: float = 0.2, clamp: Optional[float] = None,
                         flip_filter: bool = False) -> torch.Tensor:
    """Fused CUDA implementation of `filtered_lrelu()` (same arguments)."""
    padding, gain, slope, clamp, _out_hw = _check_args(x, fu, fd, b, up, down, padding, gain, slope, clamp)
    up, down = int(up), int(down)
    f1 = _corr_filter(fu, flip_filter, up ** 2, x.device)
    f2 = _corr_filter(fd, flip_filter, 1, x.device)
    geom = (up, down, padding, [0, 0, 0, 0], gain, slope)
    return _FilteredLReLUCuda.apply(x, b, f1, f2, geom, clamp)

#----------------------------------------------------------------------------
