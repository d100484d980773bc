"""RST-CNN models of the original code (files mnist_ses.py, mnist_res.py, sim2mnist_*.py).

* :class:`MNIST_SES_Scalar` — every layer lifts a plain 2-D map and max-projects over rotations
  and scales ("scalar", no inter-rotation).
* :class:`MNIST_SES_V` — one lifting layer, then group convolutions that keep the ``[B, C, R*S,
  H, W]`` axes and mix ``rotation_size`` neighbouring rotations ("vector", "interrot_L").

Factories (``mnist_{ses,res}_{scalar,vector}_{28,56,96}_rot_R[_interrot_L]``) are generated from
:data:`CONFIGS`; each accepts the original call style ``factory(**vars(args))``: ``basis`` (None ->
the factory's default, 'E' for ``mnist_ses_*``, 'D1' for ``mnist_res_*``) and ``backend`` are
read, every other keyword is ignored. ``mnist_res_*`` ("rotation-equivariant specified", RDCF)
use one scale ``[1.0]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..nn import GroupConv, GroupMaxProjection, LiftingConv
from .common import CHANNELS, DROPOUT, POOL_SIZE, classifier_head, for_input_size

__all__ = ["MNIST_SES_Scalar", "MNIST_SES_V", "SESConfig", "CONFIGS", "FACTORIES",
           "rotations_for", "scales_for"]

EFFECTIVE_SIZE = 7          # hard-coded in the original model classes (F = 49 for most bases)
MAX_ORDER = 4


class MNIST_SES_Scalar(nn.Module):
    """Three lifting layers, each followed by max-projection over all rotations and scales.

    ``[B, 1, H, W] -> [B, 10]``; ``main`` indices as the original: [0, 5, 10] convolutions,
    [1, 6, 11] projections, [4, 9, 14] BatchNorm2d; ``linear`` = :func:`classifier_head`.
    ``basis_kwargs`` (``mult``, ``max_order``, ``spt``) reach the basis builder.
    """

    def __init__(self, pool_size: int = 4, kernel_size: int = 11, scales: Sequence[float] = (1.0,),
                 rotations: Sequence[float] = (0.0,), basis_type: str = 'A',
                 channels: Sequence[int] = CHANNELS, dropout: float = DROPOUT,
                 backend: str = "auto", **basis_kwargs):
        super().__init__()
        c1, c2, c3 = channels

        def block(cin, cout, pool):
            conv = LiftingConv(cin, cout, kernel_size, EFFECTIVE_SIZE, scales=scales,
                               rotations=rotations, padding=kernel_size // 2, bias=True,
                               basis_type=basis_type, backend=backend, **basis_kwargs)
            return [conv, GroupMaxProjection(), nn.ReLU(True), pool, nn.BatchNorm2d(cout)]

        self.main = nn.Sequential(*block(1, c1, nn.MaxPool2d(2)),
                                  *block(c1, c2, nn.MaxPool2d(2)),
                                  *block(c2, c3, nn.MaxPool2d(pool_size, padding=2)))
        self.linear = classifier_head(4 * c3, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.main(x)
        return self.linear(x.reshape(x.size(0), -1))


class MNIST_SES_V(nn.Module):
    """Lifting layer, two group convolutions (``scale_size 1``, ``rotation_size``), one final
    max-projection.

    ``[B, 1, H, W] -> [B, 10]``; ``main``: [0] lifting, [3] BatchNorm3d, [4] group conv,
    [7] BatchNorm3d, [8] group conv, [9] projection, [12] BatchNorm2d (BatchNorm3d normalises each
    channel over batch, group axis and space jointly).
    """

    def __init__(self, pool_size: int = 4, kernel_size: int = 11, scales: Sequence[float] = (1.0,),
                 rotations: Sequence[float] = (0.0,), basis_type: str = 'A',
                 rotation_size: int = 1, channels: Sequence[int] = CHANNELS,
                 dropout: float = DROPOUT, backend: str = "auto", **basis_kwargs):
        super().__init__()
        c1, c2, c3 = channels
        common = dict(scales=scales, rotations=rotations, padding=kernel_size // 2, bias=True,
                      basis_type=basis_type, backend=backend, **basis_kwargs)
        self.main = nn.Sequential(
            LiftingConv(1, c1, kernel_size, EFFECTIVE_SIZE, **common),
            nn.ReLU(True),
            nn.MaxPool3d([1, 2, 2], stride=[1, 2, 2]),
            nn.BatchNorm3d(c1),

            GroupConv(c1, c2, 1, rotation_size, kernel_size, EFFECTIVE_SIZE, **common),
            nn.ReLU(True),
            nn.MaxPool3d([1, 2, 2], stride=[1, 2, 2]),
            nn.BatchNorm3d(c2),

            GroupConv(c2, c3, 1, rotation_size, kernel_size, EFFECTIVE_SIZE, **common),
            GroupMaxProjection(),
            nn.ReLU(True),
            nn.MaxPool2d(pool_size, padding=2),
            nn.BatchNorm2d(c3),
        )
        self.linear = classifier_head(4 * c3, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.main(x)
        return self.linear(x.reshape(x.size(0), -1))


def scales_for(num_scales: int, factor: float, min_scale: float) -> list:
    """``[round(min_scale * q**i, 2)]`` with ``q = factor**(1/(num_scales-1))`` (as the original);
    (4, 3.0, 1.7) -> [1.7, 2.45, 3.54, 5.1], (4, 2.0, 1.2) -> [1.2, 1.51, 1.9, 2.4]."""
    q = factor ** (1 / (num_scales - 1))
    return [round(min_scale * q ** i, 2) for i in range(num_scales)]


def rotations_for(num_rotations: int) -> list:
    """``[x*2*pi/R for x < R]`` evaluated left to right in float64 (as the original)."""
    return [x * 2 * math.pi / num_rotations for x in range(num_rotations)]


@dataclass(frozen=True)
class SESConfig:
    """One factory of the original: its name is derived from the fields (see :attr:`name`)."""
    vector: bool
    input_size: int                     # 28, 56 (upsampled from 28) or 96 (Sim2MNIST)
    num_rotations: int
    rotation_size: int = 1              # vector models only ("interrot")
    res: bool = False                   # mnist_res_*: scales [1.0], default basis D1
    num_scales: int = 4
    factor: float = 3.0
    min_scale: float = 1.7
    mult: float = 1.5
    kernel_size: int = 15
    channels: tuple = CHANNELS

    @property
    def name(self) -> str:
        name = (f"mnist_{'res' if self.res else 'ses'}_{'vector' if self.vector else 'scalar'}_"
                f"{self.input_size}_rot_{self.num_rotations}")
        return name + (f"_interrot_{self.rotation_size}" if self.vector else "")

    @property
    def default_basis(self) -> str:
        return 'D1' if self.res else 'E'

    @property
    def scales(self) -> list:
        return [1.0] if self.res else scales_for(self.num_scales, self.factor, self.min_scale)

    def build(self, basis: Optional[str] = None, backend: str = "auto") -> nn.Module:
        common = dict(pool_size=POOL_SIZE[self.input_size], kernel_size=self.kernel_size,
                      scales=self.scales, rotations=rotations_for(self.num_rotations),
                      basis_type=self.default_basis if basis is None else basis,
                      channels=self.channels, dropout=DROPOUT, backend=backend,
                      mult=self.mult, max_order=MAX_ORDER)
        if self.vector:
            model = MNIST_SES_V(rotation_size=self.rotation_size, **common)
        else:
            model = MNIST_SES_Scalar(**common)
        return for_input_size(model, self.input_size)


def _mnist_configs():
    """mnist_ses.py and mnist_res.py (note: no ses vector_28_rot_4_interrot_4, no res rot_4
    vectors)."""
    ses_vectors = {28: [(4, 2), (8, 1), (8, 4), (8, 8)],
                   56: [(4, 2), (4, 4), (8, 1), (8, 4), (8, 8)]}
    configs = []
    for res in (False, True):
        for size in (28, 56):
            configs += [SESConfig(False, size, r, res=res) for r in (1, 4, 8)]
            vectors = [(8, 1), (8, 4), (8, 8)] if res else ses_vectors[size]
            configs += [SESConfig(True, size, r, lr, res=res) for r, lr in vectors]
    return configs


def _sim2mnist_configs():
    """sim2mnist_ses.py / sim2mnist_res.py: 96x96 inputs, no upsampling, last pool 12."""
    small = dict(factor=2.0, min_scale=1.2, mult=1.2)         # scales [1.2, 1.51, 1.9, 2.4]
    scalar_channels = dict(channels=(24, 47, 71))              # sim2mnist_ses's scalar class
    configs = [
        SESConfig(False, 96, 1, kernel_size=15, **small, **scalar_channels),
        SESConfig(False, 96, 4, kernel_size=25, **scalar_channels),
        SESConfig(True, 96, 4, 2, kernel_size=25),
        SESConfig(False, 96, 8, kernel_size=35, **small, **scalar_channels),
        SESConfig(True, 96, 8, 1, kernel_size=25),
        SESConfig(True, 96, 8, 4, kernel_size=25, **small),
        SESConfig(True, 96, 8, 8, kernel_size=25),
    ]
    configs += [SESConfig(False, 96, r, res=True) for r in (1, 4, 8)]
    configs += [SESConfig(True, 96, 8, lr, res=True) for lr in (1, 4, 8)]
    return configs


CONFIGS = {config.name: config for config in _mnist_configs() + _sim2mnist_configs()}


def _factory(config: SESConfig):
    def factory(basis: Optional[str] = None, backend: str = "auto", **ignored) -> nn.Module:
        return config.build(basis, backend)

    factory.__name__ = factory.__qualname__ = config.name
    factory.__module__ = __name__
    factory.__doc__ = (f"``{config.name}``: {'vector' if config.vector else 'scalar'} RST-CNN, "
                       f"{config.num_rotations} rotations, scales {config.scales}, "
                       f"K={config.kernel_size}, input {config.input_size}x{config.input_size}; "
                       f"basis None -> {config.default_basis!r}; other keywords are ignored.")
    return factory


FACTORIES = {name: _factory(config) for name, config in CONFIGS.items()}
globals().update(FACTORIES)
__all__ += list(FACTORIES)
