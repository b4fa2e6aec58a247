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
