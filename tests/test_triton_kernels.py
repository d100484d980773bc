"""Triton backend (rstfast.kernels) against the float64 reference.

On a machine without CUDA the kernels run on Triton's CPU interpreter: ``TRITON_INTERPRET=1`` must be
in the environment when a kernel is first launched (``.ci/run`` exports it for the whole run; this
module also sets it before anything here launches a kernel, and the kernels are compiled lazily
at first launch, so test order does not matter). With CUDA the same tests run on the GPU.
Shapes are tiny so that the interpreter runs the module in a few minutes.
"""
import math
import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from conftest import assert_close_to_max                                     # noqa: E402
from rstfast import backends, nn as rsnn                                    # noqa: E402
from rstfast.reference import functional as ref                             # noqa: E402
from rstfast.reference.bases import steerable_basis                         # noqa: E402
import rstfast.kernels as tk                                                # noqa: E402
from rstfast.kernels import rs_conv_bwd                                     # noqa: E402

pytestmark = pytest.mark.skipif(tk.unavailable_reason(torch.device(DEVICE)) is not None,
                                reason=str(tk.unavailable_reason(torch.device(DEVICE))))

FLOAT32_REL = 1e-5
# bfloat16 unit roundoff (8-bit significand) and the float32 accumulation allowance n * 2**-24 for
# sums of up to ~1600 products.
BF16_UNIT = 2.0 ** -8
FLOAT32_SUM = 1e-4

# Scales per number of scales (kernel sizes 7 / 9 keep the interpreter fast); the per-scale
# supports are strictly nested boxes, e.g. (3, 5, 7) at K = 7, so the cropping is exercised.
_SCALES = {1: [2.0], 3: [1.0, 1.4, 2.0], 4: [1.0, 1.26, 1.59, 2.0]}
_SCALES_E = {1: [2.0], 3: [1.5, 2.0, 2.6], 4: [1.5, 1.8, 2.2, 2.6]}


def make_basis(basis_type: str, num_rotations: int, num_scales: int) -> torch.Tensor:
    kernel_size = 9 if basis_type == "D1" else 7          # D1 needs 60 functions: K >= 9
    scales = (_SCALES_E if basis_type == "E" else _SCALES)[num_scales]
    rotations = [2 * math.pi * r / num_rotations for r in range(num_rotations)]
    return steerable_basis(basis_type, kernel_size, rotations, scales, 3)


# (basis, R, S, Lr, Ls, stride, padding "same"?, batch, C, O, H, W, channels_last, bias)
LIFT_CASES = {
    "A1-R4S3-pad-b3": ("A1", 4, 3, 1, 1, 1, True, 3, 2, 5, 9, 7, False, True),
    "E-R8S4-s2-cl": ("E", 8, 4, 1, 1, 2, False, 1, 3, 4, 10, 9, True, True),
    "G1-R1S1-wide": ("G1", 1, 1, 1, 1, 1, True, 3, 33, 40, 11, 11, False, True),
    "D1-R4S1-s2-pad-cl": ("D1", 4, 1, 1, 1, 2, True, 1, 2, 3, 9, 11, True, False),
    "C-R1S4-b3": ("C", 1, 4, 1, 1, 1, False, 3, 3, 4, 9, 9, False, True),
}
GROUP_CASES = {
    "C-R4S3-Lr2Ls2-s2": ("C", 4, 3, 2, 2, 2, False, 3, 3, 4, 9, 11, False, True),
    "E-R8S4-Lr4-pad-cl": ("E", 8, 4, 4, 1, 1, True, 1, 2, 3, 7, 9, True, True),
    "G-R1S3-Ls2-pad-b3": ("G", 1, 3, 1, 2, 1, True, 3, 3, 4, 9, 7, False, True),
    "G1-R4S4-LrR-Ls2-cl": ("G1", 4, 4, 4, 2, 1, False, 1, 2, 3, 9, 9, True, False),
    "D1-R8S1-LrR-s2-b3": ("D1", 8, 1, 8, 1, 2, False, 3, 2, 3, 11, 9, False, True),
    "A1-R8S3-s2-pad": ("A1", 8, 3, 1, 1, 2, True, 1, 3, 4, 9, 9, False, True),
    "C-R1S4-Ls2-cl": ("C", 1, 4, 1, 2, 1, False, 1, 3, 5, 9, 11, True, True),
    "E-R4S1-Lr2-s2-pad-b3": ("E", 4, 1, 2, 1, 2, True, 3, 2, 4, 7, 9, False, True),
    "G-R1S3-Ls2-s2-wide": ("G", 1, 3, 1, 2, 2, True, 3, 33, 40, 9, 9, False, True),
}


