"""Triton-specific behaviour of the ``triton`` backend (its numbers are checked with every other
backend's in ``test_backend_contract.py``).

On a machine without CUDA the kernels run on Triton's CPU interpreter (``TRITON_INTERPRET=1``, set
by ``tests/conftest.py`` before anything launches a kernel; kernels are compiled lazily at first
launch, so test order does not matter). With CUDA the same tests run on the GPU.
"""
import pytest
import torch

pytest.importorskip("triton")

from conftest import DEVICE                                                  # noqa: E402
from test_backend_contract import CASES, forward_backward, make_case, reference  # noqa: E402
import rstfast.triton as tk                                                # noqa: E402
from rstfast import ops                                                     # noqa: E402
from rstfast.triton import rs_conv_bwd                                     # noqa: E402

pytestmark = pytest.mark.skipif(tk.unavailable_reason(torch.device(DEVICE)) is not None,
                                reason=str(tk.unavailable_reason(torch.device(DEVICE))))


def test_filter_gradient_split_over_pixels(monkeypatch):
    """Split-K of the filter gradient (several pixel ranges: 189 output pixels, >= 64 per split)."""
    monkeypatch.setattr(rs_conv_bwd, "MIN_PIXELS_PER_SPLIT", 64)
    x, weight, bias, basis, geo = make_case(CASES["lift-A1-R4S3-pad-b3"], torch.float32)
    run = lambda x_, w_, b_: ops.roto_scale_conv(x_, w_, basis, b_, geo, "triton")  # noqa: E731
    _, grads, seed = forward_backward(run, (x, weight, bias))
    _, grads_ref, _ = forward_backward(lambda x_, w_, b_: reference(x_, w_, b_, basis, geo),
                                       (x, weight, bias), seed)
    assert ((grads[1].double() - grads_ref[1]).abs().max()
            <= 1e-5 * grads_ref[1].abs().max())


def test_unavailable_reason():
    assert tk.unavailable_reason(torch.device(DEVICE)) is None
    assert "CUDA" in tk.unavailable_reason(torch.device("meta"))


@pytest.mark.parametrize("triton_version,numpy_version,usable", [
    ("3.6.0", "2.4.1", False), ("3.6.0", "2.3.5", True), ("3.7.1", "2.4.1", True),
    ("3.10.0+git1234", "2.5.0", True)])
def test_interpreter_version_guard(triton_version, numpy_version, usable, monkeypatch):
    import numpy
    import triton
    monkeypatch.setattr(triton, "__version__", triton_version)
    monkeypatch.setattr(numpy, "__version__", numpy_version)
    reason = tk.jit.interpreter_unusable_reason()
    assert (reason is None) == usable
    if not usable:
        assert triton_version in reason and "NumPy" in reason
