"""Deep Scale-Spaces baseline (Worrall & Welling 2019), as the original's mnist_dss.py and
impl/deep_scale_space.py, with the configuration every factory uses: 2 scales (base 2,
zero scale 0.25), scale-kernel size 1, He initialisation, no bias.

* :class:`BesselBlur` (``BesselConv2d``): ``[B, C, H, W] -> [B, C, 2, H, W]``, slice 0 the input,
  slice 1 the input blurred by Lindeberg's discrete Gaussian ``exp(-t) I_x(t)``,
  ``t = 0.25**2 * (2**2 - 1)``, separable, ``4*ceil(sqrt(t))`` taps each side.
* :class:`DilatedScaleConv` (``Dconv2d``): ``[B, C, S, H, W] -> [B, O, S, H, W]``; output scale
  ``s`` convolves input scale ``s`` with dilation ``2**s`` (padding ``3 * 2**s``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.special import ive

from .common import CHANNELS, POOL_SIZE, classifier_head, input_size_factories

__all__ = ["BesselBlur", "DilatedScaleConv", "ScaleMaxProjection", "MNIST_DSS_Scalar",
           "MNIST_DSS_Vector", "FACTORIES"]

NUM_SCALES = 2
BASE = 2
ZERO_SCALE = 0.25


class BesselBlur(nn.Module):
    """Scale-space lifting by discrete-Gaussian blurs; buffers ``kernelx_d`` ``[C, C, 1, 2w+1]``
    and ``kernely_d`` ``[C, C, 2w+1, 1]`` (identity over channels) for blur ``d``."""

    def __init__(self, n_channels: int, base: float = BASE, zero_scale: float = ZERO_SCALE,
                 n_scales: int = NUM_SCALES):
        super().__init__()
        self.n_channels = n_channels
        dilations = np.power(base, np.arange(1, n_scales))
        self.scales = (zero_scale ** 2) * (dilations ** 2 - 1.)
        self.widths = [4 * int(np.ceil(np.sqrt(t))) for t in self.scales]
        eye = torch.eye(n_channels).view(n_channels, n_channels, 1, 1)
        for d, (t, width) in enumerate(zip(self.scales, self.widths)):
            taps = ive(np.abs(np.arange(-width, width + 1)), t)
            taps = torch.from_numpy(taps / np.sum(taps)).float()
            self.register_buffer(f"kernelx_{d}", taps.view(1, 1, 1, -1) * eye)
            self.register_buffer(f"kernely_{d}", taps.view(1, 1, -1, 1) * eye)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = []
        for d, width in enumerate(self.widths):
            y = F.conv2d(x, getattr(self, f"kernelx_{d}"), padding=(0, width))
            blurred.append(F.conv2d(y, getattr(self, f"kernely_{d}"), padding=(width, 0)))
        return torch.cat([x.unsqueeze(2), torch.stack(blurred, 2)], 2)

    def extra_repr(self) -> str:
        return f"n_channels={self.n_channels}, scales={list(self.scales)}"


class DilatedScaleConv(nn.Module):
    """Scale convolution: ``weights`` ``[O, C, L, K, K]`` (He init, ``N(0, 2/(K*K*L*C))``), ``L``
    = ``scale_kernel_size``. ``[B, C, S', H, W] -> [B, O, S, H', W']`` with ``S`` = ``num_scales``
    (``S' >= S``; extra input scales are ignored): output scale ``s`` convolves input scales
    ``s .. min(s+L, S)-1`` with ``weights[:, :, :L']``, dilation ``base**s``, padding
    ``base**s * (K//2)``, stride ``stride``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7,
                 base: int = BASE, num_scales: int = NUM_SCALES, scale_kernel_size: int = 1,
                 stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.scale_kernel_size = scale_kernel_size
        self.stride = stride
        self.dilations = [int(d) for d in np.power(base, np.arange(num_scales))]
        self.weights = nn.Parameter(torch.empty(out_channels, in_channels, scale_kernel_size,
                                                kernel_size, kernel_size))
        self.register_buffer("bias", None)
        n = kernel_size * kernel_size * scale_kernel_size * in_channels
        with torch.no_grad():
            self.weights.normal_(0, math.sqrt(2. / n))

    def reset_parameters_delta(self) -> None:
        """Yu & Koltun's identity ('delta') init: ``U(-0.01, 0.01)``, then the centre tap of every
        scale set to ``g/O`` (``g = gcd(C, O)``) where ``floor(c*g/C) == floor(o*g/O)``."""
        groups = math.gcd(self.in_channels, self.out_channels)
        out_group = torch.arange(self.out_channels) * groups // self.out_channels
        in_group = torch.arange(self.in_channels) * groups // self.in_channels
        centre = self.kernel_size // 2
        with torch.no_grad():
            self.weights.uniform_(-1e-2, 1e-2)
            connected = out_group[:, None] == in_group[None, :]
            self.weights[:, :, :, centre, centre][connected] = groups / self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        overlap = self.kernel_size // 2
        num_scales = len(self.dilations)
        outputs = []
        for s, d in enumerate(self.dilations):
            end = min(s + self.scale_kernel_size, num_scales)
            weight = self.weights[:, :, :end - s].flatten(1, 2)       # [O, C*L'], c*L' + l
            outputs.append(F.conv2d(x[:, :, s:end].flatten(1, 2), weight, stride=self.stride,
                                    padding=d * overlap, dilation=d))
        return torch.stack(outputs, 2)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, kernel_size={self.kernel_size}, "
                f"scale_kernel_size={self.scale_kernel_size}, stride={self.stride}, "
                f"dilations={self.dilations}")


class ScaleMaxProjection(nn.Module):
    """``[B, C, S, H, W] -> [B, C, H, W]``: max over scales."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.max(2)[0]


class MNIST_DSS_Scalar(nn.Module):
    """Each block re-lifts to the scale space and max-projects: ``main`` [0, 6, 12] blurs,
    [1, 7, 13] scale convs, [5, 11, 17] BatchNorm2d. 494,359 parameters."""

    def __init__(self, pool_size: int = 4):
        super().__init__()
        layers = []
        for i, (cin, cout) in enumerate(zip((1,) + CHANNELS[:2], CHANNELS)):
            pool = nn.MaxPool2d(pool_size, padding=2) if i == 2 else nn.MaxPool2d(2)
            layers += [BesselBlur(cin), DilatedScaleConv(cin, cout), ScaleMaxProjection(),
                       nn.ReLU(True), pool, nn.BatchNorm2d(cout)]
        self.main = nn.Sequential(*layers)
        self.linear = classifier_head(4 * CHANNELS[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.main(x)
        return self.linear(x.reshape(x.size(0), -1))


class MNIST_DSS_Vector(nn.Module):
    """One lift, then the scale axis is kept (MaxPool3d, BatchNorm3d) and max-projected before
    the head: ``main`` [0] blur, [1, 5, 9] scale convs, [4, 8, 12] BatchNorm3d. 494,359
    parameters."""

    def __init__(self, pool_size: int = 4):
        super().__init__()
        c1, c2, c3 = CHANNELS
        self.main = nn.Sequential(
            BesselBlur(1),
            DilatedScaleConv(1, c1), nn.ReLU(True), nn.MaxPool3d((1, 2, 2)), nn.BatchNorm3d(c1),
            DilatedScaleConv(c1, c2), nn.ReLU(True), nn.MaxPool3d((1, 2, 2)), nn.BatchNorm3d(c2),
            DilatedScaleConv(c2, c3), nn.ReLU(True),
            nn.MaxPool3d((1, pool_size, pool_size), padding=(0, 2, 2)), nn.BatchNorm3d(c3),
        )
        self.projection = ScaleMaxProjection()
        self.linear = classifier_head(4 * c3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection(self.main(x))
        return self.linear(x.reshape(x.size(0), -1))


FACTORIES = {
    **input_size_factories("mnist_dss_scalar",
                           lambda size: MNIST_DSS_Scalar(pool_size=POOL_SIZE[size]),
                           "DSS scalar", __name__),
    **input_size_factories("mnist_dss_vector",
                           lambda size: MNIST_DSS_Vector(pool_size=POOL_SIZE[size]),
                           "DSS vector", __name__),
}
globals().update(FACTORIES)
__all__ += list(FACTORIES)
