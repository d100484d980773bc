"""Backward roto-scale convolution: gradient of the input and of the filter buffer.

``conv_backward_input`` is the transposed problem as an implicit GEMM: program
``(pid_m, pid_n, p)`` owns ``BLOCK_M`` input pixels x ``BLOCK_N`` input channels of input slice
``p = r_in * S + s_in`` (lifting: the single input plane) and reduces over every output slice that
reads it — offsets ``i < Lr`` (output rotation ``(r_in - i) mod R``) and ``j`` (output scale
``s_in - j >= 0``); lifting: every ``(r, s)`` — and over ``k = (u * n_s + v) * O + o`` within that
output scale's support. Each input element is written exactly once (no atomics, no accumulation
across launches).

``conv_backward_filters`` writes the gradient of the filter buffer (same layout, float32):
program ``(pid_k * splits + split, pid_n, a * T + t)`` owns ``BLOCK_M`` reduction rows
``k = (u * n_s + v) * C + c`` x ``BLOCK_N`` output channels of block ``(a, r)`` of scale ``s`` and
reduces over the ``split``-th of ``splits`` contiguous ranges of output pixels (split-K: small
problems, e.g. the lifting layer with one input channel, have few rows to spread over the GPU);
the partial sums land in ``[splits, numel]`` and are added afterwards. Rows of offsets that read
past the top scale (``s + j >= S``) are written as zeros.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit import AUTOTUNE_KEY, GEMM_CONFIGS, INTERPRETER_CONFIG, dot_options, lazy_kernel
from .layout import ConvGeometry, FilterLayout

__all__ = ["conv_backward_input", "conv_backward_filters", "MIN_PIXELS_PER_SPLIT"]

# Split-K of the filter gradient: aim for this many programs, each reducing >= this many pixels.
TARGET_PROGRAMS = 1024
MIN_PIXELS_PER_SPLIT = 4096

_CONFIGS = GEMM_CONFIGS + [
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4, num_stages=3),
]


@lazy_kernel(_CONFIGS, key=AUTOTUNE_KEY, interpreter_config=INTERPRETER_CONFIG)
def _rs_conv_bwd_input_kernel(
        gy_ptr, w_ptr, dx_ptr, support_ptr, offset_ptr,
        B, C, H, W, O, Ho, Wo, R, S, Lr, Ls, K, stride, padding,
        sgb, sgo, sgt, sgh, sgw, sdb, sdc, sdt, sdh, sdw,
        LIFTING: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    plane = tl.program_id(2)
    if LIFTING:
        r_in = plane
        s_in = plane + S - 1
        num_i = R
        num_j = S
    else:
        r_in = plane // S
        s_in = plane % S
        num_i = Lr
        num_j = tl.minimum(Ls, s_in + 1)

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
    for i in range(0, num_i):
        r = (r_in - i + R) % R
        for j in range(0, num_j):
            s = s_in - j
            if LIFTING:
                a = 0
            else:
                a = i * Ls + j
            n = tl.load(support_ptr + s)
            shift = (K - n) // 2 - padding
            reduction = n * n * O
            w_block = (w_ptr + tl.load(offset_ptr + s)
                       + (a * R + r).to(tl.int64) * (n * n * C) * O)
            gy_plane = gy_rows + (r * S + s).to(tl.int64) * sgt
            for k0 in range(0, reduction, BLOCK_K):
                k = k0 + tl.arange(0, BLOCK_K)
                k_ok = k < reduction
                o = k % O
                tap = k // O
                h_num = hi[:, None] - shift - (tap // n)[None, :]
                w_num = wi[:, None] - shift - (tap % n)[None, :]
                ho = h_num // stride
                wo = w_num // stride
                ok = (m_ok[:, None] & k_ok[None, :] & (h_num >= 0) & (w_num >= 0)
                      & (ho * stride == h_num) & (wo * stride == w_num) & (ho < Ho) & (wo < Wo))
                g_tile = tl.load(gy_plane[:, None] + o[None, :] * sgo + ho * sgh + wo * sgw,
                                 mask=ok, other=0.0)
                w_tile = tl.load(w_block + (tap * C * O + o)[:, None] + c[None, :] * O,
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
        x_ptr, gy_ptr, dw_ptr, support_ptr, offset_ptr,
        B, C, H, W, O, Ho, Wo, R, S, Lr, Ls, K, stride, padding,
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
    i = a // Ls
    j = a % Ls
    n = tl.load(support_ptr + s)
    shift = (K - n) // 2 - padding
    reduction = n * n * C

    k = pid_k * BLOCK_M + tl.arange(0, BLOCK_M)
    k_ok = k < reduction
    c = k % C
    tap = k // C
    u = tap // n
    v = tap % n
    o = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = o < O
    x_rows = x_ptr + (((r + i) % R) * S + s + j).to(tl.int64) * sxt + c * sxc
    gy_cols = gy_ptr + t.to(tl.int64) * sgt + o * sgo
    compute_dtype = x_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    num_pixels = B * Ho * Wo
    chunk = tl.cdiv(tl.cdiv(num_pixels, splits), BLOCK_K) * BLOCK_K
    m_start = split * chunk
    m_end = tl.minimum(m_start + chunk, num_pixels)
    m_end = tl.where((s + j >= S) | (pid_k * BLOCK_M >= reduction), m_start, m_end)
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
    dw_offsets = (split.to(tl.int64) * numel + tl.load(offset_ptr + s)
                  + (a * R + r).to(tl.int64) * reduction * O + k[:, None] * O + o[None, :])
    tl.store(dw_ptr + dw_offsets, acc, mask=k_ok[:, None] & o_ok[None, :])


def _strides_5d(z: torch.Tensor, lifting: bool):
    """``(b, c, t, h, w)`` strides; the slice stride of a 4-D (lifting) tensor is 0."""
    if lifting:
        return z.stride(0), z.stride(1), 0, z.stride(2), z.stride(3)
    return tuple(z.stride())


def conv_backward_input(grad_y: torch.Tensor, filters: torch.Tensor, x_shape, x_dtype,
                        geo: ConvGeometry, layout: FilterLayout) -> torch.Tensor:
    """grad_y ``[B, O, T, H', W']``, filter buffer -> grad_x of shape ``x_shape``, dtype ``x_dtype``."""
    grad_x = torch.empty(x_shape, dtype=x_dtype, device=grad_y.device)
    num_planes = 1 if geo.lifting else geo.group_size
    grid = lambda meta: (triton.cdiv(geo.batch * geo.height * geo.width, meta["BLOCK_M"]),
                         triton.cdiv(geo.in_channels, meta["BLOCK_N"]), num_planes)
    _rs_conv_bwd_input_kernel[grid](
        grad_y, filters, grad_x, layout.supports_device, layout.offsets_device,
        *geo.kernel_args(), *grad_y.stride(), *_strides_5d(grad_x, geo.lifting),
        LIFTING=geo.lifting, **dot_options(grad_y.dtype))
    return grad_x


def conv_backward_filters(grad_y: torch.Tensor, x: torch.Tensor, geo: ConvGeometry,
                          layout: FilterLayout) -> torch.Tensor:
    """grad_y ``[B, O, T, H', W']`` (x's dtype), x -> float32 gradient of the filter buffer."""
    max_rows = layout.max_reduction * geo.in_channels
    num_pixels = geo.batch * geo.out_height * geo.out_width
    programs = (triton.cdiv(max_rows, 64) * triton.cdiv(geo.out_channels, 64)
                * geo.num_offsets * geo.group_size)
    splits = max(1, min(triton.cdiv(TARGET_PROGRAMS, programs),
                        num_pixels // MIN_PIXELS_PER_SPLIT))
    grad_filters = torch.empty(splits, layout.numel, dtype=torch.float32, device=x.device)
    grid = lambda meta: (triton.cdiv(max_rows, meta["BLOCK_M"]) * splits,
                         triton.cdiv(geo.out_channels, meta["BLOCK_N"]),
                         geo.num_offsets * geo.group_size)
    _rs_conv_bwd_filter_kernel[grid](
        x, grad_y, grad_filters, layout.supports_device, layout.offsets_device,
        *geo.kernel_args(), *_strides_5d(x, geo.lifting), *grad_y.stride(), splits,
        layout.numel, **dot_options(x.dtype))
    return grad_filters[0] if splits == 1 else grad_filters.sum(dim=0)
