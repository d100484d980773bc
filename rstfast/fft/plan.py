"""Planning of one FFT-backend call: transform sizes and axes, chunks of output slices.

Shared by both execution paths (:mod:`.tiled` on CPU, :mod:`.batched` elsewhere). The index map
is read from :class:`rstfast.geometry.Geometry` (``read_table``), never re-derived.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch

from ..geometry import Geometry, out_side
from .transforms import Axis

__all__ = ["transform_size", "Plan", "Chunk", "chunks", "largest", "slice_bytes", "as_group",
           "filter_slots", "filter_gradient", "last_reads"]


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


@dataclass(frozen=True)
class Plan:
    """Transform sizes ``rows x cols`` of one call on ``height x width`` inputs, the sample axes
    of x, y and each scale's filters, and ``chunk_bytes``, the most bytes a chunk's spectrum
    buffer may take (``rstfast.fft.CHUNK_BYTES``)."""
    geo: Geometry
    height: int
    width: int
    rows: int
    cols: int
    chunk_bytes: int

    @property
    def half(self) -> int:
        """Column frequencies of the half spectrum: ``cols // 2 + 1``."""
        return self.cols // 2 + 1

    @property
    def bins(self) -> int:
        return self.rows * self.half

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
class Chunk:
    """Output slices ``t = r*S + s`` (``r`` in ``rotations``) of one scale ``s`` that share the
    weight offsets ``offsets`` reading an input slice; ``reads`` lists every
    ``(position in the chunk, index into offsets, input slice q)``."""
    scale: int
    rotations: range
    slices: slice
    offsets: Tuple[int, ...]
    reads: Tuple[Tuple[int, int, int], ...]

    def readers(self) -> Dict[int, List[Tuple[int, int]]]:
        """Input slice ``q`` -> its ``(position, offset index)`` reads in this chunk, by ``q``."""
        found: Dict[int, List[Tuple[int, int]]] = {}
        for k, i, q in self.reads:
            found.setdefault(q, []).append((k, i))
        return dict(sorted(found.items()))


def chunks(geo: Geometry, per_chunk: int) -> List[Chunk]:
    """Scale by scale, runs of consecutive rotations with the same valid offsets, at most
    ``per_chunk`` (at least 1) slices per chunk."""
    per_chunk = max(1, per_chunk)
    num_scales = geo.num_scales
    found = []
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
            found.append(Chunk(s, range(first, last + 1),
                               slice(first * num_scales + s, last * num_scales + s + 1,
                                     num_scales), valid, reads))
    return found


def largest(found: List[Chunk]) -> Tuple[int, int]:
    """``(slots, rotations)``: the most filter slots (offsets x rotations) and the most output
    slices of any chunk -- what a buffer reused by every chunk must hold."""
    return (max(len(c.offsets) * len(c.rotations) for c in found),
            max(len(c.rotations) for c in found))


def slice_bytes(geo: Geometry, plan: Plan, batch: int, dtype: torch.dtype) -> int:
    """Bytes per output slice of the larger chunk tensor: one offset's filter spectra
    (``O x C`` planes) or the output spectra (``B x O`` planes)."""
    return (dtype.to_complex().itemsize * plan.bins * geo.out_channels
            * max(geo.in_channels, batch))


def as_group(x: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """``[B, C, T_in, H, W]`` view of x (the lifting input gets ``T_in = 1``)."""
    return x.unsqueeze(2) if geo.lifting else x


def filter_slots(buffer: torch.Tensor, geo: Geometry, chunk: Chunk) -> List[torch.Tensor]:
    """Per offset ``offsets[i]`` of the chunk, the buffer's taps of its slots
    ``(offsets[i], rotations)``: a contiguous view ``[R_c, O, C, n_s, n_s]``."""
    block = geo.filter_block(buffer, chunk.scale)
    return [block[a, chunk.rotations.start:chunk.rotations.stop] for a in chunk.offsets]


def filter_gradient(filters: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """A new gradient buffer like ``filters``: zero in the slots ``(a, r)`` that read no input
    slice (``input_slice < 0``), uninitialised in the others (every chunk writes them)."""
    grad = torch.empty_like(filters)
    for t, row in enumerate(geo.read_table):
        r, s = divmod(t, geo.num_scales)
        for a, q in enumerate(row):
            if q < 0:
                geo.filter_block(grad, s)[a, r].zero_()
    return grad


def last_reads(found: List[Chunk]) -> List[List[int]]:
    """Per chunk, the input slices that no later chunk reads (their spectra can go)."""
    last = {q: c for c, chunk in enumerate(found) for _, _, q in chunk.reads}
    done: List[List[int]] = [[] for _ in found]
    for q, c in sorted(last.items()):
        done[c].append(q)
    return done
