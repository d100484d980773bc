// Roto-scale convolution kernels on the cropped filter buffer: the ATen-facing entry points of
// the CPU and CUDA builds (ops rstfast_cpp::conv_forward / conv_backward, schemas in bindings.cpp).
//
// x [B, C, H, W] (lifting) or [B, C, T, H, W] (t = r*S + s); filters: the flat buffer of
// rstfast.geometry (per scale s a block [A, R, O, C, n_s, n_s]); y / grad_y [B, O, T, H', W'].
// conv_backward returns (grad_x, grad_filters); an entry whose output_mask is false is an empty
// tensor; grad_filters is zero in slots no output reads through.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "geometry.h"

namespace rstfast {

// Decode the int[] geometry (a ValueError naming `geometry` when malformed).
Geometry decode_geometry(at::IntArrayRef code);
// Shapes, dtypes and devices of x, filters and bias against g (ValueError / TypeError).
void check_conv_args(const at::Tensor& x, const at::Tensor& filters,
                     const std::optional<at::Tensor>& bias, const Geometry& g);

at::Tensor conv_forward_cpu(const at::Tensor& x, const at::Tensor& filters,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef geometry);

std::tuple<at::Tensor, at::Tensor> conv_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x,
                                                     const at::Tensor& filters,
                                                     at::IntArrayRef geometry,
                                                     std::array<bool, 2> output_mask);

}  // namespace rstfast
