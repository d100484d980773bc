"""Model zoo of the original RST-CNN code, under the original factory names.

>>> model = rstfast.models.get('mnist_ses_scalar_28_rot_8', basis='E', backend='auto')
>>> rstfast.models.list()[:2]

State-dict keys, shapes and buffers equal the original's, so its checkpoints load with
``load_state_dict(strict=True)``. Factories also accept the original call style
``factory(**vars(args))``: ``basis`` (``None`` -> the factory's default: 'E' for
``mnist_ses_*``, 'D1' for ``mnist_res_*``; ignored by models without a basis) and ``backend``
(passed to every rstfast layer) are read, every other keyword is ignored.

Trained weights: :func:`rstfast.models.checkpoint.load_model` (a state_dict or an
:mod:`rstfast.train` checkpoint).

STL-10 (96x96 RGB): ``wrn_16_8``, ``wrn_16_8_{kanazawa,xu,dss,ss}`` and ``wrn_16_8_ses_{a,b,c}``
(see :mod:`.stl`).

Fashion-MNIST: the original trains the same ``mnist_*`` factories on Fashion-MNIST; every
``mnist_<rest>`` is also registered as ``fmnist_<rest>``, the identical architecture.
"""
from __future__ import annotations

import difflib
from typing import Optional

import torch.nn as nn

from . import cnn, dss, scale_invariant, ses, sevf, ss, stl

# ``list`` is left out of ``__all__`` so that ``import *`` does not shadow the builtin.
__all__ = ["get", "FACTORIES", "FASHION_PREFIX"]

FASHION_PREFIX = "fmnist_"


def _collect() -> dict:
    factories = {}
    for module in (cnn, ses, sevf, scale_invariant, dss, ss, stl):
        factories.update(module.FACTORIES)
    factories.update({FASHION_PREFIX + name[len("mnist_"):]: factory
                      for name, factory in factories.items() if name.startswith("mnist_")})
    return dict(sorted(factories.items()))


FACTORIES = _collect()


def list() -> "list[str]":  # noqa: A001 - the registry's public name, as in the brief
    """Sorted names of every registered model (``fmnist_*`` aliases included)."""
    return sorted(FACTORIES)


def get(name: str, basis: Optional[str] = None, backend: str = "auto", **kwargs) -> nn.Module:
    """Build model ``name`` (a fresh instance, training mode).

    ``basis``: basis type of the rstfast layers (None -> the factory's default).
    ``backend``: backend of every rstfast layer ('auto', 'reference', 'triton', 'cpp', 'cuda').
    Other keywords reach the factory, which ignores those it does not use (original style).
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a model name (str), got {name!r} "
                        f"({type(name).__name__})")
    if name not in FACTORIES:
        close = difflib.get_close_matches(name, FACTORIES, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"name: unknown model {name!r}{hint} {len(FACTORIES)} models are "
                         f"registered: {', '.join(FACTORIES)}")
    return FACTORIES[name](basis=basis, backend=backend, **kwargs)
