"""kernels/int16.py (16x8) against the slow twins in naive/int16.py, exactly, without
TensorFlow (the TFLite cross-checks are in test_int16x8*.py, marked tf)."""

import numpy as np
import pytest
from naive import int16 as naive
from op_harness import rng
from qengine.kernels import conv
from qengine.kernels import fixedpoint as fp
from qengine.kernels import fully_connected as fc
from qengine.kernels import int16 as k16

INT16 = (-32768, 32767)


def int16_values(r, shape):
    x = r.integers(-32768, 32768, shape).astype(np.int16)
    x.flat[:2] = (-32768, 32767)  # both ends of the range
    return x


def multipliers(r, n, low=-12, high=2):
    """(M, shift) pairs of QuantizeMultiplier for random reals 2^low .. 2^high."""
    pairs = [fp.quantize_multiplier(float(2.0 ** r.uniform(low, high))) for _ in range(n)]
    return (np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32))


@pytest.mark.parametrize("case", range(4))
def test_conv2d_int16_matches_twin(case):
    r = rng("int16 conv", case)
    n, h, w, ci, co, k = 1 + case % 2, 5, 6, 4, 3 + case, 3
    groups = 2 if case == 3 else 1
    x = int16_values(r, (n, h, w, ci))
    wt = r.integers(-127, 128, (co * groups, k, k, ci // groups)).astype(np.int8)
    bias = r.integers(-2**20, 2**20, co * groups).astype(np.int64)
    mult, shift = multipliers(r, co * groups, -20, -8)
    stride, dil, pad = (1 + case % 2, 1), (1, 1 + case // 2), (1, 1)
    out_h = (h + 2 * pad[0] - (k - 1) * dil[0] - 1) // stride[0] + 1
    out_w = (w + 2 * pad[1] - (k - 1) * dil[1] - 1) // stride[1] + 1
    got = conv.conv2d(x, wt, bias, 0, mult, shift, 0, -32768, 32767, *stride, *dil, *pad,
                      out_h, out_w)
    want = naive.conv2d(x, wt, bias, mult, shift, -32768, 32767, stride, dil, pad,
                        (out_h, out_w))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("w_zp", [0, 5])
def test_fully_connected_int16_matches_twin(w_zp):
    r = rng("int16 fc", w_zp)
    x = int16_values(r, (3, 40))
    w = r.integers(-127, 128, (6, 40)).astype(np.int8)
    bias = r.integers(-2**24, 2**24, 6).astype(np.int64)
    eff = (2.0 ** r.uniform(-24, -10, 6)).astype(np.float64)
    got = fc.fully_connected(x, w, bias, 0, w_zp, eff, 0, -32000, 32767)
    np.testing.assert_array_equal(got, naive.fully_connected(x, w, bias, w_zp, eff, -32000,
                                                             32767))


@pytest.mark.parametrize("sign", [1, -1])
def test_add_sub_mul_relu_int16_match_twins(sign):
    r = rng("int16 elementwise", sign)
    a, b = int16_values(r, 500), int16_values(r, 500)
    # add.cc: inputs rescaled by s_i / (2 max s) after << 15, the sum by 2 max s / (2^15 s_out)
    (m1, m2), (s1, s2) = multipliers(r, 2, -2, -1)
    (mo,), (so,) = multipliers(r, 1, -16, -15)
    params = k16.add_sub_params_int16(m1, s1, m2, s2, mo, so)
    got = k16.add_sub_int16(a, b, sign, params, *INT16)
    want = naive.add_sub(a, b, sign, int(m1), int(s1), int(m2), int(s2), int(mo), int(so),
                         *INT16)
    np.testing.assert_array_equal(got, want)
    (m,), (s,) = multipliers(r, 1, -16, -14)
    np.testing.assert_array_equal(k16.mul_int16(a, b, m, s, -30000, 30000),
                                  naive.mul(a, b, int(m), int(s), -30000, 30000))
    (m,), (s,) = multipliers(r, 1, -1, 1)
    np.testing.assert_array_equal(k16.relu_int16(a, m, s, 0, 32767),
                                  naive.relu(a, int(m), int(s), 0, 32767))
