"""Cropped filters from coefficients and back: the one filter expansion of every fast backend.

:func:`expand_cropped` builds the flat filter buffer of :mod:`rstfast.geometry` (per scale ``s`` a block
``[A, R, O, C, n_s, n_s]``) with one batched matmul per scale; :func:`contract_cropped` maps a gradient of
that buffer to the gradient of the coefficients. Neither forms the dense ``[..., T, K, K]`` filter.
Both run in the buffer's dtype (:func:`rstfast.geometry.filter_dtype`) with autocast off.
"""
from __future__ import annotations

from typing import List

import torch

from .geometry import Geometry, filter_dtype

__all__ = ["cropped_basis", "expand_cropped", "contract_cropped"]


def cropped_basis(basis: torch.Tensor, geo: Geometry, dtype: torch.dtype) -> List[torch.Tensor]:
    """Per scale ``s``: ``basis[:, r*S + s]`` cropped to the ``n_s x n_s`` box,
    ``[R, F, n_s*n_s]``."""
    num_funcs, _, k, _ = basis.shape
    per_rotation = basis.to(dtype).view(num_funcs, geo.num_rotations, geo.num_scales, k, k)
    blocks = []
    for s, n in enumerate(geo.support):
        crop = geo.crop(s)
        block = per_rotation[:, :, s, crop:crop + n, crop:crop + n]
        blocks.append(block.permute(1, 0, 2, 3).reshape(geo.num_rotations, num_funcs, n * n))
    return blocks


def _coefficients(weight: torch.Tensor, geo: Geometry, dtype: torch.dtype) -> torch.Tensor:
    """weight ``[O, C, (A,) F]`` -> ``[A, O*C, F]``."""
    coeffs = weight.to(dtype).reshape(geo.out_channels * geo.in_channels, geo.num_offsets,
                                      geo.num_funcs)
    return coeffs.transpose(0, 1)


def expand_cropped(weight: torch.Tensor, basis: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """weight ``[O, C, F]`` / ``[O, C, A, F]``, basis ``[F, T, K, K]`` -> flat filter buffer."""
    dtype = filter_dtype(weight.dtype)
    buffer = torch.empty(geo.filter_numel, dtype=dtype, device=weight.device)
    rows = geo.out_channels * geo.in_channels
    with torch.autocast(weight.device.type, enabled=False):
        coeffs = _coefficients(weight, geo, dtype)                        # [A, O*C, F]
        for s, block in enumerate(cropped_basis(basis, geo, dtype)):     # [R, F, n*n]
            out = geo.filter_block(buffer, s).view(geo.num_offsets, geo.num_rotations, rows, -1)
            for a in range(geo.num_offsets):                           # [O*C, F] @ [R, F, n*n]
                torch.matmul(coeffs[a], block, out=out[a])
    return buffer


def contract_cropped(grad_filters: torch.Tensor, basis: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """Gradient of the filter buffer -> gradient of the coefficients ``geo.weight_shape()``
    (the buffer's dtype)."""
    dtype = grad_filters.dtype
    rows = geo.out_channels * geo.in_channels
    grad = torch.zeros(geo.num_offsets, rows, geo.num_funcs, dtype=dtype,
                       device=grad_filters.device)
    with torch.autocast(grad_filters.device.type, enabled=False):
        for s, block in enumerate(cropped_basis(basis, geo, dtype)):     # [R, F, n*n]
            grad_block = geo.filter_block(grad_filters, s).reshape(
                geo.num_offsets, geo.num_rotations, rows, -1)
            for r in range(geo.num_rotations):                         # += G[a, r] @ B[r]^T
                grad.baddbmm_(grad_block[:, r], block[r].t().expand(geo.num_offsets, -1, -1))
    return grad.transpose(0, 1).contiguous().view(geo.weight_shape())
