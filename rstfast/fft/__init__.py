"""FFT-domain kernels of the roto-scale convolutions: forward, input gradient, filter gradient.

Kernel contract (the cropped filter buffer and index map of :mod:`rstfast.geometry`)::

    conv_forward(x, filters, bias, geo) -> y [B, O, T, H', W']
    conv_backward(grad_y, x, filters, geo, need_input, need_filters) -> (grad_x, grad_filters)

``x`` is ``[B, C, H, W]`` (lifting) or ``[B, C, T, H, W]`` (``t = r*S + s``), any strides, float32
or float64; ``filters`` is the flat buffer (per scale ``s`` a block ``[A, R, O, C, n_s, n_s]``);
``y[b, o, t, h, w] = bias[o] + sum_{a, c, u, v} x[b, c, q(t, a), h*st + u + d_s, w*st + v + d_s] *
block_s[a, r, o, c, u, v]`` with ``q = geo.input_slice(t, a)`` and ``d_s = geo.crop(s) - p``.

Algorithm, per spatial axis of transform size ``N`` (:func:`transform_size`, large enough that the
circular correlation equals the zero-padded one at every output and, in the backward, at every
input pixel):

* input spectra ``X[q] = DFT(x[:, :, q])`` once per input slice, ``[bins, B, C]`` each;
* filter spectra ``Khat[t, a] = conj(DFT(g))``, ``g`` the ``n_s x n_s`` taps placed at
  ``(u + d_s) mod N``, ``[bins, O, C]`` each, from the cropped taps only (two small matmuls);
* per frequency bin ``Yhat[t] = sum_a X[q(t, a)] @ Khat[t, a]^T`` (batched complex matmuls over
  the bins), then ``y[:, :, t]`` = the inverse DFT read at the output rows ``h*st`` only, the bias
  folded into the zero frequency;
* backward with ``Gc[t] = conj(DFT(grad_y[:, :, t] placed at h*st))``: the input gradient's
  conjugate spectrum ``sum_{(t, a) reading q} Gc[t] @ Khat[t, a]``, the filter gradient
  ``DFT^-1(Gc[t]^T @ X[q])`` read at the ``n_s x n_s`` tap positions (the adjoint of the filter
  spectrum map, half-spectrum weights included).

All DFTs are small matmuls (:mod:`.transforms`). The output slices are processed in chunks of one
scale and consecutive rotations, as many as keep each of the chunk's spectra (one offset's filter
spectra, the output spectra) within :data:`CHUNK_BYTES` (at least one slice per chunk); the
chunk buffers are allocated once per call. An input slice's spectrum is computed at its first
read and dropped after its last, and its gradient's spectrum is summed from the first reader to
the last and then transformed back: with ``scale_size = 1`` only the ``R`` input slices of the
current scale are held (about 1.6x their size in x for the paper layers, each spectrum).
Autocast is off inside; results have x's dtype. Complex matmuls run on ``torch.bmm`` (MKL /
cuBLAS; on CUDA no TF32 unless the caller enables it for matmuls).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from ..geometry import Geometry, out_side
from .transforms import Axis, from_spectrum, to_spectrum

__all__ = ["DTYPES", "ALGORITHM", "CHUNK_BYTES", "unavailable_reason", "conv_forward",
           "conv_backward", "flops", "transform_size"]

DTYPES = {"cpu": (torch.float32, torch.float64), "cuda": (torch.float32, torch.float64)}
ALGORITHM = "fft"                # the cost model's throughput class (rstfast.autotune)

# Largest spectrum tensor of a chunk of output slices: one offset's filter spectra (or their
# gradient) or the output (gradient) spectra, unless one slice needs more. glibc serves blocks up
# to 32 MiB from its heap and reuses them chunk after chunk; larger blocks are fresh mmaps whose
# page faults, on every chunk, cost about as much as the matmuls that fill them (measured on CPU).
# A chunk holds at most (2A + 3) such tensors.
CHUNK_BYTES = 24 * 2 ** 20


def unavailable_reason(device: torch.device) -> Optional[str]:
    """None where the kernels run (CPU; CUDA when torch sees a GPU), else why not."""
    device = torch.device(device)
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "torch sees no CUDA device"
    return f"the FFT backend has no kernels for device type {device.type!r}"


def transform_size(geo: Geometry, side: int) -> int:
    """Smallest transform size ``N`` along an axis of ``side`` input pixels without aliasing.

    Output row ``m = h*st`` reads input rows ``m + u + d_s`` (``u < n_s``), from ``lo = min_s d_s``
    to ``hi = (H'-1)*st + max_s (d_s + n_s - 1)``. Circularly, a read row ``j`` outside the image
    lands on ``j mod N``, which must be a zero row (``side <= j mod N < N``): ``N >= side - lo`` for
    the rows above and ``N > hi`` for those below. The same bounds keep the input gradient (every
    input pixel) and the filter gradient free of wrapped terms; ``N`` also holds the image and the
    output rows.
    """
    last_row = (out_side(side, geo.kernel_size, geo.stride, geo.padding) - 1) * geo.stride
    shifts = [geo.crop(s) - geo.padding for s in range(geo.num_scales)]
    lowest = min(shifts)
    highest = last_row + max(d + n - 1 for d, n in zip(shifts, geo.support))
    return max(side, side - lowest, highest + 1, last_row + 1)


def flops(geo: Geometry, x_shape) -> float:
    """Forward FLOPs of this algorithm (the cost model's numerator): ``8 B C O bins`` per read
    ``(t, a, q)`` (the per-bin complex products), ``4 O C bins n_s`` per read (the filter spectra
    from the ``n_s x n_s`` taps) and ``5 N log2 N`` per transformed plane of x and y, with
    ``bins = N_h (N_w/2 + 1)`` at the transform sizes of :func:`transform_size`."""
    batch, height, width = x_shape[0], x_shape[-2], x_shape[-1]
    n_h, n_w = transform_size(geo, height), transform_size(geo, width)
    bins = n_h * (n_w // 2 + 1)
    supports = [geo.support[t % geo.num_scales] for t, _, _ in geo.reads]
    products = 8 * batch * geo.in_channels * geo.out_channels * bins * len(supports)
    spectra = 4 * geo.out_channels * geo.in_channels * bins * sum(supports)
    planes = batch * (geo.in_channels * geo.in_slices + geo.out_channels * geo.group_size)
    transforms = 5 * planes * n_h * n_w * math.log2(n_h * n_w)
    return float(products + spectra + transforms)


@dataclass(frozen=True)
class _Plan:
    """Transform sizes of one call and the sample axes of x, y and each scale's filters."""
    geo: Geometry
    height: int
    width: int

    @functools.cached_property
    def rows(self) -> int:
        return transform_size(self.geo, self.height)

    @functools.cached_property
    def cols(self) -> int:
        return transform_size(self.geo, self.width)

    @property
    def bins(self) -> int:
        return self.rows * (self.cols // 2 + 1)

    def input_axes(self) -> Tuple[Axis, Axis]:
        """Image rows / columns ``0 .. H-1``; sign -1 (``X = DFT(x)``)."""
        return (Axis(self.rows, 0, self.height, 1, -1), Axis(self.cols, 0, self.width, 1, -1))

    def output_axes(self) -> Tuple[Axis, Axis]:
        """Output rows / columns at ``h*st``; sign +1 (``Gc = conj(DFT(grad_y))``, inverse of Y)."""
        out_h, out_w = self.geo.out_size(self.height, self.width)
        stride = self.geo.stride
        return (Axis(self.rows, 0, out_h, stride, 1), Axis(self.cols, 0, out_w, stride, 1))

    def filter_axes(self, s: int) -> Tuple[Axis, Axis]:
        """Taps of scale ``s`` at ``u + crop_s - p``; sign +1 (``Khat = conj(DFT(g))``)."""
        n, shift = self.geo.support[s], self.geo.crop(s) - self.geo.padding
        return (Axis(self.rows, shift, n, 1, 1), Axis(self.cols, shift, n, 1, 1))


@dataclass(frozen=True)
class _Chunk:
    """Output slices ``t = r*S + s`` (``r`` in ``rotations``) of one scale ``s`` that share the
    weight offsets ``offsets`` reading an input slice; ``reads`` lists every
    ``(position in the chunk, index into offsets, input slice q)``."""
    scale: int
    rotations: range
    slices: slice
    offsets: Tuple[int, ...]
    reads: Tuple[Tuple[int, int, int], ...]


def _chunks(geo: Geometry, slice_bytes: int) -> List[_Chunk]:
    """Scale by scale, runs of consecutive rotations with the same valid offsets, at most
    ``CHUNK_BYTES // slice_bytes`` (at least 1) slices per chunk."""
    per_chunk = max(1, CHUNK_BYTES // max(1, slice_bytes))
    num_scales = geo.num_scales
    chunks = []
    for s in range(num_scales):
        runs: List[Tuple[Tuple[int, ...], List[int]]] = []
        for r in range(geo.num_rotations):
            row = geo.read_table[r * num_scales + s]
            valid = tuple(a for a, q in enumerate(row) if q >= 0)
            if runs and runs[-1][0] == valid and len(runs[-1][1]) < per_chunk:
                runs[-1][1].append(r)
            else:
                runs.append((valid, [r]))
        for valid, rotations in runs:
            reads = tuple((k, i, geo.read_table[r * num_scales + s][a])
                          for k, r in enumerate(rotations) for i, a in enumerate(valid))
            first, last = rotations[0], rotations[-1]
            chunks.append(_Chunk(s, range(first, last + 1),
                                 slice(first * num_scales + s, last * num_scales + s + 1,
                                       num_scales), valid, reads))
    return chunks


def _slice_bytes(geo: Geometry, plan: _Plan, batch: int, dtype: torch.dtype) -> int:
    """Bytes per output slice of the larger chunk tensor: one offset's filter spectra
    ``[bins, C, O]`` or the output spectra ``[bins, B, O]``."""
    return (dtype.to_complex().itemsize * plan.bins * geo.out_channels
            * max(geo.in_channels, batch))


def _as_group(x: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """``[B, C, T_in, H, W]`` view of x (the lifting input gets ``T_in = 1``)."""
    return x.unsqueeze(2) if geo.lifting else x


def _input_spectrum(x5: torch.Tensor, q: int, plan: _Plan) -> torch.Tensor:
    """``X[bin, b, c]`` of input slice ``q`` of x ``[B, C, T_in, H, W]``: ``[bins, B, C]``."""
    return to_spectrum(x5[:, :, q:q + 1], (2,), (0, 1), *plan.input_axes()).view(
        plan.bins, x5.shape[0], x5.shape[1])


def _last_reads(chunks: List[_Chunk]) -> List[List[int]]:
    """Per chunk, the input slices that no later chunk reads (their spectra can go)."""
    last = {q: c for c, chunk in enumerate(chunks) for _, _, q in chunk.reads}
    done: List[List[int]] = [[] for _ in chunks]
    for q, c in sorted(last.items()):
        done[c].append(q)
    return done


def _new_reads(chunk: _Chunk, held: dict) -> List[int]:
    """Input slices the chunk reads that are not in ``held`` yet."""
    return sorted({q for _, _, q in chunk.reads} - held.keys())


def _filter_slots(buffer: torch.Tensor, geo: Geometry, chunk: _Chunk) -> List[torch.Tensor]:
    """Per offset ``offsets[i]`` of the chunk, the buffer's taps of its slots
    ``(offsets[i], rotations)``: a contiguous view ``[R_c, O, C, n_s, n_s]``."""
    block = geo.filter_block(buffer, chunk.scale)
    return [block[a, chunk.rotations.start:chunk.rotations.stop] for a in chunk.offsets]


class _Reused:
    """``count`` complex buffers ``[rows, N_h, N_w//2 + 1, *inner]`` for the largest chunk, reused
    by every chunk: a fresh block of more than 32 MiB would be page-faulted anew each time."""

    def __init__(self, like: torch.Tensor, count: int, chunks: List[_Chunk], plan: _Plan,
                 inner: Tuple[int, ...]):
        rows = max(len(chunk.rotations) for chunk in chunks)
        self.buffers = [like.new_empty(rows, plan.rows, plan.cols // 2 + 1, *inner,
                                       dtype=like.dtype.to_complex()) for _ in range(count)]

    def views(self, chunk: _Chunk, count: int = 1) -> List[torch.Tensor]:
        """The first ``len(chunk.rotations)`` rows of the first ``count`` buffers."""
        return [buffer[:len(chunk.rotations)] for buffer in self.buffers[:count]]


def _filter_spectra(filters: torch.Tensor, geo: Geometry, plan: _Plan, chunk: _Chunk,
                    dtype: torch.dtype, buffers: _Reused) -> List[torch.Tensor]:
    """Per offset ``offsets[i]`` of the chunk, ``Khat[k, bin, o, c]`` of its slots
    ``(offsets[i], rotations[k])``: ``[len(rotations), bins, O, C]`` (in ``buffers``; the taps'
    own ``(O, C)`` order keeps the transform's transposition a plain 2-D one)."""
    spectra = buffers.views(chunk, len(chunk.offsets))
    for taps, spectrum in zip(_filter_slots(filters, geo, chunk), spectra):
        to_spectrum(taps.to(dtype), (0,), (1, 2), *plan.filter_axes(chunk.scale), out=spectrum)
    return [spectrum.flatten(1, 2) for spectrum in spectra]


def conv_forward(x: torch.Tensor, filters: torch.Tensor, bias: Optional[torch.Tensor],
                 geo: Geometry) -> torch.Tensor:
    """y ``[B, O, T, H', W']`` (contiguous, x's dtype) of x and the flat filter buffer."""
    with torch.autocast(x.device.type, enabled=False):
        plan = _Plan(geo, x.shape[-2], x.shape[-1])
        x5, batch, out_channels = _as_group(x, geo), x.shape[0], geo.out_channels
        y = x.new_empty(geo.out_shape(x.shape))
        chunks = _chunks(geo, _slice_bytes(geo, plan, batch, x.dtype))
        filter_buffers = _Reused(x, geo.num_offsets, chunks, plan,
                                 (out_channels, geo.in_channels))
        output_buffer = _Reused(x, 1, chunks, plan, (batch, out_channels))
        spec_x = {}                         # input slice q -> X[q], first to last read
        for chunk, done in zip(chunks, _last_reads(chunks)):
            for q in _new_reads(chunk, spec_x):
                spec_x[q] = _input_spectrum(x5, q, plan)
            spec_k = _filter_spectra(filters, geo, plan, chunk, x.dtype, filter_buffers)
            spec_y = output_buffer.views(chunk)[0].flatten(1, 2)       # [R_c, bins, B, O]
            for k, i, q in chunk.reads:     # i == 0: the first read of slice k
                if i == 0:
                    torch.bmm(spec_x[q], spec_k[i][k].mT, out=spec_y[k])
                else:
                    spec_y[k].baddbmm_(spec_x[q], spec_k[i][k].mT)
            if bias is not None:           # a constant: the zero frequency times N_h * N_w
                spec_y[:, 0] += bias.to(x.dtype) * (plan.rows * plan.cols)
            from_spectrum(spec_y.view(-1, plan.rows, plan.cols // 2 + 1, batch, out_channels), 1,
                          *plan.output_axes(), (1, 2, 0), out=y[:, :, chunk.slices])
            for q in done:
                del spec_x[q]
    return y


def conv_backward(grad_y: torch.Tensor, x: torch.Tensor, filters: torch.Tensor, geo: Geometry,
                  need_input: bool, need_filters: bool
                  ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of ``sum(y * grad_y)``: ``grad_x`` (x's shape, contiguous, x's dtype) and
    ``grad_filters`` (the buffer's shape and dtype, exactly zero in the slots ``(a, r)`` that
    read no input slice), each None unless requested."""
    if not (need_input or need_filters):
        return None, None
    with torch.autocast(x.device.type, enabled=False):
        plan = _Plan(geo, x.shape[-2], x.shape[-1])
        x5, dtype = _as_group(x, geo), x.dtype
        batch, half = x.shape[0], plan.cols // 2 + 1
        grad_y = grad_y.to(dtype)
        grad_x5 = x5.new_empty(x5.shape) if need_input else None
        grad_filters = torch.zeros_like(filters) if need_filters else None
        chunks = _chunks(geo, _slice_bytes(geo, plan, batch, dtype))
        filter_buffers, gradient_buffers = (
            _Reused(x, geo.num_offsets, chunks, plan, (geo.out_channels, geo.in_channels))
            if need else None for need in (need_input, need_filters))
        output_buffer = _Reused(x, 1, chunks, plan, (batch, geo.out_channels))
        spec_x = {}                         # q -> X[q] (filter gradient), first to last read
        spec_gx = {}                        # q -> conj(DFT(grad_x[:, :, q])), summed over readers
        for chunk, done in zip(chunks, _last_reads(chunks)):
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
                spec_k = _filter_spectra(filters, geo, plan, chunk, dtype, filter_buffers)
                for k, i, q in chunk.reads:
                    spec_gx[q].baddbmm_(spec_g[k], spec_k[i][k])
            if need_filters:                # conj(G)^T @ X, back at the tap positions
                spec_h = gradient_buffers.views(chunk, len(chunk.offsets))
                for k, i, q in chunk.reads:
                    torch.bmm(spec_g[k].mT, spec_x[q], out=spec_h[i][k].flatten(0, 1))
                for spectrum, taps in zip(spec_h, _filter_slots(grad_filters, geo, chunk)):
                    from_spectrum(spectrum, 1, *plan.filter_axes(chunk.scale), (0, 1, 2),
                                  out=taps)
            for q in done:
                spec_x.pop(q, None)
                if need_input:
                    from_spectrum(spec_gx.pop(q).view(1, plan.rows, half, batch,
                                                      geo.in_channels),
                                  1, *plan.input_axes(), (1, 2, 0), out=grad_x5[:, :, q:q + 1])
        if need_input:                      # slices no output reads
            for q in sorted(set(range(x5.shape[2])) - {q for c in chunks for _, _, q in c.reads}):
                grad_x5[:, :, q].zero_()
    grad_x = None if grad_x5 is None else grad_x5.squeeze(2) if geo.lifting else grad_x5
    return grad_x, grad_filters
