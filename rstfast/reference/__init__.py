"""Pure-PyTorch reference: steerable bases and roto-scale convolutions (the oracle)."""
from . import functional
from .bases import steerable_basis
from .functional import (basis_support, expand_filter, group_conv, group_conv_1x1, lift_conv,
                         max_projection)

__all__ = ["steerable_basis", "functional", "expand_filter", "lift_conv", "group_conv",
           "group_conv_1x1", "max_projection", "basis_support"]
