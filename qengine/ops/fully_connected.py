"""FULLY_CONNECTED: the shared checks, the float32 kernel and the definition keying the hybrid,
int8 and 16x8 kernels of `fully_connected_int`.

Float with constant weights runs the float conv GEMM of kernels/float_gemm.py as a 1x1 conv
over the rows: in TFLite's reference order (each sum from 0.0 over the depth, every product
rounded, then + bias: reference_ops::FullyConnected, bit for bit), or under
arithmetic="xnnpack" XNNPACK's (each sum from the bias by fused multiply-adds). Weights that
are computed go through NumPy's BLAS matmul (out = x.reshape(-1, D) @ W.T + bias), whose
blocked, fused sums differ from both in the last bits.
"""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .common import (
    NONE,
    RELU,
    RELU6,
    RELU_N1_TO_1,
    float_activation_bounds,
    fused_activation,
)
from .opdef import (
    FLOAT32,
    HYBRID,
    INT8,
    INT16,
    OI,
    REQUANT,
    XNNPACK,
    Hybrid,
    OpDef,
    Quantized,
    Weight,
    define,
)

DEFAULT_WEIGHTS_FORMAT = 0
# TFLite's fully_connected.cc accepts only these fused activations
ACTIVATIONS = (NONE, RELU, RELU_N1_TO_1, RELU6)


def _shared(ctx: OpContext) -> tuple:
    """The checks every FULLY_CONNECTED gets, whatever its dtypes."""
    ctx.expect_inputs(2, 3)
    x, w = ctx.input(0), ctx.input(1)
    ctx.expect_rank(w, 2)
    _output_shape(ctx, x.shape, w.shape)  # raises if the shapes do not fit
    weights_format = getattr(ctx.options, "weightsFormat", DEFAULT_WEIGHTS_FORMAT)
    if weights_format != DEFAULT_WEIGHTS_FORMAT:
        raise ctx.unsupported(f"weights format {weights_format} (only DEFAULT is implemented)")
    if fused_activation(ctx) not in ACTIVATIONS:
        raise ctx.invalid(f"fused activation {fused_activation(ctx)} is not allowed on "
                          f"{ctx.op.type}")
    return ()


def _float(ctx: OpContext) -> Prepared:
    x, w = ctx.input(0), ctx.input(1)
    out_shape = _output_shape(ctx, x.shape, w.shape)
    ctx.expect_dtype(x, "float32")
    ctx.expect_dtype(w, "float32")
    _check_bias(ctx, w.shape[0])
    low, high = float_activation_bounds(ctx)
    units, depth = w.shape
    no_bias = np.zeros(units, np.float32)  # TFLite adds a bias of 0.0f when there is none
    bias = ctx.optional_input(2)
    if w.value is not None and (bias is None or bias.value is not None):
        bias = no_bias if bias is None else np.asarray(bias.value, np.float32).reshape(-1)
        return _float_gemm(ctx, out_shape, np.asarray(w.value, np.float32), bias, low, high)
    from qengine.kernels.float_conv import bias_clamp_f32

    def run(x, w, b=None):
        out = np.matmul(x.reshape(-1, depth), w.T)  # float32 [batch, units], fresh
        bias_clamp_f32(out, no_bias if b is None else b.reshape(-1), low, high)  # one pass
        return out.reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


# Up to this many multiply-adds a reference-order float FULLY_CONNECTED runs
# `fully_connected_f32_small` (one call of 5 arguments) instead of the GEMM: a wake-word head's
# 1x64 -> 128 layer took ~5 us more through the GEMM's call than through BLAS
SMALL_FC_MACS = 1 << 16


def _float_gemm(ctx: OpContext, out_shape, w: np.ndarray, bias: np.ndarray, low: float,
                high: float) -> Prepared:
    """The float conv kernel on the rows of x as the pixels of a 1x1 conv ([1, rows, 1, D] ->
    [1, rows, 1, units]), in the reference's or XNNPACK's order as ctx.arithmetic says; small
    layers in the reference's order by `fully_connected_f32_small`."""
    from .common import ConvGeometry
    from .conv import conv_float_direct

    units, depth = w.shape
    rows = int(np.prod(ctx.input(0).shape)) // depth
    if ctx.arithmetic != XNNPACK and (rows == 1 or rows * depth * units <= SMALL_FC_MACS):
        return _float_small(ctx, out_shape, w, bias, low, high)
    g = ConvGeometry(1, rows, 1, rows, 1, 0, 0, 1, 1, 1, 1, 1, 1)
    conv = conv_float_direct(ctx, g, (1, rows, 1, units), w.reshape(units, 1, 1, depth), bias,
                             low, high)

    def run(x, *constants):
        return conv.run(x.reshape(1, rows, 1, depth), None).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


def _float_small(ctx: OpContext, out_shape, w: np.ndarray, bias: np.ndarray, low: float,
                 high: float) -> Prepared:
    from qengine.kernels.float_ops import fully_connected_f32_small

    depth = w.shape[1]
    w_t = np.ascontiguousarray(w.T)  # [depth, units]: the kernel's rows of weights
    low, high = np.float32(low), np.float32(high)

    def run(x, *constants):
        rows = np.ascontiguousarray(x, np.float32).reshape(-1, depth)
        return fully_connected_f32_small(rows, w_t, bias, low, high).reshape(out_shape)

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


def _accumulator(op, index: int, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """compare's headroom audit: acc[b, o] = sum_d w[o, d] * (x[b, d] - zp_x), exactly."""
    return x.reshape(-1, w.shape[1]) @ w.T


FULLY_CONNECTED = define(OpDef(
    "FULLY_CONNECTED", shared=_shared,
    kernels={FLOAT32: _float, HYBRID: "fully_connected_int:hybrid_fully_connected",
             INT8: "fully_connected_int:int8", INT16: "fully_connected_int:int16"},
    weight=Weight(1, 0, OI, types=("int8", "int4", "int2"), blockwise=True),
    quantized=Quantized(REQUANT, 4, int16=4, bias=2, bias_optional=True),
    # the converter's default asymmetric_quantize_inputs is version 9 with per-tensor weights
    hybrid=Hybrid(per_tensor=3, per_channel=12, asymmetric_inputs=9),
    accumulator=_accumulator))
