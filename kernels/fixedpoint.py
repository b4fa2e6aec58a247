"""TFLite / gemmlowp fixed-point requantization primitives.

`quantize_multiplier` runs at prepare time in plain Python; the others are jitted scalar
functions that kernels call in their inner loops. Scalars are carried as int64 inside Numba
and hold int32 values wherever the C code has int32 (wrapping is done explicitly).

Sources: tflite/kernels/internal/quantization_util.cc (QuantizeMultiplier),
tflite/kernels/internal/common.cc (MultiplyByQuantizedMultiplier, default double-rounding
build, TFLITE_SINGLE_ROUNDING = 0), gemmlowp fixedpoint/fixedpoint.h.
"""

import math

import numpy as np
from numba.core import types
from numba.extending import overload
from qengine.kernels.jit import inline_kernel, kernel

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "mbqm",
    "mbqm_array",
    "mbqm_int64",
    "mbqm_int64_params",
    "mbqm_int64_reduced",
    "quantize_multiplier",
    "quantize_multipliers",
    "rdbpot",
    "requantize",
    "requantize_accumulator",
    "round_half_away",
    "round_half_away_int32",
    "srdhm",
    "wrap_int32",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _round_half_away_py(x: float) -> int:
    """std::round on a double: nearest integer, ties away from zero."""
    t = math.trunc(x)
    if abs(x - t) >= 0.5:  # x - trunc(x) is exact in binary floating point
        t += 1 if x > 0 else -1
    return int(t)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real ≈ M * 2^(shift - 31), M in [2^30, 2^31).

    Returns (M, shift) with shift > 0 meaning a left shift. Multipliers too small to represent
    (shift < -31) are flushed to (0, 0), as TFLite does.
    """
    real = float(real)
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)  # real = q * 2^shift, 0.5 <= |q| < 1
    q_fixed = _round_half_away_py(q * 2.0**31)  # q * 2^31 is exact, so ties are exact too
    assert abs(q_fixed) <= 2**31
    if q_fixed == 2**31:  # q rounded up to 1.0
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(q_fixed), int(shift)


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """`quantize_multiplier` over an array of reals (per-channel scales), vectorised.

    Same steps as the scalar version in float64 NumPy (a per-channel model has tens of
    thousands of channels; the Python loop cost ~0.1 s of `prepare`). Non-finite reals take
    the scalar path, which raises as before.
    """
    reals = np.asarray(reals, dtype=np.float64).ravel()
    if not np.isfinite(reals).all():
        pairs = [quantize_multiplier(r) for r in reals]  # raises on inf/nan
        return (np.array([m for m, _ in pairs], dtype=np.int32),
                np.array([s for _, s in pairs], dtype=np.int32))
    q, shift = np.frexp(reals)  # reals = q * 2^shift, 0.5 <= |q| < 1 (q = 0 for 0)
    scaled = q * 2.0**31  # exact: a power-of-two scaling
    q_fixed = np.trunc(scaled)
    q_fixed += np.sign(scaled) * (np.abs(scaled - q_fixed) >= 0.5)  # ties away from zero
    q_fixed = q_fixed.astype(np.int64)
    rounded_up = q_fixed == 2**31  # q rounded up to 1.0
    q_fixed[rounded_up] //= 2
    shift = shift.astype(np.int64) + rounded_up
    flushed = (shift < -31) | (reals == 0.0)
    q_fixed[flushed] = 0
    shift[flushed] = 0
    return q_fixed.astype(np.int32), shift.astype(np.int32)


@kernel
def wrap_int32(x):
    """Two's-complement wrap of an integer to int32 (what a C int32 store does)."""
    v = np.int64(x) & np.int64(0xFFFFFFFF)
    if v >= np.int64(0x80000000):
        v -= np.int64(0x100000000)
    return v


