"""Bad input raises a ValueError/TypeError that names the argument, the value and the expectation."""
import math

import pytest
import torch

import rstfast
import rstfast.nn as rnn
from rstfast import backends, models

ROT4 = [x * 2 * math.pi / 4 for x in range(4)]
SCALES = [2.0, 2.5, 3.2, 4.0]   # K = 11 gives supports 5, 7, 9, 11 (E needs >= 5)


def lift(**overrides):
    kw = dict(in_channels=3, out_channels=4, kernel_size=11, effective_size=5, scales=SCALES,
              rotations=ROT4, padding=5, basis_type="E", backend="reference")
    kw.update(overrides)
    return rnn.LiftingConv(**kw)


def group(**overrides):
    kw = dict(in_channels=3, out_channels=4, scale_size=2, rotation_size=2, kernel_size=11,
              effective_size=5, scales=SCALES, rotations=ROT4, padding=5, basis_type="E",
              backend="reference")
    kw.update(overrides)
    return rnn.GroupConv(**kw)


@pytest.mark.parametrize("overrides,exc,match", [
    (dict(basis_type="Z"), ValueError, r"basis_type.*'Z'"),
    (dict(basis_type=None), ValueError, r"basis_type.*None"),
    (dict(kernel_size=8), ValueError, r"kernel_size.*odd.*8"),
    (dict(kernel_size=0), ValueError, r"kernel_size.*0"),
    (dict(kernel_size=7.0), TypeError, r"kernel_size.*int"),
    (dict(effective_size=0), ValueError, r"effective_size.*0"),
    (dict(scales=[]), ValueError, r"scales.*non-empty"),
    (dict(rotations=[]), ValueError, r"rotations.*non-empty"),
    (dict(scales="1.0"), TypeError, r"scales"),
    (dict(in_channels=0), ValueError, r"in_channels.*0"),
    (dict(stride=0), ValueError, r"stride.*0"),
    (dict(padding=-1), ValueError, r"padding.*-1"),
    (dict(backend="tpu"), ValueError, r"backend.*'tpu'"),
    # E needs a support of at least 5 pixels at every scale (the original crashes).
    (dict(kernel_size=5), ValueError, r"kernel_size|scales"),
    # E with effective_size 8: ceil(64/15)*15 = 75 > 60 functions (the original crashes).
    (dict(effective_size=8, kernel_size=15), ValueError, r"effective_size"),
    # A takes no rotations: a rotation list of 4 cannot form R*S group slices.
    (dict(basis_type="A"), ValueError, r"basis_type.*rotations"),
])
def test_bad_constructor_arguments(overrides, exc, match):
    with pytest.raises(exc, match=match):
        lift(**overrides)


@pytest.mark.parametrize("overrides,match", [
    (dict(scale_size=5), r"scale_size.*at most.*4.*5"),
    (dict(rotation_size=5), r"rotation_size.*at most.*4.*5"),
    (dict(scale_size=0), r"scale_size.*0"),
])
def test_bad_group_sizes(overrides, match):
    with pytest.raises(ValueError, match=match):
        group(**overrides)


