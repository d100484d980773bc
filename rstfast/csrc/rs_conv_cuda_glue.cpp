// ATen side of the CUDA kernels: argument checks, contiguous inputs, outputs, current stream, and
// the CUDA registrations of the rstfast ops (schemas are defined in bindings.cpp, loaded first).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "rs_conv.h"
#include "rs_conv_cuda.h"

namespace rstfast {
namespace {

cuda::DType kernel_dtype(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "x: the CUDA kernels support float32, float16 and bfloat16, got ",
                       x.scalar_type());
  }
}

// Kernel shape of a call; `box` keeps the per-slice support sides alive on the device.
cuda::ConvShape kernel_shape(const Geometry& g, bool lifting, int64_t num_rotations,
                             int64_t rotation_size, int64_t scale_size, at::IntArrayRef support,
                             const at::Tensor& x, at::Tensor& box) {
  TORCH_CHECK_VALUE(g.kernel <= cuda::kMaxKernel, "basis: the CUDA kernels take K <= ",
                    cuda::kMaxKernel, ", got K = ", g.kernel);
  std::vector<int> sides(g.out_slices);
  for (int64_t t = 0; t < g.out_slices; ++t) sides[t] = static_cast<int>(support[t % support.size()]);
  box = at::tensor(sides, at::TensorOptions().dtype(at::kInt)).to(x.device());
  return cuda::ConvShape{static_cast<int>(g.batch), static_cast<int>(g.in_channels),
                         static_cast<int>(g.out_channels), static_cast<int>(g.num_funcs),
                         static_cast<int>(g.kernel), static_cast<int>(g.in_slices),
                         static_cast<int>(g.out_slices), static_cast<int>(g.offsets),
                         static_cast<int>(num_rotations),
                         static_cast<int>(g.out_slices / num_rotations),
                         static_cast<int>(rotation_size), static_cast<int>(scale_size), lifting,
                         static_cast<int>(g.height), static_cast<int>(g.width),
                         static_cast<int>(g.out_height), static_cast<int>(g.out_width),
                         static_cast<int>(g.stride), static_cast<int>(g.padding),
                         box.data_ptr<int>()};
}

void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "rstfast CUDA ", what, " kernel failed: ",
              cudaGetErrorString(status));
}

at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& basis,
                        const std::optional<at::Tensor>& bias, const Geometry& g, bool lifting,
                        int64_t num_rotations, int64_t rotation_size, int64_t scale_size,
                        at::IntArrayRef support) {
  const c10::cuda::CUDAGuard guard(x.device());
  const bool has_bias = check_bias(bias, x, g.out_channels);
  at::Tensor box;
  const cuda::ConvShape shape = kernel_shape(g, lifting, num_rotations, rotation_size, scale_size,
                                             support, x, box);
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous(), bc = basis.contiguous();
  const at::Tensor bias_c = has_bias ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({g.batch, g.out_channels, g.out_slices, g.out_height, g.out_width},
                           x.options());
  check_launch(cuda::launch_forward(kernel_dtype(x), xc.data_ptr(), wc.data_ptr(), bc.data_ptr(),
                                    has_bias ? bias_c.data_ptr() : nullptr, y.data_ptr(), shape,
                                    c10::cuda::getCurrentCUDAStream()),
               "forward");
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& basis, const Geometry& g, bool lifting, int64_t num_rotations,
    int64_t rotation_size, int64_t scale_size, at::IntArrayRef support,
    std::array<bool, 2> output_mask) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor box;
  const cuda::ConvShape shape = kernel_shape(g, lifting, num_rotations, rotation_size, scale_size,
                                             support, x, box);
  const at::Tensor gy = grad_y.contiguous(), xc = x.contiguous(), wc = weight.contiguous(),
                   bc = basis.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor grad_x = at::empty({0}, x.options()), grad_w = at::empty({0}, x.options());
  if (output_mask[0]) {
    grad_x = at::empty_like(xc);
    check_launch(cuda::launch_grad_input(kernel_dtype(x), gy.data_ptr(), wc.data_ptr(),
                                         bc.data_ptr(), grad_x.data_ptr(), shape, stream),
                 "grad input");
  }
  if (output_mask[1]) {
    at::Tensor accum = at::zeros(weight.sizes(), x.options().dtype(at::kFloat));
    check_launch(cuda::launch_grad_weight(kernel_dtype(x), gy.data_ptr(), xc.data_ptr(),
                                          bc.data_ptr(), accum.data_ptr<float>(), shape, stream),
                 "grad weight");
    grad_w = accum.to(weight.scalar_type());
  }
  return {grad_x, grad_w};
}

at::Tensor lift_conv_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& basis, const std::optional<at::Tensor>& bias,
                                  int64_t stride, int64_t padding, at::IntArrayRef support) {
  const Geometry g = lift_geometry(x, weight, basis, stride, padding, support);
  return forward_cuda(x, weight, basis, bias, g, true, 1, 1, 1, support);
}

std::tuple<at::Tensor, at::Tensor> lift_conv_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& basis, int64_t stride, int64_t padding, at::IntArrayRef support,
    std::array<bool, 2> output_mask) {
  const Geometry g = lift_geometry(x, weight, basis, stride, padding, support);
  return backward_cuda(grad_y, x, weight, basis, g, true, 1, 1, 1, support, output_mask);
}

at::Tensor group_conv_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor& basis, const std::optional<at::Tensor>& bias,
                                   int64_t num_rotations, int64_t rotation_size,
                                   int64_t scale_size, int64_t stride, int64_t padding,
                                   at::IntArrayRef support) {
  const Geometry g = group_geometry(x, weight, basis, num_rotations, rotation_size, scale_size,
                                    stride, padding, support);
  return forward_cuda(x, weight, basis, bias, g, false, num_rotations, rotation_size, scale_size,
                      support);
}

std::tuple<at::Tensor, at::Tensor> group_conv_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& basis, int64_t num_rotations, int64_t rotation_size, int64_t scale_size,
    int64_t stride, int64_t padding, at::IntArrayRef support, std::array<bool, 2> output_mask) {
  const Geometry g = group_geometry(x, weight, basis, num_rotations, rotation_size, scale_size,
                                    stride, padding, support);
  return backward_cuda(grad_y, x, weight, basis, g, false, num_rotations, rotation_size,
                       scale_size, support, output_mask);
}

}  // namespace
}  // namespace rstfast

TORCH_LIBRARY_IMPL(rstfast, CUDA, m) {
  m.impl("lift_conv_forward", &rstfast::lift_conv_forward_cuda);
  m.impl("lift_conv_backward", &rstfast::lift_conv_backward_cuda);
  m.impl("group_conv_forward", &rstfast::group_conv_forward_cuda);
  m.impl("group_conv_backward", &rstfast::group_conv_backward_cuda);
}
