"""The op contract, for every backend ``rstfast.backends`` can run on this device.

Each test takes the ``backend`` fixture (tests/conftest.py): every name of
:func:`rstfast.backends.names` — a backend added with ``backends.register`` (or
``RSTFAST_EXTRA_BACKENDS``) is covered without a line here — skipped with the reason where it
cannot run. Forward and every gradient against the float64 reference over one case matrix, float64
gradcheck, the golden files of the original, bad inputs, dtypes, autocast, ``torch.compile``,
``torch.export``, ``opcheck``, channels-last and non-contiguous inputs, the inference filter
cache, and a whole model's training step.
"""
import math

import pytest
import torch

from conftest import (DEVICE, assert_close_to_max, exact_dtypes, golden_layer, golden_names,
                      load_golden)
from rstfast import backends, ops
from rstfast import nn as rnn
from rstfast.geometry import group_geometry, lifting_geometry
from rstfast.reference import functional as ref
from rstfast.reference.bases import steerable_basis

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
# bfloat16 unit roundoff (8-bit significand) and the float32 accumulation allowance.
BF16_UNIT = 2.0 ** -8
FLOAT32_SUM = 1e-4

# Scales per (basis, number of scales) at K = 7 / 9 / 15: per-scale supports are strictly nested
# boxes (e.g. 3, 5, 7 at K = 7), so the cropping is exercised; E needs supports >= 5.
_SCALES = {1: [2.0], 3: [1.0, 1.4, 2.0], 4: [1.0, 1.26, 1.59, 2.0]}
_SCALES_E = {1: [2.0], 3: [1.5, 2.0, 2.6], 4: [1.5, 1.8, 2.2, 2.6]}
_PAPER_SCALES = [1.7, 2.45, 3.54, 5.1]

# kind, basis, K, R, S, Lr, Ls, stride, padding, batch, C, O, H, W, layout
# layout: "contiguous", "channels_last", "sliced" (a non-contiguous view of a bigger tensor).
CASES = {
    "lift-A1-R4S3-pad-b3": ("lift", "A1", 7, 4, 3, 1, 1, 1, 3, 3, 2, 5, 9, 7, "contiguous"),
    "lift-E-R8S4-s2-cl": ("lift", "E", 7, 8, 4, 1, 1, 2, 0, 1, 3, 4, 10, 9, "channels_last"),
    "lift-G1-R1S1-wide": ("lift", "G1", 7, 1, 1, 1, 1, 1, 3, 2, 33, 40, 11, 11, "contiguous"),
    "lift-D1-R4S1-s2-pad-sliced": ("lift", "D1", 9, 4, 1, 1, 1, 2, 4, 1, 2, 3, 9, 11, "sliced"),
    "lift-C-R1S4-b3": ("lift", "C", 9, 1, 4, 1, 1, 1, 0, 3, 3, 4, 9, 9, "contiguous"),
    "lift-E-K15-paper": ("lift", "E", 15, 8, 4, 1, 1, 1, 7, 2, 1, 3, 16, 15, "contiguous"),
    "group-C-R4S3-Lr2Ls2-s2": ("group", "C", 7, 4, 3, 2, 2, 2, 0, 3, 3, 4, 9, 11, "contiguous"),
    "group-E-R8S4-Lr4-pad-cl": ("group", "E", 7, 8, 4, 4, 1, 1, 3, 1, 2, 3, 7, 9,
                                "channels_last"),
    "group-G-R1S3-Ls2-pad-b3": ("group", "G", 7, 1, 3, 1, 2, 1, 3, 3, 3, 4, 9, 7, "contiguous"),
    "group-G1-R4S4-LrR-Ls2-sliced": ("group", "G1", 9, 4, 4, 4, 2, 1, 0, 1, 2, 3, 9, 9,
                                     "sliced"),
    "group-D1-R8S1-LrR-s2-b3": ("group", "D1", 9, 8, 1, 8, 1, 2, 0, 3, 2, 3, 11, 9,
                                "contiguous"),
    "group-A1-R8S3-s2-pad": ("group", "A1", 9, 8, 3, 1, 1, 2, 4, 1, 3, 4, 9, 9, "contiguous"),
    "group-C-R1S4-Ls2-cl": ("group", "C", 9, 1, 4, 1, 2, 1, 2, 1, 3, 5, 9, 11, "channels_last"),
    "group-E-R4S1-Lr2-s2-pad-b3": ("group", "E", 7, 4, 1, 2, 1, 2, 3, 3, 2, 4, 7, 9,
                                   "contiguous"),
    "group-G-R1S3-Ls2-s2-wide": ("group", "G", 7, 1, 3, 1, 2, 2, 3, 3, 33, 40, 9, 9,
                                 "contiguous"),
    "group-E-K15-paper-Lr4": ("group", "E", 15, 8, 4, 4, 1, 1, 7, 1, 2, 3, 14, 13,
                              "contiguous"),
}


