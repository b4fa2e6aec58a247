"""Int8 activations of TFLite's reference resolver: LOGISTIC, TANH (256-entry LUTs),
HARD_SWISH, LEAKY_RELU, PRELU and RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 (ReluX).

Kernels work on 1-D contiguous int8 arrays (the caller ravels; PRELU's alpha is broadcast
by the caller to the input's shape first). `*_params` helpers compute in pure Python what
the op's Prepare in tflite/kernels/activations.cc computes, in the same float32/double
precision, and return tuples in the kernel's argument order.
"""

import ctypes
import ctypes.util
import math

import numpy as np
from qengine.kernels.fixedpoint import mbqm, quantize_multiplier
from qengine.kernels.jit import kernel

__all__ = [
    "apply_lut_int8",
    "hard_swish_int8",
    "hard_swish_params",
    "leaky_relu_int8",
    "leaky_relu_params",
    "logistic_lut_int8",
    "prelu_int8",
    "prelu_params",
    "relu_int8",
    "relu_params",
    "tanh_lut_int8",
]

# ----------------------------------------------------------------------------- LUT ops

# TFLite calls the float overloads std::exp(float) / std::tanh(float), i.e. the C library's
# expf / tanhf. Calling the same libm functions keeps the tables identical at rounding edges.
_libm = ctypes.CDLL(ctypes.util.find_library("m"))
_libm.expf.restype = ctypes.c_float
_libm.expf.argtypes = [ctypes.c_float]
_libm.tanhf.restype = ctypes.c_float
_libm.tanhf.argtypes = [ctypes.c_float]


def _logistic_f32(x: np.float32) -> np.float32:
    # 1.0f / (1.0f + std::exp(-value)), all float32
    e = np.float32(_libm.expf(float(-x)))
    return np.float32(np.float32(1.0) / np.float32(np.float32(1.0) + e))


def _tanh_f32(x: np.float32) -> np.float32:
    return np.float32(_libm.tanhf(float(x)))


def _lut_int8(s_in, zp_in, s_out, zp_out, transform) -> np.ndarray:
    """LUTPopulateInt8 (tflite/kernels/internal/common.h), all in float32:

      deq = s_in * (v - zp_in);  q = clamp(int(roundf(f(deq) * (1.0f / s_out)) + zp_out))
    Entry k holds the output for input value v = k - 128.
    """
    s_in, s_out = np.float32(s_in), np.float32(s_out)
    inverse_scale = np.float32(np.float32(1.0) / s_out)
    table = np.empty(256, dtype=np.int8)
    for v in range(-128, 128):
        dequantized = np.float32(s_in * np.float32(v - int(zp_in)))
        rescaled = np.float32(transform(dequantized) * inverse_scale)
        rounded = np.float32(math.copysign(math.floor(abs(float(rescaled)) + 0.5), rescaled))
        quantized = int(np.float32(rounded + np.float32(int(zp_out))))
        table[v + 128] = min(max(quantized, -128), 127)
    return table


def logistic_lut_int8(s_in, zp_in, s_out, zp_out) -> np.ndarray:
    """LOGISTIC int8 table (activations.cc SigmoidPrepare, reference/generic LUT path).

    TFLite requires s_out == 1/256 exactly (zp_out is used as given).
    """
    return _lut_int8(s_in, zp_in, s_out, zp_out, _logistic_f32)


def tanh_lut_int8(s_in, zp_in, s_out, zp_out) -> np.ndarray:
    """TANH int8 table (activations.cc TanhPrepare, reference/generic LUT path)."""
    return _lut_int8(s_in, zp_in, s_out, zp_out, _tanh_f32)


@kernel
def apply_lut_int8(x, table):
    """reference_integer_ops::LookupTable: out = table[x + 128] (table from *_lut_int8)."""
    n = x.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        out[i] = table[np.int64(x[i]) + 128]
    return out


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


@kernel
def prelu_int8(x, alpha, zp_in, zp_alpha, zp_out, m1, sh1, m2, sh2):
    """reference_ops::Prelu / BroadcastPrelu4DSlow (…/reference/prelu.h).

    x, alpha: int8 1-D arrays of equal length (alpha broadcast to x by the caller).
      d = x - zp_in
      out = clamp(zp_out + (d >= 0 ? MBQM(d, m1, sh1) : MBQM(d * (alpha - zp_alpha), m2, sh2)))
    """
    n = x.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        d = np.int64(x[i]) - zp_in
        if d >= 0:
            v = mbqm(d, m1, sh1)
        else:
            v = mbqm(d * (np.int64(alpha[i]) - zp_alpha), m2, sh2)
        out[i] = min(max(v + zp_out, -128), 127)
    return out


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
