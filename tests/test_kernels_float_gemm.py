"""kernels/float_gemm.py against its NumPy twins (tests/naive/float_conv.py), exactly: both sum
in TFLite's reference order with every product and sum rounded to float32, or (fused) in
XNNPACK's order, from the bias, with one rounding per fused multiply-add. The shapes cover
odd sizes, strides, dilations, padding on every side, 1 channel, the tails of the 16-channel
panels and 8-channel vectors, short pixel tiles and output blocks split at odd points (as the
thread pool splits them)."""

import itertools

import numpy as np
import pytest
from naive.float_conv import (
    conv2d_f32,
    conv2d_f32_xnnpack,
    depthwise_f32,
    depthwise_f32_xnnpack,
    post_twin,
)
from qengine.kernels.float_conv import post_args, tile_slopes
from qengine.kernels.float_gemm import (
    LANES,
    WIDE,
    conv2d_f32_narrow_rows,
    conv2d_f32_narrow_split,
    conv2d_f32_rows,
    conv2d_f32_split,
    depthwise_f32_rows,
    depthwise_f32_split,
    pack_conv_f32,
    pack_narrow_f32,
    pad_channels,
    panel_channel,
)

FLT_MAX = float(np.finfo(np.float32).max)


def out_size(size, kernel, stride, dilation, pad):
    return (size + 2 * pad - (kernel - 1) * dilation - 1) // stride + 1


def case(seed, x_shape, kernel, stride, dilation, pad):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    out_hw = tuple(out_size(x_shape[1 + i], kernel[i], stride[i], dilation[i], pad[i])
                   for i in range(2))
    return rng, x, out_hw


# (x shape, Co, kernel, stride, dilation, padding top/left)
CONV_CASES = [
    ((1, 7, 9, 3), 20, (3, 3), (2, 2), (1, 1), (1, 1)),
    ((2, 5, 6, 17), 33, (1, 1), (1, 1), (1, 1), (0, 0)),  # pointwise, batch 2
    ((1, 8, 8, 5), 16, (5, 3), (1, 2), (2, 1), (2, 1)),  # dilated rows: per-tap addresses
    ((1, 9, 11, 8), 1, (3, 3), (1, 1), (1, 1), (1, 1)),  # one output channel
    ((1, 1, 300, 1), 1, (1, 16), (1, 2), (1, 1), (0, 0)),  # 1 channel, long filter row
    ((1, 6, 7, 4), 8, (3, 3), (1, 1), (1, 1), (0, 0)),  # an 8-channel panel, no padding
    ((1, 10, 10, 6), 24, (1, 1), (2, 2), (1, 1), (0, 0)),  # strided 1x1
    ((1, 4, 4, 2), 31, (4, 4), (1, 1), (1, 1), (3, 3)),  # filter larger than the image side
    ((1, 3, 3, 32), 150, (3, 3), (1, 1), (1, 1), (0, 0)),  # one pixel: groups of panels, the
    ((1, 2, 2, 20), 70, (1, 1), (1, 1), (1, 1), (0, 0)),  # last overlapping; and a tail
    ((1, 4, 5, 9), 128, (3, 3), (1, 1), (1, 1), (1, 1)),  # tiles of 3 pixels (cut below)
]


