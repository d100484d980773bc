"""FFT-specific behaviour of the ``fft`` backend (rstfast.fft): input and gradient layouts,
chunking, the minimal alias-free transform size, zero gradients of unread slots, the filter
spectrum's adjoint. Its numbers (forward and every gradient over the case matrix, gradcheck,
golden files, autocast, compile, opcheck) are checked with every other backend's in
``test_backend_contract.py``.

Kernel level: ``conv_forward`` / ``conv_backward`` on the filter buffer of
``rstfast.filters.expand_cropped``; the filter gradient is compared as the coefficient gradient
(``rstfast.filters.contract_cropped``) with autograd through ``rstfast.reference.functional`` in float64.
"""
import math

import pytest
import torch

import rstfast.fft as fft
from conftest import assert_close_to_max
from rstfast import filters as filter_buffer
from rstfast.fft import transforms
from rstfast.geometry import basis_support, group_geometry, lifting_geometry
from rstfast.reference import functional as ref
from rstfast.reference.bases import steerable_basis

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}

# Nested per-scale supports at K = 7 (3, 5, 7); D1 needs K = 9.
_SCALES = {1: [2.0], 3: [1.0, 1.4, 2.0], 4: [1.0, 1.26, 1.59, 2.0]}
_SCALES_E = {1: [2.0], 3: [1.5, 2.0, 2.6], 4: [1.5, 1.8, 2.2, 2.6]}

# basis, R, S, Lr, Ls, stride, padding, H, W, B, C, O
GROUP_CASES = {
    "E-R8S4-Lr4-p3-b3": ("E", 8, 4, 4, 1, 1, 3, 13, 11, 3, 3, 4),
    "A1-R4S3-Lr2Ls2-s2": ("A1", 4, 3, 2, 2, 2, 0, 15, 13, 1, 3, 4),
    "C-R1S4-Ls2-b3": ("C", 1, 4, 1, 2, 1, 0, 11, 12, 3, 2, 3),
    "D1-R8S1-LrR-s2-p4": ("D1", 8, 1, 8, 1, 2, 4, 9, 10, 1, 2, 3),
    "G-R4S4-LrR-Ls2-p3": ("G", 4, 4, 4, 2, 1, 3, 12, 9, 2, 3, 2),
    "G1-R8S3-s3-p2-b3": ("G1", 8, 3, 1, 1, 3, 2, 11, 11, 3, 2, 3),
    "E-R4S1-Lr2-s2-p1-wide": ("E", 4, 1, 2, 1, 2, 1, 10, 13, 2, 17, 9),
    "C-R8S3-LrR-Ls2": ("C", 8, 3, 8, 2, 1, 0, 13, 10, 1, 2, 3),
}
LIFT_CASES = {
    "E-R8S4-p3-b3": ("E", 8, 4, 1, 1, 1, 3, 13, 11, 3, 2, 4),
    "A1-R4S3-s2": ("A1", 4, 3, 1, 1, 2, 0, 15, 13, 1, 3, 4),
    "G1-R1S1-p3-wide": ("G1", 1, 1, 1, 1, 1, 3, 9, 12, 2, 19, 7),
    "D1-R4S1-s3-p4-b3": ("D1", 4, 1, 1, 1, 3, 4, 11, 9, 3, 1, 5),
    "C-R1S4-s2-p1": ("C", 1, 4, 1, 1, 2, 1, 12, 10, 1, 3, 2),
}


def make_basis(basis_type: str, num_rotations: int, num_scales: int) -> torch.Tensor:
    kernel_size = 9 if basis_type == "D1" else 7
    scales = (_SCALES_E if basis_type == "E" else _SCALES)[num_scales]
    rotations = [2 * math.pi * r / num_rotations for r in range(num_rotations)]
    return steerable_basis(basis_type, kernel_size, rotations, scales, 3)


def make_problem(case, lifting: bool, device="cpu"):
    """float64 ``x, weight, bias, basis, geo`` of a case."""
    basis_type, rot, sca, lr, ls, stride, padding, h, w, batch, cin, cout = case
    basis = make_basis(basis_type, rot, sca).double().to(device)
    support = basis_support(basis, rot)
    if lifting:
        geo = lifting_geometry(cin, cout, basis, rot, stride, padding, support)
        x = torch.randn(batch, cin, h, w, dtype=torch.float64)
    else:
        geo = group_geometry(cin, cout, basis, rot, lr, ls, stride, padding, support)
        x = torch.randn(batch, cin, rot * sca, h, w, dtype=torch.float64)
    weight = torch.randn(geo.weight_shape(), dtype=torch.float64) / math.sqrt(
        cin * lr * ls * basis.shape[0])
    bias = torch.randn(cout, dtype=torch.float64)
    return x.to(device), weight.to(device), bias.to(device), basis, geo


