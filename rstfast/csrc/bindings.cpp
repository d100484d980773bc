// torch.library schema of the rstfast ops and their CPU kernels (the CUDA kernels register in
// rs_conv_cuda_glue.cpp). Backward ops return (grad_x, grad_weight); an entry whose output_mask is
// false comes back as an empty tensor. The bias gradient is grad_y summed over (B, T, H', W').
#include <torch/library.h>

#include "rs_conv.h"

TORCH_LIBRARY(rstfast, m) {
  m.def("lift_conv_forward(Tensor x, Tensor weight, Tensor basis, Tensor? bias, int stride, "
        "int padding, int[] support) -> Tensor");
  m.def("lift_conv_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor basis, int stride, "
        "int padding, int[] support, bool[2] output_mask) -> (Tensor, Tensor)");
  m.def("group_conv_forward(Tensor x, Tensor weight, Tensor basis, Tensor? bias, "
        "int num_rotations, int rotation_size, int scale_size, int stride, int padding, "
        "int[] support) -> Tensor");
  m.def("group_conv_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor basis, "
        "int num_rotations, int rotation_size, int scale_size, int stride, int padding, "
        "int[] support, bool[2] output_mask) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(rstfast, CPU, m) {
  m.impl("lift_conv_forward", &rstfast::lift_conv_forward_cpu);
  m.impl("lift_conv_backward", &rstfast::lift_conv_backward_cpu);
  m.impl("group_conv_forward", &rstfast::group_conv_forward_cpu);
  m.impl("group_conv_backward", &rstfast::group_conv_backward_cpu);
}
