"""Int8 elementwise binary kernels: ADD, SUB, MUL, MAXIMUM, MINIMUM (TFLite reference).

Every binary kernel takes its two inputs already broadcast by the caller to the output
shape and flattened to 1-D contiguous arrays of equal length (e.g.
`np.ascontiguousarray(np.broadcast_to(x, out_shape)).ravel()`); broadcasting does not change
any value, so this reproduces TFLite's BroadcastAdd6DSlow & co. The output is 1-D too.

The `*_params` helpers compute, in pure Python, the multipliers that TFLite's Prepare
computes, with its float32-versus-double precision; they return tuples in the order the
kernel takes them, so a caller writes `add_int8(x1, x2, *add_params(...), act_min, act_max)`.
`act_min`/`act_max` is the fused-activation clamp range (CalculateActivationRangeQuantized).
"""

import numpy as np
from qengine.kernels.fixedpoint import mbqm, quantize_multiplier
from qengine.kernels.jit import kernel

__all__ = [
    "ADD_SUB_LEFT_SHIFT",
    "add_int8",
    "add_params",
    "maximum",
    "minimum",
    "mul_int8",
    "mul_params",
    "sub_int8",
    "sub_params",
]

# Inputs are shifted left by 20 bits before rescaling (add.cc / sub.cc, 8-bit path).
ADD_SUB_LEFT_SHIFT = 20


def _f32(x) -> np.float32:
    return np.float32(x)


def _add_sub_multipliers(s1, s2, s_out):
    """The three real multipliers of add.cc/sub.cc Prepare (8-bit path).

    twice_max = 2 * max(s1, s2) is formed from the float32 scales (exact), and the ratios
    are taken in double:
      r1 = s1 / twice_max,  r2 = s2 / twice_max,  r_out = twice_max / (2^20 * s_out)
    """
    s1, s2, s_out = float(_f32(s1)), float(_f32(s2)), float(_f32(s_out))
    twice_max = 2.0 * max(s1, s2)
    return s1 / twice_max, s2 / twice_max, twice_max / (float(1 << ADD_SUB_LEFT_SHIFT) * s_out)


