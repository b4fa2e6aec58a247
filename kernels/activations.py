"""Int8 activations of TFLite's reference resolver: LOGISTIC, TANH, GELU, EXP, LOG (256-entry
LUTs), HARD_SWISH, LEAKY_RELU, PRELU, RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 (ReluX) and
LOG_SOFTMAX (gemmlowp fixed point).

Kernels work on 1-D contiguous int8 arrays (the caller ravels; PRELU's alpha is broadcast
by the caller to the input's shape first). `*_params` helpers compute in pure Python what
the op's Prepare in tflite/kernels/activations.cc computes, in the same float32/double
precision, and return tuples in the kernel's argument order.
"""

import math

import numpy as np
from qengine.kernels.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    mbqm,
    mbqm_array,
    quantize_multiplier,
    rdbpot,
    srdhm,
    wrap_int32,
)
from qengine.kernels.jit import kernel
from qengine.kernels.libm import libm as _libm
from qengine.kernels.softmax import (  # gemmlowp helpers shared with SOFTMAX
    _count_leading_zeros32,
    _rounding_half_sum,
    exp_on_negative_values,
    one_over_one_plus_x_for_x_in_0_1,
    saturating_rounding_multiply_by_pot,
    softmax_params,
)

__all__ = [
    "exp_lut_int8",
    "exp_lut_int16",
    "gelu_lut_int8",
    "gelu_lut_int16",
    "hard_swish_int8",
    "hard_swish_params",
    "leaky_relu_int8",
    "leaky_relu_params",
    "log_lut_int8",
    "log_lut_int16",
    "log_softmax_int8",
    "log_softmax_params",
    "logistic_lut_int8",
    "lut_int8",
    "lut_int16",
    "prelu_int8",
    "prelu_params",
    "relu_int8",
    "relu_params",
    "rsqrt_lut_int16",
    "tanh_lut_int8",
]

# ----------------------------------------------------------------------------- LUT ops

# TFLite calls the float overloads std::exp(float) / std::tanh(float), i.e. the C library's
# expf / tanhf (kernels/libm.py).


def _logistic_f32(x: np.float32) -> np.float32:
    # 1.0f / (1.0f + std::exp(-value)), all float32
    e = np.float32(_libm.expf(float(-x)))
    return np.float32(np.float32(1.0) / np.float32(np.float32(1.0) + e))


def _tanh_f32(x: np.float32) -> np.float32:
    return np.float32(_libm.tanhf(float(x)))


def _lut_int8(s_in, zp_in, s_out, zp_out, transform) -> np.ndarray:
    """LUTPopulateInt8 (tflite/kernels/internal/common.h), all in float32:

      deq = s_in * (v - zp_in);  q = clamp(int(roundf(f(deq) * (1.0f / s_out)) + zp_out))
    Entry k holds the output for input value v = k - 128. `transform` maps a np.float32 to
    a np.float32 as the C++ float function does.
    """
    s_in, s_out = np.float32(s_in), np.float32(s_out)
    inverse_scale = np.float32(np.float32(1.0) / s_out)
    # float32 arrays hold the same IEEE products and sums as the C++ scalars; only `transform`
    # runs per value (a table took 1.3 ms value by value, BirdNET builds 58)
    with np.errstate(over="ignore"):  # float32 overflow to inf is part of the C++ result
        dequantized = s_in * (np.arange(-128, 128) - int(zp_in)).astype(np.float32)
        values = np.array([transform(d) for d in dequantized], np.float32)
        rescaled = (values * inverse_scale).astype(np.float64)
    rounded = np.where(np.isinf(rescaled), rescaled,
                       np.copysign(np.floor(np.abs(rescaled) + 0.5), rescaled))  # roundf
    sums = rounded.astype(np.float32) + np.float32(int(zp_out))
    return np.array([min(max(_float_to_int32(v), -128), 127) for v in sums], np.int8)


lut_int8 = _lut_int8  # the public name, for ops whose transform lives elsewhere


