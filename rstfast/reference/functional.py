"""Pure-PyTorch roto-scale convolutions: the oracle every fast backend is checked against.

Index conventions (see ``docs/layers.md``):

* group feature maps ``[B, C, T, H, W]`` with ``t = r * S + s`` (rotation-major);
* basis ``[F, T, K, K]`` (same ``t``), weight of the lifting layer ``[O, C, F]``,
  weight of the group layer ``[O, C, Lr * Ls, F]`` with third index ``a = i * Ls + j``
  (``i`` rotation offset, ``j`` scale offset);
* output rotation ``r`` reads input rotations ``(r + i) mod R`` (circular), output scale ``s`` reads
  input scale ``s + j`` or zero when ``s + j >= S`` (:func:`rstfast.geometry.index_map`); the
  filter of output ``t`` is the basis slice ``t``.

Clarity first: the filter is expanded densely and the convolution is one grouped ``conv2d`` (on CPU
one per output rotation).
Autograd, float64 and any device work as for ordinary PyTorch code.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..geometry import index_map

__all__ = ["unavailable_reason", "expand_filter", "lift_conv", "group_conv", "lift_conv_dense",
           "group_conv_dense", "group_conv_1x1", "max_projection"]


def unavailable_reason(device) -> Optional[str]:
    """The reference runs wherever PyTorch does (functional backend contract, rstfast.backends)."""
    return None


def expand_filter(weight: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Filters from coefficients: ``weight[..., F] @ basis[F, T, K, K] -> [..., T, K, K]``."""
    num_funcs = basis.shape[0]
    kernel = weight.reshape(-1, num_funcs) @ basis.reshape(num_funcs, -1)
    return kernel.reshape(*weight.shape[:-1], *basis.shape[1:])


def lift_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
              bias: Optional[torch.Tensor] = None, stride: int = 1,
              padding: int = 0) -> torch.Tensor:
    """Lifting convolution Z2 -> H.

    x ``[B, C, H, W]``, weight ``[O, C, F]``, basis ``[F, T, K, K]``, bias ``[O]`` or None
    -> ``[B, O, T, H', W']`` with ``H' = (H + 2p - K) // stride + 1``.
    """
    return lift_conv_dense(x, expand_filter(weight, basis), bias, stride, padding)


def lift_conv_dense(x: torch.Tensor, kernel: torch.Tensor, bias: Optional[torch.Tensor],
                    stride: int, padding: int) -> torch.Tensor:
    """:func:`lift_conv` with the dense filter ``kernel = expand_filter(weight, basis)``
    ``[O, C, T, K, K]``."""
    out_channels, in_channels, num_groups, k, _ = kernel.shape
    kernel = kernel.transpose(1, 2).reshape(out_channels * num_groups, in_channels, k, k)
    y = F.conv2d(x, kernel, stride=stride, padding=padding)     # channel o * T + t
    y = y.view(x.shape[0], out_channels, num_groups, *y.shape[-2:])
    if bias is not None:
        y = y + bias.to(y.dtype).view(1, -1, 1, 1, 1)
    return y


def _neighbourhood(x: torch.Tensor, num_rotations: int, num_scales: int, rotation_size: int,
                   scale_size: int) -> torch.Tensor:
    """``[B, C, R*S, H, W] -> [B, C, Lr*Ls, R*S, H, W]``: slot ``a`` at output ``t`` holds input
    slice :func:`rstfast.geometry.index_map` ``[t][a]``, zero where that is -1 (past the top
    scale)."""
    b, c, _, h, w = x.shape
    t = num_rotations * num_scales
    table = torch.tensor(index_map(num_rotations, num_scales, rotation_size, scale_size),
                         device=x.device)                       # [T, A]
    padded = torch.cat([x, x.new_zeros(b, c, 1, h, w)], dim=2)  # slice T is the zero slice
    slab = padded[:, :, torch.where(table < 0, t, table).t().flatten()]
    return slab.view(b, c, rotation_size * scale_size, t, h, w)


def group_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
               bias: Optional[torch.Tensor] = None, num_rotations: int = 1,
               rotation_size: int = 1, scale_size: int = 1, stride: int = 1,
               padding: int = 0) -> torch.Tensor:
    """Group convolution H -> H with inter-rotation (circular) and inter-scale (zero-padded) mixing.

    x ``[B, C, T, H, W]`` (``T = R*S``, rotation-major), weight ``[O, C, Lr*Ls, F]``,
    basis ``[F, T, K, K]``, bias ``[O]`` or None -> ``[B, O, T, H', W']``.
    """
    return group_conv_dense(x, expand_filter(weight, basis), bias, num_rotations, rotation_size,
                            scale_size, stride, padding)


def group_conv_dense(x: torch.Tensor, kernel: torch.Tensor, bias: Optional[torch.Tensor],
                     num_rotations: int, rotation_size: int, scale_size: int, stride: int,
                     padding: int) -> torch.Tensor:
    """:func:`group_conv` with the dense filter ``kernel = expand_filter(weight, basis)``
    ``[O, C, Lr*Ls, T, K, K]``."""
    out_channels, in_channels, num_offsets, num_groups, k, _ = kernel.shape
    b, _, _, h, w = x.shape
    kernel = kernel.permute(3, 0, 1, 2, 4, 5).reshape(
        num_groups * out_channels, in_channels * num_offsets, k, k)
    slab = _neighbourhood(x, num_rotations, num_groups // num_rotations, rotation_size,
                          scale_size)                           # [B, C, A, T, H, W]
    slab = slab.permute(0, 3, 1, 2, 4, 5).reshape(b, num_groups * in_channels * num_offsets, h, w)
    # A group per slice t. On CPU one call per output rotation (its S slices): with all T groups
    # in one call, oneDNN's weight gradient drops to its naive implementation for the paper's
    # larger layers (130 s instead of 2 s for 63 -> 95 channels at 14 px, Lr = 4).
    calls = num_rotations if x.device.type == "cpu" else 1
    y = torch.cat([F.conv2d(slab_part, kernel_part, stride=stride, padding=padding,
                            groups=num_groups // calls)
                   for slab_part, kernel_part in zip(slab.chunk(calls, dim=1),
                                                     kernel.chunk(calls, dim=0))], dim=1)
    y = y.view(b, num_groups, out_channels, *y.shape[-2:]).transpose(1, 2)
    if bias is not None:
        y = y + bias.to(y.dtype).view(1, -1, 1, 1, 1)
    return y.contiguous()


def group_conv_1x1(x: torch.Tensor, weight: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The same 1x1 convolution on every group slice: x ``[B, C, T, H, W]``, weight ``[O, C, 1, 1]``
    -> ``[B, O, T, H', W']``. No bias (the original never adds it)."""
    return F.conv3d(x, weight.unsqueeze(2), stride=(1, stride, stride))


def max_projection(x: torch.Tensor) -> torch.Tensor:
    """Max over the whole group axis: ``[B, C, T, H, W] -> [B, C, H, W]``."""
    return x.max(dim=2).values
