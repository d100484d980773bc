"""Stage roofline of the FFT backend on CPU, and its speed against ``cpp`` in one run.

    python -m benchmarks.fft_roofline --batch 32 --name fft_roofline_cpu   # -> results/<name>.{json,md}
    python -m benchmarks.fft_roofline --quick                               # small shapes, smoke run

In one process, on the machine it runs on (named in the report):

* the machine's peak: a float32 GEMM (``torch.mm``, 4096 x 4096, all torch threads) and the
  memory bandwidth (a 256 MiB copy: bytes read + written per second);
* per layer (the paper layers of :data:`benchmarks.cases.PAPER_LAYERS` and the three of the main
  job's model ``mnist_ses_scalar_28_rot_8``): forward + backward (both gradients, as the layer
  suite times them) of ``fft`` and ``cpp`` through :func:`rstfast.ops.roto_scale_conv`,
  interleaved, minimum over the rounds; and the ``fft`` kernels' time per stage (the C++ ops of
  :mod:`rstfast.fft.tiled`, wall clock) with the stage's FLOPs (:func:`rstfast.fft.stage_flops`),
  its GFLOP/s as a fraction of the peak, and its arithmetic intensity over the compulsory memory
  traffic (every stage reads its inputs and writes its outputs once), hence the roofline bound
  ``min(peak, intensity x bandwidth)``;
* training steps (forward, loss, backward, Adam) of ``mnist_ses_scalar_28_rot_8`` and
  ``mnist_ses_vector_56_rot_8_interrot_4`` with every layer on ``cpp``, ``fft`` and ``auto``
  (``--original``: the original algorithm too), interleaved, minimum over the rounds.

The machine is shared: variants are interleaved round by round and minima are reported; the load
average at start and end is recorded.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import torch

from . import cases, measure

RESULTS = Path(__file__).resolve().parent / "results"
MAIN_JOB = "mnist_ses_scalar_28_rot_8"
MAIN_JOB_LAYERS = tuple(cases.LayerCase("lift", "E", 8, cases.SES_SCALES, c, o, n,
                                        models=(MAIN_JOB,))
                        for c, o, n in ((1, 32, 28), (32, 63, 14), (63, 95, 7)))
TRAIN_MODELS = (MAIN_JOB, "mnist_ses_vector_56_rot_8_interrot_4")
STAGES = ("input transforms", "filter spectra", "products", "output transforms")


def machine_peak(threads: int) -> Dict[str, float]:
    """float32 GEMM GFLOP/s and copy bandwidth GB/s (best of a few)."""
    size = 4096
    a, b = torch.randn(size, size), torch.randn(size, size)
    c = torch.empty(size, size)
    gemm = min(_timed(lambda: torch.mm(a, b, out=c)) for _ in range(4))
    source = torch.empty(64 * 2 ** 20).normal_()
    target = torch.empty_like(source)
    copy = min(_timed(lambda: target.copy_(source)) for _ in range(6))
    return {"threads": threads, "gemm_gflops": 2 * size ** 3 / gemm / 1e9,
            "bandwidth_gbs": 2 * source.numel() * 4 / copy / 1e9}


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


@contextlib.contextmanager
def _stage_clock(plan, seconds: Dict[str, float]):
    """Adds the wall time of every C++ op of :mod:`rstfast.fft.tiled` to its stage in
    ``seconds`` (the transforms by their axes: input, output or filter taps)."""
    from rstfast.fft import tiled
    original = (tiled.to_tiles, tiled.from_tiles, tiled.products)

    def stage(rows, cols):
        if (rows, cols) == plan.input_axes():
            return "input transforms"
        return "output transforms" if (rows, cols) == plan.output_axes() else "filter spectra"

    def clocked(run, name_of):
        def call(*args, **kwargs):
            start = time.perf_counter()
            run(*args, **kwargs)
            seconds[name_of(*args)] += time.perf_counter() - start
        return call

    tiled.to_tiles = clocked(original[0], lambda z, out, rows, cols: stage(rows, cols))
    tiled.from_tiles = clocked(original[1], lambda spec, z, rows, cols: stage(rows, cols))
    tiled.products = clocked(original[2], lambda *args: "products")
    try:
        yield
    finally:
        tiled.to_tiles, tiled.from_tiles, tiled.products = original


@contextlib.contextmanager
def _batched_execution():
    """The fft kernels on :mod:`rstfast.fft.batched` (torch matmuls: the execution before the
    C++ kernels, kept for CUDA) instead of the C++ ones."""
    from rstfast import fft
    from rstfast.fft import batched
    original = fft._execution
    fft._execution = lambda device: batched
    try:
        yield
    finally:
        fft._execution = original


def stage_bytes(geo, x_shape, backward: bool) -> Dict[str, float]:
    """Compulsory memory traffic of each stage (float32): the stage's inputs read once and its
    outputs written once; a spectrum plane is ``tiles x 128`` bytes."""
    from rstfast import fft
    from rstfast.fft import tiled
    plan = fft._plan(geo, x_shape)
    plane = tiled.tiles(plan, torch.float32) * 128
    batch = x_shape[0]
    out_h, out_w = geo.out_size(plan.height, plan.width)
    reads = [(t, a) for t, row in enumerate(geo.read_table) for a, q in enumerate(row) if q >= 0]
    taps = 4.0 * geo.out_channels * geo.in_channels * sum(
        geo.support[t % geo.num_scales] ** 2 for t, _ in reads)
    x_bytes = 4.0 * batch * geo.in_channels * geo.in_slices * plan.height * plan.width
    x_spec = 1.0 * batch * geo.in_channels * geo.in_slices * plane
    k_spec = 1.0 * len(reads) * geo.out_channels * geo.in_channels * plane
    y_bytes = 4.0 * batch * geo.out_channels * geo.group_size * out_h * out_w
    y_spec = 1.0 * batch * geo.out_channels * geo.group_size * plane
    forward = {"input transforms": x_bytes + x_spec, "filter spectra": taps + k_spec,
               "products": x_spec + k_spec + y_spec, "output transforms": y_spec + y_bytes}
    if not backward:
        return forward
    return {"input transforms": 2 * (x_bytes + x_spec),
            "filter spectra": 2 * (taps + k_spec),
            "products": (k_spec + y_spec + 2 * x_spec) + (y_spec + x_spec + k_spec),
            "output transforms": y_spec + y_bytes}


def measure_layer(case: cases.LayerCase, batch: int, rounds: int) -> dict:
    """fft / cpp forward+backward through the layer op, interleaved; the fft kernels' stages."""
    from rstfast import fft, filters as filter_math
    runs = {name: cases.layer_run(case, name, batch, "cpu", backward=True)
            for name in ("cpp", "fft")}
    inputs = cases.layer_inputs(case, batch, "cpu", requires_grad=False)
    geo, x = inputs["geometry"], inputs["x"]
    buffer = filter_math.expand_cropped(inputs["weight"], inputs["basis"], geo)
    grad_y = torch.randn(geo.out_shape(x.shape))
    plan = fft._plan(geo, x.shape)
    best = defaultdict(lambda: math.inf)
    for round_index in range(rounds + 1):            # round 0: warm-up
        for name, (step, setup, _) in runs.items():
            setup()
            elapsed = _timed(step)
            if round_index:
                best[name] = min(best[name], elapsed)
        for direction in ("forward", "backward"):
            seconds = defaultdict(float)
            with _stage_clock(plan, seconds):
                start = time.perf_counter()
                if direction == "forward":
                    fft.conv_forward(x, buffer, inputs["bias"], geo)
                else:
                    fft.conv_backward(grad_y, x, buffer, geo, True, True)
                seconds["total"] = time.perf_counter() - start
            if round_index:
                for stage, value in seconds.items():
                    best[(direction, stage)] = min(best[(direction, stage)], value)
        with _batched_execution():
            start = time.perf_counter()
            fft.conv_forward(x, buffer, inputs["bias"], geo)
            fft.conv_backward(grad_y, x, buffer, geo, True, True)
            elapsed = time.perf_counter() - start
        if round_index:
            best["batched"] = min(best["batched"], elapsed)
    stages = {}
    for direction in ("forward", "backward"):
        flops = fft.stage_flops(geo, x.shape, backward=direction == "backward")
        traffic = stage_bytes(geo, x.shape, backward=direction == "backward")
        for stage in STAGES:
            seconds = best[(direction, stage)]
            stages[f"{direction} {stage}"] = {
                "seconds": seconds if seconds < math.inf else None, "flop": flops[stage],
                "bytes": traffic[stage]}
        stages[f"{direction} total"] = {"seconds": best[(direction, "total")]}
    return {"case": case.name, "models": list(case.models), "batch": batch,
            "fft_seconds": best["fft"], "cpp_seconds": best["cpp"],
            "throughput": 3 * fft.flops(geo, x.shape) / best["fft"],
            "fft_vs_cpp": best["cpp"] / best["fft"],
            "fft_kernel_seconds": best[("forward", "total")] + best[("backward", "total")],
            "batched_kernel_seconds": best["batched"], "stages": stages}


