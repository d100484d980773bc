"""STL-10 Wide ResNets of the original (stl_wrn.py, stl_ses.py): WRN-16-8, plain and with
scale-equivariant (SESN) layers.

* ``wrn_16_8``: 3x3 convolutions, dropout 0.3, global average pooling. 10,961,370 parameters.
* ``wrn_16_8_ses_{a,b,c}``: every convolution replaced by an SES layer (basis 'A' by default,
  K = 7, effective size 3, 3 scales ``s0 * 1.41**i``; s0 = 0.9 for a/b, 1.1 for c), BatchNorm3d
  over the scale axis, 1x1 shortcuts on every scale, max-projection before the head.
  b: the first layer of blocks 2 and 3 max-projects and re-lifts; c: the first layer of block 1
  mixes 2 neighbouring scales (``scale_size 2``).

Differences from the original, which cannot build the SES variants: there ``SESConv_H_H`` is
called without ``rotation_size`` (TypeError); here it is 1 (no rotations), which gives the
parameter counts of the spec (10,961,370 / 10,961,370 / 10,979,802). The original ignores
``num_classes`` (always 10); here it is honoured, default 10.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn import GroupConv, GroupConv1x1, GroupMaxProjection, LiftingConv

__all__ = ["WideResNet", "BasicBlock", "wrn_16_8", "wrn_16_8_ses_a", "wrn_16_8_ses_b",
           "wrn_16_8_ses_c", "FACTORIES"]


class _SESLayers:
    """How the SES network builds its layers (``None`` in place of this: the plain network)."""

    def __init__(self, scales: Sequence[float], basis_type: str, backend: str):
        self.scales = list(scales)
        self.common = dict(kernel_size=7, effective_size=3, padding=3, bias=False,
                           scales=self.scales, basis_type=basis_type, backend=backend)

    def lift(self, in_planes, out_planes, stride):
        return LiftingConv(in_planes, out_planes, stride=stride, **self.common)

    def group(self, in_planes, out_planes, stride, scale_size=1):
        return GroupConv(in_planes, out_planes, scale_size, 1, stride=stride, **self.common)


class BasicBlock(nn.Module):
    """Pre-activation residual block: BN -> ReLU -> conv(stride) -> BN -> ReLU -> dropout ->
    conv, plus identity or a 1x1 ``convShortcut`` when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float,
                 ses: Optional[_SESLayers] = None, pool: bool = False, interscale: bool = False):
        super().__init__()
        norm = nn.BatchNorm2d if ses is None else nn.BatchNorm3d
        self.bn1 = norm(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        if ses is None:
            self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        elif pool:
            self.conv1 = nn.Sequential(GroupMaxProjection(),
                                       ses.lift(in_planes, out_planes, stride))
        else:
            self.conv1 = ses.group(in_planes, out_planes, stride, 2 if interscale else 1)
        self.bn2 = norm(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        # registration order = the original's (state_dict order, seeded initialisation order)
        self.conv2 = (nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
                      if ses is None else ses.group(out_planes, out_planes, 1))
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None
        if not self.equalInOut:
            self.convShortcut = (
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False) if ses is None
                else GroupConv1x1(in_planes, out_planes, stride=stride,
                                  num_scales=len(ses.scales), bias=False))

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
    scales when asked)."""

    def __init__(self, num_layers, in_planes, out_planes, stride, drop_rate, ses=None,
                 pool=False, interscale=False):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                       drop_rate, ses, pool=pool and i == 0, interscale=interscale and i == 0)
            for i in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: ``[B, 3, H, W] -> [B, num_classes]`` (any H, W: global average pooling).

    With ``ses`` every convolution is an SES layer on ``[B, C, S, H, W]`` maps and ``proj``
    max-projects over scales before the head. Initialisation as the original: convolutions
    ``N(0, 2/n)`` (plain: ``n = K*K*out``; SES: ``n = weight.numel() / in_channels``), BatchNorm
    weight 1 and bias 0, Linear bias 0.
    """

    def __init__(self, depth: int, num_classes: int, widen_factor: int = 1,
                 drop_rate: float = 0.0, ses: Optional[_SESLayers] = None,
                 pools: Sequence[bool] = (False, False, False),
                 interscale: Sequence[bool] = (False, False, False)):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth: expected 6*n + 4, got {depth}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = (nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False) if ses is None
                      else ses.lift(3, channels[0], 1))
        for i, stride in enumerate((1, 2, 2)):
            self.add_module(f"block{i + 1}", NetworkBlock(
                n, channels[i], channels[i + 1], stride, drop_rate, ses, pool=pools[i],
                interscale=interscale[i]))
        self.proj = nn.Identity() if ses is None else GroupMaxProjection()
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
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
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(self.proj(out)))
        out = F.adaptive_avg_pool2d(out, 1).view(-1, self.nChannels)
        return self.fc(out)


def wrn_16_8(num_classes: int = 10, **ignored) -> nn.Module:
    """WRN-16-8, dropout 0.3; keywords other than ``num_classes`` are ignored."""
    return WideResNet(16, num_classes, widen_factor=8, drop_rate=0.3)


def _wrn_16_8_ses(num_classes, min_scale, basis, backend, **layout) -> nn.Module:
    scales = [min_scale * 1.41 ** i for i in range(3)]
    ses = _SESLayers(scales, 'A' if basis is None else basis, backend)
    return WideResNet(16, num_classes, widen_factor=8, drop_rate=0.3, ses=ses, **layout)


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
    return _wrn_16_8_ses(num_classes, 1.1, basis, backend, interscale=(True, False, False))


FACTORIES = {f.__name__: f for f in (wrn_16_8, wrn_16_8_ses_a, wrn_16_8_ses_b, wrn_16_8_ses_c)}
