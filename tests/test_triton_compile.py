"""The Triton kernels compile to GPU machine code without a GPU.

The interpreter (``test_triton_kernels.py``) proves the kernels' arithmetic but not that they lower
to PTX and cubin: ``tl.dot`` tile shapes, dtypes, shared memory and the autotuning configs are only
checked by the compiler. Here every kernel is compiled ahead of time with the ``ptxas`` bundled in
the Triton wheel for Hopper (sm_90: H100/H200) and Ampere (sm_80): every autotuning config in
float32, and the first config for TF32, bfloat16 and float16 tiles and for each constexpr branch.
Exact float32 (the default) multiplies on the FMA units; the other precisions must use tensor cores.

The compiler runs in one subprocess without ``TRITON_INTERPRET``: Triton decides at import time
whether its own library functions are interpreted, so it cannot compile in an interpreting process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

# Shared memory per block on each architecture (bytes, opt-in maximum).
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 90: 227 * 1024}

# kernel -> (module, kernel and configs attribute names, pointer arguments and their element type
#            ("x": the activation dtype), boolean constexpr flag or None)
KERNELS = {
    "forward": ("rs_conv_fwd", "_rs_conv_fwd_kernel",
                {"x_ptr": "x", "w_ptr": "fp32", "bias_ptr": "fp32", "y_ptr": "x",
                 "tables_ptr": "i64"}, "HAS_BIAS"),
    "backward_input": ("rs_conv_bwd", "_rs_conv_bwd_input_kernel",
                       {"gy_ptr": "x", "w_ptr": "fp32", "dx_ptr": "x", "tables_ptr": "i64"}, None),
    "backward_filters": ("rs_conv_bwd", "_rs_conv_bwd_filter_kernel",
                         {"x_ptr": "x", "gy_ptr": "x", "dw_ptr": "fp32", "tables_ptr": "i64"},
                         None),
}
NUM_CONFIGS = 4            # len(_CONFIGS) of both kernel modules; checked in the subprocess
# name -> (activation element type, PRECISION constexpr): what jit.dot_options gives on a GPU.
PRECISIONS = {"fp32": ("fp32", "ieee"), "tf32": ("fp32", "tf32"), "bf16": ("bf16", None),
              "fp16": ("fp16", None)}


def _cases():
    for kernel, (_, _, _, flag) in KERNELS.items():
        for index in range(NUM_CONFIGS):
            yield kernel, index, "fp32", 90, True
        if flag is not None:
            yield kernel, 0, "fp32", 90, False
        for precision in ("tf32", "bf16", "fp16"):
            for arch in (80, 90):
                yield kernel, 0, precision, arch, True


CASES = list(_cases())


def _case_id(case):
    return "-".join(str(part) for part in case)


def _compile(kernel, config_index, precision, arch, flag):
    """Compile one case; returns what the test checks."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    module_name, kernel_name, pointers, flag_name = KERNELS[kernel]
    module = importlib.import_module("rstfast.triton." + module_name)
    assert len(module._CONFIGS) == NUM_CONFIGS, "update NUM_CONFIGS"
    config = module._CONFIGS[config_index]
    element, input_precision = PRECISIONS[precision]
    constexprs = dict(config.kwargs, PRECISION=input_precision, UPCAST=False)
    if flag_name is not None:
        constexprs[flag_name] = flag
    fn = JITFunction(getattr(module, kernel_name).fn)
    assert set(constexprs) <= set(fn.arg_names), "a constexpr name is not a kernel argument"
    signature = {}
    for name in fn.arg_names:
        if name in pointers:
            signature[name] = "*" + (element if pointers[name] == "x" else pointers[name])
        else:
            signature[name] = "constexpr" if name in constexprs else "i32"
    compiled = triton.compile(ASTSource(fn, signature, constexprs),
                              target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": config.num_warps,
                                       "num_stages": config.num_stages,
                                       "enable_fp_fusion": False})    # as jit.LazyKernel launches
    ptx = compiled.asm["ptx"]
    return {"cubin_bytes": len(compiled.asm["cubin"]), "shared": compiled.metadata.shared,
            "target": ".target sm_%d" % arch in ptx, "mma": "mma" in ptx,
            "fma": "fma.rn.f32" in ptx}


@pytest.fixture(scope="module")
def compiled():
    """Every case compiled in one subprocess: ``{case id: result or error text}``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_kernel_compiles_for_gpu(case, compiled):
    kernel, _, precision, arch, _ = case
    result = compiled[_case_id(case)]
    assert isinstance(result, dict), f"{_case_id(case)} failed to compile:\n{result}"
    assert result["cubin_bytes"] > 0 and result["target"]
    if PRECISIONS[precision][1] == "ieee":
        assert result["fma"], "exact float32 products should run as FMA"
    else:
        assert result["mma"], "tl.dot did not lower to tensor-core instructions"
    assert result["shared"] <= SHARED_MEMORY_LIMIT[arch], (
        f"{kernel} needs {result['shared']} bytes of shared memory on sm_{arch}")


if __name__ == "__main__":
    import traceback
    results = {}
    for case in CASES:
        try:
            results[_case_id(case)] = _compile(*case)
        except Exception:                     # reported per case by the test
            results[_case_id(case)] = traceback.format_exc()[-3000:]
    print(json.dumps(results))
