"""pytest-benchmark suite of the roto-scale convolutions: parametrisation, measuring, JSON extras.

Full CPU run (writes the JSON the report reads)::

    python -m pytest benchmarks --benchmark-only --bench-devices cpu \
        --benchmark-json benchmarks/results/cpu.json
    python -m benchmarks.report benchmarks/results/cpu.json

Quick mode (CI; small shapes, few rounds): ``--bench-quick`` or ``RSTFAST_BENCH_QUICK=1``.
Cases are ordered device > case > mode > backend, so every backend of a case is measured back to back.
"""
from __future__ import annotations

import os
from collections import Counter

import pytest
import torch

from . import cases, measure, memprobe, report

BACKEND_NAMES = cases.backend_names()
LAYER_MODES = ("forward", "forward+backward")


def pytest_addoption(parser):
    group = parser.getgroup("rstfast benchmarks")
    group.addoption("--bench-quick", action="store_true",
                    default=os.environ.get("RSTFAST_BENCH_QUICK", "") not in ("", "0"),
                    help="small shapes, few rounds (also RSTFAST_BENCH_QUICK=1)")
    group.addoption("--bench-devices", default=None,
                    help="comma-separated devices (default: cpu, plus cuda when available)")
    group.addoption("--bench-backends", default=",".join(BACKEND_NAMES),
                    help=f"comma-separated subset of {','.join(BACKEND_NAMES)}")
    group.addoption("--bench-batch", type=int, default=None,
                    help="batch size (default 8; quick mode 2)")
    group.addoption("--bench-rounds", type=int, default=None,
                    help="most timed rounds per case after one warm-up round (default 3; quick 2)")
    group.addoption("--bench-case-seconds", type=float, default=60.0,
                    help="timed rounds per case are cut to about this many seconds (at least 2 "
                         "rounds, 1 when the warm-up alone took longer)")


def bench_settings(config):
    quick = config.getoption("--bench-quick")
    devices = config.getoption("--bench-devices")
    if devices is None:
        devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    backends = [b.strip() for b in config.getoption("--bench-backends").split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKEND_NAMES))
    if unknown:
        raise pytest.UsageError(f"--bench-backends: unknown {unknown}; expected names from {BACKEND_NAMES}")
    return {
        "quick": quick,
        "devices": [d.strip() for d in devices.split(",") if d.strip()],
        "backends": backends,
        "batch": config.getoption("--bench-batch") or (2 if quick else 8),
        "rounds": config.getoption("--bench-rounds") or (2 if quick else 3),
        "warmup": 1,
        "case_seconds": config.getoption("--bench-case-seconds"),
        "layers": cases.QUICK_LAYERS if quick else cases.PAPER_LAYERS,
        "models": cases.QUICK_MODELS if quick else cases.PAPER_MODELS,
    }


def pytest_configure(config):
    config._rstfast_bench = bench_settings(config)
    config._rstfast_loadavg_start = [round(v, 2) for v in os.getloadavg()]
    # Exact float32 everywhere: the fast backends match the original without TF32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def pytest_generate_tests(metafunc):
    settings = metafunc.config._rstfast_bench
    if "layer_case" in metafunc.fixturenames:
        params = [(d, c, m, b) for d in settings["devices"] for c in settings["layers"]
                  for m in LAYER_MODES for b in settings["backends"]]
        metafunc.parametrize("device,layer_case,mode,backend", params,
                             ids=[f"{d}-{c.name}-{m}-{b}".replace(" ", "_") for d, c, m, b in params])
    elif "inference_mode" in metafunc.fixturenames:
        params = [(d, n, m, b) for d in settings["devices"] for n in settings["models"]
                  for m in cases.INFERENCE_MODES for b in settings["backends"]]
        metafunc.parametrize("device,model_name,inference_mode,backend", params,
                             ids=[f"{d}-{n}-{m}-{b}".replace(" ", "_").replace(",", "")
                                  for d, n, m, b in params])
    elif "model_name" in metafunc.fixturenames:
        params = [(d, n, b) for d in settings["devices"] for n in settings["models"]
                  for b in settings["backends"]]
        metafunc.parametrize("device,model_name,backend", params,
                             ids=[f"{d}-{n}-{b}" for d, n, b in params])


def pytest_benchmark_update_machine_info(config, machine_info):
    settings = config._rstfast_bench
    machine_info["rstfast"] = {d: measure.machine_info(d) for d in settings["devices"]
                               if d == "cpu" or torch.cuda.is_available()}
    machine_info["loadavg_at_start"] = config._rstfast_loadavg_start
    machine_info["rstfast_settings"] = {k: settings[k] for k in ("quick", "batch", "rounds", "warmup",
                                                                 "case_seconds")}


