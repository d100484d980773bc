"""JIT build of the C++/CUDA extension with ``torch.utils.cpp_extension.load`` (ninja).

Two shared libraries, built on first use and loaded into ``torch.ops.rstfast_cpp``:

* ``rstfast_cpu`` (always): kernel schemas, checks and the CPU kernels;
* ``rstfast_cuda`` (only when torch has CUDA and a GPU is visible): the CUDA kernels.

Build folder: ``<root>/<name>-<key>`` with ``root`` = ``$RSTFAST_BUILD_DIR`` or torch's default
(``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions/<python, cuda tag>``) and ``key`` a hash
of the sources, compiler flags and torch version (:func:`build_key`): two checkouts, or a checkout
and an installed copy, never rebuild each other's extension. ``RSTFAST_VERBOSE_BUILD=1`` prints
the compiler output. A failed build gives one warning naming the log file and makes
:func:`unavailable_reason` return the reason, so :mod:`rstfast.backends` falls back.

``python -m rstfast.csrc.build`` builds ahead of time and reports what was built.
"""
from __future__ import annotations

import hashlib
import os
import threading
import traceback
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch

SOURCE_DIR = Path(__file__).resolve().parent
CPU_SOURCES = ("bindings.cpp", "rs_conv_checks.cpp", "rs_conv_cpu.cpp")
CUDA_SOURCES = ("rs_conv_checks.cpp", "rs_conv_cuda_glue.cpp", "rs_conv_cuda.cu")
HEADERS = ("geometry.h", "rs_conv.h", "rs_conv_cuda.h")
# Portable flags only (no -march=native): the cache may be shared by machines with different CPUs.
# The CPU code threads through ATen / oneDNN (torch.get_num_threads()), so it needs no -fopenmp.
CXX_FLAGS = ("-O3",)
NVCC_FLAGS = ("-O3", "--use_fast_math")

_lock = threading.Lock()
_results: Dict[str, Optional[str]] = {}   # extension name -> None (loaded) or why it is unavailable


def build_key(sources, cuda: bool) -> str:
    """12 hex digits of sha256 over the sources and headers, the flags, torch's version and the
    CUDA toolkit torch was built with."""
    digest = hashlib.sha256()
    for name in sorted(set(sources) | set(HEADERS)):
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes())
    digest.update(repr((CXX_FLAGS, NVCC_FLAGS if cuda else (), torch.__version__,
                        torch.version.cuda)).encode())
    return digest.hexdigest()[:12]


def build_directory(name: str, sources, cuda: bool) -> str:
    """The build folder of extension ``name`` (created): ``<root>/<name>-<build_key>``."""
    root = os.environ.get("RSTFAST_BUILD_DIR")
    if root:
        base = Path(root).expanduser()
    else:
        from torch.utils.cpp_extension import _get_build_directory
        base = Path(_get_build_directory(name, verbose=False)).parent
    path = base / f"{name}-{build_key(sources, cuda)}"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def cuda_wanted() -> bool:
    """True when torch was built with CUDA and a GPU is visible."""
    return torch.version.cuda is not None and torch.cuda.is_available()


def _first_error_line(text: str) -> str:
    """The first compiler/ninja line that says what went wrong (else the first line), shortened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "not found" in line.lower():
            return line[:300]
    return lines[0][:300] if lines else "no message"


def _build(name: str, sources, cuda: bool) -> Optional[str]:
    from torch.utils import cpp_extension
    verbose = os.environ.get("RSTFAST_VERBOSE_BUILD", "") not in ("", "0")
    folder = Path(build_directory(name, sources, cuda))
    try:
        cpp_extension.load(
            name=name,
            sources=[str(SOURCE_DIR / s) for s in sources],
            extra_cflags=list(CXX_FLAGS),
            extra_cuda_cflags=list(NVCC_FLAGS) if cuda else None,
            extra_include_paths=[str(SOURCE_DIR)],
            build_directory=str(folder),
            verbose=verbose,
            is_python_module=False,
        )
    except Exception as exc:  # compiler missing, compile/link error, ninja missing, load error
        try:
            log = folder / "rstfast_build_error.log"
            log.write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            where = f"full log: {log}"
        except OSError as log_error:
            where = f"could not write the log ({log_error}); set RSTFAST_VERBOSE_BUILD=1 to see it"
        reason = (f"building the {name} extension failed ({type(exc).__name__}: "
                  f"{_first_error_line(str(exc))}); {where}")
        warnings.warn(f"rstfast: {reason}", RuntimeWarning, stacklevel=4)
        return reason
    return None


def ensure_built(cuda: bool = False) -> Optional[str]:
    """Build and load the CPU extension (and the CUDA one when ``cuda``); None or why it failed."""
    with _lock:
        if "rstfast_cpu" not in _results:
            _results["rstfast_cpu"] = _build("rstfast_cpu", CPU_SOURCES, cuda=False)
        reason = _results["rstfast_cpu"]
        if reason is None and cuda:
            if "rstfast_cuda" not in _results:
                _results["rstfast_cuda"] = (_build("rstfast_cuda", CUDA_SOURCES, cuda=True)
                                            if cuda_wanted() else
                                            "torch has no CUDA or no GPU is visible")
            reason = _results["rstfast_cuda"]
        return reason


def build_parser():
    import argparse
    return argparse.ArgumentParser(prog="python -m rstfast.csrc.build", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def main(argv: Optional[List[str]] = None) -> int:
    """Build ahead of time; print each extension's state; exit status 1 if the CPU build failed."""
    build_parser().parse_args(argv)
    cpu_reason = ensure_built(cuda=False)
    names = ["rstfast_cpu"] + (["rstfast_cuda"] if cuda_wanted() else [])
    cuda_reason = ensure_built(cuda=True) if cuda_wanted() else None
    for name, reason in zip(names, (cpu_reason, cuda_reason)):
        sources = CPU_SOURCES if name == "rstfast_cpu" else CUDA_SOURCES
        folder = build_directory(name, sources, cuda=name == "rstfast_cuda")
        print(f"{name}: {'built' if reason is None else 'FAILED: ' + reason} ({folder})")
    if not cuda_wanted():
        print("rstfast_cuda: not built (torch has no CUDA or no GPU is visible)")
    return 0 if cpu_reason is None and cuda_reason is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
