"""Quantized elementwise binary ops: ADD, SUB, MUL, SQUARED_DIFFERENCE, MAXIMUM, MINIMUM and
the comparisons, as TFLite's reference kernels compute them on int8 (uint8 for comparisons).

    real = scale * (q - zero_point)

Prepare validates the types and per-tensor parameters and computes the multipliers with the
precision TFLite's Prepare uses; run broadcasts both inputs to the output shape, flattens them
and calls the kernel (broadcasting repeats values and changes none, so this is TFLite's
BroadcastXxx4DSlow).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qengine.kernels import activations as activation_kernels
from qengine.kernels import elementwise as kernels
from qengine.kernels import xnnpack
from qengine.kernels.fixedpoint import mbqm_array as mbqm
from qengine.kernels.fixedpoint import quantize_multiplier

from ..errors import InputError
from ..runtime.registry import OpContext, Prepared, Spec
from .common import (
    QUANTIZED_TYPES,
    broadcast_shape,
    output_params,
    per_tensor,
    quantized_activation_range,
)
from .xnnpack_int import activation_range as xnnpack_activation_range

# -- ADD, SUB, MUL -----------------------------------------------------------------------------


def _int8_binary(ctx: OpContext):
    """Common checks of the requantizing int8 ops: (input specs, params..., output shape)."""
    ctx.expect_inputs(2)
    a, b = ctx.input(0), ctx.input(1)
    if a.dtype != "int8" or b.dtype != "int8":
        raise ctx.unsupported(f"quantized {ctx.op.type} on {a.dtype} and {b.dtype}; "
                              f"supported: int8 and int8")
    shape = broadcast_shape(ctx, a.shape, b.shape)
    return per_tensor(ctx, a), per_tensor(ctx, b), output_params(ctx, "int8"), shape


def _requantizing(ctx: OpContext, make_params, kernel) -> Prepared:
    (s1, zp1), (s2, zp2), (s_out, zp_out), shape = _int8_binary(ctx)
    try:
        params = make_params(s1, zp1, s2, zp2, s_out, zp_out)
    except ValueError as e:  # a multiplier TFLite's Prepare rejects (CHECK failure)
        raise ctx.unsupported(f"TFLite refuses these scales: {e}") from None
    low, high = quantized_activation_range(ctx, s_out, zp_out, "int8")
    return _pair_table(ctx, shape, lambda a, b: kernel(a, b, *params, low, high))


def _pair_table(ctx: OpContext, shape, kernel) -> Prepared:
    """Each output element depends only on its two int8 inputs, so `kernel(a, b)` run once on
    all 256 x 256 pairs at prepare time is the whole op: a 64 KiB table, exact by construction."""
    return Prepared(pair_lookup(kernel, ctx.input(0).shape, ctx.input(1).shape, shape,
                                ctx.num_threads, ctx.input(1).value),
                    [ctx.output_spec(0, shape, "int8")])


PAIR_CHUNK = 8192  # input pairs per call of a pair table's kernel (see pair_lookup)


def pair_lookup(kernel, a_shape, b_shape, shape, threads: int = 1, b_value=None) -> PairLookup:
    """The table of kernel(a, b) on all 256 x 256 int8 pairs (a major) as a PairLookup;
    `b_value`: the second input when it is a constant (a PRELU's alpha, a MUL's scale).

    The kernel runs on PAIR_CHUNK pairs at a time: its NumPy int64 temporaries for all 65536
    at once peaked at ~5.7 MB, which the process keeps (`kernels/jit.py` keeps freed pages)
    and which is most of what an int8 model's ADDs add to its memory."""
    table = np.empty(256 * 256, np.int8)
    for start in range(0, table.size, PAIR_CHUNK):
        part = slice(start, start + PAIR_CHUNK)
        table[part] = kernel(_FIRST[part], _SECOND[part])
    return PairLookup(table, a_shape, b_shape, shape, threads, b_value=b_value)


_FIRST = np.repeat(np.arange(-128, 128, dtype=np.int8), 256)  # the pairs (a, b), a major
_SECOND = np.tile(np.arange(-128, 128, dtype=np.int8), 256)