def _float_to_int32(x: np.float32) -> int:
    """LUTPopulateInt8's static_cast<int32_t>(rescaled + zp_out), truncating. Out of int32 range
    the cast is undefined in C++; the x86-64 LiteRT build saturates there (checked: EXP
    overflowing to +inf gives 127, LOG far below -2^31 gives -128). NaN cannot occur for
    the transforms used here."""
    value = float(x)
    if math.isnan(value):
        return -(2**31)
    if value >= 2147483648.0:
        return 2**31 - 1
    if value <= -2147483904.0:  # the float32 just below INT32_MIN
        return -(2**31)
    return int(value)


def logistic_lut_int8(s_in, zp_in, s_out, zp_out) -> np.ndarray:
    """LOGISTIC int8 table (activations.cc SigmoidPrepare, reference/generic LUT path).

    TFLite requires s_out == 1/256 exactly (zp_out is used as given).
    """
    return _lut_int8(s_in, zp_in, s_out, zp_out, _logistic_f32)


def tanh_lut_int8(s_in, zp_in, s_out, zp_out) -> np.ndarray:
    """TANH int8 table (activations.cc TanhPrepare, reference/generic LUT path)."""
    return _lut_int8(s_in, zp_in, s_out, zp_out, _tanh_f32)


def exp_lut_int8(s_in, zp_in, s_out, zp_out) -> np.ndarray:
    """EXP int8 table (tflite/kernels/exp.cc Prepare): expf. An overflow to inf becomes
    INT32_MIN in the float-to-int cast and so -128."""
    return _lut_int8(s_in, zp_in, s_out, zp_out, lambda x: np.float32(_libm.expf(float(x))))


def log_lut_int8(s_in, zp_in, s_out, zp_out) -> np.ndarray:
    """LOG int8 table (tflite/kernels/elementwise.cc LogLUTPrepare): logf(x) for x > 0; for
    x <= 0 the real value of the lowest output, float((-128 - zp_out) * s_out)."""
    output_min = np.float32(np.float32(-128 - int(zp_out)) * np.float32(s_out))

    def log_or_min(x: np.float32) -> np.float32:
        return output_min if x <= 0 else np.float32(_libm.logf(float(x)))

    return _lut_int8(s_in, zp_in, s_out, zp_out, log_or_min)


# gelu.h: kSqrt2dPi = M_2_SQRTPI * M_SQRT1_2, a double product stored as a float constant
_SQRT_2_OVER_PI = np.float32(1.1283791670955126 * 0.7071067811865476)
_MINUS_SQRT_HALF = np.float32(-0.7071067811865476)  # static_cast<float>(-M_SQRT1_2)


def _gelu_f32(x: np.float32) -> np.float32:
    # GeluTransform: 0.5f * x * erfcf(x * -sqrt(1/2)), evaluated left to right in float32
    half_x = np.float32(np.float32(0.5) * x)
    return np.float32(half_x * np.float32(_libm.erfcf(float(np.float32(x * _MINUS_SQRT_HALF)))))


def _gelu_approximate_f32(x: np.float32) -> np.float32:
    # GeluTransformApproximate: 0.5f * x * (1 + tanhf(sqrt(2/pi) * (x + 0.044715f * x*x*x)))
    cube_term = np.float32(np.float32(np.float32(np.float32(0.044715) * x) * x) * x)
    inner = np.float32(_SQRT_2_OVER_PI * np.float32(x + cube_term))
    one_plus_tanh = np.float32(np.float32(1.0) + np.float32(_libm.tanhf(float(inner))))
    return np.float32(np.float32(np.float32(0.5) * x) * one_plus_tanh)


def gelu_lut_int8(s_in, zp_in, s_out, zp_out, approximate: bool) -> np.ndarray:
    """GELU int8 table (activations.cc GeluPrepare, reference/gelu.h GeluTransform[Approximate])."""
    transform = _gelu_approximate_f32 if approximate else _gelu_f32
    return _lut_int8(s_in, zp_in, s_out, zp_out, transform)


