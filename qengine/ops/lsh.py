"""LSH_PROJECTION: locality-sensitive hash signatures of the input's rows.

Each (hash function i, bit j) has a float seed; the bit is the sign of
sum over input rows r of weight[r] * int64(Fingerprint64(seed bytes + row bytes)), summed in
double. Sparse output: per hash function, its bits as an integer plus i * 2^bits; dense: the
bits themselves. Fingerprint64 is FarmHash's (farmhashna::Hash64), reproduced below.
"""

from __future__ import annotations

import struct

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .opdef import op

MASK = (1 << 64) - 1
K0, K1, K2 = 0xC3A5C85C97CB3127, 0xB492B66FBE98F273, 0x9AE16A3B2F90404F
SPARSE, DENSE = 1, 2


def _fetch64(s: bytes, i: int) -> int:
    return int.from_bytes(s[i:i + 8], "little")


def _fetch32(s: bytes, i: int) -> int:
    return int.from_bytes(s[i:i + 4], "little")


def _rotate(value: int, shift: int) -> int:
    return value if shift == 0 else ((value >> shift) | (value << (64 - shift))) & MASK


def _shift_mix(value: int) -> int:
    return value ^ (value >> 47)


def _hash_len16(u: int, v: int, mul: int) -> int:
    a = ((u ^ v) * mul) & MASK
    a ^= a >> 47
    b = ((v ^ a) * mul) & MASK
    b ^= b >> 47
    return (b * mul) & MASK


def _len0to16(s: bytes) -> int:
    n = len(s)
    if n >= 8:
        mul = K2 + n * 2
        a = (_fetch64(s, 0) + K2) & MASK
        b = _fetch64(s, n - 8)
        c = (_rotate(b, 37) * mul + a) & MASK
        d = ((_rotate(a, 25) + b) * mul) & MASK
        return _hash_len16(c, d, mul)
    if n >= 4:
        mul = K2 + n * 2
        return _hash_len16(n + (_fetch32(s, 0) << 3), _fetch32(s, n - 4), mul)
    if n > 0:
        y = s[0] + (s[n >> 1] << 8)
        z = n + (s[n - 1] << 2)
        return (_shift_mix(((y * K2) ^ (z * K0)) & MASK) * K2) & MASK
    return K2


def _len17to32(s: bytes) -> int:
    n = len(s)
    mul = K2 + n * 2
    a = (_fetch64(s, 0) * K1) & MASK
    b = _fetch64(s, 8)
    c = (_fetch64(s, n - 8) * mul) & MASK
    d = (_fetch64(s, n - 16) * K2) & MASK
    return _hash_len16((_rotate((a + b) & MASK, 43) + _rotate(c, 30) + d) & MASK,
                       (a + _rotate((b + K2) & MASK, 18) + c) & MASK, mul)


def _len33to64(s: bytes) -> int:
    n = len(s)
    mul = K2 + n * 2
    a = (_fetch64(s, 0) * K2) & MASK
    b = _fetch64(s, 8)
    c = (_fetch64(s, n - 8) * mul) & MASK
    d = (_fetch64(s, n - 16) * K2) & MASK
    y = (_rotate((a + b) & MASK, 43) + _rotate(c, 30) + d) & MASK
    z = _hash_len16(y, (a + _rotate((b + K2) & MASK, 18) + c) & MASK, mul)
    e = (_fetch64(s, 16) * mul) & MASK
    f = _fetch64(s, 24)
    g = ((y + _fetch64(s, n - 32)) * mul) & MASK
    h = ((z + _fetch64(s, n - 24)) * mul) & MASK
    return _hash_len16((_rotate((e + f) & MASK, 43) + _rotate(g, 30) + h) & MASK,
                       (e + _rotate((f + a) & MASK, 18) + g) & MASK, mul)


def _weak_hash32(s: bytes, i: int, a: int, b: int) -> tuple[int, int]:
    w, x, y, z = (_fetch64(s, i + 8 * k) for k in range(4))
    a = (a + w) & MASK
    b = _rotate((b + a + z) & MASK, 21)
    c = a
    a = (a + x + y) & MASK
    b = (b + _rotate(a, 44)) & MASK
    return (a + z) & MASK, (b + c) & MASK


