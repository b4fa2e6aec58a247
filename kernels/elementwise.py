"""Int8 elementwise kernels: ADD, SUB, MUL, MAXIMUM, MINIMUM and the unary ABS and RSQRT
(TFLite reference).

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
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic
from qengine.kernels import threads as pool
from qengine.kernels.emit import I8, I64, addr, const64, counted_loop
from qengine.kernels.fixedpoint import (
    INT32_MAX,
    mbqm,
    mbqm_array,
    quantize_multiplier,
    srdhm,
    wrap_int32,
)
from qengine.kernels.jit import inline_kernel, kernel, prange
from qengine.kernels.softmax import _count_leading_zeros32, saturating_rounding_multiply_by_pot

__all__ = [
    "ADD_SUB_LEFT_SHIFT",
    "RSQRT_SHIFT",
    "abs_params",
    "abs_table_int8",
    "add_int8",
    "add_params",
    "as_4d",
    "broadcast_row",
    "broadcasts_to",
    "inv_sqrt_multiplier_exp",
    "lookup_pair_broadcast_int8",
    "lookup_pair_int8",
    "lookup_pair_padded_int8",
    "lookup_value_int8",
    "maximum",
    "minimum",
    "mul_int8",
    "mul_params",
    "rsqrt_params",
    "rsqrt_table_int8",
    "sub_int8",
    "sub_params",
    "trailing_period",
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


# ADD, SUB and MUL run once per op, at prepare time, on the 256 x 256 input pairs
# (qengine/ops/elementwise_int._pair_table) and never per inference, so they are NumPy over
# whole arrays with `mbqm_array` (the same int32 arithmetic as the jitted `mbqm`, pinned by
# tests/test_fixedpoint.py) instead of Numba kernels: ~0.6 s less compile on a first run.
# int64 intermediates hold every value exactly, and mbqm_array wraps to int32 where MBQM does.


def _clamp_int8(v: np.ndarray, act_min, act_max) -> np.ndarray:
    """clamp(v, act_min, act_max) stored as int8 (act_min/act_max lie in int8)."""
    return np.clip(v, act_min, act_max).astype(np.int8)


def _rescaled_input(x, zp, m, sh) -> np.ndarray:
    """MBQM((x - zp) << 20, m, sh) for int8 x, looked up in a table of all 256 values (the
    same numbers as computing it per element, in a tenth of the time)."""
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise TypeError(f"ADD/SUB int8 inputs must be int8 arrays, not {x.dtype}")
    all_int8 = np.arange(-128, 128, dtype=np.int64)
    table = mbqm_array((all_int8 - zp) << ADD_SUB_LEFT_SHIFT, m, sh)
    return table[x.astype(np.intp) + 128]


def _add_sub_int8(x1, x2, sign, zp1, m1, sh1, zp2, m2, sh2, zp_out, m_out, sh_out,
                  act_min, act_max) -> np.ndarray:
    a = _rescaled_input(x1, zp1, m1, sh1)
    b = _rescaled_input(x2, zp2, m2, sh2)
    return _clamp_int8(mbqm_array(a + sign * b, m_out, sh_out) + zp_out, act_min, act_max)


def add_int8(x1, x2, zp1, m1, sh1, zp2, m2, sh2, zp_out, m_out, sh_out, act_min, act_max):
    """ADD int8, reference_integer_ops::AddFunc (tflite/kernels/internal/reference/integer_ops/add.h).

    x1, x2: int8 1-D arrays of the output size (broadcast and flattened by the caller).
      a = MBQM((x1 - zp1) << 20, m1, sh1);  b = MBQM((x2 - zp2) << 20, m2, sh2)
      out = clamp(MBQM(a + b, m_out, sh_out) + zp_out, act_min, act_max)
    |x - zp| <= 255, so (x - zp) << 20 < 2^28 and a + b cannot overflow int32.
    """
    return _add_sub_int8(x1, x2, 1, zp1, m1, sh1, zp2, m2, sh2, zp_out, m_out, sh_out,
                         act_min, act_max)


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
    return _add_sub_int8(x1, x2, -1, zp1, m1, sh1, zp2, m2, sh2, zp_out, m_out, sh_out,
                         act_min, act_max)


def mul_params(s1, zp1, s2, zp2, s_out, zp_out) -> tuple:
    """MUL int8 Prepare (tflite/kernels/mul.cc): real = double(float(float(s1 * s2) / s_out)).

    The product and quotient are float32 operations. Returns (zp1, zp2, zp_out, m, sh).
    """
    real = float(_f32(_f32(s1) * _f32(s2)) / _f32(s_out))
    m, sh = quantize_multiplier(real)
    return int(zp1), int(zp2), int(zp_out), m, sh


def mul_int8(x1, x2, zp1, zp2, zp_out, m, sh, act_min, act_max):
    """MUL int8, reference_integer_ops::MulElementwise (…/reference/integer_ops/mul.h).

      out = clamp(zp_out + MBQM((x1 - zp1) * (x2 - zp2), m, sh), act_min, act_max)
    The product is at most 255 * 255, far inside int32.
    """
    prod = (np.asarray(x1, np.int64) - zp1) * (np.asarray(x2, np.int64) - zp2)
    return _clamp_int8(mbqm_array(prod, m, sh) + zp_out, act_min, act_max)


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


# -------------------------------------------------------------- unary int8: ABS and RSQRT
#
# Both outputs depend only on the input value, so prepare builds a 256-entry table (entry k for
# input k - 128) with the kernel's exact integer arithmetic and run is a table lookup.


def abs_params(s_in, zp_in, s_out, zp_out) -> tuple:
    """ABS int8 Prepare (tflite/kernels/elementwise.cc GenericPrepare): the output is rescaled
    only when the float32 scales differ, by QuantizeMultiplier(double(float(s_in / s_out))).

    Returns (zp_in, zp_out, rescale, m, sh).
    """
    s_in, s_out = _f32(s_in), _f32(s_out)
    rescale = bool(s_in != s_out)
    m, sh = quantize_multiplier(float(_f32(s_in / s_out))) if rescale else (0, 0)
    return int(zp_in), int(zp_out), rescale, m, sh


def abs_table_int8(zp_in, zp_out, rescale, m, sh) -> np.ndarray:
    """AbsEvalQuantized<int8_t>: d = |v - zp_in|;
    out = clamp((rescale ? MBQM(d, m, sh) : d) + zp_out, -128, 127)."""
    table = np.empty(256, dtype=np.int8)
    for v in range(-128, 128):
        d = abs(v - zp_in)
        scaled = int(mbqm(d, m, sh)) if rescale else d
        table[v + 128] = min(max(scaled + zp_out, -128), 127)
    return table


# RsqrtEvalQuantizedInt8 works on 1/sqrt(v - zp_in) scaled by 2^20 ("to keep value integer").
RSQRT_SHIFT = 20


def rsqrt_params(s_in, s_out) -> tuple[int, int]:
    """RSQRT int8 Prepare (elementwise.cc SetRsqrtOutputMultiplier): the real multiplier is
    1.0 / (sqrtf(s_in) * s_out), the product in float32 and the division in double.
    Returns (m, sh) from QuantizeMultiplier."""
    product = _f32(np.sqrt(_f32(s_in)) * _f32(s_out))
    return quantize_multiplier(1.0 / float(product))


@kernel
def inv_sqrt_multiplier_exp(value):
    """GetInvSqrtQuantizedMultiplierExp(value, reverse_shift=-1) (tflite/kernels/internal/common.h).

    Returns (M, shift) with M * 2^(shift - 31) ~ 1/sqrt(value) (shift > 0 is a left shift).
    value is normalised by pairs of bits into [2^27, 2^29) as an F3 (3 integer bits), and five
    Newton-Raphson steps x <- 1.5 x - (value/2) x^3 from x = 1 run in gemmlowp fixed point;
    the result is multiplied by sqrt(2)/2 into an F0. Values 0 and 1 give (INT32_MAX, 0).
    """
    value = np.int64(value)
    if value <= 1:
        return np.int64(INT32_MAX), np.int64(0)
    shift = np.int64(11)
    while value >= (1 << 29):
        value //= 4
        shift += 1
    left_shift_bit_pairs = (_count_leading_zeros32(value) - 1) // 2 - 1
    shift -= left_shift_bit_pairs
    value <<= 2 * left_shift_bit_pairs
    half_input = saturating_rounding_multiply_by_pot(value >> 1, -1)  # F3
    half_three = np.int64((1 << 28) + (1 << 27))  # 1.5 in F3
    x = np.int64(1 << 28)  # 1.0 in F3
    for _ in range(5):
        x3 = saturating_rounding_multiply_by_pot(srdhm(srdhm(x, x), x), 6)  # F9 -> F3
        step = wrap_int32(srdhm(half_three, x) - srdhm(half_input, x3))  # F6
        x = saturating_rounding_multiply_by_pot(step, 3)  # F6 -> F3
    x = srdhm(x, 1518500250)  # times sqrt(2)/2 (F0)
    if shift < 0:
        x = wrap_int32(x << -shift)
        shift = np.int64(0)
    return x, -shift


def rsqrt_table_int8(zp_in, zp_out, m, sh) -> np.ndarray:
    """RsqrtEvalQuantizedInt8 (elementwise.cc), per value d = v - zp_in >= 0:

      d == 0:  127 (the output maximum, whatever zp_out is)
      else:    (M, s) = GetInvSqrtQuantizedMultiplierExp(d, -1)
               data = MBQM(1, M, s + 20)                          # 2^20 / sqrt(d)
               out  = clamp(MBQM(data, m, sh - 20) + zp_out, -128, 127)
    Entries for v < zp_in are 0: TFLite rejects such inputs at run time.
    """
    table = np.zeros(256, dtype=np.int8)
    for v in range(int(zp_in), 128):
        d = v - int(zp_in)
        if d == 0:
            table[v + 128] = 127
            continue
        inv_sqrt, inv_shift = inv_sqrt_multiplier_exp(d)
        data = mbqm(1, inv_sqrt, inv_shift + RSQRT_SHIFT)
        out = int(mbqm(data, m, sh - RSQRT_SHIFT)) + int(zp_out)
        table[v + 128] = min(max(out, -128), 127)
    return table


# ------------------------------------------------------------------ pair tables (any int8 op)


def _lookup_run_codegen(context, builder, signature, args):
    table_addr, then_addr, x_addr, y_addr, a_addr, out_addr, n, chained = args
    table, then, x, y, a, out = (builder.inttoptr(v, I8.as_pointer()) for v in (
        table_addr, then_addr, x_addr, y_addr, a_addr, out_addr))

    def entry(t, u, v):
        """t[(u + 128) * 256 + v + 128] of int8 u, v: from the entry of the pair (0, 0)."""
        index = builder.add(builder.shl(builder.sext(u, I64), const64(8)), builder.sext(v, I64))
        return builder.load(builder.gep(t, [builder.add(index, const64(128 * 256 + 128))]))

    def pairs(second):
        def step(i):
            value = entry(table, builder.load(builder.gep(x, [i])),
                          builder.load(builder.gep(y, [i])))
            if second:
                value = entry(then, builder.load(builder.gep(a, [i])), value)
            builder.store(value, builder.gep(out, [i]))
        counted_loop(builder, const64(0), n, "chain" if second else "pairs", step)

    with builder.if_else(builder.icmp_unsigned("!=", chained, ir.Constant(chained.type, 0))) \
            as (two, one):
        with two:
            pairs(True)
        with one:
            pairs(False)
    return context.get_dummy_value()


@intrinsic
def _lookup_run(typingctx, table_addr, then_addr, x_addr, y_addr, a_addr, out_addr, n, chained):
    """out[i] = T(x[i], y[i]) for i < n, T(u, v) = table[(u + 128) * 256 + v + 128]; chained:
    then[(a[i] + 128) * 256 + T(x[i], y[i]) + 128] (int8 arrays by address; `table` of 65536,
    `then` of 256 per row and a row for every a[i] + 128: `_pairs_fit` checks).
    LLVM IR rather than a Numba loop: inside a split's prange Numba's loop ran 2-3x slower than
    alone (it reloads the arrays' fields after every byte it stores)."""
    sig = types.void(*[types.int64] * 7, types.boolean)
    return sig, _lookup_run_codegen


@inline_kernel
def _rows_cover(then, a):
    """`then` has a row of 256 for each code a + 128 (a full table of 65536 for any int8)."""
    if then.size == 0 or then.size == 65536:
        return True
    if then.size % 256 != 0:
        return False
    top = -128
    for v in a:
        top = max(top, np.int64(v))
    return (top + 128) * 256 < then.size


@inline_kernel
def _pairs_fit(table, x, y, out, then, a, i0, i1):
    return (table.size == 65536 and x.size == out.size and y.size > 0 and a.size > 0
            and 0 <= i0 <= i1 <= out.size and _rows_cover(then, a))


@kernel
def lookup_pairs(table, x, y, out, then, a, i0, i1):
    """out[i] = T(x[i], y[i % m]) for i in [i0, i1), T(u, v) = table[(u + 128) * 256 + v +
    128], x and out [n], y [m] int8, contiguous: the run of an int8 op whose output element
    depends only on its two int8 inputs (ADD, SUB, MUL, PRELU), `table` being the op's kernel
    evaluated once on all 256 x 256 pairs. y is the same shape (m = n) or repeats (a
    per-channel PRELU alpha: its channels, repeated to a few hundred values, as `tile_period`
    does, so that the runs are long). With a second table `then` (else empty): out[i] =
    then[(a[i % k] + 128) * 256 + T(x[i], y[i % m]) + 128], a [k]: an int8 PRELU after an ADD
    in one pass, a row of `then` per alpha (a the alpha's codes: rows for only the values the
    constant alpha holds, see ops/elementwise_int.PairLookup.then_pairs)."""
    if not _pairs_fit(table, x, y, out, then, a, i0, i1):
        raise ValueError("lookup_pairs: table, x, y, out, then, a or [i0, i1) do not fit")
    m, k = y.size, a.size
    i, c, d = i0, i0 % m, i0 % k
    while i < i1:  # runs along which neither y nor a wraps around
        run = min(m - c, k - d, i1 - i)
        _lookup_run(addr(table), addr(then), addr(x) + i, addr(y) + c, addr(a) + d,
                    addr(out) + i, run, then.size > 0)
        i, c, d = i + run, (c + run) % m, (d + run) % k


@kernel(parallel=True)
def _lookup_pairs_split(table, x, y, out, then, a, n, parts):
    if not _pairs_fit(table, x, y, out, then, a, 0, n):
        raise ValueError("lookup_pairs: table, x, y, out, then, a or [i0, i1) do not fit")
    for i in prange(parts):
        i0, i1 = pool.part(n, parts, i)
        lookup_pairs(table, x, y, out, then, a, i0, i1)


def _values_run_codegen(context, builder, signature, args):
    table_addr, x_addr, out_addr, n = args
    table, x, out = (builder.inttoptr(v, I8.as_pointer()) for v in (table_addr, x_addr, out_addr))
    middle = builder.gep(table, [const64(128)])  # the entry of 0

    def step(i):
        v = builder.sext(builder.load(builder.gep(x, [i])), I64)
        builder.store(builder.load(builder.gep(middle, [v])), builder.gep(out, [i]))

    counted_loop(builder, const64(0), n, "values", step)
    return context.get_dummy_value()


@intrinsic
def _values_run(typingctx, table_addr, x_addr, out_addr, n):
    """out[i] = table[x[i] + 128] for i < n (int8 arrays by address, table of 256; out may be
    x: each value is read before its place is written)."""
    return types.void(*[types.int64] * 4), _values_run_codegen


@inline_kernel
def _values_fit(table, x, out, i0, i1):
    return table.size == 256 and x.size == out.size and 0 <= i0 <= i1 <= out.size


@kernel
def lookup_values(table, x, out, i0, i1):
    """out[i] = table[x[i] + 128] for i in [i0, i1) (int8 x and out [n], contiguous; out may
    be x): the run of an int8 op whose output depends on one int8 input alone (RELU, LOGISTIC,
    TANH, ...), `table` the op on all 256 values (reference_integer_ops::LookupTable)."""
    if not _values_fit(table, x, out, i0, i1):
        raise ValueError("lookup_values: table, x, out or [i0, i1) do not fit")
    _values_run(addr(table), addr(x) + i0, addr(out) + i0, i1 - i0)


@kernel(parallel=True)
def _lookup_values_split(table, x, out, n, parts):
    if not _values_fit(table, x, out, 0, n):
        raise ValueError("lookup_values: table, x, out or [i0, i1) do not fit")
    for i in prange(parts):
        i0, i1 = pool.part(n, parts, i)
        lookup_values(table, x, out, i0, i1)


def lookup_value_int8(table, x, threads: int = 1, out=None):
    """`lookup_values` over all of x (any shape, contiguous) into `out` (a new array of its
    shape, or x itself), split between threads when large."""
    out = np.empty(x.shape, np.int8) if out is None else out
    pool.split_run(lookup_values, _lookup_values_split, (table, x.reshape(-1), out.reshape(-1)),
                   out.size, threads, pool.LOOKUP_FLOPS * out.size)
    return out


SHORT_PERIOD = 64  # a shorter period (PRELU's channels) is repeated to RUN_VALUES values
RUN_VALUES = 256


def tile_period(y: np.ndarray) -> np.ndarray:
    """y [m] repeated to k*m >= RUN_VALUES values when m < SHORT_PERIOD: y[i % m] ==
    tiled[i % (k*m)] for every i, and each call of the lookup's inner loop covers k*m values
    instead of m. A PRELU over 128x128x8 took 67 us in runs of 8, 45 in runs of 256; from 64
    channels on the runs cost nothing, and the tiling (~2.5 us) would."""
    return np.tile(y, -(-RUN_VALUES // y.size)) if y.size < SHORT_PERIOD else y


NO_TABLE = np.zeros(0, np.int8)  # `then` of a lookup that is not chained


def lookup_pair_int8(table, x, y, threads: int = 1, then=NO_TABLE, a=None, out=None):
    """`lookup_pairs` over all of x (any shape, contiguous) into `out` (a new array of its
    shape, or x itself), split between threads when large (threads.split_run)."""
    out = np.empty(x.shape, np.int8) if out is None else out
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    y = tile_period(y.reshape(-1))
    a = y if a is None else tile_period(a.reshape(-1))
    pool.split_run(lookup_pairs, _lookup_pairs_split, (table, flat_x, y, flat_out, then, a),
                   flat_out.size, threads, pool.LOOKUP_FLOPS * flat_out.size)
    return out


_ONE_CODE = np.zeros(1, np.int8)  # `a` of a lookup that is not chained


@inline_kernel
def _padded_fit(table, column, wide, narrow, out, then, a, p0, p1):
    return (table.size == 65536 and column.size == 256 and wide.shape == out.shape
            and narrow.shape[0] == out.shape[0] and narrow.shape[1] <= out.shape[1]
            and 0 <= p0 <= p1 <= out.shape[0] and a.size > 0
            and (then.size == 0 or (out.shape[1] > 0 and a.size % out.shape[1] == 0
                                    and _rows_cover(then, a))))


@kernel
def lookup_pairs_padded(table, column, wide, narrow, out, then, a, p0, p1):
    """Rows [p0, p1) of out [P, C] = T(wide[p, c], narrow'[p, c]), T(u, v) = table[(u + 128) *
    256 + v + 128], for wide [P, C] and narrow [P, K] int8 (contiguous, K <= C), narrow'
    being narrow with C - K channels of one value appended (a channel PAD folded into an int8
    ADD, runtime/fusion.py): the first K of each row by pairs, the rest by `column`, T(u, that
    value) for each u (column[u + 128]). With a second table `then` (else empty), each value
    v then becomes then[(a[c] + 128) * 256 + v + 128], a holding whole rows of C (a PRELU's
    per-channel alpha codes, as `lookup_pairs`)."""
    if not _padded_fit(table, column, wide, narrow, out, then, a, p0, p1):
        raise ValueError("lookup_pairs_padded: table, column, wide, narrow, out, then, a or "
                         "[p0, p1) do not fit")
    channels, kept, chained = out.shape[1], narrow.shape[1], then.size > 0
    for p in range(p0, p1):
        row, codes = addr(out) + p * channels, addr(a) + p * channels % a.size
        _lookup_run(addr(table), addr(then), addr(wide) + p * channels,
                    addr(narrow) + p * kept, codes, row, kept, chained)
        _values_run(addr(column), addr(wide) + p * channels + kept, row + kept, channels - kept)
        if chained:  # then[(a + 128) * 256 + v + 128] in place: T over (a, v) pairs
            _lookup_run(addr(then), addr(then), codes + kept, row + kept, codes, row + kept,
                        channels - kept, False)


@kernel(parallel=True)
def _lookup_pairs_padded_split(table, column, wide, narrow, out, then, a, rows, parts):
    if not _padded_fit(table, column, wide, narrow, out, then, a, 0, rows):
        raise ValueError("lookup_pairs_padded: table, column, wide, narrow, out, then, a or "
                         "[p0, p1) do not fit")
    for i in prange(parts):
        p0, p1 = pool.part(rows, parts, i)
        lookup_pairs_padded(table, column, wide, narrow, out, then, a, p0, p1)


def lookup_pair_padded_int8(table, wide, narrow, value: int, threads: int = 1, then=NO_TABLE,
                            a=None) -> np.ndarray:
    """table[(wide + 128) * 256 + (narrow' + 128)] of wide [..., C] and narrow [..., K] (the
    same leading shape, K <= C), narrow' = narrow with C - K channels of `value` appended,
    without making narrow' (`lookup_pairs_padded`; chained through `then` with a's codes, a
    holding whole rows of C); pass the table (y, x)-major for a narrow first operand."""
    wide, narrow = np.ascontiguousarray(wide, np.int8), np.ascontiguousarray(narrow, np.int8)
    if wide.ndim == 0 or wide.shape[:-1] != narrow.shape[:-1] \
            or narrow.shape[-1] > wide.shape[-1]:
        raise ValueError(f"lookup_pair_padded_int8: shapes {wide.shape} and {narrow.shape}")
    out = np.empty(wide.shape, np.int8)
    rows, channels = int(np.prod(wide.shape[:-1])), wide.shape[-1]
    if out.size == 0:
        return out
    column = np.ascontiguousarray(table[int(value) + 128 :: 256])
    a = _ONE_CODE if a is None else tile_period(np.ascontiguousarray(a, np.int8).reshape(-1))
    args = (table, column, wide.reshape(rows, channels), narrow.reshape(rows, -1),
            out.reshape(rows, channels), then, a)
    pool.split_run(lookup_pairs_padded, _lookup_pairs_padded_split, args, rows, threads,
                   pool.LOOKUP_FLOPS * out.size)
    return out


# -- broadcasting of up to 4 axes, shared with float_ops.binary_broadcast_f32 --------------------


def as_4d(v: np.ndarray) -> np.ndarray:
    """v (rank <= 4, C-contiguous) seen as 4-D with leading axes of 1: the broadcasting
    kernels' operands."""
    return v.reshape((1,) * (4 - v.ndim) + v.shape)


@inline_kernel
def broadcasts_to(v, out):
    """Every axis of the 4-D v has out's size or 1 (NumPy broadcasting)."""
    for k in range(4):
        if v.shape[k] != 1 and v.shape[k] != out.shape[k]:
            return False
    return True


@inline_kernel
def broadcast_row(v, a, b, c):
    """Row (a, b, c) of the 4-D v broadcast to a larger shape: its size-1 axes read at 0."""
    return v[min(a, v.shape[0] - 1), min(b, v.shape[1] - 1), min(c, v.shape[2] - 1)]


@kernel
def lookup_pair_broadcast_int8(table, x, y, out):
    """out = table[(x + 128) * 256 + (y + 128)] for x, y, out 4-D int8 (C-contiguous) where each
    axis of x and y has out's size or 1 (`broadcasts_to`): the broadcasts `lookup_pair_int8`
    does not take, such as [1, 16, 1] with [1, 1, 32]."""
    if table.shape[0] != 256 * 256:
        raise ValueError("lookup_pair_broadcast_int8: the table needs 65536 entries")
    if not (broadcasts_to(x, out) and broadcasts_to(y, out)):
        raise ValueError("lookup_pair_broadcast_int8: shapes do not broadcast to out's")
    n0, n1, n2, n3 = out.shape
    for a in range(n0):
        for b in range(n1):
            for c in range(n2):
                xr, yr, dst = broadcast_row(x, a, b, c), broadcast_row(y, a, b, c), out[a, b, c]
                step_x, step_y = 1 if xr.shape[0] > 1 else 0, 1 if yr.shape[0] > 1 else 0
                for d in range(n3):
                    dst[d] = table[(np.int64(xr[d * step_x]) + 128) * 256 +
                                   np.int64(yr[d * step_y]) + 128]


def trailing_period(shape, other_shape) -> int:
    """m such that `other` broadcast to `shape`, flattened, repeats its first m values: the
    size of other's trailing block when its dims equal shape's there and it is 1 (or absent)
    before. 0 when `other` does not broadcast that way, or a shape is unknown (None)."""
    if shape is None or other_shape is None:
        return 0
    other = (1,) * (len(shape) - len(other_shape)) + tuple(other_shape)
    period, tail = 1, True
    for dim, o in zip(reversed(tuple(shape)), reversed(other)):
        if tail and o == dim:
            period *= dim
        elif o == 1:
            tail = False
        else:
            return 0
    return period
