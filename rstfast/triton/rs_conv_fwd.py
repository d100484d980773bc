"""Forward roto-scale convolution as one implicit GEMM (lifting and group layers).

Program ``(pid_m, pid_n, t)``: a tile of ``BLOCK_M`` output pixels (flattened ``b, h', w'``) times
``BLOCK_N`` output channels of output slice ``t = r*S + s``. Reduction over the offsets ``a`` whose
input slice ``q = read[t, a]`` exists (the geometry's index map, read from ``tables``) and over
``k = c * n_s^2 + u * n_s + v`` — the taps of scale ``s``'s support only. The input slice is
gathered straight from ``x`` (strides; zero padding by masks; no copy); the filter tile is slot
``(a, r)`` ``[O, C, n_s, n_s]`` of the buffer, found through the geometry's slot table. The lifting layer is the
case of one input plane (slice stride 0). Bias is added in the epilogue.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .jit import AUTOTUNE_KEY, GEMM_CONFIGS, INTERPRETER_CONFIG, dot_options, lazy_kernel
from .launch import geometry_tables, kernel_sizes, strides_5d, table_offsets

__all__ = ["conv_forward"]

_CONFIGS = GEMM_CONFIGS + [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
]


@lazy_kernel(_CONFIGS, key=AUTOTUNE_KEY, interpreter_config=INTERPRETER_CONFIG)
def _rs_conv_fwd_kernel(
        x_ptr, w_ptr, bias_ptr, y_ptr, tables_ptr,
        SUPPORT_AT, CROP_AT, SLOT_AT, READ_AT, READER_START_AT, READER_AT,
        B, C, H, W, O, Ho, Wo, R, S, A, stride, padding,
        sxb, sxc, sxt, sxh, sxw, syb, syo, syt, syh, syw,
        HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    t = tl.program_id(2)
    r = t // S
    s = t % S
    n = tl.load(tables_ptr + SUPPORT_AT + s).to(tl.int32)
    shift = tl.load(tables_ptr + CROP_AT + s).to(tl.int32) - padding
    taps = n * n
    reduction = C * taps

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < B * Ho * Wo
    b = m // (Ho * Wo)
    ho = (m % (Ho * Wo)) // Wo
    wo = m % Wo
    h0 = ho * stride + shift
    w0 = wo * stride + shift
    x_rows = x_ptr + b.to(tl.int64) * sxb
    o = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = o < O
    compute_dtype = x_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for a in range(0, A):
        q = tl.load(tables_ptr + READ_AT + t * A + a).to(tl.int32)
        if q >= 0:
            x_plane = x_rows + q.to(tl.int64) * sxt
            w_slot = w_ptr + tl.load(tables_ptr + SLOT_AT + (s * A + a) * R + r)
            for k0 in range(0, reduction, BLOCK_K):
                k = k0 + tl.arange(0, BLOCK_K)
                k_ok = k < reduction
                c = k // taps
                tap = k % taps
                hi = h0[:, None] + (tap // n)[None, :]
                wi = w0[:, None] + (tap % n)[None, :]
                ok = (m_ok[:, None] & k_ok[None, :] & (hi >= 0) & (hi < H)
                      & (wi >= 0) & (wi < W))
                x_tile = tl.load(x_plane[:, None] + c[None, :] * sxc + hi * sxh + wi * sxw,
                                 mask=ok, other=0.0)
                w_tile = tl.load(w_slot + o[None, :].to(tl.int64) * reduction + k[:, None],
                                 mask=k_ok[:, None] & o_ok[None, :], other=0.0)
                w_tile = w_tile.to(compute_dtype)
                if UPCAST:
                    x_tile, w_tile = x_tile.to(tl.float32), w_tile.to(tl.float32)
                acc = tl.dot(x_tile, w_tile, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    y_offsets = (b.to(tl.int64) * syb + t.to(tl.int64) * syt + ho * syh + wo * syw)[:, None] \
        + o[None, :].to(tl.int64) * syo
    tl.store(y_ptr + y_offsets, acc.to(y_ptr.dtype.element_ty),
             mask=m_ok[:, None] & o_ok[None, :])


def conv_forward(x: torch.Tensor, filters: torch.Tensor, bias: Optional[torch.Tensor],
                 geo) -> torch.Tensor:
    """x ``[B, C, H, W]`` (lifting) or ``[B, C, T, H, W]``, float32 filter buffer, bias ``[O]`` or
    None -> y ``[B, O, T, H', W']`` in x's dtype."""
    y = torch.empty(geo.out_shape(x.shape), dtype=x.dtype, device=x.device)
    sizes = kernel_sizes(geo, x.shape)
    grid = lambda meta: (triton.cdiv(y.shape[0] * y.shape[3] * y.shape[4], meta["BLOCK_M"]),
                         triton.cdiv(geo.out_channels, meta["BLOCK_N"]), geo.group_size)
    _rs_conv_fwd_kernel[grid](
        x, filters, bias if bias is not None else filters, y, geometry_tables(geo, x.device),
        *table_offsets(geo), *sizes, *strides_5d(x, geo.lifting), *y.stride(),
        HAS_BIAS=bias is not None, **dot_options(x.dtype))
    return y
