"""The backends of the roto-scale convolutions: one object per backend, one registry, one resolution.

A backend is a :class:`Backend` object that owns everything that differs between backends: where it
runs (:meth:`~Backend.unavailable_reason`), the dtypes it computes (:meth:`~Backend.dtypes`), the
autocast rule applied to its inputs, the filters it convolves with (:meth:`~Backend.prepare_filters`),
the differentiable call (:meth:`~Backend.forward`) and its cost (:meth:`~Backend.flops`,
:attr:`~Backend.algorithm`). Nothing outside this module asks what kind a backend is. Two kinds:

* ``"kernels"`` (:class:`KernelBackend`: ``triton``, ``cpp``, ``cuda``, ``fft``, and registered ones):
  the module implements the op contract of :mod:`rstfast.contract` on the cropped filter buffer of
  :mod:`rstfast.geometry` — ``unavailable_reason(device)``, ``DTYPES`` (``{device type: dtypes of x it
  computes in}``), ``conv_forward(x, filters, bias, geo)`` and ``conv_backward(grad_y, x, filters,
  geo, need_input, need_filters)``; optionally ``ALGORITHM`` (the cost model's throughput class,
  default ``"direct"``) and ``flops(geo, x_shape)`` (forward FLOPs, default :func:`rstfast.flops.direct`).
  Filter expansion, autograd, fake kernels and the autocast rule are written once, outside it.
* ``"functional"`` (:class:`FunctionalBackend`: ``reference``, and baselines such as
  ``benchmarks.original``): plain PyTorch with PyTorch's autograd from the dense filter — the module
  provides ``unavailable_reason(device)``, ``expand_filter(weight, basis)``,
  ``lift_conv_dense(x, dense_filter, bias, stride, padding)`` and ``group_conv_dense(x,
  dense_filter, bias, num_rotations, rotation_size, scale_size, stride, padding)``.

Registering a backend is one call, :func:`register`. ``"auto"`` picks, per layer shape, the fastest
verified backend of :data:`AUTO_ORDER` (:mod:`rstfast.autotune`; :func:`resolve` gives the first of
them that runs). An explicitly requested backend that cannot run (not installed, failed to build,
wrong device) falls back along its ``fallback`` chain with one warning per (backend, device,
reason), never silently; one that runs but does not take the dtype raises a ``TypeError`` naming the
backends that would. docs/adding_a_backend.md is the guide.
"""
from __future__ import annotations

import abc
import importlib
import os
import warnings
from types import ModuleType
from typing import Dict, Optional, Tuple

import torch

from . import contract, flops as flop_model
from .geometry import Geometry

__all__ = ["Backend", "KernelBackend", "FunctionalBackend", "names", "get", "register",
           "register_specs", "unregister", "resolve", "auto_order", "available_backends", "dtypes", "used",
           "check_backend_name", "AUTO_ORDER", "FLOATING", "clear_cache"]

FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class Backend(abc.ABC):
    """One backend: ``name``, the import path of its ``module`` (see the module docstring for what
    the module of each kind provides), the backends an explicit request falls back to, and the
    device types it may run on (None: any its module accepts).

    ``Backend(name, module, kind, ...)`` builds the backend of ``kind`` (:class:`KernelBackend` or
    :class:`FunctionalBackend`)."""
    kind = ""
    algorithm = "direct"             # throughput class of the cost model (rstfast.autotune)
    CONTRACT: Tuple[str, ...] = ()   # what the module must provide

    def __new__(cls, name: str, module: str, kind: str = "kernels", *args, **kwargs):
        if cls is Backend:
            if kind not in _KINDS:
                raise ValueError(f"kind: expected one of {tuple(_KINDS)}, got {kind!r}")
            cls = _KINDS[kind]
        return super().__new__(cls)

    def __init__(self, name: str, module: str, kind: str = "kernels",
                 fallback: Tuple[str, ...] = ("reference",),
                 devices: Optional[Tuple[str, ...]] = None):
        self.name = name
        self.module_path = module
        self.fallback = tuple(fallback)
        self.devices = None if devices is None else tuple(devices)
        self._reasons: Dict[str, Optional[str]] = {}
        self._module: Optional[ModuleType] = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.module_path!r})"

    # ------------------------------------------------------------------ where it runs
    @property
    def module(self) -> ModuleType:
        """The backend's module (imported on first use, then kept: traced code only reads it)."""
        if self._module is None:
            self._module = importlib.import_module(self.module_path)
        return self._module

    def unavailable_reason(self, device) -> Optional[str]:
        """None when the backend runs on ``device``, else why not (cached per device)."""
        device = torch.device(device)
        key = str(device)
        if key not in self._reasons:
            self._reasons[key] = self._probe(device)
        return self._reasons[key]

    def _probe(self, device: torch.device) -> Optional[str]:
        if self.devices is not None and device.type not in self.devices:
            return (f"the {self.name} backend runs on {' or '.join(self.devices)} tensors "
                    f"(got device {device})")
        try:
            module = self.module
        except ImportError as exc:
            return f"cannot import {self.module_path}: {exc}"
        missing = [f for f in self.CONTRACT if not hasattr(module, f)]
        if missing:
            return (f"{self.module_path} lacks {', '.join(missing)} (not a {self.kind} backend "
                    f"module)")
        try:
            return self._contract_problem(module) or module.unavailable_reason(device)
        except Exception as exc:      # a misbehaving backend is unavailable, not fatal
            return f"{self.module_path} raised {type(exc).__name__}: {exc}"

    def _contract_problem(self, module: ModuleType) -> Optional[str]:
        """What is wrong with the module's contract beyond missing names, or None."""
        return None

    def forget(self) -> None:
        """Forget the cached availability (after installing or rebuilding)."""
        self._reasons.clear()

    # ------------------------------------------------------------------------ dtypes
    @abc.abstractmethod
    def dtypes(self, device) -> Tuple[torch.dtype, ...]:
        """The dtypes x is computed in on ``device``."""

    def compute_dtype(self, device, dtype: torch.dtype,
                      autocast: bool) -> Optional[torch.dtype]:
        """The dtype an input of ``dtype`` (under autocast: the autocast dtype) is computed in, or
        None if the backend does not take it: ``dtype`` itself if listed; under autocast a dtype
        it does not list is computed in float32 (the output keeps the autocast dtype)."""
        supported = self.dtypes(device)
        if dtype in supported:
            return dtype
        if autocast and torch.float32 in supported:
            return torch.float32
        return None

    # ------------------------------------------------------------------------- calls
    @abc.abstractmethod
    def prepare_filters(self, weight: torch.Tensor, basis: torch.Tensor,
                        geo: Geometry) -> torch.Tensor:
        """The filters :meth:`forward` convolves with (no autograd: for inference caches)."""

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor,
                bias: Optional[torch.Tensor], geo: Geometry,
                filters: Optional[torch.Tensor] = None) -> torch.Tensor:
        """y ``[B, O, T, H', W']`` of a validated call (differentiable in x, weight, bias);
        ``filters`` (:meth:`prepare_filters`) are reused when no gradient is needed."""

    def flops(self, geo: Geometry, x_shape) -> float:
        """Forward FLOPs of one call (the cost model's numerator)."""
        return flop_model.direct(geo, x_shape)


class KernelBackend(Backend):
    """A backend whose module implements the kernels of :mod:`rstfast.contract`."""
    kind = "kernels"
    CONTRACT = ("unavailable_reason", "DTYPES", "conv_forward", "conv_backward")

    @property
    def algorithm(self) -> str:
        return getattr(self.module, "ALGORITHM", "direct")

    def _contract_problem(self, module):
        dtypes = module.DTYPES
        if not isinstance(dtypes, dict) or not all(
                isinstance(v, (tuple, list)) and all(isinstance(d, torch.dtype) for d in v)
                for v in dtypes.values()):
            return f"{self.module_path}.DTYPES: expected {{device type: (torch dtypes)}}"
        return None

    def dtypes(self, device) -> Tuple[torch.dtype, ...]:
        return tuple(self.module.DTYPES.get(torch.device(device).type, ()))

    def conv_forward(self, x, filters, bias, geo):
        return self.module.conv_forward(x, filters, bias, geo)

    def conv_backward(self, grad_y, x, filters, geo, need_input, need_filters):
        return self.module.conv_backward(grad_y, x, filters, geo, need_input, need_filters)

    def prepare_filters(self, weight, basis, geo):
        return contract.expand_filters(weight, basis, geo.encode())

    def forward(self, x, weight, basis, bias, geo, filters=None):
        autocast_dtype = _autocast_dtype(x.device.type)
        compute = self.compute_dtype(x.device, autocast_dtype or x.dtype,
                                     autocast_dtype is not None)
        x = x.to(compute)
        if filters is not None:
            y = contract.conv(x, filters, bias, geo.encode(), self.name)
        else:
            y = contract.roto_scale_conv_op(x, weight, basis, bias, geo.encode(), self.name)
        return y if autocast_dtype is None else y.to(autocast_dtype)

    def flops(self, geo, x_shape):
        own = getattr(self.module, "flops", None)
        return own(geo, x_shape) if own is not None else flop_model.direct(geo, x_shape)