@pytest.fixture
def poison(monkeypatch):
    """Every ``torch.empty`` / ``empty_like`` float buffer starts as NaN: an element a kernel does
    not write shows up as NaN in the compared results."""
    empty, empty_like = torch.empty, torch.empty_like

    def fill(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(empty_like(*a, **k)))


def _inputs(case, lifting):
    (basis_type, rot, sca, lr, ls, stride, same, batch, cin, cout, h, w, channels_last,
     with_bias) = case
    basis = make_basis(basis_type, rot, sca).to(DEVICE)
    k = basis.shape[-1]
    padding = k // 2 if same else 0
    shape = (batch, cin, h, w) if lifting else (batch, cin, rot * sca, h, w)
    x = torch.randn(shape, device=DEVICE)
    if channels_last:
        x = x.to(memory_format=torch.channels_last if lifting else torch.channels_last_3d)
    weight_shape = (cout, cin, basis.shape[0]) if lifting else (cout, cin, lr * ls, basis.shape[0])
    weight = torch.randn(weight_shape, device=DEVICE) / math.sqrt(cin * lr * ls * basis.shape[0])
    bias = torch.randn(cout, device=DEVICE) if with_bias else None
    args = dict(stride=stride, padding=padding, support=ref.basis_support(basis, rot))
    if not lifting:
        args.update(num_rotations=rot, rotation_size=lr, scale_size=ls)
    return x, weight, bias, basis, args


def _forward_backward(op, x, weight, bias, basis, args, grad_seed=None):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None
              for t in (x, weight, bias)]
    y = op(leaves[0], leaves[1], basis, leaves[2], **args)
    if grad_seed is None:
        grad_seed = torch.randn_like(y, dtype=torch.float64)
    (y.to(torch.float64) * grad_seed).sum().backward()
    grads = [t.grad if t is not None else None for t in leaves]
    return y, grads, grad_seed


def _check_against_reference(x, weight, bias, basis, args, lifting):
    ours = tk.lift_conv if lifting else tk.group_conv
    oracle = ref.lift_conv if lifting else ref.group_conv
    y, grads, seed = _forward_backward(ours, x, weight, bias, basis, args)
    f64 = [t.to(torch.float64) if t is not None else None for t in (x, weight, bias)]
    y_ref, grads_ref, _ = _forward_backward(oracle, *f64, basis.to(torch.float64), args, seed)
    assert y.dtype == x.dtype and y.is_contiguous()
    for name, a, b in zip(("y", "grad_x", "grad_weight", "grad_bias"), [y] + grads,
                          [y_ref] + grads_ref):
        if b is None:
            continue
        assert torch.isfinite(a).all(), f"{name}: unwritten (NaN) or non-finite elements"
        assert_close_to_max(a, b, FLOAT32_REL, name)


@pytest.mark.parametrize("case", LIFT_CASES.values(), ids=LIFT_CASES.keys())
def test_lift_conv_matches_reference(case, poison):
    _check_against_reference(*_inputs(case, lifting=True), lifting=True)


@pytest.mark.parametrize("case", GROUP_CASES.values(), ids=GROUP_CASES.keys())
def test_group_conv_matches_reference(case, poison):
    _check_against_reference(*_inputs(case, lifting=False), lifting=False)


def test_filter_gradient_split_over_pixels(poison, monkeypatch):
    """Split-K of the filter gradient (2 pixel ranges here: 189 output pixels, >= 64 per split)."""
    monkeypatch.setattr(rs_conv_bwd, "MIN_PIXELS_PER_SPLIT", 64)
    _check_against_reference(*_inputs(LIFT_CASES["A1-R4S3-pad-b3"], lifting=True), lifting=True)


def test_lift_conv_without_support_argument(poison):
    """support=None: each slice gets its own box (the function computes it)."""
    x, weight, bias, basis, args = _inputs(LIFT_CASES["A1-R4S3-pad-b3"], lifting=True)
    args["support"] = None
    _check_against_reference(x, weight, bias, basis, args, lifting=True)


