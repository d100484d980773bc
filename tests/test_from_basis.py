"""Any basis tensor (``from_basis``) and every padding mode, on every backend: DISCO's layers
against tensors computed with DISCO's code (rstfast/golden/disco/README.md), the supports measured
from the tensor, bad bases named, and which padding modes keep 90-degree rotations exact."""
import math

import pytest
import torch

from conftest import DEVICE, assert_close_to_max, exact_dtypes, golden_names, load_golden
from rstfast import golden, ops
from rstfast.geometry import PADDING_MODES, basis_support
from rstfast.nn import GroupConv, LiftingConv

DISCO_LAYERS = [name for name in golden_names("disco/layer_")]
RELATIVE = {torch.float32: 1e-5, torch.float64: 1e-11}


@pytest.mark.parametrize("name", DISCO_LAYERS)
def test_disco_layers(backend, name):
    """DISCO's basis buffer through from_basis with DISCO's padding mode: DISCO's output and
    gradients, float32 and float64, on every backend."""
    arrays, meta = load_golden(name)
    for dtype in exact_dtypes(backend):
        layer = golden.layer(name, dtype, backend).to(DEVICE)
        suffix = "_f64" if dtype == torch.float64 else ""
        x = arrays["x"].detach().to(DEVICE, dtype).requires_grad_()
        y = layer(x)
        (y * arrays["grad_seed"].to(DEVICE, dtype)).sum().backward()
        assert layer.last_backend == backend
        rel = RELATIVE[dtype]
        assert_close_to_max(y.cpu(), arrays["y" + suffix], rel, f"{backend} {name} y")
        assert_close_to_max(x.grad.cpu(), arrays["grad_x" + suffix], rel, f"{name} grad_x")
        assert_close_to_max(layer.weight.grad.cpu(), arrays["grad_weight" + suffix], rel,
                            f"{name} grad_weight")
        if layer.bias is not None:
            assert_close_to_max(layer.bias.grad.cpu(), arrays["grad_bias" + suffix], rel,
                                f"{name} grad_bias")


def test_support_is_measured_from_the_tensor():
    arrays, _ = load_golden("disco/basis_disco_k15_e7_s4.npz")
    layer = LiftingConv.from_basis(arrays["disco_b"], 1, 2, padding=7)
    assert layer.support == (7, 15, 15, 13)                 # the README's support boxes
    basis = torch.zeros(4, 2, 9, 9)
    basis[:, 0, 3:6, 3:6] = 1.0
    basis[:, 1] = 1e-9
    basis[:, 1, 2:7, 2:7] = 1.0
    assert LiftingConv.from_basis(basis, 1, 1).support == (3, 9)
    cropped = LiftingConv.from_basis(basis, 1, 1, support_tolerance=1e-6)
    assert cropped.support == (3, 5)
    assert cropped.basis[:, 1, 0].abs().max() == 0        # the tail is zero in the buffer too
    assert basis_support(cropped.basis, 1) == (3, 5)


