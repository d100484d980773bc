"""Backend selection for the roto-scale convolutions.

Every backend module exposes the same three names:

* ``unavailable_reason(device: torch.device) -> Optional[str]`` — None when it can run on ``device``;
* ``lift_conv(x, weight, basis, bias, stride, padding, support)`` — see
  :func:`rstfast.reference.functional.lift_conv`;
* ``group_conv(x, weight, basis, bias, num_rotations, rotation_size, scale_size, stride, padding,
  support)`` — see :func:`rstfast.reference.functional.group_conv`.

``"auto"`` picks the fastest backend known to work on the input's device; an explicitly requested
backend that cannot run (module missing, extension failed to build, wrong device) falls back along
:data:`FALLBACK` with one warning per (backend, device type, reason), never silently.
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Dict, Optional, Tuple

import torch


_MODULES = {
    "reference": "rstfast.reference.functional",
    "triton": "rstfast.kernels",
    "cpp": "rstfast.csrc",
    "cuda": "rstfast.csrc",
}

# Where an explicitly requested backend falls back to when it cannot run.
FALLBACK = {
    "triton": ("cuda", "reference"),
    "cuda": ("triton", "reference"),
    "cpp": ("reference",),
    "reference": (),
}

# What "auto" tries, in order, per device type. On CPU the C++ extension is 1.7-4.5x faster than
# the original and the reference for whole training steps of the paper models (batch 8,
# benchmarks/results/cpu_report.md) with 0.16-0.58x the memory. RSTFAST_AUTO_CPU overrides the
# CPU order.
AUTO_ORDER: Dict[str, Tuple[str, ...]] = {
    "cuda": ("triton", "cuda", "reference"),
    "cpu": ("cpp", "reference"),
}

_warned = set()
_resolved: Dict[Tuple[str, str], Tuple[str, ModuleType]] = {}


def check_backend_name(backend: str) -> str:
    if not isinstance(backend, str) or backend not in names():
        raise ValueError(f"backend: expected one of {names()}, got {backend!r}")
    return backend


def register(name: str, module: str, fallback: Tuple[str, ...] = ("reference",)) -> None:
    """Make the module ``module`` (import path, backend contract above) usable as
    ``backend=name`` in every layer, e.g. a baseline for benchmarks or an experimental kernel."""
    if name == "auto" or not name.isidentifier():
        raise ValueError(f"name: expected an identifier other than 'auto', got {name!r}")
    _MODULES[name] = module
    FALLBACK[name] = tuple(fallback)
    clear_cache()


def _load(name: str, device: torch.device) -> Tuple[Optional[ModuleType], Optional[str]]:
    """Import backend ``name``; return (module, None) if it can run on ``device`` else (None, why)."""
    if name == "cpp" and device.type != "cpu":
        return None, f"the C++ backend runs on CPU tensors only (got device {device})"
    if name == "cuda" and device.type != "cuda":
        return None, f"the CUDA backend needs CUDA tensors (got device {device})"
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        return None, f"cannot import {_MODULES[name]}: {exc}"
    missing = [f for f in ("unavailable_reason", "lift_conv", "group_conv")
               if not hasattr(module, f)]
    if missing:
        return None, f"{_MODULES[name]} lacks {', '.join(missing)} (not a backend module)"
    reason = module.unavailable_reason(device)
    return (None, reason) if reason else (module, None)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _auto_order(device: torch.device) -> Tuple[str, ...]:
    if device.type == "cpu" and os.environ.get("RSTFAST_AUTO_CPU"):
        names = tuple(name.strip() for name in os.environ["RSTFAST_AUTO_CPU"].split(","))
        unknown = [name for name in names if name not in _MODULES]
        if unknown:
            raise ValueError(f"RSTFAST_AUTO_CPU: expected comma-separated backends from "
                             f"{tuple(_MODULES)}, got unknown {unknown}")
        return names + ("reference",)
    return AUTO_ORDER.get(device.type, ("reference",))


def resolve(backend: str, device: torch.device) -> ModuleType:
    """The backend module that runs ``backend`` on ``device`` (cached per pair)."""
    return _resolve(backend, device)[1]


def resolve_name(backend: str, device: torch.device) -> str:
    """The name of the concrete backend that runs ``backend`` on ``device``."""
    return _resolve(backend, device)[0]


def _resolve(backend: str, device: torch.device) -> Tuple[str, ModuleType]:
    key = (backend, str(device))
    if key in _resolved:
        return _resolved[key]
    check_backend_name(backend)
    if backend == "auto":
        chain = _auto_order(device)
    else:
        chain = (backend,) + FALLBACK[backend]
    failures = []
    for name in chain:
        module, reason = _load(name, device)
        if module is not None:
            if failures and (backend != "auto" or name == "reference"):
                _warn_once(f"rstfast: backend {backend!r} on {device.type} falls back to {name!r}: "
                           + "; ".join(failures))
            _resolved[key] = (name, module)
            return name, module
        failures.append(f"{name}: {reason}")
    raise RuntimeError(f"rstfast: no backend can run on {device}: " + "; ".join(failures))


def names() -> Tuple[str, ...]:
    """Every backend name a layer accepts: the concrete backends (registered ones included) and
    ``"auto"``."""
    return tuple(_MODULES) + ("auto",)


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


def available_backends(device="cpu") -> Dict[str, Optional[str]]:
    """``{name: None if usable on device else reason}`` for every concrete backend."""
    device = torch.device(device)
    return {name: _load(name, device)[1] for name in _MODULES}


def clear_cache() -> None:
    """Forget resolved backends and emitted warnings (tests; after installing a backend)."""
    _resolved.clear()
    _warned.clear()
