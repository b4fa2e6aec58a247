"""Issue #14's one-pass kernels against their NumPy twins (the code they replaced).

Integers compare exactly; the float kernels too (one product or comparison per value, no
fastmath), including NaN, infinities and signed zeros.
"""

from __future__ import annotations

import numpy as np
import pytest
from qengine.kernels import pooling
from qengine.kernels import threads as pool
from qengine.kernels.elementwise import (
    NO_TABLE,
    lookup_pair_int8,
    lookup_pairs,
    lookup_value_int8,
    lookup_values,
    trailing_period,
)
from qengine.kernels.float_conv import empty_f32
from qengine.kernels.float_ops import (
    max_pool_f32,
    max_pool_f32_rows,
    max_pool_f32_split,
    prelu_f32,
    resize_bilinear_f32,
)

from qengine.ops.conv import ConvGeometry, patches
from qengine.ops.elementwise_int import pair_lookup
from qengine.ops.nn import _bilinear_axis

RNG = np.random.default_rng(14)
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40], np.float32)

FLT_MAX = float(np.finfo(np.float32).max)


def _floats(shape) -> np.ndarray:
    x = RNG.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[RNG.integers(0, flat.size, 8)] = RNG.choice(SPECIAL, 8)
    return x


@pytest.mark.parametrize(("shape", "other", "period"), [
    ((2, 3, 4), (2, 3, 4), 24), ((2, 3, 4), (4,), 4), ((2, 3, 4), (1, 1, 4), 4),
    ((2, 3, 4), (3, 4), 12), ((2, 3, 4), (), 1), ((2, 3, 4), (1,), 1),
    ((2, 3, 4), (3, 1), 0), ((2, 3, 4), (2, 1, 4), 0), ((2, 3, 4), None, 0)])
def test_trailing_period(shape, other, period):
    assert trailing_period(shape, other) == period


@pytest.mark.parametrize(("a_shape", "b_shape"), [
    ((1, 5, 6, 7), (1, 5, 6, 7)), ((1, 5, 6, 7), (1, 1, 1, 7)), ((1, 5, 6, 7), ()),
    ((7,), (1, 5, 6, 7)), ((1, 5, 1, 7), (1, 1, 6, 7)), ((1, 5, 6, 7), (5, 1, 7))])
def test_pair_lookup_equals_numpy_indexing(a_shape, b_shape):
    table = RNG.integers(-128, 128, 65536).astype(np.int8)
    x = RNG.integers(-128, 128, a_shape).astype(np.int8)
    y = RNG.integers(-128, 128, b_shape).astype(np.int8)
    shape = np.broadcast_shapes(a_shape, b_shape)
    def entry(a, b):  # the table as a kernel of the pairs (a major), as ADD's and PRELU's
        return table[(a.astype(np.intp) + 128) * 256 + (b.astype(np.intp) + 128)]

    want = entry(x, y)
    run = pair_lookup(entry, a_shape, b_shape, shape)
    for _ in range(2):  # (the first run of a broadcast first operand makes the (y, x) table)
        got = run(x, y)
        assert got.shape == shape and got.dtype == np.int8
        assert np.array_equal(got, want)


def test_lookup_pair_kernel_covers_every_pair():
    table = np.arange(65536).astype(np.int8)
    x = np.repeat(np.arange(-128, 128, dtype=np.int8), 256)
    y = np.tile(np.arange(-128, 128, dtype=np.int8), 256)
    got = lookup_pair_int8(table, x.reshape(256, 256), y[:256])
    assert np.array_equal(got, table.reshape(256, 256))


def _pairs(table, u, v):
    return table[(u.astype(np.intp) + 128) * 256 + (v.astype(np.intp) + 128)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chained", [False, True, "rows"])
@pytest.mark.parametrize(("n", "m", "k"), [(1001, 1001, 7), (7 * 65, 65, 5),
                                           (8192 * 3, 24, 8192 * 3), (5, 1, 1)])
def test_lookup_pairs_in_parts(threads, chained, n, m, k, monkeypatch):
    """Any range [i0, i1) (a split's parts start anywhere in y's and a's periods), and the
    whole run split between threads from the smallest size on, against NumPy's indexing; a
    period of 24 is repeated to 264 values, which do not divide n: runs restart mid-way.
    Chained: a second table on (a[i % k], the first's value), a row of 256 per a + 128: all
    256 rows, or ("rows") only as many as a's codes reach."""
    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 1)
    table = RNG.integers(-128, 128, 65536).astype(np.int8)
    x = RNG.integers(-128, 128, n).astype(np.int8)
    y = RNG.integers(-128, 128, m).astype(np.int8)
    a = RNG.integers(-128, -128 + 5 if chained == "rows" else 128, k).astype(np.int8)
    rows = int(a.max()) + 129 if chained == "rows" else 256
    then = RNG.integers(-128, 128, 256 * rows).astype(np.int8)
    want = _pairs(table, x, np.tile(y, n // m))
    if chained:
        want = _pairs(then, np.tile(a, n // k), want)
    second = (then, a) if chained else (NO_TABLE, None)
    assert np.array_equal(lookup_pair_int8(table, x, y, threads, *second), want)
    for i0, i1 in [(0, n), (n // 3, n - 1), (m - 1, n), (n, n)]:
        out = np.full(n, 77, np.int8)
        lookup_pairs(table, x, y, out, second[0], a if chained else y, i0, i1)
        assert np.array_equal(out[i0:i1], want[i0:i1])
        assert (out[:i0] == 77).all() and (out[i1:] == 77).all()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 1000, 70001])
def test_lookup_values_in_parts_and_in_place(threads, n, monkeypatch):
    """A 256-entry lookup over any range, split between threads from the smallest size on,
    into a new array or in place (out is x), against NumPy's indexing."""
    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 1)
    table = RNG.integers(-128, 128, 256).astype(np.int8)
    x = RNG.integers(-128, 128, (n, 1)).astype(np.int8)
    want = table[x.astype(np.intp) + 128]
    assert np.array_equal(lookup_value_int8(table, x, threads), want)
    same = x.copy()
    assert lookup_value_int8(table, same, threads, out=same) is same
    assert np.array_equal(same, want)
    for i0, i1 in [(0, n), (n // 3, n - n // 4), (n, n)]:
        out = np.full(n, 77, np.int8)
        lookup_values(table, x.reshape(-1), out, i0, i1)
        assert np.array_equal(out[i0:i1], want.reshape(-1)[i0:i1])
        assert (out[:i0] == 77).all() and (out[i1:] == 77).all()
    for bad in [(table[:255], x.reshape(-1), out, 0, n), (table, x.reshape(-1)[1:], out, 0, 1),
                (table, x.reshape(-1), out, 0, n + 1), (table, x.reshape(-1), out, -1, 0)]:
        with pytest.raises(ValueError, match="do not fit"):
            lookup_values(*bad)


def test_lookup_pairs_refuses_what_does_not_fit():
    table, x, none = np.zeros(65536, np.int8), np.zeros(12, np.int8), NO_TABLE
    for args in [(table[:-1], x, x[:4], x, none, x, 0, 12), (table, x, x[:4], x[:8], none, x, 0, 8),
                 (table, x, x[:4], x, none, x, 0, 13), (table, x, x[:4], x, none, x, -1, 4),
                 (table, x, x[:0], x, none, x, 0, 0), (table, x, x, x, table[:9], x, 0, 12),
                 (table, x, x, x, table, x[:0], 0, 12),
                 (table, x, x, x, table[:256], x + 1, 0, 12)]:  # no row for code 1
        with pytest.raises(ValueError, match="do not fit"):
            lookup_pairs(*args)


@pytest.mark.parametrize(("x_shape", "alpha_shape"), [
    ((1, 8, 9, 16), (1, 1, 16)), ((1, 8, 9, 16), (16,)), ((3, 5), (3, 5)), ((4, 6), ())])
def test_prelu_f32_equals_where(x_shape, alpha_shape):
    x, alpha = _floats(x_shape), _floats(alpha_shape)
    want = np.asarray(np.where(x >= 0, x, x * alpha), np.float32)
    period = trailing_period(x_shape, alpha_shape)
    got = prelu_f32(x.reshape(-1, period), alpha.reshape(-1, period)[0]).reshape(x_shape)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize(("in_hw", "k", "stride", "pad", "out_hw"), [
    ((9, 9), (2, 2), (2, 2), (0, 0), (4, 4)), ((9, 8), (3, 3), (2, 2), (1, 0), (5, 4)),
    ((6, 7), (3, 2), (1, 1), (1, 0), (6, 6)), ((5, 5), (1, 1), (1, 1), (0, 0), (5, 5)),
    ((8, 11), (3, 4), (2, 3), (1, 2), (4, 4)), ((7, 9), (2, 3), (1, 1), (0, 1), (6, 8))])
@pytest.mark.parametrize("bounds", [(-FLT_MAX, FLT_MAX), (0.0, 6.0), (-1.0, 1.0)])
@pytest.mark.parametrize("channels", [5, 8, 21, 40])
def test_max_pool_f32_equals_fmax_reduce(in_hw, k, stride, pad, out_hw, bounds, channels):
    """The max as np.fmax.reduce from -FLT_MAX, then the activation's clamp (inf -> bound);
    from 8 channels on the interior pixels run in channel vectors (16 or 8 lanes, the last one
    overlapping), the border ones tap by tap."""
    x = _floats((2, *in_hw, channels)) * 8
    x[0, :, :, 0] = -np.inf  # a channel of -inf windows: -FLT_MAX, like the reference
    x[1, 0, 0, 1] = np.inf
    x[1, 1:3, 2, 2] = np.nan  # NaN taps are skipped
    x[1, 4, 3, -1] = np.nan  # (the last channel vector, interior)
    g = ConvGeometry(2, *in_hw, *out_hw, *pad, *k, *stride, 1, 1)
    want = np.fmax.reduce(patches(x, g, -np.inf), axis=(3, 4),
                          initial=-np.finfo(np.float32).max)
    want = np.clip(want, np.float32(bounds[0]), np.float32(bounds[1]))
    got = max_pool_f32(x, *k, *stride, *pad, *out_hw, *bounds)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))
    # the output rows (2 images x OH) cut into 3 parts, run at once
    split = np.full_like(got, 7.0)
    max_pool_f32_split(x, split, *k, *stride, *pad, *bounds, 2 * out_hw[0], 3)
    assert np.array_equal(split, want, equal_nan=True)
    assert np.array_equal(np.signbit(split), np.signbit(want))


def test_max_pool_row_kernels_refuse_ranges_past_the_output():
    x = _floats((1, 6, 6, 8))
    out = np.empty((1, 3, 3, 8), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        max_pool_f32_rows(x, out, 2, 2, 2, 2, 0, 0, -FLT_MAX, FLT_MAX, 0, 4)
    with pytest.raises(ValueError, match="do not fit"):
        max_pool_f32_split(x, np.empty((1, 3, 3, 9), np.float32), 2, 2, 2, 2, 0, 0, -FLT_MAX,
                           FLT_MAX, 3, 2)
    q = np.zeros((1, 6, 6, 16), np.int8)
    with pytest.raises(ValueError, match="do not fit"):
        pooling.max_pool_int8_rows(q, np.empty((1, 3, 3, 16), np.int8), 2, 2, 2, 2, 0, 0, -128,
                                   127, 2, 1)
    with pytest.raises(ValueError, match="do not fit"):
        pooling.max_pool_int8_split(q, np.empty((2, 3, 3, 16), np.int8), 2, 2, 2, 2, 0, 0,
                                    -128, 127, 3, 2)


@pytest.mark.parametrize(("in_hw", "out_hw", "align", "half"), [
    ((4, 5), (8, 10), False, True), ((7, 3), (5, 9), True, False), ((6, 6), (6, 6), False,
                                                                   False),
    ((3, 4), (12, 16), False, False)])
@pytest.mark.parametrize("threads", [1, 2])
def test_resize_bilinear_f32_equals_numpy_sum(in_hw, out_hw, align, half, threads,
                                              monkeypatch):
    from qengine.kernels import threads as pool

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 0)  # 2 threads split even these
    image = _floats((2, *in_hw, 3))
    y0, y1, dy = _bilinear_axis(in_hw[0], out_hw[0], align, half)
    x0, x1, dx = _bilinear_axis(in_hw[1], out_hw[1], align, half)
    wy, wx, one = dy[:, None, None], dx[None, :, None], np.float32(1)
    rows0, rows1 = image[:, y0], image[:, y1]
    want = (rows0[:, :, x0] * (one - wy) * (one - wx) + rows1[:, :, x0] * wy * (one - wx)
            + rows0[:, :, x1] * (one - wy) * wx + rows1[:, :, x1] * wy * wx)
    got = resize_bilinear_f32(image, y0, y1, dy, x0, x1, dx, threads)
    assert got.dtype == np.float32
    assert np.array_equal(got, want, equal_nan=True)


FLT_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "DIV"])
@pytest.mark.parametrize("m", [1, 3, 7, 24, 64, 120, 6720])
@pytest.mark.parametrize("y_first", [False, True])
@pytest.mark.parametrize(("low", "high"), [(-FLT_MAX, FLT_MAX), (0.0, 6.0), (-1.0, 1.0)])
@pytest.mark.parametrize("threads", [1, 2])
def test_binary_f32_equals_numpy_then_clip(op, m, y_first, low, high, threads, monkeypatch):
    """One pass of op and clamp against NumPy's float32 op followed by np.clip (NaN passes
    both), with NaN, infinities, signed zeros, huge values (inf after the op) and y repeated
    along x (m = 1: a scalar; m = n: the same shape), on one thread or split in two."""
    from qengine.kernels import float_ops
    from qengine.kernels import threads as pool

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 0)

    with np.errstate(over="ignore"):  # 6720 = 7 * 960: a tail after y's 63-value rows
        x = _floats(6720) * np.float32(1e38)
    y = _floats(m)
    twin = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide}[op]
    tiled = np.tile(y, 6720 // m)
    with np.errstate(all="ignore"):
        want = twin(tiled, x) if y_first else twin(x, tiled)
    want = np.clip(want, np.float32(low), np.float32(high))
    got = float_ops.binary_f32(getattr(float_ops, op), x, y, y_first, np.float32(low),
                               np.float32(high), threads)
    assert got.dtype == np.float32
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))  # -0.0 kept


