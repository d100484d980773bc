"""Golden tensors: computed by other implementations, shipped with the package, read by
``python -m rstfast.check`` and the parity tests (one loader for both).

One folder per source: ``original/`` (the original RST-CNN code), ``sesn/`` and ``disco/`` (SESN's
and DISCO's code); ``README.md`` beside this file says how each was made and what every file and
key holds. ``RSTFAST_GOLDEN_DIR`` names another folder laid out the same way. Some keys are stored
as a rule in ``meta["derived"]`` (a quotient of two stored keys, or a key of another file of the
same folder, optionally only some ``t`` slices of dim 1) and rebuilt on loading.
"""
from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

__all__ = ["directory", "names", "load", "layer", "original_layer", "disco_layer"]


def directory() -> Path:
    """The golden folder: ``RSTFAST_GOLDEN_DIR``, else the package's own."""
    return Path(os.environ.get("RSTFAST_GOLDEN_DIR") or Path(__file__).resolve().parent)


@functools.lru_cache(maxsize=None)
def _arrays(path: Path) -> Tuple[Dict[str, np.ndarray], dict]:
    """``(numpy arrays, meta)`` of one golden file, its derived keys rebuilt."""
    if not path.is_file():
        raise FileNotFoundError(f"name: no golden file {path} (the package's rstfast/golden "
                                f"holds them; RSTFAST_GOLDEN_DIR={os.environ.get('RSTFAST_GOLDEN_DIR')})")
    with np.load(path) as z:
        arrays = {key: z[key] for key in z.files if key != "meta"}
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    for key, rule in meta.get("derived", {}).items():
        if "divide" in rule:
            numerator, divisor = arrays[rule["divide"]], arrays[rule["by"]]
            arrays[key] = numerator / divisor.reshape(-1, *[1] * (numerator.ndim - 1))
        else:
            source = _arrays(path.parent / rule["from"])[0][rule["key"]]
            arrays[key] = source[:, rule["t"]] if "t" in rule else source
    return arrays, meta


def load(name: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """``(arrays, meta)`` of the golden file ``name``, a path relative to the golden folder
    (``"original/layer_lift_E_rot8.npz"``): arrays as torch tensors (fresh copies), meta a dict.
    A missing file raises ``FileNotFoundError``."""
    arrays, meta = _arrays(directory() / name)
    return ({key: torch.from_numpy(array.copy()) for key, array in arrays.items()},
            copy.deepcopy(meta))


def names(prefix: str) -> List[str]:
    """Sorted golden files ``<source>/<file>`` starting with ``prefix`` (``"original/basis_"``);
    ``FileNotFoundError`` when there is none (a missing folder must not pass as nothing)."""
    folder, _, start = prefix.rpartition("/")
    found = sorted(f"{folder}/{path.name}" for path in (directory() / folder).glob(start + "*.npz"))
    if not found:
        raise FileNotFoundError(f"prefix: no golden file {directory() / prefix}*.npz")
    return found


def layer(name: str, dtype: torch.dtype, backend: str = "reference") -> torch.nn.Module:
    """The conv layer of the golden layer file ``name`` (``original/`` or ``disco/``) in ``dtype``
    on ``backend``, with the file's weight and bias loaded."""
    arrays, meta = load(name)
    built = (disco_layer(meta, dtype, backend) if name.startswith("disco/")
             else original_layer(meta, dtype, backend))
    with torch.no_grad():
        built.weight.copy_(arrays["weight"])
        if built.bias is not None:
            built.bias.copy_(arrays["bias"])
    return built


# DISCO's (F.pad's) padding mode names -> nn.Conv2d's, which rstfast takes.
DISCO_PADDING_MODES = {"constant": "zeros", "reflect": "reflect", "replicate": "replicate",
                       "circular": "circular"}


def disco_layer(meta: dict, dtype: torch.dtype, backend: str = "reference") -> torch.nn.Module:
    """The DISCO layer of a ``disco/`` golden file's ``meta``: ``from_basis`` on DISCO's basis
    buffer with DISCO's padding mode, in ``dtype`` on ``backend`` (weight and bias not loaded)."""
    import rstfast.nn as rnn
    basis = load(f"disco/{meta['basis_file']}")[0][meta["basis_key"]]
    args, channels = meta["args"], meta["channels"]
    common = dict(stride=args.get("stride", 1), padding=args.get("padding", 0),
                  padding_mode=DISCO_PADDING_MODES[args.get("padding_mode", "constant")],
                  bias=args.get("bias", False), backend=backend)
    if meta["layer"] == "SESConv_Z2_H":
        built = rnn.LiftingConv.from_basis(basis, channels[0], channels[1], **common)
    else:
        built = rnn.GroupConv.from_basis(basis, channels[0], channels[1], channels[2], 1, **common)
    return built.to(dtype)


def original_layer(meta: dict, dtype: torch.dtype,
                   backend: str = "reference") -> torch.nn.Module:
    """The conv layer of an ``original/`` golden file's ``meta``, built through the public
    constructor in ``dtype`` (its basis follows the default dtype, as in the original) on
    ``backend``; its weight and bias are still to be loaded."""
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
