"""Per-layer benchmarks at the paper models' shapes: forward (no grad) and forward+backward."""
from . import cases


def test_layer(bench, settings, device, layer_case, mode, backend, runnable):
    step, setup, flops = cases.layer_run(layer_case, backend, settings["batch"], device,
                                         backward=mode == "forward+backward")
    info = {"kind": "layer", "case": layer_case.name, "mode": mode, "backend": backend,
            "models": list(layer_case.models)}
    spec = {"kind": "layer", "case": cases.case_spec(layer_case), "mode": mode,
            "backend": backend, "batch": settings["batch"]}
    bench.run(step, setup, flops, info, spec)