def test_group_conv_bfloat16_under_autocast(poison):
    """Elementwise bound from the roundings: the filter (and, backwards, grad_y) are rounded to
    bfloat16 before the float32-accumulated products, and y / grad_x are rounded when stored, so
    ``|y - y_ref| <= u * |y_ref| + u * conv(|x|, |weight| @ |basis|)``, and likewise
    ``grad_x: 2u * conv^T(|g|, |weight| @ |basis|) + u |grad_x_ref|``,
    ``grad_weight: u * sum |x| |g| |basis|``, ``grad_bias: u * sum |g|`` (``u = 2**-8``; the
    reference runs in float64 on the bfloat16-rounded input)."""
    x, weight, bias, basis, args = _inputs(GROUP_CASES["C-R4S3-Lr2Ls2-s2"], lifting=False)
    x16 = x.to(torch.bfloat16)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y, grads, seed = _forward_backward(tk.group_conv, x, weight, bias, basis, args)
    assert y.dtype == torch.bfloat16
    assert grads[1].dtype == torch.float32 and grads[2].dtype == torch.float32
    f64 = [t.to(torch.float64) for t in (x16, weight, bias, basis)]
    y_ref, grads_ref, _ = _forward_backward(ref.group_conv, *f64[:3], f64[3], args, seed)
    y_abs, grads_abs, _ = _forward_backward(ref.group_conv, *[t.abs() for t in f64[:3]],
                                            f64[3].abs(), args, seed.abs())
    y_abs = y_abs - bias.abs().double().view(1, -1, 1, 1, 1)
    bounds = {
        "y": BF16_UNIT * (y_ref.abs() + y_abs) + FLOAT32_SUM * y_abs,
        "grad_x": 2 * BF16_UNIT * grads_abs[0] + BF16_UNIT * grads_ref[0].abs()
        + FLOAT32_SUM * grads_abs[0],
        "grad_weight": (BF16_UNIT + FLOAT32_SUM) * grads_abs[1],
        "grad_bias": (BF16_UNIT + FLOAT32_SUM) * grads_abs[2],
    }
    for (name, bound), a, b in zip(bounds.items(), [y] + grads, [y_ref] + grads_ref):
        excess = (a.double() - b).abs() - bound
        assert excess.max() <= 0, f"{name}: error exceeds the bfloat16 bound by {excess.max():.3e}"


def test_eval_cache_follows_weight_updates():
    x, weight, bias, basis, args = _inputs(GROUP_CASES["G-R1S3-Ls2-pad-b3"], lifting=False)
    with torch.no_grad():
        first = tk.group_conv(x, weight, basis, bias, **args)
        again = tk.group_conv(x, weight, basis, bias, **args)
        assert torch.equal(first, again)
        weight.mul_(-2.0)                              # in place: bumps weight._version
        changed = tk.group_conv(x, weight, basis, bias, **args)
        expected = ref.group_conv(x.double(), weight.double(), basis.double(), bias.double(),
                                  **args)
    assert_close_to_max(changed, expected, FLOAT32_REL, "y after in-place weight update")


def _tiny_model():
    rotations = [2 * math.pi * r / 4 for r in range(4)]
    scales = _SCALES[3]
    return torch.nn.Sequential(
        rsnn.LiftingConv(1, 3, 7, 3, scales=scales, rotations=rotations, padding=3, bias=True,
                         basis_type="A1", backend="triton"),
        torch.nn.ReLU(),
        rsnn.GroupConv(3, 2, 1, 2, 7, 3, scales=scales, rotations=rotations, padding=3,
                       basis_type="A1", backend="triton"),
        rsnn.GroupMaxProjection(),
    ).to(DEVICE)


