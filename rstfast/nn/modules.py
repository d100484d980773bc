"""Roto-scale equivariant layers as ordinary ``nn.Module``s.

Group feature maps are ``[B, C, T, H, W]`` with ``T = R*S`` and ``t = r*S + s`` (rotation-major).
Parameter and buffer names, shapes and initialisation equal the original's (``weight``, ``bias``,
``basis``), so original checkpoints load with ``load_state_dict``; the original class names
(``SESConv_Z2_H``, ``SESConv_H_H``, ``SESConv_H_H_1x1``, ``SESMaxProjection``) are aliases.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .. import _checks, backends
from ..reference import functional as ref
from ..reference.bases import steerable_basis

__all__ = ["LiftingConv", "GroupConv", "GroupConv1x1", "GroupMaxProjection",
           "SESConv_Z2_H", "SESConv_H_H", "SESConv_H_H_1x1", "SESMaxProjection"]

_BASIS_KWARGS = ("mult", "max_order", "spt")


class _RotoScaleConv(nn.Module):
    """Shared construction: basis buffer, coefficient weight ``[O, C, *offsets, F]``, bias, backend."""

    def __init__(self, in_channels, out_channels, kernel_size, effective_size, scales, rotations,
                 stride, padding, bias, basis_type, backend, offsets, basis_kwargs):
        super().__init__()
        self.in_channels = _checks.positive_int("in_channels", in_channels)
        self.out_channels = _checks.positive_int("out_channels", out_channels)
        self.kernel_size, self.effective_size = _checks.kernel_sizes(kernel_size, effective_size)
        scales = _checks.float_list("scales", scales)
        rotations = _checks.float_list("rotations", rotations)
        self.stride = _checks.positive_int("stride", stride)
        self.padding = _checks.positive_int("padding", padding, minimum=0)
        self.backend = backends.check_backend_name(backend)
        self.basis_type = basis_type
        self.scales = [round(s, 3) for s in scales]        # as the original: for repr only
        self.num_scales = len(scales)
        self.num_rotations = len(rotations)
        kwargs = {k: v for k, v in basis_kwargs.items() if k in _BASIS_KWARGS}
        basis = steerable_basis(basis_type, self.kernel_size, rotations, scales,
                                self.effective_size, **kwargs)
        if basis.shape[1] != self.num_rotations * self.num_scales:
            raise ValueError(
                f"basis_type: {basis_type!r} gives {basis.shape[1]} group slices but "
                f"len(rotations) * len(scales) = {self.num_rotations * self.num_scales}; "
                f"types A, B and D take no rotations, use rotations=[0.0] with them")
        self.register_buffer("basis", basis)
        self.num_funcs = basis.shape[0]
        self.support = ref.basis_support(basis, self.num_rotations)
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, *offsets,
                                               self.num_funcs))
        self.register_parameter("bias", nn.Parameter(torch.zeros(self.out_channels)) if bias else None)
        self.reset_parameters()

    @property
    def group_size(self) -> int:
        return self.num_rotations * self.num_scales

    def reset_parameters(self) -> None:
        """As the original: kaiming_uniform_(a=sqrt(5)) on the coefficients, zero bias."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _check_spatial(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if min(h, w) + 2 * self.padding < self.kernel_size:
            raise ValueError(f"x: spatial size {h}x{w} with padding {self.padding} is smaller than "
                             f"kernel_size {self.kernel_size}; expected H, W >= "
                             f"{self.kernel_size - 2 * self.padding}")

    last_backend = None          # name of the backend that ran the last forward (backends.used)

    def _backend(self, x: torch.Tensor):
        name = backends.resolve_name(self.backend, x.device)
        if not torch.compiler.is_compiling():
            self.last_backend = name
        return backends.resolve(self.backend, x.device)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels} | basis={self.basis_type} "
                f"funcs={self.num_funcs} scales={self.scales} rotations={self.num_rotations} "
                f"size={self.kernel_size} stride={self.stride} padding={self.padding} "
                f"backend={self.backend}")


