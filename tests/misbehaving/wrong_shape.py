"""Returns an output of the wrong shape."""
from ._base import DTYPES, conv_backward, unavailable_reason  # noqa: F401
from . import _base


def conv_forward(x, filters, bias, geo):
    return _base.conv_forward(x, filters, bias, geo)[:, :, :1]
