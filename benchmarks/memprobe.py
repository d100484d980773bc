"""Peak CPU memory of one benchmark case, measured in a fresh process.

    python -m benchmarks.memprobe '<json spec>'   # prints {"peak_memory_bytes": N}
    python -m benchmarks.memprobe --table --backends reference,cpp,fft --batch 32 --out DIR
        # every paper layer, forward + backward: memory_cpu_b32.{md,json} in DIR

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


def table(backends, batch: int, out: Path) -> Path:
    """Peak memory of every paper layer (forward + backward) per backend, each in a fresh process;
    writes ``memory_cpu_b<batch>.json`` and ``.md`` (with each backend vs the first) into ``out``."""
    rows = []
    for case in cases.PAPER_LAYERS:
        peaks = {name: probe_in_subprocess({"kind": "layer", "case": cases.case_spec(case),
                                            "mode": "forward+backward", "backend": name,
                                            "batch": batch})
                 for name in backends}
        rows.append({"case": case.name, "models": list(case.models), "peak_bytes": peaks})
        print(case.name, {k: f"{v / 2 ** 20:.0f} MiB" for k, v in peaks.items()}, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"memory_cpu_b{batch}"
    info = measure.machine_info(torch.device("cpu"))
    stem.with_suffix(".json").write_text(json.dumps({"machine": info, "batch": batch,
                                                     "rows": rows}, indent=1) + "\n")
    first = backends[0]
    head = ["layer"] + [f"{b} MiB" for b in backends] + [f"{b} vs {first}" for b in backends[1:]]
    lines = [f"# Peak CPU memory, forward + backward, batch {batch}, float32",
             "", f"* CPU: **{info.get('device_name')}**; torch {info.get('torch')}; "
             f"{info.get('date_utc')}; one step per backend and layer in a fresh process "
             "(peak resident set above the start, `benchmarks/memprobe.py`)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for row in rows:
        peaks = row["peak_bytes"]
        cells = [f"{peaks[b] / 2 ** 20:,.0f}" for b in backends]
        cells += [f"{peaks[b] / peaks[first]:.2f}×" for b in backends[1:]]
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem.with_suffix(".md")


def main(argv) -> None:
    if argv and argv[0] == "--table":
        import argparse
        parser = argparse.ArgumentParser(prog="python -m benchmarks.memprobe --table")
        parser.add_argument("--backends", default="reference,cpp,fft")
        parser.add_argument("--batch", type=int, default=32)
        parser.add_argument("--out", type=Path, default=Path("runs/bench"))
        args = parser.parse_args(argv[1:])
        print(table(args.backends.split(","), args.batch, args.out))
    else:
        print(json.dumps({"peak_memory_bytes": probe(json.loads(argv[0]))}))


if __name__ == "__main__":
    main(sys.argv[1:])
