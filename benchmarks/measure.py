"""Measuring tools shared by the pytest-benchmark suite and the scaling sweep.

* :class:`PeakMemory` — peak memory of a region above its start. CUDA: ``torch.cuda.max_memory_allocated``.
  CPU: the process's peak resident set (``VmHWM``, reset by writing ``5`` to ``/proc/self/clear_refs``)
  minus the resident set at the start; glibc is told (``mallopt``) to serve every block of 64 KiB or
  more with its own ``mmap`` and to trim freed heap at once, so freed tensors leave the resident set
  and a region's peak is not hidden by memory an earlier case left cached.
* :class:`RoundTimer` — per-round times of a callable: ``time.perf_counter`` on CPU, CUDA events on GPU
  (both device-synchronised).
* :func:`machine_info` — device, versions, threads and load for report headers.
"""
from __future__ import annotations

import ctypes
import datetime
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

from rstfast.machine import cpu_name

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 64 * 1024
_CLEAR_REFS = "/proc/self/clear_refs"
_malloc_configured: Optional[bool] = None


def _configure_malloc() -> bool:
    """Make freed CPU tensors leave the resident set (glibc only); True when it took effect."""
    global _malloc_configured
    if _malloc_configured is None:
        try:
            libc = ctypes.CDLL("libc.so.6")
            _malloc_configured = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                                      and libc.mallopt(_M_TRIM_THRESHOLD, 0))
        except OSError:
            _malloc_configured = False
    return _malloc_configured


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def cpu_peak_supported() -> Optional[str]:
    """None when the CPU peak-RSS measure works here, else why not."""
    if not _configure_malloc():
        return "glibc mallopt is not available"
    try:
        with open(_CLEAR_REFS, "w") as refs:
            refs.write("5")
        _status_kib("VmHWM")
    except OSError as exc:
        return f"cannot reset the peak RSS through {_CLEAR_REFS}: {exc}"
    return None


class PeakMemory:
    """``start()`` ... ``stop() -> bytes``: peak memory of the region above its level at ``start``.

    None from ``stop`` when the device has no usable measure (see :func:`cpu_peak_supported`).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.unsupported = None if self.device.type == "cuda" else cpu_peak_supported()
        self._start = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif self.unsupported is None:
            with open(_CLEAR_REFS, "w") as refs:
                refs.write("5")
            self._start = _status_kib("VmRSS") * 1024

    def stop(self) -> Optional[int]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self._start
        if self.unsupported is not None:
            return None
        return max(_status_kib("VmHWM") * 1024 - self._start, 0)


class RoundTimer:
    """Wraps a callable so each call records its device-synchronised duration in ``times`` (s)."""

    def __init__(self, fn: Callable[[], object], device: torch.device):
        self.fn = fn
        self.device = torch.device(device)
        self.times: List[float] = []

    def __call__(self) -> None:
        if self.device.type == "cuda":
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            self.fn()
            end.record()
            torch.cuda.synchronize(self.device)
            self.times.append(begin.elapsed_time(end) / 1000.0)
        else:
            begin = time.perf_counter()
            self.fn()
            self.times.append(time.perf_counter() - begin)


def median_iqr(values: List[float]) -> Dict[str, float]:
    """Median and inter-quartile range (inclusive quartiles; 0 for a single value)."""
    if len(values) < 2:
        return {"median": values[0], "iqr": 0.0}
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "iqr": q3 - q1}


def machine_info(device: torch.device) -> Dict[str, object]:
    """What a report header needs: device name, versions, threads, load, UTC date."""
    device = torch.device(device)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_name()
    return {
        "device": str(device), "device_name": name, "torch": torch.__version__,
        "triton": triton_version, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


