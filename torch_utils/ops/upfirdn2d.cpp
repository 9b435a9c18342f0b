// Python binding and argument checks for the generic upfirdn2d kernel.

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "upfirdn2d.h"

//------------------------------------------------------------------------

static torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
    int padx0, int padx1, int pady0, int pady1, bool flip, double gain)
{
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W]");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on x's device");
    TORCH_CHECK(f.scalar_type() == torch::kFloat && f.dim() == 2, "upfirdn2d: f must be a 2-D float32 tensor");
    TORCH_CHECK(f.numel() > 0 && f.numel() <= INT_MAX, "upfirdn2d: bad filter size");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up/down must be >= 1");
    TORCH_CHECK(x.size(2) <= INT_MAX / upy && x.size(3) <= INT_MAX / upx, "upfirdn2d: x is too large");

    const int in_h = (int)x.size(2), in_w = (int)x.size(3);
    const int f_h = (int)f.size(0), f_w = (int)f.size(1);
    const int64_t span_w = (int64_t)in_w * upx + padx0 + padx1;
    const int64_t span_h = (int64_t)in_h * upy + pady0 + pady1;
    TORCH_CHECK(span_w >= f_w && span_h >= f_h, "upfirdn2d: upsampled and padded input is smaller than the filter");
    const int out_w = (int)((span_w - f_w) / downx + 1);
    const int out_h = (int)((span_h - f_h) / downy + 1);

    const at::cuda::OptionalCUDAGuard guard(device_of(x));
    const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
    torch::Tensor y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(
        channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
    if (y.numel() == 0)
        return y;
    torch::Tensor fc = f.contiguous();

    upfirdn2d_params p;
    p.in_w = in_w; p.in_h = in_h; p.out_w = out_w; p.out_h = out_h;
    p.num_planes_c = (int)x.size(1);
    p.num_outputs = y.numel();
    p.sx_n = x.stride(0); p.sx_c = x.stride(1); p.sx_h = x.stride(2); p.sx_w = x.stride(3);
    p.sy_n = y.stride(0); p.sy_c = y.stride(1); p.sy_h = y.stride(2); p.sy_w = y.stride(3);
    p.channels_last = channels_last ? 1 : 0;
    p.up_x = upx; p.up_y = upy; p.down_x = downx; p.down_y = downy;
    p.pad_x0 = padx0; p.pad_y0 = pady0;
    p.f_w = f_w; p.f_h = f_h;
    p.flip = flip ? 1 : 0;
    p.gain = (float)gain;

    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
        launch_upfirdn2d<scalar_t>(p, x.data_ptr<scalar_t>(), fc.data_ptr<float>(), y.data_ptr<scalar_t>(), stream);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}

//------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d);
}

//------------------------------------------------------------------------
