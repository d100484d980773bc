"""The layers behave like ordinary nn.Modules: init, state_dict, .to(), autograd, AMP, compile."""
import math

import torch

import rstfast
import rstfast.nn as rnn

ROT8 = [x * 2 * math.pi / 8 for x in range(8)]
SCALES = [2.0, 2.5, 3.2, 4.0]   # K = 11 gives supports 5, 7, 9, 11 (E needs >= 5)


def small_group(**kw):
    args = dict(in_channels=3, out_channels=5, scale_size=2, rotation_size=4, kernel_size=11,
                effective_size=5, scales=SCALES, rotations=ROT8, padding=5, bias=True,
                basis_type="E", mult=1.5, max_order=4, backend="reference")
    args.update(kw)
    return rnn.GroupConv(**args)


def test_original_names_are_aliases():
    assert rnn.SESConv_Z2_H is rnn.LiftingConv
    assert rnn.SESConv_H_H is rnn.GroupConv
    assert rnn.SESConv_H_H_1x1 is rnn.GroupConv1x1
    assert rnn.SESMaxProjection is rnn.GroupMaxProjection


def test_original_positional_signature():
    """SESConv_H_H(in, out, scale_size, rotation_size, kernel_size, effective_size, scales, ...)."""
    layer = rnn.SESConv_H_H(3, 5, 1, 4, 11, 5, SCALES, ROT8, 1, 5, True, "E", mult=1.5,
                            dropout=0.7)
    assert (layer.scale_size, layer.rotation_size, layer.padding) == (1, 4, 5)
    assert layer.weight.shape == (5, 3, 4, 25)
    assert layer.basis.shape == (25, 32, 11, 11)


def test_initialisation_as_original():
    layer = small_group()
    bound = 1 / math.sqrt(3 * 4 * 2 * 25)          # kaiming_uniform_(a=sqrt(5)), fan_in = C*Lr*Ls*F
    assert layer.weight.abs().max() <= bound
    assert layer.weight.abs().max() > 0.9 * bound
    assert torch.equal(layer.bias, torch.zeros(5))
    assert rnn.LiftingConv(1, 2, 11, 5, SCALES, ROT8, basis_type="E").bias is None


def test_basis_buffer_matches_public_builder_and_support():
    layer = small_group()
    expected = rstfast.steerable_basis("E", 11, ROT8, SCALES, 5, mult=1.5, max_order=4)
    assert torch.equal(layer.basis, expected)
    assert layer.support == rstfast.geometry.basis_support(expected, 8) == (5, 7, 9, 11)


def test_to_float64_and_autograd():
    layer = small_group().double()
    assert layer.basis.dtype == torch.float64
    x = torch.randn(2, 3, 32, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-7, fast_mode=True)
    layer(x).square().sum().backward()
    assert layer.weight.grad.shape == layer.weight.shape and layer.bias.grad is not None


def test_state_dict_load_between_layers():
    a, b = small_group(), small_group()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 9, 9)
    assert torch.equal(a(x), b(x))
    # The basis is a buffer: loading must not alias or modify the cached basis of other layers.
    with torch.no_grad():
        b.basis.mul_(2)
    assert not torch.equal(small_group().basis, b.basis)


def test_autocast_bfloat16_cpu():
    layer = small_group()
    x = torch.randn(1, 3, 32, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    expected = layer(x)
    assert ((y.float() - expected).abs().max() / expected.abs().max()).item() < 3e-2


def test_torch_compile_matches_eager():
    layer = rnn.LiftingConv(2, 3, 7, 3, [1.0, 1.5], [0.0, math.pi / 2],
                            padding=3, basis_type="A1", backend="reference")
    x = torch.randn(1, 2, 8, 8)
    compiled = torch.compile(layer, backend="eager", fullgraph=False)
    assert torch.allclose(compiled(x), layer(x), atol=1e-6)
