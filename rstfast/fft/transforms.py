"""Spatial <-> spectral transforms of the FFT backend, as two small DFT matmuls per transform.

A 2-D transform of size ``N_h x N_w`` is applied to samples that sit at an arithmetic progression of
positions on each periodic axis (:class:`Axis`: the image rows ``0 .. H-1``, the strided output rows
``h*st``, the taps ``u + crop_s - p`` of a cropped filter), so zero padding, stride placement and
filter placement cost nothing, and only the wanted rows / columns of an inverse are computed. The
width axis keeps the half spectrum ``k_w < N_w//2 + 1`` of real signals (as ``rfft2``).

The phase matrices (:func:`_phases`, :func:`_half_forward`, :func:`_half_inverse`) are shared by
both executions: :func:`to_spectrum` / :func:`from_spectrum` below (torch matmuls, the batched
execution of :mod:`.batched`) and the C++ kernels of :mod:`.tiled`, which take them as tables.

Why matmuls and not ``torch.fft``: the planes are small (``N <= 63`` for the paper layers) and
numerous (``B*C*T``); on CPU (2 threads, 28 px, N = 35, batch 32) the matmuls ran 1.7x faster
than ``rfft2`` plus the layout copy for an input slice, 1.7x faster than ``irfft2`` plus
subsampling and the layout copy for the output, 3.6x at stride 2 (only the strided rows and
columns are computed). Their cost grows with ``N``, not with its factors, so the smallest
alias-free ``N`` is used without FFT-friendly rounding (N = 36, 40, 42 instead of 35 cost 6 %,
16 %, 31 % more time for a 28 px layer).

Layouts: :func:`to_spectrum` takes a real tensor ``[..., rows, cols]`` and returns
``[*lead, N_h, N_w//2 + 1, *inner]`` (the caller names which of the other dims go before the
frequencies, ``lead``, and which after, ``inner``, so that the spectra come out as per-frequency
matrices for the batched products); :func:`from_spectrum` is the way back, with the output's
non-spatial dims in any order.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

__all__ = ["Axis", "to_spectrum", "from_spectrum"]


@dataclass(frozen=True)
class Axis:
    """Samples at positions ``start + j*step`` (``j < count``) of a periodic axis of length
    ``size``; a transform along it has the phases ``exp(sign * 2*pi*i * k * position / size)``."""
    size: int
    start: int
    count: int
    step: int
    sign: int

    @property
    def half(self) -> int:
        """Frequencies kept of a real signal along this axis: ``size // 2 + 1``."""
        return self.size // 2 + 1


@functools.lru_cache(maxsize=512)
def _phases(axis: Axis, freqs: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[freqs, count]`` complex: ``exp(sign * 2*pi*i * k * (start + j*step) / size)``.

    Angles from the exact integer product ``k * position mod size`` in float64."""
    positions = axis.start + axis.step * torch.arange(axis.count, dtype=torch.int64)
    products = torch.arange(freqs, dtype=torch.int64)[:, None] * positions[None, :]
    angles = (2 * math.pi / axis.size) * torch.remainder(products, axis.size).to(torch.float64)
    return torch.polar(torch.ones_like(angles), axis.sign * angles).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=512)
def _half_forward(axis: Axis, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Real ``[count, 2*half]``: sample ``j`` -> (frequency ``k``, real / imaginary part)."""
    phases = _phases(axis, axis.half, device, dtype.to_complex())
    return torch.view_as_real(phases.t().contiguous()).reshape(axis.count, 2 * axis.half)


@functools.lru_cache(maxsize=512)
def _half_inverse(axis: Axis, scale: float, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """Real ``[2*half, count]``: ``Re(sum_k weight_k * Z[k] * phase[k, j]) * scale`` as a matmul
    of ``view_as_real(Z)``; ``weight_k`` = 2 for the frequencies that stand for a conjugate pair,
    1 for ``k = 0`` and, when ``size`` is even, ``k = size/2``."""
    phases = _phases(axis, axis.half, device, torch.complex128)
    weights = torch.full((axis.half,), 2.0, dtype=torch.float64, device=device)
    weights[0] = 1.0
    if axis.size % 2 == 0:
        weights[-1] = 1.0
    weighted = phases * (weights * scale)[:, None]
    return torch.stack([weighted.real, -weighted.imag], dim=1).reshape(
        2 * axis.half, axis.count).to(dtype)


def to_spectrum(z: torch.Tensor, lead: Sequence[int], inner: Sequence[int], rows: Axis,
                cols: Axis, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Real ``z [..., rows.count, cols.count]`` -> complex ``[*lead, N_h, N_w//2 + 1, *inner]``
    (written into the contiguous ``out`` when given).

    ``Z[k_h, k_w] = sum_{h, w} z[h, w] * phase_rows[k_h, h] * phase_cols[k_w, w]``; ``lead`` and
    ``inner`` list the other dims of ``z`` (each once) in their output order.
    """
    spatial = z.dim() - 2
    lead_sizes = [z.shape[d] for d in lead]
    inner_sizes = [z.shape[d] for d in inner]
    if out is None:
        out = z.new_empty((*lead_sizes, rows.size, cols.half, *inner_sizes),
                          dtype=z.dtype.to_complex())
    half = torch.mm(z.reshape(-1, cols.count), _half_forward(cols, z.device, z.dtype))
    half = torch.view_as_complex(half.view(*z.shape[:-1], cols.half, 2))
    half = half.permute(*lead, spatial, spatial + 1, *inner).contiguous()  # [*lead, h, k_w, *inner]
    n_lead = math.prod(lead_sizes)
    torch.matmul(_phases(rows, rows.size, z.device, z.dtype.to_complex()),   # [k_h, h]
                 half.view(n_lead, rows.count, -1), out=out.view(n_lead, rows.size, -1))
    return out


def from_spectrum(spec: torch.Tensor, n_lead: int, rows: Axis, cols: Axis,
                  order: Sequence[int], out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Complex ``spec [*L, N_h, N_w//2 + 1, *I]`` (``n_lead`` dims ``L``) -> real
    ``[*(other dims in order), rows.count, cols.count]`` (copied into ``out``, any strides and
    real dtype, when given).

    ``z[h, w] = Re(sum_{k_h, k_w} weight_{k_w} * spec[k_h, k_w] * phase_rows[k_h, h] *
    phase_cols[k_w, w]) / (N_h * N_w)`` -- the inverse of :func:`to_spectrum` for the opposite
    signs (``irfft2`` read at the axes' positions). ``order`` numbers the non-spatial dims of
    ``spec`` as ``L`` then ``I`` (0-based, the spatial dims skipped).
    """
    lead_sizes, inner_sizes = spec.shape[:n_lead], spec.shape[n_lead + 2:]
    dims = [d if d < n_lead else d + 2 for d in order]                       # dims of spec
    rows_matrix = _phases(rows, rows.size, spec.device, spec.dtype).t()        # [h, k_h]
    half = torch.matmul(rows_matrix, spec.reshape(math.prod(lead_sizes), rows.size, -1))
    half = half.view(*lead_sizes, rows.count, cols.half, *inner_sizes)
    half = half.permute(*dims, n_lead, n_lead + 1).contiguous()                # [..., h, k_w]
    cols_matrix = _half_inverse(cols, 1.0 / (rows.size * cols.size), spec.device,
                                spec.real.dtype)                               # [(k_w, 2), w]
    real = torch.matmul(torch.view_as_real(half).flatten(-2), cols_matrix)
    return real if out is None else out.copy_(real)