def _broadcast_lookup(table, x, y, shape) -> np.ndarray:
    """table[(x + 128) * 256 + (y + 128)] with x and y broadcast to `shape` (rank <= 4)."""
    out = np.empty(shape, np.int8)
    kernels.lookup_pair_broadcast_int8(table, kernels.as_4d(np.ascontiguousarray(x, np.int8)),
                                       kernels.as_4d(np.ascontiguousarray(y, np.int8)),
                                       kernels.as_4d(out))
    return out


class PairLookup:
    """run(x, y) = table[(x + 128) * 256 + (y + 128)] broadcast to `shape`: one Numba pass,
    split between `threads` when large (kernels.lookup_pair_int8), when one input has the
    output's shape and the other repeats along its last axes (same shape, per-channel,
    scalar); `lookup_pair_broadcast_int8` for other broadcasts of up to 4 axes, NumPy fancy
    indexing beyond. A lookup op after it folds in (`fold_lookup`):
    its 256 values into the table (`then_values`), or a second pair table on (this one's
    value, a repeating operand) in the same pass (`then`)."""

    def __init__(self, table, a_shape, b_shape, shape, threads, then=None, b_value=None):
        self.table, self.a_shape, self.b_shape, self.threads = table, a_shape, b_shape, threads
        self.b_value = b_value  # the second input, when constant
        self.shape = None if shape is None else tuple(shape)
        self.a_period = kernels.trailing_period(self.shape, a_shape)
        self.b_period = kernels.trailing_period(self.shape, b_shape)
        self.swapped = []  # the table of (y, x), made on first use (64 KiB most ops never need)
        # a constant second input's repeating values, tiled once (a PRELU's slopes: ~2.5 us a
        # run for fewer than 64 channels)
        self.b_tiled = None if b_value is None or not self.b_period else \
            kernels.tile_period(_period(np.asarray(b_value, np.int8), self.b_period))
        # a chained lookup's (second table, its operand's period, the operand's codes or
        # None): see then_pairs
        self.then = then

    def __call__(self, x, y, *second, out=None):
        """The lookup of (x, y) (and of a third operand when chained); `out`: x itself, a
        contiguous int8 array the caller owns, to write in place (when it is the full shape)."""
        if self.then is not None:
            return self._chained(x, y, second[0], out)
        if x.shape == self.shape and self.b_period == 1 and self.b_tiled is None:
            # one value of y (computed, e.g. a MEAN): its column of the table, 256 values, is
            # a value lookup; tiling y to runs of 256 cost more than the lookup (~5 us)
            column = self.table[int(y.reshape(-1)[0]) + 128 :: 256]
            return kernels.lookup_value_int8(np.ascontiguousarray(column),
                                             np.ascontiguousarray(x), self.threads, out=out)
        if x.shape == self.shape and self.b_period:
            return kernels.lookup_pair_int8(self.table, np.ascontiguousarray(x),
                                            _period(y, self.b_period) if self.b_tiled is None
                                            else self.b_tiled, self.threads, out=out)
        if y.shape == self.shape and self.a_period:
            if not self.swapped:  # (two threads may both make it: the same values)
                self.swapped.append(np.ascontiguousarray(self.table.reshape(256, 256).T).ravel())
            return kernels.lookup_pair_int8(self.swapped[0], np.ascontiguousarray(y),
                                            _period(x, self.a_period), self.threads)
        if len(self.shape) <= 4:  # any other broadcast of up to 4 axes: one compiled pass
            return _broadcast_lookup(self.table, x, y, self.shape)
        index = (x.astype(np.intp) + 128) * 256 + (y.astype(np.intp) + 128)  # broadcasts
        return self.table[np.broadcast_to(index, self.shape)]

    def then_values(self, values: np.ndarray) -> PairLookup:
        """This lookup followed by a 256-entry one (values[v + 128] for each int8 v)."""
        table = values[self.table.astype(np.intp) + 128]
        return PairLookup(table, self.a_shape, self.b_shape, self.shape, self.threads,
                          b_value=self.b_value)

    def then_pairs(self, second: PairLookup) -> PairLookup | None:
        """This lookup followed by `second` on (its value, a repeating operand), in one pass:
        when both of this one's inputs and the output have one shape (a residual ADD) and the
        second's other operand repeats (a per-channel PRELU); else None.

        The kernel reads the second table operand-major, a row of 256 per operand value. A
        constant operand (a PRELU's alpha) keeps only the rows of the values it holds, and is
        replaced by their codes 0, 1, ... (- 128), tiled once here: 16-128 channels need
        4-32 KiB instead of 64 (face_landmark's 20 PRELUs: 1.3 MB -> 0.4)."""
        if not (self.shape is not None and self.a_shape is not None
                and self.b_period == int(np.prod(self.shape))
                and tuple(self.a_shape) == self.shape and second.shape == self.shape
                and second.b_period):
            return None
        return PairLookup(self.table, self.a_shape, self.b_shape, self.shape, self.threads,
                          then=_second_rows(second))

    def _chained(self, x, y, a, out):
        then, period, codes = self.then
        if x.shape != self.shape or y.shape != self.shape:
            raise ValueError(f"a chained lookup of shape {self.shape} got {x.shape}, {y.shape}")
        return kernels.lookup_pair_int8(self.table, np.ascontiguousarray(x),
                                        np.ascontiguousarray(y).reshape(-1), self.threads, then,
                                        _period(a, period) if codes is None else codes, out)


def _second_rows(second: PairLookup) -> tuple:
    """A chained lookup's (second table operand-major, its operand's period, the operand's
    codes or None): see PairLookup.then_pairs."""
    by_operand = second.table.reshape(256, 256).T  # [operand + 128][value + 128]
    if second.b_value is None:
        return np.ascontiguousarray(by_operand).ravel(), second.b_period, None
    held, codes = np.unique(_period(second.b_value, second.b_period), return_inverse=True)
    rows = np.ascontiguousarray(by_operand[held.astype(np.intp) + 128]).ravel()
    return rows, second.b_period, kernels.tile_period((codes - 128).astype(np.int8))


def _period(x: np.ndarray, period: int) -> np.ndarray:
    """The first `period` values of x flattened (what the repeating operand repeats)."""
    return np.ascontiguousarray(x.reshape(-1)[:period])


def fold_lookup(first_prepare, second_prepare):
    """The prepare of an int8 ADD, SUB or MUL with the lookup op after it folded in
    (`Operator.fused_lookup`, runtime/fusion.py): both prepared as written, then one table
    (a 256-entry op: RELU, LOGISTIC, ...) or one pass of two (PRELU after a residual ADD);
    any other pair of runs (int16, XNNPACK's arithmetic, broadcasts) runs one after the
    other."""

    def prepare(ctx: OpContext) -> Prepared:
        second_op = ctx.op.fused_lookup
        n = len(ctx.op.inputs) - (len(second_op.inputs) - 1)  # the first op's own inputs
        first_op = dataclasses.replace(ctx.op, inputs=ctx.op.inputs[:n],
                                       outputs=second_op.inputs[:1], fused_lookup=None)
        first = first_prepare(dataclasses.replace(ctx, op=first_op, inputs=ctx.inputs[:n]))
        second = second_prepare(dataclasses.replace(
            ctx, op=second_op, inputs=[first.outputs[0], *ctx.inputs[n:]]))
        return Prepared(_composed(first.run, second.run, n), second.outputs)

    return prepare


def _composed(first, second, n: int):
    if isinstance(first, PairLookup) and isinstance(second, ValueLookup):
        return first.then_values(second.values)
    if isinstance(first, PairLookup) and isinstance(second, PairLookup):
        chained = first.then_pairs(second)
        if chained is not None:
            return chained
    if not isinstance(second, (ValueLookup, PairLookup)):
        return lambda *arrays: second(first(*arrays[:n]), *arrays[n:])

    def run(*arrays):  # (a conv's output, new at every run: the lookup overwrites it)
        z = first(*arrays[:n])
        own = z.flags.c_contiguous and z.flags.writeable and not any(
            a is not None and np.may_share_memory(z, a) for a in arrays)
        return second(z, *arrays[n:], out=z if own and z.shape == second.shape else None)

    return run


