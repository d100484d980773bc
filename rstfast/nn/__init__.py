"""Layers: :class:`LiftingConv`, :class:`GroupConv`, :class:`GroupConv1x1`,
:class:`GroupMaxProjection`, and the original names as aliases."""
from .modules import (GroupConv, GroupConv1x1, GroupMaxProjection, LiftingConv, SESConv_H_H,
                      SESConv_H_H_1x1, SESConv_Z2_H, SESMaxProjection)

__all__ = ["LiftingConv", "GroupConv", "GroupConv1x1", "GroupMaxProjection",
           "SESConv_Z2_H", "SESConv_H_H", "SESConv_H_H_1x1", "SESMaxProjection"]
