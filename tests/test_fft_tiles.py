"""The CPU kernels of the FFT backend on tile-major spectra (``rstfast/csrc/fft_cpu.cpp`` through
``rstfast.fft.tiled``): transforms against the torch transforms of ``rstfast.fft.transforms``,
per-bin products against ``einsum``, both executions (tiled, batched) against the reference, the
FLOP counts, and the instruction-set flags of the build.
"""
import pytest
import torch

import rstfast.fft as fft
from rstfast.csrc import build
from rstfast.fft import batched, tiled, transforms
from rstfast.fft.transforms import Axis
from test_fft_kernels import GROUP_CASES, LIFT_CASES, check, make_problem

DTYPES = (torch.float32, torch.float64)
TOLERANCE = {torch.float32: 2e-6, torch.float64: 1e-13}      # relative to max |reference|


@pytest.fixture(scope="module", autouse=True)
def _kernels():
    reason = tiled.unavailable_reason()
    if reason:
        pytest.skip(f"C++ extension unavailable: {reason}")


def _as_complex(spec: torch.Tensor, bins: int) -> torch.Tensor:
    """``[tiles, P, 2, L]`` -> complex ``[P, bins]`` (the padding bins dropped)."""
    flat = spec.permute(1, 2, 0, 3).reshape(spec.shape[1], 2, -1)
    return torch.complex(flat[:, 0], flat[:, 1])[:, :bins]


