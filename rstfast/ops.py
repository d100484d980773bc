"""The op contract of the fast backends: ``torch.library`` ops in the namespace ``rstfast``.

One schema, one fake kernel and (where differentiable) one autograd formula per op; every kernel
backend (:mod:`rstfast.backends`) implements only ``conv_forward`` / ``conv_backward`` on the
cropped filter buffer of :mod:`rstfast.geometry`:

* ``rstfast::expand_filters(weight, basis, geometry) -> filters`` — coefficients to the cropped
  filter buffer (:func:`rstfast.filters.expand`, the same for every backend and device);
* ``rstfast::contract_filters(grad_filters, basis, geometry) -> grad_weight`` — its adjoint;
* ``rstfast::conv(x, filters, bias, geometry, backend) -> y`` — the backend's forward kernel;
* ``rstfast::conv_backward(grad_y, x, filters, geometry, backend, output_mask) -> (grad_x,
  grad_filters)`` — the backend's backward kernels;
* ``rstfast::roto_scale_conv(x, weight, basis, bias, geometry, backend) -> y`` — the layer op:
  ``conv(x, expand_filters(weight))``, differentiable in ``x``, ``weight`` and ``bias``. Its
  backward rebuilds the filters (a few % of the convolution's cost) instead of keeping them alive
  between forward and backward, calls ``conv_backward`` and ``contract_filters``; the bias gradient
  is ``grad_y`` summed over ``(B, T, H', W')`` in float32 (float64 for float64).

``geometry`` is :meth:`rstfast.geometry.Geometry.encode`. Shapes: x ``[B, C, H, W]`` (lifting) or
``[B, C, T, H, W]`` (``t = r*S + s``), y ``[B, O, T, H', W']``.

The autocast rule (once, in :func:`roto_scale_conv`): under ``torch.autocast`` x is cast to the
autocast dtype when the backend computes it, else to float32 (e.g. the C++ CPU kernels); filters
are expanded in float32; the output has the autocast dtype. Kernels always run with autocast off.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import backends, filters as filter_math
from .geometry import Geometry, decode, filter_dtype, group_geometry, lifting_geometry

__all__ = ["roto_scale_conv", "run", "select", "prepare_filters", "lift_conv", "group_conv",
           "expand_filters", "contract_filters", "conv", "conv_backward", "roto_scale_conv_op"]


def _check_call(x: Tensor, weight_shape: Sequence[int], weight: Tensor, basis: Optional[Tensor],
                bias: Optional[Tensor], geo: Geometry, what: str) -> None:
    """Shapes and devices of one call against its geometry; errors name the argument."""
    geo.check_input(x)
    if tuple(weight.shape) != tuple(weight_shape):
        raise ValueError(f"{what}: expected shape {tuple(weight_shape)} (the geometry), got "
                         f"{tuple(weight.shape)}")
    expected_basis = (geo.num_funcs, geo.group_size, geo.kernel_size, geo.kernel_size)
    if basis is not None and tuple(basis.shape) != expected_basis:
        raise ValueError(f"basis: expected shape {expected_basis} ([F, T, K, K]), got "
                         f"{tuple(basis.shape)}")
    if bias is not None and tuple(bias.shape) != (geo.out_channels,):
        raise ValueError(f"bias: expected shape ({geo.out_channels},) (out channels), got "
                         f"{tuple(bias.shape)}")
    for name, tensor in ((what, weight), ("basis", basis), ("bias", bias)):
        if tensor is not None and tensor.device != x.device:
            raise ValueError(f"{name}: expected a tensor on x's device {x.device}, got one on "
                             f"{tensor.device}")


def _kernel_forward(x: Tensor, filters: Tensor, bias: Optional[Tensor], geo: Geometry,
                    backend: str) -> Tensor:
    with torch.autocast(x.device.type, enabled=False):
        return backends.kernels(backend).conv_forward(x, filters, bias, geo)


def _kernel_backward(grad_y: Tensor, x: Tensor, filters: Tensor, geo: Geometry, backend: str,
                     output_mask: Sequence[bool]) -> Tuple[Tensor, Tensor]:
    with torch.autocast(x.device.type, enabled=False):
        grad_x, grad_filters = backends.kernels(backend).conv_backward(
            grad_y.to(x.dtype), x, filters, geo, bool(output_mask[0]), bool(output_mask[1]))
    return (grad_x if grad_x is not None else x.new_empty(0),
            grad_filters if grad_filters is not None else filters.new_empty(0))


# ------------------------------------------------------------------------- filter expansion
@torch.library.custom_op("rstfast::expand_filters", mutates_args=())
def expand_filters(weight: Tensor, basis: Tensor, geometry: List[int]) -> Tensor:
    """weight ``[O, C, (A,) F]``, basis ``[F, T, K, K]`` -> flat cropped filter buffer."""
    return filter_math.expand(weight, basis, decode(geometry))


@expand_filters.register_fake
def _(weight, basis, geometry):
    return weight.new_empty(decode(geometry).filter_numel, dtype=filter_dtype(weight.dtype))


@torch.library.custom_op("rstfast::contract_filters", mutates_args=())
def contract_filters(grad_filters: Tensor, basis: Tensor, geometry: List[int]) -> Tensor:
    """Gradient of the filter buffer -> gradient of the coefficients ``[O, C, (A,) F]``."""
    return filter_math.contract(grad_filters, basis, decode(geometry))


@contract_filters.register_fake
def _(grad_filters, basis, geometry):
    return grad_filters.new_empty(decode(geometry).weight_shape())


# ------------------------------------------------------------------------------ convolution
@torch.library.custom_op("rstfast::conv", mutates_args=())
def conv(x: Tensor, filters: Tensor, bias: Optional[Tensor], geometry: List[int],
         backend: str) -> Tensor:
    """x, filter buffer, bias ``[O]`` or None -> y ``[B, O, T, H', W']`` (x's dtype)."""
    geo = decode(geometry)
    _check_call(x, (geo.filter_numel,), filters, None, bias, geo, "filters")
    return _kernel_forward(x, filters, bias, geo, backend)


@conv.register_fake
def _(x, filters, bias, geometry, backend):
    return x.new_empty(decode(geometry).out_shape(x.shape))


@torch.library.custom_op("rstfast::conv_backward", mutates_args=())
def conv_backward(grad_y: Tensor, x: Tensor, filters: Tensor, geometry: List[int], backend: str,
                  output_mask: List[bool]) -> Tuple[Tensor, Tensor]:
    """(grad_x, grad of the filter buffer); an empty tensor where ``output_mask`` is False."""
    geo = decode(geometry)
    _check_call(x, (geo.filter_numel,), filters, None, None, geo, "filters")
    return _kernel_backward(grad_y, x, filters, geo, backend, output_mask)


@conv_backward.register_fake
def _(grad_y, x, filters, geometry, backend, output_mask):
    return (x.new_empty(x.shape if output_mask[0] else (0,)),
            filters.new_empty(filters.shape if output_mask[1] else (0,)))


# ------------------------------------------------------------------------------- layer op
@torch.library.custom_op("rstfast::roto_scale_conv", mutates_args=())
def roto_scale_conv_op(x: Tensor, weight: Tensor, basis: Tensor, bias: Optional[Tensor],
                       geometry: List[int], backend: str) -> Tensor:
    """``conv(x, expand_filters(weight, basis))``: x, weight ``[O, C, (A,) F]``, basis
    ``[F, T, K, K]``, bias -> y ``[B, O, T, H', W']`` (x's dtype)."""
    geo = decode(geometry)
    _check_call(x, geo.weight_shape(), weight, basis, bias, geo, "weight")
    return _kernel_forward(x, filter_math.expand(weight, basis, geo), bias, geo, backend)


@roto_scale_conv_op.register_fake
def _(x, weight, basis, bias, geometry, backend):
    return x.new_empty(decode(geometry).out_shape(x.shape))


def _setup(ctx, inputs, output):
    x, weight, basis, bias, geometry, backend = inputs
    ctx.save_for_backward(x, weight, basis)
    ctx.geometry, ctx.backend = geometry, backend
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad_y):
    x, weight, basis = ctx.saved_tensors
    need_x, need_weight, _, need_bias = ctx.needs_input_grad[:4]
    grad_x = grad_weight = grad_bias = None
    if need_x or need_weight:
        filters = expand_filters(weight, basis, ctx.geometry)
        grad_x, grad_filters = conv_backward(grad_y, x, filters, ctx.geometry, ctx.backend,
                                             [need_x, need_weight])
        if need_weight:
            grad_weight = contract_filters(grad_filters, basis, ctx.geometry).to(weight.dtype)
        if not need_x:
            grad_x = None
    if need_bias:
        grad_bias = grad_y.sum(dim=(0, 2, 3, 4), dtype=filter_dtype(grad_y.dtype))
        grad_bias = grad_bias.to(ctx.bias_dtype)
    return grad_x, grad_weight, None, grad_bias, None, None


