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

* input spectra ``X[q] = DFT(x[:, :, q])`` per input slice, ``B x C`` planes;
* filter spectra ``Khat[t, a] = conj(DFT(g))``, ``g`` the ``n_s x n_s`` taps placed at
  ``(u + d_s) mod N``, ``O x C`` planes each, from the cropped taps only;
* per frequency bin ``Yhat[t] = sum_a X[q(t, a)] @ Khat[t, a]^T``, then ``y[:, :, t]`` = the
  inverse DFT read at the output rows ``h*st`` only, the bias folded into the zero frequency;
* backward with ``Gc[t] = conj(DFT(grad_y[:, :, t] placed at h*st))``: the input gradient's
  conjugate spectrum ``sum_{(t, a) reading q} Gc[t] @ Khat[t, a]``, the filter gradient
  ``DFT^-1(Gc[t]^T @ X[q])`` read at the ``n_s x n_s`` tap positions (the adjoint of the filter
  spectrum map, half-spectrum weights included).

Every DFT is a pair of small matrix products along the axes (:mod:`.transforms`); the output
slices are processed in chunks of one scale and consecutive rotations (:mod:`.plan`), as many as
keep one offset's filter spectra or the output spectra of a chunk within :data:`CHUNK_BYTES`.
Two executions of the same plan: on CPU the C++ kernels on tile-major spectra (:mod:`.tiled`:
bins in the vector lanes, register-blocked per-bin products, every read of an output slice
accumulated in one pass); elsewhere, and on CPU when the C++ extension cannot be built, batched
complex matmuls (:mod:`.batched`, cuBLAS on CUDA, without TF32 unless the caller enables it).
Autocast is off inside; results have x's dtype. :func:`flops` / :func:`stage_flops` count the
algorithm's work for the cost model and the benchmarks.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..geometry import Geometry
from . import batched, tiled
from .plan import Chunk, Plan, chunks as plan_chunks, slice_bytes, transform_size

__all__ = ["DTYPES", "ALGORITHM", "CHUNK_BYTES", "unavailable_reason", "conv_forward",
           "conv_backward", "transform_size", "flops", "stage_flops", "STAGES"]

DTYPES = {"cpu": (torch.float32, torch.float64), "cuda": (torch.float32, torch.float64)}
ALGORITHM = "fft"                # the cost model's throughput class (rstfast.autotune)

# Largest spectrum tensor of a chunk of output slices: one offset's filter spectra (or their
# gradient) or the output (gradient) spectra, unless one slice needs more.
CHUNK_BYTES = 8 * 2 ** 20


def unavailable_reason(device: torch.device) -> Optional[str]:
    """None where the kernels run (CPU; CUDA when torch sees a GPU), else why not."""
    device = torch.device(device)
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "torch sees no CUDA device"
    return f"the FFT backend has no kernels for device type {device.type!r}"


def _chunks(geo: Geometry, slice_bytes: int) -> List[Chunk]:
    """The chunks of output slices for slices of ``slice_bytes`` each (:data:`CHUNK_BYTES`)."""
    return plan_chunks(geo, CHUNK_BYTES // max(1, slice_bytes))


def _plan(geo: Geometry, x_shape: Sequence[int]) -> Plan:
    height, width = x_shape[-2], x_shape[-1]
    return Plan(geo, height, width, transform_size(geo, height), transform_size(geo, width),
                CHUNK_BYTES)


def _execution(device: torch.device):
    """:mod:`.tiled` on CPU when the C++ kernels load, else :mod:`.batched`."""
    return tiled if device.type == "cpu" and tiled.unavailable_reason() is None else batched


def conv_forward(x: torch.Tensor, filters: torch.Tensor, bias: Optional[torch.Tensor],
                 geo: Geometry) -> torch.Tensor:
    """y ``[B, O, T, H', W']`` (contiguous, x's dtype) of x and the flat filter buffer."""
    with torch.autocast(x.device.type, enabled=False):
        plan = _plan(geo, x.shape)
        found = _chunks(geo, slice_bytes(geo, plan, x.shape[0], x.dtype))
        return _execution(x.device).conv_forward(x, filters, bias, plan, found)


def conv_backward(grad_y: torch.Tensor, x: torch.Tensor, filters: torch.Tensor, geo: Geometry,
                  need_input: bool, need_filters: bool
                  ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of ``sum(y * grad_y)``: ``grad_x`` (x's shape, contiguous, x's dtype) and
    ``grad_filters`` (the buffer's shape and dtype, exactly zero in the slots ``(a, r)`` that
    read no input slice), each None unless requested."""
    if not (need_input or need_filters):
        return None, None
    with torch.autocast(x.device.type, enabled=False):
        plan = _plan(geo, x.shape)
        found = _chunks(geo, slice_bytes(geo, plan, x.shape[0], x.dtype))
        return _execution(x.device).conv_backward(grad_y, x, filters, plan, found, need_input,
                                                  need_filters)


# Stages of one forward, as :func:`stage_flops` names them.
STAGES = ("input transforms", "filter spectra", "products", "output transforms")


def stage_flops(geo: Geometry, x_shape: Sequence[int], backward: bool = False
                ) -> Dict[str, float]:
    """FLOPs of each stage of one forward (``backward``: of the backward instead), counted as
    executed: a real multiply-add is 2, a complex one 8; a transform of a ``rows x cols`` plane
    onto ``N_h x (N_w//2 + 1)`` bins costs ``4 rows cols half`` (columns) plus
    ``8 N_h rows half`` (rows), the inverse the same with the output's rows.

    Forward: ``input transforms`` (``B C T_in`` planes), ``filter spectra`` (``O C`` taps per
    read ``(t, a)``), ``products`` (``8 B C O`` per bin and read), ``output transforms``
    (``B O T`` planes). Backward (both gradients): ``output transforms`` (of ``grad_y``: as the
    forward's), ``filter spectra`` (input gradient) plus the filter-gradient read-out, ``products``
    (input and filter gradients), ``input transforms`` (x again, and grad_x back): twice the
    forward's in these three.
    """
    plan = _plan(geo, x_shape)
    batch, half = x_shape[0], plan.half
    out_h, out_w = geo.out_size(plan.height, plan.width)
    supports = [geo.support[t % geo.num_scales] for t, _, _ in geo.reads]

    def transform(rows: int, cols: int) -> float:
        return 4.0 * rows * cols * half + 8.0 * plan.rows * rows * half

    stages = {
        "input transforms": batch * geo.in_channels * geo.in_slices
        * transform(plan.height, plan.width),
        "filter spectra": geo.out_channels * geo.in_channels * sum(
            transform(n, n) for n in supports),
        "products": 8.0 * batch * geo.in_channels * geo.out_channels * plan.bins * len(supports),
        "output transforms": batch * geo.out_channels * geo.group_size * transform(out_h, out_w),
    }
    if backward:
        return {name: value * (1 if name == "output transforms" else 2)
                for name, value in stages.items()}
    return stages


def flops(geo: Geometry, x_shape: Sequence[int]) -> float:
    """Forward FLOPs of this algorithm, the cost model's numerator: :func:`stage_flops` summed
    (the backward of both gradients costs about twice as much)."""
    return math.fsum(stage_flops(geo, x_shape).values())
