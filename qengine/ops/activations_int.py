"""Quantized activations as TFLite's reference kernels compute them on int8.

LOGISTIC, TANH, ELU and GELU read a 256-entry table built in prepare (LUTPopulate in float32);
RELU/RELU6/RELU_N1_TO_1/RELU_0_TO_1 (ReluX), LEAKY_RELU, PRELU and HARD_SWISH requantize
with multipliers computed as activations.cc's Prepare functions compute them.
"""

from __future__ import annotations

import math

import numpy as np

from qengine.kernels import activations as kernels
from qengine.kernels import xnnpack
from qengine.kernels.libm import libm

from ..runtime.registry import OpContext, Prepared
from .common import broadcast_shape, per_tensor
from .elementwise_int import pair_lookup, value_lookup


def _int8_unary(ctx: OpContext):
    """(input spec, (s_in, zp_in), (s_out, zp_out)) of a one-input int8 -> int8 op."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    out = ctx.output_spec(0, x.shape)
    if x.dtype != "int8" or out.dtype != "int8":
        raise ctx.unsupported(f"quantized {ctx.op.type} from {x.dtype} to {out.dtype}; "
                              f"supported: int8 to int8")
    return x, per_tensor(ctx, x), per_tensor(ctx, out)


INT8_VALUES = np.arange(-128, 128, dtype=np.int8)


def _elementwise(ctx: OpContext, x, kernel, *params) -> Prepared:
    """An op that maps each int8 value alone: `kernel(values, *params)` runs once, at prepare,
    on all 256 int8 values, and every run looks its results up (exact by construction; a
    lookup costs less than the per-element requantization of RELU or LEAKY_RELU)."""
    return value_lookup(ctx, x, kernel(INT8_VALUES, *params))


# -- lookup tables ------------------------------------------------------------------------------

def _elu_f32(x: np.float32) -> np.float32:
    # value < 0.0f ? std::expm1(value) : value, with the float overload (libm expm1f)
    return np.float32(libm.expm1f(float(x))) if x < 0 else x


def _table(ctx: OpContext, make_table) -> Prepared:
    x, (s_in, zp_in), (s_out, zp_out) = _int8_unary(ctx)
    return value_lookup(ctx, x, make_table(s_in, zp_in, s_out, zp_out))


def logistic(ctx: OpContext) -> Prepared:
    if ctx.input(0).dtype == "int16":  # 16x8
        from . import int16_int

        return int16_int.logistic(ctx)
    _, _, (s_out, _) = _int8_unary(ctx)
    if s_out != 1.0 / 256:  # SigmoidPrepare: TF_LITE_ENSURE(output->params.scale == 1./256)
        raise ctx.unsupported(f"int8 LOGISTIC needs output scale 1/256, has {s_out}")
    return _table(ctx, kernels.logistic_lut_int8)


def tanh(ctx: OpContext) -> Prepared:
    if ctx.input(0).dtype == "int16":  # 16x8
        from . import int16_int

        return int16_int.tanh(ctx)
    return _table(ctx, kernels.tanh_lut_int8)


def elu(ctx: OpContext) -> Prepared:
    if ctx.arithmetic == "xnnpack":  # XNNPACK's qs8 ELU table (zero point added before rint)
        return _table(ctx, lambda *params: xnnpack.float_lut(*params, _elu_f32))
    # kernels.activations has no ELU table; its LUTPopulate twin takes the transform
    return _table(ctx, lambda *params: kernels.lut_int8(*params, _elu_f32))


def gelu(ctx: OpContext) -> Prepared:
    """GeluPrepare: the table of GeluTransform (erfc form) or GeluTransformApproximate (tanh)."""
    approximate = bool(getattr(ctx.options, "approximate", False)) if ctx.options else False
    if ctx.input(0).dtype == "int16":  # 16x8
        from . import int16_int

        return int16_int.gelu(ctx, approximate)
    return _table(ctx, lambda *params: kernels.gelu_lut_int8(*params, approximate))


# -- ReluX --------------------------------------------------------------------------------------


def _relu_x(ctx: OpContext, low: float, high: float, int16: bool = False) -> Prepared:
    """QuantizedReluX: clamp(zp_out + MBQM(x - zp_in, float(s_in / s_out)), bounds). `int16`:
    TFLite has an int16 kernel for this op (RELU, RELU6; not RELU_N1_TO_1 or RELU_0_TO_1)."""
    if ctx.input(0).dtype == "int16" and int16:  # 16x8
        from . import int16_int

        return int16_int.relu_x(ctx, low, high)
    x, (s_in, zp_in), (s_out, zp_out) = _int8_unary(ctx)
    return _elementwise(ctx, x, kernels.relu_int8,
                        *kernels.relu_params(s_in, zp_in, s_out, zp_out, low, high))


def relu(ctx: OpContext) -> Prepared:
    return _relu_x(ctx, 0.0, math.inf, int16=True)


def relu6(ctx: OpContext) -> Prepared:
    return _relu_x(ctx, 0.0, 6.0, int16=True)


def relu_n1_to_1(ctx: OpContext) -> Prepared:
    return _relu_x(ctx, -1.0, 1.0)


def relu_0_to_1(ctx: OpContext) -> Prepared:
    return _relu_x(ctx, 0.0, 1.0)


# -- LEAKY_RELU, PRELU, HARD_SWISH -----------------------------------------------------------


def leaky_relu(ctx: OpContext) -> Prepared:
    alpha = float(getattr(ctx.options, "alpha", 0.0) if ctx.options else 0.0)
    if ctx.input(0).dtype == "int16":  # 16x8
        from . import int16_int

        return int16_int.leaky_relu(ctx, alpha)
    x, (s_in, zp_in), (s_out, zp_out) = _int8_unary(ctx)
    if ctx.arithmetic == "xnnpack":  # XNNPACK's vlrelu, unless it refuses the scales
        table = xnnpack.leaky_relu_table(s_in, zp_in, s_out, zp_out, alpha)
        if table is not None:
            return value_lookup(ctx, x, table)
    return _elementwise(ctx, x, kernels.leaky_relu_int8,
                        *kernels.leaky_relu_params(s_in, zp_in, s_out, zp_out, alpha))


def prelu(ctx: OpContext) -> Prepared:
    """PreluPrepare: alpha is broadcast against the input and must not enlarge it."""
    ctx.expect_inputs(2)
    x, alpha = ctx.input(0), ctx.input(1)
    if x.dtype == "int16":  # 16x8
        from . import int16_int

        return int16_int.prelu(ctx)
    out = ctx.output_spec(0, x.shape)
    if x.dtype != "int8" or alpha.dtype != "int8" or out.dtype != "int8":
        raise ctx.unsupported(f"quantized PRELU on {x.dtype} with {alpha.dtype} alpha to "
                              f"{out.dtype}; supported: int8")
    if broadcast_shape(ctx, x.shape, alpha.shape) != x.shape:
        raise ctx.invalid(f"alpha of shape {alpha.shape} would broadcast the input {x.shape} "
                          f"to a larger shape")
    (s_in, zp_in), (s_alpha, zp_alpha), (s_out, zp_out) = (
        per_tensor(ctx, x), per_tensor(ctx, alpha), per_tensor(ctx, out))
    params = kernels.prelu_params(s_in, zp_in, s_alpha, zp_alpha, s_out, zp_out)
    # the output depends only on the (x, alpha) pair: the reference kernel on all 256 x 256
    # pairs, once, is the op (exact by construction)
    return Prepared(pair_lookup(lambda a, b: kernels.prelu_int8(a, b, *params), x.shape,
                                alpha.shape, x.shape, ctx.num_threads, alpha.value),
                    [ctx.output_spec(0, x.shape, "int8")])


def hard_swish(ctx: OpContext) -> Prepared:
    x, (s_in, zp_in), (s_out, zp_out) = _int8_unary(ctx)
    try:
        params = kernels.hard_swish_params(s_in, zp_in, s_out, zp_out)
    except ValueError as e:  # HardSwishPrepare: TF_LITE_ENSURE(output_multiplier_exponent <= 0)
        raise ctx.unsupported(str(e)) from None
    return _elementwise(ctx, x, kernels.hard_swish_int8, *params)