def make_basis(basis_type, kernel_size, num_rotations, num_scales):
    if kernel_size == 15:
        scales = _PAPER_SCALES
    else:
        scales = (_SCALES_E if basis_type == "E" else _SCALES)[num_scales]
    rotations = [2 * math.pi * r / num_rotations for r in range(num_rotations)]
    return steerable_basis(basis_type, kernel_size, rotations, scales,
                           7 if kernel_size == 15 else 3, mult=1.5, max_order=4)


def make_case(case, dtype):
    """``(x, weight, bias, basis, geometry)`` of a case, in ``dtype`` on ``DEVICE``."""
    (kind, basis_type, k, rot, sca, lr, ls, stride, padding, batch, cin, cout, h, w,
     layout) = case
    basis = make_basis(basis_type, k, rot, sca).to(DEVICE, dtype)
    lifting = kind == "lift"
    shape = (batch, cin, h, w) if lifting else (batch, cin, rot * sca, h, w)
    if layout == "sliced":                    # every other column of a wider tensor
        x = torch.randn(*shape[:-1], 2 * shape[-1], device=DEVICE, dtype=dtype)[..., ::2]
    else:
        x = torch.randn(shape, device=DEVICE, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last if lifting else torch.channels_last_3d)
    num_offsets = () if lifting else (lr * ls,)
    weight = torch.randn(cout, cin, *num_offsets, basis.shape[0], device=DEVICE, dtype=dtype)
    weight /= math.sqrt(cin * lr * ls * basis.shape[0])
    bias = torch.randn(cout, device=DEVICE, dtype=dtype)
    if lifting:
        geo = lifting_geometry(cin, cout, basis, rot, stride, padding)
    else:
        geo = group_geometry(cin, cout, basis, rot, lr, ls, stride, padding)
    return x, weight, bias, basis, geo


def reference(x, weight, bias, basis, geo):
    """The float64 oracle of a case."""
    args = [t.to(torch.float64) for t in (x, weight, basis)]
    bias = bias.to(torch.float64) if bias is not None else None
    if geo.lifting:
        return ref.lift_conv(args[0], args[1], args[2], bias, geo.stride, geo.padding)
    return ref.group_conv(args[0], args[1], args[2], bias, geo.num_rotations, geo.rotation_size,
                          geo.scale_size, geo.stride, geo.padding)


def forward_backward(fn, leaves, seed=None):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    y = fn(*leaves)
    if seed is None:
        seed = torch.randn(y.shape, dtype=torch.float64, device=y.device)
    (y.to(torch.float64) * seed).sum().backward()
    return y, [t.grad for t in leaves], seed


