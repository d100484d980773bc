"""Kernel backends ``"cpp"`` (CPU) and ``"cuda"``: the C++/CUDA extension ``torch.ops.rstfast_cpp``.

Implements the kernels of the op contract (:mod:`rstfast.ops`, :mod:`rstfast.backends`) on the
cropped filter buffer of :mod:`rstfast.geometry`. The extension is JIT-built on the first
:func:`unavailable_reason` / kernel call, never at import (:mod:`rstfast.csrc.build`).
CPU (float32 / float64): one convolution per (input slice, scale) with the slots of every output
that reads it (``rs_conv_cpu.cpp``). CUDA (float32 / float16 / bfloat16, float32 accumulation):
direct kernels reading the buffer (``rs_conv_cuda.cu``).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["unavailable_reason", "DTYPES", "conv_forward", "conv_backward"]

DTYPES = {"cpu": (torch.float32, torch.float64),
          "cuda": (torch.float32, torch.float16, torch.bfloat16)}


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


def _ops(device: torch.device):
    reason = unavailable_reason(device)     # builds and loads the extension: the ops exist after
    if reason:
        raise RuntimeError(f"rstfast.csrc: cannot run on {device}: {reason}")
    return torch.ops.rstfast_cpp


def conv_forward(x, filters, bias, geo):
    """x ``[B, C, (T,) H, W]``, filter buffer, bias ``[O]`` or None -> ``[B, O, T, H', W']``."""
    return _ops(x.device).conv_forward(x, filters, bias, geo.encode())


def conv_backward(grad_y, x, filters, geo, need_input: bool, need_filters: bool):
    """(grad_x or None, grad of the filter buffer or None)."""
    grad_x, grad_filters = _ops(x.device).conv_backward(grad_y, x, filters, geo.encode(),
                                                        [need_input, need_filters])
    return (grad_x if need_input else None), (grad_filters if need_filters else None)
