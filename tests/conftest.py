"""Shared fixtures: golden files (tensors computed by other implementations), seeded RNG."""
import copy
import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# One folder per source of golden tensors (original/ = the original RST-CNN code), described in
# tests/golden/README.md. RSTFAST_GOLDEN_DIR names another folder laid out the same way.
GOLDEN_DIR = Path(os.environ.get("RSTFAST_GOLDEN_DIR", REPO / "tests" / "golden"))
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


@functools.lru_cache(maxsize=None)
def _golden_arrays(path: Path):
    """``(numpy arrays, meta)`` of one golden file, its derived keys rebuilt as ``meta["derived"]``
    says (tests/golden/README.md): a quotient of two stored keys, or a key of another file of
    the same folder, optionally only some ``t`` slices of dim 1."""
    if not path.is_file():
        override = os.environ.get("RSTFAST_GOLDEN_DIR")
        raise FileNotFoundError(f"golden file {path} is missing (the repository's tests/golden "
                                f"holds them; RSTFAST_GOLDEN_DIR={override})")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    for key, rule in meta.get("derived", {}).items():
        if "divide" in rule:
            numerator, divisor = arrays[rule["divide"]], arrays[rule["by"]]
            arrays[key] = numerator / divisor.reshape(-1, *[1] * (numerator.ndim - 1))
        else:
            source = _golden_arrays(path.parent / rule["from"])[0][rule["key"]]
            arrays[key] = source[:, rule["t"]] if "t" in rule else source
    return arrays, meta


def load_golden(name: str):
    """``(arrays, meta)`` of the golden file ``name``, a path relative to tests/golden
    (``"original/layer_lift_E_rot8.npz"``): arrays as a dict of torch tensors (fresh copies),
    meta as a dict. A missing file raises ``FileNotFoundError``: a failure, never a skip."""
    arrays, meta = _golden_arrays(GOLDEN_DIR / name)
    return {k: torch.from_numpy(a.copy()) for k, a in arrays.items()}, copy.deepcopy(meta)


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
    """Sorted golden files ``<source>/<name>`` whose name starts with ``prefix`` (a path relative to
    tests/golden, e.g. ``"original/basis_"``); an error when there is none, so that a missing
    folder fails at collection instead of leaving an empty parametrization."""
    folder, _, start = prefix.rpartition("/")
    names = sorted(f"{folder}/{p.name}" for p in (GOLDEN_DIR / folder).glob(start + "*.npz"))
    if not names:
        raise FileNotFoundError(f"no golden file {GOLDEN_DIR / prefix}*.npz")
    return names


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
