"""Whole training steps (forward, cross-entropy, backward, Adam step) and eval-mode inference
(filter cache on / off) of the paper models."""
import importlib

import pytest

from . import cases


def _skip_unless_measurable(model_name, backend):
    if model_name in cases.PLAIN_MODELS and backend != "reference":
        pytest.skip(f"{model_name} has no roto-scale layers: measured once, under 'reference'")
    try:
        importlib.import_module("rstfast.models")
    except ImportError as exc:
        pytest.skip(f"cannot import rstfast.models: {exc}")


def test_train_step(bench, settings, device, model_name, backend, runnable):
    _skip_unless_measurable(model_name, backend)
    info = {"kind": "train step", "case": model_name, "mode": "train step", "backend": backend,
            "models": [model_name]}
    spec = {"kind": "train step", "model": model_name, "backend": backend,
            "batch": settings["batch"]}
    step, setup, flops = cases.train_run(model_name, backend, settings["batch"], device)
    bench.run(step, setup, flops, info, spec)


def test_inference(bench, settings, device, model_name, inference_mode, backend, runnable):
    _skip_unless_measurable(model_name, backend)
    if model_name in cases.PLAIN_MODELS and inference_mode != cases.INFERENCE_MODES[0]:
        pytest.skip(f"{model_name} has no filters to cache: measured once")
    info = {"kind": "inference", "case": model_name, "mode": inference_mode, "backend": backend,
            "models": [model_name]}
    spec = {"kind": "inference", "model": model_name, "mode": inference_mode, "backend": backend,
            "batch": settings["batch"]}
    step, setup, flops = cases.inference_run(model_name, backend, settings["batch"], device,
                                             inference_mode)
    bench.run(step, setup, flops, info, spec)
