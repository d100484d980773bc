"""rstfast.compat.sesn against tensors computed with SESN's own code (rstfast/golden/sesn/README.md).

Bases, every layer (forward and gradients of ``sum(y * G)``, float32 and float64, on every backend
that runs here), SESN's initialisation, and SESN's MNIST models ``mnist_ses_scalar_28`` and
``mnist_ses_vector_28`` rebuilt below from the compat layers: their SESN state dicts load with
``strict=True`` and give SESN's eval logits and SESN's loss, gradients and BatchNorm statistics of
one training step.
"""
import hashlib
import inspect

import pytest
import torch
import torch.nn as nn

from conftest import DEVICE, assert_close_to_max, exact_dtypes, golden_names, load_golden
from rstfast import backends
from rstfast.compat import sesn
from rstfast.reference.bases import steerable_basis

F32_REL = 1e-5          # float32 against SESN run in float32 (the suite's layer tolerance)
F64_REL = 1e-11         # float64 against SESN run in float64: only summation order differs
BASIS_REL = {torch.float32: 1e-6, torch.float64: 1e-12}     # as tests/test_bases.py
SUFFIX = {torch.float32: "", torch.float64: "_f64"}


def load(name: str):
    """``(arrays, meta)`` of the SESN golden file ``name`` (rstfast/golden/sesn)."""
    return load_golden(f"sesn/{name}")


def names(prefix: str):
    return [name.split("/", 1)[1] for name in golden_names(f"sesn/{prefix}")]


def rel(dtype):
    return F32_REL if dtype == torch.float32 else F64_REL


