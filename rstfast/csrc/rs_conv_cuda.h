// CUDA roto-scale convolution kernels: launchers on raw pointers (no torch headers), so the .cu
// file compiles with a bare CUDA toolkit. rs_conv_cuda_glue.cpp is the ATen-facing side.
//
// Layouts (all contiguous): x [B, C, T_in, H, W] (lifting: T_in = 1), y / grad_y [B, O, T, H', W'],
// filters: the float32 buffer of rstfast.geometry (slot (a, r) of scale s a conv2d weight
// [O, C, n_s, n_s] at slot_start(s, a, r)). The geometry's tables live on the device and are read
// through geometry.h's TableView, the layout's one C++ spelling.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "geometry.h"

namespace rstfast {
namespace cuda {

enum class DType { kFloat32, kFloat16, kBFloat16 };

struct KernelGeometry {
  int batch, in_channels, out_channels, kernel;
  int num_rotations, num_scales, offsets, in_slices, out_slices;
  int height, width, out_height, out_width, stride, padding;
  TableView tables;  // on the device

  __host__ __device__ int support(int s) const { return static_cast<int>(tables.support(s)); }
  __host__ __device__ int crop(int s) const { return static_cast<int>(tables.crop(s)); }
  __host__ __device__ int input_slice(int t, int a) const {
    return static_cast<int>(tables.input_slice(t, a));
  }
  // Start of the n x n filter of (slot (a, r) of scale s, output channel o, input channel c).
  __host__ __device__ int64_t filter_at(int s, int a, int r, int o, int c) const {
    const int n = support(s);
    return tables.slot_start(s, a, r) +
           (static_cast<int64_t>(o) * in_channels + c) * n * n;
  }
};

// Largest kernel side the kernels take (the shared-memory tiles hold K x K taps).
constexpr int kMaxKernel = 31;

// y = conv(x) (+ bias_f32 when not null).
cudaError_t launch_forward(DType dtype, const void* x, const float* filters, const float* bias_f32,
                           void* y, const KernelGeometry& g, cudaStream_t stream);

// grad_x (overwritten) from grad_y.
cudaError_t launch_grad_input(DType dtype, const void* grad_y, const float* filters, void* grad_x,
                              const KernelGeometry& g, cudaStream_t stream);

// grad_filters (float32 buffer, zeroed by the caller): every slot read by some output written.
cudaError_t launch_grad_filters(DType dtype, const void* grad_y, const void* x, float* grad_filters,
                                const KernelGeometry& g, cudaStream_t stream);

}  // namespace cuda
}  // namespace rstfast