# ------------------------------------------------------------------ 513-entry int16 LUTs


def _roundf(x: np.float32) -> np.float32:
    return np.float32(_libm.roundf(float(x)))  # std::round(float): half away from zero


def _c_max(a, b):
    return b if a < b else a  # std::max: a NaN first argument survives  # noqa: FURB136


def _c_min(a, b):
    return b if b < a else a  # std::min, written out for the same NaN rule  # noqa: FURB136


def _float_to_int16(x: np.float32) -> int:
    # static_cast<int16_t> of an already clamped float; a NaN (inf - inf in the error term)
    # converts through cvttss2si to 0x80000000, whose low 16 bits are 0
    return 0 if np.isnan(x) else int(x)


def lut_int16(s_in, zp_in, s_out, zp_out, transform) -> np.ndarray:
    """LUTPopulateInt16<float> (tflite/kernels/internal/common.h), all in float32: 512
    segments over the input's real range [s_in (-32768 - zp_in), s_in (32767 - zp_in)];
    each anchor is the output scaled by 65536 / (output range), lowered by half the
    interpolation error at the segment's midpoint; a closing anchor at input_max.

    `transform` maps a np.float32 to a np.float32 as the C++ float function does. The
    output scale is 65536 / (65535 s_out), not 1 / s_out: TFLite's, kept as is.
    """
    f32 = np.float32
    input_min = f32(s_in) * f32(-32768 - int(zp_in))
    input_max = f32(s_in) * f32(32767 - int(zp_in))
    output_min = f32(s_out) * f32(-32768 - int(zp_out))
    output_max = f32(s_out) * f32(32767 - int(zp_out))
    step = f32((input_max - input_min) / f32(512))
    half_step = f32(step / f32(2))
    with np.errstate(over="ignore", invalid="ignore"):
        scaling = f32(f32(65536) / f32(output_max - output_min))
        table = np.empty(513, np.int16)
        for i in range(512):
            start = f32(input_min + f32(i) * step)
            val = transform(start)
            midpoint = transform(f32(start + half_step))
            following = transform(f32(input_min + f32(i + 1) * step))
            sample = _roundf(f32(val * scaling))
            interpolated = _roundf(f32(f32(following * scaling + sample) / f32(2)))
            error = f32(interpolated - _roundf(f32(midpoint * scaling)))
            bias = _roundf(f32(error / f32(2)))
            table[i] = _float_to_int16(_c_min(_c_max(f32(sample - bias), f32(-32768)),
                                              f32(32767)))
        last = _roundf(f32(transform(input_max) * scaling))
        table[512] = _float_to_int16(_c_min(_c_max(last, f32(-32768)), f32(32767)))
    return table


def _exp_f32(x: np.float32) -> np.float32:
    return np.float32(_libm.expf(float(x)))


def exp_lut_int16(s_in, s_out) -> np.ndarray:
    """EXP int16 (exp.cc Prepare): LUTPopulate<int16_t> of expf, zero points 0."""
    return lut_int16(s_in, 0, s_out, 0, _exp_f32)


def log_lut_int16(s_in, s_out) -> np.ndarray:
    """LOG int16 (elementwise.cc LogLUTPrepare): logf(x) for x > 0, else the lowest output's
    real value float(-32768 * s_out)."""
    output_min = np.float32(np.float32(-32768) * np.float32(s_out))

    def log_or_min(x: np.float32) -> np.float32:
        return output_min if x <= 0 else np.float32(_libm.logf(float(x)))

    return lut_int16(s_in, 0, s_out, 0, log_or_min)