def test_binary_f32_refuses_operands_that_do_not_repeat():
    from qengine.kernels import float_ops

    with pytest.raises(ValueError, match="do not repeat"):
        float_ops.binary_f32(float_ops.ADD, np.zeros(10, np.float32), np.zeros(3, np.float32),
                             False, np.float32(-1), np.float32(1))


@pytest.mark.parametrize("shape", [(1, 56, 56, 144), (3, 5, 7), (1,), (0, 4), (2, 0, 3)])
def test_empty_f32_starts_on_a_cache_line(shape):
    """Outputs of the float kernels start on a 64-byte line: an AVX-512 vector read 32 bytes
    off straddles two lines."""
    keep = [empty_f32(shape) for _ in range(8)]  # kept alive: each from a different block
    for a in keep:
        assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
        assert a.size == 0 or a.ctypes.data % 64 == 0


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"])
@pytest.mark.parametrize(("a_shape", "b_shape"), [
    ((1, 16, 1), (1, 1, 32)), ((2, 1, 4, 1), (1, 3, 1, 5)), ((5, 1), (1, 6)), ((1, 1, 7), (3, 1, 1)),
    ((2, 3, 4), (2, 3, 4))])
@pytest.mark.parametrize(("low", "high"), [(-np.inf, np.inf), (0.0, 6.0)])
def test_binary_broadcast_f32_equals_numpy_then_clip(op, a_shape, b_shape, low, high):
    """The broadcasting one-pass kernel against NumPy's float32 op on broadcast operands and
    np.clip, with NaN, infinities and signed zeros (MAXIMUM/MINIMUM as TFLite's a > b ? a : b)."""
    from qengine.kernels import float_ops

    shape = np.broadcast_shapes(a_shape, b_shape)
    x = _floats(int(np.prod(a_shape))).reshape(a_shape)
    y = _floats(int(np.prod(b_shape))).reshape(b_shape)[::-1].copy()
    a, b = np.broadcast_to(x, shape), np.broadcast_to(y, shape)
    twins = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide,
             "MAXIMUM": lambda a, b: np.where(a > b, a, b),
             "MINIMUM": lambda a, b: np.where(a < b, a, b)}
    with np.errstate(all="ignore"):
        want = np.clip(twins[op](a, b), np.float32(low), np.float32(high))
    def four(s):
        return (1,) * (4 - len(s)) + tuple(s)

    out = np.empty(four(shape), np.float32)
    float_ops.binary_broadcast_f32(getattr(float_ops, op), x.reshape(four(a_shape)),
                                   y.reshape(four(b_shape)), np.float32(low), np.float32(high),
                                   out)
    got = out.reshape(shape)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_binary_broadcast_f32_refuses_shapes_that_do_not_broadcast():
    from qengine.kernels import float_ops

    out = np.empty((1, 1, 4, 3), np.float32)
    with pytest.raises(ValueError, match="do not broadcast"):
        float_ops.binary_broadcast_f32(float_ops.ADD, np.zeros((1, 1, 5, 3), np.float32),
                                       np.zeros((1, 1, 1, 3), np.float32), np.float32(-1),
                                       np.float32(1), out)


