"""rstfast.equivariance: exact cases are measured as exact, the others as documented, the CLI runs.

The tool must agree with ``test_equivariance.py`` (same rotation, same group-axis shift); its
helpers are imported from there.
"""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import rstfast.nn as rnn
from rstfast import equivariance as eq, models
from rstfast.equivariance import report
from rstfast.equivariance.__main__ import build_parser, main
from test_equivariance import make_layers, rot, shift


def lift_group(basis_type, num_rotations, rotation_size, scale_size):
    lift, group = make_layers(basis_type, num_rotations, rotation_size, scale_size, torch.float64)
    return nn.Sequential(lift, nn.ReLU(), group)


@pytest.mark.parametrize("basis_type,num_rotations,rotation_size,scale_size,angles", [
    ("E", 4, 2, 2, (90, 270)), ("G", 8, 4, 1, (180, -90))])
def test_multiples_of_90_degrees_are_exact_in_float64(basis_type, num_rotations, rotation_size,
                                                      scale_size, angles):
    model = lift_group(basis_type, num_rotations, rotation_size, scale_size)
    turns = [eq.Transform(angle=a) for a in angles]
    result = eq.measure(model, transforms=turns, input_shape=(2, 20, 20), batch_size=1)
    assert result.names() == ["0", "2"]
    for row, angle in zip(result.results, angles):
        for layer in ("0", "2"):
            entry = row["errors"][layer]
            assert entry["error"] <= 1e-10, (row["label"], layer, entry)
            expected = [angle // 90 * num_rotations // 4 % num_rotations, 0]
            assert entry["slots"] == expected and entry["best_slots"] == expected


def test_arbitrary_angles_have_a_nonzero_documented_error():
    """30 degrees is not a slot of R = 8 (nearest: 45): interpolation, the square support box and
    the slot mismatch give an O(0.1) error; 45 degrees (a slot) only the first two."""
    model = lift_group("E", 8, 4, 1)
    angles = [eq.Transform(angle=a) for a in (30, 45)]
    result = eq.measure(model, transforms=angles, input_shape=(2, 24, 24), batch_size=2)
    err30, err45 = (row["errors"]["0"] for row in result.results)
    assert err30["slots"] == [1, 0] and err45["slots"] == [1, 0]
    assert 1e-3 < err45["error"] < 1 and 1e-3 < err30["error"] < 1.5
    assert not result.results[0]["exact_input"]


def test_transform_is_the_one_of_the_existing_tests():
    lift, _ = make_layers("E", 8, 1, 1, torch.float64)
    x = torch.randn(2, 2, 17, 17, dtype=torch.float64)
    with torch.no_grad():
        y = lift(x)
    group = eq.Group.of_layer(lift)
    turn = eq.Transform(angle=90)
    assert torch.equal(eq.transform_map(x, turn), rot(x))
    assert torch.equal(eq.transform_map(y, turn, group), rot(shift(y, 8, 2)))
    # The wrong shift of test_rotation_equivariance_fails_for_wrong_shift is an O(1) error.
    with torch.no_grad():
        moved = lift(rot(x))
    assert eq.relative_error(moved, eq.transform_map(y, turn, group, slots=(-2, 0))) > 1e-2
    assert eq.relative_error(moved, eq.transform_map(y, turn, group)) < 1e-12


def test_interpolated_rotation_matches_the_dataset_warp():
    """grid_sample rotation uses affine_warp's geometry (centre, direction); only the cubic
    kernel differs (a = -0.75 vs -0.5)."""
    from rstfast.data import affine_warp
    image = (eq.smooth_inputs((1, 28, 28), 1, sigma=2.0)[0, 0].clamp(min=0) * 80).round()
    image = image.clamp(0, 255).to(torch.uint8).numpy()
    warped = affine_warp(image[None], 30.0, 1.2)[0].astype(np.float64)
    ours = eq.transform_map(torch.from_numpy(image).double(), eq.Transform(angle=30, scale=1.2))
    assert np.abs(ours.numpy() - warped).max() < 0.05 * image.max()
    wrong = eq.transform_map(torch.from_numpy(image).double(), eq.Transform(angle=-30, scale=1.2))
    assert np.abs(wrong.numpy() - warped).max() > 0.3 * image.max()


@pytest.mark.parametrize("dy,dx", [(2, 3), (-4, 1)])
def test_translation_is_exact_away_from_the_border(dy, dx):
    model = lift_group("E", 4, 2, 2)
    x = torch.zeros(1, 2, 40, 40, dtype=torch.float64)
    x[..., 14:26, 14:26] = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    result = eq.measure(model, x, [eq.Transform(shift=(dy, dx))])
    for layer in ("0", "2"):
        assert result.results[0]["errors"][layer]["error"] < 1e-12


def test_zoom_by_the_scale_ratio_moves_the_scale_axis_up():
    """Zooming in by the ratio between neighbouring scales shifts the scale axis by +1 (nearest
    and best slot); approximate only (measured 0.08 here)."""
    lift = rnn.LiftingConv(1, 3, 15, 5, scales=[1.5, 2.25, 3.375], padding=7, basis_type="A1",
                           backend="reference").double()
    zoom = eq.Transform(scale=1.5)
    result = eq.measure(lift, transforms=[zoom, eq.Transform(scale=1 / 1.5)], batch_size=2)
    up, down = (row["errors"]["LiftingConv"] for row in result.results)
    assert up["slots"] == [0, 1] and up["best_slots"] == [0, 1]
    assert down["slots"] == [0, -1] and down["best_slots"] == [0, -1]
    assert up["error"] < 0.2 and down["error"] < 0.2


def invariant_net(dtype=torch.float64):
    """R = 4: max over the group axis and over space make the logits exactly invariant to
    multiples of 90 degrees (rot90 permutes pixels and slots; nothing is off-centre)."""
    torch.manual_seed(1)
    lift = rnn.LiftingConv(1, 6, 9, 5, scales=[1.5, 2.0], rotations=[i * math.pi / 2 for i in range(4)],
                           padding=4, basis_type="E", backend="reference", bias=True)
    return nn.Sequential(lift, rnn.GroupMaxProjection(), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                         nn.Flatten(), nn.Linear(6, 3)).to(dtype)


def test_prediction_stability_fractions():
    model = invariant_net()
    images = eq.smooth_inputs((1, 20, 20), 24, seed=3)
    labels = torch.arange(24) % 3
    out = eq.prediction_stability(model, images, labels, batch_size=10)
    assert out["num_images"] == 24 and 0 <= out["accuracy"] <= 1
    stable = {row["label"]: row["stable"] for row in out["transforms"]}
    assert set(stable) == {"rot 90", "rot 180", "rot 45", "rot 30", "zoom x0.7", "zoom x1.3"}
    assert all(0 <= v <= 1 for v in stable.values())
    assert stable["rot 90"] == 1.0 and stable["rot 180"] == 1.0
    assert all(0 <= row["accuracy"] <= 1 for row in out["transforms"])


class OneClass(nn.Module):
    """Always predicts class 2: stable under every transform, which proves nothing."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64))

    def forward(self, x):
        return self.bias.expand(len(x), 3)


def test_a_model_predicting_one_class_is_flagged_beside_its_accuracy():
    images = eq.smooth_inputs((1, 20, 20), 12, seed=3)
    labels = torch.arange(12) % 3
    flat = eq.prediction_stability(OneClass(), images, labels)
    assert flat["degenerate"] and flat["top_class_share"] == 1.0 and flat["accuracy"] == pytest.approx(1 / 3)
    assert all(row["stable"] == 1.0 for row in flat["transforms"])
    varied = eq.prediction_stability(invariant_net(), images, labels)
    assert not varied["degenerate"] and varied["top_class_share"] < eq.DEGENERATE_SHARE
    table = report.format_stability_table({"one class": flat, "net": varied})
    assert "one class !" in table and "net !" not in table
    assert table.splitlines()[-1].startswith("! one class: 100 % of its predictions are one class")


def test_angles_are_documented_as_degrees_not_radians():
    assert "degrees" in eq.Transform.__doc__ and "radians" in eq.Transform.__doc__
    assert "degrees" in eq.__doc__ and "radians" in eq.__doc__
    angles = next(a for a in build_parser()._actions if a.dest == "angles")
    assert "degrees" in angles.help and "radians" in angles.help


def test_model_output_row_reports_invariance_and_agreement():
    result = eq.measure(invariant_net(), transforms=[eq.Transform(angle=180), eq.Transform(angle=30)],
                        input_shape=(1, 20, 20), batch_size=3)
    assert result.names()[-1] == "output"
    exact, rotated = (row["errors"]["output"] for row in result.results)
    assert exact["error"] < 1e-12 and exact["agreement"] == 1.0
    assert 0 < rotated["error"] and 0 <= rotated["agreement"] <= 1


def test_cli_on_a_zoo_model_writes_table_json_png(tmp_path, capsys):
    code = main(["mnist_ses_scalar_28_rot_4", "--backend", "reference", "--input-size", "28",
                 "--batch-size", "1", "--angles", "90", "30", "--zooms", "1.44",
                 "--shifts", "4,0", "--out", str(tmp_path)])
    assert code == 0
    table = capsys.readouterr().out
    assert "main.0: LiftingConv" in table and "rot 90 *" in table and "same class" in table
    data = json.loads((tmp_path / "equivariance_mnist_ses_scalar_28_rot_4.json").read_text())
    assert [l["name"] for l in data["layers"]] == ["main.0", "main.1", "main.5", "main.6",
                                                   "main.10", "main.11", "output"]
    rot90 = data["results"][0]["errors"]
    assert all(rot90[n]["error"] <= 1e-10 for n in ("main.0", "main.1", "main.5", "main.6"))
    assert (tmp_path / "equivariance_mnist_ses_scalar_28_rot_4.png").stat().st_size > 10_000


def test_cli_compare_bases(tmp_path, capsys):
    code = main(["--compare-bases", "--kernel-size", "11", "--effective-size", "5", "--scales",
                 "2", "2.5", "3.2", "4", "--rotations", "4", "--channels", "2", "--input-size",
                 "20", "--batch-size", "1", "--angles", "90", "45", "--zooms", "1.26",
                 "--dtype", "float32", "--out", str(tmp_path)])
    assert code == 0
    assert "rot off-slot" in capsys.readouterr().out
    data = json.loads((tmp_path / "equivariance_bases.json").read_text())
    assert sorted(data["summary"]) == sorted(eq.BASIS_TYPES)
    for basis, m in data["measurements"].items():
        group = m["layers"][0]["group"]
        assert group["rotations"] == (1 if basis in eq.NO_ROTATION_BASES else 4)
        rot90 = data["summary"][basis]["rot90"]
        if basis == "I1":     # slots turn the other way; the centre pixel is not rotated
            assert group["rotation_sign"] == -1 and 1e-3 < rot90 < 0.2
        elif basis not in eq.NO_ROTATION_BASES:
            assert rot90 <= 1e-5, basis              # float32 rounding
    assert (tmp_path / "equivariance_bases.png").is_file()


def fake_dataset(folder, n=12):
    rng = np.random.default_rng(0)
    images = (rng.random((n, 28, 28)) ** 4 * 255).astype(np.uint8)
    np.savez(folder / "test.npz", images=images, labels=rng.integers(0, 10, n))
    return folder


def test_cli_stability_with_state_dict_and_trainer_checkpoint(tmp_path, capsys):
    data = fake_dataset(tmp_path)
    torch.manual_seed(0)
    cnn = models.get("mnist_cnn_28")
    torch.save(cnn.state_dict(), tmp_path / "cnn.pt")
    trainer = {"format": 1, "args": {"model": "mnist_cnn_28", "basis": None},
               "model": cnn.state_dict(), "rng": [{"numpy": np.random.get_state()}]}
    torch.save(trainer, tmp_path / "cnn.ckpt")
    code = main(["mnist_cnn_28", "mnist_cnn_28", "--stability", "--checkpoint",
                 str(tmp_path / "cnn.pt"), str(tmp_path / "cnn.ckpt"), "--data-dir", str(data),
                 "--angles", "180", "--zooms", "0.7", "--out", str(tmp_path)])
    assert code == 0
    out = json.loads((tmp_path / "stability.json").read_text())
    rows = out["models"]["mnist_cnn_28"]["transforms"]
    assert [r["label"] for r in rows] == ["rot 180", "zoom x0.7"]
    assert all(0 <= r["stable"] <= 1 for r in rows)
    assert "rot 180" in capsys.readouterr().out


@pytest.mark.parametrize("argv,expected", [
    (["mnist_nope_28"], "name: unknown model"),
    (["mnist_cnn_28", "--stability"], "--data-dir: required"),
    (["mnist_cnn_28", "--shifts", "1;2"], "expected DY,DX"),
    (["mnist_cnn_28", "--checkpoint", "/nonexistent.pt"], "checkpoint: file /nonexistent.pt not found"),
    ([], "MODEL: expected at least one model"),
])
def test_cli_errors_are_one_line_with_exit_code_2(argv, expected, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:            # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    torch.save({"args": {"model": "mnist_cnn_56"}, "model": {}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="checkpoint: .* was trained as 'mnist_cnn_56'"):
        eq.load_model("mnist_cnn_28", tmp_path / "x.ckpt")
    torch.save(eq.load_model("mnist_cnn_56").state_dict(), tmp_path / "y.pt")
    with pytest.raises(ValueError, match="does not fit mnist_cnn_28"):
        eq.load_model("mnist_cnn_28", tmp_path / "y.pt")


@pytest.mark.parametrize("kwargs,expected", [
    (dict(region=0), "region: expected a fraction"),
    (dict(mode="cubic"), "mode: expected one of"),
    (dict(), "input_shape: required"),
])
def test_measure_argument_errors(kwargs, expected):
    model = invariant_net()
    with pytest.raises(ValueError, match=expected):
        eq.measure(model, **kwargs)
    with pytest.raises(ValueError, match="scale: expected a positive"):
        eq.Transform(scale=0)