class ValueLookup:
    """run(x) = values[x + 128] of int8 x, any shape (`kernels.lookup_value_int8`, split
    between `threads` when large); `out`: x itself, to write in place."""

    def __init__(self, values: np.ndarray, shape, threads: int = 1):
        self.values, self.threads = values, threads
        self.shape = None if shape is None else tuple(shape)

    def __call__(self, x, out=None):
        return kernels.lookup_value_int8(self.values, np.ascontiguousarray(x), self.threads,
                                         out)


def _int16(ctx: OpContext) -> bool:
    return ctx.input(0).dtype == "int16"


def add(ctx: OpContext) -> Prepared:
    if ctx.op.fused_operand_pad is not None:
        return _operand_padded(ctx, _add)
    return _add(ctx)


def _add(ctx: OpContext) -> Prepared:
    if _int16(ctx):
        return _int16_path().add_sub(ctx, 1)
    if ctx.arithmetic == "xnnpack":
        return _xnnpack_add_or_mul(ctx, "add") or _requantizing(
            ctx, kernels.add_params, kernels.add_int8)
    return _requantizing(ctx, kernels.add_params, kernels.add_int8)


def sub(ctx: OpContext) -> Prepared:
    if _int16(ctx):
        return _int16_path().add_sub(ctx, -1)
    if ctx.arithmetic == "xnnpack":
        return _xnnpack_add_or_mul(ctx, "sub") or _requantizing(
            ctx, kernels.sub_params, kernels.sub_int8)
    return _requantizing(ctx, kernels.sub_params, kernels.sub_int8)


def mul(ctx: OpContext) -> Prepared:
    if _int16(ctx):
        return _int16_path().mul(ctx)
    if ctx.arithmetic == "xnnpack":
        return _xnnpack_add_or_mul(ctx, "mul") or _requantizing(
            ctx, kernels.mul_params, kernels.mul_int8)
    return _requantizing(ctx, kernels.mul_params, kernels.mul_int8)


def _operand_padded(ctx: OpContext, prepare) -> Prepared:
    """An int8 ADD reading operand `position` before a PAD appended `n` channels of its zero
    point (`Operator.fused_operand_pad`, runtime/fusion.py): prepared as written, on the padded
    shape; its pair table then takes the appended channels from one column
    (`PaddedPairLookup`). Any other kernel (XNNPACK's arithmetic, broadcasts) gets the
    operand padded at run time, as the PAD did."""
    position, n = ctx.op.fused_operand_pad
    narrow = ctx.input(position)
    if narrow.shape is None or not narrow.shape:
        raise ctx.invalid(f"a channel PAD folded into operand {position} of unknown rank")
    padded = dataclasses.replace(narrow, shape=(*narrow.shape[:-1], narrow.shape[-1] + n),
                                 value=None)
    inputs = list(ctx.inputs)
    inputs[position] = padded
    written = prepare(dataclasses.replace(
        ctx, op=dataclasses.replace(ctx.op, fused_operand_pad=None), inputs=inputs))
    zero_point = per_tensor(ctx, narrow)[1]
    run = written.run
    other = ctx.input(1 - position).shape
    if type(run) is PairLookup and other is not None and run.shape == padded.shape == \
            tuple(other):
        return Prepared(PaddedPairLookup(run.table, run.shape, position, zero_point,
                                         ctx.num_threads), written.outputs)
    pads = [(0, 0)] * (len(padded.shape) - 1) + [(0, n)]

    def pad_then_run(*arrays):
        arrays = list(arrays)
        arrays[position] = np.pad(arrays[position], pads, constant_values=zero_point)
        return run(*arrays)

    return Prepared(pad_then_run, written.outputs)