def test_gelu_erf_f32_equals_the_numpy_form():
    """The compiled GELU against the NumPy form it replaced: float32 0.5 * x times erfc in
    double of the float32 x * -sqrt(1/2), rounded; bit for bit, NaN and infinities included."""
    import math

    from qengine.kernels.float_ops import gelu_erf_f32

    x = np.concatenate([_floats(4000) * np.float32(6),
                        np.linspace(-15, 15, 30001, dtype=np.float32)])
    erfc = np.frompyfunc(math.erfc, 1, 1)
    with np.errstate(invalid="ignore"):
        want = np.float32(0.5) * x * erfc(
            (x * np.float32(-math.sqrt(0.5))).astype(np.float64)).astype(np.float32)
    got = gelu_erf_f32(x)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_small_fully_connected_sums_in_the_reference_order():
    """fully_connected_f32_small: each out[r, u] = clamp((0 + x[r,0]*w[0,u] + x[r,1]*w[1,u] +
    ...) + bias[u]) with every product and sum rounded to float32 in turn (a Python-float32
    twin), -0.0 products summed into +0.0, NaN through the clamp; mismatched shapes refused."""
    from qengine.kernels.float_ops import fully_connected_f32_small

    r = np.random.default_rng(3)
    x = (r.standard_normal((3, 37)) * 100).astype(np.float32)
    x[1, 4] = np.nan
    x[2, :] = -0.0
    w_t = r.standard_normal((37, 19)).astype(np.float32)
    bias = r.standard_normal(19).astype(np.float32)
    got = fully_connected_f32_small(x, w_t, bias, np.float32(-50), np.float32(np.inf))
    want = np.empty_like(got)
    for row in range(3):
        for u in range(19):
            total = np.float32(0)
            for d in range(37):
                total = np.float32(total + np.float32(x[row, d] * w_t[d, u]))
            v = np.float32(total + bias[u])
            want[row, u] = v if not v < -50 else np.float32(-50)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
    with pytest.raises(ValueError, match="do not fit"):
        fully_connected_f32_small(x, w_t[:-1], bias, np.float32(0), np.float32(1))
