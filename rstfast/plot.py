"""Plots of training runs (matplotlib, Agg backend, PNG).

``python -m rstfast.plot results.yml [--metrics RUN.metrics.json ...] [--out accuracy.png]``

* accuracy per model: every ``results.yml`` line as a point, grouped by ``model [basis]`` with the
  mean as a bar;
* training curves: per-epoch loss and train/val accuracy of the metrics JSON files the trainer writes
  next to ``--save_model_path``.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import results as rsresults  # noqa: E402
from .cli import Parser, UsageError, check_output_folder, guarded  # noqa: E402


def load_metrics(path) -> dict:
    """A metrics JSON written by rstfast-train (``{"model", "basis", "epochs": [...]}``)."""
    try:
        run = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"--metrics: cannot read {path}: {' '.join(str(exc).split())}") from None
    except ValueError as exc:
        raise UsageError(f"--metrics: {path} is not JSON ({exc})") from None
    if not isinstance(run, dict) or not isinstance(run.get("epochs"), list) or "model" not in run:
        raise UsageError(f"--metrics: {path} is not a metrics file of rstfast-train (expected "
                         f"'model' and a list 'epochs')")
    return run


def plot_accuracy(results_path, out_png) -> Path:
    """Test accuracy (%) per ``model [basis]`` of every run in ``results_path``."""
    groups = defaultdict(list)
    for run in rsresults.load(results_path):
        label = run["model"] + (f" [{run['basis']}]" if run.get("basis") else "")
        groups[label].append(100.0 * float(run["acc"]))
    labels = sorted(groups)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 2), 4))
    for i, label in enumerate(labels):
        accs = groups[label]
        ax.bar(i, sum(accs) / len(accs), color="tab:blue", alpha=0.5)
        ax.plot([i] * len(accs), accs, "k.", ms=6)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{Path(results_path).name}: {sum(map(len, groups.values()))} runs")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return Path(out_png)


def plot_curves(metrics_paths, out_png) -> Path:
    """Training loss and train/val accuracy per epoch of each metrics JSON."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for path in metrics_paths:
        run = load_metrics(path)
        epochs = [e["epoch"] for e in run["epochs"]]
        name = run["model"] + (f" [{run['basis']}]" if run.get("basis") else "")
        ax_loss.plot(epochs, [e["train_loss"] for e in run["epochs"]], label=name)
        line, = ax_acc.plot(epochs, [100 * e["val_acc"] for e in run["epochs"]], label=f"{name} val")
        ax_acc.plot(epochs, [100 * e["train_acc"] for e in run["epochs"]], "--", color=line.get_color(),
                    label=f"{name} train")
    ax_loss.set(xlabel="epoch", ylabel="training loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return Path(out_png)


def plot_grid(rows: List[dict], datasets: List[str], out_png, titles: dict) -> Path:
    """Grouped bars of :func:`rstfast.reproduce.summarize` rows: mean test accuracy per model ×
    basis (groups) and dataset (bars), error bar ± std, one dot per run."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 4.5))
    width = 0.8 / max(1, len(datasets))
    for d, dataset in enumerate(datasets):
        xs, means, stds = [], [], []
        for i, row in enumerate(rows):
            cell = row["cells"].get(dataset)
            if cell is None:
                continue
            x = i - 0.4 + width * (d + 0.5)
            xs.append(x)
            means.append(cell["mean"])
            stds.append(cell["std"])
            ax.plot([x] * len(cell["accs"]), cell["accs"], "k.", ms=4)
        ax.bar(xs, means, width, yerr=stds, capsize=3, alpha=0.6, label=titles.get(dataset, dataset))
    labels = [f"{row['label']}\n{row['arch']}" + (f" [{row['basis']}]" if row["basis"] else "")
              for row in rows]
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return Path(out_png)


def plot_run(results_path, metrics_path) -> List[Path]:
    """The two plots after a training run: ``<results>.png`` and ``<metrics stem>.png``."""
    metrics_path = Path(metrics_path)
    curves = metrics_path.with_name(metrics_path.name.replace(".metrics.json", "") + ".curves.png")
    return [plot_accuracy(results_path, Path(results_path).with_suffix(".png")),
            plot_curves([metrics_path], curves)]


def build_parser() -> Parser:
    p = Parser(prog="python -m rstfast.plot", description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="results.yml written by rstfast-train")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics JSON files for training curves")
    p.add_argument("--out", default=None, help="accuracy PNG (default: <results>.png)")
    return p


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out or Path(args.results).with_suffix(".png"))
    check_output_folder(out.parent, "--out").mkdir(parents=True, exist_ok=True)
    print(plot_accuracy(args.results, out))
    if args.metrics:
        print(plot_curves(args.metrics, Path(args.metrics[0]).with_suffix(".curves.png")))
    return 0


def main(argv=None) -> int:
    """``python -m rstfast.plot``; a user error is one line on stderr and exit code 2."""
    return guarded("python -m rstfast.plot", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
