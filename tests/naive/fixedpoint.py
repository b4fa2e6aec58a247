"""The fixed-point primitives of gemmlowp and TFLite with Python ints, written from the C code
(one copy for every naive twin)."""

from __future__ import annotations

import math
from fractions import Fraction

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def c_div(a: int, b: int) -> int:
    """C/C++ integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def wrap(x: int, bits: int) -> int:
    """Two's-complement wrap to a signed `bits`-bit integer."""
    half = 1 << (bits - 1)
    return (x + half) % (1 << bits) - half


def wrap32(x: int) -> int:
    return wrap(int(x), 32)


def clamp(x: int, lo: int, hi: int) -> int:
    return min(max(x, lo), hi)


def round_away(x: float) -> int:
    """std::round / roundf: nearest integer, ties away from zero (x is an exact binary float)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def round_away_exact(num: Fraction | float) -> int:
    """Exact rational -> nearest int, ties away from zero."""
    num = Fraction(num)
    sign = 1 if num >= 0 else -1
    return sign * math.floor(abs(num) + Fraction(1, 2))


def srdhm(a: int, b: int, bits: int = 32) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul for int32 (bits=32) or int16 (bits=16)."""
    lo = -(1 << (bits - 1))
    if a == lo and b == lo:
        return -lo - 1
    ab = a * b
    nudge = (1 << (bits - 2)) if ab >= 0 else 1 - (1 << (bits - 2))
    return wrap(c_div(ab + nudge, 1 << (bits - 1)), bits)


def rdbpot(x: int, exponent: int, bits: int = 32) -> int:
    """gemmlowp RoundingDivideByPOT; the mask is computed in the integer type (`bits`)."""
    mask = wrap((1 << exponent) - 1, bits)
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return wrap((x >> exponent) + (1 if remainder > threshold else 0), bits)


def mbqm(x: int, m: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier(int32), double rounding: RDBPOT(SRDHM(x << left, M), right)."""
    left = max(shift, 0)
    right = max(-shift, 0)
    return rdbpot(srdhm(wrap(x * (1 << left), 32), m), right)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier(double): (M, shift) with real = M * 2^(shift - 31), M in [2^30, 2^31)."""
    if real == 0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_away_exact(Fraction(q) * 2**31)
    if q_fixed == 2**31:
        q_fixed, shift = 2**30, shift + 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift
