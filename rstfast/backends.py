"""The backends of the roto-scale convolutions: one registry, one list of names, one resolution.

Two kinds of backend:

* **kernels** (``triton``, ``cpp``, ``cuda``, ``fft``, and any registered one): implement the op
  contract of :mod:`rstfast.ops` — the module provides ``unavailable_reason(device)``, ``DTYPES``
  (``{device type: dtypes of x it computes in}``), ``conv_forward(x, filters, bias, geo)`` and
  ``conv_backward(grad_y, x, filters, geo, need_input, need_filters)`` on the cropped filter buffer
  of :mod:`rstfast.geometry`; filter expansion, autograd and autocast are written once, in
  :mod:`rstfast.ops`.
* **functional** (``reference``, and baselines such as ``benchmarks.original``): plain PyTorch with
  PyTorch's autograd from the dense filter — the module provides ``unavailable_reason(device)``,
  ``expand_filter(weight, basis)``, ``lift_conv_dense(x, kernel, bias, stride, padding)`` and
  ``group_conv_dense(x, kernel, bias, num_rotations, rotation_size, scale_size, stride, padding)``.

``"auto"`` picks, per layer shape, the fastest of the backends of :data:`AUTO_ORDER` that run on
the device and compute the input's dtype (:mod:`rstfast.autotune`; :func:`resolve` gives the first
of them). An explicitly requested backend that cannot run (not installed, failed to build,
wrong device) falls back along its ``fallback`` chain with one warning per (backend, device,
reason), never silently; one that runs but does not take the dtype raises a ``TypeError`` naming
the backends that would.
"""
from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Dict, Optional, Tuple

import torch

__all__ = ["Backend", "Choice", "names", "get", "register", "unregister", "resolve", "auto_order",
           "available_backends", "dtypes", "kernels", "used", "AUTO_ORDER", "clear_cache"]

KINDS = ("kernels", "functional")
_CONTRACT = {"kernels": ("unavailable_reason", "DTYPES", "conv_forward", "conv_backward"),
             "functional": ("unavailable_reason", "expand_filter", "lift_conv_dense",
                            "group_conv_dense")}


@dataclass(frozen=True)
class Backend:
    """A backend: ``name``, import path ``module``, ``kind`` (see the module docstring), the
    backends an explicit request falls back to, and the device types it may run on (None: any
    its module accepts)."""
    name: str
    module: str
    kind: str
    fallback: Tuple[str, ...] = ("reference",)
    devices: Optional[Tuple[str, ...]] = None


_BACKENDS: Dict[str, Backend] = {}


def _add(backend: Backend) -> None:
    _BACKENDS[backend.name] = backend


_add(Backend("reference", "rstfast.reference.functional", "functional", ()))
_add(Backend("triton", "rstfast.kernels", "kernels", ("cuda", "reference"), ("cuda", "cpu")))
_add(Backend("cpp", "rstfast.csrc", "kernels", ("reference",), ("cpu",)))
_add(Backend("cuda", "rstfast.csrc", "kernels", ("triton", "reference"), ("cuda",)))
_add(Backend("fft", "rstfast.fft", "kernels", ("reference",), ("cpu", "cuda")))
_BUILT_IN = frozenset(_BACKENDS)

# What "auto" chooses from, per device type, fastest first by the cost model (rstfast.autotune
# times them per layer shape; resolve() gives the first that runs). RSTFAST_AUTO_CPU overrides
# the CPU order.
AUTO_ORDER: Dict[str, Tuple[str, ...]] = {
    "cuda": ("triton", "cuda", "fft", "reference"),
    "cpu": ("fft", "cpp", "reference"),
}


@dataclass(frozen=True)
class Choice:
    """What runs a call: the backend, its module, and the dtype x is cast to before the kernels
    (None: no cast — functional backends, whose PyTorch ops follow autocast themselves)."""
    backend: Backend
    module: ModuleType
    compute_dtype: Optional[torch.dtype]

    @property
    def name(self) -> str:
        return self.backend.name


_warned = set()
_loaded: Dict[Tuple[str, str], Tuple[Optional[ModuleType], Optional[str]]] = {}
_resolved: Dict[tuple, Choice] = {}


def names() -> Tuple[str, ...]:
    """Every backend name a layer accepts: the concrete backends (registered ones included) and
    ``"auto"``."""
    return tuple(_BACKENDS) + ("auto",)


def check_backend_name(backend: str) -> str:
    if not isinstance(backend, str) or backend not in names():
        raise ValueError(f"backend: expected one of {names()}, got {backend!r}")
    return backend


def register(name: str, module: str, kind: str = "kernels",
             fallback: Tuple[str, ...] = ("reference",),
             devices: Optional[Tuple[str, ...]] = None) -> None:
    """Make the module ``module`` (import path; contract of ``kind``, see the module docstring)
    usable as ``backend=name`` in every layer, the trainer and the test suite."""
    if not isinstance(name, str) or name == "auto" or not name.isidentifier():
        raise ValueError(f"name: expected an identifier other than 'auto', got {name!r}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    unknown = [f for f in fallback if f not in _BACKENDS and f != name]
    if unknown:
        raise ValueError(f"fallback: expected registered backends, got unknown {unknown}")
    _add(Backend(name, module, kind, tuple(fallback), None if devices is None else tuple(devices)))
    clear_cache()


def unregister(name: str) -> None:
    """Forget a backend added with :func:`register` (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"name: {name!r} is a built-in backend and cannot be removed")
    if _BACKENDS.pop(name, None) is None:
        raise ValueError(f"name: expected a registered backend, got {name!r}")
    clear_cache()


def _load(name: str, device: torch.device) -> Tuple[Optional[ModuleType], Optional[str]]:
    """Import backend ``name``: ``(module, None)`` if it runs on ``device``, else ``(None, why)``."""
    key = (name, str(device))
    if key not in _loaded:
        _loaded[key] = _try_load(_BACKENDS[name], device)
    return _loaded[key]


def _try_load(backend: Backend, device: torch.device):
    if backend.devices is not None and device.type not in backend.devices:
        return None, (f"the {backend.name} backend runs on {' or '.join(backend.devices)} "
                      f"tensors (got device {device})")
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        return None, f"cannot import {backend.module}: {exc}"
    missing = [f for f in _CONTRACT[backend.kind] if not hasattr(module, f)]
    if missing:
        return None, (f"{backend.module} lacks {', '.join(missing)} (not a {backend.kind} "
                      f"backend module)")
    reason = module.unavailable_reason(device)
    return (None, reason) if reason else (module, None)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def auto_order(device) -> Tuple[str, ...]:
    """The backends ``auto`` considers on ``device``, in order (``RSTFAST_AUTO_CPU`` overrides
    the CPU order)."""
    device = torch.device(device)
    if device.type == "cpu" and os.environ.get("RSTFAST_AUTO_CPU"):
        order = tuple(name.strip() for name in os.environ["RSTFAST_AUTO_CPU"].split(","))
        unknown = [name for name in order if name not in _BACKENDS]
        if unknown:
            raise ValueError(f"RSTFAST_AUTO_CPU: expected comma-separated backends from "
                             f"{tuple(_BACKENDS)}, got unknown {unknown}")
        return order + ("reference",)
    return AUTO_ORDER.get(device.type, ("reference",))


FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtypes(backend: Backend, module: ModuleType, device: torch.device) -> Tuple[torch.dtype, ...]:
    return FLOATING if backend.kind == "functional" else tuple(module.DTYPES.get(device.type, ()))


def dtypes(name: str, device) -> Tuple[torch.dtype, ...]:
    """The dtypes backend ``name`` computes x in on ``device`` (functional backends: all)."""
    device = torch.device(device)
    module, reason = _load(name, device)
    if module is None:
        raise RuntimeError(f"backend {name!r} cannot run on {device}: {reason}")
    return _dtypes(_BACKENDS[name], module, device)


def get(name: str) -> Backend:
    """The registered backend ``name``."""
    if name not in _BACKENDS:
        raise ValueError(f"backend: expected one of {tuple(_BACKENDS)}, got {name!r}")
    return _BACKENDS[name]


def _compute_dtype(backend: Backend, module: ModuleType, device: torch.device,
                   dtype: torch.dtype, autocast: bool) -> Tuple[bool, Optional[torch.dtype]]:
    """``(takes it, dtype x is computed in)``: the one autocast rule. Functional backends take
    every dtype (no cast). A kernel backend computes ``dtype`` if it lists it; under autocast a
    16-bit dtype it does not list is computed in float32 (the output keeps the autocast dtype)."""
    if backend.kind == "functional":
        return True, None
    supported = _dtypes(backend, module, device)
    if dtype in supported:
        return True, dtype
    if autocast and torch.float32 in supported:
        return True, torch.float32
    return False, None


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


def resolve(backend: str, device, dtype: torch.dtype = torch.float32,
            autocast: bool = False, fallback: bool = True) -> Choice:
    """What runs ``backend`` on ``device`` for an input of ``dtype`` (``autocast``: the autocast
    dtype, with autocast on): the first of its chain (``auto``: :func:`auto_order`; else the
    backend, then its fallbacks unless ``fallback`` is False) that runs there and takes the dtype.
    Cached per arguments."""
    device = torch.device(device)
    key = (backend, str(device), dtype, autocast, fallback)
    if key not in _resolved:
        _resolved[key] = _resolve(check_backend_name(backend), device, dtype, autocast, fallback)
    return _resolved[key]


def _resolve(backend: str, device: torch.device, dtype: torch.dtype, autocast: bool,
             fallback: bool) -> Choice:
    if backend == "auto":
        chain = auto_order(device)
    else:
        chain = (backend,) + (_BACKENDS[backend].fallback if fallback else ())
    failures, refusals = [], []
    for name in chain:
        module, reason = _load(name, device)
        if module is None:
            failures.append(f"{name}: {reason}")
            continue
        spec = _BACKENDS[name]
        takes, compute = _compute_dtype(spec, module, device, dtype, autocast)
        if not takes:
            if backend != "auto":
                raise TypeError(_dtype_error(name, module, device, dtype))
            refusals.append(f"{name} computes {_dtype_names(_dtypes(spec, module, device))}")
            continue
        if (failures and (backend != "auto" or name == "reference")) or refusals:
            why = "; ".join(failures + [f"{r}, not {_dtype_names([dtype])}" for r in refusals])
            _warn_once(f"rstfast: backend {backend!r} on {device.type} falls back to {name!r}: "
                       + why)
        return Choice(spec, module, compute)
    raise RuntimeError(f"rstfast: no backend can run on {device}: " + "; ".join(failures))


def _dtype_error(name: str, module: ModuleType, device: torch.device, dtype: torch.dtype) -> str:
    takers = []
    for other, spec in _BACKENDS.items():
        other_module, _ = _load(other, device)
        if other != name and other_module is not None and \
                _compute_dtype(spec, other_module, device, dtype, False)[0]:
            takers.append(other)
    computes = _dtype_names(_dtypes(_BACKENDS[name], module, device))
    return (f"x: backend {name!r} computes {computes} on {device.type}, got "
            f"{_dtype_names([dtype])}; backends that take it there: {', '.join(takers) or 'none'} "
            f"(or run under torch.autocast, where {name!r} computes in float32 when it cannot take "
            f"the autocast dtype)")


def available_backends(device="cpu") -> Dict[str, Optional[str]]:
    """``{name: None if usable on device else reason}`` for every concrete backend."""
    device = torch.device(device)
    return {name: _load(name, device)[1] for name in _BACKENDS}


def kernels(name: str) -> ModuleType:
    """The module of kernel backend ``name`` (imported; for :mod:`rstfast.ops`)."""
    backend = _BACKENDS.get(name)
    if backend is None or backend.kind != "kernels":
        kernel_names = [n for n, b in _BACKENDS.items() if b.kind == "kernels"]
        raise ValueError(f"backend: expected a kernels backend {kernel_names}, got {name!r}")
    return importlib.import_module(backend.module)


def used(model: torch.nn.Module) -> Dict[str, str]:
    """The backend that ran the last forward of ``model``'s roto-scale layers, per layer kind:
    ``{"lift": "cpp", "group": "fft"}``; several names for one kind are joined with ``+``; layers
    that have not run yet are left out."""
    seen: Dict[str, set] = {}
    for module in model.modules():
        name = getattr(module, "last_backend", None)
        if name is not None:
            seen.setdefault(module.layer_kind, set()).add(name)
    return {kind: "+".join(sorted(found)) for kind, found in sorted(seen.items())}


# Caches built on resolutions (rstfast.autotune's decisions) register here to be cleared too.
CLEAR_HOOKS = []


def clear_cache() -> None:
    """Forget loaded and resolved backends, auto decisions and emitted warnings (tests; after
    installing or registering a backend)."""
    _loaded.clear()
    _resolved.clear()
    _warned.clear()
    for hook in CLEAR_HOOKS:
        hook()
