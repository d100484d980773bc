"""``backend="auto"``: the fastest *verified* backend for each layer shape.

Like ``cudnn.benchmark``: the first call of a key — (geometry, input shape, dtype, device,
autocast, gradient) — times the candidates (the backends of :data:`rstfast.backends.AUTO_ORDER`
for the device that run there and compute the dtype, except those the cost model predicts to be
more than :data:`PRUNE` times slower than its best guess) on inputs of the same shape (forward,
plus backward when gradients are needed) and keeps the fastest. **Every candidate is verified
before it is trusted**: on the first :data:`VERIFY_BATCH` samples of the same inputs its output
(and input, weight and bias gradients) must match the reference backend's within
:data:`TOLERANCE` of the dtype (relative to the largest reference value). A candidate outside it
is excluded for the key with one ``RuntimeWarning`` and is not offered again on that device in
this process. Every decision is kept with its reasons (:func:`decisions`, :func:`explain`).

Measuring and verifying draw their inputs from a private ``torch.Generator`` per device, never from
the global random streams: a seeded program gives the same numbers whether or not ``auto``
measured in between. The first call of each key logs one line (logger ``rstfast.autotune``).

``RSTFAST_AUTOTUNE=0`` turns timing off: the cost model alone decides (the pick is still verified
once per key). The cost model estimates seconds as each backend's FLOPs
(:meth:`rstfast.backends.Backend.flops`, from :mod:`rstfast.flops`) divided by a throughput per
(device type, algorithm), :data:`THROUGHPUT`, scaled by ``C / (C + c)`` for the input channels
``C`` where :data:`CHANNEL_HALF` gives ``c`` (direct convolutions with few input channels
vectorize poorly); a backward pass costs twice the forward.

Reproducible picks: :func:`state_dict` / :func:`load_state_dict` record and pin decisions (the
trainer stores them in its checkpoints), and :func:`use_cache` (or ``RSTFAST_AUTOTUNE_CACHE=PATH``)
keeps them in a JSON file per machine (:func:`default_cache_path`), so that one machine makes one
pick per key, run after run. Under ``torch.compile`` the latest decision for the layer's geometry
is reused (shapes may be symbolic), else the first backend of the order runs (nothing is timed or
verified while tracing).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import backends
from .files import FileLock, write_atomic
from .geometry import Geometry
from .machine import cpu_name

__all__ = ["Decision", "choose", "decisions", "explain", "estimate_seconds", "clear",
           "state_dict", "load_state_dict", "use_cache", "default_cache_path", "THROUGHPUT",
           "CHANNEL_HALF",
           "PRUNE", "ROUNDS", "VERIFY_BATCH", "TOLERANCE"]

logger = logging.getLogger(__name__)

# FLOP/s per (device type, algorithm) for the cost model, counted with rstfast.flops. CPU: fitted
# to the 11 paper layers, forward + backward, float32, batch 32, 2-core Xeon with AVX-512
# (benchmarks/results/fft_roofline_cpu.md: `fft` 94-230 GFLOP/s, geometric mean 139; `cpp` 25-52
# GFLOP/s with one input channel, 230-382 with 32 or 63). GPUs: not measured yet.
THROUGHPUT: Dict[Tuple[str, str], float] = {
    ("cpu", "direct"): 360e9, ("cpu", "fft"): 139e9, ("cpu", "dense"): 220e9,
    ("cuda", "direct"): 20e12, ("cuda", "fft"): 10e12, ("cuda", "dense"): 20e12,
}
# Input channels at which an algorithm reaches half its THROUGHPUT (absent: no channel effect):
# the CPU's direct and dense convolutions (both oneDNN) reduce over C x n x n per output.
CHANNEL_HALF: Dict[Tuple[str, str], float] = {("cpu", "direct"): 8.0, ("cpu", "dense"): 8.0}
# Candidates predicted more than this many times slower than the best prediction are not timed.
PRUNE = 4.0
# Timed rounds after one warm-up call of each candidate; a round calls every candidate in turn
# (the minimum counts).
ROUNDS = 2
# Samples of the batch a candidate is verified on.
VERIFY_BATCH = 1
# Largest error a verified candidate may have, relative to max|reference|, per dtype of the result
# (the contract suite's float32 / float64 tolerances; 16-bit: 8 units of roundoff).
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 8 * 2.0 ** -8,
             torch.float16: 8 * 2.0 ** -11}
_CACHE_FORMAT = 1

@dataclass
class Decision:
    """One auto choice: what was chosen for which call, how, and the numbers behind it."""
    key: tuple
    chosen: str
    method: str                      # "measured", "cost model" or "recorded"
    seconds: Dict[str, float] = field(default_factory=dict)      # measured (or estimated)
    estimates: Dict[str, float] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)        # not timed, and why
    rejected: Dict[str, str] = field(default_factory=dict)       # failed verification
    verify_seconds: float = 0.0

    def summary(self) -> str:
        what = {"measured": "measured", "cost model": "estimated", "recorded": "recorded"}
        timings = ", ".join(f"{name} {1e3 * s:.1f} ms" for name, s in sorted(
            self.seconds.items(), key=lambda item: item[1]))
        notes = [f"not timed: {'; '.join(f'{n}: {w}' for n, w in self.skipped.items())}"
                 if self.skipped else "",
                 f"rejected: {'; '.join(f'{n}: {w}' for n, w in self.rejected.items())}"
                 if self.rejected else ""]
        return (f"{_describe(self.key)}: {self.chosen} ({what[self.method]}"
                f"{': ' + timings if timings else ''})"
                + "".join(f"; {note}" for note in notes if note))

def _describe(key: tuple) -> str:
    geo, shape, dtype, device, _, grad = key
    kind = "lift" if geo[1] else "group"
    return (f"{kind} {list(shape)} {str(dtype).replace('torch.', '')} on {device}"
            f"{' (forward+backward)' if grad else ''}")

def _key_string(key: tuple) -> str:
    """A decision key as text: the form of :func:`state_dict` and the cache file."""
    geo, shape, dtype, device, autocast, grad = key
    return (f"geometry={','.join(map(str, geo))};shape={'x'.join(map(str, shape))};"
            f"dtype={str(dtype).replace('torch.', '')};device={device};"
            f"autocast={int(autocast)};grad={int(grad)}")

_decisions: Dict[tuple, Decision] = {}
_pinned: Dict[str, str] = {}                     # key string -> backend (recorded decisions)
_distrusted: Dict[Tuple[str, str], str] = {}     # (backend, device) -> why it failed
_generators: Dict[str, torch.Generator] = {}
_cache = {"path": None, "writable": False, "from_env": False}

def decisions() -> List[Decision]:
    """Every auto decision taken in this process, in order."""
    return list(_decisions.values())

def explain() -> str:
    """One line per decision (what auto picked, why), then the backends no longer trusted."""
    lines = [d.summary() for d in decisions()]
    lines += [f"not trusted on {device}: {name} ({why})"
              for (name, device), why in _distrusted.items()]
    return "\n".join(lines) or "no auto decision yet"

def clear() -> None:
    """Forget decisions, pinned decisions, distrust and the cache file setting."""
    _decisions.clear()
    _pinned.clear()
    _distrusted.clear()
    _cache.update(path=None, writable=False, from_env=False)

backends.CLEAR_HOOKS.append(clear)

# ----------------------------------------------------------------------------- cost model
def estimate_seconds(name: str, geo: Geometry, x_shape, device, backward: bool) -> float:
    """The cost model's time of one call of backend ``name`` (see the module docstring)."""
    backend = backends.get(name)
    device_type = torch.device(device).type
    key = (device_type, backend.algorithm)
    rate = THROUGHPUT.get(key, THROUGHPUT.get(("cpu", backend.algorithm),
                                              THROUGHPUT[("cpu", "direct")]))
    if key in CHANNEL_HALF:
        rate *= geo.in_channels / (geo.in_channels + CHANNEL_HALF[key])
    return backend.flops(geo, x_shape) * (3 if backward else 1) / rate

