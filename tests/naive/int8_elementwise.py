"""Slow, literal twins of the elementwise / activation / softmax / resize / quantize kernels.

Everything integer is done with Python ints, one element at a time, following the TFLite
and gemmlowp C code as literally as possible (C truncating division, explicit int16/int32
wrapping). Float steps use NumPy float32 scalars. These are written independently of
kernels/ (they import nothing from it) so that tests can compare the two exactly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

from .fixedpoint import I32_MAX, I32_MIN, c_div, clamp, mbqm, rdbpot, round_away, srdhm, wrap

# ----------------------------------------------------------------- ADD / SUB / MUL / MAX


def add(x1, x2, zp1, m1, sh1, zp2, m2, sh2, zp_out, m_out, sh_out, act_min, act_max, sign=1):
    """integer_ops/add.h AddFunc (sign=+1) and sub.h SubElementwise (sign=-1)."""
    out = []
    for a, b in zip(x1.tolist(), x2.tolist()):
        sa = mbqm((a - zp1) * (1 << 20), m1, sh1)
        sb = mbqm((b - zp2) * (1 << 20), m2, sh2)
        raw = sa + sign * sb
        out.append(clamp(mbqm(raw, m_out, sh_out) + zp_out, act_min, act_max))
    return np.array(out, dtype=np.int8)


def sub(x1, x2, *params):
    return add(x1, x2, *params, sign=-1)


def mul(x1, x2, zp1, zp2, zp_out, m, sh, act_min, act_max):
    """integer_ops/mul.h MulElementwise."""
    out = [
        clamp(zp_out + mbqm((a - zp1) * (b - zp2), m, sh), act_min, act_max)
        for a, b in zip(x1.tolist(), x2.tolist())
    ]
    return np.array(out, dtype=np.int8)


def maximum(x1, x2):
    return np.array([max(a, b) for a, b in zip(x1.tolist(), x2.tolist())], dtype=x1.dtype)


def minimum(x1, x2):
    return np.array([min(a, b) for a, b in zip(x1.tolist(), x2.tolist())], dtype=x1.dtype)


# --------------------------------------------------------------- QUANTIZE / DEQUANTIZE


def affine_quantize(x, scale, zero_point, qmin, qmax, dtype):
    """reference/quantize.h AffineQuantize: float32 division, round half away, clamp."""
    out = []
    s = np.float32(scale)
    for v in x.tolist():
        q = float(np.float32(v) / s)
        if math.isnan(q):
            out.append(qmin)
        elif math.isinf(q):
            out.append(qmax if q > 0 else qmin)
        else:
            out.append(clamp(round_away(q) + zero_point, qmin, qmax))
    return np.array(out, dtype=dtype)


def requantize(x, zp_in, m, sh, zp_out, qmin, qmax, dtype):
    """reference/requantize.h Requantize."""
    return np.array(
        [clamp(mbqm(v - zp_in, m, sh) + zp_out, qmin, qmax) for v in x.tolist()], dtype=dtype
    )


def dequantize(x, scale, zero_point):
    """integer_ops/dequantize.h: float(double(scale) * (q - zp))."""
    s = float(np.float32(scale))
    return np.array([np.float32(s * (v - zero_point)) for v in x.tolist()], dtype=np.float32)


# ------------------------------------------------------------------------- LUT ops


def lut(s_in, zp_in, s_out, zp_out, fn):
    """common.h LUTPopulateInt8 over v = -128..127 in NumPy float32 (fn: float32 → float32)."""
    s_in, s_out = np.float32(s_in), np.float32(s_out)
    inv = np.float32(1.0) / s_out
    table = []
    for v in range(-128, 128):
        deq = s_in * np.float32(v - zp_in)
        rescaled = float(np.float32(fn(deq) * inv))
        quantized = int(np.float32(np.float32(round_away(rescaled)) + np.float32(zp_out)))
        table.append(clamp(quantized, -128, 127))
    return np.array(table, dtype=np.int8)


_LIBM = ctypes.CDLL(ctypes.util.find_library("m"))
_LIBM.expf.restype = _LIBM.tanhf.restype = ctypes.c_float
_LIBM.expf.argtypes = _LIBM.tanhf.argtypes = [ctypes.c_float]


def logistic_fn(x):
    # TFLite calls libm's expf; numpy's float32 exp differs from it in the last ulp for some
    # arguments (s_in=0.000143794, v=35 flips a rounding tie), so the twin calls libm as well
    one = np.float32(1.0)
    return one / (one + np.float32(_LIBM.expf(float(-x))))


def tanh_fn(x):
    return np.float32(_LIBM.tanhf(float(x)))


def apply_lut(x, table):
    return np.array([table[v + 128] for v in x.tolist()], dtype=np.int8)


# -------------------------------------------------------------------- RELU family etc.


def relu(x, zp_in, zp_out, m, sh, qmin, qmax):
    """reference_ops::ReluX."""
    return np.array(
        [clamp(zp_out + mbqm(v - zp_in, m, sh), qmin, qmax) for v in x.tolist()], dtype=np.int8
    )


def leaky_relu(x, zp_in, zp_out, m_id, sh_id, m_alpha, sh_alpha):
    """reference/leaky_relu.h QuantizeLeakyRelu (negative alpha: negate |M| result)."""
    out = []
    for v in x.tolist():
        d = v - zp_in
        if d >= 0:
            r = zp_out + mbqm(d, m_id, sh_id)
        elif m_alpha < 0:
            r = zp_out - mbqm(d, -m_alpha, sh_alpha)
        else:
            r = zp_out + mbqm(d, m_alpha, sh_alpha)
        out.append(clamp(r, -128, 127))
    return np.array(out, dtype=np.int8)


def prelu(x, alpha, zp_in, zp_alpha, zp_out, m1, sh1, m2, sh2):
    """reference/prelu.h Prelu."""
    out = []
    for v, a in zip(x.tolist(), alpha.tolist()):
        d = v - zp_in
        r = mbqm(d, m1, sh1) if d >= 0 else mbqm(d * (a - zp_alpha), m2, sh2)
        out.append(clamp(r + zp_out, -128, 127))
    return np.array(out, dtype=np.int8)


def hard_swish(x, zp_in, zp_out, reluish_m, reluish_exp, out_m, out_exp):
    """reference/hard_swish.h HardSwish, int16 steps written out."""

    def sat_left_shift16(value, amount):
        return clamp(value * (1 << amount), -32768, 32767)

    def sdhm16(a, b):  # SaturatingDoublingHighMul: truncating
        if a == b == -32768:
            return 32767
        return wrap(c_div(a * b, 1 << 15), 16)

    out = []
    for v in x.tolist():
        input_value = wrap(v - zp_in, 16)
        hires = wrap(input_value * (1 << 7), 16)
        preshift = srdhm(hires, out_m, bits=16)
        reluish = hires
        if reluish_exp > 0:
            reluish = sat_left_shift16(reluish, reluish_exp - 1)
        reluish = srdhm(reluish, reluish_m, bits=16)
        if reluish_exp > 0:
            reluish = sat_left_shift16(reluish, 1)
        if reluish_exp < 0:
            reluish = rdbpot(reluish, -reluish_exp, bits=16)
        reluish = wrap((reluish + (1 << 15)) >> 1, 16)
        pre_out = sdhm16(reluish, preshift)
        y = rdbpot(pre_out, -out_exp, bits=16)
        y = wrap(y + zp_out, 16)
        out.append(clamp(y, -128, 127))
    return np.array(out, dtype=np.int8)


# ---------------------------------------------------------------------------- SOFTMAX


class FP:
    """gemmlowp FixedPoint<int32, ibits> with the operations softmax needs."""

    def __init__(self, raw: int, ibits: int):
        assert I32_MIN <= raw <= I32_MAX, raw
        self.raw, self.ibits = raw, ibits

    def __mul__(self, other: FP) -> FP:
        return FP(srdhm(self.raw, other.raw), self.ibits + other.ibits)

    def __add__(self, other: FP) -> FP:
        assert self.ibits == other.ibits
        return FP(wrap(self.raw + other.raw, 32), self.ibits)

    def __sub__(self, other: FP) -> FP:
        assert self.ibits == other.ibits
        return FP(wrap(self.raw - other.raw, 32), self.ibits)

    @staticmethod
    def one(ibits: int) -> FP:
        return FP(I32_MAX if ibits == 0 else 1 << (31 - ibits), ibits)

    @staticmethod
    def constant_pot(exponent: int, ibits: int) -> FP:
        return FP(1 << (31 - ibits + exponent), ibits)


def sat_round_mul_pot(raw: int, exponent: int) -> int:
    """gemmlowp SaturatingRoundingMultiplyByPOT on an int32 raw."""
    if exponent == 0:
        return raw
    if exponent < 0:
        return rdbpot(raw, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if raw > threshold:
        return I32_MAX
    if raw < -threshold:
        return I32_MIN
    return raw * (1 << exponent)


def rescale(x: FP, ibits_dst: int) -> FP:
    return FP(sat_round_mul_pot(x.raw, x.ibits - ibits_dst), ibits_dst)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: FP) -> FP:
    assert a.ibits == 0
    constant_term = FP(1895147668, 0)  # exp(-1/8)
    constant_1_over_3 = FP(715827883, 0)
    x = a + FP.constant_pot(-3, 0)
    x2 = x * x
    x3 = x2 * x
    x4 = x2 * x2
    x4_over_4 = FP(sat_round_mul_pot(x4.raw, -2), 0)
    x4_over_24_plus_x3_over_6_plus_x2_over_2 = FP(
        sat_round_mul_pot(((x4_over_4 + x3) * constant_1_over_3 + x2).raw, -1), 0
    )
    return constant_term + constant_term * (x + x4_over_24_plus_x3_over_6_plus_x2_over_2)


def exp_on_negative_values(a: FP) -> FP:
    ibits = a.ibits
    fbits = 31 - ibits
    one_quarter = FP.constant_pot(-2, ibits)
    mask = one_quarter - FP(1, ibits)
    a_mod_quarter_minus_one_quarter = FP(a.raw & mask.raw, ibits) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, 0)
    )
    remainder = (a_mod_quarter_minus_one_quarter - a).raw
    for exponent, multiplier in [
        (-2, 1672461947),
        (-1, 1302514674),
        (0, 790015084),
        (1, 290630308),
        (2, 39332535),
        (3, 720401),
        (4, 242),
    ]:
        if ibits > exponent and remainder & (1 << (fbits + exponent)):
            result = result * FP(multiplier, 0)
    if ibits > 5:
        clamp_raw = -(1 << (36 - ibits))  # -32.0
        if a.raw < clamp_raw:
            result = FP(0, 0)
    if a.raw == 0:
        result = FP.one(0)
    return result


def one_over_one_plus_x_for_x_in_0_1(a: FP) -> FP:
    total = a.raw + FP.one(0).raw
    half_denominator = FP(c_div(total + (1 if total >= 0 else -1), 2), 0)  # RoundingHalfSum
    constant_48_over_17 = FP(1515870810, 2)
    constant_neg_32_over_17 = FP(-1010580540, 2)
    x = constant_48_over_17 + half_denominator * constant_neg_32_over_17
    for _ in range(3):
        half_denominator_times_x = half_denominator * x
        one_minus_half_denominator_times_x = FP.one(2) - half_denominator_times_x
        x = x + rescale(x * one_minus_half_denominator_times_x, 2)
    return rescale(FP(x.raw, 1), 0)  # Rescale<0>(ExactMulByPot<-1>(x))


def get_reciprocal(x: int, x_integer_digits: int) -> tuple[int, int]:
    headroom_plus_one = 32 - x.bit_length()  # CountLeadingZeros(uint32(x)), x > 0
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_sum_minus_one = wrap(((x << headroom_plus_one) - (1 << 31)) % (1 << 32), 32)
    return one_over_one_plus_x_for_x_in_0_1(FP(shifted_sum_minus_one, 0)).raw, num_bits_over_unit


def softmax(x, input_multiplier, input_left_shift, diff_min):
    """reference/softmax.h Softmax<int8, int8> on a [rows, depth] array."""
    out = np.empty(x.shape, dtype=np.int8)
    for i, row in enumerate(x.tolist()):
        max_in_row = max(row)

        def exp_of(v, max_in_row=max_in_row):
            diff = v - max_in_row
            rescaled = srdhm(wrap(diff * (1 << input_left_shift), 32), input_multiplier)
            return exp_on_negative_values(FP(rescaled, 5))

        sum_of_exps = FP(0, 12)
        for v in row:
            if v - max_in_row >= diff_min:
                sum_of_exps = sum_of_exps + rescale(exp_of(v), 12)
        shifted_scale, num_bits_over_unit = get_reciprocal(sum_of_exps.raw, 12)
        exponent = num_bits_over_unit + 31 - 8
        for c, v in enumerate(row):
            if v - max_in_row >= diff_min:
                unsat = rdbpot((FP(shifted_scale, 0) * exp_of(v)).raw, exponent)
                out[i, c] = clamp(unsat - 128, -128, 127)
            else:
                out[i, c] = -128
    return out


# ----------------------------------------------------------------------------- RESIZE


def resize_bilinear(x, out_h, out_w, align_corners, half_pixel_centers):
    """reference/resize_bilinear.h ResizeBilinearInteger (default double-rounding build)."""
    batches, in_h, in_w, depth = x.shape

    def scale_10(in_size, out_size):
        if align_corners and out_size > 1:
            return c_div(1024 * (in_size - 1) + c_div(out_size - 1, 2), out_size - 1)
        return c_div(1024 * in_size + c_div(out_size, 2), out_size)

    def interp(value, scale, in_size):
        v = value * scale + (c_div(scale, 2) - 512 if half_pixel_centers else 0)
        return v, max(c_div(v, 1024), 0), min(c_div(v + 1023, 1024), in_size - 1)

    hs, ws = scale_10(in_h, out_h), scale_10(in_w, out_w)
    data = x.tolist()
    out = np.empty((batches, out_h, out_w, depth), dtype=x.dtype)
    for b in range(batches):
        for y in range(out_h):
            vy, y0, y1 = interp(y, hs, in_h)
            for xo in range(out_w):
                vx, x0, x1 = interp(xo, ws, in_w)
                for c in range(depth):
                    o20 = (
                        data[b][y0][x0][c] * (1024 - (vy - 1024 * y0)) * (1024 - (vx - 1024 * x0))
                        + data[b][y1][x0][c] * (vy - 1024 * y0) * (1024 - (vx - 1024 * x0))
                        + data[b][y0][x1][c] * (1024 - (vy - 1024 * y0)) * (vx - 1024 * x0)
                        + data[b][y1][x1][c] * (vy - 1024 * y0) * (vx - 1024 * x0)
                    )
                    rounding = (1 << 19) if o20 > 0 else -(1 << 19)
                    out[b, y, xo, c] = c_div(o20 + rounding, 1 << 20)
    return out


def nearest_index(value, in_size, out_size, align_corners, half_pixel_centers):
    """reference/resize_nearest_neighbor.h GetNearestNeighbor, float32 steps."""
    if align_corners and out_size > 1:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
    offset = np.float32(0.5 if half_pixel_centers else 0.0)
    pos = float((np.float32(value) + offset) * scale)
    idx = round_away(pos) if align_corners else math.floor(pos)
    idx = min(idx, in_size - 1)
    return max(idx, 0) if half_pixel_centers else idx


def resize_nearest(x, out_h, out_w, align_corners, half_pixel_centers):
    _, in_h, in_w, _ = x.shape
    rows = [nearest_index(y, in_h, out_h, align_corners, half_pixel_centers) for y in range(out_h)]
    cols = [nearest_index(c, in_w, out_w, align_corners, half_pixel_centers) for c in range(out_w)]
    return x[:, rows][:, :, cols]
