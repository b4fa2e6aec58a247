"""Fast hybrid kernels against their twins: exact equality.

- `hybrid.quantize_symmetric` / `quantize_asymmetric` (Numba) against the NumPy twins below
  (the Neon quantizers written array-wise, min and max scanned as libstdc++'s minmax_element
  and NEON_2_SSE's NeonMinMax; test_ops_fc_int checks them against TFLite, non-finite rows
  included), and the conversions of NaN and ±inf pinned value by value.
- `gemm_int8` / `depthwise_int8` raw accumulators against `hybrid.conv_accumulators`,
  `depthwise_accumulators` and `matmul_accumulators` (checked against NumPy in test_ops_conv_int).
- The fused float epilogue against the same float32 operations written in NumPy: hybrid FC
  (`gemm_int8`), hybrid CONV_2D / DEPTHWISE_CONV_2D (`hybrid_conv`, over edge shapes).
"""

# ruff: noqa: FURB136, PLR1730  (each `a if a < b else b` is C++'s, in its order: NaN decides)
import numpy as np
import pytest
from naive.float_conv import post_twin
from qengine.kernels import depthwise_int8, emit, gemm_int8, hybrid, hybrid_conv, pack, requant
from qengine.kernels.float_conv import NO_POST, post_args, tile_slopes

# -- NumPy twins of the Neon quantizers ----------------------------------------------------------

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def round_away_f32(v):
    """roundf, exactly in float64 (NaN and ±inf pass through)."""
    v = v.astype(np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def round_away_f64(v):
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)


def cvtt(v):
    """cvttps2dq / cvttss2si: truncation, 0x80000000 for NaN and |v| >= 2^31 (int64 result)."""
    v = np.asarray(v, np.float64)
    fits = np.abs(v) < 2.0**31
    return np.where(fits, np.trunc(np.where(fits, v, 0.0)), INT32_MIN).astype(np.int64)


def neon_cvt(v):
    """NEON_2_SSE's vcvtq_s32_f32: cvttps2dq, its 0x80000000 flipped to 0x7fffffff for
    v >= 2^31 (the cmpge mask is xor'ed in)."""
    return np.where(np.asarray(v, np.float64) >= 2.0**31, INT32_MAX, cvtt(v))


def wrap32(v):
    return (v - INT32_MIN) % 2**32 + INT32_MIN


def quantize_rows(rows, inv, zp, q_min):
    """q of each row: the blocks of 8 as the Neon loop (round, vcvtq, int32 add of zp, int32
    clamp), the tail as its scalar loop (int32(float(zp) + roundf(x·inv)), clamped)."""
    with np.errstate(invalid="ignore", over="ignore"):  # 0 * inf, x * inf
        scaled = rows * inv[:, None]  # float32
    block = rows.shape[1] & ~7
    zp = zp.astype(np.int64)[:, None]
    q = np.empty(rows.shape, np.int64)
    head = scaled[:, :block]
    summed = head + np.where(head < 0, np.float32(-0.5), np.float32(0.5))  # float32; NaN: +0.5
    q[:, :block] = wrap32(neon_cvt(summed) + zp)
    tail = zp.astype(np.float32) + round_away_f32(scaled[:, block:]).astype(np.float32)
    if q_min == -128:  # the clamp to int8's range saturates in float: NaN gives 0
        q[:, block:] = np.clip(np.nan_to_num(tail, nan=0.0, posinf=127, neginf=-128), -128, 127)
    else:
        q[:, block:] = cvtt(tail)
    return np.clip(q, q_min, 127)


def minmax_element(row):
    """libstdc++'s std::minmax_element with operator< (values in pairs, the first smallest and
    the last largest): NaN comparisons are false, so where a NaN sits decides what it does."""
    n = len(row)
    if n == 1:
        return row[0], row[0]
    low, high = (row[1], row[0]) if row[1] < row[0] else (row[0], row[1])
    i = 2
    while i < n:
        if i + 1 == n:
            if row[i] < low:
                low = row[i]
            elif not row[i] < high:
                high = row[i]
            break
        a, b = (row[i + 1], row[i]) if row[i + 1] < row[i] else (row[i], row[i + 1])
        if a < low:
            low = a
        if not b < high:
            high = b
        i += 2
    return low, high


def neon_min_max(row):
    """NeonMinMax (NEON_2_SSE): 4 lanes through minps/maxps (a NaN of the new vector wins),
    halves and pairs folded serially with (a < b ? a : b) / (a > b ? a : b), the last < 4
    values by minmax_element; std::min/max with 0 (a NaN loses to 0)."""
    n = len(row)
    block = n & ~3
    low = high = np.float32(0)
    if block:
        lanes_low = row[:4].copy()
        lanes_high = row[:4].copy()
        for i in range(4, block, 4):
            v = row[i : i + 4]
            lanes_low = np.where(lanes_low < v, lanes_low, v)  # minps(acc, v)
            lanes_high = np.where(lanes_high > v, lanes_high, v)  # maxps(acc, v)
        a, b = lanes_low[:2], lanes_low[2:]
        pair = np.where(a < b, a, b)  # vmin_f32
        m = pair[1] if pair[0] > pair[1] else pair[0]  # vpmin_f32
        low = m if m < low else low  # std::min(0, m)
        a, b = lanes_high[:2], lanes_high[2:]
        pair = np.where(a > b, a, b)
        m = pair[1] if pair[0] < pair[1] else pair[0]
        high = m if high < m else high
    if block < n:
        tail_low, tail_high = minmax_element(row[block:])
        low = tail_low if tail_low < low else low
        high = tail_high if high < tail_high else high
    return low, high


