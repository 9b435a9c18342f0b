// Python binding of the filtered_lrelu plugin: argument checks, output allocation, tile sizing, dtype dispatch.

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "filtered_lrelu.h"

//------------------------------------------------------------------------
// y = DOWN_f2(ACT(UP_f1(x + b))); see filtered_lrelu.h. pad1 = stage-1 padding (x0, x1, y0, y1) on the
// zero-stuffed input, pad2 = stage-2 padding on the intermediate grid. mask: uint8 [N, C, mid_h, mid_w],
// written in mode 1, read in mode 2, ignored (may be empty) in mode 0.

static torch::Tensor filtered_lrelu(torch::Tensor x, torch::Tensor f1, torch::Tensor f2, torch::Tensor b,
    torch::Tensor mask, int up, int down, int p1x0, int p1x1, int p1y0, int p1y1, int p2x0, int p2x1, int p2y0,
    int p2y1, double gain, double slope, double clamp, int mode)
{
    // Validate arguments.
    TORCH_CHECK(x.is_cuda(), "filtered_lrelu: x must reside on a CUDA device");
    TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "filtered_lrelu: x must be a contiguous 4-D tensor");
    TORCH_CHECK(f1.device() == x.device() && f2.device() == x.device(), "filtered_lrelu: filters must be on x's device");
    TORCH_CHECK(f1.dtype() == torch::kFloat && f2.dtype() == torch::kFloat, "filtered_lrelu: filters must be float32");
    TORCH_CHECK(f1.dim() == 2 && f2.dim() == 2 && f1.is_contiguous() && f2.is_contiguous(),
        "filtered_lrelu: filters must be contiguous 2-D tensors");
    TORCH_CHECK(up >= 1 && down >= 1, "filtered_lrelu: up and down must be >= 1");
    TORCH_CHECK(mode >= 0 && mode <= 2, "filtered_lrelu: invalid mode");
    int N = (int)x.size(0), C = (int)x.size(1), H = (int)x.size(2), W = (int)x.size(3);
    TORCH_CHECK(b.numel() == 0 || (b.dim() == 1 && b.size(0) == C && b.dtype() == x.dtype() && b.is_contiguous() &&
        b.device() == x.device()), "filtered_lrelu: b must be empty or a contiguous [C] tensor of x's dtype/device");

    // Sizes of the intermediate grid and the output.
    filtered_lrelu_params p = {};
    p.f1_h = (int)f1.size(0); p.f1_w = (int)f1.size(1); p.f2_h = (int)f2.size(0); p.f2_w = (int)f2.size(1);
    int mid_w = W * up + p1x0 + p1x1 - p.f1_w + 1, mid_h = H * up + p1y0 + p1y1 - p.f1_h + 1;
    TORCH_CHECK(mid_w >= 1 && mid_h >= 1, "filtered_lrelu: padded input is smaller than the upsampling filter");
    int span_w = mid_w + p2x0 + p2x1 - p.f2_w, span_h = mid_h + p2y0 + p2y1 - p.f2_h;
    TORCH_CHECK(span_w >= 0 && span_h >= 0, "filtered_lrelu: intermediate is smaller than the downsampling filter");
    int out_w = span_w / down + 1, out_h = span_h / down + 1;
    if (mode != 0)
        TORCH_CHECK(mask.dtype() == torch::kUInt8 && mask.is_contiguous() && mask.device() == x.device() &&
            mask.dim() == 4 && mask.size(0) == N && mask.size(1) == C && mask.size(2) == mid_h && mask.size(3) == mid_w,
            "filtered_lrelu: mask must be a contiguous uint8 [N, C, mid_h, mid_w] tensor on x's device");

    const at::cuda::OptionalCUDAGuard device_guard(device_of(x));
    torch::Tensor y = torch::empty({N, C, out_h, out_w}, x.options());
    if (y.numel() == 0)
        return y;

    p.num_planes = N * C; p.channels = C;
    p.in_w = W; p.in_h = H; p.mid_w = mid_w; p.mid_h = mid_h; p.out_w = out_w; p.out_h = out_h;
    p.up = up; p.down = down; p.pad1_x = p1x0; p.pad1_y = p1y0; p.pad2_x = p2x0; p.pad2_y = p2y0;
    p.mode = mode; p.gain = (float)gain; p.slope = (float)slope; p.clamp = (float)clamp;

    // Largest output tile (up to 16x16) whose shared buffers fit in the default 48 KiB.
    size_t elem = (x.scalar_type() == torch::kDouble) ? sizeof(double) : sizeof(float);
    int shared_bytes = 0;
    for (int t = 16; t >= 1; t /= 2)
    {
        p.tile_w = p.tile_h = t;
        shared_bytes = (int)(filtered_lrelu_tile(p).shared_elems(p) * elem);
        if (shared_bytes <= 48 * 1024)
            break;
    }
    TORCH_CHECK(shared_bytes <= 48 * 1024, "filtered_lrelu: filters are too large for the fused kernel");

    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    uint8_t* mask_ptr = (mode != 0) ? mask.data_ptr<uint8_t>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "filtered_lrelu", [&]
    {
        launch_filtered_lrelu<scalar_t>(p, x.data_ptr<scalar_t>(), b.numel() ? b.data_ptr<scalar_t>() : nullptr,
            f1.data_ptr<float>(), f2.data_ptr<float>(), mask_ptr, y.data_ptr<scalar_t>(), shared_bytes, stream);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}

//------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("filtered_lrelu", &filtered_lrelu);
}

//------------------------------------------------------------------------
