"""Trust on every machine: ``auto`` verifies before it trusts and leaves the random streams alone;
``python -m rstfast.check`` fails on a wrong backend; decisions can be recorded and reused; no
input is silently ignored (unknown keywords, empty batches)."""
import json
import logging
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

from conftest import REPO, assert_close_to_max
from rstfast import autotune, backends, ops
from rstfast import nn as rnn

MISBEHAVING = ("zeros", "wrong_gradient", "raises", "wrong_shape")


@pytest.fixture(autouse=True)
def fresh():
    backends.clear_cache()
    yield
    for name in [n for n in backends.names() if n.startswith("bad_")]:
        backends.unregister(name)
    backends.clear_cache()


def group_layer(backend="auto", **kwargs):
    rotations = [2 * math.pi * r / 4 for r in range(4)]
    return rnn.GroupConv(3, 4, 1, 2, 7, 3, scales=[1.0, 1.4, 2.0], rotations=rotations,
                         padding=3, bias=True, basis_type="A1", backend=backend, **kwargs)


@pytest.mark.parametrize("kind", MISBEHAVING)
@pytest.mark.parametrize("measure", ["1", "0"])
def test_auto_never_runs_a_wrong_backend(monkeypatch, kind, measure):
    """A registered backend that is fast and wrong, first in the auto order: auto verifies it,
    excludes it with one warning naming it, and computes the reference's numbers; it is not
    offered again on the device (measuring on, and the cost model alone)."""
    name = f"bad_{kind}"
    backends.register(name, f"misbehaving.{kind}")
    monkeypatch.setenv("RSTFAST_AUTO_CPU", f"{name},cpp")
    monkeypatch.setenv("RSTFAST_AUTOTUNE", measure)
    monkeypatch.setitem(autotune.THROUGHPUT, ("cpu", "direct"), 1e15)   # it looks fastest
    layer = group_layer()
    x = torch.randn(2, 3, 12, 9, 9, requires_grad=True)
    with pytest.warns(RuntimeWarning, match=rf"auto does not use backend '{name}' on cpu for "
                                            r"group \[2, 3, 12, 9, 9\] float32"):
        y = layer(x)
    assert layer.last_backend != name
    y.sum().backward()
    reference = group_layer("reference")
    reference.load_state_dict(layer.state_dict())
    x_ref = x.detach().clone().requires_grad_()
    y_ref = reference(x_ref)
    y_ref.sum().backward()
    assert_close_to_max(y, y_ref, 1e-5, "y")
    assert_close_to_max(x.grad, x_ref.grad, 1e-5, "grad_x")
    assert name in autotune.explain() and "not trusted on cpu" in autotune.explain()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no second warning: not offered again
        layer(torch.randn(1, 3, 12, 9, 9))
    assert all(name not in d.seconds for d in autotune.decisions()[1:])


