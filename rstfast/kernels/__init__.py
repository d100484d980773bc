"""Triton backend of rstfast: fused roto-scale convolutions (forward and backward).

Same contract as every backend (see :mod:`rstfast.backends`): ``unavailable_reason(device)``,
``lift_conv`` and ``group_conv`` with the signatures of :mod:`rstfast.reference.functional`.
The filters are expanded once per call into a buffer cropped to each scale's support
(:mod:`.layout`, :mod:`.filter_expand`); the convolution and its gradients are implicit-GEMM Triton
kernels (:mod:`.rs_conv_fwd`, :mod:`.rs_conv_bwd`) that read the input in place through its
strides (contiguous or channels-last). float32 is exact (IEEE products; TF32 only with
``RSTFAST_TRITON_TF32=1`` or ``rstfast.kernels.jit.ALLOW_TF32 = True``); bfloat16 / float16 inputs
accumulate in float32; under ``torch.autocast`` the input is cast to the autocast dtype.
On CPU the kernels run only on Triton's interpreter (``TRITON_INTERPRET=1``; slow, for tests).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import _checks

__all__ = ["unavailable_reason", "lift_conv", "group_conv"]

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

try:
    import triton  # noqa: F401
    _IMPORT_ERROR = None
except ImportError as exc:                      # the package stays importable without Triton
    _IMPORT_ERROR = exc

if _IMPORT_ERROR is None:
    from . import jit
    from .autograd import cached_filters, rs_conv


def unavailable_reason(device) -> Optional[str]:
    """None when the kernels can run on ``device`` (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    if _IMPORT_ERROR is not None:
        return f"triton cannot be imported: {_IMPORT_ERROR}"
    device = torch.device(device)
    if device.type == "cuda":
        return None
    if device.type == "cpu" and jit.interpreting():
        return jit.interpreter_unusable_reason()
    return (f"Triton kernels need a CUDA device, or TRITON_INTERPRET=1 on CPU "
            f"(got device {device})")


def _compute_input(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
                   bias: Optional[torch.Tensor], stride: int, padding: int, ndim: int):
    """Check the arguments; under autocast cast x to the autocast dtype."""
    _checks.positive_int("stride", stride)
    _checks.positive_int("padding", padding, minimum=0)
    if x.dim() != ndim:
        raise ValueError(f"x: expected a {ndim}-D tensor, got shape {tuple(x.shape)}")
    for name, tensor in (("weight", weight), ("basis", basis), ("bias", bias)):
        if tensor is not None and tensor.device != x.device:
            raise ValueError(f"{name}: expected a tensor on x's device {x.device}, "
                             f"got one on {tensor.device}")
    k = basis.shape[-1]
    if min(x.shape[-2:]) + 2 * padding < k:
        raise ValueError(f"x: spatial size {tuple(x.shape[-2:])} with padding {padding} is smaller "
                         f"than the kernel size {k}; expected H, W >= {k - 2 * padding}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias: expected shape ({weight.shape[0]},) (out channels), "
                         f"got {tuple(bias.shape)}")
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    for name, tensor in (("x", x), ("weight", weight), ("basis", basis)):
        if tensor.dtype not in _DTYPES:
            raise TypeError(f"{name}: the triton backend supports dtypes {_DTYPES}, "
                            f"got {tensor.dtype}")
    if basis.dim() != 4 or basis.shape[0] != weight.shape[-1]:
        raise ValueError(f"basis: expected [F, T, K, K] with F = weight.shape[-1] = "
                         f"{weight.shape[-1]}, got shape {tuple(basis.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x: expected {weight.shape[1]} channels in dim 1 (weight.shape[1]), "
                         f"got shape {tuple(x.shape)}")
    return x


def _support(basis: torch.Tensor, num_rotations: int, support: Optional[Sequence[int]]):
    if support is None:
        from ..reference.functional import basis_support
        support = basis_support(basis, num_rotations)
    support = [int(n) for n in support]
    k = basis.shape[-1]
    num_scales = basis.shape[1] // num_rotations
    if len(support) != num_scales or any(n < 1 or n > k or n % 2 != k % 2 for n in support):
        raise ValueError(f"support: expected {num_scales} box sizes in 1..{k} with the parity of "
                         f"K = {k}, got {support}")
    return support


def lift_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
              bias: Optional[torch.Tensor] = None, stride: int = 1, padding: int = 0,
              support: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Lifting convolution Z2 -> H: x ``[B, C, H, W]``, weight ``[O, C, F]``, basis
    ``[F, T, K, K]`` -> ``[B, O, T, H', W']`` (see :func:`rstfast.reference.functional.lift_conv`)."""
    x = _compute_input(x, weight, basis, bias, stride, padding, 4)
    if weight.dim() != 3:
        raise ValueError(f"weight: expected [O, C, F], got shape {tuple(weight.shape)}")
    # Every output slice is independent here; R only groups the slices by scale for the supports.
    # Without ``support`` each slice gets its own box (R = 1, S = T), which is exact as well.
    num_groups = basis.shape[1]
    if support is not None and (len(support) == 0 or num_groups % len(support)):
        raise ValueError(f"support: expected one box size per scale, a divisor of T = "
                         f"{num_groups} entries, got {list(support)}")
    num_rotations = num_groups // len(support) if support is not None else 1
    support = _support(basis, num_rotations, support)
    filters = cached_filters(weight, basis, num_rotations, support)
    return rs_conv(x, filters, bias, weight.shape[0], basis.shape[-1], num_rotations, 1, 1,
                   stride, padding, support)


def group_conv(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
               bias: Optional[torch.Tensor] = None, num_rotations: int = 1,
               rotation_size: int = 1, scale_size: int = 1, stride: int = 1, padding: int = 0,
               support: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Group convolution H -> H: x ``[B, C, T, H, W]``, weight ``[O, C, Lr*Ls, F]``, basis
    ``[F, T, K, K]`` -> ``[B, O, T, H', W']`` (see :func:`rstfast.reference.functional.group_conv`)."""
    for name, value in (("num_rotations", num_rotations), ("rotation_size", rotation_size),
                        ("scale_size", scale_size)):
        _checks.positive_int(name, value)
    if basis.shape[1] % num_rotations:
        raise ValueError(f"num_rotations: expected a divisor of T = basis.shape[1] = "
                         f"{basis.shape[1]}, got {num_rotations}")
    x = _compute_input(x, weight, basis, bias, stride, padding, 5)
    if weight.dim() != 4 or weight.shape[2] != rotation_size * scale_size:
        raise ValueError(f"weight: expected [O, C, rotation_size * scale_size = "
                         f"{rotation_size * scale_size}, F], got shape {tuple(weight.shape)}")
    if x.shape[2] != basis.shape[1]:
        raise ValueError(f"x: expected T = basis.shape[1] = {basis.shape[1]} in dim 2, "
                         f"got shape {tuple(x.shape)}")
    support = _support(basis, num_rotations, support)
    filters = cached_filters(weight, basis, num_rotations, support)
    return rs_conv(x, filters, bias, weight.shape[0], basis.shape[-1], num_rotations,
                   rotation_size, scale_size, stride, padding, support)