def rsqrt_lut_int16(s_in, s_out) -> np.ndarray:
    """RSQRT int16 (elementwise.cc GenericPrepare): 1.0f / sqrtf(x) for x > 0, else the
    highest output's real value float(32767 * s_out)."""
    output_max = np.float32(np.float32(32767) * np.float32(s_out))

    def rsqrt_or_max(x: np.float32) -> np.float32:
        if x <= 0:
            return output_max
        return np.float32(np.float32(1.0) / np.float32(_libm.sqrtf(float(x))))

    return lut_int16(s_in, 0, s_out, 0, rsqrt_or_max)


def gelu_lut_int16(s_in, s_out, approximate: bool) -> np.ndarray:
    """GELU int16: LUTPopulate<int16_t> of GeluTransform[Approximate], zero points 0."""
    transform = _gelu_approximate_f32 if approximate else _gelu_f32
    return lut_int16(s_in, 0, s_out, 0, transform)


# ------------------------------------------------------------------------------- ReluX


def relu_params(s_in, zp_in, s_out, zp_out, act_min: float, act_max: float) -> tuple:
    """RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 int8 (activations.cc ReluPrepare, QuantizedReluX).

    real = double(float(s_in / s_out)); bounds (float32 division, roundf):
      qmin = max(-128, zp_out + roundf(act_min / s_out))
      qmax = 127 if act_max is +inf else min(127, zp_out + roundf(act_max / s_out))
    RELU: (0, inf); RELU6: (0, 6); RELU_N1_TO_1: (-1, 1); RELU_0_TO_1: (0, 1).
    Returns (zp_in, zp_out, m, sh, qmin, qmax).
    """
    s_in, s_out = np.float32(s_in), np.float32(s_out)
    m, sh = quantize_multiplier(float(np.float32(s_in / s_out)))

    def bound(act) -> int:
        r = float(np.float32(np.float32(act) / s_out))
        return int(zp_out) + int(math.copysign(math.floor(abs(r) + 0.5), r))

    qmin = max(-128, bound(act_min))
    qmax = 127 if act_max == math.inf else min(127, bound(act_max))
    return int(zp_in), int(zp_out), m, sh, qmin, qmax


@kernel
def relu_int8(x, zp_in, zp_out, m, sh, qmin, qmax):
    """reference_ops::ReluX (…/reference/reference_ops.h):

    out = clamp(zp_out + MBQM(x - zp_in, m, sh), qmin, qmax)
    """
    n = x.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        v = zp_out + mbqm(np.int64(x[i]) - zp_in, m, sh)
        out[i] = min(max(v, qmin), qmax)
    return out


# -------------------------------------------------------------------------- LEAKY_RELU


def leaky_relu_params(s_in, zp_in, s_out, zp_out, alpha) -> tuple:
    """LEAKY_RELU int8 Prepare (activations.cc LeakyReluPrepare), float32 arithmetic:

      alpha multiplier    = double(float(float(s_in * alpha) / s_out))
      identity multiplier = double(float(s_in / s_out))
    A negative alpha gives a negative m_alpha (QuantizeMultiplier of a negative real).
    Returns (zp_in, zp_out, m_identity, sh_identity, m_alpha, sh_alpha).
    """
    s_in, s_out, alpha = np.float32(s_in), np.float32(s_out), np.float32(alpha)
    m_alpha, sh_alpha = quantize_multiplier(float(np.float32(np.float32(s_in * alpha) / s_out)))
    m_id, sh_id = quantize_multiplier(float(np.float32(s_in / s_out)))
    return int(zp_in), int(zp_out), m_id, sh_id, m_alpha, sh_alpha


