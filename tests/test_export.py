"""rstfast.export: plain-PyTorch copies give the same outputs and load without rstfast."""
import copy
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import rstfast.nn as rnn
from rstfast import models
from rstfast.export import export, export_layer

# max|exported - original| / max|original| (float rounding of a different summation order)
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def trained_like(model):
    """Non-trivial BatchNorm statistics and biases, eval mode (as after training)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
            if isinstance(getattr(m, "bias", None), nn.Parameter):
                m.bias.uniform_(-0.3, 0.3, generator=gen)
    return model.eval()


@pytest.fixture(scope="module")
def paper_model():
    return trained_like(models.get("mnist_ses_vector_28_rot_4_interrot_2", basis="E",
                                   backend="reference"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["mnist_ses_vector_28_rot_4_interrot_2", "mnist_ses_scalar_28_rot_8",
                                  "mnist_ses_scalar_56_rot_4"])
def test_round_trip_equals_the_model(name, dtype, paper_model):
    model = paper_model if name.startswith("mnist_ses_vector") else trained_like(
        models.get(name, basis="E", backend="reference"))
    model = copy.deepcopy(model).to(dtype)
    x = torch.randn(2, 1, 28, 28, dtype=dtype)
    plain = export(model)
    with torch.no_grad():
        expected, actual = model(x), plain(x)
    assert not plain.training
    assert rel_err(actual, expected) <= TOLERANCE[dtype]
    assert all(type(m).__module__.startswith("torch.") for m in plain.modules())
    assert any(isinstance(m, rnn.LiftingConv) for m in model.modules())   # model unchanged


@pytest.mark.parametrize("layer,shape", [
    (rnn.LiftingConv(2, 3, 9, 5, scales=[1.5, 2.0], rotations=[0.0, math.pi / 2], stride=2,
                     padding=3, bias=False, basis_type="A1", backend="reference"), (2, 2, 13, 13)),
    (rnn.GroupConv(2, 3, 2, 3, 9, 5, scales=[1.5, 2.0, 3.0], rotations=[i * math.pi / 2 for i in range(4)],
                   stride=2, padding=4, bias=True, basis_type="G", backend="reference"), (2, 2, 12, 11, 11)),
    (rnn.GroupConv1x1(3, 4, stride=2, num_scales=6), (2, 3, 6, 9, 9)),
    (rnn.GroupMaxProjection(), (2, 3, 6, 5, 5)),
])
def test_each_layer_in_float64(layer, shape):
    layer = layer.double()
    if getattr(layer, "bias", None) is not None:
        with torch.no_grad():
            layer.bias.uniform_(-1, 1)
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(export(layer)(x), layer(x)) <= 1e-12
        assert rel_err(export_layer(layer)(x), layer(x)) <= 1e-12


BLOCKED = """
import sys, torch
sys.modules["rstfast"] = None          # any `import rstfast` fails
io = torch.load(sys.argv[1] + "/io.pt")
program = torch.export.load(sys.argv[1] + "/model.pt2").module()
pickled = torch.load(sys.argv[1] + "/model.pt", weights_only=False)
for net in (program, pickled):
    y = net(io["x"])
    print(((y - io["y"]).abs().max() / io["y"].abs().max()).item())
"""


def test_torch_export_save_load_without_rstfast(paper_model, tmp_path):
    plain = export(paper_model)
    x2, x3 = torch.randn(2, 1, 28, 28), torch.randn(3, 1, 28, 28)
    program = torch.export.export(plain, (x2,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "model.pt2")
    torch.save(plain, tmp_path / "model.pt")
    with torch.no_grad():
        torch.save({"x": x3, "y": paper_model(x3)}, tmp_path / "io.pt")
    run = subprocess.run([sys.executable, "-c", BLOCKED, str(tmp_path)], capture_output=True,
                         text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    errors = [float(v) for v in run.stdout.split()]
    assert len(errors) == 2 and max(errors) <= 1e-5


def test_onnx_export_with_a_dynamic_batch(paper_model, tmp_path):
    """Exported at batch 2 with a dynamic batch axis (the README's recipe), run at batch 1 and 8."""
    onnx = pytest.importorskip("onnx", reason="the onnx package is not installed")
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    x = torch.randn(2, 1, 28, 28)
    torch.onnx.export(export(paper_model), (x,), tmp_path / "model.onnx", dynamo=True,
                      dynamic_shapes=({0: "batch"},))
    onnx.checker.check_model(str(tmp_path / "model.onnx"))
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    for batch in (1, 8):
        xb = torch.randn(batch, 1, 28, 28)
        (y,) = session.run(None, {session.get_inputs()[0].name: xb.numpy()})
        with torch.no_grad():
            assert rel_err(torch.from_numpy(y), paper_model(xb)) <= 1e-5


def test_files_hold_coefficients_and_one_basis_not_dense_filters(tmp_path):
    """The exported model stores each layer's coefficients and one basis for all its layers (the
    dense filters only with expand=True): the .pt2 is about the parameters plus one basis."""
    model = models.get("mnist_ses_scalar_28_rot_8", basis="E", backend="reference").eval()
    x = torch.randn(2, 1, 28, 28)
    sizes = {}
    for expand in (False, True):
        plain = export(model, expand=expand)
        with torch.no_grad():
            assert rel_err(plain(x), model(x)) <= TOLERANCE[torch.float32]
        program = torch.export.export(plain, (x,))
        torch.export.save(program, tmp_path / f"{expand}.pt2")
        sizes[expand] = (tmp_path / f"{expand}.pt2").stat().st_size
    parameters = sum(p.numel() for p in model.parameters()) * 4
    basis = model.main[0].basis.numel() * 4
    assert sizes[False] < 1.2 * (parameters + basis) < sizes[True] / 20


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_export(mode):
    rotations = [2 * math.pi * r / 4 for r in range(4)]
    model = nn.Sequential(
        rnn.LiftingConv(2, 3, 7, 3, scales=[1.0, 1.4], rotations=rotations, padding=3, bias=True,
                        basis_type="A1", padding_mode=mode, backend="reference"),
        rnn.GroupConv(3, 2, 2, 2, 7, 3, scales=[1.0, 1.4], rotations=rotations, padding=2,
                      stride=2, basis_type="A1", padding_mode=mode, backend="reference"),
    ).double().eval()
    x = torch.randn(2, 2, 11, 11, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(export(model)(x), model(x)) <= TOLERANCE[torch.float64]


class CallsFunctional(nn.Module):
    """rstfast Python code in forward is traced into plain torch ops."""

    def forward(self, x):
        from rstfast.reference import functional
        return functional.max_projection(x).relu()


def opaque_op(x):
    return x * 2


opaque_op.__module__ = "rstfast.fake_ops"   # stands for torch.ops.rstfast.* of the C++ backend
torch.fx.wrap("opaque_op")


class CallsOpaqueOp(nn.Module):
    def forward(self, x):
        return opaque_op(x)


def test_rstfast_code_in_forward():
    x = torch.randn(2, 3, 4, 5, 5)
    plain = export(CallsFunctional())
    assert torch.equal(plain(x), x.amax(2).relu())
    with pytest.raises(ValueError, match="calls rstfast.fake_ops.opaque_op"):
        export(CallsOpaqueOp())
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        export("mnist_cnn_28")
