"""RANDOM_UNIFORM, RANDOM_STANDARD_NORMAL and MULTINOMIAL with TFLite's generator.

TFLite draws from a Philox4x32-10 counter generator (tsl::random::PhiloxRandom) seeded with
(seed, seed2) from the op's options, and keeps it from one invoke to the next. qengine does the
same, so with a non-zero seed the numbers equal TFLite's on every call (floats within the
tolerance of sin/cos/log; uniform floats and multinomial indices exactly) until
`reset_variables()`, which starts the generators again from their seeds, as TFLite does when it
prepares the op again. seed = seed2 = 0 asks for non-deterministic numbers: both then take
their seeds from the operating system, and no two runs agree.
"""

from __future__ import annotations

import secrets

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .indexing import checked_size
from .opdef import op

U32 = np.uint64(0xFFFFFFFF)
W32A, W32B = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)  # key increments per round
M4A, M4B = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)  # round multipliers


class Philox:
    """PhiloxRandom: a 128-bit counter (4 x uint32) and a 64-bit key; each call returns the
    10-round hash of the counter (4 uint32 values) and increments the counter."""

    def __init__(self, seed: int, seed2: int):
        seed, seed2 = seed % (1 << 64), seed2 % (1 << 64)
        self.key = (seed & 0xFFFFFFFF, seed >> 32)
        self.counter = [0, 0, seed2 & 0xFFFFFFFF, seed2 >> 32]

    def _as_int(self) -> int:
        c = self.counter
        return c[0] | c[1] << 32 | c[2] << 64 | c[3] << 96

    def skip(self, count: int) -> None:
        """Advance the counter by `count` calls (a 128-bit add, wrapping)."""
        value = (self._as_int() + count) % (1 << 128)
        self.counter = [(value >> (32 * i)) & 0xFFFFFFFF for i in range(4)]

    def blocks(self, n: int) -> np.ndarray:
        """The next n results, shape [n, 4] uint32 (vectorized, in chunks of 2^16 calls)."""
        chunks = [self._blocks(min(n - i, 1 << 16)) for i in range(0, n, 1 << 16)]
        return np.concatenate(chunks) if chunks else np.zeros((0, 4), np.uint32)

    def _blocks(self, n: int) -> np.ndarray:
        start = self._as_int()
        low = np.uint64(start & ((1 << 64) - 1)) + np.arange(n, dtype=np.uint64)  # wraps
        high = np.uint64(start >> 64) + (low < np.uint64(start & ((1 << 64) - 1))).astype(
            np.uint64)  # the carry of the 128-bit increment
        c = np.stack([low & U32, low >> np.uint64(32), high & U32, high >> np.uint64(32)],
                     axis=1)
        k0, k1 = np.uint64(self.key[0]), np.uint64(self.key[1])
        for round_ in range(10):
            p0, p1 = M4A * c[:, 0], M4B * c[:, 2]  # 32 x 32 -> 64-bit products
            c = np.stack([((p1 >> np.uint64(32)) ^ c[:, 1] ^ k0) & U32, p1 & U32,
                          ((p0 >> np.uint64(32)) ^ c[:, 3] ^ k1) & U32, p0 & U32], axis=1)
            if round_ < 9:
                k0, k1 = (k0 + W32A) & U32, (k1 + W32B) & U32
        self.skip(n)
        return c.astype(np.uint32)


def uint32_to_float(x: np.ndarray) -> np.ndarray:
    """[0, 1): 23 random mantissa bits under the exponent of 1.0, minus 1 (Uint32ToFloat)."""
    bits = (np.uint32(127) << np.uint32(23)) | (x & np.uint32(0x7FFFFF))
    return bits.view(np.float32) - np.float32(1)


