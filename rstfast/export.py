"""Turn a trained rstfast model into plain PyTorch: ``export(model)``.

Every rstfast layer is replaced by stock ``torch`` code; everything else (BatchNorm, Linear,
pooling, Upsample, ...) is kept as it is; the model's own ``forward`` is traced by ``torch.fx``.
The result is a ``torch.fx.GraphModule`` built only from ``torch`` classes, so neither it (pickled)
nor a ``torch.export`` / ONNX program of it needs rstfast to load.

Each layer's filters are stored **once, as coefficients and basis** — the weight ``[O, C, (A,) F]``
and the basis ``[F, T, K, K]`` (one tensor shared by every layer with an equal basis) — and expanded
in the graph (``weight @ basis``): a ``.pt2`` / ``.onnx`` file is about the size of the parameters
plus one basis per distinct basis, not of the dense ``[O*T, C*A, K, K]`` filters (232 MB for the
main job's model before, 4 MB now). ONNX Runtime folds the expansion into constants when it loads
the model; an eager ``torch`` call of the exported module recomputes it (a matmul per layer and
call; ``export(model, expand=True)`` stores the dense filters instead, for the fastest eager
inference).

Replacements (group maps ``[B, C, T, H, W]``, ``T = R*S``, ``t = r*S + s``):

* ``LiftingConv`` -> ``conv2d(pad(x), filters [O*T, C, K, K])`` (output channel ``o*T + t``, bias
  repeated over ``t``) -> ``Unflatten(1, (O, T))``.
* ``GroupConv`` (``A = Lr*Ls`` neighbourhood slots ``a = i*Ls + j``) -> ``Flatten(1, 2)``
  (channel ``c*T + t``) -> the fixed gather ``Conv2d(C*T, C*T*A, 1, groups=C)`` whose 0/1 weight
  copies input slice ``((r+i) mod R)*S + s+j`` to slot ``(t, a)`` (nothing where ``s+j >= S``:
  an exact copy, ``1*x + 0*y = x``) -> ``ChannelShuffle(C)`` (order ``(t, a, c)``) ->
  ``conv2d(pad(.), filters [T*O, A*C, K, K], groups=T)`` (one group per output slice ``t``) ->
  ``ChannelShuffle(T)`` (order ``(o, t)``) -> ``Unflatten(1, (O, T))``.
* ``pad``: ``F.pad`` with the layer's ``padding_mode`` on each slice, then a convolution with padding
  0 (``"zeros"``: the convolution's own padding).
* ``GroupConv1x1`` -> ``Conv3d(C, O, 1, stride=(1, st, st), bias=False)`` (the original never adds
  the bias).
* ``GroupMaxProjection`` -> ``AdaptiveMaxPool3d((1, None, None))`` -> ``Flatten(1, 2)`` (the max
  over the group axis, as ``amax(dim=2)``).

Outputs equal the model's up to float rounding (different summation order): 1e-5 relative in
float32, 1e-12 in float64 (``tests/test_export.py``). The exported module is meant for inference.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .nn import GroupConv, GroupConv1x1, GroupMaxProjection, LiftingConv
from .reference.functional import expand_filter

__all__ = ["export", "export_layer"]


def _parameter(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.detach().clone(), requires_grad=False)


class _BasisConv(nn.Module):
    """``conv2d(pad(x), filters(weight @ basis))``; traced into a ``torch.fx.GraphModule`` when
    built (:func:`_basis_conv`), so no rstfast class remains. ``order``: the permutation of the
    dense filter ``[O, C, (A,) T, K, K]`` before it is reshaped to the conv2d weight."""

    def __init__(self, layer, order: Tuple[int, ...], groups: int, bias: Optional[torch.Tensor],
                 expand: bool):
        super().__init__()
        geo = layer.geometry
        self.filter_shape = (*layer.weight.shape[:-1], geo.group_size, geo.kernel_size,
                             geo.kernel_size)
        self.order, self.groups = order, groups
        self.stride = geo.stride
        self.padding = (0 if geo.padding_mode != "zeros" else geo.padding)
        self.pad = (geo.padding,) * 4 if geo.padding_mode != "zeros" and geo.padding else None
        self.mode = geo.padding_mode
        if expand:
            self.filters = _parameter(self._dense(expand_filter(layer.weight, layer.basis)))
        else:
            self.weight = _parameter(layer.weight.reshape(-1, layer.num_funcs))
            self.register_buffer("basis", layer.basis.detach().reshape(layer.num_funcs, -1))
        self.bias = None if bias is None else _parameter(bias)

    def _dense(self, dense: torch.Tensor) -> torch.Tensor:
        weight = dense.permute(*self.order)
        return weight.reshape(weight.shape[0] * weight.shape[1], -1, *self.filter_shape[-2:])

    def forward(self, x):
        filters = (self.filters if hasattr(self, "filters")
                   else self._dense((self.weight @ self.basis).view(self.filter_shape)))
        if self.pad is not None:
            x = F.pad(x, self.pad, mode=self.mode)
        return F.conv2d(x, filters, self.bias, self.stride, self.padding, 1, self.groups)


def _basis_conv(*args) -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(_BasisConv(*args))


def _lifting(layer: LiftingConv, expand: bool) -> nn.Sequential:
    out_ch, t = layer.out_channels, layer.group_size
    bias = None if layer.bias is None else layer.bias.repeat_interleave(t)
    conv = _basis_conv(layer, (0, 2, 1, 3, 4), 1, bias, expand)   # [O, T, C, K, K]
    return nn.Sequential(OrderedDict(conv=conv, unflatten=nn.Unflatten(1, (out_ch, t))))


def _gather_weight(geo, like: torch.Tensor) -> torch.Tensor:
    """0/1 weight ``[C*T*A, T, 1, 1]`` of the gather: row ``(c, t, a)`` picks input slice
    ``geo.read_table[t][a]`` (the index map; all zero where it is -1)."""
    t_size, a_size = geo.group_size, geo.num_offsets
    pick = torch.zeros(t_size, a_size, t_size, dtype=like.dtype, device=like.device)
    for t, a, source in geo.reads:
        pick[t, a, source] = 1
    return pick.reshape(1, t_size * a_size, t_size).expand(geo.in_channels, -1, -1).reshape(
        geo.in_channels * t_size * a_size, t_size, 1, 1)


def _group(layer: GroupConv, expand: bool) -> nn.Sequential:
    out_ch, in_ch, a_size, _ = layer.weight.shape
    t = layer.group_size
    gather = nn.Conv2d(in_ch * t, in_ch * t * a_size, 1, groups=in_ch, bias=False)
    gather.weight = _parameter(_gather_weight(layer.geometry, layer.weight))
    bias = None if layer.bias is None else layer.bias.repeat(t)
    conv = _basis_conv(layer, (3, 0, 2, 1, 4, 5), t, bias, expand)   # [T, O, A, C, K, K]
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(1, 2), gather=gather, to_slices=nn.ChannelShuffle(in_ch), conv=conv,
        to_channels=nn.ChannelShuffle(t), unflatten=nn.Unflatten(1, (out_ch, t))))


def _group_1x1(layer: GroupConv1x1) -> nn.Conv3d:
    conv = nn.Conv3d(layer.in_channels, layer.out_channels, 1, stride=(1, *layer.stride), bias=False)
    conv.weight = _parameter(layer.weight.unsqueeze(2))
    return conv


def _max_projection(layer: GroupMaxProjection) -> nn.Sequential:
    return nn.Sequential(OrderedDict(max=nn.AdaptiveMaxPool3d((1, None, None)),
                                     squeeze=nn.Flatten(1, 2)))


_REPLACEMENTS = ((LiftingConv, _lifting), (GroupConv, _group),
                 (GroupConv1x1, lambda layer, expand: _group_1x1(layer)),
                 (GroupMaxProjection, lambda layer, expand: _max_projection(layer)))


def export_layer(layer: nn.Module, expand: bool = False) -> nn.Module:
    """The stock-``torch`` replacement of one rstfast layer (see the module docstring), with the
    layer's dtype, device and training mode; ``layer`` itself when it is not an rstfast layer.
    ``expand``: store the dense filters instead of coefficients and basis."""
    for kind, build in _REPLACEMENTS:
        if isinstance(layer, kind):
            with torch.no_grad():
                return build(layer, expand).train(layer.training)
    return layer


def _replace_children(module: nn.Module, expand: bool) -> None:
    for name, child in module.named_children():
        replacement = export_layer(child, expand)
        if replacement is child:
            _replace_children(child, expand)
        else:
            setattr(module, name, replacement)


def _share_bases(module: nn.Module) -> None:
    """One basis tensor for all layers whose bases are equal (stored once in saved files)."""
    kept: List[torch.Tensor] = []
    for owner in module.modules():
        basis = owner._buffers.get("basis") if isinstance(owner, torch.fx.GraphModule) else None
        if basis is None:
            continue
        same = next((k for k in kept if k.shape == basis.shape and k.dtype == basis.dtype
                     and k.device == basis.device and torch.equal(k, basis)), None)
        if same is None:
            kept.append(basis)
        else:
            owner._buffers["basis"] = same


def export(model: nn.Module, expand: bool = False) -> torch.fx.GraphModule:
    """A plain-PyTorch copy of ``model`` (``model`` is not changed); see the module docstring.

    Returns a ``torch.fx.GraphModule`` (same inputs and outputs, same training mode) whose
    submodules are all ``torch`` classes; ready for ``torch.export.export``, ``torch.save`` and
    ``torch.onnx.export``. ``expand``: store each layer's dense filters (larger files, no
    expansion per call) instead of its coefficients and basis. rstfast Python code called by ``forward`` is traced into torch ops;
    raises ValueError when ``model.forward`` cannot be traced by ``torch.fx`` (data-dependent
    control flow) or the graph would call an rstfast op (e.g. ``torch.ops.rstfast.*`` of the
    C++ backend).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    plain = export_layer(model, expand)
    if plain is model:
        plain = copy.deepcopy(model)
        _replace_children(plain, expand)
    _share_bases(plain)
    try:
        graph = torch.fx.symbolic_trace(plain)
    except Exception as exc:                    # fx raises many types for untraceable code
        raise ValueError(f"model: torch.fx cannot trace {type(model).__name__}.forward: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    graph.train(model.training)
    for node in graph.graph.nodes:
        node.type = None         # annotations that are strings (PEP 563) break pickling
    graph.recompile()
    for node in graph.graph.nodes:
        target = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', node.target)}"
        if node.op == "call_function" and "rstfast" in target:
            raise ValueError(f"model: {type(model).__name__}.forward calls {target}, which the "
                             f"traced graph would keep; only rstfast layers (modules) are exported")
    left = sorted({type(m).__module__ + "." + type(m).__name__ for m in graph.modules()
                   if not type(m).__module__.startswith("torch.")})
    if left:
        raise ValueError(f"model: after export these submodules are not torch classes: {left}")
    return graph