class PaddedPairLookup(PairLookup):
    """A PairLookup of two operands of `shape` whose operand `position` comes without its last
    channels, every one of which held `value` (`kernels.lookup_pair_padded_int8`: one pass, no
    padded copy). A 256-entry lookup after it composes into its table, a per-channel pair
    lookup (PRELU) chains into the same pass."""

    def __init__(self, table, shape, position: int, value: int, threads: int, then=None):
        super().__init__(table, shape, shape, shape, threads, then=then)
        self.position, self.value = position, int(value)
        # the table with the narrow operand second: (wide, narrow) pairs
        self.ordered = table if position == 1 else \
            np.ascontiguousarray(table.reshape(256, 256).T).ravel()

    def __call__(self, x, y, *second, out=None):
        wide, narrow = (x, y) if self.position == 1 else (y, x)
        if self.then is None:
            return kernels.lookup_pair_padded_int8(self.ordered, wide, narrow, self.value,
                                                   self.threads)
        then, period, codes = self.then
        return kernels.lookup_pair_padded_int8(
            self.ordered, wide, narrow, self.value, self.threads, then,
            _period(second[0], period) if codes is None else codes)

    def then_values(self, values: np.ndarray) -> PaddedPairLookup:
        return PaddedPairLookup(values[self.table.astype(np.intp) + 128], self.shape,
                                self.position, self.value, self.threads)

    def then_pairs(self, second: PairLookup) -> PaddedPairLookup | None:
        """Chained when the second's operand is one value per channel (a PRELU's alpha)."""
        if self.then is not None or second.shape != self.shape or not self.shape \
                or second.b_period != self.shape[-1]:
            return None
        return PaddedPairLookup(self.table, self.shape, self.position, self.value,
                                self.threads, then=_second_rows(second))


def _xnnpack_add_or_mul(ctx: OpContext, op: str) -> Prepared | None:
    """arithmetic="xnnpack": XNNPACK's qs8 vadd / vmul (kernels/xnnpack.py). None when XNNPACK
    refuses the scales: TFLite then runs its built-in kernel, whose arithmetic is the
    reference one for these ops."""
    (s1, zp1), (s2, zp2), (s_out, zp_out), shape = _int8_binary(ctx)
    low, high = xnnpack_activation_range(ctx, s_out, zp_out)
    if op == "mul":
        scale = xnnpack.mul_scale(s1, s2, s_out)
        if scale is None:
            return None
        return _pair_table(ctx, shape, lambda a, b: xnnpack.mul_int8(
            a, b, zp1, zp2, scale, zp_out, low, high))
    params = xnnpack.add_params(s1, zp1, s2, zp2, s_out, subtract=op == "sub")
    if params is None:
        return None
    return _pair_table(ctx, shape, lambda a, b: xnnpack.add_int8(
        a, b, *params, zp_out, low, high))


def _int16_path():
    from . import int16_int  # it imports this module's helpers

    return int16_int


# -- SQUARED_DIFFERENCE ------------------------------------------------------------------------

SQUARED_DIFFERENCE_LEFT_SHIFT = 7


