"""Equivariance as a tool: how far are rstfast layers and models from roto-scale-translation
equivariance, and how stable are a trained model's predictions?

* :func:`measure` — per-layer error ``||f(Tx) - T'f(x)||_M / ||T'f(x)||_M`` for rotations, zooms
  and translations (definitions in :mod:`.measure` and :mod:`.transforms`);
* :func:`prediction_stability` — fraction of test images whose predicted class survives a
  rotation or rescaling;
* :func:`compare_bases` — the error sweep for every basis type at one layer configuration;
* ``python -m rstfast.equivariance`` — the same from the command line (table, JSON, PNG).

Units: a :class:`Transform` angle is in **degrees**, counter-clockwise (``Transform(angle=90)`` is
``torch.rot90(x, 1, dims=(-2, -1))``), and so is ``--angles``; the layers' ``rotations`` argument
(``LiftingConv(..., rotations=[r * 2 * math.pi / R ...])``) is in radians.
"""
from ..models.checkpoint import input_shape_of, load_model, load_state_dict
from ..reference.bases import BASIS_TYPES
from .measure import (DEGENERATE_SHARE, NO_ROTATION_BASES, STABILITY_TRANSFORMS, Measurement,
                      basis_test_net, compare_bases, default_transforms, measure,
                      prediction_stability, probed_layers, smooth_inputs)
from .transforms import Group, Transform, relative_error, transform_map, valid_region

__all__ = ["BASIS_TYPES", "DEGENERATE_SHARE", "NO_ROTATION_BASES", "STABILITY_TRANSFORMS", "Group",
           "Measurement", "Transform", "basis_test_net", "compare_bases", "default_transforms", "input_shape_of",
           "load_model", "load_state_dict", "measure", "prediction_stability", "probed_layers",
           "relative_error", "smooth_inputs", "transform_map", "valid_region"]
