"""Bicubic affine warp of 8-bit images about the image centre (the RandomAffine recipe of the original).

Inverse mapping, implemented here in numpy: output pixel ``(x, y)`` (centre at ``(x + 0.5, y + 0.5)``,
``y`` pointing down) is read from the source point

    p = c + R(-angle) (q - c) / scale,    c = (W/2, H/2),

so a positive ``angle`` turns the content counter-clockwise on screen and ``scale < 1`` shrinks it. The
source is sampled with the bicubic convolution kernel ``a = -0.5`` (PIL's ``BICUBIC``) on a 4×4
neighbourhood whose indices are clamped to the image; a source point outside ``[0, W) × [0, H)`` gives
the fill value 0. Results are rounded half up and clipped to ``[0, 255]``. This follows the PIL affine
transform that torchvision's ``RandomAffine(resample=3)`` calls; it is not bit-identical to PIL, whose
bicubic path uses fixed-point arithmetic.
"""
from __future__ import annotations

import numpy as np

BICUBIC_A = -0.5


def cubic_weights(t: np.ndarray) -> np.ndarray:
    """Weights of the 4 taps at offsets ``-1, 0, 1, 2`` for fractional positions ``t`` in [0, 1);
    returns ``t.shape + (4,)``."""
    a = BICUBIC_A
    d = np.stack([1.0 + t, t, 1.0 - t, 2.0 - t], axis=-1)
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return np.where(d <= 1.0, near, far)


def affine_warp(images: np.ndarray, angles_deg: np.ndarray, scales: np.ndarray,
                chunk: int = 2048) -> np.ndarray:
    """Rotate by ``angles_deg[n]`` (counter-clockwise) and scale by ``scales[n]`` about the centre.

    images: uint8 ``[N, H, W]``; angles_deg, scales: ``[N]``. Returns uint8 ``[N, H, W]``, fill 0.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images: expected a uint8 array [N, H, W], got dtype {images.dtype} "
                         f"shape {images.shape}")
    n, h, w = images.shape
    angles_deg = np.broadcast_to(np.asarray(angles_deg, dtype=np.float64), (n,))
    scales = np.broadcast_to(np.asarray(scales, dtype=np.float64), (n,))
    if np.any(scales <= 0):
        raise ValueError(f"scales: expected positive values, got min {scales.min()}")
    out = np.empty_like(images)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        out[start:stop] = _warp_chunk(images[start:stop], angles_deg[start:stop], scales[start:stop])
    return out


def _warp_chunk(images: np.ndarray, angles_deg: np.ndarray, scales: np.ndarray) -> np.ndarray:
    n, h, w = images.shape
    theta = np.deg2rad(angles_deg)[:, None, None]
    inv_scale = (1.0 / scales)[:, None, None]
    cx, cy = w / 2.0, h / 2.0
    qy, qx = np.meshgrid(np.arange(h) + 0.5 - cy, np.arange(w) + 0.5 - cx, indexing="ij")
    cos, sin = np.cos(theta), np.sin(theta)
    # y points down, so a counter-clockwise turn on screen is R = [[cos, sin], [-sin, cos]];
    # its inverse is applied to the output coordinates.
    px = (cos * qx - sin * qy) * inv_scale + cx  # [n, h, w]
    py = (sin * qx + cos * qy) * inv_scale + cy
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    # pixel-centre coordinates -> index space
    ux, uy = px - 0.5, py - 0.5
    x0, y0 = np.floor(ux), np.floor(uy)
    wx, wy = cubic_weights(ux - x0), cubic_weights(uy - y0)  # [n, h, w, 4]
    taps = np.arange(-1, 3)
    xi = np.clip(x0[..., None].astype(np.int64) + taps, 0, w - 1)  # [n, h, w, 4]
    yi = np.clip(y0[..., None].astype(np.int64) + taps, 0, h - 1)
    batch = np.arange(n)[:, None, None, None, None]
    src = images.astype(np.float64)[batch, yi[..., :, None], xi[..., None, :]]  # [n, h, w, 4, 4]
    value = np.einsum("nhwij,nhwi,nhwj->nhw", src, wy, wx)
    value = np.where(inside, np.floor(value + 0.5), 0.0)
    return np.clip(value, 0, 255).astype(np.uint8)
