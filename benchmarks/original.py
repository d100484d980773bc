"""The original RST-CNN algorithm, re-implemented from ``docs/layers.md`` §1 and §2.4: the speed
baseline.

It follows the original step by step (and so matches its float32 outputs bit for bit on the same
machine), with the functional backend contract of :mod:`rstfast.backends`, so it plugs in beside
the real backends (``backends.register("original", "benchmarks.original", kind="functional")``):

* lifting: the dense filter ``weight @ basis.view(F, -1)`` permuted to a contiguous
  ``[O*T, C, K, K]`` conv2d weight (output channel ``o*T + t``), one ``conv2d``;
* group: the dense filter ``[O, C, Lr*Ls, T, K, K]`` permuted to a contiguous
  ``[T, O, C, Lr*Ls, K, K]`` copy; the input viewed as ``[B*C, R, S, H*W]``, zero-padded on the
  scale axis and circularly padded on the rotation axis; then for every offset ``(i, j)``
  (rotation outer, scale inner) a permuted contiguous ``[B, T*C, H, W]`` copy of the input slab and
  one grouped ``conv2d`` (``groups = T``), accumulated in that order.

The "expand + one conv2d" way (dense filter, the whole ``Lr*Ls`` neighbourhood stacked on the
channel axis, a single grouped ``conv2d``) is the package's reference backend,
:mod:`rstfast.reference.functional`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["unavailable_reason", "expand_filter", "lift_conv", "group_conv", "lift_conv_dense",
           "group_conv_dense"]


def unavailable_reason(device: torch.device) -> Optional[str]:
    """Plain PyTorch ops: runs wherever PyTorch does."""
    return None


def expand_filter(weight: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """As the original: ``weight @ basis.view(F, -1)`` viewed as ``[O, C, (Lr*Ls,) T, K, K]``."""
    num_funcs, num_groups, k, _ = basis.shape
    return (weight @ basis.view(num_funcs, -1)).view(*weight.shape[:-1], num_groups, k, k)


def lift_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
              bias: Optional[torch.Tensor] = None, stride: int = 1,
              padding: int = 0) -> torch.Tensor:
    """Lifting convolution as the original: x ``[B, C, H, W]``, weight ``[O, C, F]``,
    basis ``[F, T, K, K]`` -> ``[B, O, T, H', W']``."""
    return lift_conv_dense(x, expand_filter(weight, basis), bias, stride, padding)


def lift_conv_dense(x: torch.Tensor, kernel: torch.Tensor, bias: Optional[torch.Tensor],
                    stride: int, padding: int) -> torch.Tensor:
    """:func:`lift_conv` on the dense filter ``[O, C, T, K, K]``: permuted to a contiguous
    ``[O*T, C, K, K]`` conv2d weight, one ``conv2d``."""
    out_channels, in_channels, num_groups, k, _ = kernel.shape
    kernel = kernel.permute(0, 2, 1, 3, 4).contiguous().view(out_channels * num_groups,
                                                              in_channels, k, k)
    y = F.conv2d(x, kernel, None, stride, padding)
    y = y.view(x.shape[0], out_channels, num_groups, *y.shape[-2:])
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1, 1)
    return y


def group_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
               bias: Optional[torch.Tensor] = None, num_rotations: int = 1,
               rotation_size: int = 1, scale_size: int = 1, stride: int = 1,
               padding: int = 0) -> torch.Tensor:
    """Group convolution as the original: x ``[B, C, R*S, H, W]`` (contiguous, as the original's
    ``.view`` requires), weight ``[O, C, Lr*Ls, F]``, basis ``[F, R*S, K, K]`` -> ``[B, O, R*S, H', W']``."""
    return group_conv_dense(x, expand_filter(weight, basis), bias, num_rotations, rotation_size,
                            scale_size, stride, padding)


def group_conv_dense(x: torch.Tensor, kernel: torch.Tensor, bias: Optional[torch.Tensor],
                     num_rotations: int, rotation_size: int, scale_size: int, stride: int,
                     padding: int) -> torch.Tensor:
    """:func:`group_conv` on the dense filter ``[O, C, Lr*Ls, T, K, K]``."""
    out_channels, in_channels, _, num_groups, k, _ = kernel.shape
    num_scales = num_groups // num_rotations
    batch, _, _, height, width = x.shape

    kernel = kernel.permute(3, 0, 1, 2, 4, 5).contiguous()      # [T, O, C, Lr*Ls, K, K]
    kernel = kernel.view(num_groups * out_channels, in_channels, rotation_size, scale_size, k, k)

    x = x.view(batch * in_channels, num_rotations, num_scales, height * width)
    if scale_size > 1:
        x = F.pad(x, (0, 0, 0, scale_size - 1))
    if rotation_size > 1:
        x = F.pad(x, (0, 0, 0, 0, 0, rotation_size - 1), mode="circular")
    x = x.view(batch, in_channels, num_rotations + rotation_size - 1,
               num_scales + scale_size - 1, height, width)

    y = 0
    for i in range(rotation_size):
        for j in range(scale_size):
            slab = x[:, :, i:i + num_rotations, j:j + num_scales]
            slab = slab.permute(0, 2, 3, 1, 4, 5).reshape(batch, num_groups * in_channels,
                                                          height, width)
            y = y + F.conv2d(slab, kernel[:, :, i, j], None, stride, padding, groups=num_groups)
    y = y.view(batch, num_groups, out_channels, *y.shape[-2:]).permute(0, 2, 1, 3, 4)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1, 1)
    return y
