"""Markdown table and PNG bar chart from a pytest-benchmark JSON of this suite.

    python -m benchmarks.report benchmarks/results/cpu.json   # -> cpu_report.md, cpu_report.png
    python -m benchmarks.report a.json b.json --name cpu        # several runs -> cpu_report.*

Speed-ups are ``median time of X / median time of the backend`` for X = reference, original and
cpp, all measured in the same run (> 1: faster than X); memory ratios are ``peak / peak of X``.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import List, Optional

from . import cases

MODES = ("forward", "forward+backward", "train step") + cases.INFERENCE_MODES
TITLES = {"train step": "Training step (forward, loss, backward, Adam step)",
          "inference": "Inference (eval, no_grad, filters cached per weight version)",
          "inference, no filter cache": "Inference with the filter cache off (filters rebuilt every call)"}
BASELINES = ("reference", "original", "cpp")


def add_ratios(benchmarks: List[dict]) -> None:
    """Add ``speedup_vs_<X>`` and ``memory_vs_<X>`` to every entry's ``extra_info`` (X = baselines)."""
    by_key = {}
    for entry in benchmarks:
        info = entry["extra_info"]
        if "time_median_s" in info:
            by_key[(info["device"], info["case"], info.get("batch"), info["mode"],
                    info["backend"])] = info
    for (device, case, batch, mode, _), info in by_key.items():
        for baseline in BASELINES:
            base = by_key.get((device, case, batch, mode, baseline))
            info[f"speedup_vs_{baseline}"] = (base["time_median_s"] / info["time_median_s"]
                                              if base else None)
            memory_ok = base and base["peak_memory_bytes"] and info["peak_memory_bytes"] is not None
            info[f"memory_vs_{baseline}"] = (info["peak_memory_bytes"] / base["peak_memory_bytes"]
                                             if memory_ok else None)


def _rows(data: dict) -> List[dict]:
    rows = [entry["extra_info"] for entry in data["benchmarks"]
            if "time_median_s" in entry["extra_info"]]
    add_ratios(data["benchmarks"])      # also for files written before a baseline was added
    order = {name: i for i, name in enumerate(cases.backend_names())}
    seen_cases = {}
    for row in rows:
        seen_cases.setdefault((row["device"], row["case"]), len(seen_cases))
    return sorted(rows, key=lambda r: (r["device"], MODES.index(r["mode"]),
                                       seen_cases[(r["device"], r["case"])], r.get("batch") or 0,
                                       order.get(r["backend"], 99)))


def _fmt(value: Optional[float], digits: int = 2, scale: float = 1.0) -> str:
    if value is None:
        return "—"
    value = value * scale
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.1e}"
    return f"{value:,.{digits}f}"


def _geomean(values: List[float]) -> Optional[float]:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _header(data: dict, device: str) -> List[str]:
    machine = data["machine_info"]
    info = machine.get("rstfast", {}).get(device, {})
    lines = [
        f"# rstfast benchmarks — {device.upper()}",
        "",
        f"* device: **{info.get('device_name', device)}** ({info.get('cpus')} logical CPUs, "
        f"{info.get('threads')} torch threads)",
        f"* torch {info.get('torch')}, triton {info.get('triton')}, python {info.get('python')}",
        f"* date: {info.get('date_utc', data.get('datetime'))}",
    ] + [
        f"* {run['file']}: batch {run['batch']}; per case {run['warmup']} warm-up round, then up to "
        f"{run['rounds']} timed rounds cut to about {run['case_seconds']:g} s (at least 2, or 1 when "
        f"the warm-up alone took longer; column n); load average (1, 5, 15 min) at start "
        f"{run['loadavg_start']}, at end {run['loadavg_end']}"
        + (" — **quick mode** (small shapes)" if run["quick"] else "")
        for run in data["runs"]
    ] + [
        "* the load average shows how busy the machine was (about the thread count: nothing else "
        "running)",
        "",
        "Time: median over the timed rounds, spread = inter-quartile range (device-synchronised; "
        "CUDA events on GPU). Peak memory: "
        + ("`torch.cuda.max_memory_allocated` above the level at the start of the round"
           if device == "cuda" else
           "one step in a fresh process per case (benchmarks/memprobe.py): peak resident set "
           "(VmHWM, reset once imports, inputs and model exist) above the resident set at that "
           "point, glibc set to mmap every block >= 64 KiB so freed memory leaves the process; a "
           "cold step, so it includes first-call set-up (a few MiB, visible only in small cases)")
        + " (inputs and parameters excluded; a training step's gradients and the Adam state it "
        "creates included). GFLOP: dense = every filter tap and "
        "zero-padded scale (what the original executes); non-zero = taps inside the per-scale "
        "support only (docs/layers.md §5), filter expansion included, backward = input-gradient "
        "+ weight-gradient passes. Speed-up vs X = median time of X / median time of the backend "
        "(same run). `reference` is the expand-the-filter + grouped conv2d way; `original` is "
        "the original algorithm (benchmarks/original.py).",
        "",
    ]
    return lines


