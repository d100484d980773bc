"""The dispatch path of the roto-scale convolutions, and the functional API.

A call is validated once (:meth:`rstfast.geometry.Geometry.check_call`), its input is padded by the
geometry's ``padding_mode`` (``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"``: the same
for every backend, differentiable; the kernels then run with padding 0), its backend is picked once
(:func:`select`: ``auto`` by :mod:`rstfast.autotune`, a name by :func:`rstfast.backends.resolve`),
and the chosen :class:`rstfast.backends.Backend` object runs it (:func:`run`). The ``torch.library`` ops of the
contract (:mod:`rstfast.contract`) are re-exported here: ``expand_filters``, ``contract_filters``,
``conv``, ``conv_backward``, ``roto_scale_conv_op``.

Shapes: x ``[B, C, H, W]`` (lifting) or ``[B, C, T, H, W]`` (``t = r*S + s``), weight
``[O, C, F]`` / ``[O, C, Lr*Ls, F]``, basis ``[F, T, K, K]``, bias ``[O]`` or None, y
``[B, O, T, H', W']``. An empty batch (``B = 0``) gives an empty output (and gradients) on every
backend, as ``nn.Conv2d`` does: there is nothing to compute, the reference's PyTorch ops run it.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from . import autotune, backends
from .backends import Backend
from .contract import (conv, conv_backward, contract_filters, expand_filters,  # noqa: F401
                       roto_scale_conv_op)
from .geometry import Geometry, group_geometry, lifting_geometry

__all__ = ["roto_scale_conv", "run", "select", "lift_conv", "group_conv", "expand_filters",
           "contract_filters", "conv", "conv_backward", "roto_scale_conv_op"]


def select(x: Tensor, backend: str, weight: Tensor, basis: Tensor, bias: Optional[Tensor],
           geo: Geometry) -> Backend:
    """The backend object that runs this (validated) call of ``backend`` (a name of
    :func:`rstfast.backends.names`; ``auto``: the fastest verified for its key)."""
    autocast_dtype = (torch.get_autocast_dtype(x.device.type)
                      if torch.is_autocast_enabled(x.device.type) else None)
    if x.shape[0] == 0:
        backend = "reference"
    elif backend == "auto":
        return autotune.choose(x, weight, basis, bias, geo)
    return backends.resolve(backend, x.device, autocast_dtype or x.dtype,
                            autocast_dtype is not None)


def run(x: Tensor, weight: Tensor, basis: Tensor, bias: Optional[Tensor], geo: Geometry,
        backend: str, cached_filters: Optional[Callable] = None) -> Tuple[Tensor, Backend]:
    """``(y, the backend object that ran)`` of a validated call: x padded by the geometry's
    ``padding_mode`` (its kernel geometry then has padding 0), the backend selected once, and
    ``cached_filters(backend, kernel_geometry)`` (filters to reuse, or None) passed to it."""
    x, geo = geo.pad_input(x), geo.kernel_geometry
    chosen = select(x, backend, weight, basis, bias, geo)
    filters = cached_filters(chosen, geo) if cached_filters is not None else None
    return chosen.forward(x, weight, basis, bias, geo, filters), chosen


def roto_scale_conv(x: Tensor, weight: Tensor, basis: Tensor, bias: Optional[Tensor],
                    geo: Geometry, backend: str = "auto") -> Tensor:
    """One lifting or group convolution of geometry ``geo`` on ``backend``."""
    geo.check_call(x, weight, basis, bias)
    return run(x, weight, basis, bias, geo, backend)[0]


def lift_conv(x: Tensor, weight: Tensor, basis: Tensor, bias: Optional[Tensor] = None,
              stride: int = 1, padding: int = 0, num_rotations: int = 1,
              backend: str = "auto", padding_mode: str = "zeros") -> Tensor:
    """Functional lifting convolution: x ``[B, C, H, W]``, weight ``[O, C, F]``, basis
    ``[F, R*S, K, K]`` -> ``[B, O, R*S, H', W']`` (the support is measured from the basis)."""
    geo = lifting_geometry(weight.shape[1], weight.shape[0], basis, num_rotations, stride,
                           padding, padding_mode=padding_mode)
    return roto_scale_conv(x, weight, basis, bias, geo, backend)


def group_conv(x: Tensor, weight: Tensor, basis: Tensor, bias: Optional[Tensor] = None,
               num_rotations: int = 1, rotation_size: int = 1, scale_size: int = 1,
               stride: int = 1, padding: int = 0, backend: str = "auto",
               padding_mode: str = "zeros") -> Tensor:
    """Functional group convolution: x ``[B, C, T, H, W]``, weight ``[O, C, Lr*Ls, F]``, basis
    ``[F, T, K, K]`` -> ``[B, O, T, H', W']`` (the support is measured from the basis)."""
    geo = group_geometry(weight.shape[1], weight.shape[0], basis, num_rotations, rotation_size,
                         scale_size, stride, padding, padding_mode=padding_mode)
    return roto_scale_conv(x, weight, basis, bias, geo, backend)