def build(dtype, seed, make):
    """``make()`` under ``torch.manual_seed(seed)`` with ``dtype`` as default dtype (the basis
    follows it, as in SESN)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        return make()
    finally:
        torch.set_default_dtype(previous)


# ---------------------------------------------------------------------------------------------
# Bases
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", names("basis_"))
def test_basis(name, dtype):
    """rstfast's A/B bases with one rotation are SESN's (bit-identical where this was written)."""
    arrays, meta = load(name)
    a = meta["args"]
    kwargs = {k: a[k] for k in ("mult", "max_order") if k in a}
    expected = arrays["basis" + SUFFIX[dtype]]
    basis = steerable_basis(a["basis_type"], a["kernel_size"], [0.0], a["scales"],
                            a["effective_size"], dtype=dtype, **kwargs)
    assert_close_to_max(basis, expected, BASIS_REL[dtype], name)
    layer = build(dtype, 0, lambda: sesn.SESConv_Z2_H(
        1, 1, a["kernel_size"], a["effective_size"], scales=a["scales"],
        basis_type=a["basis_type"], **kwargs))
    assert layer.basis.dtype == dtype
    assert torch.equal(layer.basis, basis)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

def golden_layer(meta, dtype, backend):
    args = dict(meta["args"])
    positional = args.pop("positional")
    return build(dtype, meta["seed"], lambda: getattr(sesn, meta["layer"])(
        *positional, backend=backend, **args))


def run(layer, arrays, dtype):
    x = arrays["x"].to(DEVICE, dtype).detach().requires_grad_()
    y = layer(x)
    (y * arrays["grad_seed"].to(DEVICE, dtype)).sum().backward()
    return y, x.grad


CONV_FILES = names("layer_lift_") + names("layer_group_")


@pytest.mark.parametrize("name", CONV_FILES)
def test_conv_layer(backend, name):
    arrays, meta = load(name)
    basis, _ = load(meta["basis_file"])
    for dtype in exact_dtypes(backend):
        layer = golden_layer(meta, dtype, backend)
        if dtype == torch.float32:      # SESN's initialisation under the same seed
            assert torch.equal(layer.weight.detach(), arrays["weight"]), "weight init"
        assert_close_to_max(layer.basis, basis["basis" + SUFFIX[dtype]], BASIS_REL[dtype], "basis")
        assert (layer.bias is None) == ("bias" not in arrays)
        with torch.no_grad():
            layer.weight.copy_(arrays["weight"])
            if layer.bias is not None:
                layer.bias.copy_(arrays["bias"])
        layer.to(DEVICE)
        y, grad_x = run(layer, arrays, dtype)
        assert layer.last_backend == backend
        s, r = SUFFIX[dtype], rel(dtype)
        assert_close_to_max(y.cpu(), arrays["y" + s], r, f"{backend} {dtype} y")
        assert_close_to_max(grad_x.cpu(), arrays["grad_x" + s], r, f"{backend} {dtype} grad_x")
        assert_close_to_max(layer.weight.grad.cpu(), arrays["grad_weight" + s], r,
                            f"{backend} {dtype} grad_weight")
        if layer.bias is not None:
            assert_close_to_max(layer.bias.grad.cpu(), arrays["grad_bias" + s], r,
                                f"{backend} {dtype} grad_bias")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv1x1(dtype):
    arrays, meta = load("layer_1x1_s4_stride2.npz")
    layer = build(dtype, meta["seed"], lambda: sesn.SESConv_H_H_1x1(**meta["args"]))
    if dtype == torch.float32:          # nn.Conv2d's initialisation, as SESN's
        assert torch.equal(layer.weight.detach(), arrays["weight"])
        assert torch.equal(layer.bias.detach(), arrays["bias"])
    layer.load_state_dict({"weight": arrays["weight"], "bias": arrays["bias"]}, strict=True)
    y, grad_x = run(layer.to(DEVICE), arrays, dtype)
    s = SUFFIX[dtype]
    assert_close_to_max(y.cpu(), arrays["y" + s], rel(dtype), "y")
    assert_close_to_max(grad_x.cpu(), arrays["grad_x" + s], rel(dtype), "grad_x")
    assert_close_to_max(layer.weight.grad.cpu(), arrays["grad_weight" + s], rel(dtype), "grad_w")
    assert layer.bias.grad is None, "SESN never adds the 1x1 layer's bias"


def test_max_projection():
    arrays, _ = load("layer_maxproj.npz")
    x = arrays["x"].clone().requires_grad_()
    y = sesn.SESMaxProjection()(x)
    (y * arrays["grad_seed"]).sum().backward()
    assert torch.equal(y, arrays["y"])
    assert torch.equal(x.grad, arrays["grad_x"])


# ---------------------------------------------------------------------------------------------
# Signatures and errors
# ---------------------------------------------------------------------------------------------

SESN_SIGNATURES = {     # SESN's models/impl/ses_conv.py, argument names and defaults in order
    "SESConv_Z2_H": [("in_channels", None), ("out_channels", None), ("kernel_size", None),
                     ("effective_size", None), ("scales", [1.0]), ("stride", 1), ("padding", 0),
                     ("bias", False), ("basis_type", "A")],
    "SESConv_H_H": [("in_channels", None), ("out_channels", None), ("scale_size", None),
                    ("kernel_size", None), ("effective_size", None), ("scales", [1.0]),
                    ("stride", 1), ("padding", 0), ("bias", False), ("basis_type", "A")],
    "SESConv_H_H_1x1": [("in_channels", None), ("out_channel", None), ("stride", 1),
                        ("num_scales", 1), ("bias", True)],
}


@pytest.mark.parametrize("cls", sorted(SESN_SIGNATURES))
def test_signature_is_sesns(cls):
    params = [p for p in inspect.signature(getattr(sesn, cls)).parameters.values()
              if p.kind == p.POSITIONAL_OR_KEYWORD]
    default = [None if p.default is p.empty else
               list(p.default) if isinstance(p.default, tuple) else p.default for p in params]
    assert list(zip([p.name for p in params], default)) == SESN_SIGNATURES[cls]


def test_positional_arguments_land_where_sesn_puts_them():
    layer = sesn.SESConv_H_H(2, 3, 2, 9, 5, [1.0, 1.5, 2.0], 2, 4, True, "B", mult=1.4,
                             max_order=3, backend="reference")
    assert (layer.scale_size, layer.kernel_size, layer.effective_size, layer.stride,
            layer.padding, layer.basis_type) == (2, 9, 5, 2, 4, "B")
    assert layer.weight.shape == (3, 2, 2, 25) and layer.bias.shape == (3,)
    assert layer.basis.shape == (25, 3, 9, 9)
    expected = steerable_basis("B", 9, [0.0], [1.0, 1.5, 2.0], 5, mult=1.4, max_order=3)
    assert torch.equal(layer.basis, expected)
    assert list(layer.state_dict()) == ["weight", "bias", "basis"]
    lift = sesn.SESConv_Z2_H(2, 3, 9, 5, [1.0, 2.0], 1, 4)
    assert lift.weight.shape == (3, 2, 25) and lift.bias is None and lift.basis_type == "A"


def test_dropout_keyword_is_ignored_as_in_sesn():
    """SESN's MNIST_SES_Scalar passes its ``dropout`` on to the layers, which ignore it."""
    a = build(torch.float32, 0, lambda: sesn.SESConv_Z2_H(1, 2, 7, 3, [1.0, 2.0], dropout=0.7))
    b = build(torch.float32, 0, lambda: sesn.SESConv_Z2_H(1, 2, 7, 3, [1.0, 2.0]))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in b.state_dict())


