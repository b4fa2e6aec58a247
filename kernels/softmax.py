"""SOFTMAX int8 → int8, TFLite's reference kernel (gemmlowp fixed point).

Reproduces reference_ops::Softmax<int8_t, int8_t> (tflite/kernels/internal/reference/softmax.h)
with the gemmlowp fixed-point functions of fixedpoint/fixedpoint.h and GetReciprocal from
tflite/kernels/internal/common.h. Those functions are written out here on int32 values
(carried in int64; additions that the C code does in int32 are wrapped).

Notation: a FixedPoint<int32, I> ("F_I") holds real = raw / 2^(31 - I). Multiplying F_a by F_b
is SRDHM on the raws and gives F_(a+b); Rescale<J>(F_I) is a saturating rounding
multiplication of the raw by 2^(I - J).
"""

import numpy as np
from qengine.kernels.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    mbqm,
    quantize_multiplier,
    rdbpot,
    srdhm,
    wrap_int32,
)
from qengine.kernels.jit import kernel

__all__ = [
    "exp_on_interval_between_negative_one_quarter_and_0_excl",
    "exp_on_negative_values",
    "get_reciprocal",
    "one_over_one_plus_x_for_x_in_0_1",
    "saturating_rounding_multiply_by_pot",
    "softmax_exp_table",
    "softmax_exps",
    "softmax_int8",
    "softmax_int8_float_table",
    "softmax_int8_rows",
    "softmax_params",
]

SCALED_DIFF_INTEGER_BITS = 5  # exp() input is F5 (Q5.26)
ACCUMULATION_INTEGER_BITS = 12  # sum of exps is F12 (Q12.19)


def softmax_params(s_in, beta=1.0) -> tuple[int, int, int]:
    """SOFTMAX int8 Prepare, reference path (activations.cc SoftmaxPrepare<kReference>).

    PreprocessSoftmaxScaling (quantization_util.cc), in double:
      real = min(double(beta) * double(s_in) * 2^(31 - 5), 2^31 - 1)
      (M, left_shift) = QuantizeMultiplierGreaterThanOne(real)
    CalculateInputRadius(5, left_shift):
      diff_min = -floor((2^5 - 1) * 2^(31 - 5) / 2^left_shift)
    Returns (input_multiplier, input_left_shift, diff_min). `beta` is the float32 option.
    Raises ValueError when real <= 1 (TFLite CHECK-fails).
    """
    real = float(np.float32(beta)) * float(np.float32(s_in)) * float(1 << (31 - 5))
    real = min(real, float(2**31 - 1))
    if not real > 1.0:
        raise ValueError(f"softmax input multiplier {real} must be > 1 (input scale too small)")
    m, left_shift = quantize_multiplier(real)
    radius = (2**SCALED_DIFF_INTEGER_BITS - 1) * 2.0 ** (31 - SCALED_DIFF_INTEGER_BITS)
    diff_min = -int(np.floor(radius / 2.0**left_shift))
    return m, left_shift, diff_min


