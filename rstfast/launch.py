"""Running the training runs of a grid (:mod:`rstfast.reproduce`): one after the other in this
process, in N worker processes on this machine (``--jobs N``), or as submitit jobs on a SLURM
cluster (``--launcher submitit``).

Runs coordinate through files only, so any number of launchers can work on one grid at once (two
``reproduce`` commands on one folder, a requeued SLURM task, a worker killed and started again):

* a run is trained by the process that holds its lock (``<save>.lock``, taken by
  :func:`rstfast.train.run`); a run locked elsewhere is left to that process, and waited for once
  nothing else is left to do (if that process dies, the lock is free and the run is taken over);
* ``results.yml`` gets one line per run, under its own lock, written atomically
  (:mod:`rstfast.results`);
* checkpoints are written atomically after every epoch: a killed run resumes from its last
  finished epoch (on CPU bitwise as if it had not been interrupted).

Workers are ``python -m rstfast.train`` processes (output in ``<out>/logs/``): on GPUs run ``i``
of the slots goes to GPU ``i mod #GPUs``; on CPU the cores are divided between the workers
(affinity and ``OMP_NUM_THREADS``).

A run here is a :class:`rstfast.reproduce.Run`: ``number``, ``label``, ``save_model_path``,
``cost_s`` (estimated seconds) and ``train_argv(results_path, device)`` (the trainer's flags).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import train
from .cli import UsageError, one_line
from .train import checkpoint_paths, duration

POLL_S = 2.0          # how often running workers and runs locked elsewhere are checked
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class Slot:
    """Where a worker trains: ``device`` (None: the run's own), ``threads`` and CPU ``cores``
    (None: not pinned)."""
    name: str
    device: Optional[str] = None
    threads: Optional[int] = None
    cores: Optional[Tuple[int, ...]] = None


def local_slots(device: str, jobs: int) -> List[Slot]:
    """``jobs`` worker slots on this machine for runs on ``device``: GPU ``i mod #GPUs`` each
    (``device`` ``cuda``), or a share of the CPU cores each (every core once while there are at
    least as many cores as workers)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per = max(1, len(cores) // jobs)
    shares = [tuple(cores[i * per:(i + 1) * per]) if (i + 1) * per <= len(cores)
              else (cores[i % len(cores)],) for i in range(jobs)]
    if device == "cuda":
        import torch
        gpus = torch.cuda.device_count()
        return [Slot(f"cuda:{i % gpus}", f"cuda:{i % gpus}", len(share), share)
                for i, share in enumerate(shares)]
    if device == "cpu":
        return [Slot(f"cpu {','.join(map(str, share))}", None, len(share), share) for share in shares]
    return [Slot(device, None, len(share), share) for share in shares]   # e.g. cuda:1: all on it


def run_lock(run):
    """The lock of ``run`` (held by the process training it)."""
    return train.run_lock(run.save_model_path)


def epochs_done(run) -> int:
    """Epochs in the run's metrics file (0 if none yet)."""
    try:
        return len(json.loads(checkpoint_paths(run.save_model_path)[1].read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


@dataclass
class Outcome:
    """How a run ended: ``ok``; ``claimed`` (another process trains it); else failed (``message``)."""
    ok: bool
    claimed: bool = False
    message: str = ""


class GridClock:
    """Elapsed time and the grid's ETA: the runs' estimated seconds (``cost_s``, measured
    on the 2-core Xeon of the README) scaled by how long the runs finished in this invocation took
    against their estimates, spread over the slots."""

    def __init__(self, slots: int):
        self.start = time.time()
        self.slots = slots
        self.spent = 0.0
        self.estimated = 0.0

    def finished(self, run, seconds: float) -> None:
        self.spent += seconds
        self.estimated += run.cost_s

    def eta(self, waiting: Sequence, running: dict) -> str:
        rate = self.spent / self.estimated if self.estimated > 0 else 1.0
        left = rate * sum(run.cost_s for run in waiting) + sum(
            max(0.0, rate * run.cost_s - (time.time() - started)) for run, started in running.values())
        basis = "at the pace of the finished runs" if self.estimated > 0 else "estimated"
        return f"~{duration(left / self.slots)} ({basis})"

    def elapsed(self) -> str:
        return duration(time.time() - self.start)


# ---------------------------------------------------------------------------------- starters

class InProcess:
    """Trains a run in this process (``--jobs 1``); :meth:`start` returns when it is done."""

    def __init__(self, results_path):
        self.results_path = results_path

    def start(self, run, slot: Slot):
        args = train.build_parser().parse_args(run.train_argv(self.results_path, slot.device))
        try:
            train.check_args(args)
            train.run(args)
            outcome = Outcome(True)
        except train.RunClaimedError as exc:
            outcome = Outcome(False, claimed=True, message=one_line(exc))
        except Exception as exc:  # a failed run is reported, the grid goes on
            outcome = Outcome(False, message=f"{type(exc).__name__}: {one_line(exc)}")
        return _Finished(outcome)


@dataclass
class _Finished:
    outcome: Outcome

    def poll(self) -> Optional[Outcome]:
        return self.outcome


class Workers:
    """Trains each run in a ``python -m rstfast.train`` process pinned to its slot; output
    appended to ``<log_dir>/<run>.log``."""

    def __init__(self, results_path, log_dir: Path):
        self.results_path = results_path
        self.log_dir = Path(log_dir)

    def start(self, run, slot: Slot):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / (Path(run.save_model_path).stem + ".log")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p))
        if slot.threads:
            env.update(OMP_NUM_THREADS=str(slot.threads), MKL_NUM_THREADS=str(slot.threads))
        pin = (lambda: os.sched_setaffinity(0, slot.cores)) if slot.cores and hasattr(os, "sched_setaffinity") else None
        command = [sys.executable, "-m", "rstfast.train",
                   *run.train_argv(self.results_path, slot.device)]
        with open(log_path, "a") as handle:
            handle.write(f"$ {' '.join(command)}\n")
            handle.flush()
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                       preexec_fn=pin)
        return _Process(process, log_path, train.EXIT_CLAIMED)


@dataclass
class _Process:
    process: subprocess.Popen
    log_path: Path
    claimed_code: int

    def poll(self) -> Optional[Outcome]:
        code = self.process.poll()
        if code is None:
            return None
        if code == 0:
            return Outcome(True)
        last = _last_line(self.log_path)
        if code == self.claimed_code:
            return Outcome(False, claimed=True, message=last)
        if code < 0:
            why = f"killed by {signal.Signals(-code).name}"
        else:
            why = f"exit code {code}: {last}"
        return Outcome(False, message=f"{why} (log {self.log_path})")


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------------- scheduler

def run_grid(runs: Sequence, slots: Sequence[Slot], starter, done: Callable[[object], Optional[dict]],
             total: int, log=print) -> List[str]:
    """Train every run of ``runs`` not ``done`` on the ``slots`` (in the order given; a run
    locked by another process is waited for at the end); return the failures, one line each.
    One progress line per start and finish with the grid's ETA; ``total`` = runs in the grid."""
    waiting: list = list(runs)
    deferred: list = []
    running: Dict[int, tuple] = {}
    handles: Dict[int, object] = {}
    failures: List[str] = []
    clock = GridClock(len(slots))
    finished = {run.number for run in runs if done(run) is not None}
    said_waiting = set()

    def head(run) -> str:
        return f"[{run.number}/{total}] {run.label}"

    def next_run() -> Optional[object]:
        while waiting:
            run = waiting.pop(0)
            result = done(run)
            if result is not None:
                finished.add(run.number)
                log(f"{head(run)}: done (test accuracy {100 * result['acc']:.2f}%), skipped")
                continue
            if run_lock(run).is_held_elsewhere():
                log(f"{head(run)}: being trained by another process ({run_lock(run).holder()}); "
                    f"waiting for it at the end")
                deferred.append(run)
                continue
            return run
        return None

    while waiting or running or deferred:
        for index, slot in enumerate(slots):
            if index in running:
                continue
            run = next_run()
            if run is None:
                break
            epochs = epochs_done(run)
            log(f"{head(run)}: {f'resuming after epoch {epochs}' if epochs else 'training'}"
                + (f" on {slot.name}" if len(slots) > 1 else "")
                + f"; grid {len(finished)}/{total} done, elapsed {clock.elapsed()}, "
                  f"ETA {clock.eta(waiting + deferred + [run], running)}")
            running[index] = (run, time.time())
            handles[index] = starter.start(run, slot)
        for index in list(running):
            outcome = handles[index].poll()
            if outcome is None:
                continue
            run, started = running.pop(index)
            seconds = time.time() - started
            if outcome.claimed:
                log(f"{head(run)}: {outcome.message}; waiting for it at the end")
                deferred.append(run)
                continue
            if outcome.ok and done(run) is not None:
                result = done(run)
                finished.add(run.number)
                clock.finished(run, seconds)
                log(f"{head(run)}: test accuracy {100 * result['acc']:.2f}%, "
                    f"{result.get('seconds_per_epoch', 0):.1f} s/epoch, backend {result.get('backend')}; "
                    f"grid {len(finished)}/{total} done, elapsed {clock.elapsed()}, "
                    f"ETA {clock.eta(waiting + deferred, running)}")
            else:
                message = outcome.message or "finished without a results.yml entry"
                failures.append(f"{head(run)}: {message}")
                log(f"{head(run)}: FAILED: {message}")
        if not waiting and not running and deferred:
            free = [run for run in deferred if not run_lock(run).is_held_elsewhere()]
            for run in free:
                deferred.remove(run)
                waiting.append(run)
            for run in deferred:
                if run.number not in said_waiting:
                    said_waiting.add(run.number)
                    log(f"{head(run)}: waiting for the other process ({run_lock(run).holder()})")
        if running or (deferred and not waiting):
            time.sleep(POLL_S)
    return failures


# ---------------------------------------------------------------------------------- submitit

class TrainTask:
    """One run as a submitit job: ``python -m rstfast.train`` flags (with ``--continue``: the
    run's checkpoint is resumed when there is one). On a timeout or a preemption submitit calls
    :meth:`checkpoint`, which requeues the same task: the requeued job resumes from the last
    epoch the trainer checkpointed."""

    def __init__(self, argv: Sequence[str]):
        self.argv = list(argv)

    def __call__(self) -> dict:
        threads = os.environ.get("SLURM_CPUS_PER_TASK")
        if threads:
            import torch
            torch.set_num_threads(int(threads))
        args = train.build_parser().parse_args(self.argv)
        train.check_args(args)
        return train.run(args)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(TrainTask(self.argv))


def parse_minutes(text: str) -> int:
    """SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``) -> whole minutes, rounded up."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise UsageError(f"--slurm-time: expected minutes, HH:MM:SS or D-HH:MM:SS, got {text!r}")
    days, *parts = match.groups()
    values = [int(p) for p in parts if p is not None]
    if days is not None:                       # D-HH[:MM[:SS]]
        hours, minutes, seconds = (values + [0, 0])[:3]
        hours += 24 * int(days)
    elif len(values) == 3:                     # HH:MM:SS
        hours, minutes, seconds = values
    else:                                      # MM[:SS]
        hours, minutes, seconds = 0, values[0], (values[1:] or [0])[0]
    total = -(-((hours * 60 + minutes) * 60 + seconds) // 60)
    if total < 1:
        raise UsageError(f"--slurm-time: expected at least one minute, got {text!r}")
    return total


def submitit_executor(folder: Path, cluster: Optional[str], name: str, time_limit: str,
                      partition: Optional[str], gpus_per_task: Optional[int],
                      cpus_per_task: Optional[int], array_parallelism: Optional[int],
                      options: Sequence[str]):
    """A ``submitit.AutoExecutor`` (``cluster`` None: SLURM when ``sbatch`` is there, else local
    processes) with the SLURM options; ``options`` are ``KEY=VALUE`` sbatch options."""
    try:
        import submitit
    except ImportError:
        raise UsageError("--launcher submitit: the submitit package is not installed "
                         "(pip install 'rstfast[cluster]')") from None
    extra = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise UsageError(f"--slurm-opt: expected KEY=VALUE (an sbatch option), got {option!r}")
        extra[key.lstrip("-").replace("-", "_")] = value
    parameters = dict(name=name, timeout_min=parse_minutes(time_limit), slurm_partition=partition,
                      slurm_gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
                      slurm_array_parallelism=array_parallelism,
                      slurm_additional_parameters=extra or None)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=100)
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    except (RuntimeError, ValueError, NameError) as exc:   # no SLURM here, an option sbatch refuses
        raise UsageError(f"--launcher submitit: {one_line(exc)[:300]}") from None
    return executor


def submit(runs: Sequence, executor, results_path, done: Callable[[object], Optional[dict]],
           total: int, wait: bool, log=print) -> List[str]:
    """Submit every run not done and not being trained elsewhere as one job array; with ``wait``
    report each job as it ends and return the failures."""
    todo = []
    for run in runs:
        result = done(run)
        if result is not None:
            log(f"[{run.number}/{total}] {run.label}: done (test accuracy {100 * result['acc']:.2f}%), skipped")
        elif run_lock(run).is_held_elsewhere():
            log(f"[{run.number}/{total}] {run.label}: being trained by another process "
                f"({run_lock(run).holder()}), not submitted")
        else:
            todo.append(run)
    if not todo:
        return []
    with executor.batch():
        jobs = [executor.submit(TrainTask(run.train_argv(results_path))) for run in todo]
    for run, job in zip(todo, jobs):
        log(f"[{run.number}/{total}] {run.label}: submitted as job {job.job_id}")
    log(f"submitit: {len(jobs)} jobs, logs in {executor.folder}")
    if not wait:
        return []
    failures = []
    pending = dict(zip(jobs, todo))
    clock = GridClock(len(jobs))
    while pending:
        for job in [j for j in pending if j.done()]:
            run = pending.pop(job)
            error = job.exception()
            result = done(run)
            if error is None and result is not None:
                log(f"[{run.number}/{total}] {run.label}: test accuracy {100 * result['acc']:.2f}% "
                    f"(job {job.job_id}); {len(jobs) - len(pending)}/{len(jobs)} jobs done, "
                    f"elapsed {clock.elapsed()}")
            else:
                message = one_line(error) if error is not None else "finished without a results.yml entry"
                failures.append(f"[{run.number}/{total}] {run.label}: job {job.job_id}: {message[-500:]}")
                log(f"[{run.number}/{total}] {run.label}: FAILED (job {job.job_id}): {message[-500:]}")
        if pending:
            time.sleep(POLL_S)
    return failures
