"""Upsample, FIR filter, downsample (upfirdn2d) with a custom CUDA kernel and a pure-PyTorch reference.

API and semantics follow NVlabs StyleGAN3/EG3D. Deliberate deviations: (1) if the CUDA plugin fails to
build for a CUDA tensor, a warning is issued once and the reference implementation is used instead of
raising (SG2-ADA behaviour); (2) `setup_filter` never normalises the caller's tensor in place.
Setting the environment variable `EG3D_OPS_IMPL=ref` forces the reference implementation everywhere.
Nothing is compiled at import time; the plugin is built on first CUDA use.
"""

import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from .. import custom_ops
from .. import misc
from . import conv2d_gradfix

IntOrPair = Union[int, Sequence[int]]

_plugin = custom_ops.LazyPlugin('upfirdn2d', os.path.dirname(__file__))

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
    if impl == 'cuda' and x.is_cuda and not custom_ops.ref_forced() and _plugin.ready():
        return _upfirdn2d_cuda(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain).apply(x, f)
    if impl == 'cuda' and x.device.type == 'cpu' and cpu_fast and not custom_ops.ref_forced():
        return _upfirdn2d_cuda(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain,
                               kernel='cpu').apply(x, f)
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

# CPU fast path (used for CPU tensors with impl='cuda', the default, unless `cpu_fast` is False or EG3D_OPS_IMPL=ref).
# The reference filters the zero-upsampled image at full resolution and then throws away (down^2 - 1)/down^2 of the
# outputs; here each axis is a short sum of shifted slices: polyphase for upsampling (taps/up products per output),
# strided for downsampling (only kept outputs are computed), and rank-1 2-D filters (setup_filter's outer products)
# run as two 1-D passes. Results match the reference to float32 rounding (tests/torch_utils/ops/test_upfirdn2d_fast.py).

cpu_fast = True

def _fir1d(x: torch.Tensor, g: List[float], up: int, down: int, p0: int, p1: int, dim: int) -> torch.Tensor:
    """Correlate x along `dim` with taps g after zero-upsampling by `up` and padding (p0, p1), keep every `down`-th."""
    L_in, t = x.shape[dim], len(g)
    L_out = (L_in * up + p0 + p1 - t) // down + 1
    def sl(a, start, stop, step=1): # slice a along dim
        idx = [slice(None)] * a.ndim
        idx[dim] = slice(start, stop, step)
        return a[tuple(idx)]
    if up > 1 and down > 1: # rare (not used by the networks): explicit zero insertion, then the strided case
        d = dim % x.ndim
        z = x.new_zeros(list(x.shape[:d + 1]) + [up] + list(x.shape[d + 1:]))
        z.select(d + 1, 0).copy_(x)
        return _fir1d(z.flatten(d, d + 1), g, 1, down, p0, p1, dim)
    if up == 1:
        pad = [0, 0] * (-dim - 1) + [p0, p1] # F.pad crops on negative amounts
        xp = torch.nn.functional.pad(x, pad)
        out = None
        for k, gk in enumerate(g):
            s = sl(xp, k, k + (L_out - 1) * down + 1, down)
            out = s * gk if out is None else out.add_(s, alpha=gk)
        return out
    # Polyphase: output i = q*up + r reads x[q + (r + k - p0) // up] for the taps k with (r + k - p0) % up == 0.
    Q = -(-L_out // up)
    terms = [(r, k, (r + k - p0) // up) for r in range(up) for k in range(t) if (r + k - p0) % up == 0]
    lo = max(0, -min([o for _, _, o in terms], default=0))
    hi = max(0, max([o + Q - L_in for _, _, o in terms], default=0))
    xp = torch.nn.functional.pad(x, [0, 0] * (-dim - 1) + [lo, hi])
    shape = list(x.shape)
    d = dim % x.ndim
    out = x.new_zeros(shape[:d] + [Q, up] + shape[d + 1:])
    for r, k, o in terms:
        out.select(d + 1, r).add_(sl(xp, o + lo, o + lo + Q), alpha=g[k])
    return sl(out.flatten(d, d + 1), 0, L_out)

def _cpu_kernel(x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int, downy: int, px0: int, px1: int,
                py0: int, py1: int, flip_filter: bool, gain: float) -> torch.Tensor:
    """Same contract as the plugin's upfirdn2d (2-D filter [fh, fw], no autograd inside)."""
    if x.shape[3] * upx + px0 + px1 < f.shape[1] or x.shape[2] * upy + py0 + py1 < f.shape[0]:
        raise ValueError('upfirdn2d: upsampled and padded input is smaller than the filter')
    f = f.double()
    if not flip_filter:
        f = f.flip([0, 1]) # correlation taps
    total = float(f.sum())
    col, row = f.sum(1), (f.sum(0) / total if total != 0 else None)
    if f.shape[0] == 1 or f.shape[1] == 1:
        col, row = f[:, 0] / f[0, 0], f[0] # exact for the 1-D filters the separable wrapper passes
        if f[0, 0] == 0:
            row = None
    resample = upx > 1 or upy > 1 or downx > 1 or downy > 1 # plain filtering: oneDNN's depthwise conv measured faster
    if resample and row is not None and torch.allclose(torch.outer(col, row), f, rtol=1e-6, atol=1e-12):
        y = _fir1d(x, row.tolist(), upx, downx, px0, px1, -1)
        y = _fir1d(y, (col * gain).tolist(), upy, downy, py0, py1, -2)
        # A custom Function must not return a view (callers add to the result in place); y owns its storage.
        return (y.detach() if y.is_contiguous() else y.contiguous()) if y._is_view() else y
    # General 2-D filter: zero insertion, pad/crop, one strided correlation per channel.
    N, C, H, W = x.shape
    if upx > 1 or upy > 1:
        z = x.new_zeros([N, C, H, upy, W, upx])
        z[:, :, :, 0, :, 0] = x
        x = z.reshape([N, C, H * upy, W * upx])
    x = torch.nn.functional.pad(x, [px0, px1, py0, py1])
    w = (f * gain).to(x.dtype)[None, None].repeat(C, 1, 1, 1)
    return torch.nn.functional.conv2d(x, w, stride=[downy, downx], groups=C)

#----------------------------------------------------------------------------

_upfirdn2d_cuda_cache = dict()

def _upfirdn2d_cuda(up: IntOrPair = 1, down: IntOrPair = 1, padding: IntOrPair = 0,
                    flip_filter: bool = False, gain: float = 1, kernel: str = 'cuda'):
    """Fast implementation of `upfirdn2d()` (returns an autograd Function class); kernel 'cuda' = the plugin,
    'cpu' = `_cpu_kernel` (same autograd structure, so CPU tests exercise the CUDA path's gradient logic too)."""
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    gain = float(gain)
    key = (upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), gain, kernel)
    run = _cpu_kernel if kernel == 'cpu' else (lambda *args: _plugin.module.upfirdn2d(*args))
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
                return run(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)
            y = run(x, f.unsqueeze(0), upx, 1, downx, 1, px0, px1, 0, 0, flip_filter, 1.0)
            return run(y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, py0, py1, flip_filter, gain)

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
                                     flip_filter=(not flip_filter), gain=gain, kernel=kernel).apply(dy, f)
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
