"""FLOP counts of one roto-scale convolution: the one model read by the cost model of ``auto``
(:mod:`rstfast.autotune`, through each backend's ``flops``) and by the benchmarks.

A multiply-add counts 2. ``x_shape`` is the input's shape (``[B, C, H, W]`` or ``[B, C, T, H, W]``);
the output has ``H' x W'`` pixels (:meth:`rstfast.geometry.Geometry.out_size`).

* :func:`direct`: the taps inside each scale's support box, for the reads that exist
  (``2 B O C H'W' sum_(t, a, q) n_s(t)^2``) — what the cropped-filter backends compute;
* :func:`dense`: every tap of every slot (``2 B O C H'W' T A K^2``) — the dense reference;
* :func:`expansion`: building the filters from the coefficients (``2 O C A F`` per tap kept).
"""
from __future__ import annotations

from typing import Sequence

from .geometry import Geometry

__all__ = ["direct", "dense", "expansion", "per_tap"]


def per_tap(geo: Geometry, x_shape: Sequence[int]) -> int:
    """FLOPs of one filter tap over the whole call: ``2 B O C H' W'``."""
    out_h, out_w = geo.out_size(x_shape[-2], x_shape[-1])
    return 2 * x_shape[0] * geo.out_channels * geo.in_channels * out_h * out_w


def direct(geo: Geometry, x_shape: Sequence[int]) -> float:
    """Forward FLOPs on the support boxes, reads of zero scales skipped."""
    taps = sum(geo.support[t % geo.num_scales] ** 2 for t, _, _ in geo.reads)
    return float(per_tap(geo, x_shape) * taps)


def dense(geo: Geometry, x_shape: Sequence[int]) -> float:
    """Forward FLOPs of the dense ``K x K`` filters of every ``(t, a)`` slot."""
    return float(per_tap(geo, x_shape) * geo.group_size * geo.num_offsets
                 * geo.kernel_size ** 2)


def expansion(geo: Geometry, cropped: bool = True) -> float:
    """FLOPs of building the filters from the coefficients: the cropped buffer (``cropped``) or
    the dense ``[..., T, K, K]`` filters."""
    taps = (sum(n * n for n in geo.support) * geo.num_rotations if cropped
            else geo.group_size * geo.kernel_size ** 2)
    return float(2 * geo.out_channels * geo.in_channels * geo.num_offsets * geo.num_funcs * taps)
