"""Loading trained weights into zoo models: a plain ``state_dict`` file, or a checkpoint of
:mod:`rstfast.train` (a dict whose ``model`` is the state_dict and whose ``args`` name the model
and basis it was trained with). Files are read with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import re
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

__all__ = ["input_shape_of", "load_model", "load_state_dict"]


def _numpy_globals():
    core = getattr(np, "_core", None) or np.core
    return [np.ndarray, np.dtype, core.multiarray._reconstruct, type(np.dtype(np.uint32))]


def load_state_dict(path) -> Tuple[dict, dict]:
    """``(state_dict, args)`` from ``path``: a state_dict, or an :mod:`rstfast.train` checkpoint
    (a dict with ``model``; ``args`` holds its model name and basis). Loaded with
    ``weights_only=True``; numpy arrays (RNG states of older trainer checkpoints) are allowed."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint: file {path} not found") from None
    except Exception as exc:              # unpickling errors have many types
        raise ValueError(f"checkpoint: cannot load {path} with weights_only=True: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: expected a state_dict or a dict with 'model' in {path}, "
                         f"got {type(state).__name__}")
    if "model" in state and isinstance(state["model"], dict):
        return state["model"], dict(state.get("args") or {})
    return state, {}


def input_shape_of(name: str, model: nn.Module) -> Tuple[int, int, int]:
    """``(C, H, W)`` a zoo model takes: 28x28 for ``*_28_*`` and ``*_56_*`` (upsampled inside),
    96x96 for ``*_96_*`` and ``wrn_*``; C = ``in_channels`` of its first convolution."""
    match = re.search(r"_(28|56|96)(_|$)", name)
    if name.startswith("wrn_"):
        size = 96
    elif match:
        size = 96 if match.group(1) == "96" else 28
    else:
        raise ValueError(f"name: cannot tell the input size of {name!r}; pass input_size")
    first = next(m for m in model.modules() if hasattr(m, "in_channels"))
    return (first.in_channels, size, size)


def load_model(name: str, checkpoint=None, basis: Optional[str] = None, backend: str = "auto",
               dtype=torch.float32, device="cpu") -> nn.Module:
    """Zoo model ``name`` (:func:`rstfast.models.get`) with the weights of ``checkpoint`` (see
    :func:`load_state_dict`; strict), in eval mode. A trainer checkpoint's ``args`` must name
    the same model; its basis is used unless ``basis`` is given."""
    from . import get
    state, args = (None, {}) if checkpoint is None else load_state_dict(checkpoint)
    if args.get("model") not in (None, name):
        raise ValueError(f"checkpoint: {checkpoint} was trained as {args['model']!r}, not {name!r}")
    basis = basis if basis is not None else args.get("basis")
    model = get(name, basis=basis, backend=backend)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"checkpoint: {checkpoint} does not fit {name} (basis {basis}): "
                             f"{' '.join(str(exc).split())[:400]}") from None
    return model.to(device=device, dtype=dtype).eval()
