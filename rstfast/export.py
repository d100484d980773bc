"""Turn a trained rstfast model into plain PyTorch: ``export(model)``.

Every rstfast layer is replaced by stock ``torch.nn`` modules holding its expanded filters
(``Kf = weight @ basis``, computed once, in the layer's dtype); everything else (BatchNorm, Linear,
pooling, Upsample, ...) is kept as it is; the model's own ``forward`` is traced by ``torch.fx``.
The result is a ``torch.fx.GraphModule`` built only from ``torch`` classes, so neither it (pickled)
nor a ``torch.export`` program of it needs rstfast to load.

Replacements (group maps ``[B, C, T, H, W]``, ``T = R*S``, ``t = r*S + s``):

* ``LiftingConv`` -> ``Conv2d(C, O*T, K)`` (output channel ``o*T + t``, bias repeated over ``t``)
  -> ``Unflatten(1, (O, T))``.
* ``GroupConv`` (``A = Lr*Ls`` neighbourhood slots ``a = i*Ls + j``) -> ``Flatten(1, 2)``
  (channel ``c*T + t``) -> the fixed gather ``Conv2d(C*T, C*T*A, 1, groups=C)`` whose 0/1 weight
  copies input slice ``((r+i) mod R)*S + s+j`` to slot ``(t, a)`` (nothing where ``s+j >= S``:
  an exact copy, ``1*x + 0*y = x``) -> ``ChannelShuffle(C)`` (order ``(t, a, c)``) ->
  ``Conv2d(T*A*C, T*O, K, groups=T)`` (one group per output slice ``t``, the filters of slice
  ``t``) -> ``ChannelShuffle(T)`` (order ``(o, t)``) -> ``Unflatten(1, (O, T))``.
* ``GroupConv1x1`` -> ``Conv3d(C, O, 1, stride=(1, st, st), bias=False)`` (the original never adds
  the bias).
* ``GroupMaxProjection`` -> ``AdaptiveMaxPool3d((1, None, None))`` -> ``Flatten(1, 2)`` (the max
  over the group axis, as ``amax(dim=2)``).

Outputs equal the model's up to float rounding (different summation order): 1e-5 relative in
float32, 1e-12 in float64 (``tests/test_export.py``). The exported module is meant for inference:
the expanded filters are Parameters, but training them would lose the basis constraint.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.fx
import torch.nn as nn

from .nn import GroupConv, GroupConv1x1, GroupMaxProjection, LiftingConv
from .reference.functional import expand_filter

__all__ = ["export", "export_layer"]


def _parameter(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.detach().clone(), requires_grad=False)


def _lifting(layer: LiftingConv) -> nn.Sequential:
    out_ch, in_ch, _ = layer.weight.shape
    t, k = layer.group_size, layer.kernel_size
    conv = nn.Conv2d(in_ch, out_ch * t, k, stride=layer.stride, padding=layer.padding,
                     bias=layer.bias is not None)
    kernel = expand_filter(layer.weight, layer.basis)            # [O, C, T, K, K]
    conv.weight = _parameter(kernel.transpose(1, 2).reshape(out_ch * t, in_ch, k, k))
    if layer.bias is not None:
        conv.bias = _parameter(layer.bias.repeat_interleave(t))
    return nn.Sequential(OrderedDict(conv=conv, unflatten=nn.Unflatten(1, (out_ch, t))))


def _gather_weight(geo, like: torch.Tensor) -> torch.Tensor:
    """0/1 weight ``[C*T*A, T, 1, 1]`` of the gather: row ``(c, t, a)`` picks input slice
    ``geo.read_table[t][a]`` (the index map; all zero where it is -1)."""
    t_size, a_size = geo.group_size, geo.num_offsets
    pick = torch.zeros(t_size, a_size, t_size, dtype=like.dtype, device=like.device)
    for t, row in enumerate(geo.read_table):
        for a, source in enumerate(row):
            if source >= 0:
                pick[t, a, source] = 1
    return pick.reshape(1, t_size * a_size, t_size).expand(geo.in_channels, -1, -1).reshape(
        geo.in_channels * t_size * a_size, t_size, 1, 1)


def _group(layer: GroupConv) -> nn.Sequential:
    out_ch, in_ch, a_size, _ = layer.weight.shape
    t, k = layer.group_size, layer.kernel_size
    gather = nn.Conv2d(in_ch * t, in_ch * t * a_size, 1, groups=in_ch, bias=False)
    gather.weight = _parameter(_gather_weight(layer.geometry, layer.weight))
    conv = nn.Conv2d(t * a_size * in_ch, t * out_ch, k, stride=layer.stride,
                     padding=layer.padding, groups=t, bias=layer.bias is not None)
    kernel = expand_filter(layer.weight, layer.basis)            # [O, C, A, T, K, K]
    conv.weight = _parameter(kernel.permute(3, 0, 2, 1, 4, 5).reshape(t * out_ch, a_size * in_ch, k, k))
    if layer.bias is not None:
        conv.bias = _parameter(layer.bias.repeat(t))
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


_REPLACEMENTS = ((LiftingConv, _lifting), (GroupConv, _group), (GroupConv1x1, _group_1x1),
                 (GroupMaxProjection, _max_projection))


def export_layer(layer: nn.Module) -> nn.Module:
    """The stock-``torch.nn`` replacement of one rstfast layer (see the module docstring), with
    the layer's dtype, device and training mode; ``layer`` itself when it is not an rstfast
    layer."""
    for kind, build in _REPLACEMENTS:
        if isinstance(layer, kind):
            with torch.no_grad():
                return build(layer).train(layer.training)
    return layer


def _replace_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        replacement = export_layer(child)
        if replacement is child:
            _replace_children(child)
        else:
            setattr(module, name, replacement)


def export(model: nn.Module) -> torch.fx.GraphModule:
    """A plain-PyTorch copy of ``model`` (``model`` is not changed); see the module docstring.

    Returns a ``torch.fx.GraphModule`` (same inputs and outputs, same training mode) whose
    submodules are all ``torch`` classes; ready for ``torch.export.export``, ``torch.save`` and
    ``torch.onnx.export``. rstfast Python code called by ``forward`` is traced into torch ops;
    raises ValueError when ``model.forward`` cannot be traced by ``torch.fx`` (data-dependent
    control flow) or the graph would call an rstfast op (e.g. ``torch.ops.rstfast.*`` of the
    C++ backend).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    plain = export_layer(model)
    if plain is model:
        plain = copy.deepcopy(model)
        _replace_children(plain)
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
