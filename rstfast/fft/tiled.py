"""CPU execution of the FFT backend on tile-major spectra (C++ kernels, ``csrc/fft_cpu.cpp``).

Spectra are ``[tiles, planes, 2, L]`` tensors: ``L = 64 bytes / itemsize`` consecutive frequency
bins ``b = k_h * half + k_w`` per tile (bins past ``rows * half`` are zero padding), real and
imaginary parts apart ("planar"), the bins innermost. Planes are ordered as the products read them:

* input spectra ``X``: ``(q, b, c)`` in the forward, ``(q, c, b)`` in the backward, for every
  input slice ``q`` at once;
* filter spectra ``K`` of a chunk: ``(i, k, o, c)`` (offset index ``i``, rotation ``k`` in the
  chunk);
* output (gradient) spectra ``Y`` / ``G`` of a chunk: ``(b, k, o)``;
* filter-gradient spectra ``H`` of a chunk: ``(i, k, o, c)``; input-gradient spectra ``GX``:
  ``(q, c, b)``, summed over every chunk.

Per bin, with ``Khat = conj(DFT(g))`` and ``Gc = conj(DFT(grad_y))`` (the conventions of
:mod:`rstfast.fft`): ``Y[k] = sum_{(i, q) read by k} X[q] @ K[i, k]^T``, ``GX[q]^T += sum_{(k, i)
reading q} K[i, k]^T @ Gc[k]^T``, ``H[i, k] = Gc[k]^T @ X[q]`` -- each one call of
``rstfast_cpp::fft_tile_products`` per chunk (bins in the vector lanes, every read of an output
accumulated in registers). The orders put the contracted index of the second operand
innermost: its panel is read in order while it stays in cache (the first operand's rows
stream past it).
"""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

import torch

from ..geometry import Geometry
from .plan import Chunk, Plan, as_group, filter_gradient, filter_slots, largest
from .transforms import Axis, _half_forward, _half_inverse, _phases

__all__ = ["unavailable_reason", "lanes", "tiles", "conv_forward", "conv_backward"]


def unavailable_reason() -> Optional[str]:
    """None when the C++ CPU kernels are built and loaded, else why not."""
    from ..csrc.build import ensure_built
    return ensure_built(cuda=False)


def lanes(dtype: torch.dtype) -> int:
    """Bins per tile: one 64-byte cache line of ``dtype``."""
    return 64 // dtype.itemsize