@kernel
def leaky_relu_int8(x, zp_in, zp_out, m_identity, sh_identity, m_alpha, sh_alpha):
    """reference_ops::QuantizeLeakyRelu (…/reference/leaky_relu.h):

      d = x - zp_in
      out = clamp(zp_out + (d >= 0 ? MBQM(d, m_identity, sh_identity)
                                   : sign(m_alpha) * MBQM(d, |m_alpha|, sh_alpha)))
    (current TFLite applies a negative alpha multiplier by negating the result).
    """
    n = x.shape[0]
    out = np.empty(n, dtype=np.int8)
    negative_alpha = m_alpha < 0
    safe_alpha = -m_alpha if negative_alpha else m_alpha
    for i in range(n):
        d = np.int64(x[i]) - zp_in
        if d >= 0:
            v = zp_out + mbqm(d, m_identity, sh_identity)
        else:
            scaled = mbqm(d, safe_alpha, sh_alpha)
            v = zp_out + (-scaled if negative_alpha else scaled)
        out[i] = min(max(v, -128), 127)
    return out


# ------------------------------------------------------------------------------- PRELU


def prelu_params(s_in, zp_in, s_alpha, zp_alpha, s_out, zp_out) -> tuple:
    """PRELU int8 Prepare (activations.cc PreluPrepare), float32 arithmetic:

      m1 = double(float(s_in / s_out));  m2 = double(float(float(s_in * s_alpha) / s_out))
    Returns (zp_in, zp_alpha, zp_out, m1, sh1, m2, sh2).
    """
    s_in, s_alpha, s_out = np.float32(s_in), np.float32(s_alpha), np.float32(s_out)
    m1, sh1 = quantize_multiplier(float(np.float32(s_in / s_out)))
    m2, sh2 = quantize_multiplier(float(np.float32(np.float32(s_in * s_alpha) / s_out)))
    return int(zp_in), int(zp_alpha), int(zp_out), m1, sh1, m2, sh2


def prelu_int8(x, alpha, zp_in, zp_alpha, zp_out, m1, sh1, m2, sh2):
    """reference_ops::Prelu / BroadcastPrelu4DSlow (…/reference/prelu.h), in NumPy: it runs
    once per op, on all 256 x 256 pairs, to make the op's table (ops/activations_int.py).

    x, alpha: int8 arrays of one shape (alpha broadcast to x by the caller).
      d = x - zp_in
      out = clamp(zp_out + (d >= 0 ? MBQM(d, m1, sh1) : MBQM(d * (alpha - zp_alpha), m2, sh2)))
    |d * (alpha - zp_alpha)| <= 255 * 255: no int32 overflow.
    """
    d = np.asarray(x).astype(np.int64) - zp_in
    negative = mbqm_array(d * (np.asarray(alpha).astype(np.int64) - zp_alpha), m2, sh2)
    v = np.where(d >= 0, mbqm_array(d, m1, sh1), negative) + zp_out
    return np.clip(v, -128, 127).astype(np.int8)


# -------------------------------------------------------------------------- HARD_SWISH


def _downscale_to_int16(m32: int) -> int:
    """DownScaleInt32ToInt16Multiplier (common.h): round M / 2^16, saturating at 32767."""
    if m32 >= 2**31 - 1 - (1 << 15):
        return 32767
    return (m32 + (1 << 15)) >> 16


def hard_swish_params(s_in, zp_in, s_out, zp_out) -> tuple:
    """HARD_SWISH int8 Prepare (activations.cc HardSwishPrepare), float32 arithmetic:

      hires_input_scale  = (1/128) * s_in
      output_multiplier  = hires_input_scale / s_out          → (M16, exponent), exponent <= 0
      reluish_multiplier = hires_input_scale / (3 / 32768)    → (M16, exponent)
    Each real goes through QuantizeMultiplier and the int32 multiplier is rounded to int16.
    Returns (zp_in, zp_out, reluish_m16, reluish_exp, output_m16, output_exp).
    Raises ValueError when output_exp > 0 (TFLite's Prepare fails then).
    """
    hires = np.float32(np.float32(1.0 / 128.0) * np.float32(s_in))
    reluish_scale = np.float32(np.float32(3.0) / np.float32(32768.0))
    out_m32, out_exp = quantize_multiplier(float(np.float32(hires / np.float32(s_out))))
    if out_exp > 0:
        raise ValueError(
            f"HARD_SWISH output multiplier exponent {out_exp} > 0: "
            "s_in/s_out is too large for TFLite"
        )
    rel_m32, rel_exp = quantize_multiplier(float(np.float32(hires / reluish_scale)))
    return (
        int(zp_in),
        int(zp_out),
        _downscale_to_int16(rel_m32),
        rel_exp,
        _downscale_to_int16(out_m32),
        out_exp,
    )


