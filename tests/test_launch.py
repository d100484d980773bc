"""The grid in parallel (rstfast.launch via rstfast.reproduce): two workers, a worker killed with
SIGKILL and the grid resumed, two reproduce commands on one folder, submitit's local executor,
checkpoint-and-requeue; results.yml parsed after each (one entry per run, nothing lost)."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from rstfast import launch, reproduce, train

from conftest import REPO
from test_reproduce import TINY, data_root, own_autotune_cache, session_cache_home  # noqa: F401  (fixtures)

RUNS = {("mnist_cnn_28", "rs-mnist"), ("mnist_ses_scalar_28_rot_1", "rs-mnist"),
        ("fmnist_cnn_28", "rs-fmnist"), ("fmnist_ses_scalar_28_rot_1", "rs-fmnist")}


def recorded(out):
    """(model, dataset) of every results.yml entry (the file must parse)."""
    return Counter((e["model"], e["dataset"]) for e in yaml.safe_load((out / "results.yml").read_text()))


def prepared(data_root, out, *extra):
    """The argv of the tiny grid, its datasets generated here (the synthetic sources are trusted
    only in this process)."""
    argv = TINY + ["--data-root", str(data_root), "--out", str(out), *extra]
    args = reproduce.build_parser().parse_args(argv)
    runs = reproduce.plan(reproduce.preset_from(args), "reproduce-cpu", out, str(data_root), "auto",
                          log=lambda *_: None)
    ready, failures = reproduce.prepare_datasets(runs, str(data_root), log=lambda *_: None)
    assert len(ready) == 4 and not failures
    return argv


def command(argv):
    return [sys.executable, "-m", "rstfast.reproduce", *argv]


def subprocess_env():
    """This process's environment (the test's decisions file included) for a reproduce process."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


def test_local_slots_divide_cores_and_gpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert [s.cores for s in launch.local_slots("cpu", 2)] == [(0, 1), (2, 3)]
    assert [s.cores for s in launch.local_slots("cpu", 4)] == [(0,), (1,), (2,), (3,)]
    assert [s.cores for s in launch.local_slots("cpu", 6)] == [(0,), (1,), (2,), (3,), (0,), (1,)]
    assert all(s.device is None and s.threads == len(s.cores) for s in launch.local_slots("cpu", 3))
    import torch
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [s.device for s in launch.local_slots("cuda", 3)] == ["cuda:0", "cuda:1", "cuda:0"]


@pytest.mark.parametrize("text, minutes", [("90", 90), ("90:30", 91), ("02:00:00", 120),
                                           ("1-00", 1440), ("1-12:30", 2190), ("0-00:00:30", 1)])
def test_slurm_time_formats(text, minutes):
    assert launch.parse_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "-5", "0", "1:2:3:4"])
def test_slurm_time_rejects(text):
    with pytest.raises(reproduce.UsageError, match="--slurm-time"):
        launch.parse_minutes(text)


def test_two_workers_finish_the_grid_longest_first(tmp_path, data_root, capsys):  # noqa: F811
    out = tmp_path / "out"
    assert reproduce.main(TINY + ["--data-root", str(data_root), "--out", str(out), "--jobs", "2"]) == 0
    log = capsys.readouterr().out
    assert recorded(out) == Counter(RUNS)
    starts = [line for line in log.splitlines() if ": training on " in line]
    assert len(starts) == 4 and "ses_scalar" in starts[0] and "ses_scalar" in starts[1]  # longest first
    assert "ETA ~" in starts[0] and "grid 4/4 done" in log
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(
        p.with_suffix(".log").name for p in (out / "models").glob("*.pt") if ".metrics" not in p.name)
    assert "| SESN | ses_scalar_28_rot_1 | C |" in (out / "table.md").read_text()
    assert reproduce.main(TINY + ["--data-root", str(data_root), "--out", str(out), "--jobs", "2"]) == 0
    assert capsys.readouterr().out.count("skipped") == 4 and recorded(out) == Counter(RUNS)


