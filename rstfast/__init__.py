"""rstfast: fast, faithful roto-scale-translation equivariant CNNs (RST-CNN) for PyTorch.

Group feature maps are ``[B, C, R*S, H, W]`` with ``t = r*S + s`` (rotation-major).
"""
import logging as _logging


class _UnlessConfigured(_logging.StreamHandler):
    """rstfast's INFO lines (e.g. auto measuring a new layer shape) on stderr while the
    application has not configured logging; once it has (a root handler exists), they go through
    its handlers only. Silence them with ``logging.getLogger("rstfast").setLevel("WARNING")``."""

    def emit(self, record):
        if not _logging.getLogger().handlers:
            super().emit(record)


_logger = _logging.getLogger(__name__)
if not _logger.handlers:
    _logger.addHandler(_UnlessConfigured())
    _logger.setLevel(_logging.INFO)

from .reference.bases import steerable_basis  # noqa: E402
from . import backends, geometry, golden, nn, ops, models  # noqa: E402

__version__ = "0.1.0"
__all__ = ["steerable_basis", "backends", "geometry", "golden", "nn", "ops", "models", "__version__"]
