"""Backward roto-scale convolution: gradient of the input and of the filter buffer.

``conv_backward_input`` is the transposed problem as an implicit GEMM: program
``(pid_m, pid_n, q)`` owns ``BLOCK_M`` input pixels x ``BLOCK_N`` input channels of input slice
``q`` and reduces over every ``(t, a)`` that reads it (the geometry's reader table) and over ``k = o * n_s^2 + u * n_s + v`` within that output scale's support. Each input
element is written exactly once (no atomics, no accumulation across launches).

``conv_backward_filters`` writes the gradient of the filter buffer (same layout, float32):
program ``(pid_k * splits + split, pid_n, a * T + t)`` owns ``BLOCK_M`` reduction rows
``k = c * n_s^2 + u * n_s + v`` x ``BLOCK_N`` output channels of slot ``(a, r)`` of scale ``s`` and
reduces over the ``split``-th of ``splits`` contiguous ranges of output pixels (split-K: small
problems, e.g. the lifting layer with one input channel, have few rows to spread over the GPU);
the partial sums land in ``[splits, numel]`` and are added afterwards. Slots no output reads
(``read[t, a] == -1``) are written as zeros.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit import AUTOTUNE_KEY, GEMM_CONFIGS, INTERPRETER_CONFIG, dot_options, lazy_kernel
from .launch import geometry_tables, kernel_sizes, strides_5d, table_offsets

__all__ = ["conv_backward_input", "conv_backward_filters", "MIN_PIXELS_PER_SPLIT"]

# Split-K of the filter gradient: aim for this many programs, each reducing >= this many pixels.
TARGET_PROGRAMS = 1024
MIN_PIXELS_PER_SPLIT = 4096

_CONFIGS = GEMM_CONFIGS + [
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4, num_stages=3),
]


@lazy_kernel(_CONFIGS, key=AUTOTUNE_KEY, interpreter_config=INTERPRETER_CONFIG)
def _rs_conv_bwd_input_kernel(
        gy_ptr, w_ptr, dx_ptr, tables_ptr,
        SUPPORT_AT, CROP_AT, SLOT_AT, READ_AT, READER_START_AT, READER_AT,
        B, C, H, W, O, Ho, Wo, R, S, A, stride, padding,
        sgb, sgo, sgt, sgh, sgw, sdb, sdc, sdt, sdh, sdw,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    plane = tl.program_id(2)

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < B * H * W
    b = m // (H * W)
    hi = (m % (H * W)) // W
    wi = m % W
    gy_rows = gy_ptr + b.to(tl.int64) * sgb
    c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = c < C
    compute_dtype = gy_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    first = tl.load(tables_ptr + READER_START_AT + plane).to(tl.int32)
    last = tl.load(tables_ptr + READER_START_AT + plane + 1).to(tl.int32)
    for entry in range(first, last):                # the readers (t, a) of this input slice
        reader = tl.load(tables_ptr + READER_AT + entry).to(tl.int32)
        t = reader // A
        a = reader % A
        r = t // S
        s = t % S
        n = tl.load(tables_ptr + SUPPORT_AT + s).to(tl.int32)
        shift = tl.load(tables_ptr + CROP_AT + s).to(tl.int32) - padding
        taps = n * n
        reduction = O * taps
        w_slot = w_ptr + tl.load(tables_ptr + SLOT_AT + (s * A + a) * R + r)
        gy_plane = gy_rows + t * sgt
        for k0 in range(0, reduction, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            k_ok = k < reduction
            o = k // taps
            tap = k % taps
            h_num = hi[:, None] - shift - (tap // n)[None, :]
            w_num = wi[:, None] - shift - (tap % n)[None, :]
            ho = h_num // stride
            wo = w_num // stride
            ok = (m_ok[:, None] & k_ok[None, :] & (h_num >= 0) & (w_num >= 0)
                  & (ho * stride == h_num) & (wo * stride == w_num) & (ho < Ho)
                  & (wo < Wo))
            g_tile = tl.load(gy_plane[:, None] + o[None, :] * sgo + ho * sgh + wo * sgw,
                             mask=ok, other=0.0)
            w_tile = tl.load(w_slot + (o.to(tl.int64) * (C * taps) + tap)[:, None]
                             + c[None, :] * taps,
                             mask=k_ok[:, None] & c_ok[None, :], other=0.0)
            w_tile = w_tile.to(compute_dtype)
            if UPCAST:
                g_tile, w_tile = g_tile.to(tl.float32), w_tile.to(tl.float32)
            acc = tl.dot(g_tile, w_tile, acc, input_precision=PRECISION)
    dx_offsets = (b.to(tl.int64) * sdb + plane.to(tl.int64) * sdt + hi * sdh + wi * sdw)[:, None] \
        + c[None, :].to(tl.int64) * sdc
    tl.store(dx_ptr + dx_offsets, acc.to(dx_ptr.dtype.element_ty),
             mask=m_ok[:, None] & c_ok[None, :])


@lazy_kernel(_CONFIGS, key=AUTOTUNE_KEY, interpreter_config=INTERPRETER_CONFIG)
def _rs_conv_bwd_filter_kernel(
        x_ptr, gy_ptr, dw_ptr, tables_ptr,
        SUPPORT_AT, CROP_AT, SLOT_AT, READ_AT, READER_START_AT, READER_AT,
        B, C, H, W, O, Ho, Wo, R, S, A, stride, padding,
        sxb, sxc, sxt, sxh, sxw, sgb, sgo, sgt, sgh, sgw, splits, numel,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_k = tl.program_id(0) // splits
    split = tl.program_id(0) % splits
    pid_n = tl.program_id(1)
    a = tl.program_id(2) // (R * S)
    t = tl.program_id(2) % (R * S)
    r = t // S
    s = t % S
    q = tl.load(tables_ptr + READ_AT + t * A + a).to(tl.int32)
    n = tl.load(tables_ptr + SUPPORT_AT + s).to(tl.int32)
    shift = tl.load(tables_ptr + CROP_AT + s).to(tl.int32) - padding
    taps = n * n
    reduction = C * taps

    k = pid_k * BLOCK_M + tl.arange(0, BLOCK_M)
    k_ok = k < reduction
    c = k // taps
    tap = k % taps
    u = tap // n
    v = tap % n
    o = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = o < O
    x_rows = x_ptr + tl.maximum(q, 0).to(tl.int64) * sxt + c * sxc
    gy_cols = gy_ptr + t.to(tl.int64) * sgt + o * sgo
    compute_dtype = x_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    num_pixels = B * Ho * Wo
    chunk = tl.cdiv(tl.cdiv(num_pixels, splits), BLOCK_K) * BLOCK_K
    m_start = split * chunk
    m_end = tl.minimum(m_start + chunk, num_pixels)
    m_end = tl.where((q < 0) | (pid_k * BLOCK_M >= reduction), m_start, m_end)
    for m0 in range(m_start, m_end, BLOCK_K):
        m = m0 + tl.arange(0, BLOCK_K)
        m_ok = m < m_end
        b = (m // (Ho * Wo)).to(tl.int64)
        ho = (m % (Ho * Wo)) // Wo
        wo = m % Wo
        hi = (ho * stride + shift)[None, :] + u[:, None]
        wi = (wo * stride + shift)[None, :] + v[:, None]
        ok = (k_ok[:, None] & m_ok[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W))
        x_tile = tl.load(x_rows[:, None] + b[None, :] * sxb + hi * sxh + wi * sxw,
                         mask=ok, other=0.0)
        g_tile = tl.load(gy_cols[None, :] + (b * sgb + ho * sgh + wo * sgw)[:, None],
                         mask=m_ok[:, None] & o_ok[None, :], other=0.0)
        g_tile = g_tile.to(compute_dtype)
        if UPCAST:
            x_tile, g_tile = x_tile.to(tl.float32), g_tile.to(tl.float32)
        acc = tl.dot(x_tile, g_tile, acc, input_precision=PRECISION)
    dw_offsets = (split.to(tl.int64) * numel + tl.load(tables_ptr + SLOT_AT + (s * A + a) * R + r)
                  + o[None, :].to(tl.int64) * reduction + k[:, None])
    tl.store(dw_ptr + dw_offsets, acc, mask=k_ok[:, None] & o_ok[None, :])


def conv_backward_input(grad_y: torch.Tensor, filters: torch.Tensor, x: torch.Tensor,
                        geo) -> torch.Tensor:
    """grad_y ``[B, O, T, H', W']``, filter buffer -> grad_x (shape and dtype of ``x``)."""
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    grid = lambda meta: (triton.cdiv(x.shape[0] * x.shape[-2] * x.shape[-1], meta["BLOCK_M"]),
                         triton.cdiv(geo.in_channels, meta["BLOCK_N"]), geo.in_slices)
    _rs_conv_bwd_input_kernel[grid](
        grad_y, filters, grad_x, geometry_tables(geo, x.device), *table_offsets(geo),
        *kernel_sizes(geo, x.shape),
        *grad_y.stride(), *strides_5d(grad_x, geo.lifting), **dot_options(grad_y.dtype))
    return grad_x


def conv_backward_filters(grad_y: torch.Tensor, x: torch.Tensor, filters: torch.Tensor,
                          geo) -> torch.Tensor:
    """grad_y ``[B, O, T, H', W']`` (x's dtype), x -> float32 gradient of the filter buffer."""
    sizes = kernel_sizes(geo, x.shape)
    max_rows = max(geo.support) ** 2 * geo.in_channels
    num_pixels = grad_y.shape[0] * grad_y.shape[3] * grad_y.shape[4]
    programs = (triton.cdiv(max_rows, 64) * triton.cdiv(geo.out_channels, 64)
                * geo.num_offsets * geo.group_size)
    splits = max(1, min(triton.cdiv(TARGET_PROGRAMS, programs),
                        num_pixels // MIN_PIXELS_PER_SPLIT))
    grad_filters = torch.empty(splits, filters.numel(), dtype=torch.float32, device=x.device)
    grid = lambda meta: (triton.cdiv(max_rows, meta["BLOCK_M"]) * splits,
                         triton.cdiv(geo.out_channels, meta["BLOCK_N"]),
                         geo.num_offsets * geo.group_size)
    _rs_conv_bwd_filter_kernel[grid](
        x, grad_y, grad_filters, geometry_tables(geo, x.device), *table_offsets(geo), *sizes,
        *strides_5d(x, geo.lifting), *grad_y.stride(), splits, filters.numel(),
        **dot_options(x.dtype))
    return grad_filters[0] if splits == 1 else grad_filters.sum(dim=0)
