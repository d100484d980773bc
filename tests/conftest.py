"""Shared fixtures: backends, golden files (tensors computed by other implementations), seeded RNG."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")     # the Triton kernels on Triton's interpreter

from rstfast import backends, golden  # noqa: E402  (after TRITON_INTERPRET)


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


# The golden tensors (rstfast/golden, one loader for the tests and python -m rstfast.check): paths
# relative to the golden folder, e.g. "original/layer_lift_E_rot8.npz".
load_golden = golden.load
golden_names = golden.names
golden_layer = golden.original_layer


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
