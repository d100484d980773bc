"""``backend="auto"``: chosen by measurement per layer shape (or the cost model), cached, visible."""
import math

import pytest
import torch

from rstfast import autotune, backends
from rstfast import nn as rnn


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ("cpp", "reference"))
    monkeypatch.setattr(autotune, "PRUNE", math.inf)              # time every candidate
    backends.clear_cache()
    autotune.clear()
    yield
    backends.clear_cache()
    autotune.clear()


def layer():
    rotations = [2 * math.pi * r / 4 for r in range(4)]
    return rnn.GroupConv(3, 4, 1, 2, 7, 3, scales=[1.0, 1.4, 2.0], rotations=rotations,
                         padding=3, basis_type="A1")


def available(name):
    reason = backends.available_backends("cpu")[name]
    if reason is not None:
        pytest.skip(f"{name}: {reason}")


def test_auto_measures_once_per_shape_and_picks_the_fastest():
    available("cpp")
    conv = layer()
    x = torch.randn(2, 3, 12, 9, 9)
    conv(x).sum().backward()
    conv(x).sum().backward()                       # cached: no second decision
    with torch.no_grad():
        conv(x)                                    # forward only: its own decision
    first, second = autotune.decisions()
    assert first.method == "measured" and set(first.seconds) == {"cpp", "reference"}
    assert first.chosen == min(first.seconds, key=first.seconds.get)
    assert first.key[-1] is True and second.key[-1] is False
    assert conv.last_backend == second.chosen
    assert "forward+backward" in autotune.explain() and "measured" in autotune.explain()


def test_cost_model_when_measuring_is_off(monkeypatch):
    available("cpp")
    monkeypatch.setenv("RSTFAST_AUTOTUNE", "0")
    conv = layer()
    conv(torch.randn(2, 3, 12, 9, 9))
    decision, = autotune.decisions()
    assert decision.method == "cost model" and decision.chosen == "cpp"
    assert decision.seconds == decision.estimates
    assert autotune.estimate_seconds("reference", conv.geometry, (2, 3, 12, 9, 9), "cpu", False) \
        > autotune.estimate_seconds("cpp", conv.geometry, (2, 3, 12, 9, 9), "cpu", False)


def test_compiled_model_uses_the_decision_without_timing():
    conv = layer()
    x = torch.randn(2, 3, 12, 9, 9)
    eager = conv(x)
    chosen = autotune.decisions()[0].chosen
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    assert torch.allclose(compiled(x), eager, atol=1e-5)
    assert len(autotune.decisions()) == 1 and autotune.decisions()[0].chosen == chosen


def test_decisions_file_is_per_implementation(monkeypatch):
    """Decisions timed on other kernels (another rstfast source tree) are kept in another file."""
    here = autotune.default_cache_path()
    assert here == autotune.default_cache_path()
    monkeypatch.setattr(autotune, "_sources_digest", lambda: "edited kernels")
    assert autotune.default_cache_path() != here
    assert autotune.default_cache_path().parent == here.parent
