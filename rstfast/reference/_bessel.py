"""Zeros of the Bessel functions ``J_k`` for the Fourier–Bessel bases (``docs/bases.md`` §4.3).

Replaces the original ``bessel.npy`` table (rows ``[k, q, j_{k,q}, j_{k,q+1}]``) by
``scipy.special.jn_zeros``; only the rows the builders read are generated.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

MAX_ANGULAR_ORDER = 15  # maxAngFreq of the original: k = 0..15


@functools.lru_cache(maxsize=None)
def _first_zeros(order: int, count: int) -> np.ndarray:
    """The first ``count`` positive zeros of ``J_order`` (a prefix does not depend on ``count``)."""
    return special.jn_zeros(order, count)


@functools.lru_cache(maxsize=None)
def bessel_pairs(bound: float) -> tuple:
    """Pairs ``(k, j_{k,q})`` with ``k <= 15`` and ``j_{k,q+1} <= bound``, sorted by ``j_{k,q}``.

    Returns ``(orders, zeros)``: int64 and float64 arrays of equal length (read-only).
    """
    needed = int(bound / math.pi) + 3                 # j_{k,q} > (q - 1/4) pi: more than enough
    count = max(32, 1 << (needed - 1).bit_length())  # few distinct sizes -> few scipy calls
    orders, zeros = [], []
    for k in range(MAX_ANGULAR_ORDER + 1):
        z = _first_zeros(k, count)
        keep = z[1:] <= bound                          # the *next* zero must be below the bound
        orders.append(np.full(int(keep.sum()), k, dtype=np.int64))
        zeros.append(z[:-1][keep])
    orders, zeros = np.concatenate(orders), np.concatenate(zeros)
    order = np.argsort(zeros, kind="stable")
    orders, zeros = orders[order], zeros[order]
    orders.setflags(write=False)
    zeros.setflags(write=False)
    return orders, zeros


def fb_bound(half_size: int, variant_d: bool) -> float:
    """``pi * R * tff`` with ``R = L1 + 0.5``; ``tff = 2`` for ``L1 < 2`` except in variant D."""
    truncation = 2.5 if (variant_d or half_size >= 2) else 2.0
    return math.pi * (half_size + 0.5) * truncation


def fb_function_count(half_size: int, variant_d: bool) -> int:
    """Number of FB functions available on a ``(2*L1+1)``-pixel support (k = 0: one, k > 0: two)."""
    orders, _ = bessel_pairs(fb_bound(half_size, variant_d))
    return int(np.where(orders == 0, 1, 2).sum())