def naive_symmetric(rows):
    n = rows.shape[0]
    if rows.shape[1] == 0:
        return np.zeros(rows.shape, np.int8), np.ones(n, np.float32)
    ends = np.array([minmax_element(row) for row in rows], np.float32).reshape(n, 2)
    low, high = np.abs(ends[:, 0]), np.abs(ends[:, 1])
    top = np.where(low < high, high, low)  # std::max(|min|, |max|): NaN when |min| is
    zero = top == 0
    sf = np.where(zero, np.float32(1), top / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = (np.float32(127) / top).astype(np.float32)
    q = quantize_rows(rows, inv, np.zeros(n), -127)
    q[zero] = 0
    return q.astype(np.int8), sf


def naive_asymmetric(rows):
    n = rows.shape[0]
    if rows.shape[1] == 0:
        return np.zeros(rows.shape, np.int8), np.ones(n, np.float32), np.zeros(n, np.int32)
    ends = np.array([neon_min_max(row) for row in rows], np.float32).reshape(n, 2)
    rmin, rmax = ends[:, 0], ends[:, 1]
    flat = rmin == rmax
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        scale = np.where(flat, 1.0, (rmax - rmin).astype(np.float64) / 255.0)
        low, high = rmin.astype(np.float64) / scale, rmax.astype(np.float64) / scale
        zp_real = np.where(128.0 + np.abs(low) < 127.0 + np.abs(high), -128.0 - low, 127.0 - high)
        zp = np.where(zp_real <= -128, -128, np.where(zp_real >= 127, 127, round_away_f64(
            np.nan_to_num(zp_real))))  # int8(round(NaN)): the low byte of 0x80000000
        zp = np.where(flat, 0, zp).astype(np.int32)
        sf = np.where(flat, 1.0, scale).astype(np.float32)
        inv = np.where(sf == 0, 0, 1.0 / sf.astype(np.float64)).astype(np.float32)
    q = quantize_rows(rows, inv, zp, -128)
    q[flat] = 0
    return q.astype(np.int8), sf, zp


def random_rows(r, kind, batches, depth):
    rows = r.standard_normal((batches, depth)) * 10.0 ** r.uniform(-20, 20)
    if kind == "positive":
        rows = np.abs(rows)
    elif kind == "negative":
        rows = -np.abs(rows)
    elif kind == "ties":  # x * inv lands on .5 often
        rows = r.integers(-4, 5, (batches, depth)) * r.choice([0.5, 0.25, 1 / 127, 1.0])
    elif kind == "sparse":
        rows = np.where(r.random((batches, depth)) < 0.9, 0.0, rows)
    return rows.astype(np.float32)


def assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kind", ["normal", "positive", "negative", "ties", "sparse"])
@pytest.mark.parametrize("seed", range(4))
def test_quantizers_match_numpy_twins(kind, seed):
    r = np.random.default_rng(seed)
    for depth in [0, 1, 7, 8, 9, 16, 23, int(r.integers(24, 3000))]:
        rows = random_rows(r, kind, int(r.integers(1, 4)), depth)
        assert_same(hybrid.quantize_symmetric(rows), naive_symmetric(rows))
        assert_same(hybrid.quantize_asymmetric(rows), naive_asymmetric(rows))


def same_bits(got, want):
    return np.float32(got).view(np.int32) == np.float32(want).view(np.int32)


@pytest.mark.parametrize("seed", range(3))
def test_row_range_is_tflites_for_every_length_and_nan(seed):
    """`_row_range` (16-lane vectors in 4 independent chains and a scalar tail; a row with a
    NaN scanned in TFLite's order) against the twins of std::minmax_element and NeonMinMax:
    lengths around every multiple of 16 and 64, NaNs anywhere, infinities, one-sign rows.
    Without NaN both are NumPy's min and max (capped at 0 for NeonMinMax)."""
    r = np.random.default_rng(seed)
    for n in [*range(1, 140), 1000, 4099]:
        x = (r.standard_normal(n) * 10).astype(np.float32)
        variant = r.integers(6)
        if variant == 1:
            x = np.abs(x) + 1  # no lane sees 0 or a negative: the maximum is not a start value
        elif variant == 2:
            x = -np.abs(x) - 1
        elif variant == 3:
            x[r.integers(n)] = np.nan
        elif variant == 4:
            x[r.integers(n, size=2)] = [np.inf, -np.inf]
        elif variant == 5:
            x[r.integers(n, size=1 + n // 8)] = np.nan
        for symmetric, twin in [(True, minmax_element), (False, neon_min_max)]:
            got, want = hybrid._row_range(x, symmetric), twin(x)
            assert same_bits(got[0], want[0]) and same_bits(got[1], want[1]), (n, symmetric)
        if not np.isnan(x).any():
            assert hybrid._row_range(x, True) == (x.min(), x.max())


def test_row_range_nan_cases_pinned():
    """Where a NaN decides, worked by hand from libstdc++'s minmax_element and NeonMinMax (the
    rules test_ops_fc_int / test_ops_conv_int check against TFLite on non_finite_rows)."""
    nan = np.float32(np.nan)
    row = np.float32([nan, 2, -3, 4, 1])
    low, high = hybrid._row_range(row, True)
    assert np.isnan(low) and high == 4  # a NaN first is minmax_element's min for good
    assert hybrid._row_range(np.float32([1, 9, 2, nan, 3, 4]), True) == (1, 4)  # max gives way
    assert hybrid._row_range(np.float32([1, 2, 3, nan, 4]), True) == (1, 4)  # 4 replaces NaN
    high = hybrid._row_range(np.float32([1, 2, 3, 4, nan]), True)[1]
    assert np.isnan(high)  # a lone last NaN is tried for max: !(NaN < max)
    lanes = np.float32([1, 9, 1, 1, -5, 2, 3, nan])  # lane 3's NaN: the fold drops lane 1
    assert hybrid._row_range(lanes, False) == (-5, 3)
    assert hybrid._row_range(np.float32([9, -9, 1, 1, nan, nan, 1, 1]), False) == (0, 1)


def test_quantize_row_non_finite_values_pinned():
    """q of NaN and ±inf products at every position, as TFLite gives them. The blocks of 8
    convert with NEON_2_SSE's vcvtq_s32_f32 (INT32_MIN for NaN and -inf, INT32_MAX for +inf),
    add the zero point in int32 (wrapping) and clamp; the symmetric tail converts with
    cvttss2si (INT32_MIN for all three) and clamps; the asymmetric tail saturates to int8 in
    float (NaN 0). uint8 q + 128 is the same plus 128."""
    n = 16 * 3 + 8 + 5  # the 16-lane vectors, the rest of the blocks of 8, a tail of 5
    want = {  # (q_min, zp, in the blocks of 8) -> q of (NaN, +inf, -inf)
        (-128, 3, True): (-128, -128, -128), (-128, -3, True): (127, 127, 127),
        (-128, 0, True): (-128, 127, -128), (-128, 3, False): (0, 127, -128),
        (-128, -3, False): (0, 127, -128), (-127, 0, True): (-127, 127, -127),
        (-127, 0, False): (-127, -127, -127)}
    r = np.random.default_rng(3)
    for (q_min, zp, in_blocks), specials in want.items():
        for shift, dtype in [(0, np.int8), (128, np.uint8)]:
            for position in range(n):
                if (position < 56) != in_blocks:
                    continue
                x = (r.standard_normal(n) * 40).astype(np.float32)
                special = position % 3
                x[position] = [np.nan, np.inf, -np.inf][special]
                q = np.zeros(n, dtype)
                hybrid._quantize_row(x, q, np.float32(1.5), zp, q_min, shift, False)
                assert int(q[position]) == specials[special] + shift, (q_min, zp, position)
                twin = quantize_rows(x[None], np.float32([1.5]), np.int64([zp]), q_min)[0]
                np.testing.assert_array_equal(q.astype(np.int64), twin + shift)


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 8, 13, 21, 75, 100])
def test_quantizers_non_finite_rows_match_twins(depth, monkeypatch):
    """NaN, infinities, hidden extremes, denormals (op_harness.non_finite_rows): the quantizers,
    `quantize_images` (one call and split between threads, int8 and uint8) and the one-image
    compiled quantizer against the twins."""
    from op_harness import non_finite_rows
    from qengine.kernels import threads as pool

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 0)
    rows = non_finite_rows(np.random.default_rng(depth), depth)
    with np.errstate(all="ignore"):
        symmetric, asymmetric = naive_symmetric(rows), naive_asymmetric(rows)
    assert_same(hybrid.quantize_symmetric(rows), symmetric)
    assert_same(hybrid.quantize_asymmetric(rows), asymmetric)
    zeros = np.zeros(len(rows), np.int32)
    for sym, (q, sf, *zp) in [(True, symmetric), (False, asymmetric)]:
        want = (q, sf, zp[0] if zp else zeros)
        for threads in (1, 2):
            got = hybrid.quantize_images(rows, sym, threads)
            assert_same(got, want)
            u, usf, uzp = hybrid.quantize_images(rows, sym, threads, unsigned=True)
            assert_same((u.astype(np.int16) - 128, usf, uzp), (q.astype(np.int16), sf, want[2]))
        for b in range(0, len(rows), 7):
            out = np.zeros(depth, np.uint8)
            got_sf, got_zp = hybrid.quantize_image_compiled(rows[b], out, sym, 128)
            assert same_bits(got_sf, sf[b]) and got_zp == want[2][b]
            np.testing.assert_array_equal(out.astype(np.int16) - 128, q[b])


