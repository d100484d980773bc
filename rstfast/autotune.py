"""``backend="auto"``: the fastest backend for each layer shape, chosen by measurement.

Like ``cudnn.benchmark``: the first call of a (geometry, input shape, dtype, device, autocast,
gradient) combination times every candidate — the backends of :data:`rstfast.backends.AUTO_ORDER`
for the device that run there and compute the dtype, except those the cost model predicts to be
more than :data:`PRUNE` times slower than its best guess — on random inputs of the same shape
(forward, plus backward when gradients are needed), and caches the fastest. Every decision is kept
with its reasons (:func:`decisions`, :func:`explain`).

``RSTFAST_AUTOTUNE=0`` turns measuring off: the cost model alone decides (deterministic, no
timing). The cost model estimates seconds as the FLOPs of each backend's algorithm divided by a
throughput per (device type, algorithm), :data:`THROUGHPUT`, measured on the machines named there:

* ``direct`` (``cpp``, ``triton``, ``cuda``): the non-zero taps,
  ``2 B O C H'W' sum_(t, a read) n_s(t)^2``;
* ``fft``: ``8 B C O bins`` per (t, a) read (the per-bin complex products), the filter spectra
  and the transforms of x and y, ``bins = N (N/2 + 1)`` at the backend's transform size ``N``;
* ``dense`` (``reference``, functional backends): every tap, ``2 B O C H'W' T A K^2``;

and a backward pass costs twice the forward. Under ``torch.compile`` the latest decision for the
layer's geometry is reused (any input shape: shapes may be symbolic), else the first backend of
the order runs (nothing is timed while tracing).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from . import backends
from .geometry import Geometry

__all__ = ["Decision", "choose", "decisions", "explain", "estimate_seconds", "clear",
           "THROUGHPUT", "PRUNE", "ROUNDS"]

# FLOP/s per (device type, algorithm) for the cost model, counted with the formulas above. CPU:
# geometric means over the paper layers, forward and forward+backward, float32, batch 32, 2-core
# Xeon with AVX-512 (benchmarks/results/cpu_b32_report.md; the cost model then picks the measured
# fastest backend in 19 of the 22 cases, within 1.63x of it in the other 3). GPUs: not measured yet.
THROUGHPUT: Dict[Tuple[str, str], float] = {
    ("cpu", "direct"): 200e9, ("cpu", "fft"): 50e9, ("cpu", "dense"): 220e9,
    ("cuda", "direct"): 20e12, ("cuda", "fft"): 10e12, ("cuda", "dense"): 20e12,
}
# Candidates predicted more than this many times slower than the best prediction are not timed.
PRUNE = 4.0
# Timed calls per candidate after one warm-up call (the minimum counts).
ROUNDS = 1


@dataclass
class Decision:
    """One auto choice: what was chosen for which call, how, and the numbers behind it."""
    key: tuple
    chosen: str
    method: str                                   # "measured" or "cost model"
    seconds: Dict[str, float] = field(default_factory=dict)      # measured (or estimated)
    estimates: Dict[str, float] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        geo, shape, dtype, device, _, grad = self.key
        kind = "lift" if geo[1] else "group"
        timings = ", ".join(f"{name} {1e3 * s:.1f} ms" for name, s in sorted(
            self.seconds.items(), key=lambda item: item[1]))
        what = "measured" if self.method == "measured" else "estimated"
        skipped = "; ".join(f"{name}: {why}" for name, why in self.skipped.items())
        return (f"{kind} {list(shape)} {str(dtype).replace('torch.', '')} on {device}"
                f"{' (forward+backward)' if grad else ''}: {self.chosen} ({what}: {timings})"
                + (f"; not timed: {skipped}" if skipped else ""))


_decisions: Dict[tuple, Decision] = {}


def decisions() -> List[Decision]:
    """Every auto decision taken in this process, in order."""
    return list(_decisions.values())


def explain() -> str:
    """One line per decision (what auto picked, why)."""
    return "\n".join(d.summary() for d in decisions()) or "no auto decision yet"


def clear() -> None:
    _decisions.clear()


backends.CLEAR_HOOKS.append(clear)


def _algorithm(name: str) -> str:
    backend = backends.get(name)
    if backend.kind == "functional":
        return "dense"
    return getattr(backends.kernels(name), "ALGORITHM", "direct")


def _flops(algorithm: str, name: str, geo: Geometry, x_shape) -> float:
    batch, height, width = x_shape[0], x_shape[-2], x_shape[-1]
    out_h, out_w = geo.out_size(height, width)
    reads = [(t, a) for t, row in enumerate(geo.read_table) for a, q in enumerate(row) if q >= 0]
    per_tap = 2 * batch * geo.out_channels * geo.in_channels * out_h * out_w
    if algorithm == "dense":
        return per_tap * geo.group_size * geo.num_offsets * geo.kernel_size ** 2
    taps = sum(geo.support[t % geo.num_scales] ** 2 for t, _ in reads)
    if algorithm == "direct":
        return per_tap * taps
    size = getattr(backends.kernels(name), "transform_size", None)
    n_h = size(geo, height) if size else height + geo.padding
    n_w = size(geo, width) if size else width + geo.padding
    bins = n_h * (n_w // 2 + 1)
    products = 8 * batch * geo.in_channels * geo.out_channels * bins * len(reads)
    spectra = 4 * geo.out_channels * geo.in_channels * bins * sum(
        geo.support[t % geo.num_scales] for t, _ in reads)
    transforms = 5 * batch * (geo.in_channels * geo.in_slices + geo.out_channels
                              * geo.group_size) * n_h * n_w * math.log2(n_h * n_w)
    return products + spectra + transforms


def estimate_seconds(name: str, geo: Geometry, x_shape, device, backward: bool) -> float:
    """The cost model's time of one call of backend ``name`` (see the module docstring)."""
    algorithm = _algorithm(name)
    rate = THROUGHPUT.get((torch.device(device).type, algorithm), THROUGHPUT[("cpu", algorithm)])
    return _flops(algorithm, name, geo, x_shape) * (3 if backward else 1) / rate