@pytest.fixture
def poison(monkeypatch):
    """Every Python ``torch.empty`` / ``empty_like`` float buffer starts as NaN: an element a
    kernel does not write shows up in the compared results."""
    empty, empty_like = torch.empty, torch.empty_like

    def fill(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(empty_like(*a, **k)))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_float64_reference(backend, case, poison):
    """y, grad_x, grad_weight, grad_bias within TOLERANCE * max|ref| in every exact dtype."""
    for dtype in exact_dtypes(backend):
        x, weight, bias, basis, geo = make_case(case, dtype)

        def run(x_, w_, b_):
            return ops.roto_scale_conv(x_, w_, basis, b_, geo, backend)
        y, grads, seed = forward_backward(run, (x, weight, bias))
        y_ref, grads_ref, _ = forward_backward(
            lambda x_, w_, b_: reference(x_, w_, b_, basis, geo), (x, weight, bias), seed)
        assert y.dtype == dtype and y.shape == y_ref.shape
        for name, a, b in zip(("y", "grad_x", "grad_weight", "grad_bias"), [y] + grads,
                              [y_ref] + grads_ref):
            assert torch.isfinite(a).all(), f"{name}: unwritten (NaN) or non-finite elements"
            assert a.dtype == dtype, name
            assert_close_to_max(a, b, TOLERANCE[dtype], f"{backend} {dtype} {name}")


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_any_basis_and_padding_mode(backend, mode):
    """A random dense basis (no steerable structure, its support boxes measured: 5 and 7 px) with
    every padding mode: forward and every gradient against the float64 reference."""
    from rstfast.geometry import group_geometry
    basis = torch.zeros(6, 2 * 2, 7, 7, device=DEVICE, dtype=torch.float64)
    basis[:, 0::2, 1:6, 1:6] = torch.randn(6, 2, 5, 5, dtype=torch.float64)
    basis[:, 1::2] = torch.randn(6, 2, 7, 7, dtype=torch.float64)
    for dtype in exact_dtypes(backend):
        geo = group_geometry(3, 4, basis, 2, 2, 2, stride=2, padding=3, padding_mode=mode)
        assert geo.support == (5, 7)
        x = torch.randn(2, 3, 4, 9, 8, device=DEVICE, dtype=dtype)
        weight = torch.randn(4, 3, 4, 6, device=DEVICE, dtype=dtype) / 10
        bias = torch.randn(4, device=DEVICE, dtype=dtype)
        y, grads, seed = forward_backward(
            lambda x_, w_, b_: ops.roto_scale_conv(x_, w_, basis.to(dtype), b_, geo, backend),
            (x, weight, bias))
        y_ref, grads_ref, _ = forward_backward(
            lambda x_, w_, b_: ops.roto_scale_conv(x_.double(), w_.double(), basis, b_.double(),
                                                   geo, "reference"), (x, weight, bias), seed)
        for name, a, b in zip(("y", "grad_x", "grad_weight", "grad_bias"), [y] + grads,
                              [y_ref] + grads_ref):
            assert_close_to_max(a, b, TOLERANCE[dtype], f"{backend} {mode} {dtype} {name}")


def test_gradcheck_float64(backend):
    if torch.float64 not in exact_dtypes(backend):
        pytest.skip(f"{backend} does not compute float64 on {DEVICE}")
    for key in ("lift-A1-R4S3-pad-b3", "group-C-R4S3-Lr2Ls2-s2"):
        x, weight, bias, basis, geo = make_case(CASES[key], torch.float64)
        x, weight, bias = (t[:1] if t is x else t for t in (x, weight, bias))
        leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
        assert torch.autograd.gradcheck(
            lambda x_, w_, b_: ops.roto_scale_conv(x_, w_, basis, b_, geo, backend), leaves,
            fast_mode=True), key


GOLDEN_CONV = [n for n in golden_names("original/layer_") if "lift" in n or "group" in n]


@pytest.mark.parametrize("name", GOLDEN_CONV)
def test_golden_layers(backend, name):
    """The original's outputs and gradients through the layer on every backend (the golden
    files hold float32 results, and float64 ones of the original run in float64)."""
    arrays, meta = load_golden(name)
    for dtype in exact_dtypes(backend):
        layer = golden_layer(meta, dtype, backend).to(DEVICE)
        with torch.no_grad():
            layer.weight.copy_(arrays["weight"])
            layer.bias.copy_(arrays["bias"])
        x = arrays["x"].detach().to(DEVICE, dtype).requires_grad_()
        y = layer(x)
        (y * arrays["grad_seed"].to(DEVICE, dtype)).sum().backward()
        suffix, rel = ("_f64", 1e-11) if dtype == torch.float64 else ("", 1e-5)
        assert layer.last_backend == backend
        assert_close_to_max(y.cpu(), arrays["y" + suffix], rel, f"{backend} {name} y")
        assert_close_to_max(x.grad.cpu(), arrays["grad_x" + suffix], rel, f"{name} grad_x")
        assert_close_to_max(layer.weight.grad.cpu(), arrays["grad_weight" + suffix], rel,
                            f"{name} grad_weight")
        assert_close_to_max(layer.bias.grad.cpu(), arrays["grad_bias"], 1e-5, f"{name} bias")


