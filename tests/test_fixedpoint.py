"""qengine.kernels.fixedpoint against slow pure-Python twins written with Python ints."""

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qengine.kernels import fixedpoint as fp

sys.path.insert(0, str(Path(__file__).parent))  # import-mode=importlib does not add tests/

from naive.fixedpoint import mbqm as mbqm_twin
from naive.fixedpoint import quantize_multiplier as quantize_multiplier_twin
from naive.fixedpoint import rdbpot as rdbpot_twin
from naive.fixedpoint import round_away_exact, wrap32
from naive.fixedpoint import srdhm as srdhm_twin

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
int32s = st.integers(I32_MIN, I32_MAX)
multipliers = st.integers(2**30, I32_MAX)  # what quantize_multiplier produces (besides 0)


def mbqm_int64_twin(x: int, m: int, shift: int) -> int:
    rm = (m + 2**15) >> 16 if m < 0x7FFF0000 else 0x7FFF
    total = 15 - shift
    return wrap32((x * rm + 2 ** (total - 1)) >> total)


# --- SRDHM / RDBPOT ---------------------------------------------------------------------

EDGE_INT32 = [I32_MIN, I32_MIN + 1, -(2**30), -3, -2, -1, 0, 1, 2, 3, 2**30, I32_MAX - 1, I32_MAX]


@pytest.mark.parametrize("a", EDGE_INT32)
@pytest.mark.parametrize("b", EDGE_INT32)
def test_srdhm_edges(a, b):
    assert fp.srdhm(np.int32(a), np.int32(b)) == srdhm_twin(a, b)


def test_srdhm_saturates_int32_min_squared():
    assert fp.srdhm(I32_MIN, I32_MIN) == I32_MAX


def test_srdhm_ties_round_up():
    # The nudge 1 - 2^30 for negative products makes negative ties round toward zero, so
    # SRDHM rounds every tie toward +inf (not away from zero, despite its reputation).
    assert fp.srdhm(2**15, 2**15) == 1  # +0.5 → 1
    assert fp.srdhm(-(2**15), 2**15) == 0  # -0.5 → 0
    assert fp.srdhm(3 * 2**15, 2**15) == 2  # +1.5 → 2
    assert fp.srdhm(-3 * 2**15, 2**15) == -1  # -1.5 → -1
    assert fp.srdhm(-3 * 2**15 - 1, 2**15) == -2  # just below -1.5


@given(int32s, int32s)
@settings(max_examples=500, deadline=None)
def test_srdhm_random(a, b):
    assert fp.srdhm(a, b) == srdhm_twin(a, b)


@pytest.mark.parametrize("e", range(32))
@pytest.mark.parametrize("x", EDGE_INT32 + [5, -5, 6, -6, 7, -7, 2**20 + 2**19, -(2**20 + 2**19)])
def test_rdbpot_edges(x, e):
    assert fp.rdbpot(x, e) == rdbpot_twin(x, e)


def test_rdbpot_negative_ties_away_from_zero():
    assert fp.rdbpot(-5, 1) == -3  # -2.5 → -3
    assert fp.rdbpot(-3, 1) == -2
    assert fp.rdbpot(5, 1) == 3
    assert fp.rdbpot(-6, 2) == -2  # -1.5 → -2


@given(int32s, st.integers(0, 31))
@settings(max_examples=500, deadline=None)
def test_rdbpot_random(x, e):
    assert fp.rdbpot(x, e) == rdbpot_twin(x, e)


# --- MBQM -------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", range(-31, 32))
@pytest.mark.parametrize("m", [0, 2**30, 2**30 + 1, 1518500250, I32_MAX])
def test_mbqm_shift_range(m, shift):
    for x in EDGE_INT32 + [127, -128, 255 * 255, -(255 * 255), 1 << 20, -(1 << 20) - 7]:
        assert fp.mbqm(np.int32(x), np.int32(m), np.int32(shift)) == mbqm_twin(x, m, shift)