roto_scale_conv_op.register_autograd(_backward, setup_context=_setup)


# ----------------------------------------------------------------------- Python entry points
def _autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    device_type = x.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def roto_scale_conv(x: Tensor, weight: Tensor, basis: Tensor, bias: Optional[Tensor],
                    geo: Geometry, backend: str = "auto") -> Tensor:
    """One lifting or group convolution on ``backend`` (a name of :func:`rstfast.backends.names`).

    x ``[B, C, H, W]`` (lifting) or ``[B, C, T, H, W]``, weight ``geo.weight_shape()``, basis
    ``[F, T, K, K]``, bias ``[O]`` or None -> ``[B, O, T, H', W']``.
    """
    return run(select(x, backend, weight, basis, bias, geo), x, weight, basis, bias, geo)


def run(choice: backends.Choice, x: Tensor, weight: Tensor, basis: Tensor,
        bias: Optional[Tensor], geo: Geometry, filters: Optional[Tensor] = None) -> Tensor:
    """:func:`roto_scale_conv` on the resolved backend ``choice`` (:func:`select`); the autocast
    rule is applied here. ``filters``: the filters of ``choice`` (:func:`prepare_filters`) to
    reuse when no gradient is needed (inference cache), else None."""
    _check_call(x, geo.weight_shape(), weight, basis, bias, geo, "weight")
    autocast_dtype = _autocast_dtype(x)
    if choice.backend.kind == "functional":
        kernel = choice.module.expand_filter(weight, basis) if filters is None else filters
        return _functional(choice.module, x, kernel, bias, geo)
    x = x.to(choice.compute_dtype)
    if filters is not None:
        y = conv(x, filters, bias, geo.encode(), choice.name)
    else:
        y = roto_scale_conv_op(x, weight, basis, bias, geo.encode(), choice.name)
    return y if autocast_dtype is None else y.to(autocast_dtype)