def test_quantizers_zero_rows_and_rounding_corner():
    corner = np.float32(0.5 - 2**-25)  # Neon rounds it to 1 in the 8-blocks, roundf to 0
    rows = np.zeros((3, 13), np.float32)
    rows[1, [0, 3, 12]] = [127, corner, corner]
    rows[2] = -rows[1]
    for quantize, twin in [(hybrid.quantize_symmetric, naive_symmetric),
                           (hybrid.quantize_asymmetric, naive_asymmetric)]:
        assert_same(quantize(rows), twin(rows))
    q, _ = hybrid.quantize_symmetric(rows)
    assert q[1, 3] == 1 and q[1, 12] == 0 and not q[0].any()


# -- raw accumulators ----------------------------------------------------------------------------


def int8(r, shape):
    return r.integers(-128, 128, shape).astype(np.int8)


def conv_case(seed):
    """Random geometry: odd and even channel counts around the 16-lane panels, batches > 1."""
    r = np.random.default_rng(seed)
    n, ci, co = int(r.integers(1, 3)), int(r.integers(1, 40)), int(r.integers(1, 40))
    kh, kw = int(r.integers(1, 4)), int(r.integers(1, 4))
    stride, dil = tuple(r.integers(1, 3, 2)), tuple(r.integers(1, 3, 2))
    pad = (int(r.integers(0, kh)), int(r.integers(0, kw)))
    h, w = int(r.integers(kh * dil[0], 12)), int(r.integers(kw * dil[1], 12))
    out_hw = ((h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1,
              (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1)
    zps = r.integers(-128, 128, n).astype(np.int32)
    geometry = (*stride, *dil, *pad, *out_hw)
    return r, int8(r, (n, h, w, ci)), (kh, kw, ci, co), zps, geometry


@pytest.mark.parametrize("seed", range(16))
def test_conv_accumulators_fast(seed, threads):
    r, q, (kh, kw, ci, co), zps, geometry = conv_case(seed)
    w = int8(r, (co, kh, kw, ci))
    got = gemm_int8.conv2d_int8_acc_fast(q, pack.pack_conv_weights(w), zps, *geometry)
    np.testing.assert_array_equal(got, hybrid.conv_accumulators(q, w, zps, *geometry))


@pytest.mark.parametrize("seed", range(12))
def test_depthwise_accumulators_fast(seed, threads):
    r, q, (kh, kw, ci, _), zps, geometry = conv_case(seed)
    multiplier = 1 + seed % 3
    w = int8(r, (1, kh, kw, ci * multiplier))
    w16 = pack.pack_depthwise_weights(w)
    got = depthwise_int8.depthwise_conv2d_int8_acc_fast(q, w16, zps, *geometry, multiplier)
    want = hybrid.depthwise_accumulators(q, w, zps, *geometry, multiplier)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(1, 1280, 1000), (3, 17, 5), (7, 64, 33), (13, 2, 100)])