@kernel
def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul(int32 a, int32 b).

    round(a*b / 2^31) with ties toward +inf (the nudge 1 - 2^30 for negative products makes
    negative ties round toward zero); the one overflow case INT32_MIN*INT32_MIN
    saturates to INT32_MAX.
    """
    a = np.int64(a)
    b = np.int64(b)
    if a == INT32_MIN and b == INT32_MIN:
        return np.int64(INT32_MAX)
    ab = a * b
    nudge = np.int64(1 << 30) if ab >= 0 else np.int64(1 - (1 << 30))
    v = ab + nudge
    # C division truncates toward zero: (ab + nudge) / 2^31
    if v >= 0:
        return v >> 31
    return -((-v) >> 31)


@kernel
def rdbpot(x, exponent):
    """gemmlowp RoundingDivideByPOT(x, exponent): x / 2^exponent, ties away from zero, 0 <= e <= 31."""
    x = np.int64(x)
    e = np.int64(exponent)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (np.int64(1) if x < 0 else np.int64(0))
    return (x >> e) + (np.int64(1) if remainder > threshold else np.int64(0))


@kernel
def mbqm(x, multiplier, shift):
    """TFLite MultiplyByQuantizedMultiplier(int32 x, int32 M, int shift), double-rounding build.

    out = RDBPOT(SRDHM(int32(x * 2^left), M), right), left = max(shift, 0), right = max(-shift, 0).
    The left shift wraps to int32 like the C multiplication does on two's-complement hardware.
    """
    shift = np.int64(shift)
    left = shift if shift > 0 else np.int64(0)
    right = np.int64(0) if shift > 0 else -shift
    if left > 31:  # x * 2^left ≡ 0 (mod 2^32)
        shifted = np.int64(0)
    else:
        shifted = wrap_int32(np.int64(x) << left)
    return rdbpot(srdhm(shifted, multiplier), right)


@inline_kernel
def _reduced_multiplier(multiplier):
    """The 16-bit multiplier of the int64 MBQM overload: round(M / 2^16), 0x7FFF from
    0x7FFF0000 up (where the rounding would reach 2^15)."""
    m = np.int64(multiplier)
    return (m + (1 << 15)) >> 16 if m < 0x7FFF0000 else np.int64(0x7FFF)


@inline_kernel
def mbqm_int64_reduced(x, reduced, total):
    """`mbqm_int64` with its multiplier already reduced (`mbqm_int64_params`):
    int32((x * reduced + 2^(total-1)) >> total), total = 15 - shift. Branch-free, so a loop of
    it over channels vectorizes."""
    rounding = np.int64(1) << (total - 1)
    return np.int64(np.int32((np.int64(x) * reduced + rounding) >> total))  # int32 cast wraps


@kernel
def mbqm_int64(x, multiplier, shift):
    """TFLite MultiplyByQuantizedMultiplier(int64 x, int32 M, int shift) (int16 activations).

    Uses a 16-bit multiplier rm = round(M / 2^16) (saturated to 0x7FFF) and one rounding
    with ties toward +inf: (x*rm + 2^(total-1)) >> total, total = 15 - shift. The int32
    result cast wraps. Valid for shift in [-31, 7] and |x| < 2^47 (TFLite's DCHECKs).
    """
    total = np.int64(15) - np.int64(shift)
    return mbqm_int64_reduced(x, _reduced_multiplier(multiplier), total)


def mbqm_int64_params(multiplier, shift) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (reduced multiplier, total shift) int64 arrays for `mbqm_int64_reduced`,
    made once at prepare time."""
    reduced = [_reduced_multiplier.py_func(int(m))  # (from Python)
               for m in np.asarray(multiplier).ravel()]
    total = 15 - np.asarray(shift, np.int64).ravel()
    return np.array(reduced, np.int64), np.ascontiguousarray(total)


@kernel
def round_half_away(x):
    """std::round on a float64 → int64: nearest integer, ties away from zero."""
    t = np.trunc(x)
    if abs(x - t) >= 0.5:  # exact: x - trunc(x) has no rounding error
        t += 1.0 if x > 0 else -1.0
    return np.int64(t)


@kernel
def requantize(acc, multiplier, shift, out_zp, act_min, act_max):
    """The int8 conv/FC/matmul epilogue: clamp(int32(MBQM(acc, M, shift) + out_zp), act_min, act_max).

    The `+ out_zp` is an int32 addition in TFLite, so it wraps like one.
    """
    v = wrap_int32(mbqm(acc, multiplier, shift) + np.int64(out_zp))
    return min(max(v, np.int64(act_min)), np.int64(act_max))


def requantize_accumulator(acc, bias, multiplier, shift, out_zp, act_min, act_max):
    """The epilogue of TFLite's per-channel integer conv/depthwise/transpose-conv reference
    kernels, chosen when a kernel compiles by the width of its bias (= its accumulator):

    - int32 (int8 kernels): clamp(int32(MBQM(int32(acc + bias), M, shift) + out_zp))
    - int64 (16x8 kernels): clamp(MBQM_int64(acc + bias, M, shift)); the int16 overloads
      have no output offset (16x8 outputs have zero point 0), so out_zp is not read.
    """
    raise NotImplementedError("jitted only")


@overload(requantize_accumulator, jit_options={"cache": True})
def _requantize_accumulator_impl(acc, bias, multiplier, shift, out_zp, act_min, act_max):
    if isinstance(bias, types.Integer) and bias.bitwidth == 64:
        def requantize_int64(acc, bias, multiplier, shift, out_zp, act_min, act_max):
            v = mbqm_int64(np.int64(acc) + np.int64(bias), multiplier, shift)
            return min(max(v, np.int64(act_min)), np.int64(act_max))
        return requantize_int64

    def requantize_int32(acc, bias, multiplier, shift, out_zp, act_min, act_max):
        total = wrap_int32(np.int64(acc) + np.int64(bias))
        return requantize(total, multiplier, shift, out_zp, act_min, act_max)
    return requantize_int32


@kernel
def round_half_away_int32(x):
    """static_cast<int32_t>(std::round(x)) for a float64, as x86-64 compiles it.

    The conversion (cvttsd2si) turns anything outside int32, and NaN, into INT32_MIN.
    """
    if not (-2147483649.0 < x < 2147483648.0):  # also catches NaN
        return np.int64(INT32_MIN)
    r = round_half_away(x)
    if r > INT32_MAX or r < INT32_MIN:
        return np.int64(INT32_MIN)
    return r


def mbqm_array(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """`mbqm` on a whole NumPy array (prepare-time tables and vectorized ops; not jitted).

    x holds int32 values (any integer dtype); the result is int64 holding int32 values:
      SRDHM(a, M) = trunc((a*M + (a*M >= 0 ? 2^30 : 1 - 2^30)) / 2^31)    (M > 0, no saturation)
      RDBPOT(v, e) = (v >> e) + ((v & (2^e-1)) > ((2^e-1) >> 1) + (v < 0))
    Branch-free in NumPy: 1 - 2^30 = 2^30 - (2^31 - 1), and trunc(v / 2^31) =
    (v + (v < 0 ? 2^31 - 1 : 0)) >> 31.
    """
    left, right = min(max(shift, 0), 32), max(-shift, 0)  # x << (32 or more) wraps to 0
    a = np.asarray(x).astype(np.int64) << left
    a = ((a + 2**31) & 0xFFFFFFFF) - 2**31  # the int32 left shift wraps
    product = a * np.int64(multiplier)
    v = product + (1 << 30)
    v -= (product < 0) * np.int64((1 << 31) - 1)
    v += (v < 0) * np.int64((1 << 31) - 1)
    high = v >> 31
    if right == 0:
        return high
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + ((high & mask) > threshold)
