// Shared declarations for the fused bias + activation plugin (bias_act.cpp / bias_act.cu).
//
// One kernel serves the forward pass and both derivative orders. For element i with channel
// c = (i / step_b) % size_b (i = memory offset; all operands share one dense layout):
//   grad == 0: out = clamp(gain * act(x + b[c]))
//   grad == 1: out = dy * D1(r)
//   grad == 2: out = x * dy * D2(r)
// The reference r is xref + b[c] (ref_mode 1, derivatives written in terms of the input) or
// yref (ref_mode 2, written in terms of the forward output); D1 = d(out)/d(input) expressed
// through r, D2 = dD1/dr, both zero where |out| >= clamp. For grad == 1 the tensor x only gives
// the shape; for grad == 2 it carries the incoming gradient of the grad == 1 result.

#pragma once
#include <cstdint>
#include <cuda_runtime.h>

//------------------------------------------------------------------------

struct bias_act_params
{
    int64_t n;        // number of elements
    int     grad;     // 0, 1 or 2 (see above)
    int     act;      // activation index (cuda_idx in bias_act.py)
    int     ref_mode; // 0 = no reference, 1 = xref (+ bias), 2 = yref
    float   alpha;    // lrelu slope
    float   gain;     // output gain
    float   clamp;    // < 0 means no clamp
    int64_t step_b;   // memory stride of the bias dimension
    int64_t size_b;   // length of the bias dimension (0 = no bias)
};

//------------------------------------------------------------------------

template <class T> void launch_bias_act(const bias_act_params& p, const T* x, const T* b,
    const T* xref, const T* yref, const T* dy, T* out, cudaStream_t stream);

//------------------------------------------------------------------------
