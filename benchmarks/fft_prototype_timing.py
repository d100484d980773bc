"""Prototype timing of the FFT backend (rstfast.fft) against the C++ direct backend on CPU.

    python -m benchmarks.fft_prototype_timing [--batches 8,32,128] [--layers 0,1,2,3,4]
        [--accuracy] [--memory] [--stages] [--timing] [--threads N] [--out results.json]
    python -m benchmarks.fft_prototype_timing --probe '<json spec>'   # one peak-memory case

Standalone (not part of the pytest-benchmark suite; may be discarded once the backend is wired
into the layers). Timings interleave the backends case by case in one process (the machine is
shared: compare ratios, read the load average printed with each row); the layer step is the one of
``benchmarks.cases.layer_run`` (filter expansion, convolution, and for forward+backward the
gradients of x, the coefficients and the bias). Peak memory is measured per case in a fresh
process with ``benchmarks.measure.PeakMemory``. ``--stages`` times the stages of the kernels
(wall time of the transform helpers; the rest is the per-bin products and glue).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import cases, measure

REPO = Path(__file__).resolve().parents[1]
FFT_MODULE = "rstfast.fft.functional"


def register_fft() -> None:
    from rstfast import backends
    if "fft" not in backends.available_backends("cpu"):
        backends.register("fft", FFT_MODULE)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def time_step(step, setup, reps: int):
    """Minimum and all wall times of ``reps`` calls of ``step`` (``setup`` before each)."""
    times = []
    for _ in range(reps):
        setup()
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    return min(times), times


def timing(layers, batches, reps_fft: int, reps_cpp: int):
    """Rows ``{layer, batch, mode, fft_s, cpp_s, speedup, load}``; fft and cpp alternate."""
    import rstfast.csrc as cpp
    import rstfast.fft.functional as fft
    reason = cpp.unavailable_reason(torch.device("cpu"))
    if reason:
        raise RuntimeError(f"cpp backend unavailable: {reason}")
    rows = []
    for case in layers:
        for batch in batches:
            for backward in (False, True):
                runs = {name: cases.layer_run(case, module, batch, "cpu", backward)[:2]
                        for name, module in (("fft", fft), ("cpp", cpp))}
                runs["fft"][0]()                                   # warm-up (DFT matrices)
                load_before = load()
                fft_first, fft_times = time_step(*runs["fft"], reps_fft)
                cpp_s, cpp_times = time_step(*runs["cpp"], reps_cpp)
                fft_again, more = time_step(*runs["fft"], reps_fft)
                fft_s = min(fft_first, fft_again)
                row = dict(layer=case.name, batch=batch,
                           mode="forward+backward" if backward else "forward",
                           fft_s=round(fft_s, 4), cpp_s=round(cpp_s, 4),
                           speedup=round(cpp_s / fft_s, 2), fft_times=fft_times + more,
                           cpp_times=cpp_times, load=[load_before, load()])
                rows.append(row)
                print(json.dumps(row), flush=True)
                del runs
    return rows


@contextlib.contextmanager
def stage_timer():
    """Wall time per kernel stage while the block runs (a helper called inside another counts
    for the outer one; "products + glue" is the rest)."""
    import rstfast.fft as kernels
    totals = collections.defaultdict(float)
    depth = [0]
    labels = {"_input_spectrum": "input spectra", "_filter_spectra": "filter spectra",
              "to_spectrum": "grad_y spectra",
              # the taps of the paper layers start at crop_s - p != 0, images and outputs at 0
              "from_spectrum": lambda args: ("filter-grad adjoint" if args[2].start != 0
                                             else "inverse")}

    def wrap(function, label):
        def timed(*args, **kwargs):
            if depth[0]:
                return function(*args, **kwargs)
            name = label(args) if callable(label) else label
            depth[0] += 1
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - begin
                depth[0] -= 1
        return timed

    saved = {name: getattr(kernels, name) for name in labels}
    for name, label in labels.items():
        setattr(kernels, name, wrap(saved[name], label))
    try:
        yield totals
    finally:
        for name, function in saved.items():
            setattr(kernels, name, function)


def stages(layers, batches):
    """Per-stage wall times of conv_forward and conv_backward (both gradients)."""
    import rstfast.fft as kernels
    from rstfast import filters
    from rstfast.geometry import group_geometry, lifting_geometry
    rows = []
    for case in layers:
        for batch in batches:
            inputs = cases.layer_inputs(case, batch, "cpu", requires_grad=False)
            basis, support = inputs["basis"], inputs["support"]
            if case.kind == "lift":
                geo = lifting_geometry(case.in_channels, case.out_channels, basis,
                                       case.num_rotations, 1, cases.PADDING, support)
            else:
                geo = group_geometry(case.in_channels, case.out_channels, basis,
                                     case.num_rotations, case.rotation_size, case.scale_size,
                                     1, cases.PADDING, support)
            buffer = filters.expand(inputs["weight"], basis, geo)
            x = inputs["x"]
            grad_y = torch.randn(geo.out_shape(x.shape))
            kernels.conv_forward(x, buffer, inputs["bias"], geo)        # warm-up
            for mode in ("forward", "backward"):
                with stage_timer() as totals:
                    begin = time.perf_counter()
                    if mode == "forward":
                        kernels.conv_forward(x, buffer, inputs["bias"], geo)
                    else:
                        kernels.conv_backward(grad_y, x, buffer, geo, True, True)
                    total = time.perf_counter() - begin
                parts = {k: round(v, 4) for k, v in totals.items()}
                parts["products + glue"] = round(total - sum(totals.values()), 4)
                row = dict(layer=case.name, batch=batch, mode=mode, total_s=round(total, 4),
                           stages=parts, load=load())
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def accuracy(layers, batch: int):
    """Max |err| / max |ref| of y, grad_x and grad_weight (layer step with autograd: filter
    expansion and contraction included) of the fft backend in float32 and float64 against the
    reference in float64, same inputs and output gradient."""
    import rstfast.fft.functional as fft
    from rstfast.reference import functional as reference
    rows = []
    for case in layers:
        inputs = cases.layer_inputs(case, batch, "cpu", requires_grad=False)
        grad_y = None
        results = {}
        for name, module, dtype in (("reference", reference, torch.float64),
                                    ("fft-f32", fft, torch.float32),
                                    ("fft-f64", fft, torch.float64)):
            run = dict(inputs)
            run.update({k: inputs[k].detach().to(dtype).requires_grad_()
                        for k in ("x", "weight", "bias")})
            run["basis"] = inputs["basis"].to(dtype)
            y = cases.run_layer(module, case, run)
            if grad_y is None:
                grad_y = torch.randn(y.shape, dtype=torch.float64)
            y.backward(grad_y.to(dtype))
            results[name] = [t.detach().double() for t in (y, run["x"].grad, run["weight"].grad)]
        row = dict(layer=case.name, batch=batch)
        for name in ("fft-f32", "fft-f64"):
            for what, a, b in zip(("y", "grad_x", "grad_weight"), results[name],
                                  results["reference"]):
                row[f"{name} {what}"] = float((a - b).abs().max() / b.abs().max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def probe(spec: dict) -> int:
    register_fft()
    from . import memprobe
    return memprobe.probe(spec)


def memory(layers, batches, backends_=("fft", "cpp", "reference")):
    rows = []
    for case in layers:
        for batch in batches:
            row = dict(layer=case.name, batch=batch, mode="forward+backward")
            for backend in backends_:
                spec = {"kind": "layer", "case": cases.case_spec(case),
                        "mode": "forward+backward", "backend": backend, "batch": batch}
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
                done = subprocess.run([sys.executable, "-m", "benchmarks.fft_prototype_timing",
                                       "--probe", json.dumps(spec)], cwd=REPO, env=env,
                                      capture_output=True, text=True, timeout=3600)
                if done.returncode != 0:
                    row[backend + "_MiB"] = "failed: " + done.stderr[-300:]
                else:
                    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_memory_bytes"]
                    row[backend + "_MiB"] = round(peak / 2 ** 20, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="8,32,128")
    parser.add_argument("--layers", default="0,1,2,3,4", help="indices into cases.PAPER_LAYERS")
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--accuracy", action="store_true", help="at the first of --batches")
    parser.add_argument("--memory-backends", default="fft,cpp,reference")
    parser.add_argument("--reps", default="2,1", help="repetitions fft,cpp per round")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out")
    parser.add_argument("--probe")
    args = parser.parse_args()
    if args.probe:
        print(json.dumps({"peak_memory_bytes": probe(json.loads(args.probe))}))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = [cases.PAPER_LAYERS[int(i)] for i in args.layers.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    report = {"machine": measure.machine_info(torch.device("cpu"))}
    print(json.dumps(report["machine"]), flush=True)
    if args.accuracy:
        report["accuracy"] = accuracy(layers, batches[0])
    if args.stages:
        report["stages"] = stages(layers, batches)
    if args.memory:
        report["memory"] = memory(layers, batches, tuple(args.memory_backends.split(",")))
    if args.timing:
        reps_fft, reps_cpp = (int(v) for v in args.reps.split(","))
        report["timing"] = timing(layers, batches, reps_fft, reps_cpp)
    report["load_end"] = load()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
