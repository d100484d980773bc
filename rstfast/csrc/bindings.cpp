// Schemas of the C++ kernels (namespace rstfast_cpp) and their CPU registrations; the CUDA
// registrations are in rs_conv_cuda_glue.cpp. These are kernels only: the differentiable,
// fake-kernel-carrying op contract is rstfast::* in rstfast/ops.py, which calls them.
#include <torch/library.h>

#include "rs_conv.h"

TORCH_LIBRARY(rstfast_cpp, m) {
  m.def("conv_forward(Tensor x, Tensor filters, Tensor? bias, int[] geometry) -> Tensor");
  m.def("conv_backward(Tensor grad_y, Tensor x, Tensor filters, int[] geometry, "
        "bool[2] output_mask) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(rstfast_cpp, CPU, m) {
  m.impl("conv_forward", &rstfast::conv_forward_cpu);
  m.impl("conv_backward", &rstfast::conv_backward_cpu);
}
