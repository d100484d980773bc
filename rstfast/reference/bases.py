"""Steerable bases of the original RST-CNN code, number for number (``docs/bases.md``).

``steerable_basis(...) -> [F, T, K, K]`` indexed ``[f, t, u, v]``: ``t = r*S + s`` (rotation-major)
for the rotation types, ``t = s`` for A, B, D; ``u`` kernel row, ``v`` kernel column.

Four families, each one vectorized numpy function evaluated in float64 on the pixel grid of a
per-scale support ``n_i`` (§3) for all rotations at once:

* Hermite–Gaussian (A, A1, B, C), separable (A, B) or rotated (A1, C);
* Sturm–Liouville (G, G1, H), optionally times a Gaussian (H);
* Fourier–Bessel (D, D1, E, F): DCF-Net variant (D) or rotation variant (D1, E, F; F with a
  Gaussian);
* Gaussian rings times an angular cosine (I1).

``_TYPES`` maps each basis type to its family, its function orders and its inner scales; a type
has ``F = min(eff^2, inner scales * functions per inner scale)`` functions. Every per-(rotation,
scale) block is cast to the output dtype and zero-padded to ``K x K``; the stacked basis is divided
by the norm of each function at ``t = 0`` (§7). Bases are cached per argument tuple; every call
returns a new tensor.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from numpy.polynomial import hermite_e
from scipy import special

from .._checks import float_list, odd_kernel_size, positive_float, positive_int
from ._bessel import bessel_pairs, fb_bound, fb_function_count

__all__ = ["steerable_basis", "raw_steerable_basis", "support_sizes", "BASIS_TYPES"]

FB_BUFFER_ROWS = 60     # the original fills a fixed 60-row buffer with Fourier–Bessel functions
FB_SUPPORT_SCALE = 3.5  # FB support half-width in units of alpha (`spt` never gets here)


# ----------------------------------------------------------------------------------------------
# Pixel grid and function orders
# ----------------------------------------------------------------------------------------------

def _grid(n: int):
    """Integer offsets of an ``n x n`` support: ``x`` [n, 1] (row), ``y`` [1, n] (column)."""
    offsets = np.arange(n, dtype=np.float64) - n // 2
    return offsets[:, None], offsets[None, :]


def _polar_grid(n: int):
    """``(rho, phi)`` of an ``n x n`` support, [n, n]: ``phi = atan2(y, x)``, 0 at the centre."""
    x, y = _grid(n)
    return np.sqrt(x ** 2 + y ** 2), np.arctan2(y, x)


def _rotated_grid(n: int, thetas: np.ndarray):
    """``(x', y', rho)``: ``x' = rho cos(phi + theta)``, ``y' = rho sin(phi + theta)``, [R, n, n].

    Computed through polar coordinates as the original (bit parity at the SL support edge)."""
    rho, phi = _polar_grid(n)
    angle = phi[None] + thetas[:, None, None]
    return rho * np.cos(angle), rho * np.sin(angle), rho


def _square_orders(max_order: int) -> list:
    """``Sq(M)``: all ``(n, m)`` in ``[0, M]^2``, ``m`` outer, ``n`` inner (``f = m*(M+1) + n``)."""
    return [(n, m) for m in range(max_order + 1) for n in range(max_order + 1)]


def _triangular_orders(max_order: int) -> list:
    """``Tri(M)``: ``(n, m)`` with ``n + m <= M``, ``m`` outer, ``n`` inner."""
    return [(n, m) for m in range(max_order + 1) for n in range(max_order + 1 - m)]


def _hermite(t: np.ndarray, degree: int) -> np.ndarray:
    """Probabilists' Hermite ``He_degree(t)`` by numpy's Clenshaw loop, as the original."""
    return hermite_e.hermeval(t, [0] * degree + [1])


def _sturm_liouville(t: np.ndarray, degree: int, spt: float) -> np.ndarray:
    """``sin((n+1) pi t / (2 spt) + (n+1) pi / 2)`` on ``-spt < t < spt``, exactly 0 elsewhere."""
    k = degree + 1
    values = np.sin(k * np.pi * t / (2 * spt) + k * np.pi / 2)
    return np.where((t > -spt) & (t < spt), values, 0.0)


# ----------------------------------------------------------------------------------------------
# Families: (n, thetas [R] or None, scale a, orders, options) -> float64 [R, P, n, n]
# ----------------------------------------------------------------------------------------------

def _hermite_gaussian(n, thetas, a, orders, *, separable, np_dtype=np.float64):
    """Hermite–Gaussian functions at scale ``a`` (docs/bases.md §4.1), ``n`` on rows, ``m`` on
    columns.

    Separable (A, B; no rotation, R = 1): ``g_n(x) g_m(y)`` with
    ``g_n(t) = exp(-t^2/2a^2)/a He_n(t/a)``; as the original, each 1-D factor is cast to
    ``np_dtype`` before the product.
    Rotated (A1, C): ``(1/a^2) He_n(x'/a) He_m(y'/a) exp(-rho^2/2a^2)``.
    """
    if separable:
        t = _grid(n)[0][:, 0]
        gauss = np.exp(-t ** 2 / (2 * a ** 2)) / a
        factors = {d: (gauss * _hermite(t / a, d)).astype(np_dtype)
                   for d in {d for pair in orders for d in pair}}
        rows = np.stack([factors[d] for d, _ in orders])
        cols = np.stack([factors[d] for _, d in orders])
        return (rows[:, :, None] * cols[:, None, :])[None]
    xr, yr, rho = _rotated_grid(n, thetas)
    gauss = np.exp(-rho ** 2 / (2 * a ** 2))
    degrees = {d for pair in orders for d in pair}
    he_x = {d: _hermite(xr / a, d) for d in degrees}
    he_y = {d: _hermite(yr / a, d) for d in degrees}
    return np.stack([1 / a ** 2 * he_x[d_n] * he_y[d_m] * gauss for d_n, d_m in orders], axis=1)


def _sturm_liouville_family(n, thetas, a, orders, *, spt, gaussian):
    """Sturm–Liouville ``(1/a^2) SL_n(x'/a) SL_m(y'/a)`` (docs/bases.md §4.2); H: Gaussian
    factor too."""
    xr, yr, rho = _rotated_grid(n, thetas)
    degrees = {d for pair in orders for d in pair}
    sl_x = {d: _sturm_liouville(xr / a, d, spt) for d in degrees}
    sl_y = {d: _sturm_liouville(yr / a, d, spt) for d in degrees}
    functions = np.stack([1 / a ** 2 * sl_x[d_n] * sl_y[d_m] for d_n, d_m in orders], axis=1)
    if gaussian:
        functions = functions * np.exp(-rho ** 2 / (2 * a ** 2))
    return functions


def _fourier_bessel(n, thetas, alpha, count, *, variant_d, gaussian):
    """The first ``min(n^2 - 1, count)`` Fourier–Bessel functions on ``n x n``
    (docs/bases.md §4.3).

    Pairs ``(k, q)`` with ``j_{k,q+1} <= pi R tff`` sorted by ``j_{k,q}``; ``k = 0`` gives ``P``,
    ``k > 0`` gives ``sqrt2 P cos(k beta)`` then ``sqrt2 P sin(k beta)``, so truncation can split a
    cos/sin pair (as the original). Variant D: ``X = alpha x / R``, no rotation; otherwise
    ``X = x / (3.5 alpha)`` (the model's ``spt`` is not forwarded, as in the original),
    ``1/alpha^2``, ``beta = atan2(Y, X) + theta``. All are divided by the pixel sum of function 0.
    """
    half = (n - 1) // 2
    x, y = _grid(n)
    if variant_d:
        radius = half + 0.5
        gx, gy = alpha * x / radius, alpha * y / radius
    else:
        gx, gy = x / (FB_SUPPORT_SCALE * alpha), y / (FB_SUPPORT_SCALE * alpha)
    r = np.sqrt(gx ** 2 + gy ** 2)
    beta = np.arctan2(gy, gx)[None] + thetas[:, None, None]                 # [R, n, n]
    outside = r >= 1
    orders, zeros = bessel_pairs(fb_bound(half, variant_d))
    wanted = min(n * n - 1, count)
    functions = []
    for k, zero in zip(orders.tolist(), zeros.tolist()):
        if len(functions) >= wanted:
            break
        radial = special.jv(k, zero * r) / np.abs(special.jv(k + 1, zero))
        if not variant_d:
            radial = radial / alpha ** 2
        if gaussian:
            radial = radial * np.exp(-r ** 2 * FB_SUPPORT_SCALE ** 2 / 2)
        radial = np.where(outside, 0.0, radial)
        if k == 0:
            functions.append(np.broadcast_to(radial, beta.shape))
        else:
            functions.append(radial * np.cos(k * beta) * math.sqrt(2))
            functions.append(radial * np.sin(k * beta) * math.sqrt(2))
    functions = np.stack(functions[:wanted], axis=1)                        # [R, P, n, n]
    return functions / functions[0, 0].reshape(-1).sum()


def _gaussian_rings(n, thetas, scale, orders):
    """I1: ``Re(exp(-(rho - n)^2 / 2s^2) e^{i m phi} e^{-i m theta})`` (docs/bases.md §5.9).

    Ring radius ``n`` in pixels (not scaled), angular frequency ``m``. As the original: opposite
    rotation sign to every other type, no ``1/s^2`` factor, and ``phi = 0`` at the centre pixel, so
    slices are not exact rotations of each other.
    """
    rho, phi = _polar_grid(n)
    rings = {radius: np.exp(-(rho - radius) ** 2 / (2 * scale ** 2)) for radius, _ in orders}
    waves = {freq: np.exp(1j * freq * phi) for _, freq in orders}
    turns = {freq: np.exp(-1j * freq * thetas)[:, None, None] for _, freq in orders}
    return np.stack([((rings[radius] * waves[freq])[None] * turns[freq]).real
                     for radius, freq in orders], axis=1)


# ----------------------------------------------------------------------------------------------
# Type table
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _BasisType:
    """How one basis type is assembled.

    family: ``(n, thetas, a, orders, **options) -> [R, P, n, n]``; orders of one inner scale:
    ``"square_eff"`` (Sq(eff-1)), ``"square_M"`` (Sq(max_order)), ``"triangular"``
    (Tri(max_order)), ``"fb_per"`` (an FB count ``(M+1)(M+2)/2``), ``"fb_60"`` (an FB count 60);
    multiscale: inner scales ``s / mult^j``, ``j < ceil(eff^2 / per)``, else only ``s``; rotating:
    uses ``rotations``; full_support: ``n = K`` for every scale (D1); uses: the keyword arguments
    that reach the numbers (the others are ignored).
    """
    family: Callable
    orders: str
    multiscale: bool
    rotating: bool = True
    options: tuple = ()
    full_support: bool = False
    uses: tuple = ()


_TYPES = {
    "A": _BasisType(_hermite_gaussian, "square_eff", False, rotating=False,
                    options=(("separable", True),)),
    "A1": _BasisType(_hermite_gaussian, "square_eff", False, options=(("separable", False),)),
    "B": _BasisType(_hermite_gaussian, "triangular", True, rotating=False,
                    options=(("separable", True),), uses=("mult", "max_order")),
    "C": _BasisType(_hermite_gaussian, "triangular", True, options=(("separable", False),),
                    uses=("mult", "max_order")),
    "D": _BasisType(_fourier_bessel, "fb_per", True, rotating=False,
                    options=(("variant_d", True), ("gaussian", False)),
                    uses=("mult", "max_order")),
    "D1": _BasisType(_fourier_bessel, "fb_60", False, full_support=True,
                     options=(("variant_d", False), ("gaussian", False))),
    "E": _BasisType(_fourier_bessel, "fb_per", True,
                    options=(("variant_d", False), ("gaussian", False)),
                    uses=("mult", "max_order")),
    "F": _BasisType(_fourier_bessel, "fb_per", True,
                    options=(("variant_d", False), ("gaussian", True)),
                    uses=("mult", "max_order")),
    "G": _BasisType(_sturm_liouville_family, "triangular", True, options=(("gaussian", False),),
                    uses=("mult", "max_order", "spt")),
    "G1": _BasisType(_sturm_liouville_family, "square_M", False, options=(("gaussian", False),),
                     uses=("max_order", "spt")),
    "H": _BasisType(_sturm_liouville_family, "triangular", True, options=(("gaussian", True),),
                    uses=("mult", "max_order", "spt")),
    "I1": _BasisType(_gaussian_rings, "square_eff", False),
}
BASIS_TYPES = tuple(_TYPES)


def _per_scale(kind: _BasisType, effective_size: int, max_order: int):
    """``(orders, per)``: orders of one inner scale (FB: a count) and the number of functions."""
    if kind.orders == "square_eff":
        orders = _square_orders(effective_size - 1)
    elif kind.orders == "square_M":
        orders = _square_orders(max_order)
    elif kind.orders == "triangular":
        orders = _triangular_orders(max_order)
    elif kind.orders == "fb_per":
        orders = (max_order + 1) * (max_order + 2) // 2
    else:
        orders = FB_BUFFER_ROWS
    per = orders if isinstance(orders, int) else len(orders)
    return orders, per


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

def _basis_type(basis_type) -> _BasisType:
    if not isinstance(basis_type, str) or basis_type not in _TYPES:
        raise ValueError(f"basis_type: got {basis_type!r}, expected one of "
                         f"{', '.join(BASIS_TYPES)}")
    return _TYPES[basis_type]


def _supports(size: int, scales: tuple, full_support: bool) -> list:
    if full_support:
        return [size] * len(scales)
    largest = max(scales)
    return [int(size * s / largest) // 2 * 2 + 1 for s in scales]


def support_sizes(size, scales, basis_type) -> list:
    """Per-scale support ``n_i = 2 floor(floor(K s_i / s_max) / 2) + 1`` (docs/bases.md §3);
    D1: all ``K``.

    Every basis function of scale ``i`` is zero outside the centred ``n_i x n_i`` box of ``K x K``.
    Raises ValueError if some ``n_i <= 1`` (the original asserts ``n_i > 1``).
    """
    kind = _basis_type(basis_type)
    size = odd_kernel_size("size", size)
    scales = tuple(float_list("scales", scales, positive=True))
    sizes = _supports(size, scales, kind.full_support)
    if min(sizes) <= 1:
        raise ValueError(f"scales: every scale must give a support "
                         f"n_i = 2*floor(floor(K*s_i/max(scales))/2)+1 > 1 pixel at size K={size}; "
                         f"got scales {list(scales)} -> n_i = {sizes}; expected every "
                         f"s_i >= 2*max(scales)/K")
    return sizes


def _fb_offered(n: int, variant_d: bool) -> int:
    """Functions one FB block can give on an ``n x n`` support: ``min(n^2 - 1, available)``."""
    return min(n * n - 1, fb_function_count((n - 1) // 2, variant_d))


def _fb_min_support(count: int, variant_d: bool) -> int:
    """Smallest odd support ``n`` whose FB block offers ``count`` functions."""
    n = 3
    while _fb_offered(n, variant_d) < count:
        n += 2
    return n


def _check_fourier_bessel(basis_type: str, size: int, scales: tuple, supports: list, per: int,
                          inner: int, effective_size: int, max_order: Optional[int]) -> None:
    """The original fills a 60-row buffer block by block; each block must give ``per`` functions."""
    variant_d = basis_type == "D"
    if basis_type == "D1":
        if _fb_offered(size, variant_d) < FB_BUFFER_ROWS:
            raise ValueError(
                f"size: basis type 'D1' needs {FB_BUFFER_ROWS} Fourier-Bessel functions on the "
                f"{size}x{size} kernel, which offers {_fb_offered(size, variant_d)}; expected "
                f"size >= {_fb_min_support(FB_BUFFER_ROWS, variant_d)}")
        return
    if inner * per > FB_BUFFER_ROWS:
        raise ValueError(
            f"effective_size: basis type {basis_type!r} holds at most {FB_BUFFER_ROWS} functions, "
            f"but ceil(effective_size^2 / per) * per = {inner} * {per} = {inner * per} for "
            f"effective_size={effective_size}, max_order={max_order} (per = (M+1)(M+2)/2); "
            f"expected ceil(effective_size^2 / per) * per <= {FB_BUFFER_ROWS} "
            f"(effective_size <= 7 at max_order=4)")
    offered = [_fb_offered(n, variant_d) for n in supports]
    if min(offered) < per:
        raise ValueError(
            f"scales: basis type {basis_type!r} needs {per} Fourier-Bessel functions per support "
            f"(max_order={max_order}), but scales {list(scales)} at size {size} give supports "
            f"n_i = {supports} offering {offered}; expected every n_i >= "
            f"{_fb_min_support(per, variant_d)} (scales closer to max(scales), a larger size or a "
            f"smaller max_order)")


# ----------------------------------------------------------------------------------------------
# Assembly
# ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _raw_basis(basis_type: str, size: int, rotations: tuple, scales: tuple, effective_size: int,
               mult: Optional[float], max_order: Optional[int], spt: Optional[float],
               dtype: torch.dtype) -> torch.Tensor:
    """The basis before normalisation ``[F, T, K, K]`` for canonical arguments (cached: never hand
    this tensor out, copy it)."""
    kind = _TYPES[basis_type]
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    orders, per = _per_scale(kind, effective_size, max_order)
    inner = math.ceil(effective_size ** 2 / per) if kind.multiscale else 1
    num_funcs = min(effective_size ** 2, inner * per)    # G1: (M+1)^2 (25, not 49); D1: <= 60
    options = dict(kind.options)
    if options.get("separable"):
        options["np_dtype"] = np_dtype       # A, B: 1-D factors cast before their product
    if "spt" in kind.uses:
        options["spt"] = spt
    thetas = np.asarray(rotations if kind.rotating else (0.0,), dtype=np.float64)
    num_rot, num_scales = len(thetas), len(scales)
    raw = np.zeros((num_funcs, num_rot, num_scales, size, size), dtype=np_dtype)
    for s, (scale, n) in enumerate(zip(scales, _supports(size, scales, kind.full_support))):
        inner_scales = [scale / mult ** j for j in range(inner)] if kind.multiscale else [scale]
        block = np.concatenate([kind.family(n, thetas, a, orders, **options) for a in inner_scales],
                               axis=1)[:, :num_funcs]                           # [R, F, n, n]
        pad = (size - n) // 2
        raw[:, :, s, pad:pad + n, pad:pad + n] = block.astype(np_dtype).transpose(1, 0, 2, 3)
    return torch.from_numpy(raw.reshape(num_funcs, num_rot * num_scales, size, size))


@functools.lru_cache(maxsize=32)
def _normalized_basis(*canonical_args) -> torch.Tensor:
    """``raw / ||raw[:, 0]||`` in the basis dtype (docs/bases.md §7), cached: never hand this
    tensor out."""
    raw = _raw_basis(*canonical_args)
    return raw / raw.pow(2).sum([2, 3], keepdim=True).sqrt()[:, [0]]


def _canonical_args(basis_type, size, rotations, scales, effective_size, mult, max_order, spt,
                    dtype) -> tuple:
    """Validate every argument; arguments the type ignores become ``()``/None (one cache entry)."""
    kind = _basis_type(basis_type)
    size = odd_kernel_size("size", size)
    effective_size = positive_int("effective_size", effective_size)
    scales = tuple(float_list("scales", scales, positive=True))
    rotations = tuple(float_list("rotations", rotations)) if kind.rotating else ()
    mult = positive_float("mult", mult) if "mult" in kind.uses else None
    max_order = positive_int("max_order", max_order, 0) if "max_order" in kind.uses else None
    spt = positive_float("spt", spt) if "spt" in kind.uses else None
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64 (None: the default "
                        f"dtype), got {dtype}")
    supports = support_sizes(size, scales, basis_type)
    if kind.family is _fourier_bessel:
        _, per = _per_scale(kind, effective_size, max_order)
        inner = math.ceil(effective_size ** 2 / per) if kind.multiscale else 1
        _check_fourier_bessel(basis_type, size, scales, supports, per, inner, effective_size,
                              max_order)
    return basis_type, size, rotations, scales, effective_size, mult, max_order, spt, dtype


def raw_steerable_basis(basis_type, size, rotations, scales, effective_size, mult=1.2, max_order=4,
                        spt=3.5, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The basis before normalisation, ``[F, T, K, K]`` (arguments as :func:`steerable_basis`).

    float32: float64 numpy per (rotation, scale) block cast to float32 (A, B: float32 products of
    float32 1-D factors), zero-padded; float64: never cast.
    """
    return _raw_basis(*_canonical_args(basis_type, size, rotations, scales, effective_size, mult,
                                       max_order, spt, dtype)).clone()


def steerable_basis(basis_type, size, rotations, scales, effective_size, mult=1.2, max_order=4,
                    spt=3.5, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Normalised steerable basis ``[F, T, K, K]`` exactly as the original layer stores it.

    basis_type: one of A, A1, B, C, D, D1, E, F, G, G1, H, I1; size ``K`` (odd); rotations:
    angles in radians (ignored by A, B, D, which give ``T = S``; others ``T = R*S``,
    ``t = r*S + s``); scales: positive, ``s_0`` is the normalisation reference; effective_size
    ``eff`` sets ``F = eff^2``. ``mult`` (inner-scale ratio of B, C, D, E, F, G, H), ``max_order``
    (B, C, D, E, F, G, G1, H) and ``spt`` (G, G1, H only) are ignored by the other types.
    dtype: float32 or float64 (None: torch's default dtype); float32 follows the original's
    precision pipeline (float64 numpy, cast per block, A/B float32 products, float32
    normalisation), float64 never casts (the original run with float64 as default dtype).

    Every function is divided by its norm at ``t = 0`` (rotation ``theta_0``, scale ``s_0``):
    ``basis[f] = raw[f] / ||raw[f, 0]||_2``.

    Reproduces the original's numbers including its quirks: E/F split the (2,1) cos/sin pair of
    the last inner scale and D1 the (7,2) pair when truncating to ``F``; G1 has
    ``min((M+1)^2, eff^2)`` functions (25, not 49, at the paper configuration); ``spt`` does not
    reach D1/E/F; I1 rotates with the opposite sign, has no ``1/s^2`` and is not exactly steerable;
    D reaches values ~1e14 at the paper configuration.
    Where the original crashes (unknown type, even size, empty scales/rotations, a support of
    ``n_i <= 1``; E/F/D with a support offering fewer than ``(M+1)(M+2)/2`` functions, i.e.
    ``n_i < 5`` at ``max_order=4``, or more than 60 functions in all; D1 with ``size < 9``) a
    ValueError names the argument. The basis is built once per argument tuple (cached); every call
    returns a new copy (the layer's buffer may be written in place by ``load_state_dict``).
    """
    return _normalized_basis(*_canonical_args(basis_type, size, rotations, scales, effective_size,
                                              mult, max_order, spt, dtype)).clone()
