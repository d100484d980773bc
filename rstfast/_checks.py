"""Argument and input validation shared by the layers and the functional API.

Every error names the argument, the value received and what was expected.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np
import torch


def positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {value!r} "
                        f"({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def at_most(name: str, value: int, limit_name: str, limit: int) -> None:
    if value > limit:
        raise ValueError(f"{name}: expected at most {limit_name} = {limit}, got {value}")


def positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive float, got {value!r} "
                        f"({type(value).__name__})")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite float, got {value!r}")
    return float(value)


def float_list(name: str, values, positive: bool = False) -> list:
    """A non-empty sequence of finite floats (``positive``: all > 0) as a list."""
    what = "positive finite floats" if positive else "finite floats"
    sequence = isinstance(values, (Sequence, np.ndarray, torch.Tensor))
    if isinstance(values, (str, bytes)) or not sequence:
        raise TypeError(f"{name}: expected a non-empty list of {what}, got {values!r}")
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a non-empty list of {what}, got {values!r}") from None
    if not values:
        raise ValueError(f"{name}: expected a non-empty list of {what}, got []")
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in values):
        raise ValueError(f"{name}: expected a non-empty list of {what}, got {values}")
    return values


def odd_kernel_size(name: str, value) -> int:
    """An odd int >= 3 (the basis is centred)."""
    value = positive_int(name, value, 3)
    if value % 2 == 0:
        raise ValueError(f"{name}: expected an odd int (the basis is centred), got {value}")
    return value


def kernel_sizes(kernel_size, effective_size) -> tuple:
    kernel_size = odd_kernel_size("kernel_size", kernel_size)
    effective_size = positive_int("effective_size", effective_size)
    if effective_size > kernel_size:
        raise ValueError(f"effective_size: expected at most kernel_size = {kernel_size} "
                         f"(effective_size**2 basis functions on a {kernel_size}x{kernel_size} "
                         f"kernel), got {effective_size}")
    return kernel_size, effective_size


def feature_map_shape(x, *, name: str, ndim: int, channels: int, groups: int = 0) -> None:
    """``x`` is a tensor of rank ``ndim`` with ``x.shape[1] == channels`` and, for group maps,
    ``x.shape[2] == groups``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    layout = "[B, C, H, W]" if ndim == 4 else "[B, C, R*S, H, W]"
    if x.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor {layout}, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels in dim 1 of {layout}, "
                         f"got shape {tuple(x.shape)}")
    if groups and x.shape[2] != groups:
        raise ValueError(f"{name}: expected group size R*S = {groups} in dim 2 of {layout}, "
                         f"got shape {tuple(x.shape)}")


def like_layer(x: torch.Tensor, *, name: str, like: torch.Tensor) -> None:
    """``x`` is floating point, on the device of the parameter ``like`` and of its dtype (unless
    autocast is on)."""
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.device != like.device:
        raise ValueError(f"{name}: expected a tensor on {like.device} (the layer's device), "
                         f"got one on {x.device}; move the input or call .to() on the layer")
    if x.dtype != like.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name}: expected dtype {like.dtype} (the layer's dtype), got {x.dtype}; "
                        f"cast the input, call .to(dtype) on the layer, or use torch.autocast")


def feature_map(x, *, name: str, ndim: int, channels: int, groups: int = 0,
                like: torch.Tensor) -> None:
    """Check a layer input: :func:`feature_map_shape` and :func:`like_layer`."""
    feature_map_shape(x, name=name, ndim=ndim, channels=channels, groups=groups)
    like_layer(x, name=name, like=like)
