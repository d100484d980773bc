"""Benchmark cases: every conv layer of the paper models, whole training steps, FLOP counts.

Shapes follow ``docs/models.md`` (the ``_56`` models: a 28x28 digit upsampled to 56x56, then
56 -> 28 -> 14 pixels between the three conv layers, channels 1 -> 32 -> 63 -> 95, ``K = 15``,
padding 7, ``effective_size = 7``, scales ``[1.7, 2.45, 3.54, 5.1]`` or ``[1.0]`` for RES).
Layers shared by several models (same shapes and basis) are one case.

FLOPs per ``docs/layers.md`` §5, counted two ways: ``dense`` (every tap of the ``K x K`` filter and the
zero-padded scales, what the original executes) and ``nonzero`` (only taps inside the per-scale support
``n_s`` and real scales). Filter expansion is included. Forward+backward = forward + input gradient
(a conv of the same size, only when the input requires grad) + weight gradient (a conv of the same
size plus the expansion's transpose).
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

KERNEL_SIZE, EFFECTIVE_SIZE, PADDING = 15, 7, 7
BASIS_KWARGS = {"mult": 1.5, "max_order": 4}
SES_SCALES = (1.7, 2.45, 3.54, 5.1)
RES_SCALES = (1.0,)


@dataclass(frozen=True)
class LayerCase:
    """One roto-scale conv layer: ``kind`` is ``"lift"`` ([B, C, H, W] input) or ``"group"``
    ([B, C, R*S, H, W] input); ``size`` is the input's H = W."""
    kind: str
    basis_type: str
    num_rotations: int
    scales: Tuple[float, ...]
    in_channels: int
    out_channels: int
    size: int
    rotation_size: int = 1
    scale_size: int = 1
    models: Tuple[str, ...] = ()

    @property
    def num_groups(self) -> int:
        return self.num_rotations * len(self.scales)

    @property
    def name(self) -> str:
        offsets = f" Lr{self.rotation_size}Ls{self.scale_size}" if self.kind == "group" else ""
        return (f"{self.kind} {self.basis_type} R{self.num_rotations}S{len(self.scales)}{offsets} "
                f"{self.in_channels}->{self.out_channels} {self.size}px")


def _paper_layers():
    vector, scalar8 = "mnist_ses_vector_56_rot_8_interrot_4", "mnist_ses_scalar_56_rot_8"
    scalar1, res8 = "mnist_ses_scalar_56_rot_1", "mnist_res_scalar_56_rot_8"
    widths = ((1, 32, 56), (32, 63, 28), (63, 95, 14))
    layers = [LayerCase("lift", "E", 8, SES_SCALES, 1, 32, 56, models=(vector, scalar8))]
    layers += [LayerCase("group", "E", 8, SES_SCALES, c, o, n, rotation_size=4, models=(vector,))
               for c, o, n in widths[1:]]
    layers += [LayerCase("lift", "E", 8, SES_SCALES, c, o, n, models=(scalar8,))
               for c, o, n in widths[1:]]
    layers += [LayerCase("lift", "E", 1, SES_SCALES, c, o, n, models=(scalar1,)) for c, o, n in widths]
    layers += [LayerCase("lift", "D1", 8, RES_SCALES, c, o, n, models=(res8,)) for c, o, n in widths]
    return tuple(layers)


PAPER_LAYERS = _paper_layers()
QUICK_LAYERS = (
    LayerCase("lift", "E", 8, SES_SCALES, 2, 4, 16, models=("quick",)),
    LayerCase("group", "E", 4, SES_SCALES, 4, 4, 12, rotation_size=2, scale_size=2, models=("quick",)),
)
PAPER_MODELS = ("mnist_ses_vector_56_rot_8_interrot_4", "mnist_ses_scalar_56_rot_8",
                "mnist_ses_scalar_56_rot_1", "mnist_res_scalar_56_rot_8", "mnist_cnn_56")
QUICK_MODELS = ("mnist_ses_scalar_28_rot_1", "mnist_cnn_28")
PLAIN_MODELS = ("mnist_cnn_56", "mnist_cnn_28")          # no roto-scale layers


def register_original() -> None:
    """Make ``backend="original"`` (:mod:`benchmarks.original`, a functional backend) a backend
    name every rstfast layer accepts, so whole models can run the original algorithm."""
    from rstfast import backends
    if "original" not in backends.names():
        backends.register("original", "benchmarks.original", kind="functional", fallback=())


def backend_names() -> Tuple[str, ...]:
    """Every concrete backend (the one list, :func:`rstfast.backends.names`, with ``original``)."""
    from rstfast import backends
    register_original()
    return tuple(name for name in backends.names() if name != "auto")