def reference(x, weight, bias, basis, geo, grad_seed):
    """float64 ``y, grad_x, grad_weight`` of the reference with autograd."""
    x, weight = (t.detach().double().requires_grad_() for t in (x, weight))
    args = dict(stride=geo.stride, padding=geo.padding)
    if geo.lifting:
        y = ref.lift_conv(x, weight, basis.double(), bias.double(), **args)
    else:
        y = ref.group_conv(x, weight, basis.double(), bias.double(), geo.num_rotations,
                           geo.rotation_size, geo.scale_size, **args)
    return (y.detach(), *torch.autograd.grad(y, [x, weight], grad_seed.double()))


def kernels(x, weight, bias, basis, geo, grad_seed, dtype):
    """``y, grad_x, grad_weight`` of the FFT kernels in ``dtype`` (x as given: any layout)."""
    filters = filter_buffer.expand_cropped(weight.to(dtype), basis.to(dtype), geo)
    y = fft.conv_forward(x.to(dtype), filters, bias.to(dtype), geo)
    grad_x, grad_filters = fft.conv_backward(grad_seed.to(dtype), x.to(dtype), filters, geo,
                                             True, True)
    assert grad_filters.shape == filters.shape and grad_filters.dtype == filters.dtype
    return y, grad_x, filter_buffer.contract_cropped(grad_filters, basis.to(dtype), geo)


def check(x, weight, bias, basis, geo, dtype, what=""):
    out_shape = geo.out_shape(x.shape)
    grad_seed = torch.randn(out_shape, dtype=torch.float64, device=x.device)
    expected = reference(x.cpu(), weight.cpu(), bias.cpu(), basis.cpu(), geo, grad_seed.cpu())
    actual = kernels(x, weight, bias, basis, geo, grad_seed, dtype)
    y, grad_x = actual[:2]
    assert y.dtype == dtype and y.is_contiguous() and y.shape == out_shape
    assert grad_x.dtype == dtype and grad_x.is_contiguous() and grad_x.shape == x.shape
    for name, a, b in zip(("y", "grad_x", "grad_weight"), actual, expected):
        assert torch.isfinite(a).all(), f"{what} {name}: non-finite values"
        assert_close_to_max(a.cpu(), b, TOLERANCE[dtype], f"{what} {name}")


@pytest.fixture(autouse=True)
def _no_tf32():
    if torch.cuda.is_available():
        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    else:
        yield


@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed"])
def test_input_layouts(layout):
    """Channels-last, sliced and transposed inputs (and a non-contiguous grad_y) give the
    contiguous input's results."""
    x, weight, bias, basis, geo = make_problem(GROUP_CASES["E-R8S4-Lr4-p3-b3"], lifting=False)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last_3d)
    elif layout == "sliced":
        x = torch.randn(x.shape[0], 2 * x.shape[1], *x.shape[2:], dtype=x.dtype)[:, ::2]
    else:
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not x.is_contiguous()
    check(x, weight, bias, basis, geo, torch.float32, layout)
    filters = filter_buffer.expand_cropped(weight, basis, geo)
    grad_y = torch.randn(geo.out_shape(x.shape), dtype=x.dtype)
    strided_grad = torch.randn(*grad_y.shape[:-1], 2 * grad_y.shape[-1], dtype=x.dtype)[..., ::2]
    strided_grad.copy_(grad_y)
    expected = fft.conv_backward(grad_y, x.contiguous(), filters, geo, True, True)
    for a, b in zip(fft.conv_backward(strided_grad, x, filters, geo, True, True), expected):
        assert_close_to_max(a, b, 1e-12, f"{layout} with a strided grad_y")
    ones = torch.ones((), dtype=x.dtype).expand(grad_y.shape)        # as from y.sum().backward()
    for a, b in zip(fft.conv_backward(ones, x, filters, geo, True, True),
                    fft.conv_backward(ones.contiguous(), x, filters, geo, True, True)):
        assert_close_to_max(a, b, 1e-12, f"{layout} with an expanded grad_y")


def test_one_slice_per_chunk(monkeypatch):
    """Chunks of one output slice: same results."""
    monkeypatch.setattr(fft, "CHUNK_BYTES", 1)
    for case in ("G-R4S4-LrR-Ls2-p3", "A1-R4S3-Lr2Ls2-s2"):
        check(*make_problem(GROUP_CASES[case], lifting=False), torch.float64, case)
    check(*make_problem(LIFT_CASES["E-R8S4-p3-b3"], lifting=True), torch.float64, "lift")


