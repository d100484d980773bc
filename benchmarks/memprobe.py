"""Peak CPU memory of one benchmark case, measured in a fresh process.

    python -m benchmarks.memprobe '<json spec>'   # prints {"peak_memory_bytes": N}

Spec: ``{"kind": "layer", "case": {...}, "mode": "forward" | "forward+backward", "backend", "batch"}``
or ``{"kind": "train step", "model": name, "backend", "batch"}`` or ``{"kind": "inference", "model",
"mode": one of cases.INFERENCE_MODES, "backend", "batch"}``. After imports, inputs and the
model are built, the peak resident set is reset; one step runs; the answer is the peak above that
start (:class:`benchmarks.measure.PeakMemory`). A fresh process per case keeps memory that earlier
cases left cached in the allocator out of the count, and keeps the ``mallopt`` settings the
measure needs out of the timing process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch

from . import cases, measure

REPO = Path(__file__).resolve().parents[1]


def probe(spec: dict) -> Optional[int]:
    """Run the case once in this process and return its peak memory above the start (bytes)."""
    memory = measure.PeakMemory(torch.device("cpu"))
    cases.register_original()
    if spec["kind"] == "layer":
        reason = cases.backend_or_reason(spec["backend"], "cpu")
        if reason is not None:
            raise RuntimeError(reason)
        step, setup, _ = cases.layer_run(cases.case_from_spec(spec["case"]), spec["backend"],
                                         spec["batch"], "cpu",
                                         spec["mode"] == "forward+backward")
    elif spec["kind"] == "inference":
        step, setup, _ = cases.inference_run(spec["model"], spec["backend"], spec["batch"], "cpu",
                                             spec["mode"])
    else:
        step, setup, _ = cases.train_run(spec["model"], spec["backend"], spec["batch"], "cpu")
    setup()
    memory.start()
    step()
    return memory.stop()


def probe_in_subprocess(spec: dict) -> Optional[int]:
    """:func:`probe` in a fresh ``python -m benchmarks.memprobe`` (same interpreter, repo root)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "benchmarks.memprobe", json.dumps(spec)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed for {spec}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_memory_bytes"]


if __name__ == "__main__":
    print(json.dumps({"peak_memory_bytes": probe(json.loads(sys.argv[1]))}))