def _smaller_than_one(ctx: OpContext, real: float) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp, whose CHECK(real < 1) aborts TFLite."""
    if not 0 < real < 1:
        raise ctx.unsupported(f"real multiplier {real:.6g} is not in (0, 1): TFLite aborts")
    return quantize_multiplier(real)


def squared_difference(ctx: OpContext) -> Prepared:
    """squared_difference.cc (int8): both inputs are rescaled to twice the larger scale,
    shifted left by 7, subtracted and squared; the output rescale is twice_max^2 /
    (2^14 * s_out). All ratios are taken in double from the float32 scales. Run as a pair
    table (`_pair_table`): ~74 us of NumPy int64 passes on 512 values before."""
    (s1, zp1), (s2, zp2), (s_out, zp_out), shape = _int8_binary(ctx)
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = _smaller_than_one(ctx, s1 / twice_max)
    m2, sh2 = _smaller_than_one(ctx, s2 / twice_max)
    m_out, sh_out = _smaller_than_one(
        ctx, twice_max * twice_max / ((1 << 2 * SQUARED_DIFFERENCE_LEFT_SHIFT) * s_out))

    def squared(x, y):  # x, y: int8 arrays of one shape
        a = mbqm((x.astype(np.int64) - zp1) << SQUARED_DIFFERENCE_LEFT_SHIFT, m1, sh1)
        b = mbqm((y.astype(np.int64) - zp2) << SQUARED_DIFFERENCE_LEFT_SHIFT, m2, sh2)
        diff = a - b  # |diff| <= 255 * 2^7, so diff^2 < 2^31: no int32 overflow
        out = mbqm(diff * diff, m_out, sh_out) + zp_out
        return np.clip(out, -128, 127).astype(np.int8)

    return _pair_table(ctx, shape, squared)


# -- MAXIMUM, MINIMUM: no requantization (TFLite assumes equal parameters) ----------------------


def _select(ctx: OpContext, pick) -> Prepared:
    ctx.expect_inputs(2)
    a, b = ctx.input(0), ctx.input(1)
    if a.dtype != b.dtype:
        raise ctx.invalid(f"input dtypes differ: {a.dtype} and {b.dtype}")
    if a.dtype not in QUANTIZED_TYPES + ("int32",):
        raise ctx.unsupported(f"quantized {ctx.op.type} on {a.dtype}")
    shape = broadcast_shape(ctx, a.shape, b.shape)
    return Prepared(lambda x, y: pick(x, y).astype(a.dtype, copy=False),
                    [ctx.output_spec(0, shape, a.dtype)])


def maximum(ctx: OpContext) -> Prepared:
    return _select(ctx, np.maximum)


def minimum(ctx: OpContext) -> Prepared:
    return _select(ctx, np.minimum)


# -- comparisons -------------------------------------------------------------------------------

COMPARISON_LEFT_SHIFT = 8


def _comparison_scaling(ctx: OpContext, spec: Spec):
    """ComparisonQuantized (comparisons.cc): each input maps to
    MBQM((q - zp) * 2^8, QuantizeMultiplier(scale)) before comparing."""
    scale, zero_point = per_tensor(ctx, spec)
    if scale >= 1.0:  # shift > 0 reaches RoundingDivideByPOT with a negative exponent (UB)
        raise ctx.unsupported(f"input scale {scale} >= 1: TFLite's comparison kernel is "
                              f"undefined for it")
    multiplier, shift = quantize_multiplier(scale)

    def scaled(q):
        return mbqm((q.astype(np.int64) - zero_point) << COMPARISON_LEFT_SHIFT, multiplier, shift)
    if spec.dtype not in ("int8", "uint8"):
        return scaled
    # an 8-bit input has 256 values: their scaled values once, looked up per run (the
    # vectorized MBQM costs ~15 µs a call even on one value)
    info = np.iinfo(spec.dtype)
    table = scaled(np.arange(info.min, info.max + 1).astype(spec.dtype))
    return lambda q: table[np.asarray(q).view(np.uint8) ^ np.uint8(info.min & 0xFF)]


def _compare(ctx: OpContext, compare, rescales_int16: bool) -> Prepared:
    """comparisons.cc: int8/uint8 inputs are always rescaled; quantized int16 ones only by
    EQUAL/NOT_EQUAL, the ordering comparisons compare int16 raw values, ignoring scales."""
    ctx.expect_inputs(2)
    a, b = ctx.input(0), ctx.input(1)
    if a.dtype != b.dtype:
        raise ctx.invalid(f"input dtypes differ: {a.dtype} and {b.dtype}")
    if a.dtype not in ("int8", "uint8", "int16"):
        raise ctx.unsupported(f"quantized {ctx.op.type} on {a.dtype}")
    shape = broadcast_shape(ctx, a.shape, b.shape)
    spec = [ctx.output_spec(0, shape, "bool")]
    if a.dtype == "int16" and not rescales_int16:
        return Prepared(compare, spec)
    scale_a, scale_b = _comparison_scaling(ctx, a), _comparison_scaling(ctx, b)
    return Prepared(lambda x, y: compare(scale_a(x), scale_b(y)), spec)


def equal(ctx: OpContext) -> Prepared:
    return _compare(ctx, np.equal, rescales_int16=True)


def not_equal(ctx: OpContext) -> Prepared:
    return _compare(ctx, np.not_equal, rescales_int16=True)


def less(ctx: OpContext) -> Prepared:
    return _compare(ctx, np.less, rescales_int16=False)


def less_equal(ctx: OpContext) -> Prepared:
    return _compare(ctx, np.less_equal, rescales_int16=False)


def greater(ctx: OpContext) -> Prepared:
    return _compare(ctx, np.greater, rescales_int16=False)


def greater_equal(ctx: OpContext) -> Prepared:
    return _compare(ctx, np.greater_equal, rescales_int16=False)


# -- unary ops: ABS, RSQRT, EXP, LOG -----------------------------------------------------------
#
# Each int8 output depends only on the input value, so prepare builds TFLite's computation into
# a 256-entry table (entry k for input k - 128) and run looks the values up.


def _int8_unary(ctx: OpContext):
    """(input spec, (s_in, zp_in), (s_out, zp_out)) of a one-input int8 -> int8 op."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    out = ctx.output_spec(0, x.shape)
    if x.dtype != "int8" or out.dtype != "int8":
        raise ctx.unsupported(f"quantized {ctx.op.type} from {x.dtype} to {out.dtype}; "
                              f"supported: int8 to int8")
    return x, per_tensor(ctx, x), per_tensor(ctx, out)


