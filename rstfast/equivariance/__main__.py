"""``python -m rstfast.equivariance``: equivariance error, prediction stability, basis comparison.

    python -m rstfast.equivariance mnist_ses_vector_28_rot_4_interrot_2 --basis E --out runs/eq
    python -m rstfast.equivariance mnist_ses_scalar_28_rot_8 mnist_cnn_28 --stability \\
        --checkpoint ses.pt cnn.pt --data-dir datasets/MNIST_scale/seed_0/scale_0.3_1.0
    python -m rstfast.equivariance --compare-bases --rotations 8 --out docs

Each run prints a table and writes JSON (and, except --stability, a PNG) under ``--out``.
Angles are degrees counter-clockwise (``--angles 90 45``), unlike the layers' ``rotations``
argument, which takes radians.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import torch

from ..cli import Parser, check_backend, check_device, check_output_folder, guarded
from ..models.checkpoint import input_shape_of, load_model
from ..reference.bases import BASIS_TYPES
from . import report
from .measure import (NO_ROTATION_BASES, PAPER_SCALES, STABILITY_TRANSFORMS, compare_bases,
                      default_transforms, measure, prediction_stability, smooth_inputs)
from .transforms import MODES, Transform

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _shift(text: str):
    try:
        dy, dx = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DY,DX (two ints), got {text!r}") from None
    return dy, dx


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m rstfast.equivariance", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", metavar="MODEL", help="names of rstfast.models.list()")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--stability", action="store_true",
                      help="fraction of --data-dir images whose predicted class survives each "
                           "transform (default: rot 90, 180, 45, 30, zoom x0.7, x1.3)")
    mode.add_argument("--compare-bases", action="store_true",
                      help="error sweep of LiftingConv -> ReLU -> GroupConv for every basis type "
                           "(A, B, D without rotations)")
    p.add_argument("--checkpoint", nargs="+", default=None, metavar="PATH",
                   help="one per MODEL: a state_dict or an rstfast.train checkpoint")
    p.add_argument("--basis", default=None, help="basis type of the models (default: the "
                   "checkpoint's, else the factory's)")
    p.add_argument("--backend", default="auto", help="backend of the rstfast layers")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default float64 (float32 with --stability)")
    p.add_argument("--angles", type=float, nargs="+", default=None, metavar="DEG",
                   help="rotations in degrees, counter-clockwise (the layers' own `rotations` "
                        "argument is in radians; this tool takes degrees)")
    p.add_argument("--zooms", type=float, nargs="+", default=None, metavar="Q",
                   help="zoom factors (> 1 enlarges)")
    p.add_argument("--shifts", type=_shift, nargs="+", default=None, metavar="DY,DX",
                   help="translations in input pixels. Without --angles/--zooms/--shifts: rotations "
                        "every 15 degrees and at every slot, zooms ratio**(k/4) for k = -6..6 step "
                        "2 (ratio between neighbouring scales), shifts 4,0 0,-4 2,2 1,-3")
    p.add_argument("--input-size", type=int, default=None,
                   help="side of the generated inputs (default: the model's, 2K+2 for bases)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="generated inputs per transform (default 4, 2 for bases); with "
                        "--stability the evaluation batch (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--region", type=float, default=0.5,
                   help="compared disc radius as a fraction of each map's half-size")
    p.add_argument("--mode", choices=MODES, default="bicubic", help="interpolation of non-grid transforms")
    p.add_argument("--data-dir", default=None,
                   help="a generated RS dataset folder: --stability evaluates its --split; the "
                        "sweep uses its first --batch-size images instead of generated ones")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--limit", type=int, default=None, help="use the first N images of --split")
    p.add_argument("--out", default="equivariance", help="output folder")
    bases = p.add_argument_group("--compare-bases configuration (defaults: the paper's)")
    bases.add_argument("--bases", nargs="+", choices=BASIS_TYPES, default=list(BASIS_TYPES))
    bases.add_argument("--kernel-size", type=int, default=15)
    bases.add_argument("--effective-size", type=int, default=7)
    bases.add_argument("--scales", type=float, nargs="+", default=list(PAPER_SCALES))
    bases.add_argument("--rotations", type=int, default=8, help="R (A, B, D use 1)")
    bases.add_argument("--rotation-size", type=int, default=1)
    bases.add_argument("--scale-size", type=int, default=1)
    bases.add_argument("--channels", type=int, default=4)
    bases.add_argument("--mult", type=float, default=1.5)
    bases.add_argument("--max-order", type=int, default=4)
    return p


def _transforms(args, fallback) -> List[Transform]:
    if args.angles is None and args.zooms is None and args.shifts is None:
        return list(fallback)
    return ([Transform(angle=a) for a in args.angles or ()]
            + [Transform(scale=q) for q in args.zooms or ()]
            + [Transform(shift=s) for s in args.shifts or ()])


def _images(args, dtype, limit: Optional[int]):
    """Normalised ``[N, 1, 28, 28]`` images, labels and the background value of --data-dir."""
    from ..data import BACKGROUND, load_split, normalize
    images, labels = load_split(args.data_dir, args.split)
    images, labels = images[:limit], labels[:limit]
    return normalize(images, dtype)[:, None].to(args.device), torch.from_numpy(labels), BACKGROUND


def _models(args, dtype):
    checkpoints = args.checkpoint or [None] * len(args.models)
    if len(checkpoints) != len(args.models):
        raise ValueError(f"--checkpoint: expected one per MODEL ({len(args.models)}), got "
                         f"{len(checkpoints)}")
    for name, checkpoint in zip(args.models, checkpoints):
        yield name, load_model(name, checkpoint, args.basis, args.backend, dtype, args.device)


def run(args) -> None:
    out = Path(args.out)
    for flag in ("batch_size", "input_size", "limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')}: expected an int >= 1, got {value}")
    if args.compare_bases:
        dtype = DTYPES[args.dtype or "float64"]
        config = dict(kernel_size=args.kernel_size, effective_size=args.effective_size,
                      scales=args.scales, num_rotations=args.rotations,
                      rotation_size=args.rotation_size, scale_size=args.scale_size,
                      channels=args.channels, mult=args.mult, max_order=args.max_order,
                      backend=args.backend)
        transforms = None if args.angles is None and args.zooms is None and args.shifts is None \
            else _transforms(args, ())
        results = compare_bases(args.bases, transforms, input_size=args.input_size,
                                batch_size=args.batch_size or 2, seed=args.seed, dtype=dtype,
                                region=args.region, mode=args.mode, **config)
        layer = "2"                       # the GroupConv of basis_test_net
        print(f"GroupConv output of LiftingConv -> ReLU -> GroupConv, K={args.kernel_size}, "
              f"eff={args.effective_size}, scales={args.scales}, R={args.rotations} "
              f"(A, B, D: R=1), rotation_size={args.rotation_size}, scale_size={args.scale_size}")
        print(report.format_bases_table(results, layer))
        summary = {b: report.summary(m, layer) for b, m in results.items()}
        print("wrote", report.write_json({"config": {**config, "no_rotation_bases": list(NO_ROTATION_BASES)},
                                          "summary_layer": layer, "summary": summary,
                                          "measurements": {b: m.as_dict() for b, m in results.items()}},
                                         out / "equivariance_bases.json"))
        title = (f"basis comparison: GroupConv output, K={args.kernel_size}, eff={args.effective_size}, "
                 f"R={args.rotations} (A, B, D: R=1), scales {args.scales}")
        print("wrote", report.plot_sweeps([(b, m, layer) for b, m in results.items()],
                                          out / "equivariance_bases.png", title))
        return
    if not args.models:
        raise ValueError("MODEL: expected at least one model name (or --compare-bases)")
    if args.stability:
        if not args.data_dir:
            raise ValueError("--data-dir: required with --stability (a generated RS dataset folder)")
        dtype = DTYPES[args.dtype or "float32"]
        images, labels, background = _images(args, dtype, args.limit)
        transforms = _transforms(args, STABILITY_TRANSFORMS)
        results = {name: prediction_stability(model, images, labels, transforms,
                                               batch_size=args.batch_size or 256, mode=args.mode,
                                               fill=background)
                   for name, model in _models(args, dtype)}
        print(f"fraction of {args.split} images whose predicted class is unchanged")
        print(report.format_stability_table(results))
        print("wrote", report.write_json({"data_dir": args.data_dir, "split": args.split,
                                          "models": results}, out / "stability.json"))
        return
    dtype = DTYPES[args.dtype or "float64"]
    batch = args.batch_size or 4
    for name, model in _models(args, dtype):
        if args.data_dir:
            inputs, _, fill = _images(args, dtype, batch)
        else:
            channels, size, _ = input_shape_of(name, model)
            size = args.input_size or size
            inputs, fill = smooth_inputs((channels, size, size), batch, args.seed, dtype=dtype,
                                         device=args.device), 0.0
        result = measure(model, inputs, _transforms(args, default_transforms(model)),
                         region=args.region, mode=args.mode, fill=fill, name=name)
        print(report.format_table(result))
        print("wrote", report.write_json(result.as_dict(), out / f"equivariance_{name}.json"))
        curves = [(n, result, n) for n in result.names()]
        bases = sorted({m.basis_type for m in model.modules() if hasattr(m, "basis_type")})
        print("wrote", report.plot_sweeps(curves, out / f"equivariance_{name}.png",
                                          f"{name} (basis {', '.join(bases) or 'none'}): "
                                          f"per-layer equivariance error"))


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_backend(args.backend)
    check_device(args.device)
    check_output_folder(args.out)
    run(args)
    return 0


def main(argv=None) -> int:
    """``python -m rstfast.equivariance``; a user error (also a ValueError, TypeError or
    FileNotFoundError of the measuring API, which name the bad argument) is one line on stderr and
    exit code 2."""
    return guarded("python -m rstfast.equivariance", _main, argv,
                   user_errors=(ValueError, TypeError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
