"""SEVF baseline: scale-equivariant vector fields (Marcos et al., 2018), as the original's
mnist_sevf.py and impl/se_vector_fields.py.

A scale convolution resizes the input (bilinear) by each of 8 scales ``1.26**k``, ``k = -4..3``,
convolves with one shared 7x7 filter, resizes back, and keeps the maximum over scales. The
output is a vector field: magnitude ``relu(max)`` and angle ``k_argmax * (2*pi/3) / 7``
(``(u, v) = magnitude * (cos, sin)``). The "scalar" model keeps only the magnitude
``sqrt(u**2 + v**2)`` after every layer.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import POOL_SIZE, input_size_factories

__all__ = ["ScaleConvScalar", "ScaleConvVector", "VectorBatchNorm", "VectorMaxPool",
           "vector_magnitude", "MNIST_SEVF_Scalar", "MNIST_SEVF_Vector", "FACTORIES"]


def vector_magnitude(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(u**2 + v**2) ** 0.5`` — the vector field's magnitude."""
    return (u ** 2 + v ** 2) ** 0.5


def scaled_conv(x: torch.Tensor, weight: torch.Tensor, scale: float, padding: int,
                stride: int) -> torch.Tensor:
    """Resize ``x`` ``[B, C, H, W]`` to ``round(W*scale)`` (bilinear), convolve, resize the result
    to ``(W + 1 + 2*padding - K) // stride`` (square maps, as the original)."""
    size = x.shape[-1]
    out_size = (size + 1 + padding * 2 - weight.shape[-1]) // stride
    x = F.interpolate(x, size=int(round(size * scale)), mode='bilinear', align_corners=False)
    x = F.conv2d(x, weight, stride=stride, padding=padding)
    return F.interpolate(x, size=out_size, mode='bilinear', align_corners=False)


class _ScaleConv(nn.Module):
    """Scales ``base**k`` and angles ``k * angle_range / (n - 1)`` for
    ``k = -(n_scales_small-1) .. n_scales_big``, ``n = n_scales_small + n_scales_big``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 n_scales_small=5, n_scales_big=3, angle_range=2 * math.pi / 3, base=1.26):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        num = n_scales_small + n_scales_big
        log_scales = np.linspace(-n_scales_small + 1, n_scales_big, num)
        self.scales = [float(s) for s in base ** log_scales]
        self.angles = log_scales * angle_range / (num - 1)          # float64, for the weights
        self.register_buffer("angle_table", torch.tensor(self.angles, dtype=torch.float32),
                             persistent=False)

    def _new_weight(self) -> nn.Parameter:
        weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels,
                                          self.kernel_size, self.kernel_size))
        nn.init.kaiming_uniform_(weight, a=5 ** 0.5)
        return weight

    def _vector_field(self, responses):
        """Max over the per-scale responses -> ``(relu(max)*cos(angle), relu(max)*sin(angle))``."""
        values, indices = torch.stack(responses, 2).max(2)
        angles = self.angle_table[indices]
        magnitude = F.relu(values)
        return magnitude * angles.cos(), magnitude * angles.sin()

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, scales={len(self.scales)}")


class ScaleConvScalar(_ScaleConv):
    """Scalar -> vector field: ``[B, C, H, W] -> (u, v)``, each ``[B, O, H', W']``.
    ``weight`` ``[O, C, K, K]`` (no bias)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, **kwargs)
        self.weight = self._new_weight()

    def forward(self, x: torch.Tensor):
        return self._vector_field([scaled_conv(x, self.weight, s, self.padding, self.stride)
                                   for s in self.scales])


class ScaleConvVector(_ScaleConv):
    """Vector -> vector field: ``(u, v) -> (u', v')``. The filter pair ``(weight_u, weight_v)``
    ``[O, C, K, K]`` each is rotated by the angle of each scale before use."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, **kwargs)
        self.weight_u = self._new_weight()
        self.weight_v = self._new_weight()

    def forward(self, u: torch.Tensor, v: torch.Tensor):
        responses = []
        for scale, angle in zip(self.scales, self.angles):
            cos, sin = np.cos(angle), np.sin(angle)
            weight_u = self.weight_u * cos + self.weight_v * sin
            weight_v = -self.weight_u * sin + self.weight_v * cos
            responses.append(scaled_conv(u, weight_u, scale, self.padding, self.stride)
                             + scaled_conv(v, weight_v, scale, self.padding, self.stride))
        return self._vector_field(responses)


class VectorBatchNorm(nn.Module):
    """Divide both components by ``sqrt(eps + var)`` of the magnitude (per channel, no centring).

    Training: batch variance (biased) and ``running_var <- (1-m)*running_var + m*var*n/(n-1)``.
    ``weight`` ``[1, C, 1, 1]`` exists as in the original (a trainable parameter) but is unused.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.5):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("running_var", torch.ones(1, num_features, 1, 1))

    def forward(self, u: torch.Tensor, v: torch.Tensor):
        if self.training:
            var = vector_magnitude(u, v).var(dim=(0, 2, 3), unbiased=False, keepdim=True)
            n = u.nelement() / u.size(1)
            with torch.no_grad():
                self.running_var *= 1 - self.momentum
                self.running_var += self.momentum * var * n / (n - 1)
        else:
            var = self.running_var
        # two separate square roots, as the original: the same gradients bit for bit
        return u / (self.eps + var).sqrt(), v / (self.eps + var).sqrt()


