// CUDA kernel for the fused bias + activation op (see bias_act.h for the contract).

#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include <ATen/OpMathType.h>
#include "bias_act.h"

//------------------------------------------------------------------------
// Activation derivatives. D1 is d(gain * act)/dr and D2 is dD1/dr, where r is the reference
// value: the pre-activation input (ref_mode 1) or the forward output (ref_mode 2). Writing
// them in terms of the output lets the forward pass keep only its result for backward.

template <class A> struct Deriv { A d1, d2; };

template <class A, int ACT>
__device__ __forceinline__ A act_forward(A v, A alpha)
{
    if (ACT == 2) return v > A(0) ? v : A(0);                       // relu
    if (ACT == 3) return v > A(0) ? v : v * alpha;                  // lrelu
    if (ACT == 4) return tanh(v);                                   // tanh
    if (ACT == 5) return A(1) / (A(1) + exp(-v));                   // sigmoid
    if (ACT == 6) return v > A(0) ? v : expm1(v);                   // elu
    if (ACT == 7) {                                                 // selu
        const A scale = A(1.0507009873554804934193349852946);
        const A salpha = A(1.6732632423543772848170429916717);
        return v > A(0) ? scale * v : scale * salpha * expm1(v);
    }
    if (ACT == 8) return v > A(20) ? v : log1p(exp(v));             // softplus (beta 1, threshold 20)
    if (ACT == 9) return v / (A(1) + exp(-v));                      // swish
    return v;                                                       // linear
}

template <class A, int ACT>
__device__ __forceinline__ Deriv<A> act_deriv_x(A v)
{
    // Input-referenced derivatives (only swish uses them).
    Deriv<A> d = {A(1), A(0)};
    if (ACT == 9) {
        A s = A(1) / (A(1) + exp(-v));
        d.d1 = s * (A(1) + v * (A(1) - s));
        d.d2 = s * (A(1) - s) * (A(2) + v * (A(1) - A(2) * s));
    }
    return d;
}

template <class A, int ACT>
__device__ __forceinline__ Deriv<A> act_deriv_y(A a, A alpha)
{
    // Output-referenced derivatives; a = act(x) recovered from the output. d2 is per unit of a.
    Deriv<A> d = {A(1), A(0)};
    if (ACT == 2) d.d1 = a > A(0) ? A(1) : A(0);
    if (ACT == 3) d.d1 = a > A(0) ? A(1) : alpha;
    if (ACT == 4) { d.d1 = A(1) - a * a; d.d2 = A(-2) * a; }
    if (ACT == 5) { d.d1 = a * (A(1) - a); d.d2 = A(1) - A(2) * a; }
    if (ACT == 6) { if (a <= A(0)) { d.d1 = a + A(1); d.d2 = A(1); } }
    if (ACT == 7) {
        const A scale = A(1.0507009873554804934193349852946);
        const A salpha = A(1.6732632423543772848170429916717);
        if (a > A(0)) d.d1 = scale; else { d.d1 = a + scale * salpha; d.d2 = A(1); }
    }
    if (ACT == 8) { d.d1 = -expm1(-a); d.d2 = exp(-a); }
    return d;
}

//------------------------------------------------------------------------

