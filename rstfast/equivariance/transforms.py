"""Similarity transforms of images and feature maps, the group-axis shift, and the error metric.

Geometry (the convention of ``docs/layers.md`` §2.5 and of :func:`rstfast.data.affine_warp`): a map
``[..., H, W]`` is drawn with row 0 on top; its centre is the pixel-edge point ``(H/2, W/2)``. A
:class:`Transform` rotates the content by ``angle`` degrees counter-clockwise (90 degrees is
``torch.rot90(z, 1, dims=(-2, -1))``), zooms it by ``scale`` (> 1 enlarges) about the centre and then
moves it by ``shift = (dy, dx)`` pixels (down, right).

Group maps ``[B, C, R*S, H, W]`` (``t = r*S + s``, rotation-major) are also shifted along the group
axis: ``out[r, s] = z[(r + k) mod R, s - m]``, with ``k`` rotation slots and ``m`` scale slots. A
counter-clockwise turn by ``k * 360/R`` degrees moves the response of slot ``r + k`` to slot ``r``
(``lift(rot(x)) = rot(shift(lift(x)))``); zooming in by ``ratio**m`` (``ratio`` = the ratio between
neighbouring scales) moves the response of scale ``s`` to scale ``s + m``. Slots that have no source
(``s - m`` outside ``0..S-1``) are zero and excluded from comparisons (:func:`scale_slots`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["Transform", "Group", "transform_map", "scale_slots", "disc_mask", "valid_region",
           "relative_error", "MODES"]

MODES = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class Transform:
    """Rotate by ``angle`` degrees (counter-clockwise; not radians, unlike the layers'
    ``rotations``), zoom by ``scale``, then translate by ``shift = (dy, dx)`` pixels of the input
    image."""
    angle: float = 0.0
    scale: float = 1.0
    shift: Tuple[int, int] = (0, 0)

    def __post_init__(self):
        if not (isinstance(self.scale, (int, float)) and self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"scale: expected a positive finite float, got {self.scale!r}")
        if not math.isfinite(self.angle):
            raise ValueError(f"angle: expected a finite float (degrees), got {self.angle!r}")
        if len(self.shift) != 2 or any(int(d) != d for d in self.shift):
            raise ValueError(f"shift: expected two ints (dy, dx), got {self.shift!r}")
        object.__setattr__(self, "angle", float(self.angle))
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "shift", (int(self.shift[0]), int(self.shift[1])))

    @property
    def kind(self) -> str:
        """'identity', 'rotation', 'scale', 'translation' or 'mixed'."""
        moved = [self.angle % 360 != 0, self.scale != 1, self.shift != (0, 0)]
        if sum(moved) > 1:
            return "mixed"
        names = ("rotation", "scale", "translation")
        return next((n for n, m in zip(names, moved) if m), "identity")

    @property
    def label(self) -> str:
        parts = []
        if self.angle % 360 != 0:
            parts.append(f"rot {self.angle:g}")
        if self.scale != 1:
            parts.append(f"zoom x{self.scale:.4g}")
        if self.shift != (0, 0):
            parts.append(f"shift {self.shift[0]:+d},{self.shift[1]:+d}")
        return ", ".join(parts) or "identity"

    def is_grid_exact(self, pixel_ratio: float = 1.0) -> bool:
        """True when the spatial part is exact on the pixel grid: a multiple of 90 degrees, no zoom
        and a translation by whole pixels of the map (``shift * pixel_ratio`` integer)."""
        return (self.angle % 90 == 0 and self.scale == 1
                and all(float(d * pixel_ratio).is_integer() for d in self.shift))

    def as_dict(self) -> dict:
        return {"angle": self.angle, "scale": self.scale, "shift": list(self.shift)}


@dataclass(frozen=True)
class Group:
    """The group axis of a map: ``R`` rotations, ``S`` scales, ``scale_ratio`` between neighbouring
    scales (geometric mean; 1.0 for one scale) and ``rotation_sign``: +1 when slot ``r`` holds
    the filters turned by ``+r*360/R`` (every basis type but I1), -1 for I1, whose slots turn the
    other way (``docs/bases.md`` §5.9)."""
    num_rotations: int
    num_scales: int
    scale_ratio: float = 1.0
    rotation_sign: int = 1

    @classmethod
    def of_layer(cls, layer) -> "Group":
        """From an rstfast layer's ``num_rotations``, ``num_scales``, ``scales`` and
        ``basis_type`` (a ``from_basis`` layer built without ``scales``: no scale shift is known,
        ratio 1)."""
        scales = layer.scales or [1.0]
        ratio = (scales[-1] / scales[0]) ** (1 / (len(scales) - 1)) if len(scales) > 1 else 1.0
        return cls(layer.num_rotations, layer.num_scales, ratio,
                   -1 if layer.basis_type == "I1" else 1)

    def slots(self, transform: Transform) -> Tuple[int, int]:
        """``(k, m)``: the nearest slot shifts for ``transform`` — ``k = rotation_sign *
        round(angle / (360/R))`` mod R and ``m = round(log(scale) / log(ratio))`` (halves round
        up; ``m = 0`` for S = 1)."""
        steps = math.floor(transform.angle / (360 / self.num_rotations) + 0.5)
        k = (self.rotation_sign * steps) % self.num_rotations
        m = 0
        if self.num_scales > 1 and self.scale_ratio != 1:
            m = math.floor(math.log(transform.scale) / math.log(self.scale_ratio) + 0.5)
        return k, m

    def as_dict(self) -> dict:
        return {"rotations": self.num_rotations, "scales": self.num_scales,
                "scale_ratio": self.scale_ratio, "rotation_sign": self.rotation_sign}


def scale_slots(num_scales: int, m: int) -> range:
    """Scale indices of a group map shifted by ``m`` scale slots that have a source."""
    return range(max(0, m), min(num_scales, num_scales + m))


def _warp(z: torch.Tensor, transform: Transform, pixel_ratio: float, mode: str,
          fill: float) -> torch.Tensor:
    """Spatial part of ``transform`` on ``z [..., H, W]``; exact (rot90 + roll) when the grid allows
    it, else ``grid_sample`` (``mode``, values outside the map = ``fill``)."""
    dy, dx = (d * pixel_ratio for d in transform.shift)
    if transform.is_grid_exact(pixel_ratio):
        z = torch.rot90(z, int(transform.angle // 90) % 4, dims=(-2, -1))
        return torch.roll(z, (int(dy), int(dx)), dims=(-2, -1)) if (dy, dx) != (0, 0) else z
    h, w = z.shape[-2:]
    flat = z.reshape(1, -1, h, w)                  # one grid for every channel and slot
    dtype = z.dtype
    theta = math.radians(transform.angle)
    cos, sin = math.cos(theta), math.sin(theta)
    # Output pixel centre q (x right, y down, from the centre) reads the source point
    # p = R(-angle) (q - shift) / scale; R(angle) turns counter-clockwise on screen (y down).
    qy = torch.arange(h, dtype=dtype, device=z.device) + 0.5 - h / 2 - dy
    qx = torch.arange(w, dtype=dtype, device=z.device) + 0.5 - w / 2 - dx
    qy, qx = torch.meshgrid(qy, qx, indexing="ij")
    px = (cos * qx - sin * qy) / transform.scale
    py = (sin * qx + cos * qy) / transform.scale
    grid = torch.stack([px / (w / 2), py / (h / 2)], dim=-1)[None]  # align_corners=False units
    out = F.grid_sample(flat - fill, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return (out + fill).reshape(z.shape)


def transform_map(z: torch.Tensor, transform: Transform, group: Optional[Group] = None,
                  slots: Optional[Tuple[int, int]] = None, pixel_ratio: float = 1.0,
                  mode: str = "bicubic", fill: float = 0.0) -> torch.Tensor:
    """Transform an image or feature map and, for a group map, shift its group axis.

    ``z``: ``[..., H, W]``; with ``group`` it must be ``[B, C, R*S, H, W]`` (``t = r*S + s``) and
    ``out[:, :, r*S + s] = warp(z[:, :, ((r + k) % R)*S + s - m])`` (zero where ``s - m`` is not a
    scale), ``(k, m) = slots`` or ``group.slots(transform)``. ``pixel_ratio`` = this map's pixels
    per input pixel (converts ``transform.shift``). Multiples of 90 degrees without zoom and whole
    pixel shifts are exact; everything else is interpolated with ``mode`` (``grid_sample``), and
    points that come from outside the map get ``fill``.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if z.dim() < 2:
        raise ValueError(f"z: expected a map [..., H, W], got shape {tuple(z.shape)}")
    out = _warp(z, transform, pixel_ratio, mode, fill)
    if group is None:
        return out
    b, c, t, h, w = _group_shape(out, group)
    k, m = group.slots(transform) if slots is None else slots
    out = torch.roll(out.reshape(b, c, group.num_rotations, group.num_scales, h, w), -k, dims=2)
    if m:
        out = torch.roll(out, m, dims=3)
        dead = [s for s in range(group.num_scales) if s not in scale_slots(group.num_scales, m)]
        out[:, :, :, dead] = 0
    return out.reshape(b, c, t, h, w)


def _group_shape(z: torch.Tensor, group: Group):
    if z.dim() != 5 or z.shape[2] != group.num_rotations * group.num_scales:
        raise ValueError(f"z: expected a group map [B, C, R*S = {group.num_rotations}*"
                         f"{group.num_scales}, H, W], got shape {tuple(z.shape)}")
    return z.shape


def disc_mask(h: int, w: int, radius: float, centre: Tuple[float, float] = (0.0, 0.0),
              device=None) -> torch.Tensor:
    """``[H, W]`` bool: pixel centres within ``radius`` pixels of the map centre moved by
    ``centre = (dy, dx)``; at least the pixels nearest to that point (a tiny map keeps one)."""
    y = torch.arange(h, dtype=torch.float64, device=device) + 0.5 - h / 2 - centre[0]
    x = torch.arange(w, dtype=torch.float64, device=device) + 0.5 - w / 2 - centre[1]
    dist = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    return dist <= max(radius, float(dist.min()) + 1e-9)


def valid_region(h: int, w: int, transform: Transform, pixel_ratio: float = 1.0,
                 region: float = 0.5, device=None) -> torch.Tensor:
    """``[H, W]`` bool: the compared pixels ``M = D ∩ T(D)``, where ``D`` is the centred disc of
    radius ``region * min(H, W) / 2`` and ``T(D)`` its image under ``transform`` (radius times
    ``scale``, centre moved by ``shift * pixel_ratio``): points that lie inside the disc both
    before and after the transform, so neither map reads content from outside it."""
    radius = region * min(h, w) / 2
    moved = tuple(d * pixel_ratio for d in transform.shift)
    return (disc_mask(h, w, radius, device=device)
            & disc_mask(h, w, radius * transform.scale, moved, device=device))


def relative_error(actual: torch.Tensor, expected: torch.Tensor,
                   mask: Optional[torch.Tensor] = None) -> float:
    """``||actual - expected||_M / ||expected||_M`` (L2 over the batch, computed in float64);
    ``mask`` broadcasts against the tensors and selects M (all entries when None). 0/0 -> 0."""
    diff = (actual.double() - expected.double()) ** 2
    ref = expected.double() ** 2
    if mask is not None:
        diff, ref = diff * mask, ref * mask
    num, den = diff.sum().sqrt().item(), ref.sum().sqrt().item()
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)