def _mode_table(rows: List[dict]) -> List[str]:
    lines = ["| case | B | backend | median ms | IQR ms | n | peak MiB | GFLOP dense / non-zero | "
             "GFLOP/s dense / non-zero | × vs reference | × vs original | × vs cpp | "
             "mem vs original | mem vs reference |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        peak = r["peak_memory_bytes"] / 2 ** 20 if r["peak_memory_bytes"] is not None else None
        lines.append(
            f"| {r['case']} | {r['batch']} | {r['backend']} | {_fmt(r['time_median_s'], 1, 1e3)} | "
            f"{_fmt(r['time_iqr_s'], 1, 1e3)} | {len(r['time_rounds_s'])} | {_fmt(peak, 1)} | "
            f"{_fmt(r['flops_dense'] / 1e9, 1)} / {_fmt(r['flops_nonzero'] / 1e9, 1)} | "
            f"{_fmt(r['gflops_per_s_dense'], 1)} / {_fmt(r['gflops_per_s_nonzero'], 1)} | "
            f"{_fmt(r['speedup_vs_reference'])} | {_fmt(r['speedup_vs_original'])} | "
            f"{_fmt(r['speedup_vs_cpp'])} | {_fmt(r['memory_vs_original'])} | "
            f"{_fmt(r['memory_vs_reference'])} |")
    return lines


def _summary(rows: List[dict]) -> List[str]:
    lines = ["| mode | backend | cases | geo-mean × vs reference | geo-mean × vs original | "
             "geo-mean × vs cpp | geo-mean memory vs original |", "|---|---|---:|---:|---:|---:|---:|"]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["mode"], r["backend"])].append(r)
    for (mode, backend), group in groups.items():
        lines.append(f"| {mode} | {backend} | {len(group)} | "
                     f"{_fmt(_geomean([r['speedup_vs_reference'] for r in group]))} | "
                     f"{_fmt(_geomean([r['speedup_vs_original'] for r in group]))} | "
                     f"{_fmt(_geomean([r['speedup_vs_cpp'] for r in group]))} | "
                     f"{_fmt(_geomean([r['memory_vs_original'] for r in group]))} |")
    return lines


def _cache_table(rows: List[dict]) -> List[str]:
    """Inference time with the filter cache off / on, per model, batch and backend."""
    cached, uncached = cases.INFERENCE_MODES
    times = {(r["case"], r["batch"], r["backend"], r["mode"]): r["time_median_s"] for r in rows}
    pairs = [(case, batch, backend) for case, batch, backend, mode in times if mode == cached
             and (case, batch, backend, uncached) in times]
    if not pairs:
        return []
    lines = ["## Filter cache speed-up (inference)", "",
             "| model | B | backend | filters rebuilt ms | cached ms | speed-up |", "|---|---:|---|---:|---:|---:|"]
    for case, batch, backend in pairs:
        on, off = times[(case, batch, backend, cached)], times[(case, batch, backend, uncached)]
        lines.append(f"| {case} | {batch} | {backend} | {_fmt(off, 1, 1e3)} | {_fmt(on, 1, 1e3)} | "
                     f"{_fmt(off / on)} |")
    return lines + [""]


def markdown(data: dict, device: str, png_name: Optional[str], notes: List[str] = ()) -> str:
    rows = [r for r in _rows(data) if r["device"] == device]
    lines = _header(data, device)
    if notes:
        lines += ["Notes:", ""] + [f"* {note}" for note in notes] + [""]
    if png_name:
        lines += [f"![time and memory per backend]({png_name})", ""]
    lines += ["## Summary", ""] + _summary(rows) + [""]
    for mode in MODES:
        mode_rows = [r for r in rows if r["mode"] == mode]
        if mode_rows:
            lines += [f"## {TITLES.get(mode, f'Per layer — {mode}')}", ""] + _mode_table(mode_rows) + [""]
    lines += _cache_table(rows)
    skipped = data.get("rstfast_skipped", {})
    if skipped:
        lines += ["## Not measured (skipped or failed)", ""]
        lines += [f"* {reason} ({count} case{'s' if count > 1 else ''})"
                  for reason, count in sorted(skipped.items())]
        lines.append("")
    return "\n".join(lines)


