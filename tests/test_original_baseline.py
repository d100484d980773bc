"""The baseline :mod:`benchmarks.original` computes what the original code and the reference compute."""
import pytest
import torch

from benchmarks import original
from conftest import golden_names, load_golden
from rstfast.reference import functional as ref

GOLDEN_CONV = [n for n in golden_names("original/layer_") if "lift" in n or "group" in n]


def _max_rel(actual, expected):
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


def _call(module, kind, x, weight, basis, bias, num_rotations, rotation_size, scale_size,
          stride, padding):
    if kind == "lift":
        return module.lift_conv(x, weight, basis, bias, stride, padding)
    return module.group_conv(x, weight, basis, bias, num_rotations, rotation_size, scale_size,
                             stride, padding)


@pytest.mark.parametrize("name", GOLDEN_CONV)
def test_matches_original_golden_outputs_and_gradients(name):
    g, meta = load_golden(name)
    args = meta["args"]
    x, weight, bias = (g[k].clone().requires_grad_() for k in ("x", "weight", "bias"))
    kind = "lift" if "lift" in name else "group"
    y = _call(original, kind, x, weight, g["basis"], bias, len(args["rotations"]),
              args.get("rotation_size", 1), args.get("scale_size", 1), args["stride"],
              args["padding"])
    (y * g["grad_seed"]).sum().backward()
    # golden README: float32 CPU layers agree to 1e-5 * max|ref| (observed here: <= 1e-6).
    for what, actual, expected in (("y", y, g["y"]), ("grad_x", x.grad, g["grad_x"]),
                                   ("grad_weight", weight.grad, g["grad_weight"]),
                                   ("grad_bias", bias.grad, g["grad_bias"])):
        assert actual.shape == expected.shape, what
        assert _max_rel(actual, expected) <= 1e-5, what


@pytest.mark.parametrize("kind,num_rotations,num_scales,rotation_size,scale_size,stride,padding", [
    ("lift", 4, 3, 1, 1, 1, 2),
    ("lift", 1, 2, 1, 1, 2, 0),
    ("group", 4, 3, 3, 2, 1, 2),
    ("group", 4, 3, 4, 3, 2, 1),
    ("group", 1, 4, 1, 2, 1, 0),
    ("group", 6, 1, 2, 1, 1, 2),
])
def test_matches_reference_float64(kind, num_rotations, num_scales, rotation_size, scale_size,
                                   stride, padding):
    num_groups, k, num_funcs = num_rotations * num_scales, 5, 6
    basis = torch.randn(num_funcs, num_groups, k, k, dtype=torch.float64)
    if kind == "lift":
        x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
        weight = torch.randn(4, 3, num_funcs, dtype=torch.float64)
    else:
        x = torch.randn(2, 3, num_groups, 9, 8, dtype=torch.float64)
        weight = torch.randn(4, 3, rotation_size * scale_size, num_funcs, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    results = []
    for module in (original, ref):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        y = _call(module, kind, leaves[0], leaves[1], basis, leaves[2], num_rotations,
                  rotation_size, scale_size, stride, padding)
        grads = torch.autograd.grad((y * torch.cos(torch.arange(y.numel()).view(y.shape))).sum(),
                                    leaves)
        results.append((y, *grads))
    for what, actual, expected in zip(("y", "grad_x", "grad_weight", "grad_bias"), *results):
        assert actual.shape == expected.shape, what
        assert _max_rel(actual, expected) <= 1e-12, what


def test_group_conv_rejects_non_contiguous_input_like_the_original():
    basis = torch.randn(3, 8, 3, 3)
    x = torch.randn(1, 2, 8, 6, 6).transpose(-1, -2)         # H and W swapped: not viewable
    weight = torch.randn(4, 2, 2, 3)
    with pytest.raises(RuntimeError, match="view"):
        original.group_conv(x, weight, basis, None, 4, 2, 1, 1, 1)
