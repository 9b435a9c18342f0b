// Kernel of the tiny test extension: one thread per element.
#include "add_one.h"

static __global__ void add_one_kernel(const float* x, float* y, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = x[i] + 1.0f;
}

void add_one_launch(const float* x, float* y, int64_t n, cudaStream_t stream)
{
    if (n <= 0)
        return;
    int threads = 256;
    int blocks = (int)((n + threads - 1) / threads);
    add_one_kernel<<<blocks, threads, 0, stream>>>(x, y, n);
}
