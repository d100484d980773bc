"""Pieces shared by the MNIST models: the classifier head, the CNN skeleton, the 56x56 wrapper.

Every MNIST model of the original code has three blocks (conv -> ReLU -> MaxPool -> BatchNorm,
channels 32/63/95), a last pool ``MaxPool2d(pool_size, padding=2)`` that leaves 2x2 pixels, and
the head ``Linear(4*C3 -> 256, no bias) -> BatchNorm1d -> ReLU -> Dropout(0.7) ->
Linear(256 -> 10)``.
``_56`` models upsample the 28x28 input by 2 (nearest) first.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch.nn as nn

__all__ = ["CHANNELS", "DROPOUT", "POOL_SIZE", "InputSizeCheck", "classifier_head", "conv_blocks",
           "for_input_size", "input_size_factories"]

CHANNELS = (32, 63, 95)
DROPOUT = 0.7
# Last max-pool size per input side: 28 -> 7 -> 2, 56 -> 14 -> 2, 96 -> 24 -> 2 (with padding 2).
POOL_SIZE = {28: 4, 56: 8, 96: 12}


def classifier_head(in_features: int, dropout: float = DROPOUT, hidden: int = 256,
                    num_classes: int = 10) -> nn.Sequential:
    """``[B, in_features] -> [B, num_classes]``; indices 0..4 as the original ``linear``."""
    return nn.Sequential(
        nn.Linear(in_features, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def conv_blocks(convs: Sequence[nn.Module], norm_features: Sequence[int],
                pool_size: int) -> nn.Sequential:
    """``[conv_i, ReLU, MaxPool2d, BatchNorm2d(norm_features[i])]`` for the three blocks;
    the last pool is ``MaxPool2d(pool_size, padding=2)``, the others ``MaxPool2d(2)``."""
    layers = []
    for i, (conv, features) in enumerate(zip(convs, norm_features)):
        last = i == len(convs) - 1
        pool = nn.MaxPool2d(pool_size, padding=2) if last else nn.MaxPool2d(2)
        layers += [conv, nn.ReLU(True), pool, nn.BatchNorm2d(features)]
    return nn.Sequential(*layers)


class InputSizeCheck:
    """Forward pre-hook: the model takes ``[B, C, size, size]`` images (a ``ValueError`` naming the
    expected size instead of a shape error deep inside)."""

    def __init__(self, size: int, note: str = ""):
        self.size, self.note = size, note

    def __call__(self, module: nn.Module, inputs) -> None:
        x = inputs[0]
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"x: expected images [B, C, {self.size}, {self.size}] (this model "
                             f"takes {self.size}x{self.size} inputs{self.note}), got shape "
                             f"{tuple(x.shape)}")


def for_input_size(model: nn.Module, input_size: int) -> nn.Module:
    """``_56`` models: ``Sequential(Upsample(scale_factor=2), model)`` (state-dict keys ``1.*``),
    fed 28x28 digits; ``_28`` and ``_96`` models: the bare model. Either checks its input size."""
    if input_size == 56:
        model = nn.Sequential(nn.Upsample(scale_factor=2), model)
        model.register_forward_pre_hook(InputSizeCheck(28, ", upsampled to 56x56 inside"))
    else:
        model.register_forward_pre_hook(InputSizeCheck(input_size))
    return model


def input_size_factories(prefix: str, build: Callable[[int], nn.Module], what: str,
                         module: str) -> Dict[str, Callable[..., nn.Module]]:
    """Registry factories ``<prefix>_28`` and ``<prefix>_56`` of a model without basis or backend:
    ``for_input_size(build(input_size), input_size)``; the registry's keywords are ignored."""
    def factory_for(input_size: int):
        def factory(**ignored) -> nn.Module:
            return for_input_size(build(input_size), input_size)
        factory.__name__ = factory.__qualname__ = f"{prefix}_{input_size}"
        factory.__module__ = module
        factory.__doc__ = (f"{what} on {input_size}x{input_size} inputs"
                           + (" (28x28 upsampled by 2)" if input_size == 56 else "")
                           + "; keywords are ignored.")
        return factory
    return {f"{prefix}_{size}": factory_for(size) for size in (28, 56)}