@kernel
def _wrap16(x):
    return ((np.int64(x) + 32768) & 0xFFFF) - 32768


@kernel
def _sat16(x):
    return min(max(np.int64(x), -32768), 32767)


@kernel
def _srdhm16(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul(int16, int16):
    int16((a*b + (a*b >= 0 ? 2^14 : 1 - 2^14)) / 2^15), C division; -32768² saturates."""
    if a == -32768 and b == -32768:
        return np.int64(32767)
    v = np.int64(a) * np.int64(b)
    v += (1 << 14) if v >= 0 else 1 - (1 << 14)
    q = v >> 15 if v >= 0 else -((-v) >> 15)  # truncating division
    return _wrap16(q)


@kernel
def _sdhm16(a, b):
    """hard_swish.h SaturatingDoublingHighMul(int16, int16): int16(a*b / 2^15), truncating."""
    if a == -32768 and b == -32768:
        return np.int64(32767)
    v = np.int64(a) * np.int64(b)
    q = v >> 15 if v >= 0 else -((-v) >> 15)
    return _wrap16(q)


@kernel
def _rdbpot16(x, exponent):
    """gemmlowp RoundingDivideByPOT<int16>: the mask is (2^e - 1) cast to int16."""
    mask = _wrap16((np.int64(1) << exponent) - 1)
    remainder = np.int64(x) & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return _wrap16((np.int64(x) >> exponent) + (1 if remainder > threshold else 0))


@kernel
def hard_swish_int8(x, zp_in, zp_out, reluish_m16, reluish_exp, output_m16, output_exp):
    """reference_ops::HardSwish, quantized (tflite/kernels/internal/reference/hard_swish.h).

    All intermediates are int16 fixed point (values below are int16):
      hires    = (x - zp_in) * 2^7
      preshift = SRDHM16(hires, output_m16)                 # x on the output scale, unshifted
      r = hires
      if reluish_exp > 0: r = sat16(r * 2^(reluish_exp - 1))
      r = SRDHM16(r, reluish_m16)
      if reluish_exp > 0: r = sat16(r * 2)                   # last bit of left shift
      if reluish_exp < 0: r = RDBPOT16(r, -reluish_exp)      # r: 3.0 ↔ 32768, in [-1, 1]
      r = (r + 2^15) >> 1                                    # relu6(x + 3) / 6 in [0, 1]
      y = RDBPOT16(SDHM16(r, preshift), -output_exp) + zp_out   (SDHM: truncating, no rounding)
      out = clamp(y, -128, 127)
    """
    n = x.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        hires = _wrap16((np.int64(x[i]) - zp_in) * 128)
        preshift = _srdhm16(hires, output_m16)
        r = hires
        if reluish_exp > 0:
            r = _sat16(r * (np.int64(1) << (reluish_exp - 1)))
        r = _srdhm16(r, reluish_m16)
        if reluish_exp > 0:
            r = _sat16(r * 2)
        if reluish_exp < 0:
            r = _rdbpot16(r, -reluish_exp)
        r = (r + (1 << 15)) >> 1
        y = _rdbpot16(_sdhm16(r, preshift), -output_exp)
        y = _wrap16(y + zp_out)  # the C code stores this sum in an int16
        out[i] = min(max(y, -128), 127)
    return out


# ------------------------------------------------------------------------------ LOG_SOFTMAX
#
# reference_integer_ops::LogSoftmax (tflite/kernels/internal/reference/integer_ops/log_softmax.h)
# in gemmlowp fixed point; F_I is a FixedPoint<int32, I>: real = raw / 2^(31 - I).

LOG_SOFTMAX_INPUT_BITS = 5  # input differences are F5, as in SOFTMAX
LOG_SOFTMAX_ACCUMULATION_BITS = 12  # the sum of exps is F12
LOG_SOFTMAX_OUTPUT_BITS = 4  # output scale 16/256: [-16, 0] in F4 maps to [-128, 127]
LOG_SOFTMAX_OUTPUT_ZERO_POINT = 127


def log_softmax_params(s_in) -> tuple:
    """LOG_SOFTMAX int8 Prepare<kReference> (activations.cc; quantization_util.cc
    PreprocessLogSoftmaxScalingExp with beta = 1 and CalculateInputRadius), in double:

      (M, left_shift) = QuantizeMultiplierGreaterThanOne(min(s_in * 2^26, 2^31 - 1))
      (M_rev, s_rev)  = QuantizeMultiplierSmallerThanOneExp(2^(31 - left_shift) / M)
      diff_min        = -floor(31 * 2^26 / 2^left_shift)
    Returns (M, left_shift, M_rev, -s_rev, diff_min). Raises ValueError where TFLite's
    CHECKs abort (s_in * 2^26 <= 1).
    """
    m, left_shift, diff_min = softmax_params(s_in, 1.0)
    reverse = float(1 << (31 - left_shift)) / float(m)
    if not 0.0 < reverse < 1.0:
        raise ValueError(f"log-softmax reverse scaling {reverse} must be in (0, 1)")
    reverse_multiplier, reverse_shift = quantize_multiplier(reverse)
    return m, left_shift, reverse_multiplier, -reverse_shift, diff_min


@kernel
def _saturate_int32(x):
    return min(max(np.int64(x), np.int64(INT32_MIN)), np.int64(INT32_MAX))


@kernel
def log_x_for_x_greater_than_or_equal_to_1(z, input_bits, output_bits):
    """TFLite log_x_for_x_greater_than_or_equal_to_1_impl (tflite/kernels/internal/common.h):
    ln(z) for a positive F_input_bits raw z, as an F_output_bits raw.

    z = 2^k * r with r in [sqrt(1/2), sqrt(2)) chosen from two candidate normalisations
    (z and z * sqrt(1/2), each shifted to its headroom); the exponent part is
    z_pow_2_adj * ln 2 in F_(output_bits + 1), and ln r is a rational approximation
    num / (1 + denom_minus_one) in q = 2 (r - 2^(-1/4)) with the alpha constants below.
    Products are SRDHM; the C++ int32 additions wrap, SaturatingAdd/Sub saturate.
    """
    accum_bits = output_bits + 1
    log_2 = 1488522236  # ln 2 in F0
    sqrt_sqrt_half = 1805811301
    sqrt_half = 1518500250
    one_quarter = 536870912
    alpha_n = 117049297  # 11/240 * 2^(1/4)
    alpha_d = 127690142  # 1/20 * 2^(1/4)
    alpha_i = 1057819769  # 2 / 2^(1/4) - 2^(1/4)
    alpha_f = 638450708  # 1/4 * 2^(1/4)
    shifted_quarter = saturating_rounding_multiply_by_pot(one_quarter, -accum_bits)

    z_a_headroom_plus_1 = _count_leading_zeros32(z)
    r_a_tmp = saturating_rounding_multiply_by_pot(z, z_a_headroom_plus_1 - 1)
    r_a_raw = saturating_rounding_multiply_by_pot(srdhm(r_a_tmp, sqrt_half), 1)
    z_a_pow_2_adj = _saturate_int32(
        saturating_rounding_multiply_by_pot(input_bits - z_a_headroom_plus_1, 31 - accum_bits)
        + shifted_quarter)

    z_b = srdhm(z, sqrt_half)
    z_b_headroom = _count_leading_zeros32(z_b) - 1
    r_b_raw = saturating_rounding_multiply_by_pot(z, z_b_headroom)
    z_b_pow_2_adj = _saturate_int32(
        saturating_rounding_multiply_by_pot(input_bits - z_b_headroom, 31 - accum_bits)
        - shifted_quarter)

    r = min(r_a_raw, r_b_raw)
    z_pow_2_adj = max(z_a_pow_2_adj, z_b_pow_2_adj)

    p = _rounding_half_sum(r, sqrt_sqrt_half)
    q = wrap_int32(r - sqrt_sqrt_half)
    q = wrap_int32(q + q)
    common_sq = srdhm(q, q)
    num = wrap_int32(srdhm(q, r) + srdhm(srdhm(q, common_sq), alpha_n))
    denom_minus_one = wrap_int32(
        srdhm(p, wrap_int32(wrap_int32(alpha_i + q) + srdhm(alpha_d, common_sq)))
        + srdhm(alpha_f, q))
    recip_denom = one_over_one_plus_x_for_x_in_0_1(denom_minus_one)

    num_scaled = saturating_rounding_multiply_by_pot(num, -accum_bits)  # F0 -> F_accum
    total = wrap_int32(srdhm(z_pow_2_adj, log_2) + srdhm(num_scaled, recip_denom))
    return saturating_rounding_multiply_by_pot(total, accum_bits - output_bits)


@kernel
def log_softmax_int8(x, input_multiplier, input_left_shift, reverse_multiplier,
                     reverse_right_shift, diff_min):
    """LOG_SOFTMAX int8 -> int8, reference_integer_ops::LogSoftmax; output (16/256, 127).

    x: int8 [rows, depth] (the caller reshapes so the axis is last). Per row:
      d = x - max(row);  scaled(d) = MBQM(d, M, left_shift)                       (F5)
      sum = Σ_{d >= diff_min} RDBPOT(exp_on_negative_values(scaled(d)), 12)       (F12)
      log_sum = log_x_for_x_greater_than_or_equal_to_1(sum)                      (F5)
      cutoff = max(diff_min - 1, MBQM(int32(log_sum + INT32_MIN), M_rev, -s_rev))
      out = d > cutoff ? clamp(RDBPOT(scaled(d) - log_sum, 31 - 5 - 4) + 127) : -128
    """
    rows, depth = x.shape
    out = np.empty((rows, depth), dtype=np.int8)
    for i in range(rows):
        max_in_row = np.int64(-128)
        for c in range(depth):
            max_in_row = max(max_in_row, np.int64(x[i, c]))
        sum_of_exps = np.int64(0)
        for c in range(depth):
            input_diff = np.int64(x[i, c]) - max_in_row
            if input_diff >= diff_min:
                e = exp_on_negative_values(mbqm(input_diff, input_multiplier, input_left_shift))
                sum_of_exps = wrap_int32(sum_of_exps + saturating_rounding_multiply_by_pot(
                    e, -LOG_SOFTMAX_ACCUMULATION_BITS))
        log_sum = log_x_for_x_greater_than_or_equal_to_1(
            sum_of_exps, LOG_SOFTMAX_ACCUMULATION_BITS, LOG_SOFTMAX_INPUT_BITS)
        shifted_log_sum = wrap_int32(log_sum + INT32_MIN)
        cutoff = max(np.int64(diff_min) - 1,
                     mbqm(shifted_log_sum, reverse_multiplier, -reverse_right_shift))
        for c in range(depth):
            input_diff = np.int64(x[i, c]) - max_in_row
            if input_diff > cutoff:
                scaled = mbqm(input_diff, input_multiplier, input_left_shift)
                v = rdbpot(wrap_int32(scaled - log_sum),
                           31 - LOG_SOFTMAX_INPUT_BITS - LOG_SOFTMAX_OUTPUT_BITS)
                v += LOG_SOFTMAX_OUTPUT_ZERO_POINT
                out[i, c] = min(max(v, -128), 127)
            else:
                out[i, c] = -128
    return out
