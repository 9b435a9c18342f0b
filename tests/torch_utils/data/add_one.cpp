// Tiny test extension for torch_utils.custom_ops: y = x + 1 on a CUDA float32 tensor.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include "add_one.h"

static torch::Tensor add_one(torch::Tensor x)
{
    TORCH_CHECK(x.is_cuda(), "x must reside on a CUDA device");
    TORCH_CHECK(x.scalar_type() == torch::kFloat32, "x must be float32");
    torch::Tensor xc = x.contiguous();
    torch::Tensor y = torch::empty_like(xc);
    add_one_launch(xc.data_ptr<float>(), y.data_ptr<float>(), xc.numel(), at::cuda::getCurrentCUDAStream());
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("add_one", &add_one);
}
