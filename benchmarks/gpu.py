"""Every method on the paper's layers and training steps, on one device: the GPU check.

Built from the suite's pieces (:mod:`benchmarks.cases` case table and FLOP counts,
:mod:`benchmarks.measure` timer and peak memory), not a harness of its own. Layers of
``mnist_ses_vector_56_rot_8_interrot_4`` and ``mnist_ses_scalar_56_rot_8`` (forward, forward+
backward) and the training steps of both models, for each method:

* ``original`` (the original algorithm), ``reference`` (expand + one grouped cuDNN conv2d, TF32
  off) and ``reference-tf32`` (TF32 on: PyTorch's default for convolutions);
* every kernel backend that runs on the device (``triton``, ``cuda``, ``fft``, registered ones),
  plus ``triton-tf32`` and ``triton-bf16`` (autocast) where Triton runs.

Per row: median time (CUDA events on GPU), peak memory, GFLOP/s on the non-zero taps, and the
relative error of the output against ``reference`` (float32). The JSON is rewritten after every
row (a killed run keeps what it had).

    python -m benchmarks.gpu --device cuda [--batch 128] [--out FILE]
    TRITON_INTERPRET=1 python -m benchmarks.gpu --device cpu --tiny   # dry run, no GPU
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Callable, Dict, List

import torch

from . import cases, measure

MODELS = ("mnist_ses_vector_56_rot_8_interrot_4", "mnist_ses_scalar_56_rot_8")
TINY_CHANNELS = {1: 1, 32: 2, 63: 3, 95: 2}


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    backend: str
    context: Callable[[], contextlib.AbstractContextManager]


@contextlib.contextmanager
def _cudnn_tf32(enabled: bool):
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


@contextlib.contextmanager
def _triton_tf32():
    from rstfast.triton import jit
    previous, jit.ALLOW_TF32 = jit.ALLOW_TF32, True
    try:
        yield
    finally:
        jit.ALLOW_TF32 = previous


def methods(device: str, dry_run: bool) -> List[Method]:
    """Every method that runs on ``device`` (unavailable ones are printed and left out;
    ``dry_run``: Triton's CPU interpreter counts)."""
    found = [Method("original", "original", contextlib.nullcontext),
             Method("reference", "reference", lambda: _cudnn_tf32(False)),
             Method("reference-tf32", "reference", lambda: _cudnn_tf32(True))]
    for name in cases.backend_names():
        if name in ("original", "reference"):
            continue
        reason = cases.backend_or_reason(name, device, allow_interpreter=dry_run)
        if reason is not None:
            print(f"[gpu] {name}: {reason}", flush=True)
            continue
        found.append(Method(name, name, contextlib.nullcontext))
        if name == "triton":
            found.append(Method("triton-tf32", name, _triton_tf32))
            found.append(Method("triton-bf16", name,
                                lambda: torch.autocast(torch.device(device).type,
                                                       dtype=torch.bfloat16)))
    return found


def paper_layers(tiny: bool) -> List[cases.LayerCase]:
    layers = [c for c in cases.PAPER_LAYERS if set(c.models) & set(MODELS)]
    if tiny:
        layers = [dataclasses.replace(c, in_channels=TINY_CHANNELS[c.in_channels],
                                      out_channels=TINY_CHANNELS[c.out_channels], size=8)
                  for c in layers]
    return layers


def _time(step, setup, device, repeats: int) -> Dict[str, float]:
    timer = measure.RoundTimer(step, device)
    setup()
    timer()                                              # warm-up (and autotuning)
    del timer.times[:]
    for _ in range(repeats):
        setup()
        timer()
    memory = measure.PeakMemory(device)
    setup()
    memory.start()
    step()
    return {**measure.median_iqr(timer.times), "peak_bytes": memory.stop()}


def layer_rows(case, method: Method, batch: int, device, repeats: int, expected):
    rows = []
    with method.context():
        torch.manual_seed(0)                      # the inputs ``expected`` was computed from
        inputs = cases.layer_inputs(case, batch, device, requires_grad=False)
        with torch.no_grad():
            y = cases.run_layer(method.backend, inputs).float()
        error = ((y - expected).abs().max() / expected.abs().max()).item()
        del y, inputs
        for backward in (False, True):
            step, setup, flops = cases.layer_run(case, method.backend, batch, device, backward)
            stats = _time(step, setup, device, repeats)
            rows.append({"kind": "layer", "case": case.name, "models": list(case.models),
                         "mode": "forward+backward" if backward else "forward",
                         "method": method.name, "batch": batch, "time_median_s": stats["median"],
                         "time_iqr_s": stats["iqr"], "peak_memory_bytes": stats["peak_bytes"],
                         "gflops_per_s_nonzero": flops["nonzero"] / stats["median"] / 1e9,
                         "rel_error_vs_reference": error})
    return rows


def train_rows(model_name: str, method: Method, batch: int, device, repeats: int):
    with method.context():
        step, setup, flops = cases.train_run(model_name, method.backend, batch, device)
        stats = _time(step, setup, device, repeats)
    return [{"kind": "train step", "case": model_name, "mode": "train step",
             "method": method.name, "batch": batch, "time_median_s": stats["median"],
             "time_iqr_s": stats["iqr"], "peak_memory_bytes": stats["peak_bytes"],
             "gflops_per_s_nonzero": flops()["nonzero"] / stats["median"] / 1e9}]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true",
                        help="a few channels, 8x8 layers, batch 1, no training steps (dry run)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu.json"))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    batch, repeats = (1, 1) if args.tiny else (args.batch, args.repeats)
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"machine_info": measure.machine_info(device), "batch": batch, "tiny": args.tiny,
              "interpreter": os.environ.get("TRITON_INTERPRET", "0"), "rows": [], "errors": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    found = methods(args.device, dry_run=args.tiny)
    for case in paper_layers(args.tiny):
        with _cudnn_tf32(False):
            torch.manual_seed(0)
            expected = cases.run_layer("reference", cases.layer_inputs(case, batch, device,
                                                                       False)).detach().float()
        for method in found:
            try:
                result["rows"] += layer_rows(case, method, batch, device, repeats, expected)
            except (RuntimeError, ValueError, TypeError) as exc:        # e.g. out of memory
                result["errors"].append({"case": case.name, "method": method.name,
                                         "error": str(exc)[:400]})
            print(json.dumps(result["rows"][-1] if result["rows"] else result["errors"][-1]),
                  flush=True)
            out.write_text(json.dumps(result, indent=1))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for model_name in () if args.tiny else MODELS:
        for method in found:
            try:
                result["rows"] += train_rows(model_name, method, batch, device, repeats)
            except (RuntimeError, ValueError, TypeError) as exc:
                result["errors"].append({"case": model_name, "method": method.name,
                                         "error": str(exc)[:400]})
            out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
