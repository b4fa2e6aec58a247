"""Fast int8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED against the reference kernels: exact equality.

The reference kernels (kernels/conv.py, kernels/fully_connected.py) are themselves checked
against NumPy twins and TFLite; here the fast kernels must give the same int8 output for the
same seeded inputs: random geometries (strides, dilations, SAME/VALID/explicit padding), channel
counts around the 16-channel panel and 6-pixel tile edges, MobileNetV2-like layers, batch > 1,
zero points at the int8 extremes, fused clamps, and multipliers from QuantizeMultiplier as well
as raw int32 ones (INT32_MIN, left shifts past 31, right shifts of 31).
"""

import numpy as np
import pytest
from qengine.kernels import conv, depthwise_int8, emit, fully_connected, gemm_int8, pack
from qengine.kernels.fixedpoint import quantize_multipliers
from test_kernels_conv import Regime, assert_same, conv_geometry, quant_params

SEEDS = range(40)


def extreme_params(rng, out_c):
    """Raw per-channel (M, shift) pairs, zero points at the int8 ends, arbitrary clamps."""
    mult = rng.integers(-(2**31), 2**31, out_c, dtype=np.int64)
    mult[rng.random(out_c) < 0.2] = -(2**31)
    mult[rng.random(out_c) < 0.1] = 2**31 - 1
    mult[rng.random(out_c) < 0.1] = 0
    shift = rng.integers(-31, 40, out_c)
    in_zp = int(rng.choice([-128, 127, -1, 0]))
    out_zp = int(rng.choice([-128, 127, 0]))
    lo = int(rng.integers(-128, 128))
    return (
        mult.astype(np.int32),
        shift.astype(np.int32),
        in_zp,
        out_zp,
        (lo, int(rng.integers(lo, 128))),
    )


def conv_case(rng, regime, shape, k, stride, dil, pad, out_hw, out_c, extreme=False):
    if extreme:
        mult, shift, in_zp, out_zp, act = extreme_params(rng, out_c)
        bias = rng.integers(-(2**31), 2**31, out_c).astype(np.int32)
    else:
        mult, shift, in_zp, out_zp, act = quant_params(rng, regime, out_c)
        bias = regime.bias(out_c)
    x = regime.activations(shape, in_zp)
    return x, bias, (in_zp, mult, shift, out_zp, *act, *stride, *dil, *pad, *out_hw)


# the tiles of this host and, on a VNNI host, the vpmaddwd ones as well
VNNI = [False, True] if emit.HAS_VNNI else [False]


def check_conv(x, w, bias, args):
    """The fast conv equals the reference in each tile family this host runs."""
    want = conv.conv2d_int8(x, w, bias, *args)
    for vnni in VNNI:
        got = gemm_int8.conv2d_int8_fast(x, pack.pack_conv_weights(w), bias, *args, vnni=vnni)
        assert_same(got, want)


def check_depthwise(x, w, bias, args, dm):
    want = conv.depthwise_conv2d_int8(x, w, bias, *args, dm)
    packed = pack.pack_depthwise_weights(w)
    got = depthwise_int8.depthwise_conv2d_int8_fast(x, packed, bias, *args, dm)
    assert_same(got, want)