def uint64_to_double(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """[0, 1) from 52 bits: the low 20 of x0 and all of x1 (Uint64ToDouble)."""
    mantissa = (x0.astype(np.uint64) & np.uint64(0xFFFFF)) << np.uint64(32) | x1.astype(
        np.uint64)
    return (np.uint64(1023) << np.uint64(52) | mantissa).view(np.float64) - 1.0


def uniform(rng: Philox, size: int) -> np.ndarray:
    """Four floats per call; the unused rest of the last call is dropped, as in TFLite."""
    return uint32_to_float(rng.blocks(-(-size // 4)).reshape(-1))[:size]


def standard_normal(rng: Philox, size: int) -> np.ndarray:
    """Box-Muller on pairs (BoxMullerFloat): u1 = max(float(x0), 1e-7), v = 2 pi float(x1),
    r = sqrt(-2 log u1); the pair is (r sin v, r cos v)."""
    x = rng.blocks(-(-size // 4)).reshape(-1, 2)
    u1 = np.maximum(uint32_to_float(x[:, 0]), np.float32(1e-7))
    v = (2.0 * np.pi * uint32_to_float(x[:, 1]).astype(np.float64)).astype(np.float32)
    r = np.sqrt(np.float32(-2) * np.log(u1))
    return np.stack([np.sin(v) * r, np.cos(v) * r], axis=1).reshape(-1)[:size]


def multinomial(rng: Philox, logits: np.ndarray, samples: int, dtype) -> np.ndarray:
    """Per row, the cumulative exp(logit - max) in double; sample j picks the first class
    whose cumulative sum exceeds u * total, u from two uint32 (Uint64ToDouble). The generator
    skips a fixed 2 * 256 * batch * round_up(samples, 4) calls first and the draws come from
    a copy of the state before the skip (TFLite's GenerateMultinomialNumbers)."""
    batch = logits.shape[0]
    draws = Philox(0, 0)
    draws.key, draws.counter = rng.key, list(rng.counter)
    rng.skip(batch * ((samples + 3) // 4 * 4) * 2 * 256)
    pairs = draws.blocks(-(-batch * samples // 2)).reshape(-1, 2)[:batch * samples]
    u = uint64_to_double(pairs[:, 0], pairs[:, 1]).reshape(batch, samples)
    out = np.empty((batch, samples), dtype)
    for b, row in enumerate(logits):
        finite = np.isfinite(row)
        top = np.float64(row[finite].max()) if finite.any() else np.float64(
            np.finfo(np.float32).min)
        cdf = np.cumsum(np.where(finite, np.exp(row.astype(np.float64) - top), 0.0))
        out[b] = np.searchsorted(cdf, u[b] * cdf[-1], side="right")
    return out


def _generator(ctx: OpContext):
    """The op's generator, kept in the interpreter's Resources (so it persists across runs
    and reset_variables() starts it again)."""
    seed = int(getattr(ctx.options, "seed", 0))
    seed2 = int(getattr(ctx.options, "seed2", 0))
    resources, key = ctx.interpreter.resources, ("philox", id(ctx.op))

    def get() -> Philox:
        if key not in resources.generators:
            if seed == 0 and seed2 == 0:  # TFLite: seeds from the OS, not reproducible
                resources.generators[key] = Philox(secrets.randbits(64), secrets.randbits(64))
            else:
                resources.generators[key] = Philox(seed, seed2)
        return resources.generators[key]

    return get


def _shaped(ctx: OpContext, draw) -> Prepared:
    ctx.expect_inputs(1)
    shape = ctx.input(0)
    ctx.expect_dtype(shape, "int32")
    ctx.expect_rank(shape, 1)
    if ctx.outputs[0].dtype != "float32":
        raise ctx.unsupported(f"{ctx.outputs[0].dtype} output (TFLite draws float32 only)")
    get = _generator(ctx)

    def dims(values) -> tuple[int, ...]:
        out = tuple(int(v) for v in np.ravel(values))
        if any(d < 0 for d in out):
            raise ctx.invalid(f"shape {list(out)} has a negative size")
        return checked_size(ctx.invalid, out, "shape")

    static = dims(shape.value) if shape.value is not None else None

    def run(values):
        out_shape = static or dims(values)
        return draw(get(), int(np.prod(out_shape, dtype=np.int64))).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, static, "float32")], foldable=False)


@op("RANDOM_UNIFORM")
def random_uniform(ctx: OpContext) -> Prepared:
    return _shaped(ctx, uniform)


@op("RANDOM_STANDARD_NORMAL")
def random_standard_normal(ctx: OpContext) -> Prepared:
    return _shaped(ctx, standard_normal)


@op("MULTINOMIAL")
def multinomial_op(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    logits, count = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(logits, "float32")
    ctx.expect_rank(logits, 2)
    ctx.expect_dtype(count, "int32")
    dtype = ctx.outputs[0].dtype
    if dtype not in ("int32", "int64"):
        raise ctx.invalid(f"output is {dtype}; MULTINOMIAL writes int32 or int64")
    if logits.shape[1] < 1:
        raise ctx.invalid("logits need at least one class")
    get = _generator(ctx)
    static = int(np.ravel(count.value)[0]) if count.value is not None else None
    if static is not None and static < 0:
        raise ctx.invalid(f"num_samples {static} must be >= 0")

    def run(values, n):
        samples = static if static is not None else int(np.ravel(n)[0])
        if samples < 0:
            raise ctx.invalid(f"num_samples {samples} must be >= 0")
        checked_size(ctx.invalid, (values.shape[0], samples), "output shape")
        return multinomial(get(), values, samples, np.dtype(dtype))

    shape = None if static is None else (logits.shape[0], static)
    return Prepared(run, [ctx.output_spec(0, shape, dtype)], foldable=False)
