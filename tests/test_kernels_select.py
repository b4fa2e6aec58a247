"""kernels/select.where against np.where, its twin: same values bit for bit and same dtype, on
arrays large enough to take the Numba path (and small ones, which stay on np.where)."""

import numpy as np
import pytest
from qengine.kernels.select import MIN_ELEMENTS, where

SHAPES = [(1, 74, 32, 24), (MIN_ELEMENTS,), (3, 7)]


def _values(rng, shape, dtype):
    if np.dtype(dtype).kind == "f":
        x = rng.standard_normal(shape).astype(dtype)
        flat = x.reshape(-1)
        flat[:6] = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0]
        return x
    return rng.integers(-100, 100, shape).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "int32", "int64"])
def test_where_is_np_where(shape, dtype):
    rng = np.random.default_rng(0)
    a, b = _values(rng, shape, dtype), _values(rng, shape, dtype)
    for mask in (a > b, a > 0, rng.random(shape) < 0.5):
        got, want = where(mask, a, b), np.where(mask, a, b)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))  # bits: NaN, -0.0


@pytest.mark.parametrize("b_shape", [(), (1, 1, 1, 24), (74, 1, 1)])
def test_where_broadcasts_like_np_where(b_shape):
    rng = np.random.default_rng(1)
    a = _values(rng, (1, 74, 32, 24), "float32")
    b = rng.standard_normal(b_shape).astype(np.float32)
    for got, want in [(where(a > b, a, b), np.where(a > b, a, b)),
                      (where(a > 0, a, np.float32(0.5)), np.where(a > 0, a, np.float32(0.5))),
                      (where(a < 0, 1.5, a), np.where(a < 0, 1.5, a))]:
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_where_takes_views_and_non_contiguous_inputs():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 128)).astype(np.float32)
    b = rng.standard_normal((128, 64)).astype(np.float32).T  # transposed view
    got, want = where(a > b, a, b), np.where(a > b, a, b)
    assert np.array_equal(got, want)


def test_logistic_is_tflites_formula_within_float_rounding():
    """LOGISTIC (float) against its float64 twin: 1 above 16.619..., exp(x) below -9, else
    1 / (1 + exp(-x)); within 4e-7 relative (a few float32 roundings) or, where the result is
    subnormal in float32 (x < -87), the smallest normal float32 absolute; NaN stays NaN."""
    from qengine.ops.activations import LOGISTIC_LOWER, LOGISTIC_UPPER, _logistic

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((7, 1000)) * 8).astype(np.float32)
    x.reshape(-1)[:9] = [np.nan, np.inf, -np.inf, -9.0, np.nextafter(np.float32(-9), -1),
                         LOGISTIC_UPPER, np.nextafter(LOGISTIC_UPPER, 100), 0.0, -100.0]
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        want = np.where(x64 > LOGISTIC_UPPER, 1.0,
                        np.where(x64 < LOGISTIC_LOWER, np.exp(x64), 1 / (1 + np.exp(-x64))))
    got = _logistic(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    tiny = float(np.finfo(np.float32).tiny)
    assert np.all(np.abs(got[finite] - want[finite]) <= 4e-7 * np.abs(want[finite]) + tiny)
