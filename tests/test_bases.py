"""Steerable bases: parity with the original's golden files, structure, caching and bad input."""
import math

import pytest
import torch

from conftest import assert_close_to_max, golden_names, load_golden
from rstfast.reference import bases
from rstfast.reference._bessel import fb_function_count
from rstfast.reference.bases import raw_steerable_basis, steerable_basis, support_sizes

PAPER = dict(size=15, scales=[1.7, 2.45, 3.54, 5.1], effective_size=7, mult=1.5, max_order=4)
ROTATION_TYPES = ["A1", "C", "D1", "E", "F", "G", "G1", "H", "I1"]
BASIS_FILES = golden_names("original/basis_")


def rotations(num):
    """The models' rotation list ``x*2*pi/R`` (float64, left to right)."""
    return [x * 2 * math.pi / num for x in range(num)]


def paper_basis(basis_type, num_rotations, dtype=torch.float32, **overrides):
    args = dict(PAPER, **overrides)
    size, scales, effective_size = args.pop("size"), args.pop("scales"), args.pop("effective_size")
    return steerable_basis(basis_type, size, rotations(num_rotations), scales, effective_size,
                           dtype=dtype, **args)


def assert_max_abs(actual, expected, atol, what=""):
    assert actual.shape == expected.shape, what
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= atol, f"{what}: max|diff| = {err:.3e} > {atol:.1e}"


def from_golden(meta, builder=steerable_basis, dtype=torch.float32):
    a = meta["args"]
    return builder(a["basis_type"], a["kernel_size"], a["rotations"], a["scales"],
                   a["effective_size"], mult=a["mult"], max_order=a["max_order"], spt=a["spt"],
                   dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Golden files
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BASIS_FILES)
def test_golden_basis_float32(name):
    ref, meta = load_golden(name)
    basis = from_golden(meta)
    assert basis.dtype == torch.float32
    assert_close_to_max(basis, ref["basis"], 1e-6, name)
    raw = from_golden(meta, raw_steerable_basis)
    norm = raw.pow(2).sum([2, 3]).sqrt()[:, 0]
    # the raw basis is bit-exact; the float32 sum of squares lands within one ulp of the golden norm
    # (the golden environment summed in another order), which is the only source of basis errors
    one_ulp = torch.nextafter(ref["norm"], torch.tensor(math.inf)) - ref["norm"]
    assert ((norm - ref["norm"]).abs() <= one_ulp).all(), name + " norm"
    a = meta["args"]
    sizes = support_sizes(a["kernel_size"], a["scales"], a["basis_type"])
    assert sizes == ref["support_sizes"].tolist()


@pytest.mark.parametrize("name", [n for n in BASIS_FILES if "rot1" not in n and "rot4" not in n])
def test_golden_raw_and_float64(name):
    ref, meta = load_golden(name)
    raw = from_golden(meta, raw_steerable_basis)
    basis64 = from_golden(meta, dtype=torch.float64)
    assert basis64.dtype == torch.float64
    if meta["args"]["basis_type"] == "I1":
        # mathematically-zero values are ~1e-17 noise that depends on the complex-product route
        assert_max_abs(raw, ref["basis_raw"], 1e-12, name)
        assert_max_abs(basis64, ref["basis_f64"], 1e-12, name + " float64")
    else:
        assert torch.equal(raw, ref["basis_raw"]), name
        assert_close_to_max(basis64, ref["basis_f64"], 1e-12, name + " float64")


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("basis_type", ROTATION_TYPES)
def test_fewer_rotations_are_slices(basis_type):
    full = paper_basis(basis_type, 8)
    num_scales = len(PAPER["scales"])
    slices = full.view(full.shape[0], 8, num_scales, 15, 15)
    assert torch.equal(paper_basis(basis_type, 4).view_as(slices[:, ::2]), slices[:, ::2])
    assert torch.equal(paper_basis(basis_type, 1), full[:, :num_scales])


@pytest.mark.parametrize("basis_type", ROTATION_TYPES)
def test_quarter_turn(basis_type):
    """theta = pi/2 turns every function clockwise (rot90 k=-1); I1 turns the other way and its
    centre pixel is not rotated. Mathematically-zero taps are ~1e-16 noise, hence the atol."""
    basis = paper_basis(basis_type, 4)
    num_scales = len(PAPER["scales"])
    at_0, at_90 = basis[:, :num_scales], basis[:, num_scales:2 * num_scales]
    atol = 1e-12 * basis.abs().max().item()
    if basis_type == "I1":
        expected = torch.rot90(at_0, k=1, dims=(-2, -1))
        at_90, expected = at_90.clone(), expected.clone()
        at_90[..., 7, 7] = expected[..., 7, 7] = 0
    else:
        expected = torch.rot90(at_0, k=-1, dims=(-2, -1))
    assert_max_abs(at_90, expected, atol, basis_type)


@pytest.mark.parametrize("basis_type", bases.BASIS_TYPES)
def test_zero_outside_support(basis_type):
    basis = paper_basis(basis_type, 2)
    sizes = support_sizes(15, PAPER["scales"], basis_type)
    for t in range(basis.shape[1]):
        n = sizes[t % len(sizes)]
        pad = (15 - n) // 2
        inside = torch.zeros(15, 15, dtype=torch.bool)
        inside[pad:pad + n, pad:pad + n] = True
        border = inside.clone()
        border[pad + 1:pad + n - 1, pad + 1:pad + n - 1] = False
        assert not basis[:, t][:, ~inside].any()
        if basis_type not in ("D", "D1"):  # FB discs r < 1 may end inside the box
            assert basis[:, t][:, border].any()       # the box is tight


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("basis_type", bases.BASIS_TYPES)
def test_small_configuration(basis_type, dtype, capsys):
    """Any type at K=9, two scales, eff=3: shape, finite, unit norm at t = 0, nothing printed."""
    basis = steerable_basis(basis_type, 9, rotations(2), [2.0, 3.0], 3, dtype=dtype)
    num_groups = 2 if basis_type in ("A", "B", "D") else 4
    assert basis.shape == (9, num_groups, 9, 9) and basis.dtype == dtype
    assert basis.isfinite().all()
    norms = basis[:, 0].pow(2).sum([1, 2]).sqrt()
    assert_max_abs(norms, torch.ones_like(norms), 1e-6, basis_type)
    assert capsys.readouterr().out == ""


