"""What rstfast gives a SESN user: a training step of SESN's own MNIST models on SESN's layers and,
with the import swapped to ``rstfast.compat.sesn``, on rstfast's backends, measured in one run.

SESN's code is not part of rstfast: pass a checkout of github.com/ISosnovik/sesn (``--sesn``).
Each variant runs in its own process (SESN's package imported fresh; for rstfast,
``models.impl.ses_conv`` is ``rstfast.compat.sesn`` — SESN's model files unchanged), the
variants alternate over ``--rounds`` rounds and the minimum counts. A step: forward, cross-entropy,
backward and an Adam step (lr 0.01, SESN's MNIST settings) on random ``[B, 1, 28, 28]`` images.

    python -m benchmarks.sesn_step --sesn /path/to/sesn --batch 32 --json sesn_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from rstfast.machine import cpu_name

VARIANTS = ("sesn", "cpp", "fft", "auto")
MODELS = ("mnist_ses_scalar_28", "mnist_ses_vector_28")

_STEP = r"""
import importlib, json, sys, time, torch
sesn, variant, model_name, batch, steps = sys.argv[1:6]
sys.path.insert(0, sesn)
if variant != "sesn":
    import rstfast.compat.sesn
    sys.modules["models.impl.ses_conv"] = rstfast.compat.sesn
factory = getattr(importlib.import_module("models.mnist_ses"), model_name)
torch.manual_seed(0)
model = factory()
if variant != "sesn":
    for layer in model.modules():
        if hasattr(layer, "last_backend"):
            layer.backend = variant
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
x, target = torch.randn(int(batch), 1, 28, 28), torch.randint(0, 10, (int(batch),))
times = []
for _ in range(int(steps) + 1):
    start = time.perf_counter()
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), target).backward()
    optimizer.step()
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": min(times[1:]), "first": times[0]}))
"""


def measure(sesn: Path, models, variants, batch: int, rounds: int, steps: int) -> dict:
    """``{model: {variant: seconds per step}}``, the minimum over rounds (variants alternate)."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    env.pop("TRITON_INTERPRET", None)
    best = {model: {} for model in models}
    for round_index in range(rounds):
        order = variants if round_index % 2 == 0 else tuple(reversed(variants))
        for model in models:
            for variant in order:
                done = subprocess.run([sys.executable, "-c", _STEP, str(sesn), variant, model,
                                       str(batch), str(steps)], env=env, capture_output=True,
                                      text=True)
                if done.returncode:
                    raise RuntimeError(f"{model} on {variant}: {done.stderr[-2000:]}")
                seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
                best[model][variant] = min(seconds, best[model].get(variant, float("inf")))
                print(f"round {round_index + 1} {model:<22} {variant:<5} {seconds:8.3f} s",
                      flush=True)
    return best


def table(best: dict, batch: int) -> str:
    variants = list(next(iter(best.values())))
    lines = [f"| training step, batch {batch} | " + " | ".join(
        "SESN's layers" if v == "sesn" else f"rstfast `{v}`" for v in variants) + " |",
        "|---|" + "---:|" * len(variants)]
    for model, seconds in best.items():
        cells = [f"{seconds[v]:.3f} s" + ("" if v == "sesn" else f" ({seconds['sesn'] / seconds[v]:.1f}x)")
                 for v in variants]
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sesn_step",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sesn", required=True, type=Path, help="a checkout of ISosnovik/sesn")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process")
    parser.add_argument("--json", type=Path, default=None)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.sesn / "models" / "mnist_ses.py").is_file():
        print(f"--sesn: expected a checkout of ISosnovik/sesn, got {args.sesn}", file=sys.stderr)
        return 2
    import torch
    best = measure(args.sesn, args.models, tuple(args.variants), args.batch, args.rounds,
                   args.steps)
    print(f"\n{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print(table(best, args.batch))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": torch.get_num_threads(),
                                         "batch": args.batch, "seconds": best}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
