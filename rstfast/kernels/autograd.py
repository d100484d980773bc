"""``torch.library`` custom ops (namespace ``rstfast_triton``) and their autograd formulas.

Two differentiable ops make one layer:

* ``expand_filters(weight [O, C, A, F], basis, R, support) -> filter buffer`` (see :mod:`.layout`);
  backward: ``contract_filters`` (buffer gradient x cropped basis);
* ``rs_conv(x, filters, bias, ...) -> y [B, O, T, H', W']``; backward: ``rs_conv_backward`` (input
  and filter-buffer gradients from the Triton kernels) and ``sum`` for the bias.

Being custom ops, they are opaque to ``torch.compile`` / ``torch.export`` (fake kernels give shapes).
"""
import collections
import weakref
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import filter_expand
from .layout import block_numel, filter_layout, geometry
from .rs_conv_bwd import conv_backward_filters, conv_backward_input
from .rs_conv_fwd import conv_forward

__all__ = ["expand_filters", "contract_filters", "rs_conv", "rs_conv_backward", "cached_filters",
           "CACHE_SIZE"]

# Eval-mode cache of filter buffers: at most this many (weight, basis) pairs are kept.
CACHE_SIZE = 16


def _layout_for(weight_shape, num_rotations: int, support: List[int], device):
    out_channels, in_channels, num_offsets, _ = weight_shape
    return filter_layout(tuple(support), num_offsets, num_rotations, in_channels, out_channels,
                         torch.device(device))


def _buffer_numel(weight_shape, num_rotations: int, support: List[int]):
    """Size of the filter buffer without building the layout's device tensors (fake mode)."""
    out_channels, in_channels, num_offsets, _ = weight_shape
    return sum(block_numel(n, num_offsets, num_rotations, in_channels, out_channels)
               for n in support)


@torch.library.custom_op("rstfast_triton::expand_filters", mutates_args=())
def expand_filters(weight: Tensor, basis: Tensor, num_rotations: int,
                   support: List[int]) -> Tensor:
    """weight ``[O, C, A, F]``, basis ``[F, T, K, K]`` -> float32 cropped filter buffer."""
    return filter_expand.expand(weight, basis, num_rotations,
                                _layout_for(weight.shape, num_rotations, support, weight.device))


@expand_filters.register_fake
def _(weight, basis, num_rotations, support):
    return weight.new_empty(_buffer_numel(weight.shape, num_rotations, support),
                            dtype=torch.float32)


@torch.library.custom_op("rstfast_triton::contract_filters", mutates_args=())
def contract_filters(grad_filters: Tensor, basis: Tensor, num_rotations: int,
                     support: List[int], weight_shape: List[int]) -> Tensor:
    """Gradient of the filter buffer -> float32 gradient of the coefficients ``weight_shape``."""
    layout = _layout_for(weight_shape, num_rotations, support, grad_filters.device)
    return filter_expand.contract(grad_filters, basis, num_rotations, layout,
                                  weight_shape).contiguous()


@contract_filters.register_fake
def _(grad_filters, basis, num_rotations, support, weight_shape):
    return grad_filters.new_empty(weight_shape, dtype=torch.float32)


def _expand_setup(ctx, inputs, output):
    weight, basis, num_rotations, support = inputs
    ctx.save_for_backward(basis)
    ctx.num_rotations, ctx.support = num_rotations, support
    ctx.weight_shape, ctx.weight_dtype = list(weight.shape), weight.dtype


def _expand_backward(ctx, grad_filters):
    basis, = ctx.saved_tensors
    grad_weight = contract_filters(grad_filters, basis, ctx.num_rotations, ctx.support,
                                   ctx.weight_shape)
    return grad_weight.to(ctx.weight_dtype), None, None, None


expand_filters.register_autograd(_expand_backward, setup_context=_expand_setup)


def _geometry(x_shape, out_channels, kernel_size, num_rotations, rotation_size, scale_size,
              stride, padding, support):
    return geometry(x_shape, out_channels, kernel_size, num_rotations, rotation_size, scale_size,
                    stride, padding, len(support))


def _problem(x, out_channels, kernel_size, num_rotations, rotation_size, scale_size, stride,
             padding, support):
    """Geometry of the convolution of ``x`` and the layout of its filter buffer."""
    geo = _geometry(x.shape, out_channels, kernel_size, num_rotations, rotation_size, scale_size,
                    stride, padding, support)
    layout = filter_layout(tuple(support), geo.num_offsets, num_rotations, geo.in_channels,
                           out_channels, x.device)
    return geo, layout


