"""Upsample, FIR filter, downsample (upfirdn2d) with a custom CUDA kernel and a pure-PyTorch reference.

API and semantics follow NVlabs StyleGAN3/EG3D. Deliberate deviations: (1) if the CUDA plugin fails to
build for a CUDA tensor, a warning is issued once and the reference implementation is used instead of
raising (SG2-ADA behaviour); (2) `setup_filter` never normalises the caller's tensor in place.
Setting the environment variable `EG3D_OPS_IMPL=ref` forces the reference implementation everywhere.
Nothing is compiled at import time; the plugin is built on first CUDA use.
"""

import os
import traceback
import warnings
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import custom_ops
from .. import misc
from . import conv2d_gradfix

IntOrPair = Union[int, Sequence[int]]

#----------------------------------------------------------------------------
# Lazy plugin construction. The same keyword set is used by tests/bench to build without importing.

plugin_kwargs = dict(
    module_name='upfirdn2d_plugin',
    sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
    headers=['upfirdn2d.h'],
    source_dir=os.path.dirname(__file__),
    extra_cuda_cflags=['--use_fast_math'],
)

_plugin = None
_init_failed = False

def _init() -> bool:
    """Build/load the plugin once; on failure warn once and report False (callers use the reference)."""
    global _plugin, _init_failed
    if _plugin is None and not _init_failed:
        try:
            _plugin = custom_ops.get_plugin(**plugin_kwargs)
        except Exception: # any build/import problem -> reference fallback
            _init_failed = True
            warnings.warn('Failed to build CUDA kernels for upfirdn2d; falling back to the slow reference '
                          'implementation. Details:\n\n' + traceback.format_exc())
    return _plugin is not None

def _ref_forced() -> bool:
    return os.environ.get('EG3D_OPS_IMPL', '').lower() == 'ref'

#----------------------------------------------------------------------------
# Argument parsing. Python ints only (numpy ints are rejected, as in the official op).

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)

def _parse_scaling(scaling: IntOrPair) -> List[int]:
    if _is_int(scaling):
        scaling = [scaling, scaling]
    if not (isinstance(scaling, (list, tuple)) and len(scaling) == 2 and all(_is_int(s) for s in scaling)):
        raise ValueError(f'upfirdn2d: scaling must be an int or a pair of ints, got {scaling!r}')
    sx, sy = scaling
    if sx < 1 or sy < 1:
        raise ValueError(f'upfirdn2d: scaling factors must be >= 1, got {scaling!r}')
    return [sx, sy]

def _parse_padding(padding: IntOrPair) -> List[int]:
    if _is_int(padding):
        padding = [padding, padding]
    if not (isinstance(padding, (list, tuple)) and len(padding) in (2, 4) and all(_is_int(p) for p in padding)):
        raise ValueError(f'upfirdn2d: padding must be an int, [px, py] or [px0, px1, py0, py1], got {padding!r}')
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    return list(padding)

def _get_filter_size(f: Optional[torch.Tensor]) -> Tuple[int, int]:
    """Return (width, height) of a 1-D or 2-D filter; None counts as 1x1."""
    if f is None:
        return 1, 1
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2)):
        raise ValueError('upfirdn2d: filter must be None or a 1-D/2-D tensor')
    fw, fh = f.shape[-1], f.shape[0]
    with misc.suppress_tracer_warnings():
        fw, fh = int(fw), int(fh)
    misc.assert_shape(f, [fh, fw][:f.ndim])
    if fw < 1 or fh < 1:
        raise ValueError('upfirdn2d: filter must not be empty')
    return fw, fh

#----------------------------------------------------------------------------