def test_check_fails_on_a_wrong_backend_and_passes_otherwise(tmp_path):
    """``python -m rstfast.check`` with a registered wrong backend: a FAIL line for it, exit 1;
    restricted to a correct backend: exit 0, and the JSON report says so."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    env.pop("TRITON_INTERPRET", None)
    report = tmp_path / "check.json"
    bad = subprocess.run([sys.executable, "-m", "rstfast.check", "--backends", "bad_zeros",
                          "--register", "bad_zeros=misbehaving.zeros", "--no-golden",
                          "--json", str(report)], capture_output=True, text=True, env=env)
    assert bad.returncode == 1, bad.stderr[-2000:]
    lines = [line for line in bad.stdout.splitlines() if line.startswith("bad_zeros")]
    assert lines and all("FAIL" in line for line in lines), bad.stdout
    assert json.loads(report.read_text())["passed"] is False
    good = subprocess.run([sys.executable, "-m", "rstfast.check", "--backends", "fft",
                           "--no-golden"], capture_output=True, text=True, env=env)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-2000:]
    assert "checks passed" in good.stdout and "FAIL" not in good.stdout


@pytest.mark.parametrize("argv,message", [
    (["--device", "tpu"], "--device"),
    (["--backends", "nope"], "--backends"),
    (["--register", "nonsense"], "--register"),
])
def test_check_usage_errors_are_one_line(argv, message):
    run = subprocess.run([sys.executable, "-m", "rstfast.check", *argv], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 2 and message in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_misbehaving_module_contract_is_unavailable_not_fatal():
    backends.register("bad_contract", "misbehaving.bad_contract")
    reason = backends.available_backends("cpu")["bad_contract"]
    assert "DTYPES" in reason
    layer = group_layer("bad_contract")
    with pytest.warns(RuntimeWarning, match="falls back to 'reference'"):
        layer(torch.randn(1, 3, 12, 9, 9))
    assert layer.last_backend == "reference"


def test_a_kernel_returning_the_wrong_shape_is_named():
    backends.register("bad_wrong_shape", "misbehaving.wrong_shape")
    with pytest.raises(RuntimeError, match=r"backend 'bad_wrong_shape': its kernel returned y"):
        group_layer("bad_wrong_shape")(torch.randn(1, 3, 12, 9, 9))


def test_auto_leaves_the_random_streams_alone(monkeypatch):
    """Measuring and verifying use a private generator: a seeded program draws the same numbers
    whether or not auto measured in between."""
    monkeypatch.setenv("RSTFAST_AUTO_CPU", "fft,cpp")
    layer = group_layer()
    x = torch.randn(2, 3, 12, 9, 9, requires_grad=True)
    torch.manual_seed(7)
    layer(x).sum().backward()                       # measures and verifies: a new key
    assert autotune.decisions()[-1].method == "measured"
    after_auto = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(3), after_auto)


def test_recorded_decisions_are_reused(tmp_path):
    """state_dict / load_state_dict pin decisions; a cache file carries them to another process;
    a file that is not a cache is left untouched with a warning."""
    layer = group_layer()
    x = torch.randn(2, 3, 12, 9, 9)
    with torch.no_grad():
        layer(x)
    state = autotune.state_dict()
    chosen = autotune.decisions()[0].chosen
    assert list(state["decisions"].values()) == [chosen]
    backends.clear_cache()                          # forgets every decision
    autotune.load_state_dict(json.loads(json.dumps(state)))
    with torch.no_grad():
        layer(x)
    decision, = autotune.decisions()
    assert (decision.method, decision.chosen) == ("recorded", chosen)

    cache = tmp_path / "autotune.json"
    backends.clear_cache()
    autotune.use_cache(cache)
    with torch.no_grad():
        layer(x)
    written = json.loads(cache.read_text())["decisions"]
    assert written == autotune.state_dict()["decisions"] and written.keys() == state["decisions"].keys()
    backends.clear_cache()
    autotune.use_cache(cache)
    with torch.no_grad():
        layer(x)
    decision, = autotune.decisions()
    assert (decision.method, decision.chosen) == ("recorded", *written.values())

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    backends.clear_cache()
    with pytest.warns(RuntimeWarning, match="is not usable"):
        autotune.use_cache(broken)
    with torch.no_grad():
        layer(x)
    assert broken.read_text() == "{not json"
    with pytest.raises(ValueError, match="state: expected rstfast.autotune.state_dict"):
        autotune.load_state_dict({"decisions": [1, 2]})


def test_first_measurement_is_logged_once_per_shape(caplog):
    layer = group_layer()
    x = torch.randn(2, 3, 12, 9, 9)
    with caplog.at_level(logging.INFO, logger="rstfast.autotune"), torch.no_grad():
        layer(x)
        layer(x)
    lines = [r.getMessage() for r in caplog.records if r.name == "rstfast.autotune"]
    assert len(lines) == 1 and "once per layer shape" in lines[0]
    assert "group [2, 3, 12, 9, 9] float32 on cpu" in lines[0]


def test_unknown_keywords_are_named():
    with pytest.raises(TypeError, match=r"LiftingConv: unexpected keyword argument\(s\) bakend='cpp'"):
        rnn.LiftingConv(1, 2, 7, 3, scales=[1.0], bakend="cpp")
    with pytest.raises(TypeError, match=r"GroupConv: unexpected keyword argument\(s\) max_ordr=2"):
        group_layer(max_ordr=2)
    group_layer(mult=1.5, max_order=4, spt=3.5, dropout=0.7)   # the original's keywords


def test_empty_batch_on_every_backend(backend):
    """B = 0: an empty output of the right shape and empty / zero gradients, as nn.Conv2d."""
    from conftest import DEVICE
    layer = group_layer(backend).to(DEVICE)
    x = torch.randn(0, 3, 12, 9, 9, device=DEVICE, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 4, 12, 9, 9)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))
    lift = rnn.LiftingConv(1, 2, 7, 3, scales=[1.0, 1.4, 2.0], basis_type="A",
                           backend=backend).to(DEVICE)
    assert lift(torch.randn(0, 1, 9, 9, device=DEVICE)).shape == (0, 2, 3, 3, 3)


def test_no_backend_claims_a_device_that_is_not_there():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    reasons = backends.available_backends("cuda")
    assert all(reason is not None for name, reason in reasons.items() if name != "reference")