# --------------------------------------------------------------------------- persistence
def state_dict() -> dict:
    """Every decision of this process and every pinned one: ``{"format": 1, "decisions":
    {key string: backend name}}`` (JSON / YAML serialisable)."""
    recorded = dict(_pinned)
    recorded.update({_key_string(d.key): d.chosen for d in _decisions.values()})
    return {"format": _CACHE_FORMAT, "decisions": recorded}

def _recorded(state) -> Dict[str, str]:
    if (not isinstance(state, dict) or state.get("format") != _CACHE_FORMAT
            or not isinstance(state.get("decisions"), dict)
            or not all(isinstance(k, str) and isinstance(v, str)
                       for k, v in state["decisions"].items())):
        raise ValueError(f"state: expected rstfast.autotune.state_dict() (format "
                         f"{_CACHE_FORMAT}), got {str(state)[:200]}")
    return dict(state["decisions"])

def load_state_dict(state: dict) -> None:
    """Pin the decisions of ``state`` (:func:`state_dict`): a later call with one of its keys runs
    the recorded backend (verified once; re-decided with a warning if it cannot run here)."""
    _pinned.update(_recorded(state))

def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/rstfast/autotune-<machine>.json`` (``~/.cache`` when unset); the machine
    id hashes the CPU model, the GPUs, torch's version and thread count, rstfast's version and
    its sources (:func:`_sources_digest`): decisions timed on other kernels are not reused."""
    from . import __version__
    cpu = cpu_name()
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    ident = json.dumps([cpu, gpus, torch.__version__, torch.get_num_threads(), __version__,
                        _sources_digest()])
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "rstfast" / f"autotune-{hashlib.sha256(ident.encode()).hexdigest()[:12]}.json"

@functools.lru_cache(maxsize=None)
def _sources_digest() -> str:
    """sha256 of rstfast's Python, C++ and CUDA sources (names and contents)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".cpp", ".cu", ".h")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def use_cache(path) -> None:
    """Keep decisions in the JSON file ``path`` (None: no file): its decisions are pinned now,
    and each new decision is added to it (atomically, under a file lock: several processes may
    share it). A file that is not such a cache is read as empty, with a warning, and never
    written."""
    _cache.update(path=None if path is None else Path(path), writable=False, from_env=True)
    if path is None:
        return
    path = Path(path)
    try:
        with _lock(path):
            _pinned.update(_read_cache(path))
        _cache["writable"] = True
    except (OSError, ValueError) as exc:
        warnings.warn(f"rstfast: autotune cache {path} is not usable ({exc}); decisions are not "
                      f"read from it and it is left as it is", RuntimeWarning, stacklevel=2)