@torch.library.custom_op("rstfast_triton::rs_conv", mutates_args=())
def rs_conv(x: Tensor, filters: Tensor, bias: Optional[Tensor], out_channels: int,
            kernel_size: int, num_rotations: int, rotation_size: int, scale_size: int,
            stride: int, padding: int, support: List[int]) -> Tensor:
    """x ``[B, C, H, W]`` (lifting; then ``rotation_size = scale_size = 1``) or ``[B, C, T, H, W]``,
    filter buffer -> y ``[B, O, T, H', W']`` in x's dtype."""
    geo, layout = _problem(x, out_channels, kernel_size, num_rotations, rotation_size, scale_size,
                           stride, padding, support)
    return conv_forward(x, filters, bias, geo, layout)


@rs_conv.register_fake
def _(x, filters, bias, out_channels, kernel_size, num_rotations, rotation_size, scale_size,
      stride, padding, support):
    geo = _geometry(x.shape, out_channels, kernel_size, num_rotations, rotation_size, scale_size,
                    stride, padding, support)
    return x.new_empty(geo.out_shape())


@torch.library.custom_op("rstfast_triton::rs_conv_backward", mutates_args=())
def rs_conv_backward(grad_y: Tensor, x: Tensor, filters: Tensor, out_channels: int,
                     kernel_size: int, num_rotations: int, rotation_size: int, scale_size: int,
                     stride: int, padding: int, support: List[int], need_input: bool,
                     need_filters: bool) -> Tuple[Tensor, Tensor]:
    """(grad_x, float32 grad of the filter buffer); an empty tensor for a gradient not needed."""
    geo, layout = _problem(x, out_channels, kernel_size, num_rotations, rotation_size, scale_size,
                           stride, padding, support)
    grad_y = grad_y.to(x.dtype)
    grad_x = (conv_backward_input(grad_y, filters, x.shape, x.dtype, geo, layout)
              if need_input else x.new_empty(0))
    grad_filters = (conv_backward_filters(grad_y, x, geo, layout)
                    if need_filters else filters.new_empty(0))
    return grad_x, grad_filters


@rs_conv_backward.register_fake
def _(grad_y, x, filters, out_channels, kernel_size, num_rotations, rotation_size, scale_size,
      stride, padding, support, need_input, need_filters):
    return (x.new_empty(x.shape if need_input else (0,)),
            filters.new_empty(filters.shape if need_filters else (0,)))


_CONV_PARAMS = ("out_channels", "kernel_size", "num_rotations", "rotation_size", "scale_size",
                "stride", "padding", "support")


def _conv_setup(ctx, inputs, output):
    x, filters, bias = inputs[:3]
    ctx.save_for_backward(x, filters)
    ctx.params = inputs[3:]
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _conv_backward(ctx, grad_y):
    x, filters = ctx.saved_tensors
    need_input, need_filters, need_bias = ctx.needs_input_grad[:3]
    grad_x, grad_filters = rs_conv_backward(grad_y, x, filters, *ctx.params, need_input,
                                            need_filters)
    grad_bias = (grad_y.sum(dim=(0, 2, 3, 4), dtype=torch.float32).to(ctx.bias_dtype)
                 if need_bias else None)
    return ((grad_x if need_input else None), (grad_filters if need_filters else None),
            grad_bias) + (None,) * len(_CONV_PARAMS)


rs_conv.register_autograd(_conv_backward, setup_context=_conv_setup)


_cache: "collections.OrderedDict[int, tuple]" = collections.OrderedDict()


def cached_filters(weight: Tensor, basis: Tensor, num_rotations: int,
                   support: List[int]) -> Tensor:
    """``expand_filters`` of weight ``[O, C, F]`` (lifting) or ``[O, C, A, F]``, reusing the last
    buffer of this ``weight`` when no gradient is needed (eval / inference) and neither ``weight``
    nor ``basis`` changed since (version counters)."""
    coeffs = weight.unsqueeze(2) if weight.dim() == 3 else weight
    if (torch.is_grad_enabled() and weight.requires_grad) or torch.compiler.is_compiling():
        return expand_filters(coeffs, basis, num_rotations, support)
    key = id(weight)
    stamp = (weight._version, id(basis), basis._version, num_rotations, tuple(support),
             tuple(weight.shape))
    entry = _cache.get(key)
    if entry is not None and entry[0]() is weight and entry[1] == stamp:
        _cache.move_to_end(key)
        return entry[2]
    for dead in [k for k, (ref, _, _) in _cache.items() if ref() is None]:
        del _cache[dead]
    filters = expand_filters(coeffs, basis, num_rotations, support)
    _cache[key] = (weakref.ref(weight), stamp, filters)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return filters