@pytest.mark.parametrize("x_shape, out_c, kernel, stride, dilation, pad", CONV_CASES)
@pytest.mark.parametrize("low, high, wide", [(-FLT_MAX, FLT_MAX, False), (0.0, 6.0, True)])
@pytest.mark.parametrize("fused", [False, True], ids=["ref", "xnnpack"])
def test_conv_equals_its_twin(x_shape, out_c, kernel, stride, dilation, pad, low, high, wide,
                              fused):
    rng, x, out_hw = case(len(x_shape) + out_c, x_shape, kernel, stride, dilation, pad)
    w = rng.standard_normal((out_c, *kernel, x_shape[3])).astype(np.float32)
    bias = rng.standard_normal(out_c).astype(np.float32)
    twin = conv2d_f32_xnnpack if fused else conv2d_f32
    want = twin(x, w, bias, stride, dilation, pad, out_hw, low, high)
    pixels = x_shape[0] * out_hw[0] * out_hw[1]
    out = np.full((pixels, out_c), np.nan, np.float32)
    panels, bias16 = pack_conv_f32(w), pad_channels(bias, LANES)
    cuts = sorted({0, min(3, pixels), min(7, pixels), min(12, pixels), pixels})  # tiles of
    # 3 (pixel by pixel when whole panel groups fit), 4, 5, ...
    args = (out_hw[1], *kernel, *stride, *dilation, *pad, low, high, wide, fused)
    n_panels = panels.shape[0]
    for p0, p1 in itertools.pairwise(cuts):  # as blocks of threads
        conv2d_f32_rows(x, panels, bias16, out, *args, post_args(), p0, p1, 0, n_panels)
    np.testing.assert_array_equal(out.reshape(want.shape), want)
    out = np.full((pixels, out_c), np.nan, np.float32)
    for j0, j1 in itertools.pairwise(sorted({0, min(1, n_panels), min(4, n_panels), n_panels})):
        conv2d_f32_rows(x, panels, bias16, out, *args, post_args(), 0, pixels, j0, j1)
    np.testing.assert_array_equal(out.reshape(want.shape), want)  # as panels of threads
    for by_panels in (False, True):  # 3 parts at once
        out = np.full((pixels, out_c), np.nan, np.float32)
        conv2d_f32_split(x, panels, bias16, out, *args, post_args(), pixels, n_panels, by_panels,
                         3)
        np.testing.assert_array_equal(out.reshape(want.shape), want)