def _smaller_than_one(real: float) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp: QuantizeMultiplier with a check real < 1."""
    if not real < 1.0:
        raise ValueError(f"real multiplier {real} must be < 1 (TFLite aborts in Prepare)")
    return quantize_multiplier(real)


def add_params(s1, zp1, s2, zp2, s_out, zp_out) -> tuple:
    """ADD int8 Prepare (tflite/kernels/add.cc).

    Returns (zp1, m1, sh1, zp2, m2, sh2, zp_out, m_out, sh_out); shifts are <= 0.
    Raises ValueError when r_out >= 1, where TFLite's Prepare aborts.
    """
    r1, r2, r_out = _add_sub_multipliers(s1, s2, s_out)
    m1, sh1 = _smaller_than_one(r1)
    m2, sh2 = _smaller_than_one(r2)
    m_out, sh_out = _smaller_than_one(r_out)
    return int(zp1), m1, sh1, int(zp2), m2, sh2, int(zp_out), m_out, sh_out


def sub_params(s1, zp1, s2, zp2, s_out, zp_out) -> tuple:
    """SUB int8 Prepare (tflite/kernels/sub.cc PrepareGeneralSubOp).

    Same as add_params except that r_out > 1 is accepted (QuantizeMultiplierGreaterThanOne),
    giving sh_out > 0. Returns (zp1, m1, sh1, zp2, m2, sh2, zp_out, m_out, sh_out).
    """
    r1, r2, r_out = _add_sub_multipliers(s1, s2, s_out)
    m1, sh1 = _smaller_than_one(r1)
    m2, sh2 = _smaller_than_one(r2)
    m_out, sh_out = quantize_multiplier(r_out)
    return int(zp1), m1, sh1, int(zp2), m2, sh2, int(zp_out), m_out, sh_out


@kernel
def add_int8(x1, x2, zp1, m1, sh1, zp2, m2, sh2, zp_out, m_out, sh_out, act_min, act_max):
    """ADD int8, reference_integer_ops::AddFunc (tflite/kernels/internal/reference/integer_ops/add.h).

    x1, x2: int8 1-D arrays of the output size (broadcast and flattened by the caller).
      a = MBQM((x1 - zp1) << 20, m1, sh1);  b = MBQM((x2 - zp2) << 20, m2, sh2)
      out = clamp(MBQM(a + b, m_out, sh_out) + zp_out, act_min, act_max)
    |x - zp| <= 255, so (x - zp) << 20 < 2^28 and a + b cannot overflow int32.
    """
    n = x1.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        a = mbqm((np.int64(x1[i]) - zp1) << ADD_SUB_LEFT_SHIFT, m1, sh1)
        b = mbqm((np.int64(x2[i]) - zp2) << ADD_SUB_LEFT_SHIFT, m2, sh2)
        v = mbqm(a + b, m_out, sh_out) + zp_out
        out[i] = min(max(v, act_min), act_max)
    return out


@kernel
def sub_int8(x1, x2, zp1, m1, sh1, zp2, m2, sh2, zp_out, m_out, sh_out, act_min, act_max):
    """SUB int8, reference_ops::SubElementwise (tflite/kernels/internal/reference/sub.h).

      a = MBQM((x1 - zp1) << 20, m1, sh1);  b = MBQM((x2 - zp2) << 20, m2, sh2)
      out = clamp(MBQM(a - b, m_out, sh_out) + zp_out, act_min, act_max)
    Known deviation when sh_out > 0 (sub_params allows r_out > 1): TFLite still calls
    MultiplyByQuantizedMultiplierSmallerThanOneExp, i.e. RoundingDivideByPOT with a negative
    exponent, which is undefined in C. On the ai-edge-litert 2.3.0 x86-64 wheel that gives
    zp_out ± 1 in the vectorized loop and other values in the scalar tail (see
    test_sub_output_multiplier_above_one_against_tflite). Here sh_out > 0 is applied as
    MBQM's left shift, the arithmetic TFLite intends.
    """
    n = x1.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        a = mbqm((np.int64(x1[i]) - zp1) << ADD_SUB_LEFT_SHIFT, m1, sh1)
        b = mbqm((np.int64(x2[i]) - zp2) << ADD_SUB_LEFT_SHIFT, m2, sh2)
        v = mbqm(a - b, m_out, sh_out) + zp_out
        out[i] = min(max(v, act_min), act_max)
    return out


def mul_params(s1, zp1, s2, zp2, s_out, zp_out) -> tuple:
    """MUL int8 Prepare (tflite/kernels/mul.cc): real = double(float(float(s1 * s2) / s_out)).

    The product and quotient are float32 operations. Returns (zp1, zp2, zp_out, m, sh).
    """
    real = float(_f32(_f32(s1) * _f32(s2)) / _f32(s_out))
    m, sh = quantize_multiplier(real)
    return int(zp1), int(zp2), int(zp_out), m, sh


@kernel
def mul_int8(x1, x2, zp1, zp2, zp_out, m, sh, act_min, act_max):
    """MUL int8, reference_integer_ops::MulElementwise (…/reference/integer_ops/mul.h).

      out = clamp(zp_out + MBQM((x1 - zp1) * (x2 - zp2), m, sh), act_min, act_max)
    The product is at most 255 * 255, far inside int32.
    """
    n = x1.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        prod = (np.int64(x1[i]) - zp1) * (np.int64(x2[i]) - zp2)
        v = zp_out + mbqm(prod, m, sh)
        out[i] = min(max(v, act_min), act_max)
    return out


@kernel
def maximum(x1, x2):
    """MAXIMUM (reference_ops::MaximumMinimumBroadcastSlow with max): plain compare.

    Inputs and output share the quantization (the spec requires it), so no requantization;
    any dtype. x1, x2: 1-D arrays of the output size.
    """
    n = x1.shape[0]
    out = np.empty(n, dtype=x1.dtype)
    for i in range(n):
        out[i] = max(x1[i], x2[i])
    return out


@kernel
def minimum(x1, x2):
    """MINIMUM (reference_ops::MaximumMinimumBroadcastSlow with min): plain compare."""
    n = x1.shape[0]
    out = np.empty(n, dtype=x1.dtype)
    for i in range(n):
        out[i] = min(x1[i], x2[i])
    return out