@kernel
def saturating_rounding_multiply_by_pot(x, exponent):
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent>(int32 x).

    exponent > 0: x * 2^exponent, saturating to INT32_MIN/MAX when |x| > 2^(31-exponent) - 1;
    exponent < 0: RoundingDivideByPOT(x, -exponent); exponent == 0: x.
    """
    x = np.int64(x)
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (np.int64(1) << (31 - exponent)) - 1
    if x > threshold:
        return np.int64(INT32_MAX)
    if x < -threshold:
        return np.int64(INT32_MIN)
    return x << exponent


@kernel
def _rounding_half_sum(a, b):
    """gemmlowp RoundingHalfSum(int32 a, int32 b) = (a + b + sign(a + b)) / 2, C division."""
    s = np.int64(a) + np.int64(b)
    s += 1 if s >= 0 else -1
    return s >> 1 if s >= 0 else -((-s) >> 1)


@kernel
def exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """gemmlowp: exp(a) for a in [-1/4, 0); a and result are F0 raws.

    Taylor expansion around -1/8 with x = a + 1/8:
      exp(a) = e^(-1/8) * (1 + x + x^2/2 + x^3/6 + x^4/24)
             = c + c * (x + ((x^4/4 + x^3) * 1/3 + x^2) / 2)
    c = e^(-1/8) = 1895147668 / 2^31, 1/3 = 715827883 / 2^31. Products are SRDHM, /4 and /2
    are RoundingDivideByPOT.
    """
    constant_term = np.int64(1895147668)
    constant_1_over_3 = np.int64(715827883)
    x = wrap_int32(np.int64(a) + (1 << 28))  # + 1/8 in F0
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    poly = wrap_int32(srdhm(wrap_int32(x4_over_4 + x3), constant_1_over_3) + x2)
    x4_over_24_plus_x3_over_6_plus_x2_over_2 = saturating_rounding_multiply_by_pot(poly, -1)
    # AddSaturatingIf16Bit: a plain (wrapping) add for int32
    return wrap_int32(
        constant_term
        + srdhm(constant_term, wrap_int32(x + x4_over_24_plus_x3_over_6_plus_x2_over_2))
    )


@kernel
def exp_on_negative_values(a):
    """gemmlowp exp_on_negative_values for an F5 input (5 integer bits, 26 fractional): exp(a),
    a <= 0, as an F0 raw.

    a = (a mod 1/4 - 1/4) - r with r >= 0 a multiple of 1/4:
      exp(a) = exp_on_interval(a mod 1/4 - 1/4) * prod over the set bits 2^k of r of exp(-2^k)
    for k = -2..4 (the barrel shifter; constants exp(-2^k) in F0). exp(0) is F0's One,
    INT32_MAX. (With 5 integer bits there is no clamp to 0 below -32.)
    """
    fractional_bits = 31 - SCALED_DIFF_INTEGER_BITS  # 26
    a = np.int64(a)
    one_quarter = np.int64(1) << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = wrap_int32((a & mask) - one_quarter)
    # Rescale<0> of an F5: multiply the raw by 2^5, saturating
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(
            a_mod_quarter_minus_one_quarter, SCALED_DIFF_INTEGER_BITS
        )
    )
    remainder = wrap_int32(a_mod_quarter_minus_one_quarter - a)
    # (exponent k, exp(-2^k) as an F0 raw)
    barrel = (
        (-2, 1672461947),
        (-1, 1302514674),
        (0, 790015084),
        (1, 290630308),
        (2, 39332535),
        (3, 720401),
        (4, 242),
    )
    for k, multiplier in barrel:
        # (k < 5 always holds: every bit 2^k exists in an F5)
        if SCALED_DIFF_INTEGER_BITS > k and remainder & (np.int64(1) << (fractional_bits + k)):
            result = srdhm(result, multiplier)
    if a == 0:
        result = np.int64(INT32_MAX)
    return result


@kernel
def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp: 1 / (1 + a) for a in [0, 1); a and result are F0 raws.

    Newton-Raphson on d = (1 + a) / 2 in [1/2, 1) (RoundingHalfSum with F0's One = INT32_MAX):
      x0 = 48/17 - 32/17 * d            (F2 constants 1515870810, -1010580540)
      x <- x + Rescale<2>(x * (1 - d * x)), three times   (x * (…) is F2*F2 = F4)
    and 1/(1 + a) = x / 2: ExactMulByPot<-1> reinterprets x as an F1, Rescale<0> doubles
    the raw, saturating.
    """
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    f2_one = np.int64(1) << 29
    x = wrap_int32(np.int64(1515870810) + srdhm(half_denominator, -1010580540))
    for _ in range(3):
        half_denominator_times_x = srdhm(half_denominator, x)
        one_minus_half_denominator_times_x = wrap_int32(f2_one - half_denominator_times_x)
        x = wrap_int32(
            x + saturating_rounding_multiply_by_pot(srdhm(x, one_minus_half_denominator_times_x), 2)
        )
    return saturating_rounding_multiply_by_pot(x, 1)


@kernel
def _count_leading_zeros32(x):
    """CountLeadingZeros(uint32): 32 for 0."""
    x = np.int64(x) & 0xFFFFFFFF
    n = 32
    while x != 0:
        x >>= 1
        n -= 1
    return n


@kernel
def get_reciprocal(x, x_integer_digits):
    """TFLite GetReciprocal (tflite/kernels/internal/common.h) for a positive F_(x_integer_digits).

    Normalises x to [1, 2) by a left shift of headroom_plus_one = clz(x) bits, then
      shifted_scale = 1 / (1 + (x * 2^headroom - 1)) in F0,
      num_bits_over_unit = x_integer_digits - headroom_plus_one,
    so that 1/x = shifted_scale * 2^-num_bits_over_unit. Returns (shifted_scale,
    num_bits_over_unit).
    """
    headroom_plus_one = _count_leading_zeros32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    # uint32 arithmetic: (x << headroom_plus_one) - 2^31, reinterpreted as int32
    shifted = ((np.int64(x) << headroom_plus_one) - (np.int64(1) << 31)) & 0xFFFFFFFF
    shifted_sum_minus_one = wrap_int32(shifted)
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


