"""FULLY_CONNECTED, float32: out = x.reshape(-1, D) @ W.T + bias, through NumPy's BLAS matmul.

Quantized inputs and hybrid models (float32 input, int8 weights) go to `fully_connected_int`.
"""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared, register_op
from .common import (
    NONE,
    RELU,
    RELU6,
    RELU_N1_TO_1,
    float_activation,
    fused_activation,
    is_quantized,
    quantized_path,
)

DEFAULT_WEIGHTS_FORMAT = 0
# TFLite's fully_connected.cc accepts only these fused activations
ACTIVATIONS = (NONE, RELU, RELU_N1_TO_1, RELU6)


@register_op("FULLY_CONNECTED")
def fully_connected(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2, 3)
    x, w = ctx.input(0), ctx.input(1)
    ctx.expect_rank(w, 2)
    out_shape = _output_shape(ctx, x.shape, w.shape)
    weights_format = getattr(ctx.options, "weightsFormat", DEFAULT_WEIGHTS_FORMAT)
    if weights_format != DEFAULT_WEIGHTS_FORMAT:
        raise ctx.unsupported(f"weights format {weights_format} (only DEFAULT is implemented)")
    if fused_activation(ctx) not in ACTIVATIONS:
        raise ctx.invalid(f"fused activation {fused_activation(ctx)} is not allowed on "
                          f"FULLY_CONNECTED")
    if is_quantized(x) or (x.dtype == "float32" and w.dtype != "float32"):
        return quantized_path(ctx, "fully_connected")
    ctx.expect_dtype(x, "float32")
    ctx.expect_dtype(w, "float32")
    _check_bias(ctx, w.shape[0])
    activation = float_activation(ctx)
    depth = w.shape[1]

    def run(x, w, b=None):
        out = x.reshape(-1, depth) @ w.T
        if b is not None:
            out += b.reshape(-1)
        return activation(out.reshape(out_shape))

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


def _output_shape(ctx: OpContext, x_shape, w_shape) -> tuple[int, ...]:
    """[batch, O] with batch = size(x) / D; keepNumDims keeps x's leading dims instead."""
    units, depth = w_shape
    size = int(np.prod(x_shape))
    if depth == 0 or size % depth:
        raise ctx.invalid(f"input {x_shape} ({size} elements) does not split into rows of "
                          f"the weights' depth {depth}")
    if getattr(ctx.options, "keepNumDims", False):
        if not x_shape or x_shape[-1] != depth:
            raise ctx.invalid(f"keepNumDims needs the input's last dim {x_shape} to be the "
                              f"weights' depth {depth}")
        return tuple(x_shape[:-1]) + (units,)
    return (size // depth, units)


def _check_bias(ctx: OpContext, units: int) -> None:
    bias = ctx.optional_input(2)
    if bias is not None:
        ctx.expect_dtype(bias, "float32")
        if int(np.prod(bias.shape)) != units:
            raise ctx.invalid(f"bias has shape {bias.shape} for {units} output units")
