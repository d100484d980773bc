"""Shared fixtures: golden files of the original implementation, seeded RNG."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("RSTFAST_GOLDEN_DIR", REPO.parent / "shared" / "golden"))


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
