"""The benchmark suite in quick mode (small shapes, few rounds), its report and the scaling sweep
run end to end, so they never rot. Times are recorded, never asserted."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["RSTFAST_BENCH_QUICK"] = "1"
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_quick_suite_report_and_scaling(tmp_path):
    results = tmp_path / "quick.json"
    # The harness is the same for every backend (each case: timing, then memory in a fresh
    # process): the two baselines and one fast backend; the backends' numbers have their own tests.
    _run(["-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
          "--bench-backends", "reference,original,fft", f"--benchmark-json={results}"],
         tmp_path)
    rows = [b["extra_info"] for b in json.loads(results.read_text())["benchmarks"]]
    measured = {(r["case"], r["mode"], r["backend"]) for r in rows}
    layer_keys = {(r["case"], r["mode"]) for r in rows if r["kind"] == "layer"}
    assert len(layer_keys) == 4                                  # 2 quick layers x 2 modes
    for case, mode in layer_keys:
        assert {(case, mode, "reference"), (case, mode, "original")} <= measured
    for r in rows:
        assert r["time_median_s"] > 0 and len(r["time_rounds_s"]) >= 1
        assert r["peak_memory_bytes"] > 0
        assert 0 < r["flops_nonzero"] <= r["flops_dense"]
        assert r["speedup_vs_reference"] is not None

    _run(["-m", "benchmarks.report", str(results)], tmp_path)
    report = (tmp_path / "quick_report.md").read_text()
    for heading in ("## Summary", "## Per layer — forward", "## Per layer — forward+backward",
                    "## Training step"):
        assert heading in report
    assert (tmp_path / "quick_report.png").stat().st_size > 10_000

    _run(["-m", "benchmarks.scaling", "--quick", "--out", str(tmp_path)], tmp_path)
    sweep = json.loads((tmp_path / "scaling_cpu_quick.json").read_text())
    assert {r["backend"] for r in sweep["rows"]} >= {"reference", "original"}
    assert (tmp_path / "scaling_cpu_quick.png").stat().st_size > 10_000