def test_bad_inputs_name_the_argument(backend):
    x, weight, bias, basis, geo = make_case(CASES["group-C-R4S3-Lr2Ls2-s2"], torch.float32)

    def call(**changes):
        args = dict(x=x, weight=weight, basis=basis, bias=bias)
        args.update(changes)
        return ops.roto_scale_conv(args["x"], args["weight"], args["basis"], args["bias"], geo,
                                   backend)
    with pytest.raises(ValueError, match="x: expected 3 channels"):
        call(x=x[:, :2])
    with pytest.raises(ValueError, match="x: expected group size"):
        call(x=x[:, :, :4])
    with pytest.raises(ValueError, match="x: expected a 5-D tensor"):
        call(x=x[:, :, 0])
    with pytest.raises(ValueError, match="x: spatial size 3x3"):
        call(x=x[..., :3, :3])
    with pytest.raises(ValueError, match="weight: expected shape"):
        call(weight=weight[:, :, :1])
    with pytest.raises(ValueError, match="bias: expected shape"):
        call(bias=bias[:2])
    with pytest.raises(ValueError, match="basis: expected shape"):
        call(basis=basis[:, :4])


def test_unsupported_dtype_names_the_backends_that_take_it(backend):
    """A dtype the backend does not compute: a TypeError that names the backends that would
    (explicit backend); ``auto`` picks one of those, with a warning when it passed one over."""
    missing = [d for d in (torch.float64, torch.bfloat16)
               if d not in backends.dtypes(backend, DEVICE)]
    if not missing:
        pytest.skip(f"{backend} computes every dtype")
    x, weight, bias, basis, geo = make_case(CASES["lift-A1-R4S3-pad-b3"], missing[0])
    with pytest.raises(TypeError, match=rf"backend '{backend}' computes .* backends that take "
                                        rf"it there: .*reference"):
        ops.roto_scale_conv(x, weight, basis, bias, geo, backend)


def test_auto_skips_backends_without_the_dtype(monkeypatch, backend):
    missing = [d for d in (torch.float64, torch.bfloat16)
               if d not in backends.dtypes(backend, DEVICE)]
    if not missing:
        pytest.skip(f"{backend} computes every dtype")
    monkeypatch.setitem(backends.AUTO_ORDER, torch.device(DEVICE).type, (backend, "reference"))
    backends.clear_cache()
    x, weight, bias, basis, geo = make_case(CASES["lift-A1-R4S3-pad-b3"], missing[0])
    with pytest.warns(RuntimeWarning, match=rf"'auto' on {torch.device(DEVICE).type} falls back "
                                            rf"to 'reference': {backend} computes"):
        y = ops.roto_scale_conv(x, weight, basis, bias, geo, "auto")
    assert_close_to_max(y, reference(x, weight, bias, basis, geo), 2e-2 if missing[0] ==
                        torch.bfloat16 else 1e-12, "auto")
    backends.clear_cache()