@pytest.mark.parametrize("call,message", [
    (lambda: LiftingConv.from_basis(torch.randn(4, 9, 9), 1, 2), r"basis: expected a 4-D tensor"),
    (lambda: LiftingConv.from_basis(torch.randn(4, 6, 9, 9), 1, 2, num_rotations=4),
     r"num_rotations: expected a divisor of R\*S = basis.shape\[1\] = 6, got 4"),
    (lambda: LiftingConv.from_basis(torch.full((4, 2, 9, 9), math.nan), 1, 2),
     r"basis: expected finite values"),
    (lambda: LiftingConv.from_basis(torch.randn(4, 2, 8, 8), 1, 2),
     r"basis: expected an odd kernel size K .* got K = 8"),
    (lambda: LiftingConv.from_basis(torch.randn(4, 2, 9, 7), 1, 2),
     r"basis: expected a 4-D tensor \[F, R\*S, K, K\] \(square"),
    (lambda: LiftingConv.from_basis(torch.randn(4, 2, 9, 9), 1, 2, padding_mode="mirror"),
     r"padding_mode: expected one of \('zeros', 'reflect', 'replicate', 'circular'\), got "
     r"'mirror'"),
    (lambda: LiftingConv.from_basis(torch.randn(4, 2, 9, 9), 1, 2, support_tolerance=2.0),
     r"support_tolerance: expected a float in \[0, 1\)"),
    (lambda: GroupConv.from_basis(torch.randn(4, 2, 9, 9), 1, 2, scale_size=3),
     r"scale_size: expected 1 .. S = 2, got 3"),
    (lambda: LiftingConv(1, 2, 7, 3, padding_mode="constant"), r"padding_mode: expected one of"),
])
def test_bad_basis_and_padding_mode_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_reflect_padding_needs_a_large_enough_input():
    layer = LiftingConv.from_basis(torch.randn(4, 2, 9, 9), 1, 2, padding=4,
                                   padding_mode="reflect", backend="reference")
    with pytest.raises(ValueError, match=r"x: spatial size 4x9 is too small for padding 4 with "
                                         r"padding_mode 'reflect'"):
        layer(torch.randn(1, 1, 4, 9))


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_rotation_by_90_degrees_is_exact_for_every_padding_mode(mode):
    """Each padding mode pads a square image the same way in all four orientations, so the
    lifting layer stays exactly equivariant to 90-degree rotations (float64), stride 1."""
    rotations = [2 * math.pi * r / 4 for r in range(4)]
    layer = LiftingConv(2, 3, 7, 3, scales=[1.0, 1.4], rotations=rotations, padding=3,
                        basis_type="A1", padding_mode=mode, backend="reference").double()
    x = torch.randn(2, 2, 11, 11, dtype=torch.float64)
    y = layer(x)
    y_rotated = layer(torch.rot90(x, 1, dims=(-2, -1)))
    expected = torch.rot90(y, 1, dims=(-2, -1)).view(2, 3, 4, 2, 11, 11).roll(-1, dims=2)
    assert_close_to_max(y_rotated, expected.reshape(y.shape), 1e-12, mode)


def test_functional_api_takes_the_padding_mode():
    basis = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    weight = torch.randn(2, 3, 4, dtype=torch.float64)
    y = ops.lift_conv(x, weight, basis, padding=2, padding_mode="circular", backend="fft")
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="circular")
    assert_close_to_max(y, ops.lift_conv(padded, weight, basis, backend="reference"), 1e-12,
                        "circular")


def test_equivariance_tool_and_export_take_basis_layers():
    """The equivariance tool measures from_basis layers (their scales, when given, set the scale
    ratio) and the export keeps their numbers."""
    from rstfast.equivariance import measure
    from rstfast.export import export
    arrays, _ = load_golden("disco/basis_disco_k5_e3_s3.npz")
    model = torch.nn.Sequential(
        LiftingConv.from_basis(arrays["disco_a"], 1, 2, padding=2, padding_mode="replicate",
                               scales=[1.0, 1.41, 2.0]),
        GroupConv.from_basis(arrays["disco_a"], 2, 2, 2, padding=2)).double().eval()
    result = measure(model, input_shape=(1, 17, 17), batch_size=2)
    assert [layer["group"]["scale_ratio"] for layer in result.layers] == [pytest.approx(2 ** 0.5, 1e-2), 1.0]
    x = torch.randn(2, 1, 17, 17, dtype=torch.float64)
    with torch.no_grad():
        assert_close_to_max(export(model)(x), model(x), 1e-12, "exported")
    with pytest.raises(ValueError, match=r"scales: expected S = basis.shape\[1\] / num_rotations = 3"):
        LiftingConv.from_basis(arrays["disco_a"], 1, 2, scales=[1.0, 2.0])