def test_mbqm_left_shift_wraps_to_int32():
    # 2^30 << 2 wraps to 0; (2^30 + 1) << 2 wraps to 4; (2^29 + 1) << 2 wraps negative
    m = 2**30  # 0.5
    assert fp.mbqm(2**30, m, 2) == 0
    assert fp.mbqm(2**30 + 1, m, 2) == 2
    assert fp.mbqm(2**29 + 1, m, 2) == -(2**30) + 2
    assert fp.mbqm(-(2**30) - 1, m, 1) == mbqm_twin(-(2**30) - 1, m, 1)


@given(int32s, multipliers, st.integers(-31, 31))
@settings(max_examples=1000, deadline=None)
def test_mbqm_random(x, m, shift):
    assert fp.mbqm(x, m, shift) == mbqm_twin(x, m, shift)


@given(st.integers(-(2**24), 2**24), st.floats(1e-12, 1e3))
@settings(max_examples=500, deadline=None)
def test_mbqm_with_quantized_multiplier_is_close_to_real_product(x, real):
    m, shift = fp.quantize_multiplier(real)
    exact = x * real
    if abs(exact) < 2**30 and m != 0:
        # two roundings of at most 1/2 each, plus the multiplier's relative error 2^-31
        assert abs(fp.mbqm(x, m, shift) - exact) <= 1 + abs(exact) * 2**-30 + 2 ** max(shift, 0)


# --- MBQM int64 overload ----------------------------------------------------------------


@given(st.integers(-(2**47), 2**47 - 1), st.integers(0, I32_MAX), st.integers(-31, 7))
@settings(max_examples=500, deadline=None)
def test_mbqm_int64_random(x, m, shift):
    assert fp.mbqm_int64(x, m, shift) == mbqm_int64_twin(x, m, shift)


def test_mbqm_int64_edges():
    for m in [0, 2**30, 0x7FFEFFFF, 0x7FFF0000, I32_MAX]:
        for shift in range(-31, 8):
            for x in [0, 1, -1, 2**15, -(2**15), 2**40, -(2**40), 2**47 - 1, -(2**47)]:
                assert fp.mbqm_int64(x, m, shift) == mbqm_int64_twin(x, m, shift)
    # ties go up: rm = 2^14 (m = 2^30), shift = 0 → x * 2^14 / 2^15 = x / 2
    assert fp.mbqm_int64(-1, 2**30, 0) == 0
    assert fp.mbqm_int64(1, 2**30, 0) == 1


# --- rounding and QuantizeMultiplier ----------------------------------------------------


@pytest.mark.parametrize(
    "x",
    [
        0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        0.49999999999999994,
        -0.49999999999999994,
        1e15 + 0.5,
        3.7,
        -3.7,
    ],
)
def test_round_half_away(x):
    assert fp.round_half_away(x) == round_away_exact(Fraction(x))


@given(st.floats(-(2.0**52), 2.0**52))
@settings(max_examples=500, deadline=None)
def test_round_half_away_random(x):
    assert fp.round_half_away(x) == round_away_exact(Fraction(x))


@pytest.mark.parametrize(
    "real",
    [
        0.0,
        1.0,
        0.5,
        0.25,
        2.0**-31,
        2.0**-32,  # shift -31: still representable
        2.0**-33,  # shift -32: flushed
        1e-12,
        3.0,
        1000.5,
        2.0**20,
        1 - 2.0**-33,  # q*2^31 rounds to 2^31 → (2^30, shift + 1)
        0.5 * (1 - 2.0**-33),
        0.1,
        0.0078125,
        0.003921568859368563,
    ],
)
def test_quantize_multiplier_cases(real):
    assert fp.quantize_multiplier(real) == quantize_multiplier_twin(real)