def test_chunks_cover_every_read():
    """The chunks hold every output slice once and every valid (t, a) read once."""
    x, weight, bias, basis, geo = make_problem(GROUP_CASES["G-R4S4-LrR-Ls2-p3"], lifting=False)
    for slice_bytes in (1, fft.CHUNK_BYTES // 3, fft.CHUNK_BYTES):
        seen_slices, seen_reads = [], []
        for chunk in fft._chunks(geo, slice_bytes):
            slices = list(range(geo.group_size))[chunk.slices]
            seen_slices += slices
            seen_reads += [(slices[k], chunk.offsets[i], q) for k, i, q in chunk.reads]
        assert sorted(seen_slices) == list(range(geo.group_size))
        expected = [(t, a, q) for t, row in enumerate(geo.read_table) for a, q in enumerate(row)
                    if q >= 0]
        assert sorted(seen_reads) == expected


def test_transform_size_is_minimal(monkeypatch):
    """One row or column less than :func:`rstfast.fft.transform_size` aliases."""
    problem = make_problem(GROUP_CASES["A1-R4S3-Lr2Ls2-s2"], lifting=False)
    check(*problem, torch.float64)
    size = fft.transform_size
    monkeypatch.setattr(fft, "transform_size", lambda geo, side: size(geo, side) - 1)
    with pytest.raises(AssertionError, match=r"max\|diff\|"):
        check(*problem, torch.float64)


def test_filter_gradient_zero_in_unread_slots():
    """Slots (a, r) past the top scale (input_slice -1) get an exactly zero gradient."""
    x, weight, bias, basis, geo = make_problem(GROUP_CASES["G-R4S4-LrR-Ls2-p3"], lifting=False)
    filters = filter_buffer.expand_cropped(weight, basis, geo)
    grad_y = torch.randn(geo.out_shape(x.shape), dtype=x.dtype)
    _, grad_filters = fft.conv_backward(grad_y, x, filters, geo, False, True)
    unread = 0
    for s in range(geo.num_scales):
        block = geo.filter_block(grad_filters, s)
        for a in range(geo.num_offsets):
            for r in range(geo.num_rotations):
                if geo.input_slice(r * geo.num_scales + s, a) < 0:
                    unread += 1
                    assert torch.count_nonzero(block[a, r]) == 0
                else:
                    assert torch.count_nonzero(block[a, r]) > 0
    assert unread > 0


def test_only_requested_gradients():
    x, weight, bias, basis, geo = make_problem(LIFT_CASES["A1-R4S3-s2"], lifting=True)
    filters = filter_buffer.expand_cropped(weight, basis, geo)
    grad_y = torch.randn(geo.out_shape(x.shape), dtype=x.dtype)
    both = fft.conv_backward(grad_y, x, filters, geo, True, True)
    only_x = fft.conv_backward(grad_y, x, filters, geo, True, False)
    only_f = fft.conv_backward(grad_y, x, filters, geo, False, True)
    assert only_x[1] is None and only_f[0] is None
    assert torch.equal(only_x[0], both[0]) and torch.equal(only_f[1], both[1])
    assert fft.conv_backward(grad_y, x, filters, geo, False, False) == (None, None)


def test_filter_spectrum_adjoint():
    """``<f, from_spectrum(H)> = Re sum_k w_k H[k] to_spectrum(f)[k] / (N_h N_w)`` for the filter
    axes: the filter gradient is the adjoint of the filter spectra."""
    rows, cols = transforms.Axis(11, -2, 5, 1, 1), transforms.Axis(10, -2, 5, 1, 1)
    taps = torch.randn(3, 5, 5, dtype=torch.float64)
    spec = torch.randn(1, 11, 6, 3, dtype=torch.complex128)
    weights = torch.tensor([1, 2, 2, 2, 2, 1], dtype=torch.float64)[:, None]
    forward = transforms.to_spectrum(taps.unsqueeze(0), (0,), (1,), rows, cols)
    adjoint = transforms.from_spectrum(spec, 1, rows, cols, (0, 1))
    lhs = (taps * adjoint[0]).sum()
    rhs = (spec * forward * weights).real.sum() / (11 * 10)
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=0)


def test_autocast_is_off_inside():
    x, weight, bias, basis, geo = make_problem(GROUP_CASES["E-R4S1-Lr2-s2-p1-wide"], False)
    x, filters = x.float(), filter_buffer.expand_cropped(weight.float(), basis, geo)
    plain = fft.conv_forward(x, filters, bias.float(), geo)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = fft.conv_forward(x, filters, bias.float(), geo)
    assert under.dtype == torch.float32 and torch.equal(under, plain)


def test_unavailable_reason():
    assert fft.unavailable_reason(torch.device("cpu")) is None
    assert "meta" in fft.unavailable_reason(torch.device("meta"))
    if not torch.cuda.is_available():
        assert "CUDA" in fft.unavailable_reason(torch.device("cuda"))
    assert fft.DTYPES["cpu"] == (torch.float32, torch.float64)
