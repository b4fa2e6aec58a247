"""A slow scalar twin of gemmlowp's int16 logistic and tanh (fixedpoint.h), one Python int at
a time, written from the C++ definitions independently of kernels/lstm_int.py (which computes
them vectorized into tables)."""


def _wrap16(v: int) -> int:
    return (v + 32768) % 65536 - 32768


def _sat16(v: int) -> int:
    return max(-32768, min(32767, v))


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm(a: int, b: int) -> int:
    if a == b == -32768:
        return 32767
    ab = a * b
    return _wrap16(_c_div(ab + (1 << 14 if ab >= 0 else 1 - (1 << 14)), 1 << 15))


def rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return _wrap16((x >> e) + (1 if (x & mask) > threshold else 0))


def mul_pot(x: int, e: int) -> int:
    if e <= 0:
        return rdbpot(x, -e) if e else x
    threshold = (1 << (15 - e)) - 1
    return 32767 if x > threshold else -32768 if x < -threshold else _wrap16(x << e)


def const(raw32: int) -> int:
    """An int32 constant rounded to int16: RoundingDivideByPOT(raw32, 16) in int32."""
    mask = (1 << 16) - 1
    threshold = (mask >> 1) + (1 if raw32 < 0 else 0)
    return (raw32 >> 16) + (1 if (raw32 & mask) > threshold else 0)


def exp_on_interval(a: int) -> int:
    x = _wrap16(a + (1 << 12))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    inner = mul_pot(_wrap16(srdhm(_wrap16(mul_pot(x4, -2) + x3), const(715827883)) + x2), -1)
    term = const(1895147668)
    return _sat16(term + srdhm(term, _wrap16(x + inner)))


def exp_on_negative(a: int, integer_bits: int) -> int:
    fractional = 15 - integer_bits
    quarter = 1 << (fractional - 2)
    a_mod = _wrap16((a & (quarter - 1)) - quarter)
    result = exp_on_interval(mul_pot(a_mod, integer_bits))
    remainder = _wrap16(a_mod - a)
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084),
                                 (1, 290630308), (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent and remainder & (1 << (fractional + exponent)):
            result = srdhm(result, const(multiplier))
    if integer_bits > 5 and a < const(-(1 << (36 - integer_bits))):
        result = 0
    return 32767 if a == 0 else result


def _half_sum(a: int, b: int) -> int:
    s = a + b
    return _wrap16(_c_div(s + (1 if s >= 0 else -1), 2))


def _reciprocal_f2(d: int) -> int:
    x = _wrap16(const(1515870810) + srdhm(d, const(-1010580540)))
    for _ in range(3):
        x = _wrap16(x + mul_pot(srdhm(x, _wrap16((1 << 13) - srdhm(d, x))), 2))
    return x


def logistic(a: int, integer_bits: int) -> int:
    if a == 0:
        return const(1 << 30)
    magnitude = a if a > 0 else _wrap16(-a)
    e = exp_on_negative(_wrap16(-magnitude), integer_bits)
    positive = mul_pot(_reciprocal_f2(_half_sum(e, 32767)), 1)
    return positive if a > 0 else _wrap16(32767 - positive)


def tanh(a: int, integer_bits: int) -> int:
    if a == 0:
        return 0
    n = a if a < 0 else _wrap16(-a)
    e = exp_on_negative(n, integer_bits + 1)
    t = mul_pot(_wrap16(_reciprocal_f2(_half_sum(e, 32767)) - (1 << 13)), 2)
    return _wrap16(-t) if a < 0 else t
