"""Every CLI user error is one line on stderr and exit code 2, never a traceback: broken data,
broken results files, files where folders belong, devices this machine does not have, bad flags."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rstfast import plot, reproduce, train
from rstfast.data import generate
from rstfast.data.generate import npz_bytes
from rstfast.equivariance import __main__ as equivariance

from conftest import REPO

NO_GPU = not torch.cuda.is_available()
PROGS = {train.main: "rstfast-train", reproduce.main: "python -m rstfast.reproduce",
         plot.main: "python -m rstfast.plot", generate.main: "python -m rstfast.data",
         equivariance.main: "python -m rstfast.equivariance"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good dataset folder, broken copies of it, broken results/metrics/checkpoint files."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    good = root / "good"
    good.mkdir()
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        (good / f"{split}.npz").write_bytes(npz_bytes(rng.integers(0, 255, (n, 28, 28)).astype(np.uint8),
                                                      np.arange(n) % 10))

    def variant(name, change):
        folder = root / name
        folder.mkdir()
        for f in good.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        change(folder)
        return folder

    variant("truncated", lambda d: (d / "train.npz").write_bytes((d / "train.npz").read_bytes()[:100]))
    variant("text_npz", lambda d: (d / "train.npz").write_text("not an npz"))
    variant("no_labels", lambda d: np.savez(d / "train.npz", images=np.zeros((4, 28, 28), np.uint8)))
    variant("flat_images", lambda d: np.savez(d / "train.npz", images=np.zeros((4, 28), np.uint8),
                                              labels=np.zeros(4)))
    variant("manifest_not_json", lambda d: (d / "manifest.json").write_text("{not json"))
    variant("manifest_list", lambda d: (d / "manifest.json").write_text("[1, 2]"))
    (root / "not_yaml.yml").write_text("- {model: 'a', acc: 0.5\n  broken: [")
    (root / "mapping.yml").write_text("model: a\n")
    (root / "text_acc.yml").write_text("- {model: 'a', acc: 'high'}\n")
    (root / "ok.yml").write_text("- {model: 'a', acc: 0.5}\n")
    (root / "a_file").write_text("x")
    (root / "not_json.json").write_text("{")
    (root / "truncated.ckpt").write_bytes(b"PK\x03\x04garbage")
    return root


def train_argv(files, *extra):
    return ["--model", "mnist_cnn_28", "--epochs", "1", "--quiet", "--data_dir", str(files / "good"),
            "--save_model_path", str(files / "runs" / "m.pt"), "--results", str(files / "r.yml"), *extra]


CASES = [
    # (main, argv with FILES/ for the fixture folder, expected part of the message)
    *([(train.main, ["--device", "cuda"], "--device cuda: no CUDA GPU here")] if NO_GPU else []),
    (train.main, ["--device", "cuda:99"], "--device cuda:99: "),
    (train.main, ["--device", "tpu0"], "--device: expected a device such as cpu, cuda or cuda:1, got 'tpu0'"),
    (train.main, ["--data_dir", "FILES/truncated"], "truncated/train.npz: not a readable dataset split"),
    (train.main, ["--data_dir", "FILES/text_npz"], "text_npz/train.npz: not a readable dataset split"),
    (train.main, ["--data_dir", "FILES/no_labels"], "no_labels/train.npz: not a readable dataset split"),
    (train.main, ["--data_dir", "FILES/flat_images"], "expected images [N, H, W] and labels [N], got [4, 28]"),
    (train.main, ["--data_dir", "FILES/manifest_not_json"], "manifest.json: not JSON"),
    (train.main, ["--data_dir", "FILES/manifest_list"], "manifest.json: expected a JSON object, got list"),
    (train.main, ["--data_dir", "FILES/a_file"], "--data_dir: FILES/a_file is not a folder"),
    (train.main, ["--results", "FILES/not_yaml.yml"], "not_yaml.yml is not YAML at line 2"),
    (train.main, ["--results", "FILES/mapping.yml"], "expected a YAML list of runs"),
    (train.main, ["--results", "FILES"], "is a folder, expected a results.yml file"),
    (train.main, ["--results", "FILES/a_file/r.yml"], "results: cannot create the folder of"),
    (train.main, ["--save_model_path", "FILES/a_file/m.pt"], "--save_model_path FILES/a_file: FILES/a_file is a file"),
    (train.main, ["--resume", "FILES/truncated.ckpt"], "is not a checkpoint of this rstfast-train"),
    (train.main, ["--data_dir", "", "--data-root", "FILES/a_file"], "--data-root FILES/a_file: FILES/a_file is a file"),
    (train.main, ["--lr", "nan"], "--lr: expected a float > 0, got nan"),
    (reproduce.main, ["--table-only", "FILES/not_yaml.yml"], "not_yaml.yml is not YAML at line 2"),
    (reproduce.main, ["--table-only", "FILES/mapping.yml"], "expected a YAML list of runs"),
    (reproduce.main, ["--table-only", "FILES/text_acc.yml"], "lack a model name or a numeric acc"),
    (reproduce.main, ["--table-only", "FILES/missing.yml"], "--table-only: FILES/missing.yml not found"),
    (reproduce.main, ["--list", "--out", "FILES/a_file"], "--out FILES/a_file: FILES/a_file is a file"),
    (reproduce.main, ["--list", "--out", "FILES/o", "--results", "FILES/not_yaml.yml"], "is not YAML"),
    (reproduce.main, ["--list", "--out", "FILES/o", "--data-root", "FILES/a_file"], "--data-root FILES/a_file"),
    (reproduce.main, ["--list", "--jobs", "0"], "--jobs: expected an int >= 1, got 0"),
    (reproduce.main, ["--list", "--jobs", "2", "--launcher", "submitit"], "--jobs is for --launcher local"),
    (reproduce.main, ["--out", "FILES/o", "--launcher", "submitit", "--slurm-time", "1h"], "--slurm-time: expected"),
    (reproduce.main, ["--out", "FILES/o", "--launcher", "submitit", "--slurm-opt", "qos"], "--slurm-opt: expected KEY=VALUE"),
    *([(reproduce.main, ["--out", "FILES/o", "--device", "cuda"], "--device cuda: no CUDA GPU here")] if NO_GPU else []),
    *([(reproduce.main, ["--out", "FILES/o", "--preset", "paper"], "the paper preset's device")] if NO_GPU else []),
    (reproduce.main, ["--list", "--backend", "nope"], "--backend: expected one of"),
    (plot.main, ["FILES/not_yaml.yml"], "not_yaml.yml is not YAML at line 2"),
    (plot.main, ["FILES"], "results: cannot read FILES"),
    (plot.main, ["FILES/ok.yml", "--metrics", "FILES/not_json.json"], "--metrics: FILES/not_json.json is not JSON"),
    (plot.main, ["FILES/ok.yml", "--metrics", "FILES/ok.yml"], "--metrics: FILES/ok.yml is not"),
    (plot.main, ["FILES/ok.yml", "--out", "FILES/a_file/x.png"], "--out FILES/a_file: FILES/a_file is a file"),
    (generate.main, ["--dest", "FILES/a_file", "--dataset", "mnist-5k"], "FILES/a_file is a file, expected a folder"),
    (generate.main, ["--dest", "FILES/a_file/sub"], "FILES/a_file is a file, expected a folder"),
    (equivariance.main, ["mnist_cnn_28", "--checkpoint", "FILES/truncated.ckpt", "--out", "FILES/eq"],
     "checkpoint: cannot load FILES/truncated.ckpt"),
    (equivariance.main, ["mnist_cnn_28", "--stability", "--data-dir", "FILES/truncated", "--split", "train",
                         "--out", "FILES/eq"], "truncated/train.npz: not a readable dataset split"),
    *([(equivariance.main, ["mnist_cnn_28", "--device", "cuda"], "--device cuda: no CUDA GPU here")] if NO_GPU else []),
    (equivariance.main, ["mnist_cnn_28", "--out", "FILES/a_file"], "--out FILES/a_file: FILES/a_file is a file"),
    (equivariance.main, ["mnist_cnn_28", "--backend", "nope"], "--backend: expected one of"),
]


@pytest.mark.parametrize("main, argv, message", CASES,
                         ids=[f"{PROGS[m].split()[-1]}-{i}" for i, (m, _, _) in enumerate(CASES)])
def test_user_error_is_one_line_and_exit_2(main, argv, message, files, capsys):
    fill = lambda text: text.replace("FILES", str(files))  # noqa: E731
    argv = [fill(a) for a in argv]
    if main is train.main:              # the case's flags after the defaults: argparse keeps the last
        argv = train_argv(files) + argv
    try:
        code = main(argv)
    except SystemExit as exc:   # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"{PROGS[main]}: error: ") and err.count("\n") == 1, err
    assert fill(message) in err, err


def test_the_real_entry_points_print_no_traceback(tmp_path):
    """Fresh processes: the module entry points themselves."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    bad = tmp_path / "results.yml"
    bad.write_text("- {model: 'a', acc: [\n")
    for module, argv in (("rstfast.reproduce", ["--table-only", str(bad)]), ("rstfast.plot", [str(bad)]),
                         ("rstfast.train", ["--model", "mnist_cnn_28", "--device", "cuda:99"])):
        done = subprocess.run([sys.executable, "-m", module, *argv], env=env, capture_output=True,
                              text=True, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.skipif(not NO_GPU, reason="checks the message without a GPU")
def test_gpu_check_without_a_gpu_is_one_line():
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO), PYTHON=sys.executable))
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert done.stderr.count("\n") == 1 and "no CUDA GPU" in done.stderr and "--device cpu" in done.stderr
    assert done.stdout == ""
