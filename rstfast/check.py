"""``python -m rstfast.check``: do the backends compute the right numbers on this device?

What a user runs first on a new machine or GPU. For every backend that runs on the device (the
built-in ones and any registered with ``--register`` or ``RSTFAST_EXTRA_BACKENDS``) and every
dtype it computes, forward and gradients (x, weight, bias) of the paper's layer shapes (lifting,
group with inter-rotation and with inter-scale mixing, stride and padding; small batch) against the
float64 reference on the same (rounded) inputs, and, in float32 / float64, the layers of the
original implementation's golden files and DISCO's (a basis tensor, every padding mode;
:mod:`rstfast.golden`). Tolerances: relative to the
largest reference value, :data:`rstfast.autotune.TOLERANCE` per dtype (the golden float64 files
were computed by the original in float64: 1e-11). Prints a table backend x dtype x case (max
error, tolerance, pass/fail, seconds), then what ``auto`` picks per shape; exit status 0 only when
everything that ran passed, 1 otherwise, 2 for a usage error. ``--json PATH`` writes the same.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from . import autotune, backends, golden, ops
from .cli import Parser, UsageError, check_backend, check_device, guarded
from .geometry import group_geometry, lifting_geometry
from .machine import device_name
from .reference.bases import steerable_basis

__all__ = ["Case", "CASES", "Row", "run_checks", "main"]

PAPER_SCALES = (1.7, 2.45, 3.54, 5.1)
GOLDEN_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-11}
CHECKED_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
# The lifting and group layer files of the original (rstfast/golden/original) and of DISCO
# (rstfast/golden/disco: a basis tensor through from_basis, every padding mode).
GOLDEN_LAYERS = tuple(name for name in golden.names("original/layer_") + golden.names("disco/layer_")
                      if "_lift_" in name or "_group_" in name)


@dataclass(frozen=True)
class Case:
    """One layer shape: kind, basis, K, R, S, Lr, Ls, stride, padding, batch, C, O, side."""
    name: str
    kind: str
    basis_type: str
    kernel_size: int
    num_rotations: int
    num_scales: int
    rotation_size: int
    scale_size: int
    stride: int
    padding: int
    batch: int
    in_channels: int
    out_channels: int
    side: int

    def basis(self) -> torch.Tensor:
        rotations = [2 * math.pi * r / self.num_rotations for r in range(self.num_rotations)]
        if self.kernel_size == 15:
            scales, effective = list(PAPER_SCALES[:self.num_scales]), 7
        else:
            scales, effective = [1.0, 1.4, 2.0, 2.8][:self.num_scales], 3
        return steerable_basis(self.basis_type, self.kernel_size, rotations, scales, effective,
                               mult=1.5, max_order=4, dtype=torch.float64)

    def geometry(self, basis: torch.Tensor):
        if self.kind == "lift":
            return lifting_geometry(self.in_channels, self.out_channels, basis,
                                    self.num_rotations, self.stride, self.padding)
        return group_geometry(self.in_channels, self.out_channels, basis, self.num_rotations,
                              self.rotation_size, self.scale_size, self.stride, self.padding)


# The paper's layer shapes (K = 15, basis E, R = 8 or 4, 4 scales) with few channels, and a small
# stride-2 lifting layer with cropped supports.
CASES = (
    Case("lift 28px R8S4", "lift", "E", 15, 8, 4, 1, 1, 1, 7, 2, 1, 4, 28),
    Case("group 14px R8S4 Lr4", "group", "E", 15, 8, 4, 4, 1, 1, 7, 2, 3, 4, 14),
    Case("group 14px R4S4 Lr2Ls2", "group", "E", 15, 4, 4, 2, 2, 1, 7, 2, 3, 4, 14),
    Case("group 17px R4S4 Lr2Ls2 s2 p5", "group", "E", 15, 4, 4, 2, 2, 2, 5, 2, 3, 4, 17),
    Case("lift 13px A1 K7 R4S3 s2", "lift", "A1", 7, 4, 3, 1, 1, 2, 0, 2, 3, 4, 13),
)


@dataclass
class Row:
    """One checked (backend, dtype, case): the largest error over y and the gradients, relative to
    max|reference|, the tolerance, the verdict and the seconds it took."""
    backend: str
    dtype: str
    case: str
    error: float
    tolerance: float
    passed: bool
    seconds: float
    detail: str = ""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _relative_errors(results: Sequence[torch.Tensor], expected: Sequence[torch.Tensor],
                     names: Sequence[str]) -> Dict[str, float]:
    errors = {}
    for name, got, want in zip(names, results, expected):
        want = want.to(torch.float64)
        if tuple(got.shape) != tuple(want.shape):
            errors[name] = math.inf
            continue
        scale = want.abs().max().item() or 1.0
        error = (got.detach().to(torch.float64).cpu() - want.cpu()).abs().max().item()
        errors[name] = error / scale if error == error else math.inf   # NaN: fails
    return errors


def _forward_backward(run, leaves, seed):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    y = run(*leaves)
    grads = torch.autograd.grad(y, leaves, seed.to(y.dtype))
    return [y] + list(grads)


def _check_case(backend: str, dtype: torch.dtype, case: Case, device: torch.device) -> Row:
    generator = torch.Generator().manual_seed(0)
    basis64 = case.basis()
    geo = case.geometry(basis64)
    x_shape = ((case.batch, case.in_channels) + (() if case.kind == "lift" else
                                                  (geo.group_size,)) + (case.side, case.side))
    tensors = [torch.randn(x_shape, generator=generator, dtype=torch.float64),
               torch.randn(geo.weight_shape(), generator=generator, dtype=torch.float64)
               / math.sqrt(case.in_channels * geo.num_offsets * geo.num_funcs),
               torch.randn(case.out_channels, generator=generator, dtype=torch.float64)]
    rounded = [t.to(dtype).to(torch.float64) for t in tensors + [basis64]]
    seed = torch.randn(geo.out_shape(x_shape), generator=generator, dtype=torch.float64)
    expected = _forward_backward(
        lambda x, w, b: ops.roto_scale_conv(x, w, rounded[3], b, geo, "reference"),
        rounded[:3], seed)
    basis = basis64.to(device, dtype)
    started = time.perf_counter()
    try:
        results = _forward_backward(
            lambda x, w, b: ops.roto_scale_conv(x, w, basis, b, geo, backend),
            [t.to(device, dtype) for t in tensors], seed.to(device))
    except Exception as exc:       # a failing backend is a failed row, not a crash
        return Row(backend, _dtype_name(dtype), case.name, math.inf,
                   autotune.TOLERANCE[dtype], False, time.perf_counter() - started,
                   f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    seconds = time.perf_counter() - started
    errors = _relative_errors(results, expected, ("y", "grad_x", "grad_weight", "grad_bias"))
    return _row(backend, dtype, case.name, errors, autotune.TOLERANCE[dtype], seconds)


def _row(backend: str, dtype: torch.dtype, case: str, errors: Dict[str, float], tolerance: float,
         seconds: float) -> Row:
    worst = max(errors, key=errors.get)
    passed = errors[worst] <= tolerance
    return Row(backend, _dtype_name(dtype), case, errors[worst], tolerance, passed, seconds,
               "" if passed else f"worst: {worst}")


def _check_golden(backend: str, dtype: torch.dtype, name: str, device: torch.device) -> Row:
    arrays, _ = golden.load(name)
    suffix = "_f64" if dtype == torch.float64 else ""
    started = time.perf_counter()
    try:
        layer = golden.layer(name, dtype, backend).to(device)
        x = arrays["x"].to(device, dtype).requires_grad_()
        y = layer(x)
        (y * arrays["grad_seed"].to(device, dtype)).sum().backward()
        results = [y, x.grad, layer.weight.grad]
    except Exception as exc:
        return Row(backend, _dtype_name(dtype), f"golden {name}", math.inf,
                   GOLDEN_TOLERANCE[dtype], False, time.perf_counter() - started,
                   f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    seconds = time.perf_counter() - started
    expected = [arrays["y" + suffix], arrays["grad_x" + suffix], arrays["grad_weight" + suffix]]
    errors = _relative_errors(results, expected, ("y", "grad_x", "grad_weight"))
    return _row(backend, dtype, f"golden {Path(name).stem}", errors,
                GOLDEN_TOLERANCE[dtype], seconds)


def _auto_picks(device: torch.device) -> List[dict]:
    """What ``auto`` picks for each case (float32, forward + backward), with its reasons."""
    picks = []
    for case in CASES:
        basis = case.basis().to(device, torch.float32)
        geo = case.geometry(basis)
        x_shape = ((case.batch, case.in_channels) + (() if case.kind == "lift" else
                                                      (geo.group_size,)) + (case.side,) * 2)
        x = torch.zeros(x_shape, device=device, requires_grad=True)
        weight = torch.zeros(geo.weight_shape(), device=device, requires_grad=True)
        chosen = ops.select(x, "auto", weight, basis, None, geo)
        decision = autotune.decisions()[-1]
        picks.append({"case": case.name, "auto": chosen.name, "how": decision.summary()})
    return picks


def run_checks(device, backend_names: Optional[Sequence[str]] = None,
               with_golden: bool = True, log=print) -> dict:
    """Every check on ``device``: ``{"rows": [...], "auto": [...], "passed": bool, ...}``."""
    device = torch.device(device)
    available = backends.available_backends(device)
    chosen = [name for name in (backend_names or available) if name in available]
    skipped = {name: available[name] for name in chosen if available[name] is not None}
    rows: List[Row] = []
    for name in chosen:
        if name in skipped:
            continue
        computes = backends.dtypes(name, device)
        for dtype in (d for d in CHECKED_DTYPES if d in computes):
            for case in CASES:
                rows.append(_check_case(name, dtype, case, device))
                log(_format_row(rows[-1]))
            if with_golden and dtype in GOLDEN_TOLERANCE:
                for file in GOLDEN_LAYERS:
                    rows.append(_check_golden(name, dtype, file, device))
                    log(_format_row(rows[-1]))
    picks = _auto_picks(device)
    return {"device": str(device), "machine": device_name(device), "torch": torch.__version__,
            "rows": [asdict(row) for row in rows], "not_run": skipped, "auto": picks,
            "passed": bool(rows) and all(row.passed for row in rows)}


_HEADER = f"{'backend':<10} {'dtype':<9} {'case':<44} {'max error':>10} {'tolerance':>9} " \
          f"{'result':<6} {'seconds':>7}"


def _format_row(row: Row) -> str:
    error = "inf" if math.isinf(row.error) else f"{row.error:.2e}"
    verdict = "pass" if row.passed else "FAIL"
    return (f"{row.backend:<10} {row.dtype:<9} {row.case:<44} {error:>10} {row.tolerance:>9.0e} "
            f"{verdict:<6} {row.seconds:>7.2f}" + (f"  {row.detail}" if row.detail else ""))


def build_parser() -> Parser:
    parser = Parser(prog="python -m rstfast.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None,
                        help="device to check (default: cuda when present, else cpu)")
    parser.add_argument("--backends", nargs="+", default=None, metavar="NAME",
                        help="check only these backends (default: every backend)")
    parser.add_argument("--register", action="append", default=[], metavar="NAME=MODULE[:KIND]",
                        help="register a backend before checking (repeatable; also "
                             "RSTFAST_EXTRA_BACKENDS)")
    parser.add_argument("--no-golden", action="store_true",
                        help="skip the comparison with the original's golden files")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return parser


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        backends.register_specs(",".join([os.environ.get("RSTFAST_EXTRA_BACKENDS", "")]
                                         + args.register))
    except (ValueError, ImportError) as exc:
        raise UsageError(f"--register: {exc}") from None
    device = check_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for name in args.backends or ():
        if check_backend(name, "--backends") == "auto":
            raise UsageError("--backends: 'auto' picks among the others; name concrete backends")
    print(f"rstfast.check on {device} ({device_name(device)}), torch {torch.__version__}")
    print(_HEADER)
    report = run_checks(device, args.backends, with_golden=not args.no_golden)
    for name, reason in report["not_run"].items():
        print(f"{name:<10} not run on {device}: {reason}")
    print("\nauto picks (float32, forward + backward):")
    for pick in report["auto"]:
        print(f"  {pick['case']:<32} {pick['auto']:<10} {pick['how']}")
    failed = [row for row in report["rows"] if not row["passed"]]
    print(f"\n{len(report['rows']) - len(failed)} of {len(report['rows'])} checks passed"
          + (f"; FAILED: {', '.join(sorted({r['backend'] for r in failed}))}" if failed else ""))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return 0 if report["passed"] else 1


def main(argv=None) -> int:
    return guarded("python -m rstfast.check", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