def _candidates(device: torch.device, dtype: torch.dtype, autocast: bool) -> Dict[str, object]:
    found = {}
    for name in backends.auto_order(device):
        if name in found:
            continue
        try:
            choice = backends.resolve(name, device, dtype, autocast, fallback=False)
        except (RuntimeError, TypeError):
            continue
        found[name] = choice
    return found


def _time(run, rounds: int) -> float:
    run()
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _measure(choice, x: torch.Tensor, weight, basis, bias, geo: Geometry, backward: bool):
    from . import ops
    device = x.device
    probe_x = torch.randn(x.shape, dtype=x.dtype, device=device)
    leaves = [t.detach().clone().requires_grad_(backward) if t is not None else None
              for t in (probe_x, weight, bias)]

    def run():
        with torch.set_grad_enabled(backward):
            y = ops.run(choice, leaves[0], leaves[1], basis, leaves[2], geo)
            if backward:
                y.backward(torch.ones_like(y))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return _time(run, ROUNDS)


def choose(x: torch.Tensor, weight, basis, bias, geo: Geometry) -> backends.Choice:
    """The backend ``auto`` runs this call on (measured once per key, then cached)."""
    autocast_dtype = (torch.get_autocast_dtype(x.device.type)
                      if torch.is_autocast_enabled(x.device.type) else None)
    dtype = autocast_dtype or x.dtype
    backward = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if torch.compiler.is_compiling():
        name = _traced_choice(geo.key, str(dtype), str(x.device), autocast_dtype is not None,
                              backward)
    else:
        key = (geo.encoded, tuple(x.shape), dtype, str(x.device), autocast_dtype is not None,
               backward)
        name = _decide(key, x, weight, basis, bias, geo).chosen
    return backends.resolve(name, x.device, dtype, autocast_dtype is not None, fallback=False)


@torch.compiler.assume_constant_result
def _traced_choice(geo_key: str, dtype_name: str, device: str, autocast: bool,
                   backward: bool) -> str:
    """While tracing (nothing is timed; shapes may be symbolic): the latest decision for this
    geometry, dtype, device and mode at any input shape, else the first backend of the order."""
    dtype = getattr(torch, dtype_name.replace("torch.", ""))
    for decision in reversed(list(_decisions.values())):
        code, _, *rest = decision.key
        if ",".join(map(str, code)) == geo_key and tuple(rest) == (dtype, device, autocast,
                                                                  backward):
            return decision.chosen
    return backends.resolve("auto", device, dtype, autocast).name


def _decide(key: tuple, x, weight, basis, bias, geo: Geometry,
            measure: bool = True) -> Decision:
    decision = _decisions.get(key)
    if decision is not None:
        return decision
    _, shape, dtype, device, autocast, backward = key
    device = torch.device(device)
    # The first of the order that runs: raises the clear error if none does, warns once when
    # backends of the order were passed over.
    backends.resolve("auto", device, dtype, autocast)
    candidates = _candidates(device, dtype, autocast)
    estimates = {name: estimate_seconds(name, geo, shape, device, backward)
                 for name in candidates}
    best_guess = min(estimates.values())
    skipped = {name: f"predicted {estimate / best_guess:.1f}x slower"
               for name, estimate in estimates.items() if estimate > PRUNE * best_guess}
    timed = [name for name in candidates if name not in skipped]
    measure = (measure and len(timed) > 1 and os.environ.get("RSTFAST_AUTOTUNE", "1") != "0")
    decision = Decision(key, min(estimates, key=estimates.get),
                        "measured" if measure else "cost model", estimates=estimates,
                        skipped=skipped if measure else {})
    if measure:
        for name in timed:
            decision.seconds[name] = _measure(candidates[name], x, weight, basis, bias, geo,
                                              backward)
        decision.chosen = min(decision.seconds, key=decision.seconds.get)
    else:
        decision.seconds = dict(estimates)
    _decisions[key] = decision
    return decision
