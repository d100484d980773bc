// Geometry decoding and argument checks shared by the CPU and CUDA kernels: errors name the
// argument, the value received and what was expected (TORCH_CHECK_VALUE -> ValueError,
// TORCH_CHECK_TYPE -> TypeError).
#include "rs_conv.h"

namespace rstfast {

Geometry decode_geometry(at::IntArrayRef code) {
  try {
    return Geometry::decode(code);
  } catch (const std::invalid_argument& error) {
    TORCH_CHECK_VALUE(false, error.what());
  }
}

void check_conv_args(const at::Tensor& x, const at::Tensor& filters,
                     const std::optional<at::Tensor>& bias, const Geometry& g) {
  TORCH_CHECK_VALUE(x.dim() == (g.lifting ? 4 : 5) && x.size(1) == g.in_channels &&
                        (g.lifting || x.size(2) == g.group_size()),
                    "x: expected ", g.lifting ? "[B, C, H, W]" : "[B, C, T, H, W]", " with C = ",
                    g.in_channels, g.lifting ? "" : " and T = ",
                    g.lifting ? "" : std::to_string(g.group_size()), ", got shape ", x.sizes());
  TORCH_CHECK_VALUE(g.out_side(x.size(-2)) >= 1 && g.out_side(x.size(-1)) >= 1,
                    "x: spatial size ", x.size(-2), "x", x.size(-1), " with padding ", g.padding,
                    " is smaller than the kernel size ", g.kernel);
  TORCH_CHECK_VALUE(filters.dim() == 1 && filters.numel() == g.filter_numel() &&
                        filters.device() == x.device(),
                    "filters: expected a flat buffer of ", g.filter_numel(), " elements on ",
                    x.device(), ", got shape ", filters.sizes(), " on ", filters.device());
  TORCH_CHECK_VALUE(!bias.has_value() || !bias->defined() ||
                        (bias->dim() == 1 && bias->size(0) == g.out_channels &&
                         bias->device() == x.device()),
                    "bias: expected [O] = [", g.out_channels, "] on ", x.device());
}

}  // namespace rstfast