def setup_filter(f: Any, device: torch.device = torch.device('cpu'), normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1, separable: Optional[bool] = None) -> torch.Tensor:
    r"""Convenience function to set up a 2-D (or separable 1-D) FIR filter for `upfirdn2d()`.

    Args:
        f:           Filter taps: None (= [1]), scalar, 1-D or 2-D array-like.
        device:      Result device.
        normalize:   Divide by the sum of the taps (unit DC gain).
        flip_filter: Flip the filter along all axes.
        gain:        Overall gain; the filter is multiplied by `gain ** (ndim / 2)`.
        separable:   Keep a 1-D filter separable; None = only if it has >= 8 taps.

    Returns:
        float32 tensor of shape [taps] (separable) or [fh, fw].
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError('setup_filter: filter must be a non-empty scalar, 1-D or 2-D array')
    if f.ndim == 0:
        f = f.reshape([1])
    if separable is None:
        separable = (f.ndim == 1 and f.numel() >= 8)
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f) # non-separable use of a 1-D filter: explicit 2-D outer product
    if f.ndim != (1 if separable else 2):
        raise ValueError('setup_filter: a 2-D filter cannot be separable')
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)

#----------------------------------------------------------------------------

def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up: IntOrPair = 1, down: IntOrPair = 1,
              padding: IntOrPair = 0, flip_filter: bool = False, gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    r"""Pad, upsample, filter and downsample a batch of 2-D images.

    Per channel: (1) upsample by inserting `up - 1` zeros after each pixel; (2) pad with zeros
    (negative padding crops); (3) convolve with `f` (true convolution unless `flip_filter`),
    scaled by `gain`; (4) keep every `down`-th pixel. Output size per axis:
    `(in * up + pad0 + pad1 - taps) // down + 1`.

    Args:
        x:           Float tensor [N, C, H, W].
        f:           float32 FIR filter [fh, fw] or separable [taps], or None (identity).
        up:          Integer upsampling factor, int or [x, y].
        down:        Integer downsampling factor, int or [x, y].
        padding:     int, [px, py] or [px0, px1, py0, py1] (relative to the upsampled image).
        flip_filter: False = convolution, True = correlation.
        gain:        Overall scaling of the signal magnitude.
        impl:        'cuda' (used only for CUDA tensors when the plugin builds) or 'ref'.

    Returns:
        Tensor [N, C, out_h, out_w] with x's dtype.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError('upfirdn2d: x must be a tensor')
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"upfirdn2d: impl must be 'ref' or 'cuda', got {impl!r}")
    if impl == 'cuda' and x.is_cuda and not _ref_forced() and _init():
        return _upfirdn2d_cuda(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain).apply(x, f)
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)

#----------------------------------------------------------------------------

def _check_filter(x: torch.Tensor, f: Optional[torch.Tensor]) -> torch.Tensor:
    if f is None:
        return torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2)):
        raise ValueError('upfirdn2d: f must be None or a 1-D/2-D tensor')
    if f.dtype != torch.float32 or f.requires_grad:
        raise ValueError('upfirdn2d: f must be float32 and must not require grad')
    return f

