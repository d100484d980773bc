"""Triton backend on the real layer shapes: time, peak memory and error against the baselines.

Layers of ``mnist_ses_vector_56_rot_8_interrot_4`` and ``mnist_ses_scalar_56_rot_8`` (basis E,
K = 15, R = 8, S = 4, scales [1.7, 2.45, 3.54, 5.1], padding 7, bias): lifting 1->32 @ 56x56,
then 32->63 @ 28x28 and 63->95 @ 14x14 (group layers with rotation_size 4 in the vector model,
lifting layers in the scalar model). Methods: ``original`` (the original algorithm,
``benchmarks/original.py``), ``reference`` (expand the dense filter + one grouped cuDNN conv2d),
``triton`` (float32, exact), ``triton-tf32`` and ``triton-bf16`` (autocast) for information, and
``cuda`` (the C++/CUDA extension) when it builds. TF32 is off for cuDNN and matmul. TFLOP/s count
only the non-zero taps (spec layers.md §5); forward+backward
counts 3x the forward work. Writes one JSON file.

    python benchmarks/gpu_triton.py --device cuda [--batch 128] [--out FILE]
    TRITON_INTERPRET=1 python benchmarks/gpu_triton.py --device cpu --tiny   # dry run, no GPU
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rstfast.reference import functional as ref            # noqa: E402
from rstfast.reference.bases import steerable_basis         # noqa: E402

SCALES = [1.7, 2.45, 3.54, 5.1]
NUM_ROTATIONS, KERNEL_SIZE, PADDING = 8, 15, 7
# (model, layer, kind, C, O, H, rotation_size); conv1 (lifting 1->32 @ 56) is the same in both.
LAYERS = [
    ("mnist_ses_vector_56_rot_8_interrot_4", "conv1", "lift", 1, 32, 56, 1),
    ("mnist_ses_vector_56_rot_8_interrot_4", "conv2", "group", 32, 63, 28, 4),
    ("mnist_ses_vector_56_rot_8_interrot_4", "conv3", "group", 63, 95, 14, 4),
    ("mnist_ses_scalar_56_rot_8", "conv2", "lift", 32, 63, 28, 1),
    ("mnist_ses_scalar_56_rot_8", "conv3", "lift", 63, 95, 14, 1),
]
TINY_CHANNELS = {1: 1, 32: 2, 63: 3, 95: 2}


def _methods():
    """name -> (backend module, context manager factory)."""
    import rstfast.kernels as triton_backend
    from rstfast.kernels import jit as triton_jit
    methods = {"reference": (ref, contextlib.nullcontext)}
    try:
        from benchmarks import original
        methods["original"] = (original, contextlib.nullcontext)
    except ImportError as exc:
        print(f"original algorithm unavailable: {exc}", file=sys.stderr)

    @contextlib.contextmanager
    def tf32():
        triton_jit.ALLOW_TF32 = True
        try:
            yield
        finally:
            triton_jit.ALLOW_TF32 = False

    def bf16():
        return torch.autocast(DEVICE.type, dtype=torch.bfloat16)

    methods["triton"] = (triton_backend, contextlib.nullcontext)
    methods["triton-tf32"] = (triton_backend, tf32)
    methods["triton-bf16"] = (triton_backend, bf16)
    if DEVICE.type == "cuda":                     # the C++/CUDA extension, for comparison
        import rstfast.csrc as cuda_backend
        reason = cuda_backend.unavailable_reason(DEVICE)
        if reason is None:
            methods["cuda"] = (cuda_backend, contextlib.nullcontext)
        else:
            print(f"CUDA extension unavailable: {reason}", file=sys.stderr)
    return methods


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn, repeats: int) -> float:
    fn()
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _peak_mb(fn) -> float:
    if DEVICE.type != "cuda":
        return float("nan")
    _sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    _sync()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def _nonzero_flops(batch, cin, cout, out_size, rotation_size, support):
    """Forward FLOPs (2 x multiply-adds) over the non-zero taps only (layers.md §5; scale_size 1,
    rotation_size 1 for lifting)."""
    taps = NUM_ROTATIONS * sum(n * n for n in support) * rotation_size
    return 2 * batch * cout * cin * out_size * out_size * taps


def run_layer(model, layer, kind, cin, cout, size, rotation_size, basis, support, batch,
              repeats, methods):
    shape = (batch, cin, size, size) if kind == "lift" else \
        (batch, cin, NUM_ROTATIONS * len(SCALES), size, size)
    num_funcs = basis.shape[0]
    # The first layer's input is data: no input gradient there, as in training.
    x = torch.randn(shape, device=DEVICE, requires_grad=layer != "conv1")
    wshape = (cout, cin, num_funcs) if kind == "lift" else (cout, cin, rotation_size, num_funcs)
    weight = (torch.randn(wshape, device=DEVICE) / math.sqrt(cin * rotation_size * num_funcs)
              ).requires_grad_()
    bias = torch.randn(cout, device=DEVICE, requires_grad=True)
    args = dict(stride=1, padding=PADDING, support=support)
    if kind == "group":
        args.update(num_rotations=NUM_ROTATIONS, rotation_size=rotation_size, scale_size=1)
    out_size = size + 2 * PADDING - KERNEL_SIZE + 1
    flops = _nonzero_flops(batch, cin, cout, out_size, rotation_size, support)
    grad_seed = None
    y_ref = None
    rows = []
    for name, (backend, context) in methods.items():
        op = backend.lift_conv if kind == "lift" else backend.group_conv

        def forward():
            with context():
                return op(x, weight, basis, bias, **args)

        def forward_backward():
            y = forward()
            y.backward(grad_seed.to(y.dtype))
            x.grad = weight.grad = bias.grad = None

        def forward_eval():
            with torch.no_grad():
                forward()

        try:
            y = forward()
            if grad_seed is None:
                grad_seed = torch.randn_like(y, dtype=torch.float32)
            y.backward(grad_seed.to(y.dtype))
            grads = [t.grad.detach().clone() if t.grad is not None else torch.zeros(())
                     for t in (x, weight, bias)]
            x.grad = weight.grad = bias.grad = None
            y = y.detach().float()
            if y_ref is None:
                y_ref, grads_ref = y, grads
            errors = {label: ((a.float() - b).abs().max() / b.abs().max()).item()
                      for label, a, b in zip(("y", "grad_x", "grad_weight", "grad_bias"),
                                             [y] + grads, [y_ref] + grads_ref) if b.dim()}
            del y, grads
            row = dict(model=model, layer=layer, kind=kind, method=name, batch=batch,
                       shape=list(shape), out_channels=cout, rotation_size=rotation_size,
                       forward_ms=_time_ms(forward_eval, repeats),
                       forward_backward_ms=_time_ms(forward_backward, repeats),
                       peak_forward_backward_mb=_peak_mb(forward_backward),
                       peak_forward_eval_mb=_peak_mb(forward_eval),
                       rel_error_vs_first_method=errors)
            row["nonzero_tflops_forward"] = flops / row["forward_ms"] / 1e9
            row["nonzero_tflops_forward_backward"] = 3 * flops / row["forward_backward_ms"] / 1e9
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:     # e.g. out of memory
            row = dict(model=model, layer=layer, method=name, batch=batch, error=str(exc)[:300])
        print(json.dumps(row), flush=True)
        rows.append(row)
        if DEVICE.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def eval_cache_effect(layer, basis, support, batch, repeats):
    """Triton forward under no_grad with the eval-mode filter cache vs re-expanding every call
    (a group layer)."""
    import rstfast.kernels as triton_backend
    from rstfast.kernels import autograd as triton_autograd
    model, name, _, cin, cout, size, lr = layer
    x = torch.randn(batch, cin, NUM_ROTATIONS * len(SCALES), size, size, device=DEVICE)
    weight = torch.randn(cout, cin, lr, basis.shape[0], device=DEVICE)
    args = dict(num_rotations=NUM_ROTATIONS, rotation_size=lr, scale_size=1, stride=1,
                padding=PADDING, support=support)

    def cached():
        with torch.no_grad():
            triton_backend.group_conv(x, weight, basis, None, **args)

    def uncached():
        triton_autograd._cache.clear()
        cached()

    return dict(model=model, layer=name, batch=batch, cached_ms=_time_ms(cached, repeats),
                uncached_ms=_time_ms(uncached, repeats))


def main():
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true",
                        help="a few channels, 8x8 inputs, batch 1 (CPU interpreter dry run)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "triton_gpu.json"))
    opts = parser.parse_args()
    DEVICE = torch.device(opts.device)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    batch, repeats = opts.batch, opts.repeats
    layers = LAYERS
    if opts.tiny:
        batch, repeats = 1, 1
        layers = [(m, l, k, TINY_CHANNELS[c], TINY_CHANNELS[o], 8, lr)
                  for m, l, k, c, o, _, lr in LAYERS[:3]]
    rotations = [2 * math.pi * r / NUM_ROTATIONS for r in range(NUM_ROTATIONS)]
    basis = steerable_basis("E", KERNEL_SIZE, rotations, SCALES, 7, mult=1.5, max_order=4,
                            spt=3.5).to(DEVICE)
    support = ref.basis_support(basis, NUM_ROTATIONS)
    methods = _methods()
    import triton
    device_name = torch.cuda.get_device_name() if DEVICE.type == "cuda" else platform.processor()
    result = dict(device=device_name, torch=torch.__version__, triton=triton.__version__,
                  batch=batch, support=list(support), tiny=opts.tiny, layers=[],
                  eval_cache=[], interpreter=os.environ.get("TRITON_INTERPRET", "0"))
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for layer in layers:                        # rewritten after every layer: partial results
        result["layers"] += run_layer(*layer, basis, support, batch, repeats, methods)
        out.write_text(json.dumps(result, indent=1))
    for cache_batch in (1,) if opts.tiny else (8, batch):
        result["eval_cache"].append(eval_cache_effect(layers[2], basis, support, cache_batch,
                                                      repeats))
        print(json.dumps(result["eval_cache"][-1]), flush=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


DEVICE = torch.device("cpu")

if __name__ == "__main__":
    main()