class LiftingConv(_RotoScaleConv):
    """Lifting convolution Z2 -> H: ``[B, C, H, W] -> [B, O, R*S, H', W']`` (rotation-major).

    weight ``[O, C, F]``, basis buffer ``[F, R*S, K, K]``, bias ``[O]`` (zeros) or None.
    ``**kwargs`` reach the basis builder (``mult``, ``max_order``, ``spt``); others are ignored.
    """
    layer_kind = "lift"

    def __init__(self, in_channels, out_channels, kernel_size, effective_size, scales=(1.0,),
                 rotations=(0.0,), stride=1, padding=0, bias=False, basis_type='A',
                 backend="auto", **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, effective_size, scales, rotations,
                         stride, padding, bias, basis_type, backend, (), kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _checks.feature_map(x, name="x", ndim=4, channels=self.in_channels, like=self.weight)
        self._check_spatial(x)
        return self._backend(x).lift_conv(x, self.weight, self.basis, self.bias,
                                                       self.stride, self.padding, self.support)


class GroupConv(_RotoScaleConv):
    """Group convolution H -> H: ``[B, C, R*S, H, W] -> [B, O, R*S, H', W']`` (rotation-major).

    Output ``(r, s)`` mixes input rotations ``r .. r+Lr-1`` (mod R) and scales ``s .. s+Ls-1``
    (zero past the largest scale) with the basis slice of ``(r, s)``. weight ``[O, C, Lr*Ls, F]``
    with third index ``i*Ls + j``. Note the original's argument order: ``scale_size`` first.
    """
    layer_kind = "group"

    def __init__(self, in_channels, out_channels, scale_size, rotation_size, kernel_size,
                 effective_size, scales=(1.0,), rotations=(0.0,), stride=1, padding=0, bias=False,
                 basis_type='A', backend="auto", **kwargs):
        scale_size = _checks.positive_int("scale_size", scale_size)
        rotation_size = _checks.positive_int("rotation_size", rotation_size)
        _checks.at_most("scale_size", scale_size, "len(scales)",
                        len(_checks.float_list("scales", scales)))
        _checks.at_most("rotation_size", rotation_size, "len(rotations)",
                        len(_checks.float_list("rotations", rotations)))
        super().__init__(in_channels, out_channels, kernel_size, effective_size, scales, rotations,
                         stride, padding, bias, basis_type, backend,
                         (rotation_size * scale_size,), kwargs)
        self.scale_size = scale_size
        self.rotation_size = rotation_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _checks.feature_map(x, name="x", ndim=5, channels=self.in_channels,
                            groups=self.group_size, like=self.weight)
        self._check_spatial(x)
        return self._backend(x).group_conv(x, self.weight, self.basis, self.bias,
                                                         self.num_rotations, self.rotation_size,
                                                         self.scale_size, self.stride,
                                                         self.padding, self.support)

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f" rotation_size={self.rotation_size} scale_size={self.scale_size}")


class GroupConv1x1(nn.Conv2d):
    """The same 1x1 convolution on every group slice: ``[B, C, T, H, W] -> [B, O, T, H', W']``.

    ``num_scales`` is the group size T (``R*S`` with rotations). As the original, the ``bias``
    parameter exists (for checkpoints) but is never added, and padding is always 0.
    """

    def __init__(self, in_channels, out_channel, stride=1, num_scales=1, bias=True):
        super().__init__(_checks.positive_int("in_channels", in_channels),
                         _checks.positive_int("out_channel", out_channel), 1,
                         stride=_checks.positive_int("stride", stride), bias=bias)
        self.num_scales = _checks.positive_int("num_scales", num_scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _checks.feature_map(x, name="x", ndim=5, channels=self.in_channels,
                            groups=self.num_scales, like=self.weight)
        return ref.group_conv_1x1(x, self.weight, self.stride[0])


class GroupMaxProjection(nn.Module):
    """Max over all rotations and scales: ``[B, C, T, H, W] -> [B, C, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a 5-D tensor [B, C, T, H, W], got {shape}")
        return ref.max_projection(x)


SESConv_Z2_H = LiftingConv
SESConv_H_H = GroupConv
SESConv_H_H_1x1 = GroupConv1x1
SESMaxProjection = GroupMaxProjection