def test_worker_killed_mid_run_and_the_grid_resumed(tmp_path, data_root):  # noqa: F811
    out = tmp_path / "out"
    argv = prepared(data_root, out, "--epochs", "3", "--jobs", "2")
    parent = subprocess.Popen(command(argv), env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    killed = None
    while killed is None and parent.poll() is None:   # the first run that has finished an epoch
        for metrics in (out / "models").glob("*.metrics.json") if (out / "models").is_dir() else ():
            holder = (metrics.parent / metrics.name.replace(".metrics.json", ".lock")).read_text().split()
            if holder and int(holder[0]) != parent.pid:
                try:
                    os.kill(int(holder[0]), signal.SIGKILL)
                    killed = metrics.name.replace(".metrics.json", "")
                except ProcessLookupError:       # that one had just finished
                    continue
                break
        time.sleep(0.02)
    log = parent.communicate()[0]
    assert killed is not None, log
    assert parent.returncode == 1 and "killed by SIGKILL" in log, log
    entries = yaml.safe_load((out / "results.yml").read_text()) if (out / "results.yml").exists() else []
    assert not any(killed in e["save_model_path"] for e in entries or [])
    again = subprocess.run(command(argv), env=subprocess_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming after epoch" in again.stdout
    assert recorded(out) == Counter(RUNS)                # every run once, the killed one resumed


def test_two_reproduce_commands_on_one_folder(tmp_path, data_root):  # noqa: F811
    out = tmp_path / "out"
    argv = prepared(data_root, out)
    first, second = (subprocess.Popen(command(argv), env=subprocess_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for _ in range(2))
    logs = [p.communicate()[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, logs
    assert recorded(out) == Counter(RUNS)                # nothing doubled, nothing lost
    trained = sum(log.count(": test accuracy") for log in logs)
    assert trained == 4, logs                          # each run trained by exactly one of them


def test_submitit_local_executor_end_to_end(tmp_path, data_root, monkeypatch, capsys):  # noqa: F811
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    argv = TINY + ["--data-root", str(data_root), "--out", str(out), "--launcher", "submitit",
                   "--submitit-cluster", "local", "--slurm-time", "30", "--slurm-opt", "account=x"]
    assert reproduce.main(argv) == 0
    log = capsys.readouterr().out
    assert log.count("submitted as job") == 4 and "grid done" in log
    assert recorded(out) == Counter(RUNS)
    assert reproduce.main(TINY + ["--data-root", str(data_root), "--out", str(out), "--list"]) == 0
    assert capsys.readouterr().out.count("] done: --model") == 4
    assert reproduce.main(["--table-only", str(out / "results.yml")]) == 0


def test_slurm_options_reach_the_sbatch_file(tmp_path, data_root, monkeypatch, capsys):  # noqa: F811
    """No SLURM here: a stand-in sbatch (and srun) on PATH records the call; the job array's
    sbatch file submitit writes carries every option."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\n'
                                    'echo "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    argv = TINY + ["--data-root", str(data_root), "--out", str(out), "--launcher", "submitit",
                   "--submitit-cluster", "slurm", "--slurm-partition", "gpu", "--slurm-gpus-per-task", "1",
                   "--slurm-cpus-per-task", "8", "--slurm-time", "1-00:00:00", "--slurm-array-parallelism",
                   "2", "--slurm-opt", "account=proj", "qos=high", "--no-wait"]
    assert reproduce.main(argv) == 0
    assert capsys.readouterr().out.count("submitted as job 4242_") == 4
    (script,) = (out / "submitit").glob("*_submission.sh")
    text = script.read_text()
    for line in ("--partition=gpu", "--gpus-per-task=1", "--cpus-per-task=8", "--time=1440",
                 "--array=0-3%2", "--account=proj", "--qos=high", "--signal=USR2@", "--job-name=rstfast-reproduce-cpu"):
        assert f"#SBATCH {line}" in text, (line, text)
    assert len((bin_dir / "calls").read_text().splitlines()) == 1      # one job array
    monkeypatch.setenv("PATH", os.defpath)
    assert reproduce.main(argv) == 2                                    # no srun: one line
    assert "--launcher submitit: " in capsys.readouterr().err


def test_a_requeued_task_resumes_from_the_trainer_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    import numpy as np
    import torch
    from rstfast.data.generate import npz_bytes
    from test_train import TinyNet
    monkeypatch.setattr(train, "build_model", lambda name, basis, backend: TinyNet())
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        (folder / f"{split}.npz").write_bytes(npz_bytes(rng.integers(0, 255, (n, 28, 28)).astype(np.uint8),
                                                        np.arange(n) % 10))
    argv = ["--model", "mnist_cnn_28", "--data_dir", str(folder), "--epochs", "2", "--batch_size", "16",
            "--save_model_path", str(tmp_path / "run" / "m.pt"), "--results", str(tmp_path / "r.yml"),
            "--quiet", "--continue"]
    assert launch.TrainTask(argv + ["--stop-after", "1"])() is None   # the job is "preempted" here
    started = torch.load(tmp_path / "run" / "m.ckpt", weights_only=True)
    requeued = launch.TrainTask(argv).checkpoint()                    # what submitit calls
    assert requeued.function.argv == argv and not requeued.args
    result = requeued.function()
    ended = torch.load(tmp_path / "run" / "m.ckpt", weights_only=True)
    assert started["epoch"] == 1 and ended["epoch"] == 2
    assert ended["run_id"] == started["run_id"] == result["run_id"]   # resumed, not restarted
    assert [e["run_id"] for e in yaml.safe_load((tmp_path / "r.yml").read_text())] == [result["run_id"]]
