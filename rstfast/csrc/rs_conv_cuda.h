// CUDA roto-scale convolution kernels: launchers on raw pointers (no torch headers), so the .cu file
// compiles with a bare CUDA toolkit. rs_conv_cuda_glue.cpp is the ATen-facing side.
//
// Layouts (all contiguous): x [B, C, T_in, H, W] (lifting: T_in = 1), weight [O, C, A, F],
// basis [F, T, K, K], y / grad_y [B, O, T, H', W'], box [T] int32 on the device (support box side of
// each output slice). Group layer: output t = r*S + s reads input slice ((r + i) mod R)*S + s + j
// with weight offset a = i*Ls + j (s + j < S); lifting: every t reads slice 0 with a = 0.
#pragma once

#include <cuda_runtime_api.h>

namespace rstfast {
namespace cuda {

enum class DType { kFloat32, kFloat16, kBFloat16 };

struct ConvShape {
  int batch, in_channels, out_channels, num_funcs, kernel;
  int in_slices, out_slices, offsets;           // T_in, T, A
  int num_rotations, num_scales, rotation_size, scale_size;
  bool lifting;
  int height, width, out_height, out_width, stride, padding;
  const int* box;                               // [T] on the device
};

// Largest kernel side the kernels take (the grad-weight kernel keeps K*K taps per block).
constexpr int kMaxKernel = 31;

// y = conv(x) (+ bias when not null); filters are produced per block from weight and basis.
cudaError_t launch_forward(DType dtype, const void* x, const void* weight, const void* basis,
                           const void* bias, void* y, const ConvShape& shape, cudaStream_t stream);

// grad_x (overwritten) from grad_y.
cudaError_t launch_grad_input(DType dtype, const void* grad_y, const void* weight,
                              const void* basis, void* grad_x, const ConvShape& shape,
                              cudaStream_t stream);

// grad_weight_f32 [O, C, A, F] += contribution of grad_y (float32 buffer, zeroed by the caller).
cudaError_t launch_grad_weight(DType dtype, const void* grad_y, const void* x, const void* basis,
                               float* grad_weight_f32, const ConvShape& shape, cudaStream_t stream);

}  // namespace cuda
}  // namespace rstfast
