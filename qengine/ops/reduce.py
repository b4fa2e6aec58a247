"""Reductions over constant axes: MEAN, SUM, PROD, REDUCE_MAX/MIN/ANY/ALL.

The axes come from a constant int32 input; negative axes count from the end, repeated ones
count once, and an empty list reduces nothing (the op copies its input, as TFLite does).
Float SUM and MEAN accumulate in float32 like TFLite's reference kernels, in their order, bit
for bit (`_ordered_sum_f32`). Integer SUM and PROD accumulate in the
input type and wrap on overflow, as TFLite's do. Quantized MEAN, SUM and PROD requantize and go
to `reduce_int`; MAX and MIN only select, so they run on the raw integers when the output keeps
the input's quantization (TFLite requires that) and go to `reduce_int` otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from ..runtime.registry import OpContext, Prepared, Spec
from .common import is_quantized, quantized_path
from .opdef import REQUANT, SAME, Quantized, integer_kernels, op


def reduced_axes(ctx: OpContext, x: Spec) -> tuple[int, ...]:
    axes_spec = ctx.input(1)
    ctx.expect_dtype(axes_spec, "int32", "int64")
    values = np.ravel(ctx.constant(1, "axes"))
    return tuple(sorted({ctx.axis(int(a), x.rank) for a in values}))


def _same_quantization(a: Spec, b: Spec) -> bool:
    qa, qb = a.quantization, b.quantization
    return qb is not None and np.array_equal(qa.scale, qb.scale) and \
        np.array_equal(qa.zero_point, qb.zero_point)


def _keep_dims(ctx: OpContext) -> bool:
    return bool(getattr(ctx.options, "keepDims", False)) if ctx.options is not None else False


def _reduction(ctx: OpContext, reduce, dtypes, quantized: bool = False,
               ordered_sum: str | None = None) -> Prepared:
    """Prepare `reduce(x, axes, keepdims) -> array` for the op's input and options.

    quantized: the op must requantize quantized inputs (MEAN, SUM, PROD); the selecting ones
    (MAX, MIN) need to only when the output's parameters differ from the input's.
    ordered_sum ("sum" or "mean"): float32 inputs take `_ordered_sum_f32` instead of `reduce`.
    """
    ctx.expect_inputs(2)
    x = ctx.input(0)
    if is_quantized(x) and (quantized or not _same_quantization(x, ctx.output_spec(0, ()))):
        return quantized_path(ctx, "reduce")
    ctx.expect_dtype(x, *dtypes)
    axes = reduced_axes(ctx, x)
    keep = _keep_dims(ctx)
    out_shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape) if keep or a not in axes)
    dtype = np.dtype(x.dtype)
    if not axes:
        return Prepared(lambda x, _: x.copy(), [ctx.output_spec(0, out_shape, x.dtype)])
    if ordered_sum is not None and dtype == np.float32:
        total = _ordered_sum_f32(x.shape, axes, mean=ordered_sum == "mean")

        def run(x, _):
            return total(x).reshape(out_shape)
    else:
        def run(x, _):
            return np.asarray(reduce(x, axes, keep), dtype).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, x.dtype)])


NUMBERS = ("float32", "int32", "int64")
ORDERED = ("float32", "int32", "int64", "int8", "uint8", "int16")


def _ordered_sum_f32(shape, axes, mean: bool):
    """run(x) -> the float32 sum (mean: sum / count) of x [shape] over `axes`, as TFLite's
    reference kernels add: from 0, each output's values in row-major order of the reduced axes
    (bit for bit, where NumPy's own sum pairs values), by `float_ops.sum_in_order_f32` on x
    seen as [outer, reduced, inner]. That view needs the reduced axes side by side (kept axes
    of size 1 between them do not count); otherwise they are moved first, a transposed copy."""
    from qengine.kernels.float_ops import sum_in_order_f32  # (Numba: only when needed)

    first, last = axes[0], axes[-1]
    side_by_side = all(shape[a] == 1 for a in range(first, last + 1) if a not in axes)
    count = math.prod(shape[a] for a in axes)
    if side_by_side:
        order = None
        outer, inner = math.prod(shape[:first]), math.prod(shape[last + 1:])
    else:
        order = list(axes) + [a for a in range(len(shape)) if a not in axes]
        outer, inner = 1, math.prod(shape[a] for a in range(len(shape)) if a not in axes)
    if count == 0:  # nothing to add: every output is 0 (a mean, 0 / 0)
        return lambda x: np.full(outer * inner, np.float32(np.nan) if mean else 0, np.float32)

    def run(x):
        if order is not None:
            x = np.transpose(x, order)
        values = np.ascontiguousarray(x, np.float32).reshape(outer, count, inner)
        out = np.empty((outer, inner), np.float32)
        sum_in_order_f32(values, out, mean)
        return out

    return run


def _mean(x, axes, keep):
    """Integer MEAN: an int64 sum divided with C's truncation toward zero."""
    count = math.prod(x.shape[a] for a in axes)  # (np.prod of a list: ~4 us a call)
    total = np.sum(x, axis=axes, keepdims=keep, dtype=np.int64)
    return np.sign(total) * (np.abs(total) // max(count, 1))


@op("MEAN",
    kernels=integer_kernels("reduce_int:mean"), quantized=Quantized(REQUANT, 2, int16=3))
def mean(ctx: OpContext) -> Prepared:
    return _reduction(ctx, _mean, NUMBERS, quantized=True, ordered_sum="mean")


@op("SUM",
    kernels=integer_kernels("reduce_int:sum"), quantized=Quantized(REQUANT, 2))
def sum_(ctx: OpContext) -> Prepared:
    return _reduction(ctx, lambda x, axes, keep: np.sum(x, axis=axes, keepdims=keep,
                                                        dtype=x.dtype),
                      NUMBERS, quantized=True, ordered_sum="sum")


@op("REDUCE_PROD")
def reduce_prod(ctx: OpContext) -> Prepared:
    return _reduction(ctx, lambda x, axes, keep: np.prod(x, axis=axes, keepdims=keep,
                                                         dtype=x.dtype), NUMBERS, quantized=True)


def _lowest(dtype):
    return np.finfo(dtype).min if dtype.kind == "f" else np.iinfo(dtype).min


def _highest(dtype):
    return np.finfo(dtype).max if dtype.kind == "f" else np.iinfo(dtype).max


@op("REDUCE_MAX", quantized=Quantized(SAME, 2, int16=3))
def reduce_max(ctx: OpContext) -> Prepared:
    # an empty reduction yields the type's lowest value, TFLite's initial value
    return _reduction(ctx, lambda x, axes, keep: np.max(
        x, axis=axes, keepdims=keep, initial=_lowest(x.dtype)), ORDERED)


@op("REDUCE_MIN", quantized=Quantized(SAME, 2, int16=3))
def reduce_min(ctx: OpContext) -> Prepared:
    return _reduction(ctx, lambda x, axes, keep: np.min(
        x, axis=axes, keepdims=keep, initial=_highest(x.dtype)), ORDERED)


@op("REDUCE_ANY")
def reduce_any(ctx: OpContext) -> Prepared:
    return _reduction(ctx, lambda x, axes, keep: np.any(x, axis=axes, keepdims=keep), ("bool",))


@op("REDUCE_ALL")
def reduce_all(ctx: OpContext) -> Prepared:
    return _reduction(ctx, lambda x, axes, keep: np.all(x, axis=axes, keepdims=keep), ("bool",))
