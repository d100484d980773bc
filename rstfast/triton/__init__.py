"""Triton kernel backend of rstfast: fused roto-scale convolutions, forward and backward.

Implements the kernels of the op contract (:mod:`rstfast.ops`, :mod:`rstfast.backends`) on the
cropped filter buffer of :mod:`rstfast.geometry`: implicit-GEMM kernels (:mod:`.rs_conv_fwd`,
:mod:`.rs_conv_bwd`) that read the input in place through its strides (contiguous or
channels-last) and the index map and layout from the geometry's device tables. float32 is exact
(IEEE products; TF32 only with ``RSTFAST_TRITON_TF32=1`` or ``rstfast.triton.jit.ALLOW_TF32 =
True``); bfloat16 / float16 inputs accumulate in float32. On CPU the kernels run only on Triton's
interpreter (``TRITON_INTERPRET=1``; slow, for tests).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["unavailable_reason", "DTYPES", "conv_forward", "conv_backward"]

_COMPUTE = (torch.float32, torch.bfloat16, torch.float16)
DTYPES = {"cuda": _COMPUTE, "cpu": _COMPUTE}

try:
    import triton  # noqa: F401
    _IMPORT_ERROR = None
except ImportError as exc:                      # the package stays importable without Triton
    _IMPORT_ERROR = exc

if _IMPORT_ERROR is None:
    from . import jit
    from .rs_conv_bwd import conv_backward_filters, conv_backward_input
    from .rs_conv_fwd import conv_forward


def unavailable_reason(device) -> Optional[str]:
    """None when the kernels can run on ``device`` (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    if _IMPORT_ERROR is not None:
        return f"triton cannot be imported: {_IMPORT_ERROR}"
    device = torch.device(device)
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "torch sees no CUDA device"
    if device.type == "cpu" and jit.interpreting():
        return jit.interpreter_unusable_reason()
    return (f"Triton kernels need a CUDA device, or TRITON_INTERPRET=1 on CPU "
            f"(got device {device})")


def conv_backward(grad_y, x, filters, geo, need_input: bool, need_filters: bool):
    """(grad_x or None, float32 gradient of the filter buffer or None)."""
    grad_x = conv_backward_input(grad_y, filters, x, geo) if need_input else None
    grad_filters = conv_backward_filters(grad_y, x, filters, geo) if need_filters else None
    return grad_x, grad_filters
