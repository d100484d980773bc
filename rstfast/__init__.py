"""rstfast: fast, faithful roto-scale-translation equivariant CNNs (RST-CNN) for PyTorch.

Group feature maps are ``[B, C, R*S, H, W]`` with ``t = r*S + s`` (rotation-major).
"""
from .reference.bases import steerable_basis
from . import backends, geometry, nn, ops, models

__version__ = "0.1.0"
__all__ = ["steerable_basis", "backends", "geometry", "nn", "ops", "models", "__version__"]