def test_fc_accumulators_fast(shape, threads):
    batches, depth, units = shape
    r = np.random.default_rng(depth)
    q, w = int8(r, (batches, depth)), int8(r, (units, depth))
    got = gemm_int8.fully_connected_int8_acc_fast(q, pack.pack_fc_weights(w))
    np.testing.assert_array_equal(got, hybrid.matmul_accumulators(q, w))


# -- the fused float epilogue ----------------------------------------------------------------------


def random_epilogue(r, n, out_c, with_bias, with_zp_sums):
    pre = [None, np.float32(1), (r.random(out_c) * 0.1).astype(np.float32)][int(r.integers(0, 3))]
    scale = (r.standard_normal((n, out_c)) * 1e-3).astype(np.float32)  # signs make -0.0 too
    bias = r.standard_normal(out_c).astype(np.float32) if with_bias else None
    zp_sums = r.integers(-2**31, 2**31, (n, out_c)).astype(np.int32) if with_zp_sums else None
    lo, hi = [(-np.inf, np.inf), (0, 6), (-1, 1), (0, np.inf)][int(r.integers(0, 4))]
    return requant.hybrid_epilogue(n, out_c, scale, pre, bias, zp_sums, lo, hi)


def numpy_epilogue(acc, e, n, bias_given):
    """The float32 operations of HybridEpilogue written array-wise, per image b (axis 0)."""
    acc = acc.reshape(n, -1, acc.shape[-1])
    total = (acc.astype(np.int64) - e.zp_sums[:, None, :]).astype(np.int32)
    out = (total.astype(np.float32) * e.pre) * e.scale[:, None, :]
    if bias_given:
        out = out + e.bias
    return np.clip(out, e.lo, e.hi)


