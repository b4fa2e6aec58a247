"""Integer bit ops: RIGHT_SHIFT, BITWISE_XOR, and BITCAST (a reinterpretation of the bytes)."""

from __future__ import annotations

import numpy as np

from ..ir import numpy_dtype
from ..runtime.registry import OpContext, Prepared
from .common import broadcast_shape
from .opdef import op

INTEGERS = ("int8", "uint8", "int16", "uint16", "int32", "uint32")
BITCASTABLE = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32",
               "uint32", "int64", "uint64", "bool")


def _binary(ctx: OpContext, types) -> tuple:
    ctx.expect_inputs(2)
    a, b = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(a, *types)
    if b.dtype != a.dtype:
        raise ctx.invalid(f"inputs are {a.dtype} and {b.dtype}; they must match")
    return a, broadcast_shape(ctx, a.shape, b.shape)


@op("RIGHT_SHIFT")
def right_shift(ctx: OpContext) -> Prepared:
    """x >> y, arithmetic for signed types, y clamped to [0, bits - 1] (TFLite's RightShift)."""
    x, shape = _binary(ctx, INTEGERS)
    bits = np.dtype(x.dtype).itemsize * 8

    def run(a, b):
        return np.right_shift(a, np.clip(b, 0, bits - 1).astype(a.dtype))

    return Prepared(run, [ctx.output_spec(0, shape, x.dtype)])


@op("BITWISE_XOR")
def bitwise_xor(ctx: OpContext) -> Prepared:
    x, shape = _binary(ctx, INTEGERS)
    return Prepared(np.bitwise_xor, [ctx.output_spec(0, shape, x.dtype)])


@op("BITCAST")
def bitcast(ctx: OpContext) -> Prepared:
    """The input's bytes read as the output's type. A wider output type consumes the last
    axis (which must hold exactly the ratio); a narrower one appends an axis of the ratio."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    out_dtype = ctx.outputs[0].dtype
    ctx.expect_dtype(x, *BITCASTABLE)
    if out_dtype not in BITCASTABLE:
        raise ctx.unsupported(f"BITCAST to {out_dtype}")
    size_in, size_out = numpy_dtype(x.dtype).itemsize, numpy_dtype(out_dtype).itemsize
    if size_in == size_out:
        shape = x.shape
    elif size_in > size_out:
        shape = x.shape + (size_in // size_out,)
    elif x.shape and x.shape[-1] * size_in == size_out:
        shape = x.shape[:-1]
    else:
        raise ctx.invalid(f"cannot bitcast {x.dtype} {x.shape} to {out_dtype}: the last axis "
                          f"must hold {size_out // size_in} values")
    target = numpy_dtype(out_dtype)
    return Prepared(lambda a: np.ascontiguousarray(a).view(target).reshape(shape),
                    [ctx.output_spec(0, shape, out_dtype)])
