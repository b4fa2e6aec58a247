"""Slow twins of kernels/int16.py (the 16x8 scheme: int16 activations with zero point 0, int8
weights, int64 biases), with NumPy int64 and Python ints."""

from __future__ import annotations

import numpy as np

from .fixedpoint import I32_MAX, I32_MIN, clamp, mbqm, round_away_exact, wrap32
from .int8_conv import _patches

ADD_SUB_LEFT_SHIFT = 15  # add.cc / sub.cc for int16


def mbqm_int64(x: int, m: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier(int64 x, int32 M, shift): a 16-bit multiplier
    round(M / 2^16) (0x7FFF from 0x7FFF0000 up), one rounding with ties toward +inf."""
    rm = (m + 2**15) >> 16 if m < 0x7FFF0000 else 0x7FFF
    total = 15 - shift
    return wrap32((x * rm + 2 ** (total - 1)) >> total)


def conv2d(x, w, bias, mult, shift, act_min, act_max, stride, dil, pad, out_hw):
    """ConvPerChannel for int16 input: int64 taps times int8 filter plus int64 bias, then
    clamp(MBQM_int64(acc, M[oc], shift[oc]))."""
    co, k_h, k_w, cig = w.shape
    groups = x.shape[3] // cig
    per_group = co // groups
    p = _patches(x.astype(np.int64), k_h, k_w, stride, dil, pad, out_hw)
    acc = np.concatenate([np.einsum("nyhxwc,ohwc->nyxo", p[..., g * cig:(g + 1) * cig],
                                    w[g * per_group:(g + 1) * per_group].astype(np.int64))
                          for g in range(groups)], axis=-1) + np.asarray(bias, np.int64)
    out = np.empty(acc.shape, np.int16)
    for idx, a in np.ndenumerate(acc):
        c = idx[-1]
        out[idx] = clamp(mbqm_int64(int(a), int(mult[c]), int(shift[c])), act_min, act_max)
    return out


def fully_connected(x, w, bias, w_zp, eff_scale, act_min, act_max):
    """FullyConnected for int16 input (float requantization): acc in int64, then
    clamp(int32(round(double(acc) * eff[o]))); a cast out of int32 gives INT32_MIN."""
    acc = (w.astype(np.int64) - w_zp) @ x.astype(np.int64).T  # [O, B]
    acc = acc.T + np.asarray(bias, np.int64)
    out = np.empty(acc.shape, np.int16)
    for (b, o), a in np.ndenumerate(acc):
        r = round_away_exact(float(a) * float(eff_scale[o]))  # one IEEE double product
        r = r if I32_MIN <= r <= I32_MAX else I32_MIN
        out[b, o] = clamp(r, act_min, act_max)
    return out


def add_sub(x1, x2, sign, m1, sh1, m2, sh2, m_out, sh_out, act_min, act_max):
    """General-scale int16 ADD/SUB: MBQM(MBQM(x1 << 15) +- MBQM(x2 << 15)), clamped."""
    out = [clamp(mbqm(mbqm(int(a) << ADD_SUB_LEFT_SHIFT, m1, sh1)
                      + sign * mbqm(int(b) << ADD_SUB_LEFT_SHIFT, m2, sh2), m_out, sh_out),
                 act_min, act_max) for a, b in zip(x1.tolist(), x2.tolist())]
    return np.array(out, np.int16)


def mul(x1, x2, m, sh, act_min, act_max):
    return np.array([clamp(mbqm(int(a) * int(b), m, sh), act_min, act_max)
                     for a, b in zip(x1.tolist(), x2.tolist())], np.int16)


def relu(x, m, sh, qmin, qmax):
    return np.array([clamp(mbqm(int(v), m, sh), qmin, qmax) for v in x.tolist()], np.int16)