def test_bad_lifting_inputs():
    layer = lift()
    with pytest.raises(ValueError, match=r"x: expected a 4-D tensor.*\(3, 9, 9\)"):
        layer(torch.randn(3, 9, 9))
    with pytest.raises(ValueError, match=r"x: expected 3 channels.*\(2, 5, 9, 9\)"):
        layer(torch.randn(2, 5, 9, 9))
    with pytest.raises(TypeError, match=r"x: expected dtype torch.float32.*torch.float64"):
        layer(torch.randn(2, 3, 9, 9, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"x: expected a floating-point tensor.*int64"):
        layer(torch.ones(2, 3, 9, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"x: expected a tensor on cpu.*meta"):
        layer(torch.randn(2, 3, 9, 9, device="meta"))
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got list"):
        layer([1.0])
    with pytest.raises(ValueError, match=r"x: spatial size 1x1.*kernel_size 11"):
        lift(padding=0)(torch.randn(1, 3, 1, 1))


def test_bad_group_inputs():
    layer = group()
    with pytest.raises(ValueError, match=r"x: expected a 5-D tensor.*\(2, 3, 9, 9\)"):
        layer(torch.randn(2, 3, 9, 9))
    with pytest.raises(ValueError, match=r"x: expected group size R\*S = 16.*\(2, 3, 12, 9, 9\)"):
        layer(torch.randn(2, 3, 12, 9, 9))
    with pytest.raises(ValueError, match=r"x: expected 3 channels"):
        layer(torch.randn(2, 4, 16, 9, 9))


def test_bad_1x1_and_projection_inputs():
    with pytest.raises(ValueError, match=r"x: expected group size R\*S = 8"):
        rnn.GroupConv1x1(3, 4, num_scales=8)(torch.randn(1, 3, 4, 5, 5))
    with pytest.raises(ValueError, match=r"x: expected a 5-D tensor"):
        rnn.GroupMaxProjection()(torch.randn(1, 3, 5, 5))


def test_steerable_basis_rejects_unknown_type():
    with pytest.raises(ValueError, match=r"basis_type.*'Q'.*A1"):
        rstfast.steerable_basis("Q", 15, [0.0], SCALES, 7)


def test_unavailable_backend_warns_and_falls_back(monkeypatch):
    """A requested backend that cannot run falls back to the reference with a warning."""
    backends.clear_cache()
    monkeypatch.setitem(backends._BACKENDS, "triton",
                        backends.Backend("triton", "rstfast._no_such_module", "kernels"))
    layer = lift(backend="triton")
    x = torch.randn(1, 3, 9, 9)
    with pytest.warns(RuntimeWarning, match=r"backend 'triton' on cpu falls back to 'reference'"):
        y = layer(x)
    layer.backend = "reference"
    assert torch.equal(y, layer(x))
    backends.clear_cache()


def test_auto_cpu_order_override(monkeypatch):
    backends.clear_cache()
    monkeypatch.setenv("RSTFAST_AUTO_CPU", "reference")
    assert backends.resolve("auto", torch.device("cpu")).module is rstfast.reference.functional
    backends.clear_cache()
    monkeypatch.setenv("RSTFAST_AUTO_CPU", "cpp,fast")
    with pytest.raises(ValueError, match=r"RSTFAST_AUTO_CPU.*unknown \['fast'\]"):
        backends.resolve("auto", torch.device("cpu"))
    backends.clear_cache()


def test_effective_size_larger_than_kernel():
    with pytest.raises(ValueError, match=r"effective_size: expected at most kernel_size = 5"):
        rnn.LiftingConv(1, 2, kernel_size=5, effective_size=7, scales=[1.0], basis_type="A")


@pytest.mark.parametrize("name,size,expected", [("mnist_ses_scalar_28_rot_8", 56, 28),
                                                ("mnist_cnn_56", 56, 28),
                                                ("mnist_ses_vector_28_rot_4_interrot_2", 14, 28)])
def test_model_input_size_is_named(name, size, expected):
    """A _28 model fed 56x56 images (or a _56 model fed its upsampled size) says what it takes."""
    model = models.get(name, backend="reference").eval()
    with pytest.raises(ValueError, match=rf"x: expected images \[B, C, {expected}, {expected}\]"):
        model(torch.randn(2, 1, size, size))


def test_cpp_rejects_16_bit_and_names_the_backends_that_take_it():
    """Explicit backend="cpp" with a bfloat16 input: a TypeError naming the reference; "auto"
    falls back to it with a warning (test_backend_contract covers every backend)."""
    layer = lift(backend="cpp").to(torch.bfloat16)
    x = torch.randn(1, 3, 9, 9, dtype=torch.bfloat16)
    if backends.available_backends("cpu")["cpp"] is not None:
        pytest.skip("the C++ extension is unavailable")
    with pytest.raises(TypeError, match=r"backend 'cpp' computes float32, float64 on cpu, got "
                                        r"bfloat16; backends that take it there: reference"):
        layer(x)
    layer.backend = "auto"
    backends.clear_cache()
    with pytest.warns(RuntimeWarning, match=r"'auto' on cpu falls back to 'reference'"):
        assert layer(x).dtype == torch.bfloat16
