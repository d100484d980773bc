"""Lazy ``triton.jit`` + ``triton.autotune``, and the float32 dot-precision setting.

A kernel is compiled for the mode Triton is in when it is first launched, not when this package is
imported: ``TRITON_INTERPRET=1`` (the CPU interpreter used by the tests) is read by ``triton.jit`` at
decoration time, so decorating lazily keeps the kernels usable whatever the import order.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Dict, List, Optional

import torch
import triton

__all__ = ["LazyKernel", "lazy_kernel", "interpreting", "interpreter_unusable_reason", "dot_options",
           "ALLOW_TF32", "GEMM_CONFIGS", "INTERPRETER_CONFIG", "AUTOTUNE_KEY"]

# float32 inputs use exact IEEE products in tl.dot unless this is True (or RSTFAST_TRITON_TF32=1).
ALLOW_TF32 = os.environ.get("RSTFAST_TRITON_TF32", "0") == "1"

# Implicit-GEMM tile configs every kernel autotunes over (each kernel adds its own), and the one
# config used on the interpreter (few, large programs: fast on the CPU).
GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=4),
]
INTERPRETER_CONFIG = triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 128})
# Kernel arguments the tuned config is keyed on (the problem shape).
AUTOTUNE_KEY = ["B", "C", "H", "W", "O", "R", "S", "A", "stride", "padding"]


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    knobs = getattr(triton, "knobs", None)           # Triton >= 3.4; the environment before
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _version(text: str) -> tuple:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:2])


def interpreter_unusable_reason() -> Optional[str]:
    """Why this Triton's CPU interpreter cannot run the kernels, or None.

    Triton < 3.7 turns a scalar kernel argument used as a loop bound into ``int(array of shape
    [1])``, which NumPy >= 2.4 rejects (``TypeError: only 0-dimensional arrays ...``).
    """
    import numpy
    if _version(triton.__version__) < (3, 7) and _version(numpy.__version__) >= (2, 4):
        return (f"the CPU interpreter of Triton {triton.__version__} fails with NumPy "
                f"{numpy.__version__}; expected Triton >= 3.7 or NumPy < 2.4")
    return None


def dot_options(dtype: torch.dtype) -> dict:
    """Kernel constexprs for ``tl.dot`` on tiles of ``dtype``.

    ``PRECISION``: IEEE products for float32 unless TF32 is allowed, the hardware default for 16-bit
    types. ``UPCAST``: multiply float32 copies of the (already rounded) tiles; needed on the
    interpreter, whose ``dot`` multiplies bfloat16 tiles as raw 16-bit integers (Triton 3.9).
    """
    upcast = dtype == torch.bfloat16 and interpreting()
    if dtype == torch.float32 or upcast:
        precision: Optional[str] = "tf32" if ALLOW_TF32 and not upcast else "ieee"
    else:
        precision = None
    return {"PRECISION": precision, "UPCAST": upcast}


class LazyKernel:
    """``kernel[grid](*args)`` compiles ``fn`` with ``triton.jit`` and autotunes over ``configs``
    (one fixed ``interpreter_config`` on the interpreter), keyed on the argument names ``key``."""

    def __init__(self, fn: Callable, configs: List[triton.Config], key: List[str],
                 interpreter_config: triton.Config):
        self.fn = fn
        self.configs = configs
        self.key = key
        self.interpreter_config = interpreter_config
        self._compiled: Dict[bool, object] = {}

    def __getitem__(self, grid):
        mode = interpreting()
        if mode not in self._compiled:
            configs = [self.interpreter_config] if mode else self.configs
            self._compiled[mode] = triton.autotune(configs, key=self.key)(triton.jit(self.fn))
        # No fusion of separate float multiplies and adds into FMAs: the kernels' float math is
        # the dot products (unaffected), so results do not depend on Triton's default, which
        # changes in Triton 3.10.
        return functools.partial(self._compiled[mode][grid], enable_fp_fusion=False)


def lazy_kernel(configs: List[triton.Config], key: List[str], interpreter_config: triton.Config):
    """Decorator form of :class:`LazyKernel`."""
    return lambda fn: LazyKernel(fn, configs, key, interpreter_config)
