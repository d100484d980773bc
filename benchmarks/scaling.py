"""Scaling sweep of one group-conv layer over batch size and channel width: table + plot.

    python -m benchmarks.scaling [--device cpu] [--mode forward] [--quick]

The layer is the last conv of ``mnist_ses_vector_56_rot_8_interrot_4`` (basis E, R = 8, S = 4,
Lr = 4, K = 15, 14x14 pixels) with ``C = O = width``. Batch sweep at width 16, width sweep at batch 2.
Rounds are interleaved (round-robin over backends within every point) so machine load hits every
backend alike. Writes ``benchmarks/results/scaling_<device>.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from . import cases, measure, memprobe

RESULTS = Path(__file__).resolve().parent / "results"
FULL = {"batches": (1, 2, 4, 8), "widths": (4, 8, 16, 32), "fixed_width": 16,
        "fixed_batch": 2, "rounds": 2}
QUICK = {"batches": (1, 2), "widths": (2, 4), "fixed_width": 4, "fixed_batch": 1, "rounds": 1}


def sweep_case(width: int) -> cases.LayerCase:
    return cases.LayerCase("group", "E", 8, cases.SES_SCALES, width, width, 14, rotation_size=4,
                           models=("mnist_ses_vector_56_rot_8_interrot_4",))


def _measure_point(case, batch, names, device, backward, rounds):
    """Interleaved rounds (after one warm-up call each) -> ``{backend: row}``. Peak memory: CUDA
    in this process (max over rounds), CPU in a fresh process per backend (memprobe)."""
    runs = {name: cases.layer_run(case, name, batch, device, backward) for name in names}
    timers = {name: measure.RoundTimer(run[0], device) for name, run in runs.items()}
    on_cuda = torch.device(device).type == "cuda"
    memory = measure.PeakMemory(device) if on_cuda else None
    peaks = {name: [] for name in names}
    for name, (_, setup, _) in runs.items():
        setup()
        timers[name]()
    for _ in range(rounds):
        for name, (_, setup, _) in runs.items():
            setup()
            if on_cuda:
                memory.start()
            timers[name]()
            if on_cuda:
                peaks[name].append(memory.stop())
    mode = "forward+backward" if backward else "forward"
    filter_bytes = (4 * case.out_channels * case.in_channels * case.rotation_size
                    * case.scale_size * case.num_groups * cases.KERNEL_SIZE ** 2)
    rows = {}
    for name, (_, _, flops) in runs.items():
        stats = measure.median_iqr(timers[name].times[1:])
        peak = max(peaks[name]) if on_cuda else memprobe.probe_in_subprocess(
            {"kind": "layer", "case": cases.case_spec(case), "mode": mode, "backend": name,
             "batch": batch})
        rows[name] = {"backend": name, "batch": batch, "width": case.in_channels,
                      "time_median_s": stats["median"], "time_iqr_s": stats["iqr"],
                      "peak_memory_bytes": peak,
                      "flops_dense": flops["dense"], "flops_nonzero": flops["nonzero"],
                      "expanded_filter_bytes": filter_bytes,
                      "input_bytes": 4 * batch * case.in_channels * case.num_groups * case.size ** 2}
    return rows


def run(device: str, backward: bool, plan: dict) -> dict:
    names, skipped = [], {}
    for name in cases.backend_names():
        reason = cases.backend_or_reason(name, device)
        if reason is None:
            names.append(name)
        else:
            skipped[name] = reason
    points = [("batch", b, plan["fixed_width"]) for b in plan["batches"]]
    points += [("width", plan["fixed_batch"], w) for w in plan["widths"]]
    rows = []
    for sweep, batch, width in points:
        for row in _measure_point(sweep_case(width), batch, names, device, backward,
                                  plan["rounds"]).values():
            rows.append({"sweep": sweep, **row})
            print(f"[{sweep} sweep] batch {batch:3d} width {width:3d} {row['backend']:9s} "
                  f"{row['time_median_s'] * 1e3:9.1f} ms", flush=True)
    return {"machine_info": measure.machine_info(device), "mode": "forward+backward" if backward
            else "forward", "layer": sweep_case(plan["fixed_width"]).name, "plan": plan,
            "skipped": skipped, "rows": rows}


def markdown(result: dict, png_name: str) -> str:
    info = result["machine_info"]
    lines = [f"# Scaling sweep — {result['mode']} — {info['device_name']}", "",
             f"* layer: group conv E R8S4 Lr4, K 15, 14x14 pixels, C = O = width "
             f"(batch sweep at width {result['plan']['fixed_width']}, width sweep at batch "
             f"{result['plan']['fixed_batch']})",
             f"* torch {info['torch']}, triton {info['triton']}, {info['threads']} threads, "
             f"{info['date_utc']}, load average at start {info['loadavg']}",
             f"* {result['plan']['rounds']} interleaved timed rounds after one warm-up call; "
             "memory as in the main report (CPU: fresh process per point)",
             f"* not measured: {result['skipped'] or 'none'}", "",
             f"![scaling]({png_name})", "",
             "| sweep | batch | width | backend | median ms | IQR ms | peak MiB | dense GFLOP | "
             "GFLOP/s dense | expanded filter MiB | input MiB |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        peak = f"{r['peak_memory_bytes'] / 2 ** 20:.1f}" if r["peak_memory_bytes"] is not None else "—"
        lines.append(f"| {r['sweep']} | {r['batch']} | {r['width']} | {r['backend']} | "
                     f"{r['time_median_s'] * 1e3:.1f} | {r['time_iqr_s'] * 1e3:.1f} | {peak} | "
                     f"{r['flops_dense'] / 1e9:.2f} | "
                     f"{r['flops_dense'] / r['time_median_s'] / 1e9:.1f} | "
                     f"{r['expanded_filter_bytes'] / 2 ** 20:.1f} | {r['input_bytes'] / 2 ** 20:.1f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    backends = list(dict.fromkeys(r["backend"] for r in result["rows"]))
    for col, sweep in enumerate(("batch", "width")):
        for row_index, (metric, scale, label) in enumerate((("time_median_s", 1e3, "median ms"),
                                                            ("peak_memory_bytes", 2 ** -20,
                                                             "peak MiB"))):
            ax = axes[row_index][col]
            for backend in backends:
                points = [r for r in result["rows"] if r["sweep"] == sweep and r["backend"] == backend
                          and r[metric] is not None]
                ax.plot([r[sweep] for r in points], [r[metric] * scale for r in points], "o-",
                        label=backend)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(sweep)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    info = result["machine_info"]
    fig.suptitle(f"group conv E R8S4 Lr4 14px, {result['mode']} — {info['device_name']} — "
                 f"torch {info['torch']} — {info['date_utc']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", choices=("forward", "forward+backward"), default="forward")
    parser.add_argument("--quick", action="store_true", help="tiny sweep (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    result = run(args.device, args.mode == "forward+backward", QUICK if args.quick else FULL)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"scaling_{args.device}" + ("_quick" if args.quick else "")
    png = args.out / f"{stem}.png"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(result, png.name))
    plot(result, png)
    print(args.out / f"{stem}.md")


if __name__ == "__main__":
    main()