def assert_bits_equal(got, want):
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))  # -0.0 included


@pytest.mark.parametrize("seed", range(6))
def test_fc_hybrid_epilogue(seed, threads):
    r = np.random.default_rng(seed)
    batches, depth, units = int(r.integers(1, 9)), int(r.integers(1, 300)), int(r.integers(1, 70))
    q, w = int8(r, (batches, depth)), int8(r, (units, depth))
    e = random_epilogue(r, batches, units, seed % 2 == 0, True)
    got = gemm_int8.fully_connected_hybrid_fast(q, pack.pack_fc_weights(w), e)
    acc = hybrid.matmul_accumulators(q, w)
    assert_bits_equal(got, numpy_epilogue(acc, e, batches, seed % 2 == 0).reshape(got.shape))


# -- kernels/hybrid_conv.py: quantized once per image, float epilogue in the int8 tiles -----------


@pytest.mark.parametrize("threads", [1, 2])
def test_quantize_images_matches_rows_and_leaves_spare_bytes(threads, monkeypatch):
    from qengine.kernels import threads as pool

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 0)  # 2 threads split even these images
    r = np.random.default_rng(7)
    x = random_rows(r, "normal", 3, 5 * 4 * 3 + 7).reshape(3, 67)  # a tail of 3 after 8s
    x[1] = 0  # an image of zeros: q 0, sf 1, zp 0
    for symmetric, twin in [(True, naive_symmetric), (False, naive_asymmetric)]:
        q, sf, zp = hybrid.quantize_images(x, symmetric, threads)
        want = twin(x.reshape(3, -1))
        want_zp = np.zeros(3, np.int32) if symmetric else want[2]
        assert_same((q.reshape(3, -1), sf, zp), (want[0], want[1], want_zp))
        assert q.base is not None and q.base.size == q.size + hybrid.SPARE_BYTES


@pytest.mark.parametrize("threads", [1, 2])
def test_quantize_images_unsigned_is_q_plus_128(threads, monkeypatch):
    """unsigned=True: the same quantization as uint8 q + 128, zero points those of q (with and
    without the threads' split, NaN and infinities included)."""
    from qengine.kernels import threads as pool

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 0)
    r = np.random.default_rng(11)
    x = random_rows(r, "normal", 3, 16 * 5 + 8 + 3)
    x[2, [0, 40, 90]] = [np.inf, -np.inf, 0.5]
    for symmetric in (False, True):
        q, sf, zp = hybrid.quantize_images(x, symmetric, threads)
        u, usf, uzp = hybrid.quantize_images(x, symmetric, threads, unsigned=True)
        assert u.dtype == np.uint8 and u.base.size == u.size + hybrid.SPARE_BYTES
        assert_same((u.astype(np.int16) - 128, usf, uzp), (q.astype(np.int16), sf, zp))


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_quantize_image_in_parts_equals_the_numpy_twins(parts):
    """hybrid.quantize_image_parts (the split drivers' quantizer: min, max and values in
    `parts` parts) == the twins: zeros (blank), fewer values than parts, a NaN first, in the
    middle and last (TFLite's scan order then decides), infinities, int8 and uint8 + 128."""
    r = np.random.default_rng(parts)
    images = [np.zeros(37, np.float32), np.float32([2.5, -1.0])[: parts - 1]]
    for at in (0, 40, -1):
        x = random_rows(r, "normal", 1, 16 * 7 + 5)[0]
        x[at], x[9] = np.nan, np.inf
        images.append(x)
    images.append(random_rows(r, "normal", 1, 16 * 9 + 3)[0] + 3)  # all positive
    for x in images:
        for symmetric, twin in [(True, naive_symmetric), (False, naive_asymmetric)]:
            want = twin(x.reshape(1, -1))
            want_zp = np.zeros(1, np.int32) if symmetric else want[2]
            for shift in (0, 128):
                q = np.zeros(x.size, np.uint8 if shift else np.int8)
                sf, zp = hybrid.quantize_image_parts(x, q, symmetric, shift, parts)
                assert_same((q.astype(np.int16) - shift, np.float32([sf]), np.int32([zp])),
                            (want[0][0].astype(np.int16), want[1], want_zp))


