// Launcher shared by add_one.cpp and add_one.cu (plain CUDA, so the .cu compiles without PyTorch headers).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
void add_one_launch(const float* x, float* y, int64_t n, cudaStream_t stream);
