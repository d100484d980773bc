"""The op contract of the kernel backends: ``torch.library`` ops in the namespace ``rstfast``.

One schema, one fake kernel and (where differentiable) one autograd formula per op; a kernel
backend (:class:`rstfast.backends.KernelBackend`) implements only ``conv_forward`` /
``conv_backward`` on the cropped filter buffer of :mod:`rstfast.geometry` and is found here by name
(:func:`register_kernels`):

* ``rstfast::expand_filters(weight, basis, geometry) -> filters`` — coefficients to the cropped
  filter buffer (:func:`rstfast.filters.expand_cropped`, the same for every backend and device);
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
``[B, C, T, H, W]`` (``t = r*S + s``), y ``[B, O, T, H', W']``. The ops trust their arguments: the
one validation of a call is :meth:`rstfast.geometry.Geometry.check_call`, at the entry points
(:mod:`rstfast.ops`, the layers). What a kernel returns is checked (shape, dtype, device), so a
misbehaving backend fails with its name instead of corrupting the results. Kernels run with
autocast off; the autocast rule is the backend object's (:meth:`rstfast.backends.Backend.forward`).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Protocol, Sequence, Tuple

import torch
from torch import Tensor

from . import filters as filter_math
from .geometry import Geometry, decode, filter_dtype

__all__ = ["Kernels", "kernel_lookup", "expand_filters", "contract_filters", "conv",
           "conv_backward", "roto_scale_conv_op"]


class Kernels(Protocol):
    """What the ops call: a kernel backend's forward and backward on the cropped buffer."""

    def conv_forward(self, x: Tensor, filters: Tensor, bias: Optional[Tensor],
                     geo: Geometry) -> Tensor: ...

    def conv_backward(self, grad_y: Tensor, x: Tensor, filters: Tensor, geo: Geometry,
                      need_input: bool, need_filters: bool
                      ) -> Tuple[Optional[Tensor], Optional[Tensor]]: ...


def _no_backends(name: str) -> Kernels:
    raise RuntimeError("rstfast.contract: no backend registry (import rstfast.backends)")


# backend name -> its kernels; rstfast.backends installs its registry's lookup here.
kernel_lookup: Callable[[str], Kernels] = _no_backends


def _check_result(name: str, backend: str, tensor, like: Tensor, shape) -> Tensor:
    """A kernel's output has the expected shape, dtype and device (else a RuntimeError naming the
    backend)."""
    if (not isinstance(tensor, Tensor) or tuple(tensor.shape) != tuple(shape)
            or tensor.dtype != like.dtype or tensor.device != like.device):
        got = (f"{tuple(tensor.shape)} {tensor.dtype} on {tensor.device}"
               if isinstance(tensor, Tensor) else type(tensor).__name__)
        raise RuntimeError(f"backend {backend!r}: its kernel returned {name} {got}, expected "
                           f"{tuple(shape)} {like.dtype} on {like.device}")
    return tensor


def _kernel_forward(x: Tensor, filters: Tensor, bias: Optional[Tensor], geo: Geometry,
                    backend: str) -> Tensor:
    with torch.autocast(x.device.type, enabled=False):
        y = kernel_lookup(backend).conv_forward(x, filters, bias, geo)
    return _check_result("y", backend, y, x, geo.out_shape(x.shape))


def _kernel_backward(grad_y: Tensor, x: Tensor, filters: Tensor, geo: Geometry, backend: str,
                     output_mask: Sequence[bool]) -> Tuple[Tensor, Tensor]:
    need_x, need_filters = bool(output_mask[0]), bool(output_mask[1])
    with torch.autocast(x.device.type, enabled=False):
        grad_x, grad_filters = kernel_lookup(backend).conv_backward(
            grad_y.to(x.dtype), x, filters, geo, need_x, need_filters)
    grad_x = (_check_result("grad_x", backend, grad_x, x, x.shape) if need_x
              else x.new_empty(0))
    grad_filters = (_check_result("grad_filters", backend, grad_filters, filters, filters.shape)
                    if need_filters else filters.new_empty(0))
    return grad_x, grad_filters


# ------------------------------------------------------------------------- filter expansion
@torch.library.custom_op("rstfast::expand_filters", mutates_args=())
def expand_filters(weight: Tensor, basis: Tensor, geometry: List[int]) -> Tensor:
    """weight ``[O, C, (A,) F]``, basis ``[F, T, K, K]`` -> flat cropped filter buffer."""
    return filter_math.expand_cropped(weight, basis, decode(geometry))


@expand_filters.register_fake
def _(weight, basis, geometry):
    return weight.new_empty(decode(geometry).filter_numel, dtype=filter_dtype(weight.dtype))


@torch.library.custom_op("rstfast::contract_filters", mutates_args=())
def contract_filters(grad_filters: Tensor, basis: Tensor, geometry: List[int]) -> Tensor:
    """Gradient of the filter buffer -> gradient of the coefficients ``[O, C, (A,) F]``."""
    return filter_math.contract_cropped(grad_filters, basis, decode(geometry))


@contract_filters.register_fake
def _(grad_filters, basis, geometry):
    return grad_filters.new_empty(decode(geometry).weight_shape())


# ------------------------------------------------------------------------------ convolution
@torch.library.custom_op("rstfast::conv", mutates_args=())
def conv(x: Tensor, filters: Tensor, bias: Optional[Tensor], geometry: List[int],
         backend: str) -> Tensor:
    """x, filter buffer, bias ``[O]`` or None -> y ``[B, O, T, H', W']`` (x's dtype)."""
    return _kernel_forward(x, filters, bias, decode(geometry), backend)


@conv.register_fake
def _(x, filters, bias, geometry, backend):
    return x.new_empty(decode(geometry).out_shape(x.shape))


@torch.library.custom_op("rstfast::conv_backward", mutates_args=())
def conv_backward(grad_y: Tensor, x: Tensor, filters: Tensor, geometry: List[int], backend: str,
                  output_mask: List[bool]) -> Tuple[Tensor, Tensor]:
    """(grad_x, grad of the filter buffer); an empty tensor where ``output_mask`` is False."""
    return _kernel_backward(grad_y, x, filters, decode(geometry), backend, output_mask)


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
    return _kernel_forward(x, filter_math.expand_cropped(weight, basis, geo), bias, geo, backend)


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
