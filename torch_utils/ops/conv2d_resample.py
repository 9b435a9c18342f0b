"""2-D convolution with optional FIR up/downsampling, choosing the cheapest equivalent order of operations."""

from typing import List, Optional, Sequence, Union

import torch

from .. import misc
from . import conv2d_gradfix
from . import upfirdn2d
from .upfirdn2d import _parse_padding
from .upfirdn2d import _get_filter_size

IntOrPair = Union[int, Sequence[int]]

#----------------------------------------------------------------------------

def _get_weight_shape(w: torch.Tensor) -> List[int]:
    with misc.suppress_tracer_warnings(): # Shapes are constant while tracing.
        shape = [int(sz) for sz in w.shape]
    misc.assert_shape(w, shape)
    return shape

#----------------------------------------------------------------------------

def _conv2d_wrapper(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: IntOrPair = 0, groups: int = 1,
                    transpose: bool = False, flip_weight: bool = True) -> torch.Tensor:
    """Convolution through conv2d_gradfix; flip_weight=False turns the cross-correlation into a true convolution."""
    _out_channels, _in_channels_per_group, kh, kw = _get_weight_shape(w)
    if not flip_weight and (kw > 1 or kh > 1):
        w = w.flip([2, 3])
    if transpose:
        return conv2d_gradfix.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return conv2d_gradfix.conv2d(x, w, stride=stride, padding=padding, groups=groups)

#----------------------------------------------------------------------------

@misc.profiled_function
def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None, up: int = 1, down: int = 1,
                    padding: IntOrPair = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    r"""2-D convolution with optional upsampling and downsampling by an FIR filter.

    Args:
        x:           Input [batch, in_channels, height, width].
        w:           Weights [out_channels, in_channels // groups, kernel_h, kernel_w], same dtype as x.
        f:           float32 low-pass FIR filter for resampling ([taps] or [fh, fw]); None = identity.
        up:          Integer upsampling factor (>= 1).
        down:        Integer downsampling factor (>= 1).
        padding:     int, [px, py] or [px0, px1, py0, py1], relative to the upsampled image.
        groups:      Number of groups of the convolution.
        flip_weight: False = true convolution with w, True = cross-correlation (like F.conv2d).
        flip_filter: False = true convolution with f, True = cross-correlation.

    Returns:
        Tensor [batch, out_channels, out_height, out_width].
    """
    # Validate arguments.
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError('conv2d_resample: x must be a 4-D tensor [N, C, H, W]')
    if not (isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype):
        raise ValueError('conv2d_resample: w must be a 4-D tensor with the same dtype as x')
    if not (f is None or (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32)):
        raise ValueError('conv2d_resample: f must be None or a float32 1-D/2-D tensor')
    for name, v in (('up', up), ('down', down), ('groups', groups)):
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f'conv2d_resample: {name} must be an int >= 1, got {v!r}')
    out_channels, in_channels_per_group, kh, kw = _get_weight_shape(w)
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Center the resampling filter: extra padding so that up/down keep the image aligned.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, downsampling only: shrink first so the conv runs on fewer pixels.
    if kw == 1 and kh == 1 and (down > 1 and up == 1):
        x = upfirdn2d.upfirdn2d(x=x, f=f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x=x, w=w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, upsampling only: convolve first, on fewer pixels.
    if kw == 1 and kh == 1 and (up > 1 and down == 1):
        x = _conv2d_wrapper(x=x, w=w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d.upfirdn2d(x=x, f=f, up=up, padding=[px0, px1, py0, py1], gain=up**2,
                                   flip_filter=flip_filter)

    # Downsampling only: filter without decimation, then let the strided conv decimate.
    if down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x=x, f=f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x=x, w=w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling (optionally followed by downsampling): a strided transposed conv does zero-insertion and conv at once.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else: # [out, in/g, kh, kw] -> [in, out/g, kh, kw], group by group.
            w = w.reshape(groups, out_channels // groups, in_channels_per_group, kh, kw)
            w = w.transpose(1, 2)
            w = w.reshape(groups * in_channels_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv2d_wrapper(x=x, w=w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True,
                            flip_weight=(not flip_weight))
        x = upfirdn2d.upfirdn2d(x=x, f=f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2,
                                flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d.upfirdn2d(x=x, f=f, down=down, flip_filter=flip_filter)
        return x

    # No resampling and symmetric, non-negative padding: the conv pads by itself.
    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv2d_wrapper(x=x, w=w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case: pad (and upsample), convolve, then downsample.
    x = upfirdn2d.upfirdn2d(x=x, f=(f if up > 1 else None), up=up, padding=[px0, px1, py0, py1], gain=up**2,
                            flip_filter=flip_filter)
    x = _conv2d_wrapper(x=x, w=w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x=x, f=f, down=down, flip_filter=flip_filter)
    return x

#----------------------------------------------------------------------------