class FunctionalBackend(Backend):
    """A backend of plain PyTorch functions on the dense filter (PyTorch's autograd and autocast)."""
    kind = "functional"
    algorithm = "dense"
    CONTRACT = ("unavailable_reason", "expand_filter", "lift_conv_dense", "group_conv_dense")

    def dtypes(self, device) -> Tuple[torch.dtype, ...]:
        return FLOATING

    def compute_dtype(self, device, dtype, autocast):
        return dtype                   # its PyTorch ops follow autocast themselves

    def prepare_filters(self, weight, basis, geo):
        return self.module.expand_filter(weight, basis)

    def forward(self, x, weight, basis, bias, geo, filters=None):
        dense = self.module.expand_filter(weight, basis) if filters is None else filters
        if geo.lifting:
            return self.module.lift_conv_dense(x, dense, bias, geo.stride, geo.padding)
        return self.module.group_conv_dense(x, dense, bias, geo.num_rotations, geo.rotation_size,
                                            geo.scale_size, geo.stride, geo.padding)

    def flops(self, geo, x_shape):
        return flop_model.dense(geo, x_shape)


_KINDS = {"kernels": KernelBackend, "functional": FunctionalBackend}
_BACKENDS: Dict[str, Backend] = {}


def _kernels_of(name: str) -> KernelBackend:
    """The kernels the ops of :mod:`rstfast.contract` run for ``backend=name``."""
    backend = _BACKENDS.get(name)
    if not isinstance(backend, KernelBackend):
        kernel_names = [n for n, b in _BACKENDS.items() if isinstance(b, KernelBackend)]
        raise ValueError(f"backend: expected a kernels backend {kernel_names}, got {name!r}")
    return backend


contract.kernel_lookup = _kernels_of


def _add(backend: Backend) -> None:
    _BACKENDS[backend.name] = backend


_add(Backend("reference", "rstfast.reference.functional", "functional", ()))
_add(Backend("triton", "rstfast.triton", "kernels", ("cuda", "reference"), ("cuda", "cpu")))
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

_warned = set()
_resolved: Dict[tuple, Backend] = {}


def names() -> Tuple[str, ...]:
    """Every backend name a layer accepts: the concrete backends (registered ones included) and
    ``"auto"``."""
    return tuple(_BACKENDS) + ("auto",)


def check_backend_name(backend: str) -> str:
    """``backend`` if it is one of :func:`names`, else a ValueError naming the choices."""
    if not isinstance(backend, str) or backend not in names():
        raise ValueError(f"backend: expected one of {names()}, got {backend!r}")
    return backend


def register(name: str, module: str, kind: str = "kernels",
             fallback: Tuple[str, ...] = ("reference",),
             devices: Optional[Tuple[str, ...]] = None) -> Backend:
    """Make the module ``module`` (import path; what it provides depends on ``kind``, see the
    module docstring) usable as ``backend=name`` in every layer, the trainer, the test suite and
    ``python -m rstfast.check``. Returns the backend object."""
    if not isinstance(name, str) or name == "auto" or not name.isidentifier():
        raise ValueError(f"name: expected an identifier other than 'auto', got {name!r}")
    if name in _BUILT_IN:
        raise ValueError(f"name: {name!r} is a built-in backend; choose another name")
    unknown = [f for f in fallback if f not in _BACKENDS and f != name]
    if unknown:
        raise ValueError(f"fallback: expected registered backends, got unknown {unknown}")
    backend = Backend(name, module, kind, tuple(fallback), devices)
    _add(backend)
    clear_cache()
    return backend


def register_specs(specs: str) -> Tuple[Backend, ...]:
    """Register each ``name=module[:kind]`` of the comma-separated ``specs`` (the form of
    ``RSTFAST_EXTRA_BACKENDS`` and of ``python -m rstfast.check --register``)."""
    registered = []
    for spec in filter(None, (item.strip() for item in specs.split(","))):
        name, equals, target = spec.partition("=")
        module, _, kind = target.partition(":")
        if not equals or not name.strip() or not module.strip():
            raise ValueError(f"backend spec: expected name=module[:kind], got {spec!r}")
        registered.append(register(name.strip(), module.strip(), kind=kind.strip() or "kernels"))
    return tuple(registered)


