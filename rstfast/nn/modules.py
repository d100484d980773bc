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

from .. import _checks, backends, ops
from ..geometry import (PADDING_MODES, Geometry, basis_support, check_basis, crop_to_support,
                        group_geometry, lifting_geometry)
from ..reference import functional as ref
from ..reference.bases import steerable_basis

__all__ = ["LiftingConv", "GroupConv", "GroupConv1x1", "GroupMaxProjection", "check_keywords",
           "SESConv_Z2_H", "SESConv_H_H", "SESConv_H_H_1x1", "SESMaxProjection"]

# The keyword arguments the layers pass to the basis (rstfast.reference.bases.steerable_basis;
# each basis type uses some of them and ignores the others, as the original), and the ones the
# original's model code passes to its layers, which they ignore.
BASIS_KEYWORDS = ("mult", "max_order", "spt")
IGNORED_KEYWORDS = ("dropout",)


def check_keywords(layer: str, kwargs: dict, accepted=BASIS_KEYWORDS,
                   ignored=IGNORED_KEYWORDS) -> dict:
    """The ``accepted`` keywords of ``kwargs``; a TypeError names (with their values) any that
    are neither ``accepted`` nor ``ignored``."""
    unknown = sorted(set(kwargs) - set(accepted) - set(ignored))
    if unknown:
        given = ", ".join(f"{key}={kwargs[key]!r}" for key in unknown)
        raise TypeError(f"{layer}: unexpected keyword argument(s) {given}; expected the layer's "
                        f"own arguments, the basis keywords {', '.join(accepted)}, or "
                        f"{', '.join(ignored)} (ignored, as the original)")
    return {key: value for key, value in kwargs.items() if key in accepted}


def _refresh_geometry(module, incompatible_keys) -> None:
    """``load_state_dict`` post-hook: measure the support of the loaded basis."""
    module.geometry


