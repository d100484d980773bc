"""SS-CNN baseline: scale-steerable filters (Ghosh & Gupta 2019), as the original's mnist_ss.py
and impl/scale_steerable.py.

Each layer owns a fixed bank of log-radial harmonics ``[3 (k), M, M, 9 (phi)]`` (real and
imaginary part; frequencies ``k in [0.5, 1, 2]``, 9 orientations in ``[0, pi]``, angular width
pi/16, phase -pi/4, M the largest kernel size) and trainable complex coefficients. For every
kernel size ``n`` of ``ker_size_range`` the coefficients are steered to scale ``s = n / 11``
(multiplied by ``exp(-i k_eff log s)``), the centre ``n x n`` of the bank is combined into a
real filter, and the input is convolved with it (padding ``n // 2``); the output is the ReLU of
the maximum over kernel sizes.

The original cannot run on numpy >= 1.24 / scipy >= 1.14 (``np.int``, ``scipy.arctan2``,
``scipy.ndimage.morphology``); this port computes the same numbers with ``int``,
``np.arctan2`` and the pixel distance ``sqrt(x**2 + y**2)`` (what ``distance_transform_bf``
returns for a single zero at the centre).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import POOL_SIZE, input_size_factories

__all__ = ["harmonic_filter", "SteerableBank", "ScaleConvSteering", "MNIST_SS", "FACTORIES"]

K_RANGE = (0.5, 1, 2)
PHI_RANGE = tuple(np.linspace(0, np.pi, 9))
SIGMA_PHI = np.pi / 16
PHASE = -np.pi / 4
REFERENCE_SIZE = 11          # kernel_size of every layer: scale of size n is n / 11


def harmonic_filter(size: int, phi0: float, sigma: float, k: float, phase: float):
    """One log-radial harmonic on a ``size x size`` grid -> ``(real, imag, k_eff)`` (float64).

    ``r`` = distance to the centre (1 at the centre), zero outside radius ``(size-1)//2``;
    angular window ``exp(-d(phi, phi0 mod pi)**2 / (2 sigma**2)) / r``; radial phase
    ``k_eff * log r + phase`` with ``k_eff = 2 pi k / log(max r)``.
    """
    centre = (size - 1) / 2
    rows = centre - np.arange(size, dtype=np.float64)           # x: +up
    cols = np.arange(size, dtype=np.float64) - centre           # y: +right
    x = np.repeat(rows[:, None], size, axis=1)
    y = np.repeat(cols[None, :], size, axis=0)
    half = int(centre)
    dist = np.sqrt(x ** 2 + y ** 2)
    mask = (dist <= half).astype(np.float64)
    dist[half, half] = 1.0
    log_r = np.log(dist)
    phi = np.arctan2(y, x)
    d1 = np.abs(np.minimum(np.abs(phi - phi0), np.abs(phi + 2 * np.pi - phi0)))
    d2 = np.abs(np.minimum(np.abs(phi - phi0 - np.pi), np.abs(phi + 2 * np.pi - phi0 - np.pi)))
    window = np.exp(-np.power(np.minimum(d2, d1), 2.0) / (2 * sigma * sigma)) * (1.0 / dist)
    k_eff = 2 * np.pi * k / np.log(np.max(dist))
    real = window * np.cos(k_eff * log_r + phase) * mask
    imag = window * np.sin(k_eff * log_r + phase) * mask
    return real, imag, k_eff


class SteerableBank(nn.Module):
    """Fixed filter bank and trainable coefficients of one layer (the original's
    ``steerable_conv``); calling it returns one ``[O, C, n, n]`` filter per kernel size ``n``.

    ``k_range``: radial frequencies (``Nk`` of them); ``reference_size``: the kernel size of
    scale 1 (size ``n`` is steered to ``n / reference_size``).
    Parameters as the original (names, shapes, order): ``mult_real``, ``mult_imag``
    ``[Nk, O, C, 9]``; ``filter_real``, ``filter_imag`` ``[Nk, M, M, 9]``
    (``requires_grad=False``); ``const_real`` ``[O, C]`` (trainable, unused, as in the original).
    """

    def __init__(self, in_channels: int, out_channels: int, ker_size_range,
                 k_range=K_RANGE, reference_size: int = REFERENCE_SIZE):
        super().__init__()
        self.ker_size_range = [int(n) for n in ker_size_range]
        self.scale_range = [n / reference_size for n in self.ker_size_range]
        self.max_size = self.ker_size_range[-1]
        num_funcs = len(PHI_RANGE)
        shape = (len(k_range), out_channels, in_channels, num_funcs)
        self.mult_real = nn.Parameter(torch.empty(shape))
        self.mult_imag = nn.Parameter(torch.empty(shape))
        bank_shape = (len(k_range), self.max_size, self.max_size, num_funcs)
        self.filter_real = nn.Parameter(torch.zeros(bank_shape), requires_grad=False)
        self.filter_imag = nn.Parameter(torch.zeros(bank_shape), requires_grad=False)
        self.const_real = nn.Parameter(torch.empty(out_channels, in_channels))
        self.effective_k = np.zeros(len(k_range))
        init_var = torch.zeros(len(k_range), num_funcs)         # He-like variance per function
        with torch.no_grad():
            for i, k in enumerate(k_range):
                for f, phi0 in enumerate(PHI_RANGE):
                    real, imag, self.effective_k[i] = harmonic_filter(self.max_size, phi0,
                                                                      SIGMA_PHI, k, PHASE)
                    real = real / np.linalg.norm(real)
                    imag = imag / np.linalg.norm(imag)
                    init_var[i, f] = 2 / (num_funcs * in_channels * out_channels
                                          * torch.pow(torch.norm(torch.from_numpy(real)), 2.0))
                    self.filter_real[i, :, :, f] = torch.from_numpy(real)
                    self.filter_imag[i, :, :, f] = torch.from_numpy(imag)
            self.const_real.uniform_(-0.00001, 0.00001)
            for f in range(num_funcs):
                for i in range(len(k_range)):
                    bound = torch.sqrt(init_var[i, f])
                    self.mult_real[i, :, :, f].uniform_(-bound, bound)
                    self.mult_imag[i, :, :, f].uniform_(-bound, bound)

    def forward(self):
        centre = (self.max_size - 1) // 2
        filters = []
        for size, scale in zip(self.ker_size_range, self.scale_range):
            crop = slice(centre - (size - 1) // 2, centre + (size - 1) // 2 + 1)
            real_parts, imag_parts = [], []
            for i, k_eff in enumerate(self.effective_k):
                angle = -k_eff * np.log(scale)
                cos, sin = np.cos(angle), np.sin(angle)
                real = self.mult_real[i] * cos - self.mult_imag[i] * sin
                imag = self.mult_real[i] * sin + self.mult_imag[i] * cos
                real_parts.append(torch.einsum("ijk,abk->ijab", real,
                                               self.filter_real[i, crop, crop, :]))
                imag_parts.append(torch.einsum("ijk,abk->ijab", imag,
                                               self.filter_imag[i, crop, crop, :]))
            filters.append(torch.stack(real_parts).sum(0) - torch.stack(imag_parts).sum(0))
        return filters


class ScaleConvSteering(nn.Module):
    """``[B, C, H, W] -> [B, O, H', W']``: max over the steered filters (padding ``n // 2``,
    stride ``stride``), then ReLU if ``relu``. ``k_range``, ``reference_size``: see
    :class:`SteerableBank`."""

    def __init__(self, in_channels: int, out_channels: int, ker_size_range, k_range=K_RANGE,
                 reference_size: int = REFERENCE_SIZE, stride: int = 1, relu: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.relu = stride, relu
        self.steer_conv = SteerableBank(in_channels, out_channels, ker_size_range, k_range,
                                        reference_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [F.conv2d(x, weight, stride=self.stride,
                            padding=(weight.shape[-1] - 1) // 2).unsqueeze(-1)
                   for weight in self.steer_conv()]
        strength = torch.cat(outputs, -1).max(-1)[0]
        return F.relu(strength) if self.relu else strength


class MNIST_SS(nn.Module):
    """Channels 30/60/90; ``bn3`` exists (state dict) but is unused, ``bn3_mag`` normalises after
    the last pool; head of 1x1 convolutions 360 -> 256 -> 10. 493,688 trainable parameters."""

    def __init__(self, pool_size: int = 4, ker_size_range=tuple(range(7, 19, 2))):
        super().__init__()
        channels = (30, 60, 90)
        self.conv1 = ScaleConvSteering(1, channels[0], ker_size_range)
        self.conv2 = ScaleConvSteering(channels[0], channels[1], ker_size_range)
        self.conv3 = ScaleConvSteering(channels[1], channels[2], ker_size_range)
        self.pool1 = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.pool2 = nn.MaxPool2d(2)
        self.bn2 = nn.BatchNorm2d(channels[1])
        self.pool3 = nn.MaxPool2d(pool_size, padding=2)
        self.bn3 = nn.BatchNorm2d(channels[2])
        self.bn3_mag = nn.BatchNorm2d(channels[2])
        self.fc1 = nn.Conv2d(channels[2] * 4, 256, 1)
        self.fc1bn = nn.BatchNorm2d(256)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Conv2d(256, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.pool1(self.conv1(x)))
        x = self.bn2(self.pool2(self.conv2(x)))
        x = self.bn3_mag(self.pool3(self.conv3(x)))
        x = self.fc1(x.reshape(x.shape[0], -1, 1, 1))
        x = self.fc2(self.dropout(self.relu(self.fc1bn(x))))
        return x.view(x.size(0), -1)


# Kernel sizes 5..13 at 28x28, 7..17 at 56x56.
_KERNEL_SIZES = {28: range(5, 15, 2), 56: range(7, 19, 2)}
FACTORIES = input_size_factories(
    "mnist_ss",
    lambda size: MNIST_SS(pool_size=POOL_SIZE[size], ker_size_range=_KERNEL_SIZES[size]),
    "SS-CNN", __name__)
globals().update(FACTORIES)
__all__ += list(FACTORIES)
