"""Pure-PyTorch reference: steerable bases and roto-scale convolutions (the oracle)."""
from . import functional
from ..geometry import basis_support
from .bases import BASIS_TYPES, raw_steerable_basis, steerable_basis, support_sizes
from .functional import (expand_filter, group_conv, group_conv_1x1, lift_conv, max_projection)

__all__ = ["steerable_basis", "raw_steerable_basis", "support_sizes", "BASIS_TYPES", "functional",
           "expand_filter", "lift_conv", "group_conv", "group_conv_1x1", "max_projection",
           "basis_support"]
