// ATen side of the CUDA kernels: checks, contiguous inputs, outputs, the geometry tables on the
// device, the current stream, and the CUDA registrations of the rstfast_cpp kernels (schemas in
// bindings.cpp, loaded first).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <utility>
#include <vector>

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

int as_int(int64_t value, const char* what) {
  TORCH_CHECK_VALUE(value >= 0 && value <= INT32_MAX, what, ": ", value,
                    " does not fit the CUDA kernels' 32-bit sizes");
  return static_cast<int>(value);
}

// The geometry's tables on x's device: uploaded once per (geometry, device) and kept (as
// Triton's launch glue keeps them), not copied on every call.
at::Tensor device_tables(const Geometry& g, const at::Tensor& x) {
  static std::mutex lock;
  static std::map<std::pair<std::vector<int64_t>, int64_t>, at::Tensor> cache;
  constexpr size_t kMaxEntries = 256;
  std::pair<std::vector<int64_t>, int64_t> key{g.tables, x.device().index()};
  const std::lock_guard<std::mutex> guard(lock);
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  if (cache.size() >= kMaxEntries) cache.clear();
  at::Tensor tables = at::tensor(at::IntArrayRef(g.tables), at::TensorOptions().dtype(at::kLong))
                          .to(x.device());
  cache.emplace(std::move(key), tables);
  return tables;
}

// The kernels' view of a call (its tables stay alive in the device_tables cache).
cuda::KernelGeometry kernel_geometry(const Geometry& g, const at::Tensor& x) {
  TORCH_CHECK_VALUE(g.kernel <= cuda::kMaxKernel, "geometry: the CUDA kernels take K <= ",
                    cuda::kMaxKernel, ", got K = ", g.kernel);
  const at::Tensor tables = device_tables(g, x);
  return cuda::KernelGeometry{
      as_int(x.size(0), "batch"), as_int(g.in_channels, "in_channels"),
      as_int(g.out_channels, "out_channels"), as_int(g.kernel, "kernel"),
      as_int(g.num_rotations, "num_rotations"), as_int(g.num_scales, "num_scales"),
      as_int(g.offsets(), "offsets"), as_int(g.in_slices(), "in_slices"),
      as_int(g.group_size(), "group_size"), as_int(x.size(-2), "height"),
      as_int(x.size(-1), "width"), as_int(g.out_side(x.size(-2)), "out_height"),
      as_int(g.out_side(x.size(-1)), "out_width"), as_int(g.stride, "stride"),
      as_int(g.padding, "padding"), g.view(tables.data_ptr<int64_t>())};
}

void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "rstfast CUDA ", what, " kernel failed: ",
              cudaGetErrorString(status));
}

void check_filters(const at::Tensor& filters) {
  TORCH_CHECK_TYPE(filters.scalar_type() == at::kFloat,
                   "filters: the CUDA kernels take a float32 filter buffer, got ",
                   filters.scalar_type());
}

at::Tensor conv_forward_cuda(const at::Tensor& x, const at::Tensor& filters,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef geometry) {
  const Geometry g = decode_geometry(geometry);
  check_conv_args(x, filters, bias, g);
  check_filters(filters);
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::KernelGeometry kg = kernel_geometry(g, x);
  const at::Tensor xc = x.contiguous(), fc = filters.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor bias_f32 = has_bias ? bias->to(at::kFloat).contiguous() : at::Tensor();
  at::Tensor y = at::empty({x.size(0), g.out_channels, g.group_size(), kg.out_height, kg.out_width},
                           x.options());
  check_launch(cuda::launch_forward(kernel_dtype(x), xc.data_ptr(), fc.data_ptr<float>(),
                                    has_bias ? bias_f32.data_ptr<float>() : nullptr, y.data_ptr(),
                                    kg, c10::cuda::getCurrentCUDAStream()),
               "forward");
  return y;
}

std::tuple<at::Tensor, at::Tensor> conv_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x,
                                                      const at::Tensor& filters,
                                                      at::IntArrayRef geometry,
                                                      std::array<bool, 2> output_mask) {
  const Geometry g = decode_geometry(geometry);
  check_conv_args(x, filters, std::nullopt, g);
  check_filters(filters);
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::KernelGeometry kg = kernel_geometry(g, x);
  const at::Tensor gy = grad_y.to(x.scalar_type()).contiguous(), xc = x.contiguous(),
                   fc = filters.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor grad_x = at::empty({0}, x.options()), grad_filters = at::empty({0}, filters.options());
  if (output_mask[0]) {
    grad_x = at::empty_like(xc);
    check_launch(cuda::launch_grad_input(kernel_dtype(x), gy.data_ptr(), fc.data_ptr<float>(),
                                         grad_x.data_ptr(), kg, stream),
                 "grad input");
  }
  if (output_mask[1]) {
    grad_filters = at::zeros_like(fc);
    check_launch(cuda::launch_grad_filters(kernel_dtype(x), gy.data_ptr(), xc.data_ptr(),
                                           grad_filters.data_ptr<float>(), kg, stream),
                 "grad filters");
  }
  return {grad_x, grad_filters};
}

}  // namespace
}  // namespace rstfast

TORCH_LIBRARY_IMPL(rstfast_cpp, CUDA, m) {
  m.impl("conv_forward", &rstfast::conv_forward_cuda);
  m.impl("conv_backward", &rstfast::conv_backward_cuda);
}
