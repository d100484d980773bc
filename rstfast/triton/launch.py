"""What every Triton launch takes from the geometry: problem sizes, strides, device tables and
where each table starts in them (:meth:`rstfast.geometry.Geometry.table_offsets`: the kernels
read the layout from there, never spell it out)."""
from __future__ import annotations

import functools
from typing import Tuple

import torch

from ..geometry import Geometry

__all__ = ["kernel_sizes", "strides_5d", "geometry_tables", "table_offsets"]


def kernel_sizes(geo: Geometry, x_shape) -> Tuple[int, ...]:
    """``B, C, H, W, O, Ho, Wo, R, S, A, stride, padding`` in the kernels' argument order."""
    height, width = x_shape[-2], x_shape[-1]
    return (x_shape[0], geo.in_channels, height, width, geo.out_channels,
            *geo.out_size(height, width), geo.num_rotations, geo.num_scales, geo.num_offsets,
            geo.stride, geo.padding)


def strides_5d(z: torch.Tensor, lifting: bool) -> Tuple[int, ...]:
    """``(b, c, t, h, w)`` strides; the slice stride of a 4-D (lifting) tensor is 0."""
    if lifting:
        return z.stride(0), z.stride(1), 0, z.stride(2), z.stride(3)
    return tuple(z.stride())


@functools.lru_cache(maxsize=128)
def geometry_tables(geo: Geometry, device: torch.device) -> torch.Tensor:
    """int64 :attr:`Geometry.tables` on ``device`` (built once per geometry and device)."""
    return torch.tensor(geo.tables, dtype=torch.int64, device=device)


def table_offsets(geo: Geometry) -> Tuple[int, ...]:
    """Where each table of :data:`rstfast.geometry.TABLES` starts (in that order): the kernels'
    arguments ``SUPPORT_AT, CROP_AT, SLOT_AT, READ_AT, READER_START_AT, READER_AT``."""
    return tuple(geo.table_offsets.values())
