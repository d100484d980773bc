"""The non-equivariant CNN baseline (original file mnist_cnn.py): 7x7 convolutions with bias."""
from __future__ import annotations

import torch
import torch.nn as nn

from .common import CHANNELS, POOL_SIZE, classifier_head, conv_blocks, input_size_factories

__all__ = ["MNIST_CNN", "FACTORIES"]


class MNIST_CNN(nn.Module):
    """``[B, 1, H, W] -> [B, 10]``; ``main`` [0, 4, 8] = ``Conv2d(·, ·, 7, padding=3)``,
    [3, 7, 11] = BatchNorm2d; ``linear`` = :func:`classifier_head`. 494,549 parameters."""

    def __init__(self, pool_size: int = 4):
        super().__init__()
        c1, c2, c3 = CHANNELS
        convs = [nn.Conv2d(1, c1, 7, padding=3), nn.Conv2d(c1, c2, 7, padding=3),
                 nn.Conv2d(c2, c3, 7, padding=3)]
        self.main = conv_blocks(convs, CHANNELS, pool_size)
        self.linear = classifier_head(4 * c3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.main(x)
        return self.linear(x.reshape(x.size(0), -1))


FACTORIES = input_size_factories(
    "mnist_cnn", lambda size: MNIST_CNN(pool_size=POOL_SIZE[size]), "CNN", __name__)
globals().update(FACTORIES)
__all__ += list(FACTORIES)
