"""Execution of the FFT backend with torch ops only: batched complex matmuls over the bins
(cuBLAS on CUDA; on CPU the fallback when the C++ kernels are unavailable).

Spectra are complex ``[bins, rows, cols]`` matrices per frequency bin: ``X[q]`` ``[bins, B, C]``,
``Khat[t, a]`` ``[bins, O, C]``, ``Y[t]`` / ``Gc[t]`` ``[bins, B, O]``; the products are
``torch.bmm`` / ``baddbmm`` per read, the transforms :func:`.transforms.to_spectrum` /
:func:`.transforms.from_spectrum`. The chunk buffers are allocated once per call and reused by
every chunk (a fresh block of more than 32 MiB would be page-faulted anew each time); an input
slice's spectrum is computed at its first read and dropped after its last, and its gradient's
spectrum is summed from the first reader to the last and then transformed back.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from .plan import Chunk, Plan, as_group, filter_gradient, filter_slots, largest, last_reads
from .transforms import from_spectrum, to_spectrum

__all__ = ["conv_forward", "conv_backward"]


def _input_spectrum(x5: torch.Tensor, q: int, plan: Plan) -> torch.Tensor:
    """``X[bin, b, c]`` of input slice ``q`` of x ``[B, C, T_in, H, W]``: ``[bins, B, C]``."""
    return to_spectrum(x5[:, :, q:q + 1], (2,), (0, 1), *plan.input_axes()).view(
        plan.bins, x5.shape[0], x5.shape[1])


def _new_reads(chunk: Chunk, held: dict) -> List[int]:
    """Input slices the chunk reads that are not in ``held`` yet."""
    return sorted({q for _, _, q in chunk.reads} - held.keys())


class _Reused:
    """``count`` complex buffers ``[rows, N_h, N_w//2 + 1, *inner]`` for the largest chunk, reused
    by every chunk."""

    def __init__(self, like: torch.Tensor, count: int, chunks: List[Chunk], plan: Plan,
                 inner: Tuple[int, ...]):
        _, rows = largest(chunks)
        self.buffers = [like.new_empty(rows, plan.rows, plan.half, *inner,
                                       dtype=like.dtype.to_complex()) for _ in range(count)]

    def views(self, chunk: Chunk, count: int = 1) -> List[torch.Tensor]:
        """The first ``len(chunk.rotations)`` rows of the first ``count`` buffers."""
        return [buffer[:len(chunk.rotations)] for buffer in self.buffers[:count]]


def _filter_spectra(filters: torch.Tensor, plan: Plan, chunk: Chunk, dtype: torch.dtype,
                    buffers: _Reused) -> List[torch.Tensor]:
    """Per offset ``offsets[i]`` of the chunk, ``Khat[k, bin, o, c]`` of its slots
    ``(offsets[i], rotations[k])``: ``[len(rotations), bins, O, C]`` (in ``buffers``; the taps'
    own ``(O, C)`` order keeps the transform's transposition a plain 2-D one)."""
    spectra = buffers.views(chunk, len(chunk.offsets))
    for taps, spectrum in zip(filter_slots(filters, plan.geo, chunk), spectra):
        to_spectrum(taps.to(dtype), (0,), (1, 2), *plan.filter_axes(chunk.scale), out=spectrum)
    return [spectrum.flatten(1, 2) for spectrum in spectra]


def conv_forward(x: torch.Tensor, filters: torch.Tensor, bias: Optional[torch.Tensor],
                 plan: Plan, chunks: List[Chunk]) -> torch.Tensor:
    """y ``[B, O, T, H', W']`` (contiguous, x's dtype); see :func:`rstfast.fft.conv_forward`."""
    geo = plan.geo
    x5, batch, out_channels = as_group(x, geo), x.shape[0], geo.out_channels
    y = x.new_empty(geo.out_shape(x.shape))
    filter_buffers = _Reused(x, geo.num_offsets, chunks, plan, (out_channels, geo.in_channels))
    output_buffer = _Reused(x, 1, chunks, plan, (batch, out_channels))
    spec_x = {}                         # input slice q -> X[q], first to last read
    for chunk, done in zip(chunks, last_reads(chunks)):
        for q in _new_reads(chunk, spec_x):
            spec_x[q] = _input_spectrum(x5, q, plan)
        spec_k = _filter_spectra(filters, plan, chunk, x.dtype, filter_buffers)
        spec_y = output_buffer.views(chunk)[0].flatten(1, 2)       # [R_c, bins, B, O]
        for k, i, q in chunk.reads:     # i == 0: the first read of slice k
            if i == 0:
                torch.bmm(spec_x[q], spec_k[i][k].mT, out=spec_y[k])
            else:
                spec_y[k].baddbmm_(spec_x[q], spec_k[i][k].mT)
        if bias is not None:           # a constant: the zero frequency times N_h * N_w
            spec_y[:, 0] += bias.to(x.dtype) * (plan.rows * plan.cols)
        from_spectrum(spec_y.view(-1, plan.rows, plan.half, batch, out_channels), 1,
                      *plan.output_axes(), (1, 2, 0), out=y[:, :, chunk.slices])
        for q in done:
            del spec_x[q]
    return y


def conv_backward(grad_y: torch.Tensor, x: torch.Tensor, filters: torch.Tensor, plan: Plan,
                  chunks: List[Chunk], need_input: bool, need_filters: bool
                  ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(grad_x, grad_filters)``; see :func:`rstfast.fft.conv_backward`."""
    geo = plan.geo
    x5, dtype = as_group(x, geo), x.dtype
    batch = x.shape[0]
    grad_y = grad_y.to(dtype)
    grad_x5 = x5.new_empty(x5.shape) if need_input else None
    grad_filters = filter_gradient(filters, geo) if need_filters else None
    filter_buffers, gradient_buffers = (
        _Reused(x, geo.num_offsets, chunks, plan, (geo.out_channels, geo.in_channels))
        if need else None for need in (need_input, need_filters))
    output_buffer = _Reused(x, 1, chunks, plan, (batch, geo.out_channels))
    spec_x = {}                         # q -> X[q] (filter gradient), first to last read
    spec_gx = {}                        # q -> conj(DFT(grad_x[:, :, q])), summed over readers
    for chunk, done in zip(chunks, last_reads(chunks)):
        for q in _new_reads(chunk, spec_x if need_filters else spec_gx):
            if need_filters:
                spec_x[q] = _input_spectrum(x5, q, plan)
            if need_input:
                spec_gx[q] = x5.new_zeros(plan.bins, batch, geo.in_channels,
                                          dtype=dtype.to_complex())
        spec_g = to_spectrum(grad_y[:, :, chunk.slices], (2,), (0, 1), *plan.output_axes(),
                             out=output_buffer.views(chunk)[0]).flatten(1, 2)
        # spec_g [R_c, bins, B, O]; spec_x and spec_gx hold the same slices when both exist
        if need_input:                  # conj(DFT(grad_x)) += conj(G) @ Khat
            spec_k = _filter_spectra(filters, plan, chunk, dtype, filter_buffers)
            for k, i, q in chunk.reads:
                spec_gx[q].baddbmm_(spec_g[k], spec_k[i][k])
        if need_filters:                # conj(G)^T @ X, back at the tap positions
            spec_h = gradient_buffers.views(chunk, len(chunk.offsets))
            for k, i, q in chunk.reads:
                torch.bmm(spec_g[k].mT, spec_x[q], out=spec_h[i][k].flatten(0, 1))
            for spectrum, taps in zip(spec_h, filter_slots(grad_filters, geo, chunk)):
                from_spectrum(spectrum, 1, *plan.filter_axes(chunk.scale), (0, 1, 2), out=taps)
        for q in done:
            spec_x.pop(q, None)
            if need_input:
                from_spectrum(spec_gx.pop(q).view(1, plan.rows, plan.half, batch,
                                                  geo.in_channels),
                              1, *plan.input_axes(), (1, 2, 0), out=grad_x5[:, :, q:q + 1])
    if need_input:                      # slices no output reads
        for q in range(x5.shape[2]):
            if not geo.readers(q):
                grad_x5[:, :, q].zero_()
    grad_x = None if grad_x5 is None else grad_x5.squeeze(2) if geo.lifting else grad_x5
    return grad_x, grad_filters
