"""How long one run of the paper preset takes on this machine, from short measurements.

For each paper model of ``rstfast.reproduce.GRID`` (``_56``, the preset's batch 128, Adam,
``backend="auto"``): one training step and one evaluation batch first (auto measures and verifies
each layer shape there; reported apart), then ``--steps`` timed training steps and evaluation
batches (the fastest counts). A run of the ``paper`` preset is then
``epochs * (train/B steps + val/B evaluation batches) + test/B evaluation batches`` with the
preset's split sizes (RS-MNIST 10,000/2,000/50,000, RS-Fashion-MNIST 2,000/2,000/50,000, 60
epochs): an extrapolation, data loading and the first calls left out.

    python -m benchmarks.paper_runs --device cpu --out runs/bench/paper_runs_cpu.json
    python -m benchmarks.paper_runs --device cuda --out runs/bench/paper_runs_cuda.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn as nn

from rstfast import models
from rstfast.data.generate import DATASETS as DATA
from rstfast.reproduce import DATASETS, GRID, MODEL_PREFIX, PRESETS


def timed(run, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(entry, device: torch.device, batch: int, steps: int) -> dict:
    """Seconds of a training step and of an evaluation batch of ``entry``'s ``_56`` model."""
    torch.manual_seed(0)
    model = models.get("mnist_" + entry.model.format(size=56), basis=entry.basis, backend="auto").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        model.train()
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

    def evaluate():
        model.eval()
        with torch.no_grad():
            model(x)
    first_step, first_eval = timed(step, device), timed(evaluate, device)
    step_s = min(timed(step, device) for _ in range(steps))
    eval_s = min(timed(evaluate, device) for _ in range(steps))
    return {"first_step_s": first_step, "first_eval_s": first_eval, "step_s": step_s, "eval_s": eval_s}


def run_seconds(times: dict, dataset: str, batch: int, epochs: int) -> float:
    """Seconds of one paper run on ``dataset`` (RS-MNIST / RS-Fashion-MNIST default splits)."""
    train, val, test = DATA[DATASETS[dataset]].sizes
    return epochs * (train / batch * times["step_s"] + val / batch * times["eval_s"]) + test / batch * times["eval_s"]


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.paper_runs", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=[e.key for e in GRID], choices=[e.key for e in GRID])
    p.add_argument("--batch", type=int, default=PRESETS["paper"].batch_size)
    p.add_argument("--steps", type=int, default=2, help="timed steps and evaluation batches per model")
    p.add_argument("--out", type=Path, default=None, help="JSON of every figure")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    preset = PRESETS["paper"]
    datasets = [d for d in preset.datasets if d in MODEL_PREFIX]
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    report = {"device": str(device), "machine": machine, "batch": args.batch, "epochs": preset.epochs,
              "load_average_before": os.getloadavg(), "models": {}}
    print(f"paper preset, per run, extrapolated from {args.steps} timed steps per model at batch "
          f"{args.batch} on {device} ({machine}); load average {os.getloadavg()[0]:.2f}")
    print("| model | basis | training step | eval batch | first step + eval (auto) | "
          + " | ".join(f"run {d}" for d in datasets) + " |")
    for entry in GRID:
        if entry.key not in args.models:
            continue
        times = measure(entry, device, args.batch, args.steps)
        times["run_s"] = {d: run_seconds(times, d, args.batch, preset.epochs) for d in datasets}
        report["models"][entry.key] = dict(times, label=entry.label, basis=entry.basis)
        print(f"| {entry.label} | {entry.basis or '–'} | {times['step_s']:.2f} s | {times['eval_s']:.2f} s | "
              f"{times['first_step_s'] + times['first_eval_s']:.0f} s | "
              + " | ".join(duration(times["run_s"][d]) for d in datasets) + " |", flush=True)
    report["load_average_after"] = os.getloadavg()
    grid = sum(preset.seeds * sum(m["run_s"].values()) for m in report["models"].values())
    print(f"the {len(report['models'])} models x {len(datasets)} datasets x {preset.seeds} seeds: "
          f"{duration(grid)} of training one run after another")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