def measure_training(model: str, names: List[str], batch: int, rounds: int) -> dict:
    """Training steps of ``model`` on each backend of ``names``, interleaved (``auto`` decides in
    its warm-up step)."""
    cases.register_original()
    runs = {name: cases.train_run(model, name, batch, "cpu") for name in names}
    best = defaultdict(lambda: math.inf)
    for round_index in range(rounds + 1):
        for name, (step, setup, _) in runs.items():
            if name == "original" and round_index > 1:
                continue                    # minutes per step: one timed round
            setup()
            elapsed = _timed(step)
            if round_index:
                best[name] = min(best[name], elapsed)
    return {"model": model, "batch": batch, "seconds": dict(best)}


def _fmt(value, digits=2, scale=1.0):
    return "—" if value is None else f"{value * scale:,.{digits}f}"


def report(data: dict) -> str:
    peak, info = data["peak"], data["machine"]
    lines = [
        "# FFT backend on CPU: stage roofline and speed against `cpp`", "",
        f"* CPU: **{info['device_name']}** ({info['cpus']} logical CPUs, {peak['threads']} torch "
        f"threads); torch {info['torch']}; {info['date_utc']}; batch {data['batch']}, float32",
        f"* measured peak in this run: float32 GEMM **{peak['gemm_gflops']:.0f} GFLOP/s**, "
        f"copy bandwidth **{peak['bandwidth_gbs']:.1f} GB/s** (read + write)",
        f"* load average at start {data['load_start']}, at end {data['load_end']} (shared "
        "machine: every figure is the minimum over interleaved rounds)",
        f"* rounds per case: {data['rounds']}; CPU library built for `{data['cpu_arch']}`", "",
        "Layer ratio: forward + backward (both gradients) through the layer op, `cpp` time / "
        "`fft` time. Stages: the `fft` kernels alone (wall clock of each C++ op; FLOPs as "
        "`rstfast.fft.stage_flops` counts them, a complex multiply-add = 8); \"of peak\" = "
        "GFLOP/s / GEMM peak; intensity = FLOPs / compulsory bytes (each stage reads its inputs "
        "and writes its outputs once); bound = min(peak, intensity x bandwidth).", "",
        "## Layers (forward + backward)", "",
        "Kernels: `fft` kernels alone (no filter expansion), the C++ tile kernels and the batched "
        "torch execution (`rstfast.fft.batched`, the implementation before them), same run.", "",
        "| layer | model(s) | fft ms | cpp ms | fft vs cpp | kernels: tiled ms | batched ms | "
        "tiled vs batched |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in data["layers"]:
        lines.append(f"| {row['case']} | {', '.join(row['models'])} | "
                     f"{_fmt(row['fft_seconds'], 1, 1e3)} | {_fmt(row['cpp_seconds'], 1, 1e3)} | "
                     f"**{_fmt(row['fft_vs_cpp'])}×** | {_fmt(row['fft_kernel_seconds'], 1, 1e3)} | "
                     f"{_fmt(row['batched_kernel_seconds'], 1, 1e3)} | "
                     f"{_fmt(row['batched_kernel_seconds'] / row['fft_kernel_seconds'])}× |")
    rates = [row["throughput"] for row in data["layers"] if MAIN_JOB not in row["models"]]
    lines += ["", "Cost model: `3 x rstfast.fft.flops(geo, x_shape)` / forward+backward time of the "
              "layer op, geometric mean over the paper layers: "
              f"**{math.exp(sum(map(math.log, rates)) / len(rates)) / 1e9:.0f} GFLOP/s** "
              "(the `THROUGHPUT[(\"cpu\", \"fft\")]` these runs suggest)."]
    lines += ["", "## Stage roofline of the fft kernels", "",
              "| layer | pass | stage | ms | GFLOP | GFLOP/s | of peak | FLOP/byte | bound "
              "GFLOP/s | of bound |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in data["layers"]:
        for direction in ("forward", "backward"):
            for stage in STAGES:
                s = row["stages"][f"{direction} {stage}"]
                if not s["seconds"]:
                    continue
                rate = s["flop"] / s["seconds"] / 1e9
                intensity = s["flop"] / s["bytes"]
                bound = min(peak["gemm_gflops"], intensity * peak["bandwidth_gbs"])
                lines.append(
                    f"| {row['case']} | {direction} | {stage} | {_fmt(s['seconds'], 1, 1e3)} | "
                    f"{_fmt(s['flop'] / 1e9, 2)} | {_fmt(rate, 0)} | "
                    f"{_fmt(rate / peak['gemm_gflops'], 0, 100)} % | {_fmt(intensity, 1)} | "
                    f"{_fmt(bound, 0)} | {_fmt(rate / bound, 0, 100)} % |")
    lines += ["", "## Training steps", "", "| model | backend | s per step | vs cpp | vs original |",
              "|---|---|---:|---:|---:|"]
    for row in data["training"]:
        seconds = row["seconds"]
        for name, value in seconds.items():
            original = seconds.get("original")
            lines.append(f"| {row['model']} | {name} | {_fmt(value, 3)} | "
                         f"{_fmt(seconds['cpp'] / value)}× | "
                         f"{_fmt(original / value) + '×' if original else '—'} |")
    return "\n".join(lines) + "\n"


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fft_roofline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per case (after one "
                        "warm-up round)")
    parser.add_argument("--name", default="fft_roofline_cpu", help="output file stem in "
                        "benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    parser.add_argument("--original", action="store_true", help="also time the original "
                        "algorithm's training step (minutes)")
    parser.add_argument("--layers-only", action="store_true", help="no training steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                        "torch's, one per core)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or (args.threads is not None and args.threads < 1):
        print("benchmarks.fft_roofline: --batch, --rounds and --threads must be at least 1")
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from rstfast.csrc.build import cpu_arch_flags
    from rstfast.fft import tiled
    reason = tiled.unavailable_reason()
    if reason:
        print(f"benchmarks.fft_roofline: the C++ kernels are unavailable: {reason}")
        return 2
    layers = cases.QUICK_LAYERS if args.quick else cases.PAPER_LAYERS + MAIN_JOB_LAYERS
    batch = 2 if args.quick else args.batch
    data = {"machine": measure.machine_info(torch.device("cpu")),
            "load_start": [round(v, 2) for v in os.getloadavg()], "batch": batch,
            "rounds": args.rounds, "cpu_arch": " ".join(cpu_arch_flags()) or "portable",
            "peak": machine_peak(torch.get_num_threads())}
    data["layers"] = []
    for case in layers:
        data["layers"].append(measure_layer(case, batch, args.rounds))
        row = data["layers"][-1]
        print(f"{case.name}: fft {row['fft_seconds'] * 1e3:.1f} ms, cpp "
              f"{row['cpp_seconds'] * 1e3:.1f} ms ({row['fft_vs_cpp']:.2f}x)", flush=True)
    names = ["cpp", "fft", "auto"] + (["original"] if args.original else [])
    models = () if args.layers_only else (cases.QUICK_MODELS[:1] if args.quick else TRAIN_MODELS)
    data["training"] = [measure_training(model, names, batch, args.rounds) for model in models]
    peak_end = machine_peak(torch.get_num_threads())
    data["peak"] = {key: max(data["peak"][key], peak_end[key]) for key in data["peak"]}
    data["load_end"] = [round(v, 2) for v in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(data, indent=1))
    (RESULTS / f"{args.name}.md").write_text(report(data))
    print(f"wrote {RESULTS / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
