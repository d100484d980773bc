"""rstfast.results: results.yml lines that parse back to what was written, appends that are
validated, atomic, locked and once per run, whatever else writes or dies at the same time."""
import math
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
import yaml

from rstfast import results
from rstfast.cli import UsageError
from rstfast.files import FileLock

from conftest import REPO


@pytest.mark.parametrize("value", [None, True, False, 0, -3, 0.1, 1e-30, 5e-05, 1.5e+20, -2e-07, "plain", "it's", 'say "hi"',
                                   "two\nlines", "tab\there", "ünïcode", "# not a comment", "- dash",
                                   "key: value", [20, 40], [], {"main.0": "cpp", "main.4": "fft"}, {}])
def test_values_round_trip_through_yaml(value):
    line = results.entry_line({"model": "m", "acc": 0.5, "field": value})
    (entry,) = yaml.safe_load(line)
    assert entry["field"] == value and line.count("\n") == 1


def test_non_finite_floats_round_trip():
    (entry,) = yaml.safe_load(results.entry_line({"model": "m", "acc": float("nan"), "x": float("inf"),
                                                  "y": float("-inf")}))
    assert math.isnan(entry["acc"]) and entry["x"] == math.inf and entry["y"] == -math.inf


def test_append_after_a_line_without_final_newline(tmp_path):
    path = tmp_path / "results.yml"
    path.write_text("- {model: 'a', acc: 0.5}")           # edited by hand, no final newline
    assert results.append(path, {"model": "b", "acc": 0.25, "run_id": "x"}, log=print)
    assert [run["model"] for run in yaml.safe_load(path.read_text())] == ["a", "b"]
    assert path.read_text().endswith("}\n")


@pytest.mark.parametrize("text", ["- {model: 'a', acc: 0.5\n", "model: a\n", "- [1, 2]\n", "- {acc: 1}\n"])
def test_a_file_that_is_not_a_results_list_is_never_written(tmp_path, text):
    path = tmp_path / "results.yml"
    path.write_text(text)
    with pytest.raises(UsageError, match="results: "):
        results.append(path, {"model": "b", "acc": 0.25}, log=print)
    with pytest.raises(UsageError, match="results: "):
        results.check_writable(path)
    assert path.read_text() == text


def test_a_run_is_recorded_once(tmp_path):
    path = tmp_path / "sub" / "results.yml"               # the folder is created
    said = []
    entry = {"model": "a", "acc": 0.5, "run_id": "abc"}
    assert results.append(path, entry, log=said.append)
    assert not results.append(path, dict(entry, seconds_per_epoch=9.0), log=said.append)  # same run
    assert results.append(path, dict(entry, run_id="def"), log=said.append)             # another run
    assert [run["run_id"] for run in results.load(path)] == ["abc", "def"]
    assert said == [f"this run is already in {path}: not appended again"]


def _append_many(path, worker, count):
    for i in range(count):
        results.append(path, {"model": f"w{worker}", "acc": i / count, "run_id": f"{worker}-{i}"},
                       log=lambda *_: None)


def test_concurrent_appends_lose_nothing(tmp_path):
    path = tmp_path / "results.yml"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(path, w, 15)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join()
    assert all(p.exitcode == 0 for p in workers)
    ids = [run["run_id"] for run in results.load(path)]
    assert sorted(ids) == sorted(f"{w}-{i}" for w in range(4) for i in range(15))


def test_a_writer_killed_while_holding_the_lock_blocks_nobody(tmp_path):
    path = tmp_path / "results.yml"
    results.append(path, {"model": "a", "acc": 0.5, "run_id": "1"}, log=print)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rstfast.results import lock_of; "
         "lock = lock_of(sys.argv[1]); lock.acquire(); "
         "open(sys.argv[1] + '.half', 'w').write('- {model: '); print('held', flush=True); time.sleep(60)",
         str(path)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert holder.stdout.readline().strip() == "held"
    assert results.lock_of(path).is_held_elsewhere()
    os.kill(holder.pid, signal.SIGKILL)                   # mid-"write"
    holder.wait()
    assert not results.lock_of(path).is_held_elsewhere()
    assert results.append(path, {"model": "b", "acc": 0.25, "run_id": "2"}, log=print)
    assert [run["model"] for run in results.load(path)] == ["a", "b"]


def test_file_lock_is_exclusive_and_names_its_holder(tmp_path):
    first, second = FileLock(tmp_path / "x.lock"), FileLock(tmp_path / "x.lock")
    assert first.acquire(blocking=False)
    assert not second.acquire(blocking=False)             # flock: per open file, also in one process
    assert first.holder().split()[0] == str(os.getpid())
    first.release()
    assert second.acquire(blocking=False)
    second.release()