def same_pad(size, k, stride, dil=1):
    out = -(-size // stride)
    return out, max((out - 1) * stride + (k - 1) * dil + 1 - size, 0) // 2


@pytest.mark.parametrize("seed", SEEDS)
def test_conv2d_random(seed, threads):
    rng = np.random.default_rng(1000 + seed)
    g = conv_geometry(rng)
    ci = int(rng.choice([1, 3, 8, 17, 33]))
    co = int(rng.choice([1, 5, 16, 17, 40]))
    n = int(rng.integers(1, 4))
    regime = Regime(rng, taps=g["k"][0] * g["k"][1] * ci)
    x, bias, args = conv_case(rng, regime, (n, g["h"], g["w"], ci), g["k"], g["stride"], g["dil"],
                              g["pad"], g["out"], co, extreme=seed % 4 == 3)  # fmt: skip
    check_conv(x, regime.weights((co, *g["k"], ci)), bias, args)


MOBILENET_CONV = [  # (n, h, w, ci, co, k, stride)
    (1, 28, 28, 32, 192, 1, 1),
    (2, 14, 14, 64, 24, 1, 1),
    (1, 7, 7, 160, 960, 1, 1),
    (1, 57, 57, 3, 32, 3, 2),
    (3, 9, 11, 24, 20, 3, 1),
    (1, 8, 8, 16, 33, 1, 2),
]


@pytest.mark.parametrize("case", MOBILENET_CONV, ids=str)
def test_conv2d_mobilenet_shapes(case, threads):
    n, h, w, ci, co, k, s = case
    rng = np.random.default_rng(h * 1000 + ci)
    regime = Regime(rng, taps=k * k * ci, kind="normal")
    (oh, pt), (ow, pl) = same_pad(h, k, s), same_pad(w, k, s)
    x, bias, args = conv_case(rng, regime, (n, h, w, ci), (k, k), (s, s), (1, 1), (pt, pl),
                              (oh, ow), co)  # fmt: skip
    check_conv(x, regime.weights((co, k, k, ci)), bias, args)


# Convolutions whose quad tiles read kernel rows straight from the input (Cin·KW a multiple
# of 4, undilated rows) for the blocks of 6 pixels lying inside it, and pack the rest: image
# edges, blocks across output rows, padding on every side; strides, a dilated height,
# batches, 1 to 40 output channels (narrow and scratch tiles), extreme parameters.
KERNEL_ROWS_CONV = [  # (n, h, w, ci, co, (kh, kw), (stride_h, stride_w), (dil_h, dil_w), same)
    (1, 9, 40, 8, 8, (3, 13), (1, 1), (1, 1), True),  # Basic Pitch's wide kernels
    (2, 7, 23, 8, 1, (5, 5), (1, 1), (1, 1), True),
    (1, 11, 30, 32, 1, (7, 3), (1, 1), (1, 1), True),
    (1, 12, 40, 8, 32, (5, 5), (1, 3), (1, 1), False),
    (2, 10, 19, 4, 40, (3, 3), (2, 2), (1, 1), True),
    (1, 13, 26, 12, 17, (3, 2), (1, 1), (2, 1), True),
    (1, 6, 14, 16, 24, (1, 3), (1, 1), (1, 1), False),
    (1, 8, 20, 4, 16, (1, 1), (1, 2), (1, 1), False),  # 1x1 stride 2: rows 8 bytes apart
]


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("case", KERNEL_ROWS_CONV, ids=str)
def test_conv2d_kernel_rows_read_in_place(case, extreme, threads):
    n, h, w, ci, co, (kh, kw), (sh, sw), (dh, dw), same = case
    rng = np.random.default_rng([h, w, ci, co, kh, kw, extreme])
    regime = Regime(rng, taps=kh * kw * ci, kind="normal")
    if same:
        (oh, pt), (ow, pl) = same_pad(h, kh, sh, dh), same_pad(w, kw, sw, dw)
    else:
        oh, ow, pt, pl = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1, 0, 0
    x, bias, args = conv_case(rng, regime, (n, h, w, ci), (kh, kw), (sh, sw), (dh, dw),
                              (pt, pl), (oh, ow), co, extreme)  # fmt: skip
    check_conv(x, regime.weights((co, kh, kw, ci)), bias, args)


def spread_params(rng, taps, out_c):
    """bias, M, shift with eff ≈ 1 / (taps·64): outputs spread over int8, mostly unclamped."""
    bias = rng.integers(-2000, 2000, out_c).astype(np.int32)
    mult, shift = quantize_multipliers(rng.uniform(0.5, 1, out_c) / (taps * 64))
    return bias, mult, shift


PACKING_EDGES = [  # (n, h, w, ci, co, k, stride): edge cases of the im2col copy
    (1, 23, 23, 16, 96, 1, 1),  # K = 16: input rows are the GEMM's A rows
    (1, 5, 7, 8, 20, 1, 1),  # 35 pixels: the last block's copy has no 16 spare input values
    (2, 9, 9, 3, 32, 3, 1),  # odd K = 27 (a padded pair), 9-value runs up to the input's end
]


@pytest.mark.parametrize("case", PACKING_EDGES, ids=str)
def test_conv2d_packing_edges(case, threads):
    n, h, w, ci, co, k, s = case
    rng = np.random.default_rng(ci * 100 + co)
    x = rng.integers(-128, 128, (n, h, w, ci)).astype(np.int8)
    wt = rng.integers(-127, 128, (co, k, k, ci)).astype(np.int8)
    bias, mult, shift = spread_params(rng, k * k * ci, co)
    (oh, pt), (ow, pl) = same_pad(h, k, s), same_pad(w, k, s)
    args = (7, mult, shift, -3, -128, 127, s, s, 1, 1, pt, pl, oh, ow)
    assert len(np.unique(conv.conv2d_int8(x, wt, bias, *args))) > 50  # not a constant output
    check_conv(x, wt, bias, args)


@pytest.mark.parametrize("case", [(1, 3, 3, 16, 1), (2, 20, 20, 48, 1), (1, 17, 17, 32, 2)],
                         ids=str)  # fmt: skip
def test_depthwise_interior_and_border(case, threads):
    """One interior pixel; batch 2 with 3 channel groups; stride 2 (folded-bias interior path)."""
    n, h, w, c, s = case
    rng = np.random.default_rng(h * 10 + c)
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    wt = rng.integers(-127, 128, (1, 3, 3, c)).astype(np.int8)
    bias, mult, shift = spread_params(rng, 9, c)
    (oh, pt), (ow, pl) = same_pad(h, 3, s), same_pad(w, 3, s)
    args = (-5, mult, shift, 4, -128, 127, s, s, 1, 1, pt, pl, oh, ow)
    assert len(np.unique(conv.depthwise_conv2d_int8(x, wt, bias, *args, 1))) > 20
    check_depthwise(x, wt, bias, args, 1)


def test_conv2d_grouped_falls_back():
    rng = np.random.default_rng(7)
    regime = Regime(rng, taps=9 * 2, kind="normal")
    x, bias, args = conv_case(rng, regime, (1, 6, 6, 4), (3, 3), (1, 1), (1, 1), (1, 1), (6, 6), 6)
    check_conv(x, regime.weights((6, 3, 3, 2)), bias, args)


@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise_random(seed, threads):
    rng = np.random.default_rng(2000 + seed)
    g = conv_geometry(rng)
    ci = int(rng.choice([1, 3, 16, 21, 40]))
    dm = int(rng.choice([1, 1, 2, 3]))
    n = int(rng.integers(1, 4))
    regime = Regime(rng, taps=g["k"][0] * g["k"][1])
    x, bias, args = conv_case(rng, regime, (n, g["h"], g["w"], ci), g["k"], g["stride"], g["dil"],
                              g["pad"], g["out"], ci * dm, extreme=seed % 4 == 3)  # fmt: skip
    check_depthwise(x, regime.weights((1, *g["k"], ci * dm)), bias, args, dm)


SPAN_DW = [  # (n, h, w, c, k, stride_h, dil): stride_w 1, c not a multiple of 16
    (1, 6, 37, 8, 3, 1, 1),  # two pixels per tile call, an odd row: the last one alone
    (2, 5, 20, 24, 5, 2, 1),  # 2 pixels of 24 channels = 3 groups of 16; stride_h 2
    (1, 7, 40, 3, 3, 1, 2),  # 16 pixels per call; dilated
    (1, 4, 17, 20, 3, 1, 1),  # 4 pixels of 20 channels
    (1, 3, 23, 1, 5, 1, 1),  # one channel: one call of 16 interior pixels, then single ones
]


@pytest.mark.parametrize("case", SPAN_DW, ids=str)
def test_depthwise_pixel_spans(case, threads):
    """Neighbouring pixels as one 16-channel-multiple pixel (`depthwise_int8` module doc), with
    border pixels on every side and both epilogue clamps hit."""
    n, h, w, c, k, s, d = case
    rng = np.random.default_rng(w * 100 + c)
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    wt = rng.integers(-127, 128, (1, k, k, c)).astype(np.int8)
    bias, mult, shift = spread_params(rng, 1, c)  # wider than int8: both clamps reached
    (oh, pt), (ow, pl) = same_pad(h, k, s, d), same_pad(w, k, 1, d)
    args = (-7, mult, shift, 3, -100, 110, s, 1, d, d, pt, pl, oh, ow)
    want = conv.depthwise_conv2d_int8(x, wt, bias, *args, 1)
    assert len(np.unique(want)) > 10 and want.min() == -100 and want.max() == 110
    check_depthwise(x, wt, bias, args, 1)


TAIL_DW = [  # (n, h, w, c, k, stride_w, dil): stride_w > 1, c > 16 not a multiple of 16
    (1, 58, 58, 24, 3, 2, 1),  # pose_detection's layer: groups at channels 0 and 8
    (2, 9, 13, 40, 3, 2, 1),  # 0, 16 and 24; batch 2
    (1, 8, 11, 17, 5, 3, 1),  # a tail of one channel: groups at 0 and 1; stride 3
    (1, 10, 12, 28, 3, 2, 2),  # dilated
]


@pytest.mark.parametrize("case", TAIL_DW, ids=str)
def test_depthwise_overlapping_last_group(case, threads):
    """Pixels read in place in 16-lane groups, the last ending at C and overlapping the one
    before (`depthwise_int8` module doc), border pixels on every side, both clamps hit."""
    n, h, w, c, k, s, d = case
    rng = np.random.default_rng(w * 100 + c)
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    wt = rng.integers(-127, 128, (1, k, k, c)).astype(np.int8)
    bias, mult, shift = spread_params(rng, 1, c)
    (oh, pt), (ow, pl) = same_pad(h, k, 2, d), same_pad(w, k, s, d)
    args = (-7, mult, shift, 3, -100, 110, 2, s, d, d, pt, pl, oh, ow)
    want = conv.depthwise_conv2d_int8(x, wt, bias, *args, 1)
    assert len(np.unique(want)) > 10 and want.min() == -100 and want.max() == 110
    check_depthwise(x, wt, bias, args, 1)


MOBILENET_DW = [(1, 29, 29, 96, 2), (1, 14, 14, 144, 1), (2, 7, 7, 960, 1), (1, 9, 9, 32, 2)]


@pytest.mark.parametrize("case", MOBILENET_DW, ids=str)
def test_depthwise_mobilenet_shapes(case, threads):
    n, h, w, c, s = case
    rng = np.random.default_rng(h * 100 + c)
    regime = Regime(rng, taps=9, kind="normal")
    (oh, pt), (ow, pl) = same_pad(h, 3, s), same_pad(w, 3, s)
    x, bias, args = conv_case(rng, regime, (n, h, w, c), (3, 3), (s, s), (1, 1), (pt, pl),
                              (oh, ow), c)  # fmt: skip
    check_depthwise(x, regime.weights((1, 3, 3, c)), bias, args, 1)


@pytest.mark.parametrize("layer", ["conv rows", "depthwise rows", "fc panels",
                                   "depthwise groups"])
def test_thread_splits(layer, threads):
    """Layers above the parallel thresholds: with 2 threads the GEMM splits row blocks (a
    partial last panel spilling in place) or, for one row, weight panels; depthwise splits
    output rows (pixel spans and staged border pixels) or, on a map of fewer rows than
    GROUP_SPLIT_ROWS a part, its 16-channel groups (7 rows, 10 groups, batch 1 and 2)."""
    rng = np.random.default_rng(len(layer))
    if layer == "depthwise groups":
        for n in (1, 2):
            x = rng.integers(-128, 128, (n, 7, 7, 160)).astype(np.int8)
            wt = rng.integers(-127, 128, (1, 5, 5, 160)).astype(np.int8)
            bias, mult, shift = spread_params(rng, 25, 160)
            (oh, pt), (ow, pl) = same_pad(7, 5, 1), same_pad(7, 5, 1)
            check_depthwise(x, wt, bias, (5, mult, shift, -3, -128, 127, 1, 1, 1, 1, pt, pl,
                                          oh, ow), 1)
        return
    if layer == "fc panels":  # 2·2048·1000 > the tests' threads.MIN_PARALLEL_FLOPS, one row
        x = rng.integers(-128, 128, (1, 2048)).astype(np.int8)
        w = rng.integers(-127, 128, (1000, 2048)).astype(np.int8)
        bias = rng.integers(-5000, 5000, 1000).astype(np.int32)
        check_fc(x, w, bias, 3, 0, rng.uniform(1e-5, 1e-4, 1000), -2, (-128, 127))
        return
    c = 24 if layer == "conv rows" else 40
    x = rng.integers(-128, 128, (1, 41, 43, c)).astype(np.int8)
    (oh, pt), (ow, pl) = same_pad(41, 3, 1), same_pad(43, 3, 1)
    if layer == "conv rows":  # 40 output channels: a last panel of 8
        wt = rng.integers(-127, 128, (40, 3, 3, c)).astype(np.int8)
        bias, mult, shift = spread_params(rng, 9 * c, 40)
        check_conv(x, wt, bias, (5, mult, shift, -3, -128, 127, 1, 1, 1, 1, pt, pl, oh, ow))
    else:  # 4·41·43·40·25 > the tests' threads.MIN_PARALLEL_FLOPS (conftest.py)
        wt = rng.integers(-127, 128, (1, 5, 5, c)).astype(np.int8)
        bias, mult, shift = spread_params(rng, 25, c)
        (oh, pt), (ow, pl) = same_pad(41, 5, 1), same_pad(43, 5, 1)
        check_depthwise(x, wt, bias, (5, mult, shift, -3, -128, 127, 1, 1, 1, 1, pt, pl, oh, ow), 1)


def check_fc(x, w, bias, in_zp, w_zp, eff_scale, out_zp, act):
    want = fully_connected.fully_connected_int8(x, w, bias, in_zp, w_zp, eff_scale, out_zp, *act)
    packed = pack.pack_fc_weights(w)
    got = gemm_int8.fully_connected_int8_fast(x, packed, bias, in_zp, w_zp, eff_scale, out_zp, *act)
    assert_same(got, want)


@pytest.mark.parametrize("seed", SEEDS)
def test_fully_connected_random(seed, threads):
    rng = np.random.default_rng(3000 + seed)
    batches = int(rng.choice([1, 1, 2, 6, 7, 13]))
    depth = int(rng.choice([1, 7, 64, 301]))
    out_c = int(rng.choice([1, 15, 64, 70, 130]))
    regime = Regime(rng, taps=depth)
    in_zp, out_zp = int(rng.choice([-128, 127, 5])), int(rng.integers(-128, 128))
    x = regime.activations((batches, depth), in_zp)
    w = regime.weights((out_c, depth))
    bias = regime.bias(out_c)
    eff_scale = regime.reals(out_c)
    if seed % 5 == 4:  # out-of-int32 products: the reference's double→int32 cast gives INT32_MIN
        eff_scale = 10.0 ** rng.uniform(-12, 8, out_c)
    lo = int(rng.integers(-128, 128))
    check_fc(x, w, bias, in_zp, 0, eff_scale, out_zp, (lo, int(rng.integers(lo, 128))))


def test_fully_connected_shapes_and_weight_zero_point():
    rng = np.random.default_rng(11)
    for batches, depth, out_c, w_zp in [(1, 1280, 1000, 0), (32, 512, 200, 0), (3, 20, 9, 3)]:
        regime = Regime(rng, taps=depth, kind="normal")
        x = regime.activations((batches, depth), -3)
        w = regime.weights((out_c, depth))
        check_fc(x, w, regime.bias(out_c), -3, w_zp, regime.reals(out_c), 4, (-128, 127))


@pytest.mark.parametrize("seed", range(6))
def test_requantization_ties(seed, threads):
    """Small accumulators with M = 2^30 (a halving) and small shifts: every rounding step ties."""
    rng = np.random.default_rng(4000 + seed)
    co = 40
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1)
    w = rng.choice(np.array([-1, 1], np.int8), (co, 1, 1, 1))
    bias = rng.integers(-300, 300, co).astype(np.int32)
    mult = rng.choice(np.array([2**30, 2**30 + 1, 3 * 2**28, 2**31 - 1, 5 * 2**27]), co)
    shift = rng.integers(-3, 2, co)
    in_zp, out_zp = int(rng.integers(-128, 128)), int(rng.integers(-20, 20))
    args = (in_zp, mult.astype(np.int32), shift.astype(np.int32), out_zp, -128, 127,
            1, 1, 1, 1, 0, 0, 16, 16)  # fmt: skip
    check_conv(x, w, bias, args)
    dw = np.repeat(x, co, axis=3)
    check_depthwise(dw, w.reshape(1, 1, 1, co), bias, args, 1)
    eff_scale = rng.choice([0.5, 0.25, 0.125, 1.5], co)
    check_fc(x.reshape(256, 1), w.reshape(co, 1), bias, in_zp, 0, eff_scale, out_zp, (-128, 127))


