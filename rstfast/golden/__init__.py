"""Tensors computed by the original RST-CNN implementation, shipped with the package: the layer
files that ``python -m rstfast.check`` and the parity tests compare every backend with.

``README.md`` beside this file says how they were made and what each key holds. Each ``.npz`` has
the arrays of one layer call (``x``, ``weight``, ``bias``, ``grad_seed``, ``y`` and the gradients
of ``sum(y * grad_seed)``, float32, and their float64 counterparts ``*_f64``) and ``meta``, a JSON
string with the layer's constructor arguments (``meta["args"]``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

__all__ = ["DIRECTORY", "names", "load", "layer"]

DIRECTORY = Path(__file__).resolve().parent


def names(prefix: str = "layer_") -> List[str]:
    """Sorted file names of the shipped golden files starting with ``prefix``."""
    return sorted(path.name for path in DIRECTORY.glob(prefix + "*.npz"))


def load(name: str, directory: Path = DIRECTORY) -> Tuple[Dict[str, torch.Tensor], dict]:
    """``(arrays, meta)`` of the golden file ``name`` in ``directory``: the arrays as torch
    tensors, ``meta`` decoded from its JSON."""
    path = Path(directory) / name
    if not path.is_file():
        raise FileNotFoundError(f"name: no golden file {path}")
    with np.load(path) as z:
        arrays = {key: torch.from_numpy(z[key]) for key in z.files if key != "meta"}
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    return arrays, meta


def layer(meta: dict, dtype: torch.dtype, backend: str = "reference") -> torch.nn.Module:
    """The conv layer of a golden file's ``meta``, built through the public constructor (its basis
    follows ``dtype``, as the original's follows the default dtype) on ``backend``, its weight
    and bias still to be loaded."""
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