def tiles(plan: Plan, dtype: torch.dtype) -> int:
    return -(-plan.bins // lanes(dtype))


def _spectrum(like: torch.Tensor, plan: Plan, planes: int, zero: bool = False) -> torch.Tensor:
    """A new tile-major spectrum ``[tiles, planes, 2, L]`` of x's real dtype."""
    shape = (tiles(plan, like.dtype), planes, 2, lanes(like.dtype))
    return like.new_zeros(shape) if zero else like.new_empty(shape)


class _Buffer:
    """One spectrum buffer of a call, viewed as ``[tiles, planes, 2, L]`` for each block: a
    block of more than a few MiB allocated afresh would be page-faulted anew every block."""

    def __init__(self, like: torch.Tensor, plan: Plan, planes: int):
        self.data = _spectrum(like, plan, planes)

    def view(self, planes: int) -> torch.Tensor:
        return self.data[:, :planes]


@functools.lru_cache(maxsize=256)
def _forward_tables(rows: Axis, cols: Axis, dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
    """``cols [W, 2*half]`` (real / imaginary part of column frequency ``k`` at ``2k``, ``2k+1``)
    and ``rows [N_h, H, 2]`` (the complex phases of the row frequencies)."""
    cpu = torch.device("cpu")
    row_phases = _phases(rows, rows.size, cpu, dtype.to_complex())
    return (_half_forward(cols, cpu, dtype).contiguous(),
            torch.view_as_real(row_phases).contiguous())


@functools.lru_cache(maxsize=256)
def _inverse_tables(rows: Axis, cols: Axis, dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
    """``cols [2*half, W]`` (the real column inverse, pair weights and ``1/(N_h N_w)`` included)
    and ``rows [H, N_h, 2]``: the inverse of :func:`_forward_tables` for the opposite signs."""
    cpu = torch.device("cpu")
    row_phases = _phases(rows, rows.size, cpu, dtype.to_complex()).t()
    return (_half_inverse(cols, 1.0 / (rows.size * cols.size), cpu, dtype).contiguous(),
            torch.view_as_real(row_phases.contiguous()).contiguous())


def to_tiles(z: torch.Tensor, out: torch.Tensor, rows: Axis, cols: Axis) -> None:
    """Spectra of the real planes ``z [D0, D1, D2, rows.count, cols.count]`` (any strides) into
    ``out [tiles, D0*D1*D2, 2, L]``: ``Z[k_h, k_w] = sum z[h, w] phase_rows[k_h, h]
    phase_cols[k_w, w]`` (as :func:`rstfast.fft.transforms.to_spectrum`)."""
    torch.ops.rstfast_cpp.fft_to_tiles(z, out, *_forward_tables(rows, cols, z.dtype))


def from_tiles(spec: torch.Tensor, z: torch.Tensor, rows: Axis, cols: Axis) -> None:
    """The real planes ``z [D0, D1, D2, rows.count, cols.count]`` (written, any strides) of the
    spectra ``spec`` (as :func:`rstfast.fft.transforms.from_spectrum`)."""
    torch.ops.rstfast_cpp.fft_from_tiles(spec, z, *_inverse_tables(rows, cols, z.dtype))


def products(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
             groups: Sequence[Tuple[int, Sequence[Tuple[int, int]]]], sizes: Sequence[int],
             strides: Sequence[int], accumulate: bool) -> None:
    """``out[g][m, n] (+)= sum_{(a_off, b_off) of group g} sum_k a[a_off + m*am + k*ak] *
    b[b_off + k*bk + n*bn]`` per bin; ``groups`` lists ``(out offset, pairs)``, ``sizes`` is
    ``[M, N, K]``, ``strides`` ``[am, ak, bk, bn, om, on]``, all in planes."""
    a_offsets = [pair[0] for _, pairs in groups for pair in pairs]
    b_offsets = [pair[1] for _, pairs in groups for pair in pairs]
    ends, total = [], 0
    for _, pairs in groups:
        total += len(pairs)
        ends.append(total)
    torch.ops.rstfast_cpp.fft_tile_products(a, b, out, a_offsets, b_offsets,
                                            [offset for offset, _ in groups], ends, list(sizes),
                                            list(strides), accumulate)


def _input_spectra(x5: torch.Tensor, plan: Plan, batch_last: bool) -> torch.Tensor:
    """``X`` of every input slice, planes ``(q, b, c)`` or, ``batch_last``, ``(q, c, b)``."""
    batch, channels, slices = x5.shape[:3]
    spectra = _spectrum(x5, plan, slices * batch * channels)
    to_tiles(x5.permute(2, 1, 0, 3, 4) if batch_last else x5.permute(2, 0, 1, 3, 4), spectra,
             *plan.input_axes())
    return spectra


def _block(count: int, budget: int, per_channel: int) -> int:
    """Channels per block (at least 1) whose buffers of ``per_channel`` bytes each stay within
    ``budget`` (``plan.chunk_bytes``)."""
    return max(1, min(count, budget // max(1, per_channel)))


def _channel_blocks(count: int, step: int) -> List[slice]:
    return [slice(first, min(first + step, count)) for first in range(0, count, step)]


def _filter_spectra(filters: torch.Tensor, plan: Plan, chunk: Chunk, outs: slice, ins: slice,
                    spectra: torch.Tensor) -> None:
    """``K`` of the chunk's slots for the output channels ``outs`` and input channels ``ins``
    into ``spectra``, planes ``(i, k, o, c)``."""
    per_offset = spectra.shape[1] // len(chunk.offsets)
    for i, taps in enumerate(filter_slots(filters, plan.geo, chunk)):
        to_tiles(taps[:, outs, ins].to(spectra.dtype),
                 spectra[:, i * per_offset:(i + 1) * per_offset], *plan.filter_axes(chunk.scale))


def _output_view(y: torch.Tensor, chunk: Chunk, outs: slice) -> torch.Tensor:
    """The chunk's slices and channels ``outs`` of ``y [B, O, T, H', W']`` as planes
    ``(b, k, o)``: a view."""
    return y[:, outs, chunk.slices].permute(0, 2, 1, 3, 4)


def conv_forward(x: torch.Tensor, filters: torch.Tensor, bias: Optional[torch.Tensor],
                 plan: Plan, chunks: List[Chunk]) -> torch.Tensor:
    """y ``[B, O, T, H', W']`` (contiguous, x's dtype); see :func:`rstfast.fft.conv_forward`."""
    geo = plan.geo
    x5 = as_group(x, geo)
    batch, channels = x.shape[0], geo.in_channels
    y = x.new_empty(geo.out_shape(x.shape))
    spec_x = _input_spectra(x5, plan, batch_last=False)
    per_plane = tiles(plan, x.dtype) * 2 * lanes(x.dtype) * x.dtype.itemsize
    widest, rotations_most = largest(chunks)
    step = _block(geo.out_channels, plan.chunk_bytes,
                  per_plane * max(widest * channels, batch * rotations_most))
    filter_buffer = _Buffer(x, plan, widest * step * channels)
    output_buffer = _Buffer(x, plan, batch * rotations_most * step)
    for chunk, outs in ((chunk, outs) for chunk in chunks
                        for outs in _channel_blocks(geo.out_channels, step)):
        rotations, width = len(chunk.rotations), outs.stop - outs.start
        spec_k = filter_buffer.view(len(chunk.offsets) * rotations * width * channels)
        _filter_spectra(filters, plan, chunk, outs, slice(None), spec_k)
        spec_y = output_buffer.view(batch * rotations * width)
        groups = [(k * width, [(q * batch * channels, (i * rotations + k) * width * channels)
                               for kk, i, q in chunk.reads if kk == k])
                  for k in range(rotations)]
        products(spec_x, spec_k, spec_y, groups, (batch, width, channels),
                 (channels, 1, 1, channels, rotations * width, 1), accumulate=False)
        if bias is not None:           # a constant: the zero frequency times N_h * N_w
            spec_y[0, :, 0, 0].view(batch, rotations, width).add_(
                bias[outs].to(x.dtype) * (plan.rows * plan.cols))
        from_tiles(spec_y, _output_view(y, chunk, outs), *plan.output_axes())
    return y


def _backward_block(spec_g: torch.Tensor, spec_x: Optional[torch.Tensor],
                    spec_gx: Optional[torch.Tensor], grad_filters: Optional[torch.Tensor],
                    filters: torch.Tensor, filter_buffer: _Buffer, plan: Plan, chunk: Chunk,
                    outs: slice, ins: slice, batch: int) -> None:
    """The gradients' share of one chunk's output channels ``outs`` and input channels ``ins``:
    ``GX`` (when ``spec_gx``) gets ``K^T @ Gc^T`` summed over ``outs``; the filter gradient's
    taps of (``outs``, ``ins``) (when ``grad_filters``) are ``DFT^-1(Gc^T @ X)``."""
    geo = plan.geo
    channels, rotations = geo.in_channels, len(chunk.rotations)
    width, depth = outs.stop - outs.start, ins.stop - ins.start
    per_offset = rotations * width * depth
    spec_k = filter_buffer.view(len(chunk.offsets) * per_offset)
    if spec_gx is not None:         # conj(DFT(grad_x[q]))^T += K[i, k]^T @ conj(G[k])^T
        _filter_spectra(filters, plan, chunk, outs, ins, spec_k)
        groups = [((q * channels + ins.start) * batch,
                   [((i * rotations + k) * depth * width, k * width) for k, i in pairs])
                  for q, pairs in chunk.readers().items()]
        products(spec_k, spec_g, spec_gx, groups, (depth, batch, width),
                 (1, depth, 1, rotations * width, batch, 1), accumulate=True)
    if grad_filters is not None:    # H[i, k] = conj(G[k])^T @ X[q], back at the taps
        groups = [((i * rotations + k) * width * depth,
                   [(k * width, (q * channels + ins.start) * batch)])
                  for k, i, q in chunk.reads]
        products(spec_g, spec_x, spec_k, groups, (width, depth, batch),
                 (1, rotations * width, 1, batch, depth, 1), accumulate=False)
        for i, taps in enumerate(filter_slots(grad_filters, geo, chunk)):
            taps = taps[:, outs, ins]
            computed = taps if taps.dtype == spec_k.dtype else taps.new_empty(
                taps.shape, dtype=spec_k.dtype)
            from_tiles(spec_k[:, i * per_offset:(i + 1) * per_offset], computed,
                       *plan.filter_axes(chunk.scale))
            if computed is not taps:
                taps.copy_(computed)


def conv_backward(grad_y: torch.Tensor, x: torch.Tensor, filters: torch.Tensor, plan: Plan,
                  chunks: List[Chunk], need_input: bool, need_filters: bool
                  ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(grad_x, grad_filters)``; see :func:`rstfast.fft.conv_backward`."""
    geo = plan.geo
    x5, dtype = as_group(x, geo), x.dtype
    batch, channels = x.shape[0], geo.in_channels
    grad_y = grad_y.to(dtype)
    spec_x = _input_spectra(x5, plan, batch_last=True) if need_filters else None
    spec_gx = _spectrum(x, plan, x5.shape[2] * batch * channels, zero=True) if need_input else None
    grad_filters = filter_gradient(filters, geo) if need_filters else None
    per_plane = tiles(plan, dtype) * 2 * lanes(dtype) * dtype.itemsize
    widest, rotations_most = largest(chunks)
    budget = plan.chunk_bytes
    # Output-channel blocks bound G; input-channel blocks within them bound K (and H, which
    # reuses K's buffer). The input gradient sums over the output-channel blocks.
    out_step = _block(geo.out_channels, budget, per_plane * batch * rotations_most)
    in_step = _block(channels, budget, per_plane * widest * out_step)
    filter_buffer = _Buffer(x, plan, widest * out_step * in_step)
    output_buffer = _Buffer(x, plan, batch * rotations_most * out_step)
    for chunk in chunks:
        rotations = len(chunk.rotations)
        for outs in _channel_blocks(geo.out_channels, out_step):
            width = outs.stop - outs.start
            spec_g = output_buffer.view(batch * rotations * width)       # planes (b, k, o)
            to_tiles(_output_view(grad_y, chunk, outs), spec_g, *plan.output_axes())
            for ins in _channel_blocks(channels, in_step):
                _backward_block(spec_g, spec_x, spec_gx, grad_filters, filters, filter_buffer,
                                plan, chunk, outs, ins, batch)
    del spec_x, filter_buffer, output_buffer      # before grad_x exists
    grad_x = None
    if need_input:
        grad_x5 = x5.new_empty(x5.shape)
        from_tiles(spec_gx, grad_x5.permute(2, 1, 0, 3, 4), *plan.input_axes())
        grad_x = grad_x5.squeeze(2) if geo.lifting else grad_x5
    return grad_x, grad_filters