def bar_chart(data: dict, device: str, path: Path) -> None:
    """Time and peak memory per backend per case, one row of panels per mode (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in _rows(data) if r["device"] == device]
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    backends = [b for b in cases.backend_names() if any(r["backend"] == b for r in rows)]
    fig, axes = plt.subplots(len(modes), 2, figsize=(16, 4.2 * len(modes)), squeeze=False)
    for row_axes, mode in zip(axes, modes):
        mode_rows = [r for r in rows if r["mode"] == mode]
        label_of = lambda r: f"{r['case']} B{r.get('batch')}"  # noqa: E731
        case_names = list(dict.fromkeys(label_of(r) for r in mode_rows))
        width = 0.8 / len(backends)
        for ax, (metric, scale, label) in zip(row_axes, (("time_median_s", 1e3, "median time (ms)"),
                                                         ("peak_memory_bytes", 2 ** -20,
                                                          "peak memory (MiB)"))):
            for k, backend in enumerate(backends):
                values = {label_of(r): r[metric] for r in mode_rows if r["backend"] == backend}
                xs = [i + (k - (len(backends) - 1) / 2) * width for i in range(len(case_names))]
                heights = [(values.get(c) or 0) * scale for c in case_names]
                ax.bar(xs, heights, width, label=backend)
            ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.set_title(f"{mode} — {label}")
            ax.set_xticks(range(len(case_names)))
            ax.set_xticklabels(case_names, rotation=30, ha="right", fontsize=7)
            ax.grid(axis="y", alpha=0.3)
        row_axes[0].legend(fontsize=8)
    info = data["machine_info"].get("rstfast", {}).get(device, {})
    fig.suptitle(f"rstfast — {info.get('device_name', device)} — torch {info.get('torch')}, "
                 f"triton {info.get('triton')} — {info.get('date_utc', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_runs(json_paths: List[Path]) -> dict:
    """Merge pytest-benchmark JSONs of this suite (e.g. the layer and the training runs)."""
    merged = {"benchmarks": [], "runs": [], "rstfast_skipped": defaultdict(int)}
    for path in json_paths:
        data = json.loads(Path(path).read_text())
        merged.setdefault("machine_info", data["machine_info"])
        merged.setdefault("datetime", data.get("datetime"))
        merged["benchmarks"] += data["benchmarks"]
        for reason, count in data.get("rstfast_skipped", {}).items():
            merged["rstfast_skipped"][reason] += count
        machine = data["machine_info"]
        merged["runs"].append({"file": Path(path).name, **machine.get("rstfast_settings", {}),
                               "loadavg_start": machine.get("loadavg_at_start", "not recorded"),
                               "loadavg_end": machine.get("loadavg_at_end")})
    return merged


def write_report(json_paths: List[Path], name: Optional[str] = None,
                 device: Optional[str] = None, notes: List[str] = ()) -> List[Path]:
    """Write ``<name>_report.md`` / ``.png`` next to the first JSON (``<name>_<device>_report``
    when the runs hold several devices); ``name`` defaults to the first JSON's stem."""
    data = load_runs(json_paths)
    first = Path(json_paths[0])
    name = name or first.stem
    devices = sorted({r["device"] for r in _rows(data)})
    if device is not None:
        devices = [d for d in devices if d == device]
    written = []
    for dev in devices:
        stem = name if len(devices) == 1 else f"{name}_{dev}"
        png = first.with_name(f"{stem}_report.png")
        md = first.with_name(f"{stem}_report.md")
        bar_chart(data, dev, png)
        md.write_text(markdown(data, dev, png.name, notes))
        written += [md, png]
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+",
                        help="pytest-benchmark JSON files of this suite (--benchmark-json)")
    parser.add_argument("--name", default=None,
                        help="output stem: <name>_report.md/.png (default: the first JSON's stem)")
    parser.add_argument("--device", default=None, help="only this device type (cpu / cuda)")
    parser.add_argument("--note", action="append", default=[],
                        help="a line for the report's notes (repeatable)")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    for path in write_report(args.json, args.name, args.device, args.note):
        print(path)


if __name__ == "__main__":
    main()