def test_autocast_bfloat16(backend):
    """Under autocast the output has the autocast dtype and is within the bfloat16 error bound of
    the float64 result on the rounded input: filter (and, backwards, grad_y) rounded to bfloat16
    at most once, float32 accumulation, one rounding on store; gradients of float32 parameters are
    float32. The bound (elementwise): ``u |y_ref| + u conv(|x|, |w| @ |basis|)`` plus the float32
    sum allowance, and the analogous terms for the gradients, plus the float32 contract tolerance
    ``TOLERANCE[float32] * max|ref|``: a backend computing in float32 in the frequency domain
    (fft) spreads its float32 rounding over every element, not in proportion to each one."""
    x, weight, bias, basis, geo = make_case(CASES["group-C-R4S3-Lr2Ls2-s2"], torch.float32)
    x16 = x.to(torch.bfloat16)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        y, grads, seed = forward_backward(
            lambda x_, w_, b_: ops.roto_scale_conv(x_, w_, basis, b_, geo, backend),
            (x16, weight, bias))
    assert y.dtype == torch.bfloat16
    assert grads[1].dtype == torch.float32 and grads[2].dtype == torch.float32
    f64 = [t.to(torch.float64) for t in (x16, weight, bias)]
    y_ref, grads_ref, _ = forward_backward(
        lambda x_, w_, b_: reference(x_, w_, b_, basis, geo), f64, seed)
    y_abs, grads_abs, _ = forward_backward(
        lambda x_, w_, b_: reference(x_, w_, b_, basis.abs(), geo), [t.abs() for t in f64],
        seed.abs())
    y_abs = y_abs - bias.abs().double().view(1, -1, 1, 1, 1)
    bounds = {
        "y": BF16_UNIT * (y_ref.abs() + y_abs) + FLOAT32_SUM * y_abs,
        "grad_x": 2 * BF16_UNIT * grads_abs[0] + BF16_UNIT * grads_ref[0].abs()
        + FLOAT32_SUM * grads_abs[0],
        "grad_weight": (BF16_UNIT + FLOAT32_SUM) * grads_abs[1],
        "grad_bias": (BF16_UNIT + FLOAT32_SUM) * grads_abs[2],
    }
    for (name, bound), a, b in zip(bounds.items(), [y] + grads, [y_ref] + grads_ref):
        bound = bound + TOLERANCE[torch.float32] * b.abs().max()
        excess = (a.double() - b).abs() - bound
        assert excess.max() <= 0, f"{name}: error exceeds the bfloat16 bound by {excess.max():.3e}"


def tiny_model(backend):
    rotations = [2 * math.pi * r / 4 for r in range(4)]
    scales = _SCALES[3]
    return torch.nn.Sequential(
        rnn.LiftingConv(1, 3, 7, 3, scales=scales, rotations=rotations, padding=3, bias=True,
                        basis_type="A1", backend=backend),
        torch.nn.ReLU(),
        rnn.GroupConv(3, 2, 1, 2, 7, 3, scales=scales, rotations=rotations, padding=3,
                      basis_type="A1", backend=backend),
        rnn.GroupMaxProjection(),
    ).to(DEVICE)