def test_vnni_tiles_are_refused_on_a_cpu_without_them(monkeypatch):
    """Asking for the `vpdpbusd` tiles where LLVM could not compile them is a ValueError,
    for the int8 GEMM and the hybrid conv alike (they share the check)."""
    from qengine.kernels import hybrid_conv

    monkeypatch.setattr(gemm_int8, "HAS_VNNI", False)
    packed = pack.pack_conv_weights(np.ones((4, 1, 1, 8), np.int8))
    ones = np.ones(4, np.int32)
    with pytest.raises(ValueError, match="AVX-VNNI or AVX512-VNNI"):
        gemm_int8.plan_conv2d_int8(packed, ones, 0, ones << 30, -ones, 0, -128, 127,
                                   1, 1, 1, 1, 0, 0, 2, 2, vnni=True)  # fmt: skip
    with pytest.raises(ValueError, match="AVX-VNNI or AVX512-VNNI"):
        hybrid_conv.plan_hybrid_conv(packed, None, None, -np.inf, np.inf, 1, 1, 1, 1, 0, 0,
                                     2, 2, vnni=True)  # fmt: skip
    assert gemm_int8.plan_conv2d_int8(packed, ones, 0, ones << 30, -ones, 0, -128, 127,
                                      1, 1, 1, 1, 0, 0, 2, 2, vnni=False) is not None
