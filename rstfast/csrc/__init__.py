"""Backends ``"cpp"`` (CPU) and ``"cuda"``: the C++/CUDA extension behind ``torch.ops.rstfast``.

Same contract and signatures as :mod:`rstfast.reference.functional` (see :mod:`rstfast.backends`).
The extension is JIT-built on the first :func:`unavailable_reason` / op call, never at import
(see :mod:`rstfast.csrc.build`). Both layers are ``torch.ops.rstfast`` ops with autograd and fake
kernels (torch.compile). CPU (float32 / float64): one convolution per (input slice, support box)
with the filters of every output that reads it, expanded once and cropped to the box
(``rs_conv_cpu.cpp``). CUDA (float32 / float16 / bfloat16, float32 accumulation): fused kernels
that build the cropped filters in shared memory (``rs_conv_cuda.cu``). Under ``torch.autocast``
the CPU op computes in float32 and the CUDA op in the autocast dtype; the output has the autocast
dtype. ``support`` (odd box side per scale, or per slice) bounds the taps that are read; None
computes it per slice from the basis.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..reference.functional import basis_support

__all__ = ["unavailable_reason", "lift_conv", "group_conv"]


def unavailable_reason(device) -> Optional[str]:
    """None when the extension runs on ``device`` (building it if needed), else why not."""
    from .build import cuda_wanted, ensure_built  # lazy: `python -m rstfast.csrc.build` runs clean
    device = torch.device(device)
    if device.type == "cpu":
        return ensure_built(cuda=False)
    if device.type == "cuda":
        if not cuda_wanted():
            return "torch has no CUDA support or no GPU is visible"
        return ensure_built(cuda=True)
    return f"the C++/CUDA extension has no kernels for device type {device.type!r}"


def _ready(x: torch.Tensor) -> None:
    reason = unavailable_reason(x.device)
    if reason:
        raise RuntimeError(f"rstfast.csrc: cannot run on {x.device}: {reason}")


def _support_list(basis: torch.Tensor, support: Optional[Sequence[int]]) -> list:
    if support is None:
        return list(basis_support(basis, 1))           # one box per slice
    return [int(n) for n in support]


def _autocast_inputs(x, weight, basis, bias):
    """Under ``torch.autocast`` on x's device: the tensors cast to the compute dtype — float32 on
    CPU (the CPU kernels' precision), the autocast dtype on CUDA — and the output dtype (the
    autocast dtype, as for ``conv2d``); otherwise the tensors unchanged and None."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return (x, weight, basis, bias), None
    out_dtype = torch.get_autocast_dtype(device_type)
    compute = torch.float32 if device_type == "cpu" else out_dtype
    return tuple(t if t is None else t.to(compute) for t in (x, weight, basis, bias)), out_dtype


def _run(op_name: str, x, weight, basis, bias, *args) -> torch.Tensor:
    _ready(x)                            # builds and loads the extension: the op exists after it
    (x, weight, basis, bias), out_dtype = _autocast_inputs(x, weight, basis, bias)
    y = getattr(torch.ops.rstfast, op_name)(x, weight, basis, bias, *args)
    return y if out_dtype is None else y.to(out_dtype)


def lift_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
              bias: Optional[torch.Tensor] = None, stride: int = 1, padding: int = 0,
              support: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Lifting convolution: x ``[B, C, H, W]``, weight ``[O, C, F]``, basis ``[F, T, K, K]``,
    bias ``[O]`` or None -> ``[B, O, T, H', W']``."""
    return _run("lift_conv_forward", x, weight, basis, bias, stride, padding,
                _support_list(basis, support))


def group_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
               bias: Optional[torch.Tensor] = None, num_rotations: int = 1,
               rotation_size: int = 1, scale_size: int = 1, stride: int = 1, padding: int = 0,
               support: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Group convolution: x ``[B, C, T, H, W]`` (``t = r*S + s``), weight ``[O, C, Lr*Ls, F]``
    (``a = i*Ls + j``), basis ``[F, T, K, K]``, bias ``[O]`` or None -> ``[B, O, T, H', W']``."""
    return _run("group_conv_forward", x, weight, basis, bias, num_rotations,
                rotation_size, scale_size, stride, padding, _support_list(basis, support))