template <class T, int ACT>
__global__ void bias_act_kernel(bias_act_params p, const T* __restrict__ x, const T* __restrict__ b,
    const T* __restrict__ xref, const T* __restrict__ yref, const T* __restrict__ dy, T* __restrict__ out)
{
    using A = at::opmath_type<T>;
    const A alpha = A(p.alpha), gain = A(p.gain), clamp = A(p.clamp);
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride)
    {
        A bias = A(0);
        if (p.size_b > 0 && (p.grad == 0 || p.ref_mode == 1))
            bias = A(b[(i / p.step_b) % p.size_b]);

        if (p.grad == 0) {
            A v = act_forward<A, ACT>(A(x[i]) + bias, alpha) * gain;
            if (clamp >= A(0))
                v = fmin(fmax(v, -clamp), clamp); // NaN maps to -clamp here (the reference keeps NaN)
            out[i] = T(v);
            continue;
        }

        // Derivative factors of y = clamp(gain * act(r)) with respect to the reference value.
        Deriv<A> d = {gain, A(0)};
        bool clamped = false;
        if (p.ref_mode == 1) {
            A v = A(xref[i]) + bias;
            Deriv<A> dx = act_deriv_x<A, ACT>(v);
            d.d1 = dx.d1 * gain;
            d.d2 = dx.d2 * gain;
            if (clamp >= A(0))
                clamped = fabs(act_forward<A, ACT>(v, alpha) * gain) >= clamp;
        } else if (p.ref_mode == 2) {
            A y = A(yref[i]);
            if (clamp >= A(0))
                clamped = fabs(y) >= clamp;
            if (gain == A(0)) {
                d.d1 = A(0); // constant output
            } else {
                // d1 = gain * act'(a); d(d1)/dy = gain * d2_a / gain = d2_a.
                Deriv<A> dy_ = act_deriv_y<A, ACT>(y / gain, alpha);
                d.d1 = dy_.d1 * gain;
                d.d2 = dy_.d2;
            }
        }
        if (clamped)
            d.d1 = d.d2 = A(0);
        out[i] = (p.grad == 1) ? T(A(dy[i]) * d.d1) : T(A(x[i]) * A(dy[i]) * d.d2);
    }
}

//------------------------------------------------------------------------

template <class T>
void launch_bias_act(const bias_act_params& p, const T* x, const T* b, const T* xref, const T* yref,
    const T* dy, T* out, cudaStream_t stream)
{
    const int block = 256;
    int64_t blocks = (p.n + block - 1) / block;
    const int grid = (int)(blocks < 65535 * 8 ? blocks : 65535 * 8); // grid-stride loop covers the rest
    switch (p.act)
    {
        case 1: bias_act_kernel<T, 1><<<grid, block, 0, stream>>>(p, x, b, xref, yref, dy, out); break;
        case 2: bias_act_kernel<T, 2><<<grid, block, 0, stream>>>(p, x, b, xref, yref, dy, out); break;
        case 3: bias_act_kernel<T, 3><<<grid, block, 0, stream>>>(p, x, b, xref, yref, dy, out); break;
        case 4: bias_act_kernel<T, 4><<<grid, block, 0, stream>>>(p, x, b, xref, yref, dy, out); break;
        case 5: bias_act_kernel<T, 5><<<grid, block, 0, stream>>>(p, x, b, xref, yref, dy, out); break;
        case 6: bias_act_kernel<T, 6><<<grid, block, 0, stream>>>(p, x, b, xref, yref, dy, out); break;
        case 7: bias_act_kernel<T, 7><<<grid, block, 0, stream>>>(p, x, b, xref, yref, dy, out); break;
        case 8: bias_act_kernel<T, 8><<<grid, block, 0, stream>>>(p, x, b, xref, yref, dy, out); break;
        case 9: bias_act_kernel<T, 9><<<grid, block, 0, stream>>>(p, x, b, xref, yref, dy, out); break;
    }
}

template void launch_bias_act<float>(const bias_act_params&, const float*, const float*, const float*,
    const float*, const float*, float*, cudaStream_t);
template void launch_bias_act<double>(const bias_act_params&, const double*, const double*, const double*,
    const double*, const double*, double*, cudaStream_t);
template void launch_bias_act<c10::Half>(const bias_act_params&, const c10::Half*, const c10::Half*,
    const c10::Half*, const c10::Half*, const c10::Half*, c10::Half*, cudaStream_t);
template void launch_bias_act<c10::BFloat16>(const bias_act_params&, const c10::BFloat16*, const c10::BFloat16*,
    const c10::BFloat16*, const c10::BFloat16*, const c10::BFloat16*, c10::BFloat16*, cudaStream_t);

//------------------------------------------------------------------------
