"""STL-10 Wide ResNets of the original (stl_wrn.py, stl_ses.py and SESN's stl_kanazawa.py,
stl_xu.py, stl_dss.py, stl_ss.py): WRN-16-8, plain and with every convolution replaced by a
scale-equivariant or scale-invariant layer. Dropout 0.3, global average pooling.

* ``wrn_16_8``: 3x3 convolutions. 10,961,370 parameters.
* ``wrn_16_8_kanazawa``: :class:`~.scale_invariant.KanazawaConv2d` (3x3, scales [0.5, 1, 2]),
  plain 1x1 shortcuts. 10,961,370.
* ``wrn_16_8_xu``: :class:`~.scale_invariant.XuConv2d` (3x3, scales [0.67, 1, 1.5]; 1x1
  shortcuts shared by the 3 scale columns), BatchNorm over ``3*C`` channels; before the head the
  features are averaged, then max-pooled over the columns. 10,975,770.
* ``wrn_16_8_dss``: Bessel lifting to 4 scales (base 2, zero scale 0.5), then
  :class:`~.dss.DilatedScaleConv` (3x3; 1x1 shortcuts), BatchNorm3d, delta initialisation;
  channels 16/128/240/512. The first layer of blocks 1 and 2 mixes 2 neighbouring scales and
  drops one scale (4 -> 3 -> 2). Max over scales after the last BatchNorm. 10,939,482.
* ``wrn_16_8_ss``: :class:`~.ss.ScaleConvSteering` (frequency k = 1, no ReLU; kernel sizes
  3/5/7 in the first layer, 3 in the blocks, as the original whose ``NetworkBlock`` does not
  pass ``size_range`` on), plain 1x1 shortcuts; channels 11/88/176/352. 10,846,835 trainable.
* ``wrn_16_8_ses_{a,b,c}``: SES layers (basis 'A' by default, K = 7, effective size 3, 3 scales
  ``s0 * 1.41**i``; s0 = 0.9 for a/b, 1.1 for c), BatchNorm3d over the scale axis, 1x1
  shortcuts on every scale, max-projection before the last BatchNorm.
  b: the first layer of blocks 2 and 3 max-projects and re-lifts; c: the first layer of block 1
  mixes 2 neighbouring scales (``scale_size 2``).

Differences from the original, which cannot build the SES variants: there ``SESConv_H_H`` is
called without ``rotation_size`` (TypeError); here it is 1 (no rotations), which gives the
parameter counts of docs/models.md §5 (10,961,370 / 10,961,370 / 10,979,802). The original SS-CNN
crashes on current numpy/scipy; this one does not (see :mod:`.ss`). The original ignores
``num_classes`` (always 10); here it is honoured, default 10.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn import GroupConv, GroupConv1x1, GroupMaxProjection, LiftingConv
from .dss import BesselBlur, DilatedScaleConv
from .scale_invariant import KanazawaConv2d, XuConv2d
from .ss import ScaleConvSteering

__all__ = ["WideResNet", "BasicBlock", "wrn_16_8", "wrn_16_8_kanazawa", "wrn_16_8_xu",
           "wrn_16_8_dss", "wrn_16_8_ss", "wrn_16_8_ses_a", "wrn_16_8_ses_b", "wrn_16_8_ses_c",
           "FACTORIES"]


class _PlainLayers:
    """How a WRN builds its layers; this one: 3x3 ``nn.Conv2d`` on ``[B, C, H, W]`` maps.

    Subclasses replace the convolutions; they are called in registration order (stem, then per
    residual block ``conv(first)``, ``conv(second)``, ``shortcut``), so a layer kit may keep
    state (DSS: the number of scales left).
    """
    norm = nn.BatchNorm2d

    def lifting(self) -> nn.Module:
        """Applied to the image before the stem."""
        return nn.Identity()

    def stem(self, out_planes):
        return self.conv(3, out_planes, 1)

    def conv(self, in_planes, out_planes, stride, scale_size=1):
        return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)

    def shortcut(self, in_planes, out_planes, stride):
        return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def projection(self) -> nn.Module:
        """Applied before the last BatchNorm."""
        return nn.Identity()

    def head_norm(self, planes):
        """The last BatchNorm (after ``projection``)."""
        return self.norm(planes)

    def global_pool(self) -> nn.Module:
        """Normalised features -> ``[B, C]``."""
        return _GlobalPool()


class _KanazawaLayers(_PlainLayers):
    def __init__(self, scales: Sequence[float]):
        self.scales = list(scales)

    def conv(self, in_planes, out_planes, stride, scale_size=1):
        return KanazawaConv2d(in_planes, out_planes, 3, scales=self.scales, stride=stride,
                              padding=1, bias=False)


class _XuLayers(_PlainLayers):
    """Maps ``[B, S*C, H, W]`` (scale column ``s`` = channels ``s*C .. s*C+C-1``)."""

    def __init__(self, scales: Sequence[float]):
        self.scales = list(scales)

    def norm(self, planes):
        return nn.BatchNorm2d(planes * len(self.scales))

    def stem(self, out_planes):
        return XuConv2d(3, out_planes, 3, scales=self.scales, num_input_scales=1)

    def conv(self, in_planes, out_planes, stride, scale_size=1):
        return XuConv2d(in_planes, out_planes, 3, scales=self.scales, stride=stride,
                        num_input_scales=len(self.scales))

    def shortcut(self, in_planes, out_planes, stride):
        return XuConv2d(in_planes, out_planes, 1, scales=self.scales, stride=stride,
                        num_input_scales=len(self.scales))

    def global_pool(self):
        return _GlobalPool(num_columns=len(self.scales))


class _DSSLayers(_PlainLayers):
    """Maps ``[B, C, S, H, W]``; a ``scale_size`` 2 convolution leaves one scale fewer to the
    layers built after it."""
    norm = nn.BatchNorm3d

    def __init__(self, num_scales: int, base: int = 2, zero_scale: float = 0.5):
        self.num_scales, self.base, self.zero_scale = num_scales, base, zero_scale

    def lifting(self):
        return BesselBlur(3, base=self.base, zero_scale=self.zero_scale,
                          n_scales=self.num_scales)

    def conv(self, in_planes, out_planes, stride, scale_size=1):
        layer = DilatedScaleConv(in_planes, out_planes, 3, base=self.base,
                                 num_scales=self.num_scales, scale_kernel_size=scale_size,
                                 stride=stride)
        self.num_scales -= scale_size // 2
        return layer

    def shortcut(self, in_planes, out_planes, stride):
        return DilatedScaleConv(in_planes, out_planes, 1, base=self.base,
                                num_scales=self.num_scales, stride=stride)


class _SSLayers(_PlainLayers):
    """Scale-steerable 3x3 layers (frequency 1, reference size 3, no ReLU)."""

    def __init__(self, stem_sizes: Sequence[int]):
        self.stem_sizes = list(stem_sizes)

    def _steering(self, in_planes, out_planes, sizes, stride):
        return ScaleConvSteering(in_planes, out_planes, sizes, k_range=(1,), reference_size=3,
                                 stride=stride, relu=False)

    def stem(self, out_planes):
        return self._steering(3, out_planes, self.stem_sizes, 1)

    def conv(self, in_planes, out_planes, stride, scale_size=1):
        return self._steering(in_planes, out_planes, [3], stride)


class _SESLayers(_PlainLayers):
    """SES layers on ``[B, C, S, H, W]`` (no rotations)."""
    norm = nn.BatchNorm3d

    def __init__(self, scales: Sequence[float], basis_type: str, backend: str):
        self.scales = list(scales)
        self.common = dict(kernel_size=7, effective_size=3, padding=3, bias=False,
                           scales=self.scales, basis_type=basis_type, backend=backend)

    def lift(self, in_planes, out_planes, stride):
        return LiftingConv(in_planes, out_planes, stride=stride, **self.common)

    def stem(self, out_planes):
        return self.lift(3, out_planes, 1)

    def conv(self, in_planes, out_planes, stride, scale_size=1):
        return GroupConv(in_planes, out_planes, scale_size, 1, stride=stride, **self.common)

    def shortcut(self, in_planes, out_planes, stride):
        return GroupConv1x1(in_planes, out_planes, stride=stride, num_scales=len(self.scales),
                            bias=False)

    def projection(self):
        return GroupMaxProjection()

    def head_norm(self, planes):
        return nn.BatchNorm2d(planes)


class _GlobalPool(nn.Module):
    """``[B, C, H, W] -> [B, C]``: spatial mean; ``[B, C, S, H, W]``: max over ``S`` first.
    ``num_columns`` ``N > 1``: ``[B, N*C, H, W]`` -> mean, then max over the ``N`` columns."""

    def __init__(self, num_columns: int = 1):
        super().__init__()
        self.num_columns = num_columns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = x.max(2)[0]
        x = x.mean((2, 3))
        return x.view(x.size(0), self.num_columns, -1).max(1)[0]


class BasicBlock(nn.Module):
    """Pre-activation residual block: BN -> ReLU -> conv(stride) -> BN -> ReLU -> dropout ->
    conv, plus identity or a 1x1 ``convShortcut`` when the width changes. Layers from
    ``layers`` (default: plain); ``pool`` (SES): the first conv max-projects and re-lifts;
    ``scale_size``: scale-kernel size of the first conv."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float,
                 layers: _PlainLayers, pool: bool = False, scale_size: int = 1):
        super().__init__()
        self.bn1 = layers.norm(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        if pool:
            self.conv1 = nn.Sequential(GroupMaxProjection(),
                                       layers.lift(in_planes, out_planes, stride))
        else:
            self.conv1 = layers.conv(in_planes, out_planes, stride, scale_size)
        self.bn2 = layers.norm(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        # registration order = the original's (state_dict order, seeded initialisation order)
        self.conv2 = layers.conv(out_planes, out_planes, 1)
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (None if self.equalInOut
                             else layers.shortcut(in_planes, out_planes, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.equalInOut:
            out = self.relu1(self.bn1(x))
        else:
            x = self.relu1(self.bn1(x))
            out = x
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    """``num_layers`` blocks in ``layer``; the first changes width/stride (and pools or mixes
    ``scale_size`` scales when asked)."""

    def __init__(self, num_layers, in_planes, out_planes, stride, drop_rate, layers,
                 pool=False, scale_size=1):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                       drop_rate, layers, pool=pool and i == 0,
                       scale_size=scale_size if i == 0 else 1)
            for i in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: ``[B, 3, H, W] -> [B, num_classes]`` (any H, W: global average pooling).

    ``layers`` builds the convolutions, norms, lifting, projection and pooling (default: plain
    3x3). Widths ``[w0, w1*k, w2*k, w3*k]`` from ``base_widths``. ``pools`` / ``scale_sizes``:
    per network block, options of its first layer. ``bessel`` (the original DSS key) is the
    layers' lifting, ``nn.Identity`` except for DSS. Initialisation as the original: plain and
    Kanazawa/Xu convolutions ``N(0, 2/n)`` with ``n = K*K*out``; SES ``n = weight.numel() /
    in_channels``; DSS delta; SS its own; BatchNorm weight 1 and bias 0; Linear bias 0.
    """

    def __init__(self, depth: int, num_classes: int, widen_factor: int = 1,
                 drop_rate: float = 0.0, layers: Optional[_PlainLayers] = None,
                 base_widths: Sequence[int] = (16, 16, 32, 64),
                 pools: Sequence[bool] = (False, False, False),
                 scale_sizes: Sequence[int] = (1, 1, 1)):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth: expected 6*n + 4, got {depth}")
        layers = _PlainLayers() if layers is None else layers
        n = (depth - 4) // 6
        channels = [base_widths[0]] + [w * widen_factor for w in base_widths[1:]]
        self.bessel = layers.lifting()
        self.conv1 = layers.stem(channels[0])
        for i, stride in enumerate((1, 2, 2)):
            self.add_module(f"block{i + 1}", NetworkBlock(
                n, channels[i], channels[i + 1], stride, drop_rate, layers, pool=pools[i],
                scale_size=scale_sizes[i]))
        self.proj = layers.projection()
        self.bn1 = layers.head_norm(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = layers.global_pool()
        self.fc = nn.Linear(channels[3], num_classes)
        self.nChannels = channels[3]
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (LiftingConv, GroupConv, GroupConv1x1)):
                m.weight.data.normal_(0, math.sqrt(2. / (m.weight.nelement() / m.in_channels)))
            elif isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))
            elif isinstance(m, DilatedScaleConv):
                m.reset_parameters_delta()
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bessel(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(self.proj(out)))
        return self.fc(self.pool(out))


def _wrn_16_8(num_classes, layers=None, **options) -> nn.Module:
    return WideResNet(16, num_classes, widen_factor=8, drop_rate=0.3, layers=layers, **options)


def wrn_16_8(num_classes: int = 10, **ignored) -> nn.Module:
    """WRN-16-8, dropout 0.3; keywords other than ``num_classes`` are ignored."""
    return _wrn_16_8(num_classes)


def wrn_16_8_kanazawa(num_classes: int = 10, **ignored) -> nn.Module:
    """Kanazawa SI-ConvNet WRN-16-8, scales [0.5, 1, 2]."""
    return _wrn_16_8(num_classes, _KanazawaLayers([0.5, 1.0, 2.0]))


def wrn_16_8_xu(num_classes: int = 10, **ignored) -> nn.Module:
    """Xu SiCNN WRN-16-8, scales [0.67, 1, 1.5]."""
    return _wrn_16_8(num_classes, _XuLayers([0.67, 1.0, 1.5]))


def wrn_16_8_dss(num_classes: int = 10, **ignored) -> nn.Module:
    """Deep Scale-Spaces WRN-16-8: 4 scales, scale-kernel size 2 in blocks 1-2, delta init."""
    return _wrn_16_8(num_classes, _DSSLayers(num_scales=4), base_widths=(16, 16, 30, 64),
                     scale_sizes=(2, 2, 1))


def wrn_16_8_ss(num_classes: int = 10, **ignored) -> nn.Module:
    """SS-CNN WRN-16-8: channels 11/88/176/352, stem kernel sizes [3, 5, 7]."""
    return _wrn_16_8(num_classes, _SSLayers([3, 5, 7]), base_widths=(11, 11, 22, 44))


def _wrn_16_8_ses(num_classes, min_scale, basis, backend, **options) -> nn.Module:
    scales = [min_scale * 1.41 ** i for i in range(3)]
    return _wrn_16_8(num_classes, _SESLayers(scales, 'A' if basis is None else basis, backend),
                     **options)


def wrn_16_8_ses_a(num_classes: int = 10, basis: Optional[str] = None, backend: str = "auto",
                   **ignored) -> nn.Module:
    """SES WRN-16-8, scales ``0.9 * 1.41**i`` (basis None -> 'A')."""
    return _wrn_16_8_ses(num_classes, 0.9, basis, backend)


def wrn_16_8_ses_b(num_classes: int = 10, basis: Optional[str] = None, backend: str = "auto",
                   **ignored) -> nn.Module:
    """As ``ses_a``; blocks 2 and 3 start by max-projecting and re-lifting."""
    return _wrn_16_8_ses(num_classes, 0.9, basis, backend, pools=(False, True, True))


def wrn_16_8_ses_c(num_classes: int = 10, basis: Optional[str] = None, backend: str = "auto",
                   **ignored) -> nn.Module:
    """Scales ``1.1 * 1.41**i``; the first layer of block 1 mixes 2 neighbouring scales."""
    return _wrn_16_8_ses(num_classes, 1.1, basis, backend, scale_sizes=(2, 1, 1))


FACTORIES = {f.__name__: f for f in (wrn_16_8, wrn_16_8_kanazawa, wrn_16_8_xu, wrn_16_8_dss,
                                     wrn_16_8_ss, wrn_16_8_ses_a, wrn_16_8_ses_b,
                                     wrn_16_8_ses_c)}
