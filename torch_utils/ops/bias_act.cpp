// Python binding and argument checks for the fused bias + activation kernel.

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "bias_act.h"

//------------------------------------------------------------------------

static bool same_layout(const torch::Tensor& a, const torch::Tensor& ref)
{
    return a.numel() == 0 || (a.sizes() == ref.sizes() && a.strides() == ref.strides());
}

//------------------------------------------------------------------------
// Signature kept compatible with the established plugin: for grad >= 1 the tensor `x` only
// provides the shape/layout of the result (and, for grad == 2, the incoming gradient).

static torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref,
    torch::Tensor dy, int grad, int dim, int act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be dense in memory");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    TORCH_CHECK(act >= 1 && act <= 9, "bias_act: unknown activation index");
    TORCH_CHECK(x.numel() < ((int64_t)1 << 62), "bias_act: x is too large");
    for (const torch::Tensor* t : {&b, &xref, &yref, &dy}) {
        TORCH_CHECK(t->numel() == 0 || t->device() == x.device(), "bias_act: all tensors must be on x's device");
        TORCH_CHECK(t->numel() == 0 || t->scalar_type() == x.scalar_type(), "bias_act: all tensors must have x's dtype");
    }
    TORCH_CHECK(b.numel() == 0 || (b.dim() == 1 && dim >= 0 && dim < x.dim() && b.size(0) == x.size(dim)),
        "bias_act: b must be 1-D with length x.shape[dim]");
    TORCH_CHECK(same_layout(xref, x) && same_layout(yref, x) && same_layout(dy, x),
        "bias_act: xref, yref and dy must match x's shape and strides");
    TORCH_CHECK(grad == 0 || dy.numel() > 0, "bias_act: dy is required for grad > 0");

    const at::cuda::OptionalCUDAGuard guard(device_of(x));
    torch::Tensor bc = b.contiguous();
    torch::Tensor out = torch::empty_like(x); // empty_like keeps dense layouts (e.g. channels-last)
    TORCH_CHECK(out.strides() == x.strides(), "bias_act: unexpected output layout");
    if (x.numel() == 0)
        return out;

    bias_act_params p;
    p.n        = x.numel();
    p.grad     = grad;
    p.act      = act;
    p.ref_mode = xref.numel() ? 1 : (yref.numel() ? 2 : 0);
    p.alpha    = (float)alpha;
    p.gain     = (float)gain;
    p.clamp    = (float)clamp;
    p.size_b   = bc.numel() ? x.size(dim) : 0;
    p.step_b   = bc.numel() ? x.stride(dim) : 1;
    TORCH_CHECK(grad == 0 || p.ref_mode != 1 || bc.numel() == 0 || p.size_b > 0, "bias_act: internal error");

    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act_cuda", [&] {
        auto ptr = [](const torch::Tensor& t) { return t.numel() ? t.data_ptr<scalar_t>() : (scalar_t*)nullptr; };
        launch_bias_act<scalar_t>(p, ptr(x), ptr(bc), ptr(xref), ptr(yref), ptr(dy), out.data_ptr<scalar_t>(), stream);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}

//------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act);
}

//------------------------------------------------------------------------
