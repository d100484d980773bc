// Roto-scale convolutions: the ATen-facing entry points shared by the CPU and CUDA builds.
//
// Index conventions (spec/layers.md): group maps [B, C, T, H, W] with t = r*S + s (rotation-major),
// basis [F, T, K, K], lifting weight [O, C, F], group weight [O, C, Lr*Ls, F] with a = i*Ls + j.
// `support` holds odd box sides; output slice t uses support[t % support.size()] (one entry per
// scale or one per slice); taps outside the centred box are skipped (they are zero in the basis).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

namespace rstfast {

// Sizes of one call. The lifting layer is the group layer with one input slice and one offset.
struct Geometry {
  int64_t batch, in_channels, out_channels, num_funcs, kernel;
  int64_t in_slices;   // T of the input (1 for the lifting layer)
  int64_t out_slices;  // T of the output
  int64_t offsets;     // A = Lr * Ls (1 for the lifting layer)
  int64_t height, width, out_height, out_width, stride, padding;
  int64_t plane() const { return height * width; }
  int64_t out_plane() const { return out_height * out_width; }
};

// Validate the arguments of a lifting / group call and return its sizes.
Geometry lift_geometry(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& basis,
                       int64_t stride, int64_t padding, at::IntArrayRef support);
Geometry group_geometry(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& basis,
                        int64_t num_rotations, int64_t rotation_size, int64_t scale_size,
                        int64_t stride, int64_t padding, at::IntArrayRef support);
// True when a bias is given; raises unless it is [O] with the dtype and device of x.
bool check_bias(const std::optional<at::Tensor>& bias, const at::Tensor& x, int64_t out_channels);

at::Tensor lift_conv_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& basis, const std::optional<at::Tensor>& bias,
                                 int64_t stride, int64_t padding, at::IntArrayRef support);

std::tuple<at::Tensor, at::Tensor> lift_conv_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& basis, int64_t stride, int64_t padding, at::IntArrayRef support,
    std::array<bool, 2> output_mask);

at::Tensor group_conv_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& basis, const std::optional<at::Tensor>& bias,
                                  int64_t num_rotations, int64_t rotation_size,
                                  int64_t scale_size, int64_t stride, int64_t padding,
                                  at::IntArrayRef support);

std::tuple<at::Tensor, at::Tensor> group_conv_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& basis, int64_t num_rotations, int64_t rotation_size, int64_t scale_size,
    int64_t stride, int64_t padding, at::IntArrayRef support, std::array<bool, 2> output_mask);

}  // namespace rstfast