@pytest.mark.parametrize("cls, args", [("SESConv_Z2_H", (1, 2, 7, 3)),
                                       ("SESConv_H_H", (1, 2, 1, 7, 3))])
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(basis_type="C"), ValueError, r"basis_type: got 'C', expected 'A' or 'B'"),
    (dict(basis_type=None), ValueError, r"basis_type: got None, expected 'A' or 'B'"),
    (dict(rotations=[0.0]), TypeError, r"unexpected keyword argument\(s\) rotations=\[0.0\]"),
    (dict(spt=3.5, sigma=1), TypeError, r"unexpected keyword argument\(s\) sigma=1, spt=3.5"),
    (dict(backend="nope"), ValueError, r"backend"),
])
def test_bad_arguments_name_themselves(cls, args, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        getattr(sesn, cls)(*args, **kwargs)
    if error is TypeError:
        assert info.value.args[0].startswith(cls + ":")


# ---------------------------------------------------------------------------------------------
# SESN's MNIST models on the compat layers
# ---------------------------------------------------------------------------------------------

C1, C2, C3 = 32, 63, 95     # SESN's channel counts


def classifier(dropout):
    """SESN's head: ``linear.0 .. linear.4``."""
    return nn.Sequential(nn.Linear(4 * C3, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(True),
                         nn.Dropout(dropout), nn.Linear(256, 10))


class ScalarSES(nn.Module):
    """SESN's MNIST_SES_Scalar: three lifting layers, each followed by a max over scales, so every
    block sees a plain image. Module order (and so the state_dict keys ``main.0 .. main.14``,
    ``linear.0 .. linear.4``) is SESN's."""

    def __init__(self, pool_size, kernel_size, scales, basis_type, dropout, backend, **basis):
        super().__init__()
        conv = dict(scales=scales, padding=kernel_size // 2, bias=True, basis_type=basis_type,
                    backend=backend, **basis)
        pools = [nn.MaxPool2d(2), nn.MaxPool2d(2), nn.MaxPool2d(pool_size, padding=2)]
        layers = []
        for c_in, c_out, pool in zip((1, C1, C2), (C1, C2, C3), pools):
            layers += [sesn.SESConv_Z2_H(c_in, c_out, kernel_size, 7, **conv),
                       sesn.SESMaxProjection(), nn.ReLU(True), pool, nn.BatchNorm2d(c_out)]
        self.main = nn.Sequential(*layers)
        self.linear = classifier(dropout)

    def forward(self, x):
        return self.linear(self.main(x).flatten(1))


class VectorSES(nn.Module):
    """SESN's MNIST_SES_V: lifting, two scale-group layers (scale_size 1) on ``[B, C, S, H, W]``,
    max over scales only before the head. State_dict keys ``main.0 .. main.12``, ``linear.*``."""

    def __init__(self, pool_size, kernel_size, scales, basis_type, dropout, backend, **basis):
        super().__init__()
        conv = dict(scales=scales, padding=kernel_size // 2, bias=True, basis_type=basis_type,
                    backend=backend, **basis)
        spatial_pool = dict(kernel_size=[1, 2, 2], stride=[1, 2, 2])
        self.main = nn.Sequential(
            sesn.SESConv_Z2_H(1, C1, kernel_size, 7, **conv), nn.ReLU(True),
            nn.MaxPool3d(**spatial_pool), nn.BatchNorm3d(C1),
            sesn.SESConv_H_H(C1, C2, 1, kernel_size, 7, **conv), nn.ReLU(True),
            nn.MaxPool3d(**spatial_pool), nn.BatchNorm3d(C2),
            sesn.SESConv_H_H(C2, C3, 1, kernel_size, 7, **conv), sesn.SESMaxProjection(),
            nn.ReLU(True), nn.MaxPool2d(pool_size, padding=2), nn.BatchNorm2d(C3))
        self.linear = classifier(dropout)

    def forward(self, x):
        return self.linear(self.main(x).flatten(1))


def sesn_scales(min_scale, factor, count):
    """SESN's scales: ``min_scale * factor**(i / (count - 1))`` rounded to 2 decimals."""
    q = factor ** (1 / (count - 1))
    return [round(min_scale * q ** i, 2) for i in range(count)]


MODELS = {  # SESN's models/mnist_ses.py configurations
    "mnist_ses_scalar_28": lambda backend: ScalarSES(
        4, 15, sesn_scales(1.7, 3.0, 4), "B", 0.7, backend, mult=1.5, max_order=4),
    "mnist_ses_vector_28": lambda backend: VectorSES(
        4, 13, sesn_scales(1.5, 3.0, 3), "B", 0.7, backend, mult=1.5, max_order=4),
}


def sesn_state_dict(arrays, meta, dtype):
    """The golden SESN state dict in ``dtype`` (floats are stored as exact float16 values; the
    identical basis buffers once, in the basis file)."""
    basis = load(meta["basis_file"])[0]["basis" + SUFFIX[dtype]]
    state = {}
    for key in meta["state_dict_keys"]:
        if key in meta["basis_buffers"]:
            state[key] = basis
        else:
            value = arrays["state/" + key]
            state[key] = value.to(dtype) if value.is_floating_point() else value
    return state


def golden_model(name, dtype, backend):
    arrays, meta = load(f"model_{name}.npz")
    model = build(dtype, meta["build_seed"], lambda: MODELS[name](backend))
    model.load_state_dict(sesn_state_dict(arrays, meta, dtype), strict=True)
    return model.to(DEVICE), arrays, meta


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_keys_and_initialisation_are_sesns(name):
    arrays, meta = load(f"model_{name}.npz")
    model = build(torch.float32, meta["build_seed"], lambda: MODELS[name]("reference"))
    assert list(model.state_dict()) == meta["state_dict_keys"]
    assert sum(p.numel() for p in model.parameters()) == meta["num_parameters"]
    digests = {n: hashlib.sha256(p.detach().numpy().tobytes()).hexdigest()
               for n, p in model.named_parameters()}
    assert digests == meta["init_sha256"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_eval_logits(backend, name):
    for dtype in exact_dtypes(backend):
        model, arrays, _ = golden_model(name, dtype, backend)
        model.eval()
        with torch.no_grad():
            logits = model(arrays["x_eval"].to(DEVICE, dtype))
        assert backends.used(model) == (
            {"lift": backend} if name.startswith("mnist_ses_scalar") else
            {"lift": backend, "group": backend})
        assert_close_to_max(logits.cpu(), arrays["logits" + SUFFIX[dtype]], rel(dtype),
                            f"{backend} {dtype} logits")


# The bias of the BatchNorm2d before the head: its gradient is zero in exact arithmetic (BatchNorm1d
# in training mode subtracts the batch mean, removing any constant shift of linear.0's input), so
# SESN's values are round-off (~3e-8 in float32, ~6e-17 in float64); it is checked against the
# gradient scale of the same BatchNorm's weight instead of its own.
ZERO_GRADIENT = {"mnist_ses_scalar_28": ("main.14.bias", "main.14.weight"),
                 "mnist_ses_vector_28": ("main.12.bias", "main.12.weight")}


def use_golden_dropout(dropout, mask):
    """Apply SESN's dropout mask. On CPU the mask drawn after ``torch.manual_seed(dropout_seed)``
    must be SESN's (checked); elsewhere the generator differs. ``mask`` is 1 where SESN's
    dropout output is non-zero: where the input is 0 (after the ReLU) keeping or dropping changes
    no value and no gradient."""
    def replace(module, inputs, output):
        if DEVICE == "cpu":
            assert torch.equal((output != 0).cpu(), mask.bool()), "dropout mask"
        return inputs[0] * mask.to(output) / (1 - module.p)
    dropout.register_forward_hook(replace)


def sampled_grads(model, meta):
    """Every parameter's gradient at the golden file's flat indices ``::grad_strides[name]``."""
    return {key: param.grad.cpu().reshape(-1)[::meta["grad_strides"][key]]
            for key, param in model.named_parameters()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_training_step(backend, name):
    """One training-mode step: batch statistics in every BatchNorm (and their running-statistics
    update, momentum 0.1), SESN's dropout mask from ``torch.manual_seed(dropout_seed)`` right
    before the forward pass, CrossEntropyLoss; loss, logits, running statistics and every
    parameter's gradient (the large ones at the stored flat indices) against SESN's.

    float64: each parameter's gradient within 1e-11 of its largest. float32: through BatchNorm
    over 4 images SESN's own float32 gradients differ from its float64 ones by up to 1.1e-5 of
    the largest (rstfast/golden/sesn/README.md), so, as tests/test_backend_contract.py's model
    step, the float32 gradients are compared as one vector: max error <= 1e-3 of the largest,
    cosine similarity > 1 - 1e-6."""
    zero_key, zero_scale_key = ZERO_GRADIENT[name]
    for dtype in exact_dtypes(backend):
        model, arrays, meta = golden_model(name, dtype, backend)
        s, r = SUFFIX[dtype], rel(dtype)
        model.train()
        use_golden_dropout(model.linear[3], arrays["dropout_mask" + s])
        torch.manual_seed(meta["dropout_seed"])
        logits = model(arrays["x_train"].to(DEVICE, dtype))
        loss = nn.CrossEntropyLoss()(logits, arrays["labels"].to(DEVICE))
        loss.backward()
        assert_close_to_max(loss.cpu(), arrays["loss" + s], r, f"{backend} {dtype} loss")
        assert_close_to_max(logits.cpu(), arrays["logits_train" + s], r, "logits_train")
        state = model.state_dict()
        for key in meta["state_dict_keys"]:
            if "running" in key or "num_batches" in key:
                assert_close_to_max(state[key].cpu(), arrays[f"running_after{s}/{key}"], r, key)
        grads = sampled_grads(model, meta)
        expected = {key: arrays[f"grad{s}/{key}"] for key in grads}
        zero_scale = arrays[f"grad_absmax{s}/{zero_scale_key}"].item()
        assert arrays[f"grad_absmax_f64/{zero_key}"] < 1e-12 * zero_scale, "SESN's round-off"
        assert grads[zero_key].abs().max() <= r * zero_scale, f"{zero_key} is not round-off"
        if dtype == torch.float64:
            for key in grads.keys() - {zero_key}:
                scale = arrays[f"grad_absmax{s}/{key}"].item()
                err = (grads[key] - expected[key]).abs().max().item()
                assert err <= r * scale, f"{backend} grad {key}: {err:.3e} > {r:.0e} * {scale:.3e}"
        else:
            ours = torch.cat([grads[k].double() for k in sorted(grads)])
            sesns = torch.cat([expected[k].double() for k in sorted(grads)])
            assert_close_to_max(ours, sesns, 1e-3, f"{backend} all gradients")
            cosine = nn.functional.cosine_similarity(ours, sesns, dim=0).item()
            assert cosine > 1 - 1e-6, cosine