@pytest.mark.parametrize("x_shape, out_c, kernel, stride, dilation, pad", CONV_CASES)
@pytest.mark.parametrize("wide", [False, True], ids=["avx2", "avx512"])
def test_a_call_writes_its_range_and_nothing_else(x_shape, out_c, kernel, stride, dilation, pad,
                                                  wide):
    """Threads run disjoint pixel or panel ranges of one output at once: a call must write all
    of its range (pixels [p0, p1) x the channels of panels [j0, j1)) and nothing outside it,
    not even values the other range would write alike. Short tiles (5 and 6 pixels) included."""
    rng, x, out_hw = case(len(x_shape) + out_c, x_shape, kernel, stride, dilation, pad)
    w = rng.standard_normal((out_c, *kernel, x_shape[3])).astype(np.float32)
    bias = rng.standard_normal(out_c).astype(np.float32)
    want = conv2d_f32(x, w, bias, stride, dilation, pad, out_hw, -FLT_MAX, FLT_MAX)
    want = want.reshape(-1, out_c)
    pixels = want.shape[0]
    panels, bias16 = pack_conv_f32(w), pad_channels(bias, LANES)
    n = panels.shape[0]
    args = (out_hw[1], *kernel, *stride, *dilation, *pad, -FLT_MAX, FLT_MAX, wide, False,
            post_args())
    pixel_ranges = {(0, pixels), (min(5, pixels), pixels), (0, min(6, pixels)),
                    (min(1, pixels), max(1, pixels - 1))}
    panel_ranges = {(0, n), (n // 2, n), (0, max(1, n // 2)), (min(1, n - 1), n)}
    for (p0, p1), (j0, j1) in itertools.product(sorted(pixel_ranges), sorted(panel_ranges)):
        out = np.full((pixels, out_c), np.nan, np.float32)
        conv2d_f32_rows(x, panels, bias16, out, *args, p0, p1, j0, j1)
        c0, c1 = panel_channel.py_func(j0, out_c), min(out_c, panel_channel.py_func(j1 - 1, out_c) + LANES)
        inside = np.zeros(out.shape, bool)
        inside[p0:p1, c0:c1] = True
        np.testing.assert_array_equal(out[inside], want[inside])
        assert np.isnan(out[~inside]).all(), f"wrote outside pixels {p0}-{p1}, panels {j0}-{j1}"


@pytest.mark.parametrize("fused", [False, True], ids=["ref", "xnnpack"])
def test_a_24_channel_tile_writes_only_its_own_range(fused):
    """16-lane tiles run a 24-channel conv's two panels at once, their 8 extra lanes landing in
    the next pixel's channels 0-7: only where the same call writes that pixel afterwards. The
    ranges run last to first (a spill past one would clobber the next), and a row after the
    output holds a sentinel."""
    rng, x, out_hw = case(24, (1, 6, 8, 5), (1, 1), (1, 1), (1, 1), (0, 0))  # 4 whole tiles
    w = rng.standard_normal((24, 1, 1, 5)).astype(np.float32)
    bias = rng.standard_normal(24).astype(np.float32)
    twin = conv2d_f32_xnnpack if fused else conv2d_f32
    want = twin(x, w, bias, (1, 1), (1, 1), (0, 0), out_hw, -FLT_MAX, FLT_MAX)
    pixels = out_hw[0] * out_hw[1]
    out = np.full((pixels + 1, 24), 7.0, np.float32)
    panels, bias16 = pack_conv_f32(w), pad_channels(bias, LANES)
    args = (out_hw[1], 1, 1, 1, 1, 1, 1, 0, 0, -FLT_MAX, FLT_MAX, True, fused, post_args())
    for p0, p1 in reversed(list(itertools.pairwise([0, 12, 24, pixels]))):
        conv2d_f32_rows(x, panels, bias16, out[:pixels], *args, p0, p1, 0, 2)
    np.testing.assert_array_equal(out[:pixels].reshape(want.shape), want)
    assert (out[pixels] == 7.0).all()


def test_conv_clamp_lets_nan_through_and_bounds_inf():
    rng, x, out_hw = case(5, (1, 5, 5, 3), (3, 3), (1, 1), (1, 1), (1, 1))
    x[0, 2, 2, 0], x[0, 0, 0, 1] = np.nan, np.inf
    w = np.abs(rng.standard_normal((16, 3, 3, 3))).astype(np.float32)
    bias = np.zeros(16, np.float32)
    want = conv2d_f32(x, w, bias, (1, 1), (1, 1), (1, 1), out_hw, 0.0, 6.0)
    out = np.empty((25, 16), np.float32)
    conv2d_f32_rows(x, pack_conv_f32(w), bias, out, 5, 3, 3, 1, 1, 1, 1, 1, 1, 0.0, 6.0, WIDE,
                    False, post_args(), 0, 25, 0, 1)
    assert np.isnan(want).any() and (want == 6.0).any()
    np.testing.assert_array_equal(out.reshape(want.shape), want)


# (x shape, kernel, stride, dilation, padding top/left)
DEPTHWISE_CASES = [
    ((1, 7, 9, 8), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((2, 9, 11, 21), (3, 3), (1, 1), (1, 1), (1, 1)),  # the last vector overlaps by 3
    ((1, 12, 13, 16), (5, 5), (2, 2), (1, 1), (2, 2)),
    ((1, 12, 13, 24), (3, 3), (1, 1), (2, 2), (2, 2)),  # dilated
    ((1, 10, 10, 8), (5, 3), (1, 2), (2, 1), (0, 1)),  # neither 3x3 nor 5x5: tap loop
    ((1, 4, 4, 8), (5, 5), (1, 1), (1, 1), (2, 2)),  # no interior pixel
    ((1, 6, 20, 9), (3, 3), (1, 1), (1, 1), (0, 0)),  # valid padding, overlap by 7
    ((1, 9, 7, 8), (1, 1), (1, 1), (1, 1), (0, 0)),  # 1x1 (unrolled), odd runs of 7 pixels
    ((2, 5, 9, 21), (1, 1), (2, 1), (1, 1), (0, 0)),  # strided 1x1, 16 + an overlapping 16
]


@pytest.mark.parametrize("x_shape, kernel, stride, dilation, pad", DEPTHWISE_CASES)
@pytest.mark.parametrize("low, high", [(-FLT_MAX, FLT_MAX), (-1.0, 1.0)])
@pytest.mark.parametrize("fused", [False, True], ids=["ref", "xnnpack"])
def test_depthwise_equals_its_twin(x_shape, kernel, stride, dilation, pad, low, high, fused):
    rng, x, out_hw = case(x_shape[3], x_shape, kernel, stride, dilation, pad)
    chans = x_shape[3]
    w = rng.standard_normal((*kernel, chans)).astype(np.float32)
    bias = rng.standard_normal(chans).astype(np.float32)
    twin = depthwise_f32_xnnpack if fused else depthwise_f32
    want = twin(x, w, bias, stride, dilation, pad, out_hw, low, high)
    out = np.full(want.shape, np.nan, np.float32)
    rows = x_shape[0] * out_hw[0]
    taps_first = w.transpose(1, 0, 2) if fused else w  # the kernel takes XNNPACK's tap order
    flat_w = np.ascontiguousarray(taps_first.reshape(-1, chans))
    args = (*stride, *dilation, *pad, *kernel, low, high, fused, fused)
    for r0, r1 in [(0, rows // 2), (rows // 2, rows)]:
        depthwise_f32_rows(x, flat_w, bias, out, *args, post_args(), r0, r1)
    np.testing.assert_array_equal(out, want)
    out = np.full(want.shape, np.nan, np.float32)
    depthwise_f32_split(x, flat_w, bias, out, *args, post_args(), rows, 2)
    np.testing.assert_array_equal(out, want)


def test_depthwise_refuses_fewer_than_8_channels():  # the op pads those to 8
    x, w = np.zeros((1, 4, 4, 3), np.float32), np.zeros((9, 3), np.float32)
    out = np.empty((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="C >= 8"):
        depthwise_f32_rows(x, w, np.zeros(3, np.float32), out, 1, 1, 1, 1, 1, 1, 3, 3, -1.0, 1.0,
                           False, False, post_args(), 0, 4)


NARROW_CASES = [
    ((1, 9, 11, 8), 1, (3, 3), (1, 1), (1, 1), (1, 1)),  # rows of 11 < 16 lanes: axpy path
    ((2, 7, 13, 3), 4, (3, 5), (2, 3), (1, 2), (1, 4)),  # strides 2x3, dilated columns
    ((1, 1, 300, 1), 1, (1, 16), (1, 2), (1, 1), (0, 0)),
    ((1, 6, 21, 33), 2, (3, 3), (1, 1), (2, 2), (2, 2)),  # runs of 16 and 8 overlap
    ((1, 3, 3, 2), 3, (5, 5), (1, 1), (1, 1), (2, 2)),  # filter larger than the image
    ((1, 5, 40, 8), 8, (3, 7), (1, 1), (1, 1), (1, 3)),
    ((1, 4, 17, 5), 6, (2, 2), (2, 1), (1, 1), (0, 0)),
    ((1, 5, 140, 3), 1, (3, 3), (1, 1), (1, 1), (1, 1)),  # runs of 8 x 16 pixels, overlapping
    ((1, 4, 70, 2), 3, (3, 3), (1, 1), (1, 1), (1, 1)),  # 3 channels packed as 4
    ((1, 9, 37, 3), 24, (5, 5), (2, 2), (1, 1), (1, 2)),  # a first layer: 24 registers
    ((1, 8, 36, 3), 12, (3, 3), (2, 2), (1, 1), (0, 0)),  # 12 channels packed as 16
    ((1, 7, 40, 3), 40, (5, 5), (2, 2), (1, 1), (2, 2)),  # 3 groups of 16, the last 8 used
    ((1, 6, 34, 4), 64, (3, 3), (1, 1), (1, 1), (1, 1)),  # 4 groups of 16
    ((2, 4, 29, 16), 2, (3, 3), (1, 1), (1, 1), (0, 0)),  # rows split by 8x8 transposes
]


@pytest.mark.parametrize("x_shape, out_c, kernel, stride, dilation, pad", NARROW_CASES)
@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("fused", [False, True], ids=["ref", "xnnpack"])
def test_narrow_conv_equals_its_twin(x_shape, out_c, kernel, stride, dilation, pad, wide,
                                     fused):
    rng, x, out_hw = case(out_c, x_shape, kernel, stride, dilation, pad)
    w = rng.standard_normal((out_c, *kernel, x_shape[3])).astype(np.float32)
    bias = rng.standard_normal(out_c).astype(np.float32)
    twin = conv2d_f32_xnnpack if fused else conv2d_f32
    want = twin(x, w, bias, stride, dilation, pad, out_hw, -1.0, 2.0)
    out = np.full(want.shape, np.nan, np.float32)
    rows = x_shape[0] * out_hw[0]
    args = (*kernel, *stride, *dilation, *pad, -1.0, 2.0, wide, fused)
    for r0, r1 in [(0, rows // 2), (rows // 2, rows)]:
        conv2d_f32_narrow_rows(x, pack_narrow_f32(w), bias, out, *args, post_args(), r0, r1)
    np.testing.assert_array_equal(out, want)
    out = np.full(want.shape, np.nan, np.float32)
    conv2d_f32_narrow_split(x, pack_narrow_f32(w), bias, out, *args, post_args(), rows, 2)
    np.testing.assert_array_equal(out, want)


def test_split_drivers_check_the_whole_range_before_splitting():
    """An error raised inside a prange part is dropped by Numba: the drivers must refuse a
    range that does not fit before any part runs."""
    x, w = np.zeros((1, 4, 4, 8), np.float32), np.zeros((9, 8), np.float32)
    out = np.empty((1, 4, 4, 8), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        depthwise_f32_split(x, w, np.zeros(8, np.float32), out, 1, 1, 1, 1, 1, 1, 3, 3, -1.0,
                            1.0, False, False, post_args(), 5, 2)  # 5 rows, out has 4
    with pytest.raises(ValueError, match="do not fit"):
        depthwise_f32_rows(x, w, np.zeros(8, np.float32), out, 1, 1, 1, 1, 1, 1, 3, 3, -1.0,
                           1.0, False, False, post_args(), 3, 5)


def special(rng, shape):
    """Normal values with NaN, +-inf and -0.0 spread through them."""
    a = rng.standard_normal(shape).astype(np.float32)
    flat = a.reshape(-1)
    flat[::13], flat[4::17], flat[7::19], flat[2::23] = np.nan, np.inf, -np.inf, -0.0
    return a


EPILOGUES = [("residual", (-FLT_MAX, FLT_MAX)), ("residual", (0.0, 6.0)), ("prelu", None),
             ("both", (-1.0, 1.0))]


def epilogue_case(rng, steps, bounds, pixels, channels):
    residual = special(rng, (pixels, channels)) if steps in ("residual", "both") else None
    alpha = rng.standard_normal(channels).astype(np.float32) if steps != "residual" else None
    low, high = bounds or (0.0, 0.0)
    return residual, low, high, alpha


def tiled(alpha):
    return None if alpha is None else tile_slopes(alpha)


@pytest.mark.parametrize("steps, bounds", EPILOGUES)
@pytest.mark.parametrize("kind", ["conv", "narrow", "depthwise"])
@pytest.mark.parametrize("fused", [False, True], ids=["ref", "xnnpack"])
def test_folded_add_and_prelu_equal_their_twin(steps, bounds, kind, fused):
    """The epilogue runtime/fusion.py folds in (kernels.float_conv.post_f32, run per tile or
    row): the conv's output then the ADD and PRELU twin, exactly, whole and split."""
    x_shape = {"conv": (1, 9, 10, 6), "narrow": (1, 6, 40, 3), "depthwise": (2, 7, 9, 21)}[kind]
    out_c = {"conv": 37, "narrow": 4, "depthwise": 21}[kind]
    geo = ((3, 3), (1, 1), (1, 1), (1, 1))
    rng, x, out_hw = case(len(steps) + out_c, x_shape, *geo)
    x[0, 1, 2, 0], x[-1, 3, 4, 1] = np.nan, np.inf  # a few outputs NaN or +-inf
    pixels = x_shape[0] * out_hw[0] * out_hw[1]
    bias = rng.standard_normal(out_c).astype(np.float32)
    residual, low, high, alpha = epilogue_case(rng, steps, bounds, pixels, out_c)
    post = post_args(residual, low, high, tiled(alpha))
    if kind == "depthwise":
        w = rng.standard_normal((3, 3, out_c)).astype(np.float32)
        twin = depthwise_f32_xnnpack if fused else depthwise_f32
        conv = twin(x, w, bias, *geo[1:], out_hw, -FLT_MAX, FLT_MAX)
        flat_w = np.ascontiguousarray((w.transpose(1, 0, 2) if fused else w).reshape(-1, out_c))
        args = (x, flat_w, bias, None, *geo[1], *geo[2], *geo[3], *geo[0], -FLT_MAX, FLT_MAX,
                fused, fused, post)
        rows_of, split_of = depthwise_f32_rows, depthwise_f32_split
        total = x_shape[0] * out_hw[0]
    else:
        w = rng.standard_normal((out_c, 3, 3, x_shape[3])).astype(np.float32)
        twin = conv2d_f32_xnnpack if fused else conv2d_f32
        conv = twin(x, w, bias, *geo[1:], out_hw, -FLT_MAX, FLT_MAX)
        if kind == "conv":
            args = (x, pack_conv_f32(w), pad_channels(bias, LANES), None, out_hw[1], *geo[0],
                    *geo[1], *geo[2], *geo[3], -FLT_MAX, FLT_MAX, WIDE, fused, post)
            rows_of, split_of, total = conv2d_f32_rows, conv2d_f32_split, pixels
            n_panels = args[1].shape[0]
        else:
            args = (x, pack_narrow_f32(w), bias, None, *geo[0], *geo[1], *geo[2], *geo[3],
                    -FLT_MAX, FLT_MAX, WIDE, fused, post)
            rows_of, split_of = conv2d_f32_narrow_rows, conv2d_f32_narrow_split
            total = x_shape[0] * out_hw[0]
    want = post_twin(conv, residual, low, high, alpha)
    out_shape = (pixels, out_c) if kind == "conv" else conv.shape
    assert 0 < np.isnan(want).mean() < 0.3 and (residual is None or np.isinf(residual).any())
    ways = ["cut", "split", "split by panels"] if kind == "conv" else ["cut", "split"]
    for way in ways:
        out = np.full(out_shape, np.nan, np.float32)
        call = (*args[:3], out, *args[4:])
        if kind == "conv" and way != "cut":  # the post of a split by panels waits for both
            split_of(*call, total, n_panels, way == "split by panels", 2)
        elif way == "split":
            split_of(*call, total, 2)
        else:
            for a, b in [(0, total // 3), (total // 3, total)]:
                rows_of(*call, a, b, *((0, n_panels) if kind == "conv" else ()))
        assert_same_bits(out.reshape(want.shape), want)


def assert_same_bits(got, want):
    """Equal bit for bit (so -0.0 is not +0.0), NaN where and only where NaN is wanted."""
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_epilogue_that_does_not_fit_is_refused():
    x, w = np.zeros((1, 4, 4, 8), np.float32), np.zeros((9, 8), np.float32)
    out = np.empty((1, 4, 4, 8), np.float32)
    short = post_args(np.zeros((15, 8), np.float32), 0.0, 1.0)  # 16 pixels
    with pytest.raises(ValueError, match="post"):
        depthwise_f32_rows(x, w, np.zeros(8, np.float32), out, 1, 1, 1, 1, 1, 1, 3, 3, -1.0,
                           1.0, False, False, short, 0, 4)
    with pytest.raises(ValueError, match="post"):
        conv2d_f32_rows(x, pack_conv_f32(np.zeros((8, 3, 3, 8), np.float32)),
                        pad_channels(np.zeros(8, np.float32), LANES), out.reshape(16, 8), 4,
                        3, 3, 1, 1, 1, 1, 1, 1, -1.0, 1.0, WIDE, False,
                        post_args(slopes=np.zeros(7, np.float32)), 0, 16, 0, 1)
