"""Right forward, wrong input gradient (doubled)."""
from ._base import DTYPES, conv_forward, unavailable_reason  # noqa: F401
from . import _base


def conv_backward(grad_y, x, filters, geo, need_input, need_filters):
    grad_x, grad_filters = _base.conv_backward(grad_y, x, filters, geo, need_input, need_filters)
    return (None if grad_x is None else 2 * grad_x), grad_filters
