"""Shared fixtures: golden files of the original implementation, seeded RNG."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("RSTFAST_GOLDEN_DIR", REPO.parent / "shared" / "golden"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")     # the Triton kernels on Triton's interpreter

from rstfast import backends  # noqa: E402  (after TRITON_INTERPRET)


# RSTFAST_EXTRA_BACKENDS="name=module[:kind],..." registers more backends, which every
# backend-parametrized test then covers (the contract suite runs on a user's backend).
backends.register_specs(os.environ.get("RSTFAST_EXTRA_BACKENDS", ""))
# Backends that must run on this machine in CI (a skip there would hide a broken build).
REQUIRED_IN_CI = {"cpu": ("reference", "cpp", "fft"), "cuda": ("reference", "triton", "cuda", "fft")}
BACKENDS = tuple(name for name in backends.names() if name != "auto")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every backend of :func:`rstfast.backends.names`; skipped (with the reason) where it cannot
    run on ``DEVICE``, failed in CI where it must."""
    reason = backends.available_backends(DEVICE)[request.param]
    if reason is not None:
        if os.environ.get("CI") and request.param in REQUIRED_IN_CI.get(DEVICE, ()):
            pytest.fail(f"backend {request.param!r} must run in CI on {DEVICE}: {reason}")
        pytest.skip(f"backend {request.param!r} unavailable on {DEVICE}: {reason}")
    return request.param


def exact_dtypes(name: str):
    """float32 and float64, as far as backend ``name`` computes them on ``DEVICE``."""
    return [d for d in (torch.float32, torch.float64) if d in backends.dtypes(name, DEVICE)]


def golden_path(name: str) -> Path:
    path = GOLDEN_DIR / name
    if not path.exists():
        message = f"golden file {path} not found (set RSTFAST_GOLDEN_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def load_golden(name: str):
    """``(arrays, meta)`` of a golden ``.npz``: arrays as a dict of torch tensors, meta as a dict."""
    z = np.load(golden_path(name))
    arrays = {k: torch.from_numpy(z[k]) for k in z.files if k != "meta"}
    meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    return arrays, meta


def golden_layer(meta, dtype, backend: str = "reference"):
    """The conv layer of a golden file's ``meta``, built through the public constructor in
    ``dtype`` (the basis follows the default dtype, as in the original) on ``backend``."""
    import rstfast.nn as rnn
    args = meta["args"]
    common = dict(kernel_size=args["kernel_size"], effective_size=args["effective_size"],
                  scales=args["scales"], rotations=args["rotations"], stride=args["stride"],
                  padding=args["padding"], bias=args["bias"], basis_type=args["basis_type"],
                  backend=backend, **args["kw"])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        if meta["layer"] == "SESConv_Z2_H":
            return rnn.SESConv_Z2_H(args["in_channels"], args["out_channels"], **common)
        return rnn.SESConv_H_H(args["in_channels"], args["out_channels"], args["scale_size"],
                               args["rotation_size"], **common)
    finally:
        torch.set_default_dtype(previous)


def golden_names(prefix: str):
    """Sorted golden file names starting with ``prefix`` (collection time; empty if absent)."""
    if not GOLDEN_DIR.is_dir():
        return []
    return sorted(p.name for p in GOLDEN_DIR.glob(prefix + "*.npz"))


def assert_close_to_max(actual, expected, rel: float, what: str = ""):
    """``max|actual - expected| <= rel * max|expected|`` (the golden README's metric)."""
    actual = actual.detach().to(torch.float64)
    expected = expected.detach().to(torch.float64)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().item() or 1.0
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale, f"{what}: max|diff| = {err:.3e} > {rel:.1e} * max|ref| = {rel * scale:.3e}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