@kernel
def softmax_exps(input_multiplier, input_left_shift, diff_min):
    """The 256 values reference_ops::Softmax (int8) can take for e, by k = max(row) - x in
    [0, 255]: exp_on_negative_values(SRDHM(-k * 2^left_shift, M)) (F5 → F0 raw, >= 0), or -1
    where -k < diff_min (the entry is left out of the sum and gives -128)."""
    exps = np.empty(256, np.int64)
    for k in range(256):
        if -k >= diff_min:
            # MultiplyByQuantizedMultiplierGreaterThanOne = SRDHM(d * 2^left_shift, M)
            exps[k] = exp_on_negative_values(mbqm(np.int64(-k), input_multiplier,
                                                  input_left_shift))
        else:
            exps[k] = -1
    return exps


@kernel
def softmax_int8_rows(x, exps):
    """SOFTMAX int8 → int8, reference_ops::Softmax (tflite/kernels/internal/reference/softmax.h),
    its exponentials read from `exps` (`softmax_exps`: an int8 row's max(row) - x has 256
    values, so each is computed once per op rather than twice per element).

    x: int8 [rows, depth] (the caller reshapes so the softmax axis is last). Output scale
    1/256 and zero point -128 are built in. Per row, with d = x - max(row) (int32, <= 0):
      e = exp_on_negative_values(SRDHM(d * 2^left_shift, M))  where d >= diff_min  (F5 → F0)
      sum = Σ Rescale<12>(e) = Σ RDBPOT(e, 12)           (F12, int32 wrapping)
      (recip, nbits) = GetReciprocal(sum, 12)
      out = clamp(RDBPOT(SRDHM(recip, e), nbits + 31 - 8) - 128, -128, 127)
      entries with d < diff_min give -128.
    """
    rows, depth = x.shape
    if exps.shape[0] != 256:
        raise ValueError("softmax_int8_rows: exps needs 256 entries")
    out = np.empty((rows, depth), dtype=np.int8)
    for i in range(rows):
        max_in_row = np.int64(-128)
        for c in range(depth):
            max_in_row = max(max_in_row, np.int64(x[i, c]))
        sum_of_exps = np.int64(0)
        for c in range(depth):
            e = exps[max_in_row - np.int64(x[i, c])]
            if e >= 0:
                sum_of_exps = wrap_int32(
                    sum_of_exps + saturating_rounding_multiply_by_pot(e, -ACCUMULATION_INTEGER_BITS)
                )
        shifted_scale, num_bits_over_unit = get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
        exponent = num_bits_over_unit + 31 - 8
        for c in range(depth):
            e = exps[max_in_row - np.int64(x[i, c])]
            if e >= 0:
                unsat_output = rdbpot(srdhm(shifted_scale, e), exponent)
                out[i, c] = min(max(unsat_output - 128, -128), 127)
            else:
                out[i, c] = -128
    return out


def softmax_int8(x, input_multiplier, input_left_shift, diff_min):
    """`softmax_int8_rows` with its table made for this call (softmax_params' three values)."""
    return softmax_int8_rows(x, softmax_exps(input_multiplier, input_left_shift, diff_min))


# -- the optimized kernel (TFLite's default interpreter on x86) ---------------------------------


def softmax_exp_table(s_in, beta) -> np.ndarray:
    """optimized_ops::PopulateSoftmaxLookupTable, float32: entry d = expf(-(s_in * beta) * d)
    for d = max(row) - x in [0, 255]."""
    from qengine.kernels.libm import libm  # expf, as TFLite calls it

    scale = -np.float32(np.float32(s_in) * np.float32(beta))
    return np.array([libm.expf(float(np.float32(scale * np.float32(d)))) for d in range(256)],
                    np.float32)


@kernel
def softmax_int8_float_table(x, table, s_out, zp_out):
    """optimized_ops::Softmax<int8_t, int8_t> on rows x [R, depth], float32 throughout:

        e_j = table[max(row) - x_j],  total = e_0 + e_1 + ...   (in order)
        out = clamp(round(e_j * float32(1 / (total * s_out))) + zp_out)   (ties away from 0)
    """
    rows, depth = x.shape
    out = np.empty((rows, depth), np.int8)
    for r in range(rows):
        top = np.int32(x[r, 0])
        for j in range(depth):
            top = max(top, np.int32(x[r, j]))
        total = np.float32(0.0)
        for j in range(depth):
            total = np.float32(total + table[top - np.int32(x[r, j])])
        inv = np.float32(np.float32(1.0) / np.float32(total * np.float32(s_out)))
        for j in range(depth):
            p = np.float32(table[top - np.int32(x[r, j])] * inv)  # >= 0
            q = np.int32(np.floor(np.float64(p) + 0.5)) + zp_out  # std::round, exact in double
            out[r, j] = min(max(q, -128), 127)
    return out
