"""Equivariance of the layers, on every backend (the ``backend`` fixture of tests/conftest.py).

Rotation by 90 degrees is exact on the pixel grid: rotating the input rotates every output slice
spatially and cyclically shifts the rotation axis by R/4 (``docs/layers.md`` §2.5). Translation is
exact away from the borders. Scale equivariance is only approximate (discrete scales, finite support);
its tolerance is documented in ``test_scale_equivariance_approximate``.
"""
import math

import pytest
import torch

import rstfast.nn as rnn
from conftest import exact_dtypes

SCALES = [2.0, 2.5, 3.2, 4.0]   # K = 11 gives supports 5, 7, 9, 11 (E needs >= 5)
# "exactly up to float rounding": float64 maps agree to ~1e-15 of their magnitude.
ROUNDING = {torch.float64: 1e-12, torch.float32: 2e-6}


def rotations(num):
    return [x * 2 * math.pi / num for x in range(num)]


def rot(z):
    """Counter-clockwise quarter turn of the two spatial axes."""
    return torch.rot90(z, 1, dims=(-2, -1))


def shift(z, num_rotations, steps):
    """Cyclic shift of the rotation axis of ``[B, C, R*S, H, W]``: ``out[r] = z[r + steps]``."""
    b, c, t, h, w = z.shape
    z = z.reshape(b, c, num_rotations, t // num_rotations, h, w)
    return torch.roll(z, -steps, dims=2).reshape(b, c, t, h, w)


def max_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def make_layers(basis_type, num_rotations, rotation_size, scale_size, dtype, kernel_size=11,
                backend="reference"):
    kw = dict(kernel_size=kernel_size, effective_size=5, scales=SCALES,
              rotations=rotations(num_rotations), padding=kernel_size // 2, bias=True,
              basis_type=basis_type, mult=1.5, max_order=4, backend=backend)
    lift = rnn.LiftingConv(2, 3, **kw).to(dtype)
    group = rnn.GroupConv(3, 2, scale_size, rotation_size, **kw).to(dtype)
    for layer in (lift, group):
        with torch.no_grad():
            layer.bias.uniform_(-1, 1)
    return lift, group


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("basis_type,num_rotations,rotation_size,scale_size", [
    ("E", 4, 1, 1), ("E", 4, 2, 2), ("E", 8, 4, 1), ("G", 8, 8, 2), ("C", 4, 4, 1),
    ("A1", 8, 2, 1),
])
def test_rotation_equivariance_90_degrees(basis_type, num_rotations, rotation_size, scale_size,
                                          dtype, backend):
    if dtype not in exact_dtypes(backend):
        pytest.skip(f"{backend} does not compute {dtype}")
    lift, group = make_layers(basis_type, num_rotations, rotation_size, scale_size, dtype,
                              backend=backend)
    quarter = num_rotations // 4
    x = torch.randn(2, 2, 17, 17, dtype=dtype)
    with torch.no_grad():
        y = lift(x)
        assert max_err(lift(rot(x)), rot(shift(y, num_rotations, quarter))) < ROUNDING[dtype]
        z = group(y)
        z_rot = group(rot(shift(y, num_rotations, quarter)))
        assert max_err(z_rot, rot(shift(z, num_rotations, quarter))) < ROUNDING[dtype]


def test_rotation_equivariance_fails_for_wrong_shift():
    """The test above can fail: shifting the wrong way gives an O(1) error."""
    lift, _ = make_layers("E", 8, 1, 1, torch.float64)
    x = torch.randn(1, 2, 17, 17, dtype=torch.float64)
    with torch.no_grad():
        assert max_err(lift(rot(x)), rot(shift(lift(x), 8, -2))) > 1e-2


@pytest.mark.parametrize("dy,dx", [(2, 3), (-4, 1)])
def test_translation_equivariance(dy, dx, backend):
    dtype = exact_dtypes(backend)[-1]
    lift, group = make_layers("E", 4, 2, 2, dtype, backend=backend)
    x = torch.zeros(1, 2, 40, 40, dtype=dtype)
    x[..., 14:26, 14:26] = torch.randn(1, 2, 12, 12, dtype=dtype)
    moved = torch.roll(x, (dy, dx), dims=(-2, -1))
    with torch.no_grad():
        out = group(torch.relu(lift(x)))
        out_moved = group(torch.relu(lift(moved)))
    # Content plus two filter radii stays inside the canvas, so rolling is an exact translation
    # up to the constant bias field, which is itself translation invariant away from the borders.
    inner = (slice(None), slice(None), slice(None), slice(10, 30), slice(10, 30))
    shifted = torch.roll(out, (dy, dx), dims=(-2, -1))
    assert max_err(out_moved[inner], shifted[inner]) < ROUNDING[dtype]


def _blobs(size, step, dtype=torch.float64):
    """Smooth analytic image sampled with pixel pitch ``step`` on a canvas of ``size`` pixels."""
    coords = (torch.arange(size, dtype=dtype) - (size - 1) / 2) * step
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    image = torch.exp(-((yy - 2) ** 2 + (xx + 3) ** 2) / (2 * 4.0 ** 2))
    image = image - 0.7 * torch.exp(-((yy + 4) ** 2 + (xx - 2) ** 2) / (2 * 3.0 ** 2))
    return image[None, None]


def test_scale_equivariance_approximate():
    """Doubling the image resolution moves the response from scale s to scale 2s.

    With scales [1.5, 3.0] the (1/a^2-weighted, normalised-by-smallest-scale) filters satisfy
    psi_3(u) = psi_1.5(u/2) / 4, so the fine-grid response at scale 3.0 and pixel 2p equals the
    coarse-grid response at scale 1.5 and pixel p up to sampling and truncation error. Measured
    relative error: 3.1e-3 (A1, eff 3, K 21, smooth input of width ~4 coarse pixels). Tolerance: 1e-2;
    a wrong scale axis or index order gives an O(1) error.
    """
    layer = rnn.LiftingConv(1, 2, kernel_size=21, effective_size=3, scales=[1.5, 3.0],
                            rotations=[0.0], padding=10, basis_type="A1",
                            backend="reference").double()
    coarse, fine = _blobs(31, 1.0), _blobs(61, 0.5)   # fine pixel 2p sits on coarse pixel p
    with torch.no_grad():
        y_coarse = layer(coarse)[:, :, 0]          # scale 1.5 on the coarse grid
        y_fine = layer(fine)[:, :, 1, ::2, ::2]     # scale 3.0 on the fine grid, every 2nd pixel
    centre = (slice(None), slice(None), slice(8, 23), slice(8, 23))
    err = max_err(y_fine[centre], y_coarse[centre])
    assert err < 1e-2, err
    swapped = layer(fine)[:, :, 0, ::2, ::2]
    assert max_err(swapped[centre], y_coarse[centre]) > 1e-1
