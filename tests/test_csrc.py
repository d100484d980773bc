"""The C++/CUDA extension (backends "cpp" and "cuda"): parity with the reference, gradients, op
registration, the CUDA sources compiling with nvcc, and the warned fallback when the build fails.

The CPU tests build the extension on first use (JIT, cached; see rstfast.csrc.build).
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import REPO, assert_close_to_max, load_golden
from rstfast.reference import functional as ref

CSRC = REPO / "rstfast" / "csrc"


@pytest.fixture(scope="module")
def cpp():
    import rstfast.csrc as cpp_backend
    reason = cpp_backend.unavailable_reason(torch.device("cpu"))
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the C++ extension must build in CI: {reason}")
        pytest.skip(f"C++ extension unavailable: {reason}")
    return cpp_backend


def golden_basis(basis_type: str, num_rotations: int, num_scales: int, kernel: int) -> torch.Tensor:
    """Golden basis of (type, R), first ``num_scales`` scales, centre ``kernel x kernel`` crop."""
    scales_tag = "s1" if basis_type == "D1" else "s4"
    arrays, _ = load_golden(f"basis_{basis_type}_k15_e7_{scales_tag}_rot{num_rotations}.npz")
    basis = arrays["basis"]
    num_funcs, slices, k, _ = basis.shape
    basis = basis.view(num_funcs, num_rotations, slices // num_rotations, k, k)[:, :, :num_scales]
    off = (k - kernel) // 2
    basis = basis[..., off:off + kernel, off:off + kernel]
    return basis.reshape(num_funcs, -1, kernel, kernel).contiguous()


# A covering subset of: basis {A1, C, D1, E, G, G1} x R {1, 4, 8} x S {1, 3, 4} x rotation_size
# {1, 2, 4, R} x scale_size {1, 2} x stride {1, 2} x padding {0, K//2} x odd sizes x batch {1, 3};
# kernel 9 (the golden K = 15 basis cropped) except where noted. Even rows pass the per-scale
# support the layers pass, odd rows None (the backend computes it per slice).
CASES = [
    # basis  R  S  Lr Ls st pad  H   W   B   K
    ("E",    8, 4, 4, 1, 1, 4,  13, 11, 3,  9),
    ("A1",   4, 3, 2, 2, 2, 0,  15, 13, 1,  9),
    ("C",    1, 4, 1, 2, 1, 0,  11, 12, 3,  9),
    ("D1",   8, 1, 8, 1, 2, 4,   9, 10, 1,  9),
    ("G",    4, 4, 4, 2, 1, 7,  12,  9, 1, 15),
    ("G1",   8, 3, 1, 1, 2, 4,  11, 11, 3,  9),
    ("E",    4, 1, 2, 1, 2, 0,  10, 13, 3,  9),
    ("A1",   1, 1, 1, 1, 1, 4,   7,  9, 1,  9),
    ("C",    8, 3, 8, 2, 1, 0,  13, 10, 1,  9),
    ("G1",   1, 4, 1, 1, 2, 7,   9, 12, 1, 15),
    ("D1",   4, 1, 4, 1, 1, 0,  12, 11, 3,  9),
    ("G",    8, 4, 2, 2, 2, 4,  11,  9, 3,  9),
]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12,
             # bfloat16 storage (CUDA): the output rounded once (unit roundoff 2**-8), float32 sums
             torch.bfloat16: 2.0 ** -7}
# (device, dtype): the CPU kernels take float32 / float64, the CUDA kernels float32 / 16-bit.
DEVICE_DTYPES = [("cpu", torch.float32), ("cpu", torch.float64), ("cuda", torch.float32),
                 ("cuda", torch.bfloat16)]


def device_dtype_id(pair):
    return f"{pair[0]}-{str(pair[1]).replace('torch.', '')}"


@pytest.fixture
def backend(request, cpp):
    """The extension for the test's device; CUDA cases skip without a GPU and fail if it is
    there but the CUDA part does not build."""
    device = request.node.callspec.params["device_dtype"][0]
    if device == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        reason = cpp.unavailable_reason(torch.device("cuda"))
        assert reason is None, f"the CUDA extension must build on a GPU machine: {reason}"
    return cpp


def case_id(case):
    b, r, s, lr, ls, st, p, h, w, n, k = case
    return f"{b}-R{r}S{s}-Lr{lr}Ls{ls}-st{st}p{p}-{h}x{w}-B{n}-K{k}"


def _compare(fn, inputs, basis, device, dtype, what):
    """Forward and every gradient of ``fn(inputs, basis, True)`` (the extension) on ``device`` in
    ``dtype`` vs ``fn(inputs, basis, False)``, the reference in float64 on the same
    ``dtype``-rounded values."""
    def prepare(t, to):
        return t.detach().to(dtype).to(**to).requires_grad_(t.requires_grad)
    ours = [prepare(t, {"device": device}) for t in inputs]
    exact = [prepare(t, {"dtype": torch.float64}) for t in inputs]
    y = fn(ours, basis.to(dtype).to(device), True)
    y_ref = fn(exact, basis.to(dtype).double(), False)
    assert y.dtype == dtype and y.device.type == device
    assert_close_to_max(y.cpu(), y_ref, TOLERANCE[dtype], f"{what} forward")
    seed = torch.randn(y_ref.shape, dtype=torch.float64).to(dtype)
    wanted = [i for i, t in enumerate(inputs) if t.requires_grad]
    grads = torch.autograd.grad(y, [ours[i] for i in wanted], seed.to(device))
    grads_ref = torch.autograd.grad(y_ref, [exact[i] for i in wanted], seed.double())
    for i, g, g_ref in zip(wanted, grads, grads_ref):
        assert_close_to_max(g.cpu(), g_ref, TOLERANCE[dtype], f"{what} grad of input {i}")


@pytest.mark.parametrize("device_dtype", DEVICE_DTYPES, ids=device_dtype_id)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_group_conv_matches_reference(backend, case, device_dtype):
    basis_type, r, s, lr, ls, stride, padding, h, w, batch, k = case
    basis = golden_basis(basis_type, r, s, k)
    support = ref.basis_support(basis, r) if CASES.index(case) % 2 == 0 else None
    x = torch.randn(batch, 3, r * s, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, lr * ls, basis.shape[0], dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def run(tensors, basis_, extension):
        return (backend if extension else ref).group_conv(*tensors[:2], basis_, tensors[2], r, lr,
                                                         ls, stride, padding, support)
    _compare(run, (x, weight, bias), basis, *device_dtype, case_id(case))


@pytest.mark.parametrize("device_dtype", DEVICE_DTYPES, ids=device_dtype_id)
@pytest.mark.parametrize("case", CASES[::2] + CASES[1::4], ids=case_id)
def test_lift_conv_matches_reference(backend, case, device_dtype):
    basis_type, r, s, _, _, stride, padding, h, w, batch, k = case
    basis = golden_basis(basis_type, r, s, k)
    support = ref.basis_support(basis, r) if CASES.index(case) % 2 == 0 else None
    x = torch.randn(batch, 2, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 2, basis.shape[0], dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def run(tensors, basis_, extension):
        return (backend if extension else ref).lift_conv(*tensors[:2], basis_, tensors[2], stride,
                                                        padding, support)
    _compare(run, (x, weight, bias), basis, *device_dtype, case_id(case))


def test_no_bias_and_frozen_input(cpp):
    """bias=None; gradients only where asked (x without requires_grad, weight with)."""
    basis = golden_basis("E", 4, 3, 9)
    x = torch.randn(2, 3, 12, 10, 10)
    weight = torch.randn(4, 3, 2, basis.shape[0], requires_grad=True)
    y = cpp.group_conv(x, weight, basis, None, 4, 2, 1, 1, 4, None)
    y_ref = ref.group_conv(x.double(), weight.double(), basis.double(), None, 4, 2, 1, 1, 4)
    assert_close_to_max(y, y_ref, 1e-5, "forward without bias")
    (grad_w,) = torch.autograd.grad(y.sum(), [weight])
    (grad_ref,) = torch.autograd.grad(y_ref.sum(), [weight])
    assert_close_to_max(grad_w, grad_ref, 1e-5, "grad weight")


@pytest.mark.parametrize("backward_inside", [False, True], ids=["backward-after", "backward-inside"])
@pytest.mark.parametrize("layer", ["lift", "group"])
def test_cpu_autocast_bfloat16(cpp, layer, backward_inside):
    """Under torch.autocast("cpu", bfloat16) the CPU op computes in float32 and returns bfloat16:
    the float32 result rounded once; gradients are float32, equal to the float32 op's gradients
    for the rounded output's seed. Backward also works inside the autocast block."""
    basis = golden_basis("E", 4, 3, 9)
    if layer == "lift":
        x = torch.randn(2, 2, 11, 11)
        weight = torch.randn(3, 2, basis.shape[0], requires_grad=True)
        run = lambda x_, w_: cpp.lift_conv(x_, w_, basis, None, 1, 4, None)
    else:
        x = torch.randn(2, 2, 12, 11, 11)
        weight = torch.randn(3, 2, 2, basis.shape[0], requires_grad=True)
        run = lambda x_, w_: cpp.group_conv(x_, w_, basis, None, 4, 2, 1, 1, 4, None)
    y32 = run(x, weight)
    seed = torch.randn(y32.shape)
    (grad32,) = torch.autograd.grad(y32, [weight], seed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = run(x.to(torch.bfloat16), weight)     # a bfloat16 input, as from an autocast layer
        if backward_inside:
            (grad,) = torch.autograd.grad(y, [weight], seed.to(torch.bfloat16))
    if not backward_inside:
        (grad,) = torch.autograd.grad(y, [weight], seed.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and grad.dtype == torch.float32
    y_from_rounded_x = run(x.to(torch.bfloat16).float(), weight).detach()
    assert torch.equal(y.detach(), y_from_rounded_x.to(torch.bfloat16))
    (grad_rounded,) = torch.autograd.grad(run(x.to(torch.bfloat16).float(), weight), [weight],
                                          seed.to(torch.bfloat16).float())
    assert_close_to_max(grad, grad_rounded, 1e-5, "grad weight under autocast")
    assert_close_to_max(grad, grad32, 2 ** -6, "grad weight vs float32 inputs")


@pytest.mark.parametrize("name", ["layer_lift_E_rot8", "layer_group_E_rot8_Lr4_Ls1",
                                  "layer_group_E_rot4_Lr2_Ls2_stride2_pad5"])
def test_golden_layers(cpp, name):
    """The original's float64 outputs and gradients, K = 15, full per-scale supports."""
    arrays, meta = load_golden(name + ".npz")
    args = meta["args"]
    basis, r = arrays["basis"], len(args["rotations"])
    support = ref.basis_support(basis, r)
    x = arrays["x"].clone().requires_grad_()
    weight = arrays["weight"].clone().requires_grad_()
    bias = arrays["bias"].clone().requires_grad_()
    if x.dim() == 4:
        y = cpp.lift_conv(x, weight, basis, bias, args["stride"], args["padding"], support)
    else:
        y = cpp.group_conv(x, weight, basis, bias, r, args["rotation_size"], args["scale_size"],
                           args["stride"], args["padding"], support)
    assert_close_to_max(y, arrays["y_f64"], 1e-5, f"{name} y")
    y.backward(arrays["grad_seed"])
    assert_close_to_max(x.grad, arrays["grad_x_f64"], 1e-5, f"{name} grad_x")
    assert_close_to_max(weight.grad, arrays["grad_weight_f64"], 1e-5, f"{name} grad_weight")
    assert_close_to_max(bias.grad, arrays["grad_bias"], 1e-5, f"{name} grad_bias")


def test_layer_with_backend_cpp(cpp):
    """rstfast.backends resolves "cpp" to this extension; a GroupConv layer on it gives the
    original's numbers."""
    from rstfast import backends
    from rstfast.nn import GroupConv
    assert backends.resolve("cpp", torch.device("cpu")) is cpp
    assert backends.resolve("auto", torch.device("cpu")) is cpp       # measured fastest on CPU
    arrays, meta = load_golden("layer_group_E_rot8_Lr4_Ls1.npz")
    a = meta["args"]
    layer = GroupConv(a["in_channels"], a["out_channels"], a["scale_size"], a["rotation_size"],
                      a["kernel_size"], a["effective_size"], scales=a["scales"],
                      rotations=a["rotations"], stride=a["stride"], padding=a["padding"],
                      bias=a["bias"], basis_type=a["basis_type"], backend="cpp", **a["kw"])
    layer.load_state_dict({"weight": arrays["weight"], "bias": arrays["bias"],
                           "basis": arrays["basis"]})
    assert_close_to_max(layer(arrays["x"]), arrays["y_f64"], 1e-5, "GroupConv(backend='cpp')")


def test_first_call_loads_the_extension(cpp):
    """In a fresh process, calling an op before anything else builds/loads the extension."""
    code = textwrap.dedent("""
        import torch, rstfast.csrc as ext
        x, w, basis = torch.randn(1, 2, 4, 7, 7), torch.randn(3, 2, 1, 5), torch.randn(5, 4, 3, 3)
        print(tuple(ext.group_conv(x, w, basis, None, 4, 1, 1, 1, 1).shape))
        print(tuple(ext.lift_conv(x[:, :, 0], w[:, :, 0], basis).shape))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["(1,", "3,", "4,", "7,", "7)", "(1,", "3,", "4,", "5,", "5)"]


def test_unavailable_reason_names_the_device(cpp):
    assert cpp.unavailable_reason(torch.device("cpu")) is None
    assert "meta" in cpp.unavailable_reason(torch.device("meta"))
    if not torch.cuda.is_available():
        assert "CUDA" in cpp.unavailable_reason(torch.device("cuda"))


def _small_problem(num_rotations=2, num_scales=2, kernel=5):
    """Random float64 basis [F, R*S, K, K], zero outside the box of each scale (3, 5, ...)."""
    basis = torch.randn(3, num_rotations, num_scales, kernel, kernel, dtype=torch.float64)
    for s in range(num_scales):
        n = min(kernel, 3 + 2 * s)
        off = (kernel - n) // 2
        mask = torch.zeros(kernel, kernel, dtype=torch.bool)
        mask[off:off + n, off:off + n] = True
        basis[:, :, s][..., ~mask] = 0
    return basis.reshape(3, -1, kernel, kernel)


def test_gradcheck_float64(cpp):
    basis = _small_problem()
    support = ref.basis_support(basis, 2)
    x5 = torch.randn(1, 2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    w5 = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: cpp.group_conv(x, w, basis, b, 2, 2, 2, 2, 2, support), (x5, w5, bias),
        fast_mode=True)
    x4 = torch.randn(2, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    w4 = torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: cpp.lift_conv(x, w, basis, b, 1, 1, support), (x4, w4, bias),
        fast_mode=True)


def test_opcheck_registrations(cpp):
    """Schema, fake (meta) kernels and autograd registration of the torch.library ops."""
    basis = _small_problem().float()
    support = list(ref.basis_support(basis, 2))
    x5 = torch.randn(2, 2, 4, 6, 5, requires_grad=True)
    w5 = torch.randn(3, 2, 2, 3, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    torch.library.opcheck(torch.ops.rstfast.group_conv_forward.default,
                          (x5, w5, basis, bias, 2, 2, 1, 1, 2, support))
    x4 = torch.randn(2, 2, 6, 7, requires_grad=True)
    w4 = torch.randn(3, 2, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.rstfast.lift_conv_forward.default,
                          (x4, w4, basis, None, 2, 0, support))


def test_bad_arguments_name_the_argument(cpp):
    basis = _small_problem().float()
    x = torch.randn(1, 2, 4, 6, 6)
    with pytest.raises(ValueError, match="rotation_size"):
        cpp.group_conv(x, torch.randn(3, 2, 3, 3), basis, None, 2, 3, 1, 1, 0, None)
    with pytest.raises(ValueError, match="support"):
        cpp.group_conv(x, torch.randn(3, 2, 1, 3), basis, None, 2, 1, 1, 1, 0, [4])
    with pytest.raises(ValueError, match="weight"):
        cpp.lift_conv(torch.randn(1, 2, 6, 6), torch.randn(3, 5, 3), basis, None, 1, 0, None)
    with pytest.raises(TypeError, match="float32 and float64"):
        cpp.lift_conv(torch.randn(1, 2, 6, 6).half(), torch.randn(3, 2, 3).half(), basis.half(),
                      None, 1, 0, None)


def _nvcc_include_flags():
    """The include flags nvcc itself uses (from ``nvcc --dryrun``): CUDA runtime headers, CCCL."""
    result = subprocess.run(["nvcc", "--dryrun", "-c", "probe.cu"], capture_output=True, text=True)
    flags = []
    for line in (result.stdout + result.stderr).splitlines():
        for key in ("INCLUDES=", "SYSTEM_INCLUDES="):
            if key in line and line.lstrip("#$ ").startswith(key):
                flags += shlex.split(line.split("=", 1)[1])
    return flags


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found on PATH")
def test_cuda_kernels_compile_with_nvcc(tmp_path):
    """Compile only: rs_conv_cuda.cu (the kernels, which include no torch header) for sm_90."""
    result = subprocess.run(["nvcc", "-arch=sm_90", "-O3", "-std=c++17", "-c",
                             str(CSRC / "rs_conv_cuda.cu"), "-o", str(tmp_path / "k.o")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA headers) not found on PATH")
def test_cuda_glue_compiles(tmp_path):
    """Syntax check of rs_conv_cuda_glue.cpp (the ATen side) against torch's c10/cuda headers.

    CPU wheels of torch lack the CMake-generated c10/cuda/impl/cuda_cmake_macros.h; an empty
    stand-in is used then (it only defines build-configuration macros)."""
    from torch.utils.cpp_extension import include_paths
    torch_include = Path(include_paths()[0])
    if not (torch_include / "c10" / "cuda" / "CUDAStream.h").exists():
        pytest.skip("this torch install has no c10/cuda headers")
    stub = tmp_path / "stub"
    if not (torch_include / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text("#pragma once\n")
    compiler = os.environ.get("CXX", "c++")
    command = [compiler, "-fsyntax-only", "-std=c++20", "-I", str(CSRC), "-isystem", str(stub)]
    command += _nvcc_include_flags()
    for path in include_paths():
        command += ["-isystem", path]
    result = subprocess.run(command + [str(CSRC / "rs_conv_cuda_glue.cpp")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


BROKEN_BUILD_SCRIPT = textwrap.dedent("""
    import json, warnings
    import torch
    from rstfast import backends
    from rstfast.nn import GroupConv
    from conftest import load_golden

    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        module = backends.resolve("cpp", torch.device("cpu"))
        arrays, meta = load_golden("layer_group_E_rot8_Lr4_Ls1.npz")
        a = meta["args"]
        layer = GroupConv(a["in_channels"], a["out_channels"], a["scale_size"],
                          a["rotation_size"], a["kernel_size"], a["effective_size"],
                          scales=a["scales"], rotations=a["rotations"], stride=a["stride"],
                          padding=a["padding"], bias=a["bias"], basis_type=a["basis_type"],
                          backend="cpp", **a["kw"])
        layer.load_state_dict({"weight": arrays["weight"], "bias": arrays["bias"],
                               "basis": arrays["basis"]})
        y = layer(arrays["x"])
    scale = arrays["y_f64"].abs().max().item()
    print(json.dumps({
        "module": module.__name__,
        "warnings": [str(w.message) for w in caught],
        "rel_error": (y.double() - arrays["y_f64"]).abs().max().item() / scale,
    }))
""")


def test_broken_build_falls_back_with_one_warning(tmp_path):
    """A compiler that does not exist, a fresh build folder: the "cpp" backend warns (naming the
    log file), resolves to the reference, and a layer with backend="cpp" still gives the
    original's numbers."""
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"),
               RSTFAST_BUILD_DIR=str(tmp_path / "build"),
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"),
                                           os.environ.get("PYTHONPATH", "")]))
    env.pop("RSTFAST_VERBOSE_BUILD", None)
    result = subprocess.run([sys.executable, "-c", BROKEN_BUILD_SCRIPT], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"] == "rstfast.reference.functional"
    build_warnings = [w for w in report["warnings"]
                      if w.startswith("rstfast: building the rstfast_cpu extension failed")]
    assert len(build_warnings) == 1, report["warnings"]
    log = tmp_path / "build" / "rstfast_cpu" / "rstfast_build_error.log"
    assert str(log) in build_warnings[0] and log.exists()
    assert any("falls back to 'reference'" in w for w in report["warnings"]), report["warnings"]
    assert report["rel_error"] <= 1e-5
