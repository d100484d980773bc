"""What machine this is, in words: named with every figure (benchmarks, ``rstfast.check``) and
hashed into the id of ``auto``'s decision cache."""
from __future__ import annotations

import platform

import torch

__all__ = ["cpu_name", "device_name"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device) -> str:
    """The GPU's name for a CUDA device, else :func:`cpu_name`."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
