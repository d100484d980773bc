"""Per-layer equivariance error of rstfast layers and models, prediction stability, basis comparison.

The error of a probed layer ``f_l`` under a transform ``T`` is

    err_l(T) = ||f_l(T x) - T' f_l(x)||_M / ||T' f_l(x)||_M

(L2 over the whole batch, computed in float64), where ``T'`` is ``T`` applied to the layer's own
pixel grid plus the group-axis shift of :func:`~rstfast.equivariance.transforms.transform_map` for
group maps (nearest slots, see :meth:`Group.slots`), and ``M`` is
:func:`~rstfast.equivariance.transforms.valid_region` (a centred disc of ``region`` times the
half-size of the map, intersected with its image under ``T``) times the group slots that have a
source. For transforms that permute pixels and slots (multiples of 90 degrees, whole-pixel shifts)
``||T' f(x)||_M = ||f(x)||_M``. Outputs without space (logits ``[B, classes]``) are compared
directly: ``||f(T x) - f(x)|| / ||f(x)||`` (invariance), plus the fraction of equal argmax.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import nn as rnn
from ..reference.bases import BASIS_TYPES
from .transforms import (MODES, Group, Transform, relative_error, scale_slots, transform_map,
                         valid_region)

__all__ = ["Measurement", "measure", "default_transforms", "DEFAULT_SHIFTS", "smooth_inputs", "probed_layers",
           "prediction_stability", "STABILITY_TRANSFORMS", "DEGENERATE_SHARE", "compare_bases",
           "basis_test_net", "NO_ROTATION_BASES"]

_RSTFAST_LAYERS = (rnn.LiftingConv, rnn.GroupConv, rnn.GroupConv1x1, rnn.GroupMaxProjection)
PAPER_SCALES = (1.7, 2.45, 3.54, 5.1)
PAPER_RATIO = 3.0 ** (1 / 3)          # factor 3 over 4 scales (models.md §2)


def probed_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of every rstfast layer and every ``nn.Conv2d`` in ``model`` (the
    model itself when it is one), in registration order."""
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, _RSTFAST_LAYERS) or isinstance(m, nn.Conv2d)]
    return [(name or type(m).__name__, m) for name, m in found]


def _groups(model: nn.Module) -> List[Group]:
    return [Group.of_layer(m) for m in model.modules()
            if isinstance(m, (rnn.LiftingConv, rnn.GroupConv))]


DEFAULT_SHIFTS = ((4, 0), (0, -4), (2, 2), (1, -3))


def default_transforms(model: nn.Module, shifts: Sequence[Tuple[int, int]] = DEFAULT_SHIFTS
                       ) -> List[Transform]:
    """Rotations every 15 degrees and at every slot ``360/R`` in [0, 360) (0 = the identity,
    a sanity row), zooms ``ratio**(k/4)``
    for ``k = -6, -4, ..., 6`` (half-slot steps up to 1.5 slots; ``ratio`` of the first
    multi-scale layer, else 3**(1/3)), and ``shifts`` (input pixels; whole pixels of a map only
    where they divide by its downsampling)."""
    groups = _groups(model)
    angles = {15.0 * i for i in range(24)}
    for g in groups:
        angles |= {360 / g.num_rotations * i for i in range(g.num_rotations)}
    ratio = next((g.scale_ratio for g in groups if g.num_scales > 1), PAPER_RATIO)
    return ([Transform(angle=a) for a in sorted(angles)]
            + [Transform(scale=ratio ** (k / 4)) for k in range(-6, 7, 2) if k]
            + [Transform(shift=s) for s in shifts])