def _lock(path: Path) -> FileLock:
    """The lock of the cache file ``path`` (several processes may share the file)."""
    return FileLock(path.with_name(path.name + ".lock"))

def _read_cache(path: Path) -> Dict[str, str]:
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return _recorded(state)

def _remember(key: tuple, chosen: str) -> None:
    """Add a new decision to the cache file, if one is in use."""
    path = _cache["path"]
    if path is None or not _cache["writable"]:
        return
    try:
        with _lock(path):
            recorded = _read_cache(path)
            recorded[_key_string(key)] = chosen
            write_atomic(path, json.dumps({"format": _CACHE_FORMAT, "decisions": recorded},
                                          indent=0, sort_keys=True))
    except (OSError, ValueError) as exc:
        _cache["writable"] = False
        warnings.warn(f"rstfast: could not update the autotune cache {path} ({exc}); it is no "
                      f"longer written in this process", RuntimeWarning, stacklevel=2)

def _cache_from_environment() -> None:
    if _cache["from_env"]:
        return
    _cache["from_env"] = True
    setting = os.environ.get("RSTFAST_AUTOTUNE_CACHE", "")
    if setting and setting.lower() not in ("0", "off", "none"):
        use_cache(default_cache_path() if setting.lower() in ("1", "on", "default") else setting)

# ------------------------------------------------------------------------- probing inputs
def _generator(device: torch.device) -> torch.Generator:
    """The private generator of ``device``, reseeded: the same probe inputs every decision."""
    key = str(device)
    if key not in _generators:
        _generators[key] = torch.Generator(device=device)
    return _generators[key].manual_seed(0)

