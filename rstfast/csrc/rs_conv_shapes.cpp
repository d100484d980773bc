// Shape and argument checks shared by the CPU and CUDA kernels: errors name the argument, the value
// received and what was expected (TORCH_CHECK_VALUE -> ValueError, TORCH_CHECK_TYPE -> TypeError).
#include "rs_conv.h"

namespace rstfast {

namespace {

void check_basis(const at::Tensor& basis) {
  TORCH_CHECK_VALUE(basis.dim() == 4 && basis.size(2) == basis.size(3) && basis.size(2) % 2 == 1,
                    "basis: expected [F, T, K, K] with odd K, got shape ", basis.sizes());
}

void check_common(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& basis,
                  int64_t stride, int64_t padding, at::IntArrayRef support, int64_t num_slices) {
  TORCH_CHECK_TYPE(x.is_floating_point(), "x: expected a floating-point tensor, got dtype ",
                   x.scalar_type());
  TORCH_CHECK_TYPE(weight.scalar_type() == x.scalar_type() && basis.scalar_type() == x.scalar_type(),
                   "weight, basis: expected the dtype of x (", x.scalar_type(), "), got ",
                   weight.scalar_type(), " and ", basis.scalar_type());
  TORCH_CHECK_VALUE(weight.device() == x.device() && basis.device() == x.device(),
                    "weight, basis: expected the device of x (", x.device(), "), got ",
                    weight.device(), " and ", basis.device());
  TORCH_CHECK_VALUE(stride >= 1, "stride: expected an int >= 1, got ", stride);
  TORCH_CHECK_VALUE(padding >= 0, "padding: expected an int >= 0, got ", padding);
  const int64_t k = basis.size(2);
  TORCH_CHECK_VALUE(!support.empty() && num_slices % static_cast<int64_t>(support.size()) == 0,
                    "support: expected one box side per scale or per slice (a length dividing T = ",
                    num_slices, "), got ", support);
  for (int64_t n : support) {
    TORCH_CHECK_VALUE(n >= 1 && n <= k && n % 2 == 1,
                      "support: expected odd box sides between 1 and K = ", k, ", got ", support);
  }
}

int64_t output_side(int64_t side, int64_t kernel, int64_t stride, int64_t padding, const char* what) {
  const int64_t out = (side + 2 * padding - kernel) / stride + 1;
  TORCH_CHECK_VALUE(side + 2 * padding >= kernel && out >= 1, what, ": ", side, " with padding ",
                    padding, " is smaller than the kernel size ", kernel);
  return out;
}

}  // namespace

Geometry lift_geometry(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& basis,
                       int64_t stride, int64_t padding, at::IntArrayRef support) {
  check_basis(basis);
  TORCH_CHECK_VALUE(x.dim() == 4, "x: expected [B, C, H, W], got shape ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 3 && weight.size(1) == x.size(1) && weight.size(2) == basis.size(0),
                    "weight: expected [O, C, F] = [O, ", x.size(1), ", ", basis.size(0),
                    "], got shape ", weight.sizes());
  check_common(x, weight, basis, stride, padding, support, basis.size(1));
  const int64_t k = basis.size(2);
  return Geometry{x.size(0), x.size(1), weight.size(0), basis.size(0), k, 1, basis.size(1), 1,
                  x.size(2), x.size(3),
                  output_side(x.size(2), k, stride, padding, "x height"),
                  output_side(x.size(3), k, stride, padding, "x width"), stride, padding};
}

Geometry group_geometry(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& basis,
                        int64_t num_rotations, int64_t rotation_size, int64_t scale_size,
                        int64_t stride, int64_t padding, at::IntArrayRef support) {
  check_basis(basis);
  TORCH_CHECK_VALUE(x.dim() == 5, "x: expected [B, C, T, H, W], got shape ", x.sizes());
  const int64_t slices = basis.size(1);
  TORCH_CHECK_VALUE(num_rotations >= 1 && slices % num_rotations == 0,
                    "num_rotations: expected a divisor of T = ", slices, ", got ", num_rotations);
  const int64_t num_scales = slices / num_rotations;
  TORCH_CHECK_VALUE(rotation_size >= 1 && rotation_size <= num_rotations,
                    "rotation_size: expected 1 .. R = ", num_rotations, ", got ", rotation_size);
  TORCH_CHECK_VALUE(scale_size >= 1 && scale_size <= num_scales,
                    "scale_size: expected 1 .. S = ", num_scales, ", got ", scale_size);
  TORCH_CHECK_VALUE(x.size(2) == slices, "x: expected T = ", slices, " in dim 2, got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(1) == x.size(1) &&
                        weight.size(2) == rotation_size * scale_size && weight.size(3) == basis.size(0),
                    "weight: expected [O, C, Lr*Ls, F] = [O, ", x.size(1), ", ",
                    rotation_size * scale_size, ", ", basis.size(0), "], got shape ", weight.sizes());
  check_common(x, weight, basis, stride, padding, support, slices);
  const int64_t k = basis.size(2);
  return Geometry{x.size(0), x.size(1), weight.size(0), basis.size(0), k, slices, slices,
                  rotation_size * scale_size, x.size(3), x.size(4),
                  output_side(x.size(3), k, stride, padding, "x height"),
                  output_side(x.size(4), k, stride, padding, "x width"), stride, padding};
}

bool check_bias(const std::optional<at::Tensor>& bias, const at::Tensor& x, int64_t out_channels) {
  const bool has_bias = bias.has_value() && bias->defined();
  TORCH_CHECK_VALUE(!has_bias || (bias->dim() == 1 && bias->size(0) == out_channels &&
                                  bias->scalar_type() == x.scalar_type() &&
                                  bias->device() == x.device()),
                    "bias: expected [O] = [", out_channels, "] of dtype ", x.scalar_type(), " on ",
                    x.device(), ", got shape ", has_bias ? bias->sizes() : at::IntArrayRef());
  return has_bias;
}

}  // namespace rstfast
