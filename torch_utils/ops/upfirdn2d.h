// Shared declarations for the upfirdn2d plugin (upfirdn2d.cpp / upfirdn2d.cu).
//
// For every output pixel (oy, ox) of every (n, c) plane the kernel evaluates
//   out = gain * sum_{ty, tx} x[iy, ix] * f[wy, wx]
// over the filter taps that land on a real (non-inserted, non-padded) input sample of the
// zero-upsampled and padded image; (wy, wx) are the taps flipped unless flip_filter is set,
// so that the default is a true convolution (matching the reference implementation).

#pragma once
#include <cstdint>
#include <cuda_runtime.h>

//------------------------------------------------------------------------

struct upfirdn2d_params
{
    int     in_w, in_h, out_w, out_h;   // spatial sizes
    int     num_planes_c;               // channels (for index decoding)
    int64_t num_outputs;                // N * C * out_h * out_w
    int64_t sx_n, sx_c, sx_h, sx_w;     // input strides (elements)
    int64_t sy_n, sy_c, sy_h, sy_w;     // output strides (elements)
    int     channels_last;              // decode output index with C fastest (coalesced writes)
    int     up_x, up_y, down_x, down_y;
    int     pad_x0, pad_y0;
    int     f_w, f_h;                   // filter size (f is contiguous [f_h, f_w] float32)
    int     flip;
    float   gain;
};

//------------------------------------------------------------------------

template <class T> void launch_upfirdn2d(const upfirdn2d_params& p, const T* x, const float* f, T* y,
    cudaStream_t stream);

//------------------------------------------------------------------------
