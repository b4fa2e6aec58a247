"""Fast 16x8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (kernels/fast_int16.py) against the
reference loops (kernels/conv.py, kernels/fully_connected.py on int16 input, themselves pinned
by the NumPy twins in test_kernels_int16.py and by TFLite in test_int16x8*.py): exact equality
over edge shapes — K above one int32 block (510 taps), odd channel counts, panel (16 channels)
and tile (6 pixels) tails, stride, dilation, padding, batch > 1, one channel, and the extreme
values -32768/32767 x -128/127 whose sums leave int32."""

import numpy as np
import pytest
from op_harness import rng
from qengine.kernels import conv, fast_int16
from qengine.kernels import fully_connected as fc
from test_kernels_int16 import multipliers

I32 = 2**31


def activations(r, shape, extreme):
    if extreme:  # only the ends of the range: the largest partial sums
        return r.choice(np.array([-32768, 32767], np.int16), shape)
    x = r.integers(-32768, 32768, shape).astype(np.int16)
    x.flat[:2] = (-32768, 32767)
    return x


def weights(r, shape, extreme):
    if extreme:
        return r.choice(np.array([-128, 127], np.int8), shape)
    return r.integers(-128, 128, shape).astype(np.int8)


def clamp_range(r):
    low = int(r.choice([-32768, -20000, 0]))
    return low, int(r.choice([32767, 20000]))


# (batch, height, width, in channels, out channels, kernel, stride, dilation, padding)
CONV_CASES = [
    (1, 7, 9, 64, 17, 3, 1, 1, 1),     # K = 576 > 510: two int32 blocks; Co one past a panel
    (2, 5, 6, 3, 8, 3, 2, 1, 1),       # odd Ci (K = 27), stride 2, batch 2
    (1, 9, 8, 5, 33, 3, 1, 2, 2),      # dilation 2, Co = 2 panels + 1
    (1, 4, 5, 1100, 3, 1, 1, 1, 0),    # 1x1, K = 1100: three blocks, 20 pixels (tile tail)
    (1, 6, 6, 7, 1, 5, 2, 1, 2),       # one output channel, 5x5 stride 2
    (1, 1, 1, 16, 16, 3, 1, 1, 1),     # one pixel, most taps off-image
    (3, 4, 3, 2, 5, 2, 1, 1, 0),       # even Ci: the pair packer
]


def conv_inputs(case, extreme):
    n, h, w, ci, co, k, stride, dil, pad = CONV_CASES[case]
    r = rng("fast int16 conv", case, extreme)
    x = activations(r, (n, h, w, ci), extreme)
    wt = weights(r, (co, k, k, ci), extreme)
    if extreme:  # -32768 x -128 on every tap of the first rows' pixels, output channel 0
        x[0, :2] = -32768
        wt[0] = -128
    bias = r.integers(-2**34, 2**34, co).astype(np.int64)
    mult, shift = multipliers(r, co, -26, -10)
    out_h = (h + 2 * pad - (k - 1) * dil - 1) // stride + 1
    out_w = (w + 2 * pad - (k - 1) * dil - 1) // stride + 1
    return x, wt, bias, mult, shift, clamp_range(r), (stride, stride, dil, dil, pad, pad,
                                                      out_h, out_w)


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_int16_fast_matches_reference(case, extreme):
    x, w, bias, mult, shift, (low, high), geometry = conv_inputs(case, extreme)
    want = conv.conv2d(x, w, bias, 0, mult, shift, 0, low, high, *geometry)
    plan = fast_int16.plan_conv2d_int16(w, bias, mult, shift, low, high, *geometry)
    for threads in (1, 2):
        np.testing.assert_array_equal(fast_int16.run_conv2d_int16(plan, x, threads), want)


def test_extreme_conv_sums_leave_int32():
    """The extreme case of the largest K does need the int64 blocks: a tap sum leaves int32."""
    x, w, *_ = conv_inputs(3, True)
    sums = x.reshape(-1, x.shape[3]).astype(np.int64) @ w.reshape(w.shape[0], -1).T
    assert np.abs(sums).max() >= I32


