"""SESN's layers (Sosnovik, Szmaja & Smeulders, ICLR 2020; ISosnovik/sesn) on rstfast's layers.

Replace ``from .impl.ses_conv import ...`` (SESN's ``models/impl/ses_conv.py``) by
``from rstfast.compat.sesn import ...`` and SESN's model code runs unchanged on rstfast's backends:
the class names, constructor signatures and defaults, the Hermite bases ``A`` and ``B`` (SESN's
normalisation), the parameter and buffer names (``weight``, ``bias``, ``basis``), their shapes and
their initialisation are SESN's, so SESN checkpoints load with ``load_state_dict(strict=True)``.

Feature maps are SESN's ``[B, C, S, H, W]``: rstfast's ``[B, C, R*S, H, W]`` with one rotation.
Basis ``[F, S, K, K]``; lifting weight ``[O, C, F]``; group weight ``[O, C, scale_size, F]``, output
scale ``s`` reads input scales ``s .. s + scale_size - 1`` (zero past the largest) with the filter
of scale ``s``. See docs/sesn_compat.md for what is covered.
"""
from __future__ import annotations

from ..nn.modules import GroupConv, GroupConv1x1, GroupMaxProjection, LiftingConv, check_keywords

__all__ = ["SESConv_Z2_H", "SESConv_H_H", "SESConv_H_H_1x1", "SESMaxProjection", "BASIS_TYPES"]

BASIS_TYPES = ("A", "B")
# keyword arguments SESN's basis code reads (steerable_B; steerable_A ignores them)
_BASIS_KWARGS = ("mult", "max_order")


def _sesn_basis(layer: str, basis_type, kwargs: dict) -> dict:
    """``basis_type`` and the basis keyword arguments for rstfast's layer; a basis type that is
    not SESN's is a ValueError, an unknown keyword a TypeError (SESN's models pass ``dropout``
    to their layers, which ignore it)."""
    if not isinstance(basis_type, str) or basis_type not in BASIS_TYPES:
        raise ValueError(f"basis_type: got {basis_type!r}, expected 'A' or 'B' (SESN's Hermite "
                         f"bases); rstfast's other bases: rstfast.nn.LiftingConv / GroupConv")
    return dict(basis_type=basis_type, **check_keywords(layer, kwargs, _BASIS_KWARGS))


class SESConv_Z2_H(LiftingConv):
    """SESN's lifting convolution Z2 -> (S x Z2): ``[B, C, H, W] -> [B, O, S, H', W']``.

    weight ``[O, C, F]`` (``F = effective_size**2``), buffer basis ``[F, S, K, K]``, bias ``[O]``
    (zeros) or None. ``mult`` and ``max_order`` reach basis ``B`` (defaults 1.2 and 4).
    ``backend``: one of ``rstfast.backends.names()``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, effective_size, scales=(1.0,),
                 stride=1, padding=0, bias=False, basis_type='A', *, backend="auto", **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, effective_size, scales=scales,
                         rotations=(0.0,), stride=stride, padding=padding, bias=bias,
                         backend=backend, **_sesn_basis("SESConv_Z2_H", basis_type, kwargs))


class SESConv_H_H(GroupConv):
    """SESN's group convolution (S x Z2) -> (S x Z2): ``[B, C, S, H, W] -> [B, O, S, H', W']``.

    weight ``[O, C, scale_size, F]``: output scale ``s`` reads input scale ``s + j`` (zero when
    ``s + j >= S``) with ``weight[:, :, j]`` and the basis slice of ``s``. Buffer basis
    ``[F, S, K, K]``, bias ``[O]`` or None; ``mult``, ``max_order`` and ``backend`` as
    :class:`SESConv_Z2_H`.
    """

    def __init__(self, in_channels, out_channels, scale_size, kernel_size, effective_size,
                 scales=(1.0,), stride=1, padding=0, bias=False, basis_type='A', *,
                 backend="auto", **kwargs):
        super().__init__(in_channels, out_channels, scale_size, 1, kernel_size, effective_size,
                         scales=scales, rotations=(0.0,), stride=stride, padding=padding,
                         bias=bias, backend=backend,
                         **_sesn_basis("SESConv_H_H", basis_type, kwargs))


# SESN's 1x1 layer and max projection are rstfast's own (same signature, parameters and numbers:
# an nn.Conv2d whose bias exists but is never added; the max over the scale axis).
SESConv_H_H_1x1 = GroupConv1x1
SESMaxProjection = GroupMaxProjection