def test_quantize_multiplier_edge_cases():
    assert fp.quantize_multiplier(1.0) == (2**30, 1)
    assert fp.quantize_multiplier(1 - 2.0**-33) == (2**30, 1)
    assert fp.quantize_multiplier(2.0**-33) == (0, 0)
    assert fp.quantize_multiplier(2.0**-32) == (2**30, -31)
    assert fp.quantize_multiplier(3.0) == (3 * 2**29, 2)


@given(st.floats(1e-14, 1e6))
@settings(max_examples=500, deadline=None)
def test_quantize_multiplier_random(real):
    m, shift = fp.quantize_multiplier(real)
    assert (m, shift) == quantize_multiplier_twin(real)
    if m:
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2**-31


QM_EDGES = [0.0, 1e-12, 0.3, 1.0, 7.5, 1 - 2.0**-33, 0.5 * (1 - 2.0**-33), 2.0**-33, 2.0**-32,
            2.0**-32 * (1 - 2.0**-33), 3.0, 1000.5, 2.0**20, 0.003921568859368563, 5e-324,
            0.5 + 2.0**-32, 0.5 + 3 * 2.0**-33, -0.3, -(1 - 2.0**-33), -(0.5 + 2.0**-32)]


def test_quantize_multipliers_vectorised():
    reals = np.array(QM_EDGES)
    mult, shift = fp.quantize_multipliers(reals)
    assert mult.dtype == np.int32 and shift.dtype == np.int32
    assert list(zip(mult.tolist(), shift.tolist())) == [quantize_multiplier_twin(r) for r in reals]


@given(st.lists(st.floats(-1e6, 1e6) | st.floats(1e-14, 1e-8), min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
def test_quantize_multipliers_vectorised_random(reals):
    mult, shift = fp.quantize_multipliers(np.array(reals))
    assert list(zip(mult.tolist(), shift.tolist())) == [quantize_multiplier_twin(r) for r in reals]


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_quantize_multipliers_non_finite_raises_like_scalar(bad):
    with pytest.raises((OverflowError, ValueError)):
        fp.quantize_multipliers(np.array([0.5, bad]))


# --- epilogue helpers ---------------------------------------------------------------------


@given(
    int32s,
    multipliers,
    st.integers(-31, 31),
    st.integers(-128, 127),
    st.integers(-128, 127),
    st.integers(0, 255),
)
@settings(max_examples=500, deadline=None)
def test_requantize(acc, m, shift, zp, lo, width):
    hi = min(lo + width, 127)
    want = min(max(wrap32(mbqm_twin(acc, m, shift) + zp), lo), hi)
    assert fp.requantize(acc, m, shift, zp, lo, hi) == want


def test_requantize_zero_point_add_wraps_like_int32():
    # MBQM saturates near INT32_MAX; adding the zero point wraps negative, then clamps low.
    assert fp.requantize(I32_MAX, I32_MAX, 0, 5, -128, 127) == -128


@pytest.mark.parametrize(
    ("x", "want"),
    [(2.5, 3), (-2.5, -3), (2147483647.4, I32_MAX), (2147483647.5, I32_MIN), (-2147483648.5, I32_MIN),
     (-2147483648.4, I32_MIN), (1e300, I32_MIN), (-1e300, I32_MIN), (float("nan"), I32_MIN)],
)  # fmt: skip
def test_round_half_away_int32(x, want):
    assert fp.round_half_away_int32(x) == want


def test_mbqm_array_equals_the_scalar_kernel():
    """The NumPy array version used at prepare time against the jitted scalar one."""
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.integers(-(2**31), 2**31, 4000), [0, 1, -1, 2**31 - 1, -(2**31)]])
    for m, shift in [(1 << 30, 0), (1518500250, -7), (2**31 - 1, 3), (1 << 30, -31),
                     (1431655765, 12), (1073741825, -1)]:
        want = np.array([fp.mbqm(np.int64(v), np.int64(m), np.int64(shift)) for v in x])
        np.testing.assert_array_equal(fp.mbqm_array(x, m, shift), want)
