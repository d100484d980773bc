"""JIT build of the C++/CUDA extension with ``torch.utils.cpp_extension.load`` (ninja).

Two shared libraries, built on first use and loaded into ``torch.ops.rstfast_cpp``:

* ``rstfast_cpu`` (always): kernel schemas, checks and the CPU kernels;
* ``rstfast_cuda`` (only when torch has CUDA and a GPU is visible): the CUDA kernels.

Build folder: ``<root>/<name>-<key>`` with ``root`` = ``$RSTFAST_BUILD_DIR`` or torch's default
(``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions/<python, cuda tag>``) and ``key`` a hash
of the sources, compiler flags and torch version (:func:`build_key`): two checkouts, or a checkout
and an installed copy, never rebuild each other's extension.

CPU instruction set: the CPU library is compiled for the x86-64 level this machine supports
(:func:`cpu_arch_flags`: ``x86-64-v4`` = AVX-512, ``x86-64-v3`` = AVX2 + FMA, else the portable
baseline), so the FFT backend's vector loops (``fft_cpu.cpp``) use the widest registers; the
level is part of the flags and so of the build key, and a cache shared by machines of different
CPUs keeps one build per level. ``RSTFAST_CPU_ARCH`` overrides the level (``x86-64-v3``,
``x86-64-v4``, or ``portable``). ``RSTFAST_VERBOSE_BUILD=1`` prints
the compiler output. A failed build gives one warning naming the log file and makes
:func:`unavailable_reason` return the reason, so :mod:`rstfast.backends` falls back.

``python -m rstfast.csrc.build`` builds ahead of time and reports what was built.
"""
from __future__ import annotations

import hashlib
import os
import platform
import threading
import traceback
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

SOURCE_DIR = Path(__file__).resolve().parent
CPU_SOURCES = ("bindings.cpp", "rs_conv_checks.cpp", "rs_conv_cpu.cpp", "fft_cpu.cpp")
CUDA_SOURCES = ("rs_conv_checks.cpp", "rs_conv_cuda_glue.cpp", "rs_conv_cuda.cu")
HEADERS = ("geometry.h", "rs_conv.h", "rs_conv_cuda.h")
# Compiler flags of both libraries; the CPU library adds OpenMP (cpu_flags): its own loops
# thread through at::parallel_for, whose OpenMP implementation is compiled into the caller.
CXX_FLAGS = ("-O3",)
NVCC_FLAGS = ("-O3", "--use_fast_math")
# x86-64 levels by the /proc/cpuinfo features they need (the psABI's lists, those that matter).
ARCH_FEATURES = {
    "x86-64-v4": ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma"),
    "x86-64-v3": ("avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"),
}

_lock = threading.Lock()
_results: Dict[str, Optional[str]] = {}   # extension name -> None (loaded) or why it is unavailable


def _cpu_features() -> frozenset:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_arch_flags() -> Tuple[str, ...]:
    """``-march`` flags of the CPU library: ``$RSTFAST_CPU_ARCH`` if set (``portable``: none),
    else the highest x86-64 level of :data:`ARCH_FEATURES` this CPU has (x86-64 only; 512-bit
    vectors preferred at ``x86-64-v4``), else none."""
    arch = os.environ.get("RSTFAST_CPU_ARCH", "").strip()
    if not arch:
        features = _cpu_features() if platform.machine().lower() in ("x86_64", "amd64") else ()
        arch = next((level for level, needs in ARCH_FEATURES.items()
                     if all(flag in features for flag in needs)), "portable")
    elif arch != "portable" and arch not in ARCH_FEATURES:
        raise ValueError(f"RSTFAST_CPU_ARCH: expected one of {['portable', *ARCH_FEATURES]}, "
                         f"got {arch!r}")
    if arch == "portable":
        return ()
    return (f"-march={arch}",) + (("-mprefer-vector-width=512",) if arch == "x86-64-v4" else ())


def openmp_flags() -> Tuple[str, ...]:
    """``-fopenmp`` where torch threads with OpenMP (then ``at::parallel_for`` in the CPU
    library's loops runs on torch's threads), else ``-fopenmp-simd`` (the loops' ``#pragma omp
    simd`` only; at::parallel_for is then torch's own pool)."""
    return ("-fopenmp",) if torch.backends.openmp.is_available() else ("-fopenmp-simd",)


def cpu_flags() -> Tuple[str, ...]:
    """Compiler flags of the CPU library: :data:`CXX_FLAGS`, :func:`openmp_flags` and
    :func:`cpu_arch_flags`."""
    return CXX_FLAGS + openmp_flags() + cpu_arch_flags()


def build_key(sources, cuda: bool) -> str:
    """12 hex digits of sha256 over the sources and headers, the flags (the CPU library's
    instruction-set level included), torch's version and the CUDA toolkit torch was built with."""
    digest = hashlib.sha256()
    for name in sorted(set(sources) | set(HEADERS)):
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes())
    digest.update(repr((CXX_FLAGS if cuda else cpu_flags(), NVCC_FLAGS if cuda else (),
                        torch.__version__, torch.version.cuda)).encode())
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
            extra_cflags=list(CXX_FLAGS if cuda else cpu_flags()),
            extra_ldflags=None if cuda else [flag for flag in openmp_flags()
                                             if flag == "-fopenmp"],
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
        flags = " ".join(CXX_FLAGS if name == "rstfast_cuda" else cpu_flags())
        print(f"{name}: {'built' if reason is None else 'FAILED: ' + reason} ({folder}; "
              f"{flags})")
    if not cuda_wanted():
        print("rstfast_cuda: not built (torch has no CUDA or no GPU is visible)")
    return 0 if cpu_reason is None and cuda_reason is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