_skip_reasons = Counter()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    result = outcome.get_result()
    if "bench" not in item.fixturenames:
        return
    if result.skipped and isinstance(result.longrepr, tuple):
        _skip_reasons[result.longrepr[2].removeprefix("Skipped: ")] += 1
    elif result.failed and call.excinfo is not None:
        error = f"{call.excinfo.typename}: {str(call.excinfo.value).splitlines()[0][:160]}"
        _skip_reasons[f"FAILED with backend {item.callspec.params['backend']!r}: {error}"] += 1


def pytest_benchmark_update_json(config, benchmarks, output_json):
    report.add_ratios(output_json["benchmarks"])
    output_json["rstfast_skipped"] = dict(_skip_reasons)
    output_json["machine_info"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]


@pytest.fixture
def settings(request):
    return request.config._rstfast_bench


@pytest.fixture
def runnable(backend, device):
    """Skips with the reason when ``backend`` cannot be timed on ``device``."""
    reason = cases.backend_or_reason(backend, device)
    if reason is not None:
        pytest.skip(reason)


class Bench:
    """Runs one case under pytest-benchmark and records the suite's metrics in ``extra_info``."""

    def __init__(self, benchmark, device: str, settings):
        self.benchmark = benchmark
        self.device = torch.device(device)
        self.settings = settings

    def rounds_within_budget(self, warmup_s: float) -> int:
        """``--bench-rounds`` cut to about ``--bench-case-seconds``: at least 2, or 1 when the
        warm-up alone exceeded the budget."""
        budget, most = self.settings["case_seconds"], self.settings["rounds"]
        if warmup_s > budget:
            return 1
        return max(min(most, int(budget / warmup_s)), min(2, most))

    def run(self, step, setup, flops, info, memory_spec):
        """Time ``step`` (``setup`` runs untimed before every round); ``flops`` ``{"dense",
        "nonzero"}`` or a callable giving it after the rounds. Peak memory: on CUDA per timed round
        in this process; on CPU in a fresh process running ``memory_spec`` (see memprobe)."""
        timer = measure.RoundTimer(step, self.device)
        on_cuda = self.device.type == "cuda"
        memory = measure.PeakMemory(self.device) if on_cuda else None
        peaks = []

        def before_round():
            setup()
            if on_cuda:
                memory.start()

        def after_round():
            if on_cuda:
                peaks.append(memory.stop())

        load_before = os.getloadavg()[0]
        if self.benchmark.disabled:
            self.benchmark.pedantic(timer, setup=before_round, teardown=after_round)
            return
        for _ in range(self.settings["warmup"]):
            before_round()
            timer()
            after_round()
        warmup_s = timer.times[-1]
        del timer.times[:], peaks[:]
        rounds = self.rounds_within_budget(warmup_s)
        self.benchmark.pedantic(timer, setup=before_round, teardown=after_round, rounds=rounds)
        flops = flops() if callable(flops) else flops
        time_stats = measure.median_iqr(timer.times)
        load_after = os.getloadavg()[0]
        if on_cuda:
            peak = max(peaks)
            memory_method = "torch.cuda.max_memory_allocated above the start, max over timed rounds"
        else:
            peak = memprobe.probe_in_subprocess(memory_spec)
            memory_method = "peak RSS above the start, fresh process, one step (memprobe)"
        extra = self.benchmark.extra_info
        extra.update(info)
        extra.update({
            "device": self.device.type,
            "batch": self.settings["batch"],
            "time_median_s": time_stats["median"],
            "time_iqr_s": time_stats["iqr"],
            "time_rounds_s": list(timer.times),
            "warmup_s": warmup_s,
            "time_source": "cuda events" if on_cuda else "perf_counter",
            "peak_memory_bytes": peak,
            "memory_method": memory_method,
            "flops_dense": flops["dense"],
            "flops_nonzero": flops["nonzero"],
            "gflops_per_s_dense": flops["dense"] / time_stats["median"] / 1e9,
            "gflops_per_s_nonzero": flops["nonzero"] / time_stats["median"] / 1e9,
            "loadavg_1min_before": round(load_before, 2),
            "loadavg_1min_after": round(load_after, 2),
        })


@pytest.fixture
def bench(benchmark, device, settings):
    return Bench(benchmark, device, settings)