@misc.profiled_function
def _upfirdn2d_ref(x: torch.Tensor, f: Optional[torch.Tensor], up: IntOrPair = 1, down: IntOrPair = 1,
                   padding: IntOrPair = 0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Reference implementation of `upfirdn2d()` using standard PyTorch ops."""
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError('upfirdn2d: x must be a 4-D tensor [N, C, H, W]')
    f = _check_filter(x, f)
    N, C, H, W = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = f.shape[-1], f.shape[0]
    if W * upx + px0 + px1 < fw or H * upy + py0 + py1 < fh:
        raise ValueError('upfirdn2d: upsampled and padded input is smaller than the filter')

    # Zero-insertion upsampling: put each sample at the top-left of an up x up cell of zeros.
    if upx > 1 or upy > 1:
        x = x.reshape([N, C, H, 1, W, 1])
        x = torch.nn.functional.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape([N, C, H * upy, W * upx])

    # Pad by the positive amounts, then crop by the negative ones.
    x = torch.nn.functional.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    # Filter: scale, cast, flip for true convolution (conv2d correlates), depthwise weights.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([C, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = conv2d_gradfix.conv2d(input=x, weight=f, groups=C)
    else: # separable: horizontal pass, then vertical pass
        x = conv2d_gradfix.conv2d(input=x, weight=f.unsqueeze(2), groups=C)
        x = conv2d_gradfix.conv2d(input=x, weight=f.unsqueeze(3), groups=C)

    # Decimate.
    return x[:, :, ::downy, ::downx]

#----------------------------------------------------------------------------
# CUDA path. Gradient = the same op with up/down swapped, the filter flipped and padding chosen
# so the result lands back on the input grid; it is itself an op of this family, so any order works.

_upfirdn2d_cuda_cache = dict()

def _upfirdn2d_cuda(up: IntOrPair = 1, down: IntOrPair = 1, padding: IntOrPair = 0,
                    flip_filter: bool = False, gain: float = 1):
    """Fast CUDA implementation of `upfirdn2d()` (returns an autograd Function class)."""
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    gain = float(gain)
    key = (upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), gain)
    if key in _upfirdn2d_cuda_cache:
        return _upfirdn2d_cuda_cache[key]

    class Upfirdn2dCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f): # pylint: disable=arguments-differ
            if x.ndim != 4:
                raise ValueError('upfirdn2d: x must be a 4-D tensor [N, C, H, W]')
            f = _check_filter(x, f)
            ctx.in_size = x.shape
            ctx.save_for_backward(f)
            if f.ndim == 1 and f.shape[0] == 1:
                f = f.square().unsqueeze(0) # 1-tap separable == 1x1
            if f.ndim == 2:
                return _plugin.upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)
            y = _plugin.upfirdn2d(x, f.unsqueeze(0), upx, 1, downx, 1, px0, px1, 0, 0, flip_filter, 1.0)
            return _plugin.upfirdn2d(y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, py0, py1, flip_filter, gain)

        @staticmethod
        def backward(ctx, dy): # pylint: disable=arguments-differ
            f, = ctx.saved_tensors
            _, _, ih, iw = ctx.in_size
            _, _, oh, ow = dy.shape
            fw, fh = _get_filter_size(f)
            # Per axis: left = taps-1-pad0; right chosen so that (len - taps) // up + 1 == in.
            p = [fw - 1 - px0, iw * upx + px0 - ow * downx - upx + 1,
                 fh - 1 - py0, ih * upy + py0 - oh * downy - upy + 1]
            dx = None
            if ctx.needs_input_grad[0]:
                dx = _upfirdn2d_cuda(up=[downx, downy], down=[upx, upy], padding=p,
                                     flip_filter=(not flip_filter), gain=gain).apply(dy, f)
                assert dx.shape == ctx.in_size
            return dx, None

    _upfirdn2d_cuda_cache[key] = Upfirdn2dCuda
    return Upfirdn2dCuda

#----------------------------------------------------------------------------

def filter2d(x: torch.Tensor, f: Optional[torch.Tensor], padding: IntOrPair = 0, flip_filter: bool = False,
             gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    r"""Filter a batch of images with `f`, keeping the size (padding adds to the default).

    Returns:
        Tensor [N, C, H + extra padding, W + extra padding].
    """
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

def upsample2d(x: torch.Tensor, f: Optional[torch.Tensor], up: IntOrPair = 2, padding: IntOrPair = 0,
               flip_filter: bool = False, gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    r"""Upsample a batch of images by `up` with filter `f` (gain is multiplied by upx * upy).

    Returns:
        Tensor [N, C, H * upy, W * upx] (plus any extra padding).
    """
    upx, upy = _parse_scaling(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)

def downsample2d(x: torch.Tensor, f: Optional[torch.Tensor], down: IntOrPair = 2, padding: IntOrPair = 0,
                 flip_filter: bool = False, gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    r"""Downsample a batch of images by `down` after filtering with `f`.

    Returns:
        Tensor [N, C, H // downy, W // downx] (for even sizes and no extra padding).
    """
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

#----------------------------------------------------------------------------
