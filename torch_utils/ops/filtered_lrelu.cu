// Fused bias + upsample FIR + leaky ReLU/gain/clamp + downsample FIR kernel (see filtered_lrelu.h).

#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include <ATen/OpMathType.h>
#include "filtered_lrelu.h"

//------------------------------------------------------------------------

static __device__ __forceinline__ int floor_div(int a, int b) { int q = a / b; return (q * b > a) ? q - 1 : q; }
static __device__ __forceinline__ int pos_mod(int a, int b) { int r = a % b; return (r < 0) ? r + b : r; }

template <class T>
static __global__ void filtered_lrelu_kernel(filtered_lrelu_params p, const T* x, const T* b, const float* f1,
    const float* f2, uint8_t* mask, T* y)
{
    using acc_t = at::opmath_type<T>;
    extern __shared__ unsigned char smem_raw[];
    acc_t* s_f1 = reinterpret_cast<acc_t*>(smem_raw);
    const filtered_lrelu_tile tile(p);
    acc_t* s_f2 = s_f1 + p.f1_w * p.f1_h;
    acc_t* s_in = s_f2 + p.f2_w * p.f2_h;
    acc_t* s_mid = s_in + tile.in_w * tile.in_h;
    const int tid = threadIdx.x, nthr = blockDim.x;

    // Filters are shared by all planes.
    for (int i = tid; i < p.f1_w * p.f1_h; i += nthr) s_f1[i] = (acc_t)f1[i];
    for (int i = tid; i < p.f2_w * p.f2_h; i += nthr) s_f2[i] = (acc_t)f2[i];

    // Tile origin on the output, intermediate and zero-stuffed grids; first input sample of the footprint.
    const int out_x0 = blockIdx.x * p.tile_w, out_y0 = blockIdx.y * p.tile_h;
    const int mid_x0 = out_x0 * p.down - p.pad2_x, mid_y0 = out_y0 * p.down - p.pad2_y;
    const int in_x0 = floor_div(mid_x0 - p.pad1_x + p.up - 1, p.up);
    const int in_y0 = floor_div(mid_y0 - p.pad1_y + p.up - 1, p.up);
    const acc_t gain = (acc_t)p.gain, slope = (acc_t)p.slope, clamp = (acc_t)p.clamp;
    const int64_t in_plane = (int64_t)p.in_w * p.in_h, mid_plane = (int64_t)p.mid_w * p.mid_h;
    const int64_t out_plane = (int64_t)p.out_w * p.out_h;

    for (int plane = blockIdx.z; plane < p.num_planes; plane += gridDim.z)
    {
        __syncthreads(); // Previous plane's readers are done (and filters are loaded on the first pass).

        // Stage 0: input footprint + bias; zero outside the image.
        const acc_t bias = b ? (acc_t)b[plane % p.channels] : (acc_t)0;
        const T* xp = x + plane * in_plane;
        for (int i = tid; i < tile.in_w * tile.in_h; i += nthr)
        {
            int ix = in_x0 + i % tile.in_w, iy = in_y0 + i / tile.in_w;
            acc_t v = 0;
            if (ix >= 0 && ix < p.in_w && iy >= 0 && iy < p.in_h)
                v = (acc_t)xp[(int64_t)iy * p.in_w + ix] + bias;
            s_in[i] = v;
        }
        __syncthreads();

        // Stage 1: upsampling FIR (only taps that hit a real sample) + activation.
        for (int i = tid; i < tile.mid_w * tile.mid_h; i += nthr)
        {
            int mx = mid_x0 + i % tile.mid_w, my = mid_y0 + i / tile.mid_w;
            acc_t v = 0;
            if (mx >= 0 && mx < p.mid_w && my >= 0 && my < p.mid_h)
            {
                int kx0 = pos_mod(p.pad1_x - mx, p.up), ky0 = pos_mod(p.pad1_y - my, p.up);
                for (int ky = ky0; ky < p.f1_h; ky += p.up)
                {
                    int sy = (my + ky - p.pad1_y) / p.up - in_y0; // exact division: the tap hits a real sample
                    const acc_t* row = s_in + sy * tile.in_w;
                    const acc_t* frow = s_f1 + ky * p.f1_w;
                    for (int kx = kx0; kx < p.f1_w; kx += p.up)
                        v += frow[kx] * row[(mx + kx - p.pad1_x) / p.up - in_x0];
                }
                int64_t mi = plane * mid_plane + (int64_t)my * p.mid_w + mx;
                if (p.mode == 2)
                {
                    uint8_t m = mask[mi];
                    v *= (m == 0) ? gain : (m == 1) ? gain * slope : (acc_t)0;
                }
                else
                {
                    uint8_t m = 0;
                    if (v < (acc_t)0) { v *= slope; m = 1; }
                    v *= gain;
                    if (clamp >= (acc_t)0 && (v > clamp || v < -clamp)) { v = (v > (acc_t)0) ? clamp : -clamp; m = 2; }
                    if (p.mode == 1) mask[mi] = m;
                }
            }
            s_mid[i] = v;
        }
        __syncthreads();

        // Stage 2: downsampling FIR.
        T* yp = y + plane * out_plane;
        for (int i = tid; i < p.tile_w * p.tile_h; i += nthr)
        {
            int tx = i % p.tile_w, ty = i / p.tile_w;
            int ox = out_x0 + tx, oy = out_y0 + ty;
            if (ox >= p.out_w || oy >= p.out_h)
                continue;
            acc_t v = 0;
            for (int ky = 0; ky < p.f2_h; ky++)
            {
                const acc_t* row = s_mid + (ty * p.down + ky) * tile.mid_w + tx * p.down;
                const acc_t* frow = s_f2 + ky * p.f2_w;
                for (int kx = 0; kx < p.f2_w; kx++)
                    v += frow[kx] * row[kx];
            }
            yp[(int64_t)oy * p.out_w + ox] = (T)v;
        }
    }
}

//------------------------------------------------------------------------

template <class T> void launch_filtered_lrelu(const filtered_lrelu_params& p, const T* x, const T* b,
    const float* f1, const float* f2, uint8_t* mask, T* y, int shared_bytes, cudaStream_t stream)
{
    dim3 grid((p.out_w + p.tile_w - 1) / p.tile_w, (p.out_h + p.tile_h - 1) / p.tile_h,
              p.num_planes < 65535 ? p.num_planes : 65535);
    filtered_lrelu_kernel<T><<<grid, 256, shared_bytes, stream>>>(p, x, b, f1, f2, mask, y);
}

template void launch_filtered_lrelu<float>(const filtered_lrelu_params&, const float*, const float*, const float*,
    const float*, uint8_t*, float*, int, cudaStream_t);
template void launch_filtered_lrelu<double>(const filtered_lrelu_params&, const double*, const double*, const float*,
    const float*, uint8_t*, double*, int, cudaStream_t);
template void launch_filtered_lrelu<c10::Half>(const filtered_lrelu_params&, const c10::Half*, const c10::Half*,
    const float*, const float*, uint8_t*, c10::Half*, int, cudaStream_t);
template void launch_filtered_lrelu<c10::BFloat16>(const filtered_lrelu_params&, const c10::BFloat16*,
    const c10::BFloat16*, const float*, const float*, uint8_t*, c10::BFloat16*, int, cudaStream_t);

//------------------------------------------------------------------------
