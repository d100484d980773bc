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
from ..geometry import Geometry, group_geometry, lifting_geometry
from ..reference import functional as ref
from ..reference.bases import steerable_basis

__all__ = ["LiftingConv", "GroupConv", "GroupConv1x1", "GroupMaxProjection",
           "SESConv_Z2_H", "SESConv_H_H", "SESConv_H_H_1x1", "SESMaxProjection"]

# The keyword arguments the layers pass to the basis (rstfast.reference.bases.steerable_basis;
# each basis type uses some of them and ignores the others, as the original), and the ones the
# original's model code passes to its layers, which they ignore.
BASIS_KEYWORDS = ("mult", "max_order", "spt")
IGNORED_KEYWORDS = ("dropout",)


def _basis_keywords(layer: str, kwargs: dict) -> dict:
    """The basis keywords of ``kwargs``; a TypeError names any keyword that is neither a basis
    keyword nor one of :data:`IGNORED_KEYWORDS`."""
    unknown = sorted(set(kwargs) - set(BASIS_KEYWORDS) - set(IGNORED_KEYWORDS))
    if unknown:
        raise TypeError(f"{layer}: unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"expected the layer's own arguments, the basis keywords "
                        f"{', '.join(BASIS_KEYWORDS)}, or {', '.join(IGNORED_KEYWORDS)} (ignored, "
                        f"as the original)")
    return {key: value for key, value in kwargs.items() if key in BASIS_KEYWORDS}


def _refresh_geometry(module, incompatible_keys) -> None:
    """``load_state_dict`` post-hook: measure the support of the loaded basis."""
    module.geometry


class _RotoScaleConv(nn.Module):
    """Shared construction: basis buffer, coefficient weight ``[O, C, *offsets, F]``, bias, backend,
    and the layer's :class:`rstfast.geometry.Geometry` (built once; rebuilt when the basis buffer
    changes, e.g. by ``load_state_dict``).

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
                 stride, padding, bias, basis_type, backend, neighbourhood, basis_kwargs):
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
        self.rotation_size, self.scale_size = neighbourhood if neighbourhood else (1, 1)
        basis = steerable_basis(basis_type, self.kernel_size, rotations, scales,
                                self.effective_size,
                                **_basis_keywords(type(self).__name__, basis_kwargs))
        if basis.shape[1] != self.num_rotations * self.num_scales:
            raise ValueError(
                f"basis_type: {basis_type!r} gives {basis.shape[1]} group slices but "
                f"len(rotations) * len(scales) = {self.num_rotations * self.num_scales}; "
                f"types A, B and D (A is the default, as in the original) take no rotations: "
                f"use rotations=[0.0] with them, or a rotating type such as 'E' (the paper's)")
        self.register_buffer("basis", basis)
        self.num_funcs = basis.shape[0]
        num_offsets = (self.rotation_size * self.scale_size,) if neighbourhood else ()
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, *num_offsets,
                                               self.num_funcs))
        self.register_parameter("bias",
                                nn.Parameter(torch.zeros(self.out_channels)) if bias else None)
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
            geo = build(self.in_channels, self.out_channels, self.basis, self.num_rotations,
                        stride=self.stride, padding=self.padding, **sizes)
            geo.key, geo.encode()                   # cached now: torch.compile only reads them
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
        backend = ops.select(x, self.backend, self.weight, self.basis, self.bias, geo)
        self.last_backend = backend.name
        return backend.forward(x, self.weight, self.basis, self.bias, geo,
                               filters=self._cached_filters(x, backend, geo))

    def _cached_filters(self, x: torch.Tensor, backend, geo):
        """The reusable filters of ``backend`` when no gradient can flow, else None."""
        params = [x, self.weight] + ([self.bias] if self.bias is not None else [])
        if not self.cache_filters or (torch.is_grad_enabled()
                                      and any(t.requires_grad for t in params)):
            return None
        key = (backend.name, self.weight.data_ptr(), self.weight._version, self.weight.dtype,
               self.basis.data_ptr(), self.basis._version, x.device)
        if self._filter_cache is None or self._filter_cache[0] != key:
            self._filter_cache = None               # free the old filters before building
            self._filter_cache = (key, backend.prepare_filters(self.weight, self.basis, geo))
        return self._filter_cache[1]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels} | basis={self.basis_type} "
                f"funcs={self.num_funcs} scales={self.scales} rotations={self.num_rotations} "
                f"size={self.kernel_size} stride={self.stride} padding={self.padding} "
                f"backend={self.backend}")


class LiftingConv(_RotoScaleConv):
    """Lifting convolution Z2 -> H: ``[B, C, H, W] -> [B, O, R*S, H', W']`` (rotation-major).

    weight ``[O, C, F]``, basis buffer ``[F, R*S, K, K]``, bias ``[O]`` (zeros) or None.
    ``**kwargs``: the basis keywords ``mult``, ``max_order``, ``spt``, and ``dropout`` (ignored, as
    the original); any other is a TypeError.
    """
    layer_kind = "lift"

    def __init__(self, in_channels, out_channels, kernel_size, effective_size, scales=(1.0,),
                 rotations=(0.0,), stride=1, padding=0, bias=False, basis_type='A',
                 backend="auto", **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, effective_size, scales, rotations,
                         stride, padding, bias, basis_type, backend, (), kwargs)


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
                         (rotation_size, scale_size), kwargs)

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