def test_torch_compile_fullgraph(backend):
    """The layers trace under torch.compile (AOTAutograd with the fake kernels) without graph
    breaks and give the eager results, forward and backward."""
    model = tiny_model(backend)
    x = torch.randn(2, 1, 9, 9, device=DEVICE, requires_grad=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    y_eager, y_compiled = model(x), compiled(x)
    assert_close_to_max(y_compiled, y_eager, 1e-5, "compiled y")
    g_eager, = torch.autograd.grad(y_eager.sum(), x)
    g_compiled, = torch.autograd.grad(y_compiled.sum(), x)
    assert_close_to_max(g_compiled, g_eager, 1e-5, "compiled grad_x")


def test_torch_export(backend):
    model = tiny_model(backend).eval()
    x = torch.randn(2, 1, 9, 9, device=DEVICE)
    exported = torch.export.export(model, (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    if backends.get(backend).kind == "kernels":
        assert "rstfast.roto_scale_conv.default" in targets
    with torch.no_grad():
        assert_close_to_max(exported.module()(x), model(x), 1e-5, "exported y")


def test_opcheck(backend):
    """Schemas, fake kernels and autograd registration of the ops, on this backend's kernels."""
    if backends.get(backend).kind != "kernels":
        pytest.skip(f"{backend} is a functional backend (PyTorch autograd, no custom ops)")
    for key in ("lift-A1-R4S3-pad-b3", "group-C-R4S3-Lr2Ls2-s2"):
        x, weight, bias, basis, geo = make_case(CASES[key], torch.float32)
        x, weight, bias = (t.requires_grad_() for t in (x[:2], weight, bias))
        encoded = geo.encode()
        torch.library.opcheck(ops.roto_scale_conv_op, (x, weight, basis, bias, encoded, backend))
        filters = ops.expand_filters(weight.detach(), basis, encoded)
        torch.library.opcheck(ops.conv, (x.detach(), filters, bias.detach(), encoded, backend))
        y = ops.conv(x.detach(), filters, None, encoded, backend)
        torch.library.opcheck(ops.conv_backward, (torch.randn_like(y), x.detach(), filters,
                                                  encoded, backend, [True, True]))


def test_expand_contract_ops_are_adjoint():
    """<expand(w), g> = <w, contract(g)> and opcheck of both (one implementation, every backend)."""
    x, weight, bias, basis, geo = make_case(CASES["group-G1-R4S4-LrR-Ls2-sliced"], torch.float64)
    filters = ops.expand_filters(weight, basis, geo.encode())
    grad = torch.randn_like(filters)
    lhs = (filters * grad).sum()
    rhs = (weight * ops.contract_filters(grad, basis, geo.encode())).sum()
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    torch.library.opcheck(ops.expand_filters, (weight, basis, geo.encode()))
    torch.library.opcheck(ops.contract_filters, (grad, basis, geo.encode()))


def test_inference_filter_cache(backend):
    """Under no_grad the filters are built once per weight version and reused; an in-place update,
    a cast and train() invalidate them; the state_dict never holds them."""
    x, weight, bias, basis, geo = make_case(CASES["group-G-R1S3-Ls2-pad-b3"], torch.float32)
    layer = rnn.GroupConv(3, 4, 2, 1, 7, 3, scales=_SCALES[3], rotations=[0.0], padding=3,
                          bias=True, basis_type="G", backend=backend).to(DEVICE).eval()
    keys = set(layer.state_dict())
    with torch.no_grad():
        first = layer(x)
        cached = layer._filter_cache[1]
        assert torch.equal(layer(x), first) and layer._filter_cache[1] is cached
        layer.weight.mul_(-2.0)                       # in place: bumps weight._version
        changed = layer(x)
        assert layer._filter_cache[1] is not cached
    expected = ref.group_conv(x.double(), layer.weight.double(), layer.basis.double(),
                              layer.bias.double(), 1, 1, 2, 1, 3)
    assert_close_to_max(changed, expected, 1e-5, "y after in-place weight update")
    assert set(layer.state_dict()) == keys
    layer.train()
    assert layer._filter_cache is None
    y = layer(x)                                     # gradients needed: no cache
    assert layer._filter_cache is None and y.requires_grad
    if torch.float64 in exact_dtypes(backend):
        layer.eval()
        with torch.no_grad():
            layer(x)
            layer.double()
            assert layer._filter_cache is None
            assert_close_to_max(layer(x.double()), expected.double() * 1, 1e-12, "float64")


def test_model_training_step_matches_reference(backend):
    """The paper's RST-CNN architecture (lifting + two group layers, basis E, K = 15, supports
    5/7/11/15, R = 4, rotation_size 2, 28x28) with few channels: one training step on
    ``backend`` gives the reference's loss and gradients.

    Through a whole model a ~1e-7 difference can flip the arg-max of a max-pooling window, and
    some bias gradients are round-off (BatchNorm follows them), so the gradients are compared as
    one vector: max error <= 1e-3 of the largest, cosine similarity > 1 - 1e-6."""
    from rstfast.models import ses
    kw = dict(pool_size=4, kernel_size=15, scales=ses.scales_for(4, 3.0, 1.7),
              rotations=ses.rotations_for(4), basis_type="E", rotation_size=2,
              channels=(4, 6, 8), mult=1.5, max_order=4)
    torch.manual_seed(0)
    fast = ses.MNIST_SES_V(backend=backend, **kw).to(DEVICE)
    slow = ses.MNIST_SES_V(backend="reference", **kw).to(DEVICE)
    slow.load_state_dict(fast.state_dict())
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
    assert backends.used(fast) == {"group": backend, "lift": backend}