def test_support_sizes():
    assert support_sizes(15, PAPER["scales"], "E") == [5, 7, 11, 15]
    assert support_sizes(15, PAPER["scales"], "D1") == [15, 15, 15, 15]
    assert support_sizes(9, [1.0, 3.0], "A") == [3, 9]


def test_function_counts_and_quirks():
    """F = eff^2 except G1 (min((M+1)^2, eff^2)) and D1 (min(eff^2, 60)); A/B/D ignore rotations;
    spt does not reach the Fourier-Bessel types; mult does not reach single-scale types."""
    assert paper_basis("G1", 1).shape == (25, 4, 15, 15)
    assert paper_basis("G1", 1, effective_size=3).shape[0] == 9
    assert paper_basis("D1", 2).shape == (49, 8, 15, 15)
    assert paper_basis("D1", 1, effective_size=8).shape[0] == 60
    for basis_type in "ABD":
        assert paper_basis(basis_type, 8).shape == (49, 4, 15, 15)
    assert torch.equal(paper_basis("E", 2, spt=2.0), paper_basis("E", 2))
    assert torch.equal(paper_basis("A1", 2, mult=1.9), paper_basis("A1", 2))
    assert not torch.equal(paper_basis("G", 2, spt=2.0), paper_basis("G", 2))


def test_fourier_bessel_function_counts():
    """Available FB functions per support half-width L1 (docs/bases.md §4.3), from scipy's
    Bessel zeros."""
    counts = {half: fb_function_count(half, variant_d=False) for half in (1, 2, 3, 5, 7)}
    assert counts == {1: 6, 2: 61, 3: 127, 5: 278, 7: 431}


def test_default_dtype_is_followed():
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        basis = steerable_basis("C", 9, [0.0], [1.0, 2.0], 3)
    finally:
        torch.set_default_dtype(previous)
    assert basis.dtype == torch.float64
    assert steerable_basis("C", 9, [0.0], [1.0, 2.0], 3).dtype == previous


def test_cache_returns_fresh_tensors(capsys):
    first = paper_basis("E", 8)
    second = paper_basis("E", 8)
    assert torch.equal(first, second) and first.data_ptr() != second.data_ptr()
    first.zero_()
    assert torch.equal(paper_basis("E", 8), second)
    raw = raw_steerable_basis("E", 15, rotations(8), PAPER["scales"], 7, mult=1.5)
    raw.zero_()
    assert raw_steerable_basis("E", 15, rotations(8), PAPER["scales"], 7, mult=1.5).any()
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------------
# Bad input: the original crashes (or would crash later); we raise naming the argument
# ---------------------------------------------------------------------------------------------

BAD_INPUTS = [
    (dict(basis_type="Z"), ValueError, "basis_type"),
    (dict(basis_type=None), ValueError, "basis_type"),
    (dict(size=14), ValueError, "size"),
    (dict(size=1), ValueError, "size"),
    (dict(size=15.0), TypeError, "size"),
    (dict(scales=[]), ValueError, "scales"),
    (dict(scales=[0.0, 1.0]), ValueError, "scales"),
    (dict(scales="1.0"), TypeError, "scales"),
    (dict(scales=[0.1, 5.1]), ValueError, "scales"),               # n_0 = 1
    (dict(rotations=[]), ValueError, "rotations"),
    (dict(rotations=[float("nan")]), ValueError, "rotations"),
    (dict(effective_size=0), ValueError, "effective_size"),
    (dict(mult=0.0), ValueError, "mult"),
    (dict(max_order=-1), ValueError, "max_order"),
    (dict(basis_type="G", spt=-1.0), ValueError, "spt"),
    (dict(dtype=torch.float16), TypeError, "dtype"),
    (dict(basis_type="E", scales=[1.0, 5.1]), ValueError, "scales"),  # n_0 = 3 < 5
    (dict(basis_type="F", scales=[1.0, 5.1]), ValueError, "scales"),
    (dict(basis_type="D", scales=[1.0, 5.1]), ValueError, "scales"),
    (dict(basis_type="E", effective_size=8), ValueError, "effective_size"),  # 5 * 15 > 60 rows
    (dict(basis_type="D", effective_size=8), ValueError, "effective_size"),
    (dict(basis_type="E", max_order=6), ValueError, "scales"),        # 28 functions on n = 5
    (dict(basis_type="D1", size=7), ValueError, "size"),
]


@pytest.mark.parametrize("overrides, error, argument", BAD_INPUTS)
def test_bad_input(overrides, error, argument):
    args = dict(basis_type="C", size=15, rotations=[0.0], scales=PAPER["scales"], effective_size=7)
    args.update(overrides)
    with pytest.raises(error, match=rf"^{argument}: "):
        steerable_basis(**args)


def test_types_without_rotations_ignore_them():
    assert steerable_basis("A", 15, [], [1.0, 2.0], 3).shape == (9, 2, 15, 15)


def test_support_sizes_bad_input():
    with pytest.raises(ValueError, match="^basis_type: "):
        support_sizes(15, [1.0], "Q")
    with pytest.raises(ValueError, match="^scales: "):
        support_sizes(15, [0.1, 5.1], "A")
