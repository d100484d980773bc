"""Scale-invariant convolution baselines of the original (mnist_kanazawa.py, mnist_xu.py,
impl/scale_modules.py):

* Kanazawa et al. 2014, "Locally scale-invariant CNNs": rescale the input by each scale, apply
  one shared convolution, rescale back, max over scales.
* Xu et al. 2014, "Scale-invariant CNN": one filter rescaled to each scale (L1 norm preserved),
  one column per scale (grouped convolution), max over the scale columns before the head.

Both use the 7 scales ``[0.3, 0.45, 0.67, 1.0, 1.49, 2.23, 3.33]``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import CHANNELS, POOL_SIZE, classifier_head, conv_blocks, input_size_factories

__all__ = ["rescale_keep_size", "KanazawaConv2d", "XuConv2d", "MNIST_Kanazawa", "MNIST_XU_Pool",
           "SCALES", "FACTORIES"]

SCALES = (0.3, 0.45, 0.67, 1.0, 1.49, 2.23, 3.33)


def rescale_keep_size(x: torch.Tensor, scale: float, mode: str = 'bilinear') -> torch.Tensor:
    """Resize ``[N, C, H, W]`` by ``scale`` (``F.interpolate(scale_factor=...)``, align_corners
    True except for 'nearest'), then centre zero-pad (or crop) back to ``H x W``."""
    if scale == 1:
        return x
    align_corners = None if mode == 'nearest' else True
    y = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=align_corners)
    h, w = x.shape[-2:]
    dh, dw = h - y.shape[-2], w - y.shape[-1]
    return F.pad(y, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


class KanazawaConv2d(nn.Conv2d):
    """``nn.Conv2d`` applied to the input rescaled by every scale; responses rescaled back by
    ``1/scale`` and max-pooled over scales. ``[B, C, H, W] -> [B, O, H', W']``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 scales: Sequence[float] = (1,), stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self.scales = [float(s) for s in scales]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stack = torch.cat([rescale_keep_size(x, s) for s in self.scales], 0)  # [S*B, C, H, W]
        y = super().forward(stack)
        y = y.view(len(self.scales), x.size(0), *y.shape[1:]).unbind(0)
        y = torch.stack([rescale_keep_size(part, 1 / s) for part, s in zip(y, self.scales)], 0)
        return y.max(0)[0]


class XuConv2d(nn.Conv2d):
    """One ``K x K`` filter bank rescaled to every scale (zero-padded to ``int(K*max(scales))``
    first; 'nearest' to enlarge, 'bilinear' to shrink; each filter's L1 norm kept). ``K = 1``:
    the same 1x1 filters on every scale, padding 0.

    ``[B, G*C, H, W] -> [B, S*O, H', W']`` with output channel ``s*O + o``; ``G`` =
    ``num_input_scales`` (1 for the first layer, else ``S``: scale column ``s`` reads input
    channels ``s*C .. s*C+C-1``, a grouped convolution). Padding ``int(K*max(scales)) // 2``,
    no bias. ``weight`` ``[O, C, K, K]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 scales: Sequence[float] = (1,), stride: int = 1, num_input_scales: int = 1):
        if kernel_size == 2 or kernel_size < 1:
            raise ValueError(f"kernel_size: expected 1 or an int >= 3 (the filter is rescaled), "
                             f"got {kernel_size}")
        if num_input_scales not in (1, len(scales)):
            raise ValueError(f"num_input_scales: expected 1 or len(scales) = {len(scales)}, "
                             f"got {num_input_scales}")
        padding = int(kernel_size * max(scales)) // 2 if kernel_size > 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=False)
        self.scales = [float(s) for s in scales]
        self.num_input_scales = num_input_scales

    def rescaled_kernels(self) -> torch.Tensor:
        """``[S*O, C, K', K']`` filters, scale-major."""
        k = self.kernel_size[0]
        if k == 1:
            return self.weight.repeat(len(self.scales), 1, 1, 1)
        pad = math.ceil((int(k * max(self.scales)) - k) / 2)
        kernel = F.pad(self.weight, (pad, pad, pad, pad))
        norm = torch.linalg.vector_norm(kernel, ord=1, dim=(2, 3), keepdim=True)
        stack = []
        for scale in self.scales:
            rescaled = rescale_keep_size(kernel, scale, 'nearest' if scale > 1 else 'bilinear')
            rescaled_norm = torch.linalg.vector_norm(rescaled, ord=1, dim=(2, 3), keepdim=True)
            stack.append(rescaled * norm / rescaled_norm)
        return torch.cat(stack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.rescaled_kernels(), stride=self.stride, padding=self.padding,
                        groups=self.num_input_scales)


class MNIST_Kanazawa(nn.Module):
    """CNN skeleton with :class:`KanazawaConv2d` (7x7, padding 3, bias). 494,549 parameters."""

    def __init__(self, pool_size: int = 4, scales: Sequence[float] = SCALES):
        super().__init__()
        c1, c2, c3 = CHANNELS
        convs = [KanazawaConv2d(1, c1, 7, scales=scales, padding=3),
                 KanazawaConv2d(c1, c2, 7, scales=scales, padding=3),
                 KanazawaConv2d(c2, c3, 7, scales=scales, padding=3)]
        self.main = conv_blocks(convs, CHANNELS, pool_size)
        self.linear = classifier_head(4 * c3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.main(x)
        return self.linear(x.reshape(x.size(0), -1))


class MNIST_XU_Pool(nn.Module):
    """CNN skeleton with :class:`XuConv2d` (one column per scale, BatchNorm over ``C*S``
    channels); max over the scale columns before the head. 496,639 parameters."""

    def __init__(self, pool_size: int = 4, scales: Sequence[float] = SCALES):
        super().__init__()
        c1, c2, c3 = CHANNELS
        self.num_scales = len(scales)
        convs = [XuConv2d(1, c1, 7, scales=scales, num_input_scales=1),
                 XuConv2d(c1, c2, 7, scales=scales, num_input_scales=self.num_scales),
                 XuConv2d(c2, c3, 7, scales=scales, num_input_scales=self.num_scales)]
        self.main = conv_blocks(convs, [c * self.num_scales for c in CHANNELS], pool_size)
        self.linear = classifier_head(4 * c3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.main(x)
        b, c, h, w = x.shape
        x = x.view(b, self.num_scales, c // self.num_scales, h, w).max(1)[0]
        return self.linear(x.reshape(b, -1))


FACTORIES = {
    **input_size_factories("mnist_kanazawa",
                           lambda size: MNIST_Kanazawa(pool_size=POOL_SIZE[size]),
                           "Kanazawa SI-ConvNet", __name__),
    **input_size_factories("mnist_xu", lambda size: MNIST_XU_Pool(pool_size=POOL_SIZE[size]),
                           "Xu SiCNN", __name__),
}
globals().update(FACTORIES)
__all__ += list(FACTORIES)
