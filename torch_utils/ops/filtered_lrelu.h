// Shared declarations for the filtered_lrelu plugin (filtered_lrelu.cpp / filtered_lrelu.cu).
//
// One kernel evaluates the chain  y = DOWN_f2( ACT( UP_f1( x + b ) ) )  for one output tile per thread block:
//   stage 0: the input footprint of the tile (+ per-channel bias) is loaded into shared memory;
//   stage 1: intermediate samples  t[p] = sum_k f1[k] * z[p + k - a0],  z = x zero-stuffed by `up`, are computed
//            for the tile's footprint on the intermediate grid (size Hi x Wi; samples outside it count as zero),
//            followed by the activation; they stay in shared memory;
//   stage 2: y[o] = sum_k f2[k] * t[o * down + k - b0].
// Both filters are 2-D float32 cross-correlation kernels (the caller flips/scales them).
// Activation modes:
//   0: leaky ReLU (slope), times gain, clamp to [-clamp, clamp] when clamp >= 0;
//   1: as 0, and also record per intermediate sample 0 = linear, 1 = negative side, 2 = clamped (uint8 mask);
//   2: linear op: multiply by gain, gain * slope or 0 according to a recorded mask (used by all gradients, since the
//      gradient of the chain is a chain of the same form with the roles of the two stages swapped).

#pragma once
#include <cstdint>
#include <cuda_runtime.h>

//------------------------------------------------------------------------

struct filtered_lrelu_params
{
    int     num_planes, channels;       // N * C, C
    int     in_w, in_h;                 // input size
    int     mid_w, mid_h;               // intermediate grid size
    int     out_w, out_h;               // output size
    int     up, down;
    int     pad1_x, pad1_y;             // stage-1 leading padding (a0)
    int     pad2_x, pad2_y;             // stage-2 leading padding (b0)
    int     f1_w, f1_h, f2_w, f2_h;     // filter sizes (contiguous [h, w] float32)
    int     tile_w, tile_h;             // output tile per block
    int     mode;
    float   gain, slope, clamp;
};

// Geometry of one block's shared-memory buffers, shared by host (sizing) and device (indexing).
struct filtered_lrelu_tile
{
    int mid_w, mid_h, in_w, in_h;
    __host__ __device__ filtered_lrelu_tile(const filtered_lrelu_params& p)
    {
        mid_w = (p.tile_w - 1) * p.down + p.f2_w;
        mid_h = (p.tile_h - 1) * p.down + p.f2_h;
        in_w = (mid_w + p.f1_w - 2) / p.up + 2;
        in_h = (mid_h + p.f1_h - 2) / p.up + 2;
    }
    __host__ __device__ int shared_elems(const filtered_lrelu_params& p) const
    {
        return p.f1_w * p.f1_h + p.f2_w * p.f2_h + in_w * in_h + mid_w * mid_h;
    }
};

//------------------------------------------------------------------------

template <class T> void launch_filtered_lrelu(const filtered_lrelu_params& p, const T* x, const T* b,
    const float* f1, const float* f2, uint8_t* mask, T* y, int shared_bytes, cudaStream_t stream);

//------------------------------------------------------------------------