class _RotoScaleConv(nn.Module):
    """Shared construction: basis buffer, coefficient weight ``[O, C, *offsets, F]``, bias, backend,
    padding mode, and the layer's :class:`rstfast.geometry.Geometry` (built once; rebuilt when
    the basis buffer changes, e.g. by ``load_state_dict``).

    Inference cache: when no gradient can flow (``torch.no_grad`` / ``inference_mode``, or frozen
    parameters and an input that needs no gradient) the filters the backend convolves with —
    dense for functional backends, the cropped buffer for kernel backends — are built once per
    weight version and reused; they are invalidated when the weight or basis is written (version
    counters), moved or cast, and by ``train()``; never part of the ``state_dict``. Set
    ``cache_filters = False`` on a layer to turn it off.
    """
    layer_kind = ""
    cache_filters = True
    last_backend = None          # name of the backend that ran the last forward (backends.used)

    def __init__(self, in_channels, out_channels, kernel_size, effective_size, scales, rotations,
                 stride, padding, bias, basis_type, backend, padding_mode, neighbourhood,
                 basis_kwargs):
        super().__init__()
        kernel_size, effective_size = _checks.kernel_sizes(kernel_size, effective_size)
        scales = _checks.float_list("scales", scales)
        rotations = _checks.float_list("rotations", rotations)
        basis_kwargs = check_keywords(type(self).__name__, basis_kwargs)
        basis = steerable_basis(basis_type, kernel_size, rotations, scales, effective_size,
                                **basis_kwargs)
        if basis.shape[1] != len(rotations) * len(scales):
            raise ValueError(
                f"basis_type: {basis_type!r} gives {basis.shape[1]} group slices but "
                f"len(rotations) * len(scales) = {len(rotations) * len(scales)}; "
                f"types A, B and D (A is the default, as in the original) take no rotations: "
                f"use rotations=[0.0] with them, or a rotating type such as 'E' (the paper's)")
        self.effective_size = effective_size
        self.basis_type = basis_type
        self.scales = [round(s, 3) for s in scales]        # as the original: for repr only
        self._setup(in_channels, out_channels, basis, len(rotations), neighbourhood, stride,
                    padding, padding_mode, bias, backend, 0.0)

    @classmethod
    def _from_basis(cls, basis, in_channels, out_channels, num_rotations, neighbourhood, stride,
                    padding, padding_mode, bias, backend, support_tolerance, scales):
        """A layer on the given basis tensor ``[F, R*S, K, K]`` (see ``from_basis``)."""
        check_basis(basis, _checks.positive_int("num_rotations", num_rotations))
        num_scales = basis.shape[1] // num_rotations
        if scales is not None:
            scales = _checks.float_list("scales", scales, positive=True)
            if len(scales) != num_scales:
                raise ValueError(f"scales: expected S = basis.shape[1] / num_rotations = "
                                 f"{num_scales} scales, got {len(scales)}")
        if (isinstance(support_tolerance, bool) or not isinstance(support_tolerance, (int, float))
                or not 0 <= support_tolerance < 1):
            raise ValueError(f"support_tolerance: expected a float in [0, 1) (a fraction of "
                             f"max|basis|), got {support_tolerance!r}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.effective_size = None
        layer.basis_type = None                 # a given tensor, not a type of the original's
        layer.scales = None if scales is None else [round(s, 3) for s in scales]
        layer._setup(in_channels, out_channels, basis.detach().clone(), num_rotations,
                     neighbourhood, stride, padding, padding_mode, bias, backend,
                     float(support_tolerance))
        return layer

    def _setup(self, in_channels, out_channels, basis, num_rotations, neighbourhood, stride,
               padding, padding_mode, bias, backend, support_tolerance):
        self.in_channels = _checks.positive_int("in_channels", in_channels)
        self.out_channels = _checks.positive_int("out_channels", out_channels)
        self.stride = _checks.positive_int("stride", stride)
        self.padding = _checks.positive_int("padding", padding, minimum=0)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode: expected one of {PADDING_MODES}, got "
                             f"{padding_mode!r}")
        self.padding_mode = padding_mode
        self.backend = backends.check_backend_name(backend)
        self.kernel_size = basis.shape[-1]
        self.num_rotations = num_rotations
        self.num_scales = basis.shape[1] // num_rotations
        self.rotation_size, self.scale_size = neighbourhood if neighbourhood else (1, 1)
        self.support_tolerance = support_tolerance
        if support_tolerance > 0:                 # taps below the tolerance become exact zeros
            basis = crop_to_support(basis, num_rotations,
                                    basis_support(basis, num_rotations, support_tolerance))
        self.register_buffer("basis", basis)
        self.num_funcs = basis.shape[0]
        num_offsets = (self.rotation_size * self.scale_size,) if neighbourhood else ()
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, *num_offsets,
                                               self.num_funcs, dtype=basis.dtype,
                                               device=basis.device))
        self.register_parameter("bias", nn.Parameter(torch.zeros(
            self.out_channels, dtype=basis.dtype, device=basis.device)) if bias else None)
        self._geometry_stamp = None
        self._filter_cache = None
        self.reset_parameters()
        self.register_load_state_dict_post_hook(_refresh_geometry)
        self.geometry                           # built now: torch.compile reads it as is

    @property
    def group_size(self) -> int:
        return self.num_rotations * self.num_scales

    @property
    def geometry(self) -> Geometry:
        """The layer's geometry; its support is measured from the basis buffer, again whenever
        the buffer was replaced or written since."""
        stamp = (self.basis.data_ptr(), self.basis._version, self.basis.device)
        if self._geometry_stamp is None or self._geometry_stamp[0] != stamp:
            build = lifting_geometry if self.layer_kind == "lift" else group_geometry
            sizes = {} if self.layer_kind == "lift" else dict(
                rotation_size=self.rotation_size, scale_size=self.scale_size)
            support = basis_support(self.basis, self.num_rotations, self.support_tolerance)
            geo = build(self.in_channels, self.out_channels, self.basis, self.num_rotations,
                        stride=self.stride, padding=self.padding, support=support,
                        padding_mode=self.padding_mode, **sizes)
            kernel = geo.kernel_geometry
            kernel.key, kernel.encode()             # cached now: torch.compile only reads them
            self._geometry_stamp = (stamp, geo)
        return self._geometry_stamp[1]

    @property
    def support(self) -> tuple:
        """Per-scale support boxes (see :func:`rstfast.geometry.basis_support`)."""
        return self.geometry.support

    def reset_parameters(self) -> None:
        """As the original: kaiming_uniform_(a=sqrt(5)) on the coefficients, zero bias."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def train(self, mode: bool = True):
        self._filter_cache = None
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self._filter_cache = None               # .to(), .cuda(), .double(), ...
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, H, W]`` (lifting) or ``[B, C, R*S, H, W]`` -> ``[B, O, R*S, H', W']``."""
        if torch.compiler.is_compiling():         # geometry as last built eagerly (no cache)
            return ops.roto_scale_conv(x, self.weight, self.basis, self.bias,
                                       self._geometry_stamp[1], self.backend)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        geo = self.geometry
        geo.check_input(x)                        # the one validation of x: shape, and
        _checks.like_layer(x, name="x", like=self.weight)   # device and dtype of the layer
        params = [x, self.weight] + ([self.bias] if self.bias is not None else [])
        cacheable = self.cache_filters and not (torch.is_grad_enabled()
                                                and any(t.requires_grad for t in params))
        y, backend = ops.run(x, self.weight, self.basis, self.bias, geo, self.backend,
                             self._cached_filters if cacheable else None)
        self.last_backend = backend.name
        return y

    def _cached_filters(self, backend, geo):
        """The filters of ``backend`` for the current weight (no gradient can flow)."""
        key = (backend.name, self.weight.data_ptr(), self.weight._version, self.weight.dtype,
               self.basis.data_ptr(), self.basis._version, self.weight.device)
        if self._filter_cache is None or self._filter_cache[0] != key:
            self._filter_cache = None               # free the old filters before building
            self._filter_cache = (key, backend.prepare_filters(self.weight, self.basis, geo))
        return self._filter_cache[1]

    def extra_repr(self) -> str:
        basis = (f"basis={self.basis_type}" if self.basis_type is not None
                 else "basis=tensor")
        scales = self.scales if self.scales is not None else f"{self.num_scales} (tensor)"
        mode = "" if self.padding_mode == "zeros" else f" padding_mode={self.padding_mode}"
        return (f"{self.in_channels}->{self.out_channels} | {basis} "
                f"funcs={self.num_funcs} scales={scales} rotations={self.num_rotations} "
                f"size={self.kernel_size} stride={self.stride} padding={self.padding}{mode} "
                f"backend={self.backend}")


