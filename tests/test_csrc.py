"""C++/CUDA-specific behaviour of the ``cpp`` and ``cuda`` backends: the JIT build (fallback with one
warning when it fails, a build folder per source so checkouts do not rebuild each other), the
first call loading the extension, and the CUDA sources compiling with nvcc. Their numbers are
checked with every other backend's in ``test_backend_contract.py``.
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

from conftest import REPO

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


def test_first_call_loads_the_extension(cpp):
    """In a fresh process, calling a kernel before anything else builds/loads the extension."""
    code = textwrap.dedent("""
        import torch, rstfast.csrc as ext
        from rstfast import filters
        from rstfast.geometry import group_geometry
        x, w, basis = torch.randn(1, 2, 4, 7, 7), torch.randn(3, 2, 1, 5), torch.randn(5, 4, 3, 3)
        geo = group_geometry(2, 3, basis, 4, 1, 1, 1, 1)
        print(tuple(ext.conv_forward(x, filters.expand_cropped(w, basis, geo), None, geo).shape))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["(1,", "3,", "4,", "7,", "7)"]


def test_unavailable_reason_names_the_device(cpp):
    assert cpp.unavailable_reason(torch.device("cpu")) is None
    assert "meta" in cpp.unavailable_reason(torch.device("meta"))
    if not torch.cuda.is_available():
        assert "CUDA" in cpp.unavailable_reason(torch.device("cuda"))


def test_build_folder_is_keyed_by_the_sources(tmp_path, monkeypatch):
    """Two checkouts (or a checkout and an installed copy) with different sources build into
    different folders; the same sources share one (no rebuild)."""
    from rstfast.csrc import build
    monkeypatch.setenv("RSTFAST_BUILD_DIR", str(tmp_path))
    first = build.build_directory("rstfast_cpu", build.CPU_SOURCES, cuda=False)
    assert first == build.build_directory("rstfast_cpu", build.CPU_SOURCES, cuda=False)
    copy = tmp_path / "other_checkout"
    shutil.copytree(build.SOURCE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(build, "SOURCE_DIR", copy)
    assert build.build_directory("rstfast_cpu", build.CPU_SOURCES, cuda=False) == first
    with open(copy / "rs_conv_cpu.cpp", "a") as source:
        source.write("\n// edited\n")
    edited = build.build_directory("rstfast_cpu", build.CPU_SOURCES, cuda=False)
    assert edited != first and Path(edited).parent == Path(first).parent
    with open(copy / "geometry.h", "a") as header:
        header.write("\n// edited\n")
    assert build.build_directory("rstfast_cpu", build.CPU_SOURCES, cuda=False) != edited


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
        module = backends.resolve("cpp", torch.device("cpu")).module
        arrays, meta = load_golden("original/layer_group_E_rot8_Lr4_Ls1.npz")
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
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"] == "rstfast.reference.functional"
    build_warnings = [w for w in report["warnings"]
                      if w.startswith("rstfast: building the rstfast_cpu extension failed")]
    assert len(build_warnings) == 1, report["warnings"]
    logs = list((tmp_path / "build").glob("rstfast_cpu-*/rstfast_build_error.log"))
    assert len(logs) == 1 and str(logs[0]) in build_warnings[0]
    assert any("falls back to 'reference'" in w for w in report["warnings"]), report["warnings"]
    assert report["rel_error"] <= 1e-5
