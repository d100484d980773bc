"""Problem geometry and the layout of the cropped filter buffer shared by all kernels.

Filter buffer (float32, flat): one block per scale ``s``, at element ``offsets[s]``, laid out
``[A, R, n_s * n_s * C, O]`` with ``A = Lr * Ls`` (``a = i * Ls + j``; ``A = 1`` for lifting) and the
reduction index ``k = (u * n_s + v) * C + c`` (``u``, ``v`` taps of the centred ``n_s x n_s`` box of the
``K x K`` kernel, ``c`` input channel), output channel ``o`` fastest. Entry
``[a, r, k, o] = sum_f weight[o, c, a, f] * basis[f, r * S + s, crop_s + u, crop_s + v]`` with
``crop_s = (K - n_s) // 2``.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Tuple

import torch

__all__ = ["ConvGeometry", "FilterLayout", "geometry", "filter_layout", "block_numel"]


class ConvGeometry(NamedTuple):
    """Sizes of one roto-scale convolution; ``lifting``: x is ``[B, C, H, W]`` (else ``[B, C, T, H, W]``)."""
    lifting: bool
    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    out_height: int
    out_width: int
    num_rotations: int
    num_scales: int
    rotation_size: int
    scale_size: int
    kernel_size: int
    stride: int
    padding: int

    @property
    def num_offsets(self) -> int:
        return self.rotation_size * self.scale_size

    @property
    def group_size(self) -> int:
        return self.num_rotations * self.num_scales

    def out_shape(self) -> Tuple[int, ...]:
        return (self.batch, self.out_channels, self.group_size, self.out_height, self.out_width)

    def kernel_args(self) -> Tuple[int, ...]:
        """The problem sizes every kernel takes, in its argument order
        ``B, C, H, W, O, Ho, Wo, R, S, Lr, Ls, K, stride, padding``."""
        return (self.batch, self.in_channels, self.height, self.width, self.out_channels,
                self.out_height, self.out_width, self.num_rotations, self.num_scales,
                self.rotation_size, self.scale_size, self.kernel_size, self.stride, self.padding)


def geometry(x_shape, out_channels: int, kernel_size: int, num_rotations: int,
             rotation_size: int, scale_size: int, stride: int, padding: int,
             num_scales: int) -> ConvGeometry:
    """Geometry from the input shape (4-D lifting or 5-D group) and the layer's hyper-parameters."""
    lifting = len(x_shape) == 4
    batch, in_channels, height, width = x_shape[0], x_shape[1], x_shape[-2], x_shape[-1]
    out_height = (height + 2 * padding - kernel_size) // stride + 1
    out_width = (width + 2 * padding - kernel_size) // stride + 1
    return ConvGeometry(lifting, batch, in_channels, height, width, out_channels, out_height,
                        out_width, num_rotations, num_scales, rotation_size, scale_size,
                        kernel_size, stride, padding)


class FilterLayout(NamedTuple):
    """Per-scale support sizes and block offsets of the filter buffer (host ints and device tensors)."""
    supports: Tuple[int, ...]
    offsets: Tuple[int, ...]
    numel: int
    supports_device: torch.Tensor  # int32 [S]
    offsets_device: torch.Tensor   # int64 [S]

    @property
    def max_reduction(self) -> int:
        """Largest ``n_s * n_s`` over the scales."""
        return max(n * n for n in self.supports)


def block_numel(support: int, num_offsets: int, num_rotations: int, in_channels: int,
                out_channels: int) -> int:
    """Elements of the block of one scale with support ``n_s = support``."""
    return num_offsets * num_rotations * support * support * in_channels * out_channels


@functools.lru_cache(maxsize=64)
def filter_layout(supports: Tuple[int, ...], num_offsets: int, num_rotations: int,
                  in_channels: int, out_channels: int, device: torch.device) -> FilterLayout:
    """Layout of the buffer for these sizes (cached: the device tensors are built once)."""
    offsets, total = [], 0
    for n in supports:
        offsets.append(total)
        total += block_numel(n, num_offsets, num_rotations, in_channels, out_channels)
    return FilterLayout(tuple(supports), tuple(offsets), total,
                        torch.tensor(supports, dtype=torch.int32, device=device),
                        torch.tensor(offsets, dtype=torch.int64, device=device))
