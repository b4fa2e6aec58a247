"""ADD_N, ATAN2 and BROADCAST_ARGS."""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .common import broadcast_shape
from .opdef import op


@op("ADD_N")
def add_n(ctx: OpContext) -> Prepared:
    """out = x0 + x1 + ... added in input order (TFLite's reference AddN), same shapes."""
    if len(ctx.inputs) < 2:
        raise ctx.invalid("ADD_N needs at least two inputs (as TFLite's kernel)")
    first = ctx.input(0)
    ctx.expect_dtype(first, "float32", "int32")
    for i in range(1, len(ctx.inputs)):
        spec = ctx.input(i)
        if spec.dtype != first.dtype or spec.shape != first.shape:
            raise ctx.invalid(f"input {i} is {spec.dtype} {spec.shape}; ADD_N needs every input "
                              f"{first.dtype} {first.shape}")

    def run(*arrays):
        total = arrays[0].copy()
        for a in arrays[1:]:
            total += a  # int32 wraps as in C
        return total

    return Prepared(run, [ctx.output_spec(0, first.shape, first.dtype)])


@op("ATAN2")
def atan2(ctx: OpContext) -> Prepared:
    """atan2(y, x) elementwise, in the inputs' type (float32 or float64)."""
    ctx.expect_inputs(2)
    y, x = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(y, "float32", "float64")
    if x.dtype != y.dtype:
        raise ctx.invalid(f"inputs are {y.dtype} and {x.dtype}; they must match")
    shape = broadcast_shape(ctx, y.shape, x.shape)
    return Prepared(np.arctan2, [ctx.output_spec(0, shape, y.dtype)])


@op("BROADCAST_ARGS")
def broadcast_args(ctx: OpContext) -> Prepared:
    """The shape two shapes broadcast to (a 1-D int32 or int64 tensor)."""
    ctx.expect_inputs(2)
    a, b = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(a, "int32", "int64")
    if b.dtype != a.dtype or len(a.shape) != 1 or len(b.shape) != 1:
        raise ctx.invalid("BROADCAST_ARGS takes two 1-D shapes of one type")
    rank = max(a.shape[0], b.shape[0])

    def run(s0, s1):
        return np.asarray(broadcast_shape(ctx, tuple(s0.tolist()), tuple(s1.tolist())),
                          s0.dtype).reshape(rank)

    return Prepared(run, [ctx.output_spec(0, (rank,), a.dtype)])