def backend_or_reason(backend: str, device: str, allow_interpreter: bool = False) -> Optional[str]:
    """None when ``backend`` can be timed on ``device`` (no fallback), else why not; triton on
    CPU is refused unless ``allow_interpreter`` (its interpreter is not a performance path)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "CUDA is not available"
    if backend == "triton" and device == "cpu" and not allow_interpreter:
        return "triton on CPU runs in the interpreter, which is not a performance path"
    from rstfast import backends
    if backend not in backend_names():
        return f"unknown backend {backend!r}; expected one of {backend_names()}"
    reason = backends.available_backends(device)[backend]
    return None if reason is None else f"backend {backend!r} unavailable on {device}: {reason}"


@functools.lru_cache(maxsize=None)
def _basis(basis_type: str, num_rotations: int, scales: Tuple[float, ...]) -> torch.Tensor:
    from rstfast import steerable_basis
    rotations = [2 * math.pi * r / num_rotations for r in range(num_rotations)]
    return steerable_basis(basis_type, KERNEL_SIZE, rotations, list(scales), EFFECTIVE_SIZE,
                           **BASIS_KWARGS)


def layer_inputs(case: LayerCase, batch: int, device, requires_grad: bool) -> Dict[str, object]:
    """Input, coefficients (the original's kaiming-uniform range), zero bias, basis, geometry."""
    from rstfast.geometry import group_geometry, lifting_geometry
    basis = _basis(case.basis_type, case.num_rotations, case.scales)
    num_offsets = case.rotation_size * case.scale_size
    if case.kind == "lift":
        x_shape = (batch, case.in_channels, case.size, case.size)
        w_shape = (case.out_channels, case.in_channels, basis.shape[0])
    else:
        x_shape = (batch, case.in_channels, case.num_groups, case.size, case.size)
        w_shape = (case.out_channels, case.in_channels, num_offsets, basis.shape[0])
    bound = 1.0 / math.sqrt(case.in_channels * num_offsets * basis.shape[0])
    tensors = {
        "x": torch.randn(x_shape, device=device),
        "weight": torch.empty(w_shape, device=device).uniform_(-bound, bound),
        "bias": torch.zeros(case.out_channels, device=device),
    }
    for tensor in tensors.values():
        tensor.requires_grad_(requires_grad)
    tensors["basis"] = basis.to(device)
    if case.kind == "lift":
        tensors["geometry"] = lifting_geometry(case.in_channels, case.out_channels, basis,
                                               case.num_rotations, 1, PADDING)
    else:
        tensors["geometry"] = group_geometry(case.in_channels, case.out_channels, basis,
                                             case.num_rotations, case.rotation_size,
                                             case.scale_size, 1, PADDING)
    return tensors


def output_shape(case: LayerCase, batch: int) -> Tuple[int, ...]:
    """``[B, O, R*S, H, W]``: stride 1 and padding ``K // 2`` keep the spatial size."""
    return (batch, case.out_channels, case.num_groups, case.size, case.size)


def run_layer(backend: str, inputs: Dict[str, object]) -> torch.Tensor:
    """One convolution of the case's inputs on ``backend`` (stride 1, padding 7)."""
    from rstfast import ops
    return ops.roto_scale_conv(*(inputs[k] for k in ("x", "weight", "basis", "bias", "geometry")),
                               backend)


def layer_run(case: LayerCase, backend: str, batch: int, device, backward: bool):
    """``(step, setup, flops)`` of one layer case: ``step`` is a forward without grad, or a forward
    and a backward of a fixed random output gradient; ``setup`` clears the gradients."""
    inputs = layer_inputs(case, batch, device, requires_grad=backward)
    leaves = [inputs[k] for k in ("x", "weight", "bias")]
    if backward:
        grad_out = torch.randn(output_shape(case, batch), device=device)

        def step():
            run_layer(backend, inputs).backward(grad_out)
    else:
        def step():
            with torch.no_grad():
                run_layer(backend, inputs)

    def setup():
        for leaf in leaves:
            leaf.grad = None

    return step, setup, layer_flops(case, batch, inputs["geometry"], backward)


def train_run(model_name: str, layer_backend: str, batch: int, device):
    """``(step, setup, flops)`` of one training step (forward, cross-entropy, backward, Adam step,
    lr 0.01 as the paper runs) on random 28x28 images; ``setup`` zeroes the gradients; ``flops()``
    is valid after the first step (counted by hooks during it)."""
    from rstfast import models
    model = models.get(model_name, backend=layer_backend).to(device).train()  # default bases: E, D1
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    images = torch.randn(batch, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    counter = FlopCounter(model)

    def step():
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step, lambda: optimizer.zero_grad(set_to_none=True), lambda: counter.totals(backward=True)


# Eval-mode forward under no_grad: the layers' filter cache on (the default) and off.
INFERENCE_MODES = ("inference", "inference, no filter cache")


def inference_run(model_name: str, layer_backend: str, batch: int, device, mode: str):
    """``(step, setup, flops)`` of one eval-mode forward under ``torch.no_grad`` on random 28x28
    images; ``mode`` one of :data:`INFERENCE_MODES` (``cache_filters`` on or off on every layer:
    off rebuilds the filters every call, as a training forward does)."""
    from rstfast import models
    if mode not in INFERENCE_MODES:
        raise ValueError(f"mode: expected one of {INFERENCE_MODES}, got {mode!r}")
    model = models.get(model_name, backend=layer_backend).to(device).eval()
    for module in model.modules():
        if hasattr(module, "cache_filters"):
            module.cache_filters = mode == INFERENCE_MODES[0]
    images = torch.randn(batch, 1, 28, 28, device=device)
    counter = FlopCounter(model)

    def step():
        with torch.no_grad():
            model(images)

    return step, lambda: None, lambda: counter.totals(backward=False)


def case_spec(case: LayerCase) -> dict:
    """JSON-able form of a case (for the memory probe subprocess)."""
    return asdict(case)


def case_from_spec(spec: dict) -> LayerCase:
    return LayerCase(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def roto_scale_flops(geo, x_shape: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """Forward FLOPs of one lifting or group conv, ``{"conv", "expand"}`` per way, from the one
    FLOP model (:mod:`rstfast.flops`): ``dense`` (every tap of ``T*K^2`` per offset) and
    ``nonzero`` (the support boxes, reads of zero scales dropped)."""
    from rstfast import flops
    return {"dense": {"conv": flops.dense(geo, x_shape),
                      "expand": flops.expansion(geo, cropped=False)},
            "nonzero": {"conv": flops.direct(geo, x_shape),
                        "expand": flops.expansion(geo, cropped=True)}}


def plain_flops(macs: int) -> Dict[str, Dict[str, int]]:
    """A dense op (nn.Conv2d, nn.Linear) with ``macs`` multiply-adds: the same count both ways."""
    return {way: {"conv": 2 * macs, "expand": 0} for way in ("dense", "nonzero")}


def total_flops(forward: Dict[str, Dict[str, int]], backward: bool,
                input_grad: bool = True) -> Dict[str, int]:
    """``{"dense", "nonzero"}`` totals: forward, plus the backward passes when ``backward``."""
    totals = {}
    for way, parts in forward.items():
        conv_passes = 1 + (2 if input_grad else 1) * backward
        totals[way] = parts["conv"] * conv_passes + parts["expand"] * (1 + backward)
    return totals


def layer_flops(case: LayerCase, batch: int, geo, backward: bool) -> Dict[str, int]:
    x_shape = (batch, case.in_channels, *(() if case.kind == "lift" else (case.num_groups,)),
               case.size, case.size)
    return total_flops(roto_scale_flops(geo, x_shape), backward)


def module_flops(module: torch.nn.Module, x: torch.Tensor,
                 output: torch.Tensor) -> Optional[Dict[str, Dict[str, int]]]:
    """Forward FLOPs of one call of a conv / linear module on ``x`` (None for other modules)."""
    from rstfast.nn import GroupConv, LiftingConv
    if isinstance(module, (LiftingConv, GroupConv)):
        return roto_scale_flops(module.geometry, x.shape)
    if isinstance(module, torch.nn.Conv2d):
        return plain_flops(output.numel() * module.in_channels // module.groups
                           * module.kernel_size[0] * module.kernel_size[1])
    if isinstance(module, torch.nn.Linear):
        return plain_flops(output.numel() * module.in_features)
    return None


class FlopCounter:
    """Forward hooks on conv / linear modules that count the first call of each, then detach.

    ``totals(backward=True)`` counts an input gradient only where the module's input required grad.
    """

    def __init__(self, model: torch.nn.Module):
        self.records = []
        self.handles = {m: m.register_forward_hook(self._hook) for m in model.modules()}

    def _hook(self, module, inputs, output):
        self.handles.pop(module).remove()
        forward = module_flops(module, inputs[0], output)
        if forward is not None:
            self.records.append((forward, inputs[0].requires_grad))

    def totals(self, backward: bool) -> Dict[str, int]:
        sums = {"dense": 0, "nonzero": 0}
        for forward, input_grad in self.records:
            for way, count in total_flops(forward, backward, input_grad).items():
                sums[way] += count
        return sums
