"""REDUCE_WINDOW: init combined with every element of each (strided, dilated) window."""

from __future__ import annotations

import itertools

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .opdef import op

# ReduceWindowFunction: ADD, MUL, MINIMUM, MAXIMUM, ALL, ANY
FUNCTIONS = {1: np.add, 2: np.multiply, 3: np.minimum, 4: np.maximum, 5: np.logical_and,
             6: np.logical_or}
TYPES = ("float32", "int8", "int16", "int32", "int64", "uint8", "bool")


@op("REDUCE_WINDOW")
def reduce_window(ctx: OpContext) -> Prepared:
    """out[o] = init f x[o*s + k*d] f ... over the window offsets k in row-major order, which
    is the order TFLite's kernel folds them in (so float sums round alike)."""
    ctx.expect_inputs(5)
    x, init = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(x, *TYPES)
    if init.dtype != x.dtype or int(np.prod(init.shape)) != 1:
        raise ctx.invalid(f"init value {init.dtype} {init.shape} must be one {x.dtype}")
    rank = len(x.shape)
    shape, strides, dilations = (
        [int(v) for v in np.ravel(ctx.constant(i, what))]
        for i, what in ((2, "window shape"), (3, "window strides"), (4, "window dilations")))
    if not len(shape) == len(strides) == len(dilations) == rank or min(
            shape + strides + dilations, default=1) < 1:
        raise ctx.invalid(f"window {shape}, strides {strides} and dilations {dilations} need "
                          f"one value >= 1 per input axis ({rank})")
    code = int(getattr(ctx.op.options2, "reduceFunction", 0))  # a builtin_options_2 table
    if code not in FUNCTIONS:
        raise ctx.invalid(f"reduce function {code} is not one of ADD, MUL, MINIMUM, MAXIMUM, "
                          f"ALL, ANY")
    if (code in (5, 6)) != (x.dtype == "bool"):
        raise ctx.unsupported(f"reduce function {code} on {x.dtype}")
    fold = FUNCTIONS[code]
    out_shape = tuple(max((n - (w - 1) * d - 1) // s + 1, 0)
                      for n, w, d, s in zip(x.shape, shape, dilations, strides))

    def run(values, start, *_):
        acc = np.full(out_shape, start.reshape(-1)[0], values.dtype)
        for offsets in itertools.product(*(range(w) for w in shape)):
            window = tuple(slice(k * d, k * d + (o - 1) * s + 1, s) for k, d, o, s in
                           zip(offsets, dilations, out_shape, strides))
            acc = fold(acc, values[window]).astype(values.dtype)
        return acc

    return Prepared(run, [ctx.output_spec(0, out_shape, x.dtype)])