def value_lookup(ctx: OpContext, x: Spec, table: np.ndarray, check=None) -> Prepared:
    """run: out = table[x + 128]; `check(values)` (optional) rejects bad data first."""
    lookup = ValueLookup(table, x.shape, ctx.num_threads)

    def run(values):
        check(values)
        return lookup(values)

    return Prepared(lookup if check is None else run, [ctx.output_spec(0, x.shape, "int8")])


def abs_(ctx: OpContext) -> Prepared:
    if _int16(ctx):
        return _int16_path().abs_(ctx)
    x, (s_in, zp_in), (s_out, zp_out) = _int8_unary(ctx)
    params = kernels.abs_params(s_in, zp_in, s_out, zp_out)
    if params[-1] > 30:  # MBQM's x * (1 << shift) is undefined in C beyond that
        raise ctx.unsupported(f"ABS rescale {s_in}/{s_out} is too large for TFLite's kernel")
    return value_lookup(ctx, x, kernels.abs_table_int8(*params))


def rsqrt(ctx: OpContext) -> Prepared:
    """RsqrtEvalQuantizedInt8: inputs below the zero point (negative reals) are an error at
    run time, as in TFLite."""
    if _int16(ctx):
        return _int16_path().rsqrt(ctx)
    x, (s_in, zp_in), (s_out, zp_out) = _int8_unary(ctx)
    multiplier, shift = kernels.rsqrt_params(s_in, s_out)
    final_shift = shift - kernels.RSQRT_SHIFT
    if not -31 <= final_shift <= 30:  # RoundingDivideByPOT / the left shift are undefined
        raise ctx.unsupported(f"RSQRT scales {s_in} -> {s_out} give a multiplier exponent "
                              f"{final_shift} outside TFLite's defined range [-31, 30]")
    table = kernels.rsqrt_table_int8(zp_in, zp_out, multiplier, shift)

    def check(values):
        if values.size and int(values.min()) < zp_in:
            raise InputError(f"{ctx.where()}: RSQRT of a negative value (an input below the "
                             f"zero point {zp_in}); TFLite refuses it too")

    return value_lookup(ctx, x, table, check)


def exp(ctx: OpContext) -> Prepared:
    if _int16(ctx):
        return _int16_path().exp(ctx)
    x, (s_in, zp_in), (s_out, zp_out) = _int8_unary(ctx)
    return value_lookup(ctx, x, activation_kernels.exp_lut_int8(s_in, zp_in, s_out, zp_out))


def log(ctx: OpContext) -> Prepared:
    if _int16(ctx):
        return _int16_path().log(ctx)
    x, (s_in, zp_in), (s_out, zp_out) = _int8_unary(ctx)
    return value_lookup(ctx, x, activation_kernels.log_lut_int8(s_in, zp_in, s_out, zp_out))