# (batch, height, width, in channels, depth multiplier, kernel, stride, dilation, padding)
DW_CASES = [
    (1, 9, 7, 19, 1, 3, 1, 1, 1),
    (2, 8, 8, 5, 2, 3, 2, 1, 1),     # depth multiplier 2, stride 2
    (1, 10, 9, 3, 3, 5, 1, 2, 4),    # 5x5 dilated
    (1, 5, 5, 1, 1, 3, 1, 1, 0),     # one channel, VALID
    (1, 25, 24, 4, 1, 23, 1, 1, 11),  # 529 taps > 510: no plan, the caller keeps the reference
]


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("case", range(len(DW_CASES)))
def test_depthwise_int16_fast_matches_reference(case, extreme):
    n, h, w_in, ci, dm, k, stride, dil, pad = DW_CASES[case]
    r = rng("fast int16 depthwise", case, extreme)
    co = ci * dm
    x = activations(r, (n, h, w_in, ci), extreme)
    w = weights(r, (1, k, k, co), extreme)
    if extreme:
        x[0, :3], w[..., 0] = -32768, -128
    bias = r.integers(-2**34, 2**34, co).astype(np.int64)
    mult, shift = multipliers(r, co, -22, -6)
    low, high = clamp_range(r)
    out_h = (h + 2 * pad - (k - 1) * dil - 1) // stride + 1
    out_w = (w_in + 2 * pad - (k - 1) * dil - 1) // stride + 1
    geometry = (stride, stride, dil, dil, pad, pad, out_h, out_w, dm)
    plan = fast_int16.plan_depthwise_int16(w, bias, mult, shift, low, high, *geometry)
    if k * k > fast_int16.BLOCK_TAPS:
        assert plan is None
        return
    want = conv.depthwise_conv2d(x, w, bias, 0, mult, shift, 0, low, high, *geometry)
    for threads in (1, 2):
        np.testing.assert_array_equal(fast_int16.run_depthwise_int16(plan, x, threads), want)


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("batch, depth, units", [(1, 40, 6), (7, 1300, 21), (13, 16, 1),
                                                 (2, 511, 64)])
def test_fully_connected_int16_fast_matches_reference(batch, depth, units, extreme):
    r = rng("fast int16 fc", batch, depth, units, extreme)
    x = activations(r, (batch, depth), extreme)
    w = weights(r, (units, depth), extreme)
    if extreme:
        x[0], w[0] = -32768, -128
    bias = r.integers(-2**34, 2**34, units).astype(np.int64)
    eff = 2.0 ** r.uniform(-26, -10, units)
    if extreme:
        eff[0] = 2.0**-20  # unit 0's sums (up to 1300 * 2^22) land inside the int16 range
    low, high = clamp_range(r)
    want = fc.fully_connected(x, w, bias, 0, 0, eff, 0, low, high)
    plan = fast_int16.plan_fully_connected_int16(w, bias, eff, low, high)
    for threads in (1, 2):
        np.testing.assert_array_equal(fast_int16.run_fully_connected_int16(plan, x, threads),
                                      want)


def test_inputs_that_do_not_fit_the_plan_are_refused():
    """Numba does not bounds-check: a wrong channel count or dtype raises before a kernel runs."""
    x, w, bias, mult, shift, (low, high), geometry = conv_inputs(0, False)
    plan = fast_int16.plan_conv2d_int16(w, bias, mult, shift, low, high, *geometry)
    for bad in (x[..., :-1], x.astype(np.int8)):
        with pytest.raises(ValueError, match="channels"):
            fast_int16.run_conv2d_int16(plan, bad)
    one_channel = w[:1, :, :, :1]  # a [1, 3, 3, 1] depthwise filter for x's 64 channels
    dw = fast_int16.plan_depthwise_int16(one_channel, bias[:1], mult[:1], shift[:1], low, high,
                                         1, 1, 1, 1, 1, 1, 7, 9, 1)
    with pytest.raises(ValueError, match="channels"):
        fast_int16.run_depthwise_int16(dw, x)