class VectorMaxPool(nn.Module):
    """Max-pool both components at the position of the largest magnitude in each window."""

    def __init__(self, kernel_size: int, stride=None, padding: int = 0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding

    def forward(self, u: torch.Tensor, v: torch.Tensor):
        b, c = u.shape[:2]
        _, index = F.max_pool2d_with_indices(vector_magnitude(u, v), self.kernel_size,
                                             self.stride, self.padding)
        flat = index.view(b, c, -1)
        u = torch.gather(u.reshape(b, c, -1), 2, flat).view_as(index)
        v = torch.gather(v.reshape(b, c, -1), 2, flat).view_as(index)
        return u, v


class _SEVFHead(nn.Module):
    """``fc1`` 1x1 conv -> ``fc1bn`` -> ReLU -> Dropout(0.7) -> ``fc2`` 1x1 conv -> ``[B, 10]``."""

    def _init_head(self, in_features: int):
        self.fc1 = nn.Conv2d(in_features, 256, 1)
        self.fc1bn = nn.BatchNorm2d(256)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Conv2d(256, 10, 1)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x.reshape(x.size(0), -1, 1, 1))
        x = self.dropout(self.relu(self.fc1bn(x)))
        return self.fc2(x).view(x.size(0), -1)


class MNIST_SEVF_Scalar(_SEVFHead):
    """Channels 32/63/95, magnitude after every scale conv, no BatchNorm after block 3.
    494,425 parameters."""

    def __init__(self, pool_size: int = 4):
        super().__init__()
        self.conv1 = ScaleConvScalar(1, 32, 7, padding=3)
        self.pool1 = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = ScaleConvScalar(32, 63, 7, padding=3)
        self.pool2 = nn.MaxPool2d(2)
        self.bn2 = nn.BatchNorm2d(63)
        self.conv3 = ScaleConvScalar(63, 95, 7, padding=3)
        self.pool3 = nn.MaxPool2d(pool_size, padding=2)
        self._init_head(95 * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.pool1(vector_magnitude(*self.conv1(x))))
        x = self.bn2(self.pool2(vector_magnitude(*self.conv2(x))))
        x = self.pool3(vector_magnitude(*self.conv3(x)))
        return self._head(x)


class MNIST_SEVF_Vector(_SEVFHead):
    """Vector fields throughout: channels 23/45/68, :class:`VectorMaxPool`,
    :class:`VectorBatchNorm`; magnitude before the head. 475,475 parameters."""

    def __init__(self, pool_size: int = 4):
        super().__init__()
        self.conv1 = ScaleConvScalar(1, 23, 7, padding=3)
        self.pool1 = VectorMaxPool(2)
        self.bn1 = VectorBatchNorm(23)
        self.conv2 = ScaleConvVector(23, 45, 7, padding=3)
        self.pool2 = VectorMaxPool(2)
        self.bn2 = VectorBatchNorm(45)
        self.conv3 = ScaleConvVector(45, 68, 7, padding=3)
        self.pool3 = VectorMaxPool(pool_size, padding=2)
        self._init_head(68 * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(*self.pool1(*self.conv1(x)))
        x = self.bn2(*self.pool2(*self.conv2(*x)))
        x = self.pool3(*self.conv3(*x))
        return self._head(vector_magnitude(*x))


FACTORIES = {
    **input_size_factories("mnist_sevf_scalar",
                           lambda size: MNIST_SEVF_Scalar(pool_size=POOL_SIZE[size]),
                           "SEVF scalar (the paper's SEVF: _56)", __name__),
    **input_size_factories("mnist_sevf_vector",
                           lambda size: MNIST_SEVF_Vector(pool_size=POOL_SIZE[size]),
                           "SEVF vector", __name__),
}
globals().update(FACTORIES)
__all__ += list(FACTORIES)