def hybrid_conv_case(r, n, hw, ci, k, stride, dil, pad):
    """A quantized input (per-image zero points) and the geometry of a k×k convolution."""
    h, w = hw
    out_hw = ((h + 2 * pad[0] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1,
              (w + 2 * pad[1] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1)
    x = (r.standard_normal((n, h, w, ci)) * 3 + r.standard_normal((n, 1, 1, 1))).astype(np.float32)
    q, sf, zp = hybrid.quantize_images(x, symmetric=False)
    return q, sf, zp, (*stride, *dil, *pad, *out_hw)


def reference_epilogue(acc, pre, scale, bias, lo, hi):
    """(float(acc) * pre) * scale + bias, clamped; every step float32; scale [N, Co]."""
    out = (acc.astype(np.float32) * pre) * scale[:, None, None, :]
    return np.clip(out + bias, np.float32(lo), np.float32(hi))


# (n, (h, w), ci, co, (kh, kw), stride, dilation, padding): tails of the 6-pixel row blocks and of
# the 16-channel panels (8-lane tiles for the last <= 8), 1 channel, odd sizes, stride 2,
# dilation, padding, two images
CONV_EDGES = [
    (1, (1, 1), 1, 1, (1, 1), (1, 1), (1, 1), (0, 0)),
    (1, (2, 3), 16, 16, (1, 1), (1, 1), (1, 1), (0, 0)),
    (2, (5, 7), 3, 17, (3, 3), (2, 2), (1, 1), (1, 1)),
    (1, (9, 8), 8, 8, (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, (13, 11), 15, 33, (3, 2), (1, 2), (2, 1), (2, 0)),
    (2, (7, 7), 33, 1, (2, 2), (2, 1), (1, 1), (0, 1)),
    (1, (6, 6), 40, 48, (5, 5), (1, 1), (1, 1), (2, 2)),
    (1, (7, 9), 24, 24, (1, 1), (1, 1), (1, 1), (0, 0)),
    (1, (24, 24), 16, 40, (3, 3), (1, 1), (1, 1), (1, 1)),  # large enough for 2 threads:
    (1, (2, 2), 1024, 520, (1, 1), (1, 1), (1, 1), (0, 0)),  # split by rows, then by panels
    (1, (5, 5), 6, 20, (1, 1), (1, 1), (1, 1), (0, 0)),  # 1x1 whose taps do not fill quads
    # an image of hybrid_conv.QUANTIZE_PARTS_FROM values or more: split, it is quantized in parts
    (1, (48, 44), 16, 24, (1, 1), (1, 1), (1, 1), (0, 0)),
    # the quad tiles read kernel rows straight from the image (Cin·KW a multiple of 4) for
    # the blocks of 6 pixels inside it and pack the rest: wide kernels, one output channel,
    # strides, a dilated height, two images
    (1, (9, 40), 8, 8, (3, 13), (1, 1), (1, 1), (1, 6)),
    (2, (7, 23), 8, 1, (5, 5), (1, 1), (1, 1), (2, 2)),
    (1, (11, 30), 32, 1, (7, 3), (1, 1), (1, 1), (3, 1)),
    (1, (12, 40), 8, 32, (5, 5), (1, 3), (1, 1), (0, 0)),
    (1, (13, 26), 12, 17, (3, 2), (1, 1), (2, 1), (2, 0)),
    (1, (8, 20), 4, 16, (1, 1), (1, 2), (1, 1), (0, 0)),
]
# the tiles of this host and, on a VNNI host, the vpmaddwd ones as well
VNNI = [False, True] if emit.HAS_VNNI else [False]


@pytest.mark.parametrize("case", CONV_EDGES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("vnni", VNNI)
def test_hybrid_conv_fast_exact(case, threads, vnni):
    n, hw, ci, co, k, stride, dil, pad = case
    r = np.random.default_rng(ci * 100 + co)
    q, sf, zp, geometry = hybrid_conv_case(r, n, hw, ci, k, stride, dil, pad)
    w = r.integers(-127, 128, (co, *k, ci)).astype(np.int8)
    pre = (r.random(co) * 0.1).astype(np.float32)
    bias = r.standard_normal(co).astype(np.float32)
    lo, hi = [(-np.inf, np.inf), (0, 6), (-1, 1)][co % 3]
    plan = hybrid_conv.plan_hybrid_conv(pack.pack_conv_weights(w), pre, bias, lo, hi,
                                        *geometry, vnni=vnni)
    got = hybrid_conv.run_hybrid_conv(plan, q, zp, sf, threads)
    acc = hybrid.conv_accumulators(q, w, zp, *geometry)
    want = reference_epilogue(acc, pre, np.broadcast_to(sf[:, None], (n, co)), bias, lo, hi)
    assert_bits_equal(got, want)
    if vnni:  # the uint8 q + 128 the op quantizes to for these tiles
        u8 = (q.astype(np.int16) + 128).astype(np.uint8)
        assert_bits_equal(hybrid_conv.run_hybrid_conv(plan, u8, zp, sf, threads), want)
    # no pre, no bias (-0.0: x + -0.0 == x), symmetric images: zero point 0
    q, sf, _ = hybrid.quantize_images(q.astype(np.float32), symmetric=True)
    plan = hybrid_conv.plan_hybrid_conv(pack.pack_conv_weights(w), None, None, lo, hi,
                                        *geometry, vnni=vnni)
    zeros = np.zeros(n, np.int32)
    got = hybrid_conv.run_hybrid_conv(plan, q, zeros, sf * np.float32(0.03), threads)
    acc = hybrid.conv_accumulators(q, w, zeros, *geometry)
    scale = np.broadcast_to((sf * np.float32(0.03))[:, None], (n, co))
    assert_bits_equal(got, reference_epilogue(acc, np.float32(1), scale, np.float32(-0.0), lo, hi))


def with_folded(cases):
    """(case, folded) pairs: every case plain, and the one-image ones with a folded epilogue
    (it runs in the kernels for one image only)."""
    return [(c, False) for c in cases] + [(c, True) for c in cases if c[0] == 1]


@pytest.mark.parametrize("case, folded", with_folded(CONV_EDGES))
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("vnni", VNNI)
@pytest.mark.parametrize("parts", [1, 2, 3])
def test_hybrid_conv_fused_equals_the_two_steps(case, folded, symmetric, vnni, parts):
    """run_hybrid_conv_serial / run_hybrid_conv_split in `parts` parts (quantize and conv in
    one compiled call) == quantize_images, then run_hybrid_conv, bit for bit; inputs with an
    offset, and one image with inf and NaN. `folded`: one image, with a residual ADD and a
    PRELU run on each finished block (== the conv, then their NumPy twin)."""
    n, hw, ci, co, k, stride, dil, pad = case
    r = np.random.default_rng(ci * 100 + co + symmetric)
    _, _, _, geometry = hybrid_conv_case(r, n, hw, ci, k, stride, dil, pad)
    x = (r.standard_normal((n, *hw, ci)) * 3 + r.standard_normal((n, 1, 1, 1))).astype(np.float32)
    if n > 1:
        x[1, 0, 0, 0], x[1, -1, -1, -1] = np.inf, np.nan
    w = r.integers(-127, 128, (co, *k, ci)).astype(np.int8)
    pre = None if symmetric else (r.random(co) * 0.1).astype(np.float32)
    bias = r.standard_normal(co).astype(np.float32)
    plan = hybrid_conv.plan_hybrid_conv(pack.pack_conv_weights(w), pre, bias, 0, 6, *geometry,
                                        vnni=vnni)
    filter_scale = np.float32(0.03) if symmetric else np.float32(1)
    q, sf, zp = hybrid.quantize_images(x, symmetric)
    want = hybrid_conv.run_hybrid_conv(plan, q, zp, sf * filter_scale if symmetric else sf)
    got = np.empty((n, geometry[-2] * geometry[-1], co), np.float32)
    post, want = folded_epilogue(r, want, folded)
    args = (x, plan.family, plan.panels, plan.table, plan.ints, plan.sum_w, symmetric,
            filter_scale, got, post)
    blocks = -(-got.shape[1] // pack.ROWS)
    if parts == 1:
        hybrid_conv.run_hybrid_conv_serial(*args, 0, blocks)
    else:  # row blocks, or panels when there are fewer blocks than parts
        hybrid_conv.run_hybrid_conv_split(*args, blocks, parts)
    assert_bits_equal(got.reshape(want.shape), want)


# (n, (h, w), channels, multiplier, (kh, kw), stride, dilation, padding)
DEPTHWISE_EDGES = [
    (1, (1, 1), 1, 1, (1, 1), (1, 1), (1, 1), (0, 0)),
    (1, (9, 9), 8, 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, (10, 7), 16, 1, (3, 3), (2, 2), (1, 1), (1, 0)),
    (1, (12, 12), 24, 1, (5, 5), (1, 1), (1, 1), (2, 2)),
    (1, (11, 13), 33, 1, (3, 3), (1, 2), (2, 2), (2, 1)),
    (1, (8, 8), 48, 1, (3, 3), (2, 2), (1, 1), (0, 0)),
    (2, (6, 5), 7, 2, (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, (5, 6), 16, 3, (2, 3), (2, 1), (1, 2), (0, 1)),
    (1, (56, 48), 24, 1, (3, 3), (1, 1), (1, 1), (1, 1)),  # large enough for 2 threads
    (1, (7, 7), 64, 1, (5, 5), (1, 1), (1, 1), (2, 2)),  # few rows: split by 16-lane groups
]


@pytest.mark.parametrize("case", DEPTHWISE_EDGES)
@pytest.mark.parametrize("threads", [1, 2])
def test_hybrid_depthwise_fast_exact(case, threads):
    n, hw, ci, multiplier, k, stride, dil, pad = case
    co = ci * multiplier
    r = np.random.default_rng(ci * 10 + multiplier)
    q, sf, zp, geometry = hybrid_conv_case(r, n, hw, ci, k, stride, dil, pad)
    w = r.integers(-127, 128, (1, *k, co)).astype(np.int8)
    bias = r.standard_normal(co).astype(np.float32) if ci % 2 else None
    lo, hi = [(-np.inf, np.inf), (0, 6), (-1, 1)][co % 3]
    scale = (r.random(co) * 0.1).astype(np.float32)[None, :] * sf[:, None]  # s_w[c] * sf_b
    plan = hybrid_conv.plan_hybrid_depthwise(pack.pack_depthwise_weights(w), None, bias, lo,
                                             hi, *geometry, multiplier)
    got = hybrid_conv.run_hybrid_depthwise(plan, q, zp, scale, threads)
    acc = hybrid.depthwise_accumulators(q, w, zp, *geometry, multiplier)
    want = reference_epilogue(acc, np.float32(1), scale,
                              np.float32(-0.0) if bias is None else bias, lo, hi)
    assert_bits_equal(got, want)
    # an input without the spare bytes after it (not from quantize_images) is copied first
    assert_bits_equal(hybrid_conv.run_hybrid_depthwise(plan, q.copy(), zp, scale, threads), want)


def folded_epilogue(r, want, folded):
    """(post, expected output): float_conv.post_args of a residual (with +-inf, NaN and -0.0)
    clamped to [-1, 4] and per-channel PRELU slopes, and `want` put through their twin; or no
    post and `want` as it is."""
    if not folded:
        return NO_POST, want
    channels = want.shape[-1]
    residual = r.standard_normal((want.size // channels, channels)).astype(np.float32) * 3
    flat = residual.reshape(-1)
    flat[::11], flat[3::13], flat[5::17], flat[7::19] = np.inf, -np.inf, np.nan, -0.0
    alpha = r.standard_normal(channels).astype(np.float32)
    post = post_args(residual, -1.0, 4.0, tile_slopes(alpha))
    return post, post_twin(want, residual, -1.0, 4.0, alpha)


@pytest.mark.parametrize("case, folded", with_folded([c for c in DEPTHWISE_EDGES if c[3] == 1]))
@pytest.mark.parametrize("parts", [1, 2, 3])
def test_hybrid_depthwise_fused_equals_the_two_steps(case, folded, parts):
    """run_hybrid_depthwise_serial / _split in `parts` parts == quantize_images, then
    run_hybrid_depthwise, bit for bit (zero points far from 0 make the corr row matter; one
    image holds inf and NaN). `folded`: one image, with a residual ADD and a PRELU run on
    each finished row."""
    n, hw, ci, _, k, stride, dil, pad = case
    r = np.random.default_rng(ci * 7 + 1)
    _, _, _, geometry = hybrid_conv_case(r, n, hw, ci, k, stride, dil, pad)
    x = (r.standard_normal((n, *hw, ci)) * 3 + 4).astype(np.float32)
    if n > 1:
        x[1, 0, 0, 0], x[1, -1, -1, -1] = -np.inf, np.nan
    w = r.integers(-127, 128, (1, *k, ci)).astype(np.int8)
    bias = r.standard_normal(ci).astype(np.float32)
    filter_scales = (r.random(ci) * 0.1).astype(np.float32)
    plan = hybrid_conv.plan_hybrid_depthwise(pack.pack_depthwise_weights(w), None, bias, 0, 6,
                                             *geometry, 1)
    q, sf, zp = hybrid.quantize_images(x, False)
    want = hybrid_conv.run_hybrid_depthwise(plan, q, zp, filter_scales[None, :] * sf[:, None])
    got = np.empty(want.shape, np.float32)
    post, want = folded_epilogue(r, want, folded)
    args = (x, plan.w_pairs, plan.table, plan.ints, plan.sum_w, filter_scales,
            np.array(pack.DW_ORDER), got, post)
    if parts == 1:
        hybrid_conv.run_hybrid_depthwise_serial(*args, 0, got.shape[1])
    else:
        hybrid_conv.run_hybrid_depthwise_split(*args, got.shape[1], parts)
    assert_bits_equal(got, want)


def test_an_edge_case_of_each_kernel_quantizes_in_parts():
    """The split drivers quantize an image of QUANTIZE_PARTS_FROM values or more in parts: one
    case of each kernel above is that large, so its fused-equals-two-steps test covers it."""
    for edges in (CONV_EDGES, DEPTHWISE_EDGES):
        largest = max(n and hw[0] * hw[1] * ci for n, hw, ci, *_ in edges)
        assert largest >= hybrid_conv.QUANTIZE_PARTS_FROM


@pytest.mark.parametrize("threads", [1, 2])
def test_has_nan_finds_a_nan_anywhere(threads, monkeypatch):
    """hybrid.has_nan (the folded-PAD hybrid convs' check) on one thread and in parts: a NaN
    in the first, a middle, the last place or in a vector's tail, none, an empty image."""
    from qengine.kernels import threads as pool

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 1)
    x = np.random.default_rng(7).standard_normal((1, 9, 7, 33)).astype(np.float32)
    x.reshape(-1)[::5] = np.inf
    assert not hybrid.has_nan(x, threads)
    for place in (0, 1000, x.size - 1, x.size - 3):
        y = x.copy()
        y.reshape(-1)[place] = np.nan
        assert hybrid.has_nan(y, threads)
    assert not hybrid.has_nan(np.zeros((1, 0, 4, 4), np.float32), threads)