def fingerprint64(s: bytes) -> int:
    """FarmHash Fingerprint64 (farmhashna::Hash64) of a byte string, as an unsigned int."""
    n = len(s)
    if n <= 16:
        return _len0to16(s)
    if n <= 32:
        return _len17to32(s)
    if n <= 64:
        return _len33to64(s)
    x, y = 81, (81 * K1 + 113) & MASK
    z = (_shift_mix((y * K2 + 113) & MASK) * K2) & MASK
    v, w = (0, 0), (0, 0)
    x = (x * K2 + _fetch64(s, 0)) & MASK
    end, last64, i = ((n - 1) // 64) * 64, n - 64, 0
    while True:
        x = (_rotate((x + y + v[0] + _fetch64(s, i + 8)) & MASK, 37) * K1) & MASK
        y = (_rotate((y + v[1] + _fetch64(s, i + 48)) & MASK, 42) * K1) & MASK
        x ^= w[1]
        y = (y + v[0] + _fetch64(s, i + 40)) & MASK
        z = (_rotate((z + w[0]) & MASK, 33) * K1) & MASK
        v = _weak_hash32(s, i, (v[1] * K1) & MASK, (x + w[0]) & MASK)
        w = _weak_hash32(s, i + 32, (z + w[1]) & MASK, (y + _fetch64(s, i + 16)) & MASK)
        z, x = x, z
        i += 64
        if i == end:
            break
    mul = K1 + ((z & 0xFF) << 1)
    i = last64
    w = ((w[0] + ((n - 1) & 63)) & MASK, w[1])
    v = ((v[0] + w[0]) & MASK, v[1])
    w = ((w[0] + v[0]) & MASK, w[1])
    x = (_rotate((x + y + v[0] + _fetch64(s, i + 8)) & MASK, 37) * mul) & MASK
    y = (_rotate((y + v[1] + _fetch64(s, i + 48)) & MASK, 42) * mul) & MASK
    x ^= (w[1] * 9) & MASK
    y = (y + v[0] * 9 + _fetch64(s, i + 40)) & MASK
    z = (_rotate((z + w[0]) & MASK, 33) * mul) & MASK
    v = _weak_hash32(s, i, (v[1] * mul) & MASK, (x + w[0]) & MASK)
    w = _weak_hash32(s, i + 32, (z + w[1]) & MASK, (y + _fetch64(s, i + 16)) & MASK)
    z, x = x, z
    return _hash_len16((_hash_len16(v[0], w[0], mul) + _shift_mix(y) * K0 + z) & MASK,
                       (_hash_len16(v[1], w[1], mul) + x) & MASK, mul)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def sign_bit(rows: list[bytes], weights, seed: np.float32) -> int:
    """1 if sum of weight * int64(Fingerprint64(seed bytes + row bytes)) > 0 (in double)."""
    prefix = struct.pack("<f", float(seed))
    score = 0.0
    for r, row in enumerate(rows):
        value = float(_signed(fingerprint64(prefix + row)))
        score += value if weights is None else float(weights[r]) * value
    return int(score > 0)


@op("LSH_PROJECTION")
def lsh_projection(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2, 3)
    seeds, x = ctx.input(0), ctx.input(1)
    weight = ctx.optional_input(2)
    ctx.expect_dtype(seeds, "float32")
    ctx.expect_dtype(x, "float32", "int8", "uint8", "int16", "int32", "int64", "bool")
    if len(seeds.shape) != 2 or seeds.shape[1] > 32 or not x.shape:
        raise ctx.invalid(f"hash seeds {seeds.shape} must be [functions, bits <= 32] and the "
                          f"input of rank >= 1")
    if weight is not None:
        ctx.expect_dtype(weight, "float32")
        if weight.shape != (x.shape[0],):
            raise ctx.invalid(f"weight {weight.shape}; expected ({x.shape[0]},)")
    kind = int(getattr(ctx.options, "type", 0))
    if kind not in (SPARSE, DENSE):
        raise ctx.invalid(f"projection type {kind} is neither SPARSE nor DENSE")
    functions, bits = seeds.shape
    shape = (functions,) if kind == SPARSE else (functions * bits,)

    def run(seed_values, values, weights=None):
        data = np.ascontiguousarray(values).tobytes()
        size = len(data) // values.shape[0] if values.shape[0] else 0
        rows = [data[r * size:(r + 1) * size] for r in range(values.shape[0])]
        table = [[sign_bit(rows, weights, s) for s in row] for row in seed_values]
        if kind == DENSE:
            return np.array(table, np.int32).reshape(-1)
        out = [int("".join(map(str, row)) or "0", 2) + i * (1 << bits)
               for i, row in enumerate(table)]
        return np.array(out, np.int64).astype(np.int32)  # int32 arithmetic wraps, as in C

    return Prepared(run, [ctx.output_spec(0, shape, "int32")])