def smooth_inputs(shape: Sequence[int], batch_size: int = 4, seed: int = 0, sigma: float = 1.5,
                  radius: float = 0.25, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """``[batch_size, C, H, W]`` test images: white noise blurred by a Gaussian of ``sigma``
    pixels, windowed by a disc of radius ``radius * min(H, W)`` with a cosine edge ``2 sigma``
    wide (zero outside, like an MNIST digit on its background: a 28-pixel image keeps a margin
    of 4 pixels), unit RMS. Seeded."""
    c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch_size * c, 1, h, w, generator=gen, dtype=torch.float64)
    half = int(math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-half, half + 1, dtype=torch.float64) / sigma) ** 2)
    taps = taps / taps.sum()
    blurred = F.conv2d(F.conv2d(noise, taps.view(1, 1, -1, 1), padding=(half, 0)),
                       taps.view(1, 1, 1, -1), padding=(0, half))
    y = torch.arange(h, dtype=torch.float64) + 0.5 - h / 2
    x = torch.arange(w, dtype=torch.float64) + 0.5 - w / 2
    dist = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    inner, edge = radius * min(h, w), 2 * sigma
    window = torch.cos(0.5 * math.pi * ((dist - inner) / edge).clamp(0, 1)) ** 2
    images = (blurred[:, 0] * window).reshape(batch_size, c, h, w)
    images = images / images.pow(2).mean().sqrt()
    return images.to(dtype=dtype, device=device)


@dataclass
class Measurement:
    """Errors of every probed layer (and the model output) for every transform.

    ``layers``: ``[{"name", "type", "shape", "group"}]`` in execution order (``"output"`` last
    when the model is not itself a layer); ``results``: one entry per transform, ``{"transform",
    "label", "kind", "exact_input", "errors": {layer: {"error", "slots", "best_slots",
    "best_error", "pixels"}}}`` (``"agreement"`` instead of slots for outputs without space).
    """
    model: str
    input_shape: Tuple[int, ...]
    dtype: str
    region: float
    mode: str
    layers: List[dict] = field(default_factory=list)
    results: List[dict] = field(default_factory=list)

    def names(self) -> List[str]:
        return [layer["name"] for layer in self.layers]

    def sweep(self, kind: str, layer: str) -> Tuple[List[float], List[float]]:
        """``(values, errors)`` of ``layer`` over the transforms of ``kind`` ('rotation' ->
        angles, 'scale' -> zoom factors, 'translation' -> shift lengths); transforms without
        compared pixels are left out."""
        key = {"rotation": lambda t: t["angle"], "scale": lambda t: t["scale"],
               "translation": lambda t: math.hypot(*t["shift"])}[kind]
        rows = [r for r in self.results
                if r["kind"] == kind and r["errors"][layer]["error"] is not None]
        return ([key(r["transform"]) for r in rows], [r["errors"][layer]["error"] for r in rows])

    def error(self, layer: str, transform: Transform) -> float:
        for r in self.results:
            if r["transform"] == transform.as_dict():
                return r["errors"][layer]["error"]
        raise KeyError(f"transform: {transform.label!r} was not measured; measured: "
                       f"{[r['label'] for r in self.results]}")

    @classmethod
    def from_dict(cls, data: dict) -> "Measurement":
        """Inverse of :meth:`as_dict` (e.g. to re-plot a saved JSON)."""
        return cls(data["model"], tuple(data["input_shape"]), data["dtype"], data["region"],
                   data["mode"], data["layers"], data["results"])

    def as_dict(self) -> dict:
        return {"model": self.model, "input_shape": list(self.input_shape), "dtype": self.dtype,
                "region": self.region, "mode": self.mode, "definition": __doc__.split("\n\n")[1],
                "layers": self.layers, "results": self.results}


