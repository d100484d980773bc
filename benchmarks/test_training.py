"""Whole training steps (forward, cross-entropy, backward, Adam step) of the paper models."""
import importlib

import pytest

from . import cases


def test_train_step(bench, settings, device, model_name, backend, runnable):
    if model_name in cases.PLAIN_MODELS and backend != "reference":
        pytest.skip(f"{model_name} has no roto-scale layers: measured once, under 'reference'")
    try:
        importlib.import_module("rstfast.models")
    except ImportError as exc:
        pytest.skip(f"cannot import rstfast.models: {exc}")
    info = {"kind": "train step", "case": model_name, "mode": "train step", "backend": backend,
            "models": [model_name]}
    spec = {"kind": "train step", "model": model_name, "backend": backend,
            "batch": settings["batch"]}
    step, setup, flops = cases.train_run(model_name, backend, settings["batch"], device)
    bench.run(step, setup, flops, info, spec)
