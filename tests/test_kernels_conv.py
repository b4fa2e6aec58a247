"""Int8 conv / FC / matmul / pooling / reduce kernels against their slow twins: exact equality.

Cases are seeded-random: shapes, strides, dilations, SAME/VALID/explicit padding, groups,
per-channel and per-tensor multipliers, extreme scales (multipliers > 1, tiny ones flushed to
zero, zero) and activation clamps.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # import-mode=importlib does not add tests/

from naive import int8_conv as naive
from qengine.kernels import conv, fully_connected, pooling, reduce
from qengine.kernels.fixedpoint import quantize_multipliers

SEEDS = range(100)


def rand_int8(rng, shape, lo=-128):
    return rng.integers(lo, 128, size=shape, dtype=np.int64).astype(np.int8)


class Regime:
    """Coherent random data and scales, so outputs land inside the int8 range instead of saturating.

    kind: "normal" (multipliers < 1 scaled to the accumulator), "big" (multipliers > 1 with small
    accumulators), "tiny" (below 2^-32, flushed to zero), "zero", "mixed" (per-channel scales
    spanning 12 decades). `taps` is the number of products summed per output.
    """

    def __init__(self, rng, taps, kind=None):
        self.rng = rng
        self.kind = kind or rng.choice(["normal"] * 6 + ["big"] * 2 + ["tiny", "zero", "mixed"])
        self.spread = 3 if self.kind == "big" else 127  # |x - zp| and |w| bound
        self.acc_scale = self.spread * min(self.spread, 64) * np.sqrt(taps)  # typical |acc|

    def activations(self, shape, zp):
        if self.spread >= 127:
            return rand_int8(self.rng, shape)
        return np.clip(
            zp + self.rng.integers(-self.spread, self.spread + 1, shape), -128, 127
        ).astype(np.int8)

    def weights(self, shape):
        return self.rng.integers(-min(self.spread, 127), min(self.spread, 127) + 1, shape).astype(
            np.int8
        )

    def reals(self, count):
        rng = self.rng
        if self.kind == "normal":
            reals = 10.0 ** rng.uniform(-0.7, 0.7, count) * 40 / self.acc_scale
        elif self.kind == "big":
            reals = 10.0 ** rng.uniform(0, 1.5, count)
        elif self.kind == "tiny":
            reals = 10.0 ** rng.uniform(
                -12, -9.7, count
            )  # below 2^-32: QuantizeMultiplier gives (0, 0)
        elif self.kind == "zero":
            reals = np.zeros(count)
        else:
            reals = 10.0 ** rng.uniform(-11, 1, count)
        if rng.random() < 0.3:  # per-tensor: one scale repeated
            reals[:] = reals[0]
        return reals

    def bias(self, count):
        kind = self.rng.integers(0, 7)
        bound = (
            0 if kind == 0 else 2**31 - 1 if kind == 1 else int(2 * self.acc_scale)
        )  # 2^31 wraps int32
        return self.rng.integers(-bound, bound + 1, size=count, dtype=np.int64).astype(np.int32)


def rand_act(rng, out_zp):
    kind = rng.integers(0, 4)
    if kind <= 1:
        return -128, 127
    if kind == 1:  # RELU
        return max(-128, out_zp), 127
    lo = int(rng.integers(-128, 128))
    return lo, int(rng.integers(lo, 128))


def rand_padding(rng, size, k, stride, dil):
    """(out, pad_before) for SAME, VALID or an explicit (possibly large) padding; None if empty."""
    kind = rng.integers(0, 3)
    if kind == 0:
        out, before = naive.same_padding(size, k, stride, dil)
    elif kind == 1:
        out, before = naive.valid_padding(size, k, stride, dil)
    else:
        before, after = (int(v) for v in rng.integers(0, k * dil + 1, 2))
        out = (size + before + after - ((k - 1) * dil + 1)) // stride + 1
    return (out, before) if out > 0 else None


def conv_geometry(rng, max_k=4, max_dil=2):
    while True:
        h, w = (int(v) for v in rng.integers(1, 10, 2))
        k_h, k_w = (int(v) for v in rng.integers(1, max_k + 1, 2))
        s_h, s_w = (int(v) for v in rng.integers(1, 4, 2))
        d_h, d_w = (int(v) for v in rng.integers(1, max_dil + 1, 2))
        ph, pw = rand_padding(rng, h, k_h, s_h, d_h), rand_padding(rng, w, k_w, s_w, d_w)
        if ph and pw:
            return {"h": h, "w": w, "k": (k_h, k_w), "stride": (s_h, s_w), "dil": (d_h, d_w),
                        "out": (ph[0], pw[0]), "pad": (ph[1], pw[1])}  # fmt: skip


def quant_params(rng, regime, out_c):
    mult, shift = quantize_multipliers(regime.reals(out_c))
    in_zp, out_zp = (int(v) for v in rng.integers(-128, 128, 2))
    return mult, shift, in_zp, out_zp, rand_act(rng, out_zp)


def assert_same(got, want):
    assert got.dtype == want.dtype == np.int8
    assert got.shape == want.shape
    mismatch = np.argwhere(got != want)
    assert mismatch.size == 0, (
        f"{len(mismatch)} differ; first at {mismatch[0]}: {got[tuple(mismatch[0])]} vs {want[tuple(mismatch[0])]}"
    )


# --- convolutions ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_conv2d(seed):
    rng = np.random.default_rng(seed)
    g = conv_geometry(rng)
    groups = int(rng.integers(1, 4)) if seed % 3 == 0 else 1
    cig, per_group, n = (int(v) for v in rng.integers(1, 5, 3))
    ci, co = groups * cig, groups * per_group
    regime = Regime(rng, taps=g["k"][0] * g["k"][1] * cig)
    mult, shift, in_zp, out_zp, act = quant_params(rng, regime, co)
    x = regime.activations((n, g["h"], g["w"], ci), in_zp)
    w = regime.weights((co, *g["k"], cig))
    bias = regime.bias(co)
    got = conv.conv2d_int8(
        x, w, bias, in_zp, mult, shift, out_zp, *act, *g["stride"], *g["dil"], *g["pad"], *g["out"]
    )
    want = naive.conv2d(
        x, w, bias, in_zp, mult, shift, out_zp, act, g["stride"], g["dil"], g["pad"], g["out"]
    )
    assert_same(got, want)


@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise_conv2d(seed):
    rng = np.random.default_rng(seed)
    g = conv_geometry(rng)
    ci, dm, n = (int(v) for v in rng.integers(1, 5, 3))
    co = ci * dm
    regime = Regime(rng, taps=g["k"][0] * g["k"][1])
    mult, shift, in_zp, out_zp, act = quant_params(rng, regime, co)
    x = regime.activations((n, g["h"], g["w"], ci), in_zp)
    w = regime.weights((1, *g["k"], co))
    bias = regime.bias(co)
    got = conv.depthwise_conv2d_int8(
        x,
        w,
        bias,
        in_zp,
        mult,
        shift,
        out_zp,
        *act,
        *g["stride"],
        *g["dil"],
        *g["pad"],
        *g["out"],
        dm,
    )
    want = naive.depthwise_conv2d(
        x, w, bias, in_zp, mult, shift, out_zp, act, g["stride"], g["dil"], g["pad"], g["out"], dm
    )
    assert_same(got, want)


@pytest.mark.parametrize("seed", SEEDS)
def test_transpose_conv(seed):
    rng = np.random.default_rng(seed)
    h, w_in, k_h, k_w = (int(v) for v in rng.integers(1, 6, 4))
    s_h, s_w = (int(v) for v in rng.integers(1, 4, 2))
    ci, co, n = (int(v) for v in rng.integers(1, 5, 3))
    # TFLite's output size is an input; SAME gives in*stride, VALID (in-1)*stride + k; allow any.
    out_h = int(rng.integers(max(1, (h - 1) * s_h), (h - 1) * s_h + k_h + 2))
    out_w = int(rng.integers(max(1, (w_in - 1) * s_w), (w_in - 1) * s_w + k_w + 2))
    pad = (int(rng.integers(0, k_h)), int(rng.integers(0, k_w)))
    regime = Regime(rng, taps=ci * -(-k_h // s_h) * -(-k_w // s_w))
    mult, shift, in_zp, out_zp, act = quant_params(rng, regime, co)
    x = regime.activations((n, h, w_in, ci), in_zp)
    w = regime.weights((co, k_h, k_w, ci))
    bias = regime.bias(co)
    got = conv.transpose_conv_int8(
        x, w, bias, in_zp, mult, shift, out_zp, *act, s_h, s_w, *pad, out_h, out_w
    )
    want = naive.transpose_conv(
        x, w, bias, in_zp, mult, shift, out_zp, act, (s_h, s_w), pad, (out_h, out_w)
    )
    assert_same(got, want)


def test_conv_skipped_taps_equal_zero_point_padding():
    """A 3x3 SAME conv on a 1x1 image sees only the centre tap: out-of-image taps contribute nothing."""
    x = np.array([[[[5]]]], np.int8)
    w = np.full((1, 3, 3, 1), 100, np.int8)
    w[0, 1, 1, 0] = 2
    mult, shift = quantize_multipliers([1.0])
    got = conv.conv2d_int8(
        x, w, np.zeros(1, np.int32), -3, mult, shift, 0, -128, 127, 1, 1, 1, 1, 1, 1, 1, 1
    )
    assert got.item() == 2 * (5 + 3)


# --- fully connected and batch matmul ------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_fully_connected(seed):
    rng = np.random.default_rng(seed)
    b, d, o = int(rng.integers(1, 5)), int(rng.integers(1, 40)), int(rng.integers(1, 12))
    ties = seed % 5 == 0  # scales that are exact binary fractions, with small accumulators
    regime = Regime(rng, taps=d, kind="big" if ties else None)
    in_zp, out_zp = (int(v) for v in rng.integers(-128, 128, 2))
    x = regime.activations((b, d), in_zp)
    w = regime.weights((o, d))
    bias = regime.bias(o)
    eff = regime.reals(o)
    if ties:
        eff[:] = 2.0 ** -rng.integers(1, 4)
    w_zp = int(rng.integers(-20, 21)) if eff.min() == eff.max() else 0  # per-tensor keeps its zp
    act = rand_act(rng, out_zp)
    got = fully_connected.fully_connected_int8(x, w, bias, in_zp, w_zp, eff, out_zp, *act)
    assert_same(got, naive.fully_connected(x, w, bias, in_zp, w_zp, eff, out_zp, act))
    mult, shift = quantize_multipliers(eff)
    got = fully_connected.fully_connected_int8_mbqm(
        x, w, bias, in_zp, w_zp, mult, shift, out_zp, *act
    )
    assert_same(got, naive.fully_connected_mbqm(x, w, bias, in_zp, w_zp, mult, shift, out_zp, act))


def test_fully_connected_float_requant_ties_away_from_zero():
    x = np.array([[1, -1, 3, -3]], np.int8).T.copy()  # four batches of depth 1
    w = np.ones((1, 1), np.int8)
    got = fully_connected.fully_connected_int8(
        x, w, np.zeros(1, np.int32), 0, 0, np.array([0.5]), 0, -128, 127
    )
    assert got.ravel().tolist() == [1, -1, 2, -2]


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_matmul(seed):
    rng = np.random.default_rng(seed)
    b, m, k, n = (int(v) for v in rng.integers(1, 9, 4))
    regime = Regime(rng, taps=k)
    zp_x, zp_y, out_zp = (int(v) for v in rng.integers(-128, 128, 3))
    x, y = regime.activations((b, m, k), zp_x), regime.activations((b, k, n), zp_y)
    mult, shift = (int(v[0]) for v in quantize_multipliers(regime.reals(1)))
    act = (-128, 127) if seed % 2 else rand_act(rng, out_zp)
    got = fully_connected.batch_matmul_int8(x, y, zp_x, zp_y, mult, shift, out_zp, *act)
    assert_same(got, naive.batch_matmul(x, y, zp_x, zp_y, mult, shift, out_zp, act))


# --- pooling ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("channels", ["few", "vectors"])
def test_pooling(seed, channels):
    """`vectors`: 16-40 channels, whose interior pixels MAX_POOL runs in 16-lane vectors (the
    last one overlapping)."""
    rng = np.random.default_rng(seed)
    g = conv_geometry(rng, max_k=5, max_dil=1)
    # TFLite pool windows always overlap the image under SAME/VALID; explicit pads here stay below k.
    g["pad"] = (min(g["pad"][0], g["k"][0] - 1), min(g["pad"][1], g["k"][1] - 1))
    n = int(rng.integers(1, 3))
    c = int(rng.integers(1, 6)) if channels == "few" else int(rng.integers(16, 41))
    x = rand_int8(rng, (n, g["h"], g["w"], c))
    act = rand_act(rng, int(rng.integers(-128, 128)))
    args = (*g["k"], *g["stride"], *g["pad"], *g["out"], *act)
    got = pooling.avg_pool_int8(x, *args)
    assert_same(got, naive.avg_pool(x, *g["k"], g["stride"], g["pad"], g["out"], act))
    want = naive.max_pool(x, *g["k"], g["stride"], g["pad"], g["out"], act)
    assert_same(pooling.max_pool_int8(x, *args), want)
    split = np.full(want.shape, 99, np.int8)  # the output rows cut into 3 parts, run at once
    pooling.max_pool_int8_split(x, split, *g["k"], *g["stride"], *g["pad"], *act,
                                n * g["out"][0], 3)
    assert_same(split, want)


def test_avg_pool_rounds_half_away_from_zero():
    x = np.array([1, 2, -1, -2], np.int8).reshape(1, 2, 2, 1)  # windows of 2: (1+2)/2, (-1-2)/2
    got = pooling.avg_pool_int8(x, 1, 2, 1, 1, 0, 0, 2, 1, -128, 127)
    assert got.ravel().tolist() == [2, -2]


# --- MEAN / SUM ---------------------------------------------------------------------------


def to_outer_reduced_inner(x, axes):
    """Transpose the reduced axes to the middle and flatten to [outer, reduced, inner]."""
    kept = [a for a in range(x.ndim) if a not in axes]
    split = next((i for i, a in enumerate(kept) if a > min(axes)), len(kept))
    order = kept[:split] + sorted(axes) + kept[split:]
    xt = np.ascontiguousarray(x.transpose(order))
    outer = int(np.prod([x.shape[a] for a in kept[:split]], dtype=np.int64))
    reduced = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    return xt.reshape(outer, reduced, -1), [x.shape[a] for a in kept]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op", ["mean", "sum"])
def test_mean_and_sum(seed, op):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 5))
    shape = tuple(int(v) for v in rng.integers(1, 7, ndim))
    axes = sorted({int(a) for a in rng.integers(0, ndim, int(rng.integers(1, ndim + 1)))})
    x = rand_int8(rng, shape)
    in_scale = float(np.float32(10.0 ** rng.uniform(-3, 0)))
    ratio = 10.0 ** rng.uniform(-2, 2) if seed % 7 else 1.0
    out_scale = float(np.float32(in_scale * (ratio * (x.size if op == "sum" else 1))))
    in_zp, out_zp = (int(v) for v in rng.integers(-128, 128, 2))
    x3, out_shape = to_outer_reduced_inner(x, axes)
    n = x3.shape[1]
    if op == "mean":
        mult, shift = reduce.mean_multiplier(in_scale, out_scale, n)
        got = reduce.mean_int8_ref(x3, in_zp, mult, shift, out_zp)
    else:
        mult, shift = reduce.sum_multiplier(in_scale, out_scale)
        got = reduce.sum_int8_ref(x3, in_zp, mult, shift, out_zp)
    want = naive.mean_or_sum(x, axes, in_zp, in_scale, out_zp, out_scale, mean=op == "mean")
    assert_same(got.reshape(out_shape), want)


def test_mean_is_close_to_the_real_mean():
    rng = np.random.default_rng(0)
    x = rand_int8(rng, (3, 50, 4))
    mult, shift = reduce.mean_multiplier(0.1, 0.05, 50)
    got = reduce.mean_int8_ref(x, -7, mult, shift, 3)
    real = (x.astype(np.float64) + 7).mean(axis=1) * 0.1 / 0.05 + 3
    assert np.abs(got - np.clip(np.round(real), -128, 127)).max() <= 1


def test_mean_multiplier_matches_reference_arithmetic():
    # s_in/s_out = 1 → (2^30, 1); n = 3 → sh = 1, M' = 2^31 // 3, shift' = 0
    assert reduce.mean_multiplier(1.0, 1.0, 3) == (2**31 // 3, 0)
    # n = 2^40 clamps sh to 32 and, with shift -5, to 31 + shift = 26
    m, s = reduce.sum_multiplier(1.0, 64.0)
    assert (m, s) == (2**30, -5)
    assert reduce.mean_multiplier(1.0, 64.0, 2**40) == ((m << 26) // 2**40, -31)