class _Recorder:
    """Forward hooks that keep each probed layer's output and its group, in execution order (a
    layer called again is recorded as ``name#2``, ...). The group of a 5-D output is that of the
    layer itself or, for GroupConv1x1, of the last LiftingConv / GroupConv that ran."""

    def __init__(self, layers: Sequence[Tuple[str, nn.Module]]):
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in layers]
        self.run_start()

    def run_start(self):
        self.outputs: Dict[str, torch.Tensor] = {}
        self.groups: Dict[str, Optional[Group]] = {}
        self._calls: Dict[str, int] = {}
        self._current: Optional[Group] = None

    def _hook(self, name):
        def hook(module, args, output):
            if isinstance(module, (rnn.LiftingConv, rnn.GroupConv)):
                self._current = Group.of_layer(module)
            self._calls[name] = self._calls.get(name, 0) + 1
            key = name if self._calls[name] == 1 else f"{name}#{self._calls[name]}"
            self.outputs[key] = output.detach()
            self.groups[key] = self._current if output.dim() == 5 else None
        return hook

    def run(self, model: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Probed outputs of ``model(x)``, plus ``"output"`` (the model's result) unless that is
        the last probed output itself."""
        self.run_start()
        out = model(x)
        last = next(reversed(self.outputs.values()), None)
        if isinstance(out, torch.Tensor) and not (
                last is not None and last.data_ptr() == out.data_ptr() and last.shape == out.shape):
            self.outputs["output"] = out.detach()
            self.groups["output"] = self._current if out.dim() == 5 else None
        return self.outputs

    def close(self):
        for h in self._handles:
            h.remove()


def _compare(actual: torch.Tensor, reference: torch.Tensor, group: Optional[Group],
             transform: Transform, pixel_ratio: float, region: float, mode: str) -> dict:
    """Error entry of one output (see :class:`Measurement`)."""
    if reference.dim() < 4:                      # no space: invariance
        same = (actual.argmax(-1) == reference.argmax(-1)).double().mean().item() if reference.dim() == 2 else None
        return {"error": relative_error(actual, reference), "agreement": same}
    h, w = reference.shape[-2:]
    spatial = valid_region(h, w, transform, pixel_ratio, region, device=reference.device)
    warped = transform_map(reference, transform, pixel_ratio=pixel_ratio, mode=mode)
    entry = {"pixels": int(spatial.sum())}
    if not entry["pixels"]:
        return {**entry, "error": None, "slots": None}
    if group is None:
        entry.update(error=relative_error(actual, warped, spatial), slots=None)
        return entry
    nearest = group.slots(transform)
    candidates = {nearest}
    if transform.kind == "rotation":
        candidates |= {(k, nearest[1]) for k in range(group.num_rotations)}
    elif transform.kind == "scale":
        candidates |= {(nearest[0], m) for m in range(1 - group.num_scales, group.num_scales)}
    errors = {}
    for k, m in sorted(candidates):
        expected = transform_map(warped, Transform(), group, slots=(k, m))
        slot_mask = torch.zeros(group.num_rotations, group.num_scales, dtype=torch.bool,
                                device=reference.device)
        slot_mask[:, list(scale_slots(group.num_scales, m))] = True
        mask = slot_mask.reshape(-1, 1, 1) & spatial
        errors[(k, m)] = relative_error(actual, expected, mask)
    best = min(errors, key=errors.get)
    entry.update(error=errors[nearest], slots=list(nearest), best_slots=list(best),
                 best_error=errors[best])
    return entry


@torch.no_grad()
def measure(model: nn.Module, inputs: Optional[torch.Tensor] = None,
            transforms: Optional[Sequence[Transform]] = None, *,
            input_shape: Optional[Sequence[int]] = None, batch_size: int = 4, seed: int = 0,
            region: float = 0.5, mode: str = "bicubic", fill: float = 0.0,
            name: Optional[str] = None) -> Measurement:
    """Equivariance error of every probed layer of ``model`` (see the module docstring).

    model: an rstfast layer, a zoo model or any ``nn.Module`` containing rstfast layers (probed:
    :func:`probed_layers`), evaluated in eval mode (its mode is restored afterwards).
    inputs: ``[B, C, H, W]`` (LiftingConv / models) or ``[B, C, R*S, H, W]`` (a GroupConv on its
    own), on the model's device and dtype; None -> :func:`smooth_inputs` of ``input_shape``
    (``(C, H, W)``; for a bare layer default ``(in_channels[, R*S], 2K+2, 2K+2)``).
    transforms: default :func:`default_transforms`. The input is transformed with
    :func:`transform_map` (its group axis shifted too when it is a group map), points from
    outside the image get ``fill``. region: radius of the compared disc as a fraction of each
    map's half-size. mode: interpolation of non-grid transforms (``grid_sample``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if not 0 < region <= 1:
        raise ValueError(f"region: expected a fraction in (0, 1], got {region!r}")
    layers = probed_layers(model)
    if not layers:
        raise ValueError(f"model: {type(model).__name__} has no rstfast layer and no nn.Conv2d "
                         f"to probe")
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float64
    device = param.device if param is not None else torch.device("cpu")
    if inputs is None:
        inputs = smooth_inputs(_default_input_shape(model, input_shape), batch_size, seed,
                               dtype=dtype, device=device)
    elif not isinstance(inputs, torch.Tensor) or inputs.dim() not in (4, 5):
        raise ValueError(f"inputs: expected a tensor [B, C, H, W] or [B, C, R*S, H, W], got "
                         f"{getattr(inputs, 'shape', type(inputs).__name__)}")
    input_group = Group.of_layer(model) if isinstance(model, rnn.GroupConv) else None
    if inputs.dim() == 5 and input_group is None:
        raise ValueError("inputs: a group map [B, C, R*S, H, W] is only accepted by a GroupConv "
                         "measured on its own; pass images [B, C, H, W]")
    transforms = list(default_transforms(model) if transforms is None else transforms)
    types = dict(layers)
    recorder = _Recorder(layers)
    was_training = model.training
    model.eval()
    try:
        base = dict(recorder.run(model, inputs))
        groups = dict(recorder.groups)
        result = Measurement(name or type(model).__name__, tuple(inputs.shape[1:]),
                             str(dtype).replace("torch.", ""), region, mode)
        result.layers = [{"name": n, "type": type(types[n.split("#")[0]]).__name__
                          if n != "output" else "output", "shape": list(y.shape[1:]),
                          "group": groups[n].as_dict() if groups[n] else None}
                         for n, y in base.items()]
        for t in transforms:
            outputs = recorder.run(model, transform_map(inputs, t, input_group, mode=mode, fill=fill))
            errors = {n: _compare(outputs[n], y, groups[n], t, _pixel_ratio(y, inputs), region, mode)
                      for n, y in base.items()}
            result.results.append({"transform": t.as_dict(), "label": t.label, "kind": t.kind,
                                   "exact_input": t.is_grid_exact(), "errors": errors})
    finally:
        recorder.close()
        model.train(was_training)
    return result


def _pixel_ratio(y: torch.Tensor, x: torch.Tensor) -> float:
    """Pixels of map ``y`` per pixel of the input ``x`` (1 for outputs without space)."""
    return y.shape[-1] / x.shape[-1] if y.dim() >= 4 else 1.0


def _default_input_shape(model: nn.Module, input_shape) -> Tuple[int, ...]:
    if input_shape is not None:
        shape = tuple(int(v) for v in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape: expected (C, H, W) with positive ints, got "
                             f"{input_shape!r}")
        return shape
    if isinstance(model, rnn.LiftingConv):
        size = 2 * model.kernel_size + 2
        return (model.in_channels, size, size)
    if isinstance(model, rnn.GroupConv):
        raise ValueError(f"inputs: a GroupConv measured on its own needs group-map inputs "
                         f"[B, {model.in_channels}, {model.group_size}, H, W]")
    raise ValueError(f"input_shape: required for a {type(model).__name__} without inputs; "
                     f"expected (C, H, W)")


# --------------------------------------------------------------------------- stability

STABILITY_TRANSFORMS = (Transform(angle=90), Transform(angle=180), Transform(angle=45),
                        Transform(angle=30), Transform(scale=0.7), Transform(scale=1.3))
# A model whose most frequent prediction covers at least this share of the images is flagged:
# predicting (almost) one class, it is "stable" under any transform, which says nothing.
DEGENERATE_SHARE = 0.9


@torch.no_grad()
def prediction_stability(model: nn.Module, images: torch.Tensor,
                         labels: Optional[torch.Tensor] = None,
                         transforms: Sequence[Transform] = STABILITY_TRANSFORMS, *,
                         batch_size: int = 256, mode: str = "bicubic", fill: float = 0.0) -> dict:
    """Fraction of ``images`` whose predicted class (argmax of the logits) is unchanged by each
    transform.

    images: ``[N, C, H, W]`` as the model takes them (normalised); transformed with
    :func:`transform_map` (``fill`` = the background value outside the image, e.g.
    ``-MEAN/STD`` for normalised MNIST). labels ``[N]`` (optional) add the accuracy before and
    after. Eval mode; the model's mode is restored. Returns ``{"num_images", "accuracy",
    "top_class_share", "degenerate", "transforms": [{"transform", "label", "stable",
    "accuracy"}]}``: ``top_class_share`` is the share of the most frequent predicted class on the
    untransformed images, ``degenerate`` whether it is at least :data:`DEGENERATE_SHARE` (a model
    that predicts one class is stable under every transform: read its stability with its
    accuracy).
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images: expected a tensor [N, C, H, W], got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if labels is not None and (labels.dim() != 1 or len(labels) != len(images)):
        raise ValueError(f"labels: expected a tensor [N = {len(images)}], got shape {tuple(labels.shape)}")
    param = next(model.parameters(), None)
    if param is not None:
        images = images.to(device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        def predict(x):
            return torch.cat([model(chunk).argmax(-1) for chunk in x.split(batch_size)]).cpu()
        base = predict(images)
        accuracy = lambda p: None if labels is None else (p == labels.cpu()).double().mean().item()
        rows = []
        for t in transforms:
            pred = predict(transform_map(images, t, mode=mode, fill=fill))
            rows.append({"transform": t.as_dict(), "label": t.label,
                         "stable": (pred == base).double().mean().item(), "accuracy": accuracy(pred)})
    finally:
        model.train(was_training)
    share = torch.bincount(base).max().item() / len(base) if len(base) else 0.0
    return {"num_images": len(images), "accuracy": accuracy(base), "top_class_share": share,
            "degenerate": share >= DEGENERATE_SHARE, "transforms": rows}


# --------------------------------------------------------------------------- bases

NO_ROTATION_BASES = ("A", "B", "D")      # built without rotations: rotations=[0.0]


def basis_test_net(basis_type: str, *, kernel_size: int = 15, effective_size: int = 7,
                   scales: Sequence[float] = PAPER_SCALES, num_rotations: int = 8,
                   rotation_size: int = 1, scale_size: int = 1, channels: int = 4,
                   mult: float = 1.5, max_order: int = 4, backend: str = "reference",
                   seed: int = 0) -> nn.Sequential:
    """``LiftingConv(1 -> channels) -> ReLU -> GroupConv(channels -> channels)`` with basis
    ``basis_type``, padding K//2, ``rotations = [i*2pi/R]`` (``[0.0]`` and rotation_size 1 for
    A, B, D, which take no rotations); weights drawn with ``torch.manual_seed(seed)``."""
    if basis_type not in BASIS_TYPES:
        raise ValueError(f"basis_type: expected one of {BASIS_TYPES}, got {basis_type!r}")
    if basis_type in NO_ROTATION_BASES:
        num_rotations, rotation_size = 1, 1
    rotations = [x * 2 * math.pi / num_rotations for x in range(num_rotations)]
    common = dict(kernel_size=kernel_size, effective_size=effective_size, scales=list(scales),
                  rotations=rotations, padding=kernel_size // 2, basis_type=basis_type,
                  backend=backend, mult=mult, max_order=max_order)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(rnn.LiftingConv(1, channels, **common), nn.ReLU(),
                             rnn.GroupConv(channels, channels, scale_size, rotation_size, **common))


def compare_bases(bases: Sequence[str] = BASIS_TYPES,
                  transforms: Optional[Sequence[Transform]] = None, *, input_size: Optional[int] = None,
                  batch_size: int = 2, seed: int = 0, dtype=torch.float64, region: float = 0.5,
                  mode: str = "bicubic", **config) -> Dict[str, Measurement]:
    """:func:`measure` of :func:`basis_test_net` (``config`` = its keywords) for every basis type
    on the same :func:`smooth_inputs` (``input_size`` default 2K+2). ``transforms`` default:
    :func:`default_transforms` of the rotating net (the same list for every basis)."""
    nets = {b: basis_test_net(b, seed=seed, **config).to(dtype) for b in bases}
    kernel = next(iter(nets.values()))[0].kernel_size
    size = input_size or 2 * kernel + 2
    inputs = smooth_inputs((1, size, size), batch_size, seed, dtype=dtype)
    if transforms is None:
        rotating = [n for b, n in nets.items() if b not in NO_ROTATION_BASES]
        transforms = default_transforms(rotating[0] if rotating else next(iter(nets.values())))
    return {b: measure(net, inputs, transforms, region=region, mode=mode, name=f"basis {b}")
            for b, net in nets.items()}