def unregister(name: str) -> None:
    """Forget a backend added with :func:`register` (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"name: {name!r} is a built-in backend and cannot be removed")
    if _BACKENDS.pop(name, None) is None:
        raise ValueError(f"name: expected a registered backend, got {name!r}")
    clear_cache()


def get(name: str) -> Backend:
    """The registered backend ``name``."""
    if name not in _BACKENDS:
        raise ValueError(f"backend: expected one of {tuple(_BACKENDS)}, got {name!r}")
    return _BACKENDS[name]


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def auto_order(device) -> Tuple[str, ...]:
    """The backends ``auto`` considers on ``device``, in order (``RSTFAST_AUTO_CPU`` overrides
    the CPU order; the reference always closes it)."""
    device = torch.device(device)
    if device.type == "cpu" and os.environ.get("RSTFAST_AUTO_CPU"):
        order = tuple(name.strip() for name in os.environ["RSTFAST_AUTO_CPU"].split(","))
        unknown = [name for name in order if name not in _BACKENDS]
        if unknown:
            raise ValueError(f"RSTFAST_AUTO_CPU: expected comma-separated backends from "
                             f"{tuple(_BACKENDS)}, got unknown {unknown}")
        return order + ("reference",)
    return AUTO_ORDER.get(device.type, ("reference",))


def _usable(name: str, device: torch.device) -> Backend:
    """The backend ``name`` if it runs on ``device``, else a RuntimeError saying why."""
    backend = get(name)
    reason = backend.unavailable_reason(device)
    if reason:
        raise RuntimeError(f"backend {name!r} cannot run on {device}: {reason}")
    return backend


def dtypes(name: str, device) -> Tuple[torch.dtype, ...]:
    """The dtypes backend ``name`` computes x in on ``device`` (functional backends: all)."""
    device = torch.device(device)
    return _usable(name, device).dtypes(device)


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


def resolve(backend: str, device, dtype: torch.dtype = torch.float32,
            autocast: bool = False, fallback: bool = True) -> Backend:
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
             fallback: bool) -> Backend:
    chain = auto_order(device) if backend == "auto" else (
        (backend,) + (get(backend).fallback if fallback else ()))
    failures, refusals = [], []
    for name in chain:
        candidate = get(name)
        reason = candidate.unavailable_reason(device)
        if reason:
            failures.append(f"{name}: {reason}")
            continue
        if candidate.compute_dtype(device, dtype, autocast) is None:
            if backend != "auto":
                raise TypeError(_dtype_error(candidate, device, dtype))
            refusals.append(f"{name} computes {_dtype_names(candidate.dtypes(device))}")
            continue
        if (failures and (backend != "auto" or name == "reference")) or refusals:
            why = "; ".join(failures + [f"{r}, not {_dtype_names([dtype])}" for r in refusals])
            _warn_once(f"rstfast: backend {backend!r} on {device.type} falls back to {name!r}: "
                       + why)
        return candidate
    raise RuntimeError(f"rstfast: no backend can run on {device}: " + "; ".join(failures))


def _dtype_error(backend: Backend, device: torch.device, dtype: torch.dtype) -> str:
    takers = [other.name for other in _BACKENDS.values()
              if other is not backend and other.unavailable_reason(device) is None
              and other.compute_dtype(device, dtype, False) is not None]
    return (f"x: backend {backend.name!r} computes {_dtype_names(backend.dtypes(device))} on "
            f"{device.type}, got {_dtype_names([dtype])}; backends that take it there: "
            f"{', '.join(takers) or 'none'} (or run under torch.autocast, where {backend.name!r} "
            f"computes in float32 when it cannot take the autocast dtype)")


def available_backends(device="cpu") -> Dict[str, Optional[str]]:
    """``{name: None if usable on device else reason}`` for every concrete backend."""
    device = torch.device(device)
    return {name: backend.unavailable_reason(device) for name, backend in _BACKENDS.items()}


def used(model: torch.nn.Module, per_layer: bool = False) -> Dict[str, str]:
    """The backend that ran the last forward of ``model``'s roto-scale layers: per layer kind
    (``{"lift": "cpp", "group": "fft"}``; several names for one kind joined with ``+``) or, with
    ``per_layer``, per layer (``{"layers.0": "cpp", ...}``, qualified module names). Layers that
    have not run yet are left out."""
    if per_layer:
        return {name: module.last_backend for name, module in model.named_modules()
                if getattr(module, "last_backend", None) is not None}
    seen: Dict[str, set] = {}
    for module in model.modules():
        name = getattr(module, "last_backend", None)
        if name is not None:
            seen.setdefault(module.layer_kind, set()).add(name)
    return {kind: "+".join(sorted(found)) for kind, found in sorted(seen.items())}


# Caches built on resolutions (rstfast.autotune's decisions) register here to be cleared too.
CLEAR_HOOKS = []


def clear_cache() -> None:
    """Forget availabilities, resolutions, auto decisions and emitted warnings (tests; after
    installing or registering a backend)."""
    for backend in _BACKENDS.values():
        backend.forget()
    _resolved.clear()
    _warned.clear()
    for hook in CLEAR_HOOKS:
        hook()