class _Probe:
    """Inputs of one decision (private random x, the layer's own weight and bias) and the trusted
    result of its verification slice."""

    def __init__(self, x, weight, basis, bias, geo: Geometry, backward: bool, dtype):
        generator = _generator(x.device)
        self.x = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        self.weight, self.basis, self.bias, self.geo = weight.detach(), basis, bias, geo
        self.bias = None if bias is None else bias.detach()
        self.backward, self.dtype = backward, dtype
        self.seed = None
        self._trusted = None

    def leaves(self, batch: Optional[int] = None):
        x = self.x if batch is None else self.x[:batch]
        return [None if t is None else t.detach().clone().requires_grad_(self.backward)
                for t in (x, self.weight, self.bias)]

    def run(self, backend: backends.Backend, leaves, basis=None):
        basis = self.basis if basis is None else basis
        with torch.set_grad_enabled(self.backward):
            return backend.forward(leaves[0], leaves[1], basis, leaves[2], self.geo)

    def results(self, backend: backends.Backend, leaves, basis=None) -> List[torch.Tensor]:
        """y and, when gradients are wanted, the gradients of ``<y, seed>`` of the leaves."""
        y = self.run(backend, leaves, basis)
        if not self.backward:
            return [y.detach()]
        if self.seed is None:
            self.seed = torch.randn(y.shape, dtype=torch.float32, device=y.device,
                                    generator=_generator(y.device))
        wanted = [t for t in leaves if t is not None]
        grads = torch.autograd.grad(y, wanted, self.seed.to(y.dtype))
        return [y.detach()] + list(grads)

    def trusted(self) -> List[torch.Tensor]:
        """The reference backend's results on the verification slice, in float32 (float64 for
        float64 inputs), autocast off."""
        if self._trusted is None:
            exact = torch.float64 if self.x.dtype == torch.float64 else torch.float32
            leaves = [None if t is None else t.to(exact) for t in self.leaves(VERIFY_BATCH)]
            leaves = [None if t is None else t.detach().requires_grad_(self.backward)
                      for t in leaves]
            with torch.autocast(self.x.device.type, enabled=False):
                self._trusted = self.results(backends.get("reference"), leaves,
                                             self.basis.to(exact))
        return self._trusted

def _verify(backend: backends.Backend, probe: _Probe) -> Optional[str]:
    """None if ``backend`` computes the reference's numbers on the probe, else what is wrong."""
    if backend.name == "reference":
        return None
    try:
        results = probe.results(backend, probe.leaves(VERIFY_BATCH))
    except Exception as exc:         # a failing candidate is excluded, not fatal
        return f"it raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    tolerance = TOLERANCE.get(probe.dtype, TOLERANCE[torch.float32])
    for name, got, want in zip(("y", "grad_x", "grad_weight", "grad_bias"), results,
                               probe.trusted()):
        if tuple(got.shape) != tuple(want.shape):
            return f"{name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        scale = want.abs().max().item() or 1.0
        error = (got.to(want.dtype) - want).abs().max().item()
        if not error <= tolerance * scale:          # NaN fails too
            return (f"{name} differs from the reference by {error / scale:.2e} of max|ref| "
                    f"(tolerance {tolerance:.0e})")
    return None

def _runner(backend: backends.Backend, probe: _Probe):
    """One call of ``backend`` on the probe's inputs (forward, and backward when measured)."""
    leaves = probe.leaves()
    device = probe.x.device

    def run():
        y = probe.run(backend, leaves)
        if probe.backward:
            y.backward(torch.ones_like(y))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return run

def _measure(runs: Dict[str, Callable[[], None]]) -> Dict[str, float]:
    """Seconds per candidate: one warm-up call each, then :data:`ROUNDS` rounds that call every
    candidate in turn (a pause of the machine hits one call, not one candidate); the minimum."""
    for run in runs.values():
        run()
    best = {name: math.inf for name in runs}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best

# ------------------------------------------------------------------------------- choosing
def _key(x: torch.Tensor, geo: Geometry, dtype, autocast: bool, backward: bool) -> tuple:
    return (geo.encoded, tuple(x.shape), dtype, str(x.device), autocast, backward)

def choose(x: torch.Tensor, weight, basis, bias, geo: Geometry) -> backends.Backend:
    """The backend ``auto`` runs this call on (decided once per key, then cached)."""
    autocast_dtype = (torch.get_autocast_dtype(x.device.type)
                      if torch.is_autocast_enabled(x.device.type) else None)
    dtype = autocast_dtype or x.dtype
    autocast = autocast_dtype is not None
    backward = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if torch.compiler.is_compiling():
        name = _traced_choice(geo.key, str(dtype), str(x.device), autocast, backward)
    else:
        key = _key(x, geo, dtype, autocast, backward)
        decision = _decisions.get(key)
        if decision is None:
            decision = _decide(key, x, weight, basis, bias, geo)
        name = decision.chosen
    return backends.resolve(name, x.device, dtype, autocast, fallback=False)