def select(x: Tensor, backend: str, weight: Tensor, basis: Tensor, bias: Optional[Tensor],
           geo: Geometry) -> backends.Choice:
    """The backend :func:`roto_scale_conv` runs ``backend`` with for this call (``auto``: the
    fastest for its shapes, :func:`rstfast.autotune.choose`)."""
    if backend == "auto":
        from . import autotune
        return autotune.choose(x, weight, basis, bias, geo)
    autocast_dtype = _autocast_dtype(x)
    return backends.resolve(backend, x.device, autocast_dtype or x.dtype,
                            autocast_dtype is not None)


def prepare_filters(choice: backends.Choice, weight: Tensor, basis: Tensor,
                    geo: Geometry) -> Tensor:
    """The filters ``choice`` convolves with: dense ``[O, C, (A,) T, K, K]`` for a functional
    backend, the cropped buffer for a kernels backend (no autograd: for inference caches)."""
    if choice.backend.kind == "functional":
        return choice.module.expand_filter(weight, basis)
    return expand_filters(weight, basis, geo.encode())


def _functional(module, x: Tensor, kernel: Tensor, bias: Optional[Tensor], geo: Geometry):
    if geo.lifting:
        return module.lift_conv_dense(x, kernel, bias, geo.stride, geo.padding)
    return module.group_conv_dense(x, kernel, bias, geo.num_rotations, geo.rotation_size,
                                   geo.scale_size, geo.stride, geo.padding)


def lift_conv(x: Tensor, weight: Tensor, basis: Tensor, bias: Optional[Tensor] = None,
              stride: int = 1, padding: int = 0, num_rotations: int = 1,
              backend: str = "auto") -> Tensor:
    """Functional lifting convolution: x ``[B, C, H, W]``, weight ``[O, C, F]``, basis
    ``[F, R*S, K, K]`` -> ``[B, O, R*S, H', W']`` (the support is measured from the basis)."""
    geo = lifting_geometry(weight.shape[1], weight.shape[0], basis, num_rotations, stride,
                           padding)
    return roto_scale_conv(x, weight, basis, bias, geo, backend)


def group_conv(x: Tensor, weight: Tensor, basis: Tensor, bias: Optional[Tensor] = None,
               num_rotations: int = 1, rotation_size: int = 1, scale_size: int = 1,
               stride: int = 1, padding: int = 0, backend: str = "auto") -> Tensor:
    """Functional group convolution: x ``[B, C, T, H, W]``, weight ``[O, C, Lr*Ls, F]``, basis
    ``[F, T, K, K]`` -> ``[B, O, T, H', W']`` (the support is measured from the basis)."""
    geo = group_geometry(weight.shape[1], weight.shape[0], basis, num_rotations, rotation_size,
                         scale_size, stride, padding)
    return roto_scale_conv(x, weight, basis, bias, geo, backend)