def _tile_spectrum(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Complex ``[P, bins]`` -> ``[tiles, P, 2, L]`` with zero padding bins."""
    lanes = tiled.lanes(dtype)
    planes, bins = values.shape
    padded = torch.zeros(planes, 2, -(-bins // lanes) * lanes, dtype=dtype)
    padded[:, 0, :bins], padded[:, 1, :bins] = values.real, values.imag
    return padded.view(planes, 2, -1, lanes).permute(2, 0, 1, 3).contiguous()


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f"{what}: max|diff| {error:.3g}, max|ref| {scale:.3g}"


# rows axis, cols axis of the planes: (size N, start, count, step, sign)
AXES = {
    "image": ((35, 0, 28, 1, -1), (35, 0, 28, 1, -1)),
    "odd-even": ((14, 0, 7, 1, -1), (15, 0, 9, 1, -1)),
    "taps": ((14, -7, 15, 1, 1), (21, -4, 9, 1, 1)),
    "strided": ((23, 0, 6, 3, 1), (16, 0, 8, 2, 1)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("layout", ["contiguous", "permuted", "sliced"])
def test_transforms_match_torch_transforms(dtype, axes, layout):
    """to_tiles / from_tiles of planes in any layout (a partial last group of planes included)
    equal to_spectrum / from_spectrum."""
    rows, cols = (Axis(*spec) for spec in AXES[axes])
    shape = (3, 2, 5, rows.count, cols.count)                   # 30 planes: a partial group
    if layout == "contiguous":
        z = torch.randn(shape, dtype=torch.float64)
    elif layout == "permuted":
        z = torch.randn(5, 2, 3, rows.count, cols.count, dtype=torch.float64).permute(2, 1, 0, 3, 4)
    else:
        z = torch.randn(3, 2, 10, rows.count, 2 * cols.count, dtype=torch.float64)[:, :, ::2, :, ::2]
    expected = transforms.to_spectrum(z.reshape(-1, rows.count, cols.count), (0,), (), rows, cols)
    bins = rows.size * cols.half
    spec = torch.full((-(-bins // tiled.lanes(dtype)), 30, 2, tiled.lanes(dtype)), float("nan"),
                      dtype=dtype)
    tiled.to_tiles(z.to(dtype), spec, rows, cols)
    _close(_as_complex(spec, bins).view(expected.shape), expected, dtype, "to_tiles")
    assert torch.count_nonzero(spec.permute(1, 2, 0, 3).reshape(30, 2, -1)[:, :, bins:]) == 0

    inverse = (Axis(rows.size, rows.start, rows.count, rows.step, -rows.sign),
               Axis(cols.size, cols.start, cols.count, cols.step, -cols.sign))
    values = torch.randn(30, bins, dtype=torch.complex128)
    expected = transforms.from_spectrum(values.view(30, rows.size, cols.half), 1, *inverse, (0,))
    out = torch.full(z.shape, float("nan"), dtype=dtype).transpose(0, 2)
    tiled.from_tiles(_tile_spectrum(values, dtype), out, *inverse)
    _close(out.reshape(expected.shape), expected, dtype, "from_tiles")


def _reference_products(a, b, groups, sizes, strides, bins):
    """out[g] = sum_pairs sum_k a[a_off + m*am + k*ak] * b[b_off + k*bk + n*bn] (complex)."""
    m, n, k = sizes
    am, ak, bk, bn, _, _ = strides
    ai = torch.arange(m)[:, None] * am + torch.arange(k)[None, :] * ak
    bi = torch.arange(k)[:, None] * bk + torch.arange(n)[None, :] * bn
    result = []
    for _, pairs in groups:
        total = torch.zeros(m, n, bins, dtype=a.dtype)
        for a_off, b_off in pairs:
            total += torch.einsum("mkx,knx->mnx", a[a_off + ai], b[b_off + bi])
        result.append(total)
    return result


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("sizes,strides", [
    ((5, 7, 3), (3, 1, 1, 3, 7, 1)),            # a [m, k], b [n, k], out [m, n]
    ((4, 9, 60), (1, 4, 9, 1, 1, 4)),           # transposed operands and output; k > one chunk
    ((1, 1, 1), (1, 1, 1, 1, 1, 1)),
])
def test_products_match_einsum(dtype, accumulate, sizes, strides):
    """Groups of several pairs (and one without), any strides, sizes off the register block."""
    m, n, k = sizes
    bins = 40                                    # 3 tiles of float32, 5 of float64
    a = torch.randn(3 * m * k, bins, dtype=torch.complex128)
    b = torch.randn(2 * k * n, bins, dtype=torch.complex128)
    groups = [(0, [(0, 0), (m * k, k * n)]), (m * n, [(2 * m * k, 0)]), (2 * m * n, [])]
    start = torch.randn(3 * m * n, bins, dtype=torch.complex128)
    out = _tile_spectrum(start, dtype)
    tiled.products(_tile_spectrum(a, dtype), _tile_spectrum(b, dtype), out, groups, sizes,
                   strides, accumulate)
    expected = _reference_products(a, b, groups, sizes, strides, bins)
    om, on = strides[4:]
    index = torch.arange(m)[:, None] * om + torch.arange(n)[None, :] * on
    actual = _as_complex(out, bins)
    for g, (offset, _) in enumerate(groups):
        want = expected[g] + (start[offset + index] if accumulate else 0)
        _close(actual[offset + index], want, dtype, f"group {g}")


def test_products_reject_out_of_range_offsets():
    spec = torch.zeros(1, 4, 2, 16)
    with pytest.raises(ValueError, match="reads past its spectrum"):
        tiled.products(spec, spec, spec, [(0, [(3, 0)])], (2, 2, 1), (1, 1, 1, 1, 2, 1), False)
    with pytest.raises(ValueError, match="tile-major spectrum"):
        tiled.products(torch.zeros(1, 4, 2, 8), spec, spec, [(0, [(0, 0)])], (1, 1, 1),
                       (1, 1, 1, 1, 1, 1), False)


@pytest.mark.parametrize("execution", ["tiled", "batched"])
@pytest.mark.parametrize("case", ["A1-R4S3-Lr2Ls2-s2", "E-R4S1-Lr2-s2-p1-wide", "lift"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_both_executions_match_the_reference(monkeypatch, execution, case, dtype):
    """The CPU uses the tiled kernels; the batched one (CUDA, and CPU without the extension)
    gives the same results."""
    monkeypatch.setattr(fft, "_execution", lambda device: tiled if execution == "tiled" else batched)
    problem = (make_problem(LIFT_CASES["E-R8S4-p3-b3"], lifting=True) if case == "lift"
               else make_problem(GROUP_CASES[case], lifting=False))
    check(*problem, dtype, f"{execution} {case}")


@pytest.mark.parametrize("budget", [1, 3000, 2 ** 20, 2 ** 30])
def test_channel_blocks(budget):
    """Blocks tile the channels; each holds as many channels as the budget allows (at least
    one)."""
    for count, per_channel in ((17, 1000), (9, 10 ** 6), (5, 1)):
        step = tiled._block(count, budget, per_channel)
        blocks = tiled._channel_blocks(count, step)
        assert [c for block in blocks for c in range(block.start, block.stop)] == list(range(count))
        assert step == max(1, min(count, budget // per_channel))


def test_stage_flops():
    """The stages sum to flops(); the backward doubles every stage but the output transforms."""
    _, _, _, _, geo = make_problem(GROUP_CASES["A1-R4S3-Lr2Ls2-s2"], lifting=False)
    shape = (2, 3, 12, 15, 13)
    forward, backward = fft.stage_flops(geo, shape), fft.stage_flops(geo, shape, backward=True)
    assert tuple(forward) == fft.STAGES and fft.flops(geo, shape) == pytest.approx(
        sum(forward.values()))
    plan = fft._plan(geo, shape)
    reads = sum(q >= 0 for row in geo.read_table for q in row)
    assert forward["products"] == 8 * 2 * 3 * 4 * plan.bins * reads
    for stage in fft.STAGES:
        assert backward[stage] == forward[stage] * (1 if stage == "output transforms" else 2)


@pytest.mark.parametrize("features,expected", [
    ({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi1", "bmi2",
      "f16c", "movbe"}, ("-march=x86-64-v4", "-mprefer-vector-width=512")),
    ({"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"}, ("-march=x86-64-v3",)),
    ({"sse2", "avx"}, ()),
])
def test_cpu_arch_flags_follow_the_cpu(monkeypatch, features, expected):
    """The CPU library is built for the highest x86-64 level the CPU has; the level is part of
    the build key."""
    monkeypatch.delenv("RSTFAST_CPU_ARCH", raising=False)
    monkeypatch.setattr(build.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(build, "_cpu_features", lambda: frozenset(features))
    assert build.cpu_arch_flags() == expected
    key = build.build_key(build.CPU_SOURCES, cuda=False)
    monkeypatch.setenv("RSTFAST_CPU_ARCH", "portable")
    assert build.cpu_arch_flags() == ()
    assert (build.build_key(build.CPU_SOURCES, cuda=False) == key) == (expected == ())


def test_cpu_arch_override_is_checked(monkeypatch):
    monkeypatch.setenv("RSTFAST_CPU_ARCH", "x86-64-v9")
    with pytest.raises(ValueError, match="RSTFAST_CPU_ARCH"):
        build.cpu_arch_flags()