def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result`` without importing ``torch._dynamo`` when it is
    not loaded yet (1.2 s of every ``import rstfast``): the mark it sets on ``fn``, which
    dynamo reads when it traces a call (tests/test_autotune.py compiles with fullgraph=True)."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn

@_assume_constant_result
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

def _candidates(device: torch.device, dtype: torch.dtype,
                autocast: bool) -> Dict[str, backends.Backend]:
    """The backends of the order that run on ``device``, take ``dtype`` and are trusted there."""
    found = {}
    for name in backends.auto_order(device):
        if name in found or (name, str(device)) in _distrusted:
            continue
        try:
            found[name] = backends.resolve(name, device, dtype, autocast, fallback=False)
        except (RuntimeError, TypeError):
            continue
    return found

def _reject(decision: Decision, name: str, reason: str, device: torch.device) -> None:
    decision.rejected[name] = reason
    _distrusted[(name, str(device))] = reason
    warnings.warn(f"rstfast: auto does not use backend {name!r} on {device} for "
                  f"{_describe(decision.key)}: {reason}; it is not offered again on {device} in "
                  f"this process", RuntimeWarning, stacklevel=5)

def _first_verified(decision: Decision, order: List[str], candidates, probe: _Probe,
                    device: torch.device) -> Optional[str]:
    """The first backend of ``order`` that verifies (the others rejected on the way)."""
    for name in order:
        started = time.perf_counter()
        reason = _verify(candidates[name], probe)
        decision.verify_seconds += time.perf_counter() - started
        if reason is None:
            return name
        _reject(decision, name, reason, device)
    return None

def _decide(key: tuple, x, weight, basis, bias, geo: Geometry) -> Decision:
    _cache_from_environment()
    _, shape, dtype, device, autocast, backward = key
    device = torch.device(device)
    # The first of the order that runs: raises the clear error if none does, warns once when
    # backends of the order were passed over.
    backends.resolve("auto", device, dtype, autocast)
    candidates = _candidates(device, dtype, autocast)
    if not candidates:               # every candidate was distrusted: the oracle runs
        candidates = {"reference": backends.resolve("reference", device, dtype, autocast)}
    estimates = {name: estimate_seconds(name, geo, shape, device, backward)
                 for name in candidates}
    by_estimate = sorted(candidates, key=estimates.get)
    probe = _Probe(x, weight, basis, bias, geo, backward, dtype)
    decision = Decision(key, by_estimate[0], "cost model", estimates=estimates)
    pinned = _pinned.get(_key_string(key))
    if pinned is not None and pinned not in candidates:
        warnings.warn(f"rstfast: the recorded auto decision {pinned!r} for {_describe(key)} "
                      f"cannot run here; deciding again", RuntimeWarning, stacklevel=4)
        pinned = None
    measure = len(candidates) > 1 and os.environ.get("RSTFAST_AUTOTUNE", "1") != "0"
    if pinned is not None and _first_verified(decision, [pinned], candidates, probe, device):
        decision.chosen, decision.method = pinned, "recorded"
    elif measure:
        best_guess = estimates[by_estimate[0]]
        decision.skipped = {name: f"predicted {estimates[name] / best_guess:.1f}x slower"
                            for name in by_estimate if estimates[name] > PRUNE * best_guess}
        timed = [name for name in by_estimate
                 if name not in decision.skipped and name not in decision.rejected]
        logger.info("rstfast auto: timing %s and verifying %s against the reference for %s "
                    "(once per layer shape)", ", ".join(timed), "them" if len(timed) > 1 else "it",
                    _describe(key))
        decision.seconds = _measure({
            name: _runner(candidates[name], probe) for name in timed
            if _first_verified(decision, [name], candidates, probe, device)})
        if decision.seconds:
            decision.chosen, decision.method = (min(decision.seconds, key=decision.seconds.get),
                                                "measured")
        else:                        # every timed candidate was rejected: the untimed ones
            decision.chosen = _first_verified(
                decision, [n for n in by_estimate if n not in decision.rejected], candidates,
                probe, device) or "reference"
    else:
        logger.info("rstfast auto: verifying the cost model's pick against the reference for %s "
                    "(once per layer shape)", _describe(key))
        decision.seconds = dict(estimates)
        decision.chosen = _first_verified(decision, by_estimate, candidates, probe,
                                          device) or "reference"
    _decisions[key] = decision
    if decision.method != "recorded":
        _remember(key, decision.chosen)
    return decision
