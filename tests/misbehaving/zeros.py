"""Fast and wrong: every output and gradient is zero."""
import torch

from ._base import DTYPES, unavailable_reason  # noqa: F401


def conv_forward(x, filters, bias, geo):
    return x.new_zeros(geo.out_shape(x.shape))


def conv_backward(grad_y, x, filters, geo, need_input, need_filters):
    return (torch.zeros_like(x) if need_input else None,
            torch.zeros_like(filters) if need_filters else None)