class LiftingConv(_RotoScaleConv):
    """Lifting convolution Z2 -> H: ``[B, C, H, W] -> [B, O, R*S, H', W']`` (rotation-major).

    weight ``[O, C, F]``, basis buffer ``[F, R*S, K, K]``, bias ``[O]`` (zeros) or None.
    ``padding_mode``: ``"zeros"`` (the original's), ``"reflect"``, ``"replicate"`` or
    ``"circular"`` (``nn.Conv2d``'s names). ``**kwargs``: the basis keywords ``mult``,
    ``max_order``, ``spt``, and ``dropout`` (ignored, as the original); any other is a TypeError.
    Any basis tensor: :meth:`from_basis`.
    """
    layer_kind = "lift"

    def __init__(self, in_channels, out_channels, kernel_size, effective_size, scales=(1.0,),
                 rotations=(0.0,), stride=1, padding=0, bias=False, basis_type='A',
                 backend="auto", padding_mode="zeros", **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, effective_size, scales, rotations,
                         stride, padding, bias, basis_type, backend, padding_mode, (), kwargs)

    @classmethod
    def from_basis(cls, basis: torch.Tensor, in_channels: int, out_channels: int, *,
                   num_rotations: int = 1, stride: int = 1, padding: int = 0,
                   padding_mode: str = "zeros", bias: bool = True, backend: str = "auto",
                   support_tolerance: float = 0.0, scales=None) -> "LiftingConv":
        """A lifting layer on any basis ``[F, R*S, K, K]`` (``t = r*S + s``, odd ``K``; e.g. a
        DISCO basis), weight ``[O, C, F]``. The per-scale support boxes are measured from the
        tensor: taps with ``|value| <= support_tolerance * max|basis|`` count as zero (0: exact
        zeros only) and are set to zero in the layer's basis buffer, so every backend computes the
        same numbers and the fast ones skip them. ``scales`` (optional, ``S`` values): the scales
        the basis was made for (shown by ``repr``; the equivariance tool reads their ratio)."""
        return cls._from_basis(basis, in_channels, out_channels, num_rotations, (), stride,
                               padding, padding_mode, bias, backend, support_tolerance, scales)


class GroupConv(_RotoScaleConv):
    """Group convolution H -> H: ``[B, C, R*S, H, W] -> [B, O, R*S, H', W']`` (rotation-major).

    Output ``(r, s)`` mixes input rotations ``r .. r+Lr-1`` (mod R) and scales ``s .. s+Ls-1``
    (zero past the largest scale) with the basis slice of ``(r, s)``. weight ``[O, C, Lr*Ls, F]``
    with third index ``i*Ls + j``. Note the original's argument order: ``scale_size`` first.
    """
    layer_kind = "group"

    def __init__(self, in_channels, out_channels, scale_size, rotation_size, kernel_size,
                 effective_size, scales=(1.0,), rotations=(0.0,), stride=1, padding=0, bias=False,
                 basis_type='A', backend="auto", padding_mode="zeros", **kwargs):
        scale_size = _checks.positive_int("scale_size", scale_size)
        rotation_size = _checks.positive_int("rotation_size", rotation_size)
        _checks.at_most("scale_size", scale_size, "len(scales)",
                        len(_checks.float_list("scales", scales)))
        _checks.at_most("rotation_size", rotation_size, "len(rotations)",
                        len(_checks.float_list("rotations", rotations)))
        super().__init__(in_channels, out_channels, kernel_size, effective_size, scales, rotations,
                         stride, padding, bias, basis_type, backend, padding_mode,
                         (rotation_size, scale_size), kwargs)

    @classmethod
    def from_basis(cls, basis: torch.Tensor, in_channels: int, out_channels: int,
                   scale_size: int = 1, rotation_size: int = 1, *, num_rotations: int = 1,
                   stride: int = 1, padding: int = 0, padding_mode: str = "zeros",
                   bias: bool = True, backend: str = "auto", support_tolerance: float = 0.0,
                   scales=None) -> "GroupConv":
        """A group layer on any basis ``[F, R*S, K, K]`` (``t = r*S + s``, odd ``K``), weight
        ``[O, C, Lr*Ls, F]``; supports and ``scales`` as :meth:`LiftingConv.from_basis`."""
        neighbourhood = (_checks.positive_int("rotation_size", rotation_size),
                         _checks.positive_int("scale_size", scale_size))
        return cls._from_basis(basis, in_channels, out_channels, num_rotations, neighbourhood,
                               stride, padding, padding_mode, bias, backend, support_tolerance,
                               scales)

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
