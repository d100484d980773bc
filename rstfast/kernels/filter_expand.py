"""Filters from coefficients and back, cropped to each scale's support (torch matmuls, float32).

``expand`` builds the flat filter buffer described in :mod:`.layout` once per forward;
``contract`` maps a gradient with respect to that buffer to the gradient of the coefficients
``[O, C, A, F]``. Neither ever forms the dense ``[..., T, K, K]`` filter.
"""
from __future__ import annotations

from typing import List

import torch

from .layout import FilterLayout

__all__ = ["cropped_basis", "expand", "contract"]


def cropped_basis(basis: torch.Tensor, num_rotations: int, supports) -> List[torch.Tensor]:
    """Per scale ``s``: ``basis[:, r*S + s, crop:crop+n_s, crop:crop+n_s]`` as float32 ``[F, R*n_s*n_s]``."""
    num_funcs, num_groups, k, _ = basis.shape
    per_rotation = basis.to(torch.float32).view(num_funcs, num_rotations,
                                                num_groups // num_rotations, k, k)
    blocks = []
    for s, n in enumerate(supports):
        crop = (k - n) // 2
        block = per_rotation[:, :, s, crop:crop + n, crop:crop + n]
        blocks.append(block.reshape(num_funcs, num_rotations * n * n))
    return blocks


def expand(weight: torch.Tensor, basis: torch.Tensor, num_rotations: int,
           layout: FilterLayout) -> torch.Tensor:
    """weight ``[O, C, A, F]``, basis ``[F, R*S, K, K]`` -> float32 filter buffer ``[layout.numel]``."""
    out_channels, in_channels, num_offsets, num_funcs = weight.shape
    coeffs = weight.to(torch.float32).permute(2, 3, 1, 0).reshape(
        num_offsets, num_funcs, in_channels * out_channels)          # [A, F, C*O]
    buffer = torch.empty(layout.numel, dtype=torch.float32, device=weight.device)
    with torch.autocast(weight.device.type, enabled=False):   # exact float32 even under autocast
        _expand_blocks(coeffs, basis, num_rotations, layout, buffer)
    return buffer


def _expand_blocks(coeffs, basis, num_rotations, layout, buffer):
    num_offsets, _, channels = coeffs.shape
    for block, n, offset in zip(cropped_basis(basis, num_rotations, layout.supports),
                                layout.supports, layout.offsets):
        size = num_offsets * num_rotations * n * n * channels
        out = buffer[offset:offset + size].view(num_offsets, num_rotations * n * n, channels)
        torch.matmul(block.t(), coeffs, out=out)                  # [A, R*n*n, C*O]


def contract(grad_buffer: torch.Tensor, basis: torch.Tensor, num_rotations: int,
             layout: FilterLayout, weight_shape) -> torch.Tensor:
    """Gradient of the filter buffer -> float32 gradient of the coefficients ``[O, C, A, F]``."""
    out_channels, in_channels, num_offsets, num_funcs = weight_shape
    grad = torch.zeros(num_offsets, num_funcs, in_channels * out_channels, dtype=torch.float32,
                       device=grad_buffer.device)
    with torch.autocast(grad_buffer.device.type, enabled=False):
        _contract_blocks(grad_buffer, basis, num_rotations, layout, grad)
    return grad.view(num_offsets, num_funcs, in_channels, out_channels).permute(3, 2, 0, 1)


def _contract_blocks(grad_buffer, basis, num_rotations, layout, grad):
    num_offsets, _, channels = grad.shape
    for block, n, offset in zip(cropped_basis(basis, num_rotations, layout.supports),
                                layout.supports, layout.offsets):
        size = num_offsets * num_rotations * n * n * channels
        grad_block = grad_buffer[offset:offset + size].view(num_offsets, num_rotations * n * n,
                                                            channels)
        grad.baddbmm_(block.expand(num_offsets, -1, -1), grad_block)   # += [F, R*n*n] @ block
