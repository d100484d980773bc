"""Autograd over the FFT kernels, for tests, benchmarks and ``rstfast.backends.register``.

:func:`conv` is differentiable in ``x``, the flat filter buffer and ``bias``; :func:`lift_conv` and
:func:`group_conv` take coefficients, with the signatures of :mod:`rstfast.reference.functional`
(the buffer built by :func:`rstfast.filters.expand`, its gradient contracted back), so this module
is a backend module in the sense of :mod:`rstfast.backends`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import filters as filter_buffer
from ..geometry import Geometry, basis_support, group_geometry, lifting_geometry
from . import conv_backward, conv_forward, unavailable_reason

__all__ = ["unavailable_reason", "conv", "lift_conv", "group_conv"]


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, filters, bias, geo):
        ctx.save_for_backward(x, filters)
        ctx.geo = geo
        return conv_forward(x, filters, bias, geo)

    @staticmethod
    def backward(ctx, grad_y):
        x, filters = ctx.saved_tensors
        grad_x, grad_filters = conv_backward(grad_y, x, filters, ctx.geo,
                                             ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        grad_bias = grad_y.sum(dim=(0, 2, 3, 4)) if ctx.needs_input_grad[2] else None
        return grad_x, grad_filters, grad_bias, None


class _Expand(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, basis, geo):
        ctx.save_for_backward(basis)
        ctx.geo, ctx.weight_dtype = geo, weight.dtype
        return filter_buffer.expand(weight, basis, geo)

    @staticmethod
    def backward(ctx, grad_filters):
        basis, = ctx.saved_tensors
        grad = filter_buffer.contract(grad_filters, basis, ctx.geo)
        return grad.to(ctx.weight_dtype), None, None


def conv(x: torch.Tensor, filters: torch.Tensor, bias: Optional[torch.Tensor],
         geo: Geometry) -> torch.Tensor:
    """Differentiable :func:`rstfast.fft.conv_forward`."""
    return _Conv.apply(x, filters, bias, geo)


def lift_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
              bias: Optional[torch.Tensor] = None, stride: int = 1, padding: int = 0,
              support: Optional[Sequence[int]] = None) -> torch.Tensor:
    """x ``[B, C, H, W]``, weight ``[O, C, F]``, basis ``[F, T, K, K]``, bias ``[O]`` or None ->
    ``[B, O, T, H', W']``. ``support``: per-scale box sides (``T // len(support)`` rotations);
    None measures one box per slice."""
    if support is None:
        support = basis_support(basis, 1)
    geo = lifting_geometry(x.shape[1], weight.shape[0], basis, basis.shape[1] // len(support),
                           stride, padding, support)
    return conv(x, _Expand.apply(weight, basis, geo), bias, geo)


def group_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
               bias: Optional[torch.Tensor] = None, num_rotations: int = 1,
               rotation_size: int = 1, scale_size: int = 1, stride: int = 1, padding: int = 0,
               support: Optional[Sequence[int]] = None) -> torch.Tensor:
    """x ``[B, C, T, H, W]``, weight ``[O, C, Lr*Ls, F]``, basis ``[F, T, K, K]``, bias ``[O]``
    or None -> ``[B, O, T, H', W']``."""
    geo = group_geometry(x.shape[1], weight.shape[0], basis, num_rotations, rotation_size,
                         scale_size, stride, padding, support)
    return conv(x, _Expand.apply(weight, basis, geo), bias, geo)