def test_layers_with_triton_backend_train():
    backends.clear_cache()               # a resolution cached before TRITON_INTERPRET was set
    assert backends.resolve("triton", torch.device(DEVICE)) is tk
    model = _tiny_model()
    x = torch.randn(2, 1, 9, 9, device=DEVICE)
    target = torch.randn(2, 2, 9, 9, device=DEVICE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert losses[1] < losses[0]


def test_paper_model_training_step_matches_reference():
    """A whole paper model (RST-CNN `mnist_ses_vector_28_rot_4_interrot_2`, basis E: lifting and
    group layers, K = 15, supports 5/7/11/15) trained one step with backend="triton" gives the
    reference's loss and gradients for every parameter.

    The per-layer tests above bound the kernels at 1e-5 per tensor. Through a whole model, a ~1e-7
    difference can flip the arg-max of a max-pooling window, which routes a few gradient entries
    elsewhere (measured 1.7e-4 of max|grad| on the first layer), and some biases have gradients at
    round-off level (BatchNorm follows them). So the model's gradients are compared as one vector:
    max error <= 1e-3 of the largest gradient, cosine similarity > 1 - 1e-6."""
    from rstfast import models
    backends.clear_cache()
    torch.manual_seed(0)
    fast = models.get("mnist_ses_vector_28_rot_4_interrot_2", basis="E", backend="triton").to(DEVICE)
    slow = models.get("mnist_ses_vector_28_rot_4_interrot_2", basis="E", backend="reference")
    slow.load_state_dict(fast.state_dict())
    slow.to(DEVICE)
    x = torch.randn(2, 1, 28, 28, device=DEVICE)
    target = torch.tensor([3, 7], device=DEVICE)
    losses = []
    for model in (fast, slow):
        torch.manual_seed(1)                 # the same dropout mask for both
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        losses.append(loss)
    assert_close_to_max(losses[0], losses[1], 1e-5, "loss")
    grad_fast = torch.cat([p.grad.flatten() for p in fast.parameters()])
    grad_slow = torch.cat([p.grad.flatten() for p in slow.parameters()])
    assert_close_to_max(grad_fast, grad_slow, 1e-3, "all gradients")
    cosine = torch.nn.functional.cosine_similarity(grad_fast, grad_slow, dim=0).item()
    assert cosine > 1 - 1e-6, cosine


def test_torch_compile_fullgraph_matches_eager():
    """The custom ops trace under torch.compile (AOTAutograd, fake kernels) without graph breaks."""
    model = _tiny_model()
    x = torch.randn(2, 1, 9, 9, device=DEVICE, requires_grad=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    y_eager = model(x)
    y_compiled = compiled(x)
    assert_close_to_max(y_compiled, y_eager, FLOAT32_REL, "compiled y")
    g_eager, = torch.autograd.grad(y_eager.sum(), x)
    g_compiled, = torch.autograd.grad(y_compiled.sum(), x)
    assert_close_to_max(g_compiled, g_eager, FLOAT32_REL, "compiled grad_x")


def test_torch_export_keeps_the_custom_ops():
    model = _tiny_model().eval()
    x = torch.randn(2, 1, 9, 9, device=DEVICE)
    exported = torch.export.export(model, (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"rstfast_triton.expand_filters.default", "rstfast_triton.rs_conv.default"} <= targets
    with torch.no_grad():
        assert_close_to_max(exported.module()(x), model(x), FLOAT32_REL, "exported y")


def test_unavailable_reason():
    assert tk.unavailable_reason(torch.device(DEVICE)) is None
    assert "CUDA" in tk.unavailable_reason(torch.device("meta"))


@pytest.mark.parametrize("triton_version,numpy_version,usable", [
    ("3.6.0", "2.4.1", False), ("3.6.0", "2.3.5", True), ("3.7.1", "2.4.1", True),
    ("3.10.0+git1234", "2.5.0", True)])
def test_interpreter_version_guard(triton_version, numpy_version, usable, monkeypatch):
    import numpy
    import triton
    monkeypatch.setattr(triton, "__version__", triton_version)
    monkeypatch.setattr(numpy, "__version__", numpy_version)
    reason = tk.jit.interpreter_unusable_reason()
    assert (reason is None) == usable
    if not usable:
        assert triton_version in reason and "NumPy" in reason


def test_bad_arguments_name_the_argument():
    x, weight, bias, basis, args = _inputs(GROUP_CASES["G-R1S3-Ls2-pad-b3"], lifting=False)
    with pytest.raises(TypeError, match="x:.*float64"):
        tk.group_conv(x.double(), weight, basis, bias, **args)
    with pytest.raises(ValueError, match="weight:"):
        tk.group_conv(x, weight[:, :, :1], basis, bias, **args)
    with pytest.raises(ValueError, match="support:"):
        tk.group_conv(x, weight, basis, bias, **{**args, "support": [3, 5]})
