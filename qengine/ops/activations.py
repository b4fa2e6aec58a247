"""Float activations: RELU family, LEAKY_RELU, PRELU, ELU, HARD_SWISH, GELU, LOGISTIC, TANH.

Each computes in float32 with the formula of TFLite's reference kernel (quoted per op).
Quantized inputs go to `qengine.ops.activations_int`.
"""

from __future__ import annotations

import math

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .common import broadcast_shape, is_quantized, quantized_path, select_kernels, where
from .opdef import FIXED, REQUANT, Quantized, integer_kernels, op


def _elementwise(ctx: OpContext, compute) -> Prepared:
    """One float32 input, one output of its shape: `compute(x)`."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    if is_quantized(x):
        return quantized_path(ctx, "activations")
    ctx.expect_dtype(x, "float32")

    def run(value):
        with np.errstate(all="ignore"):  # overflow to inf is the float result, as in C++
            return np.asarray(compute(value), dtype=np.float32)

    return Prepared(run, [ctx.output_spec(0, x.shape, "float32")])


def _clamp(low, high):
    return lambda x: np.clip(x, np.float32(low), np.float32(high))  # NaN stays NaN


@op("RELU",
    kernels=integer_kernels("activations_int:relu"),
    quantized=Quantized(REQUANT, 2, int16=3), scale_equivariant=True)
def relu(ctx: OpContext) -> Prepared:
    return _elementwise(ctx, lambda x: np.maximum(x, np.float32(0)))


@op("RELU6",
    kernels=integer_kernels("activations_int:relu6"), quantized=Quantized(REQUANT, 2, int16=3))
def relu6(ctx: OpContext) -> Prepared:
    return _elementwise(ctx, _clamp(0, 6))


@op("RELU_N1_TO_1",
    kernels=integer_kernels("activations_int:relu_n1_to_1"), quantized=Quantized(REQUANT, 1))
def relu_n1_to_1(ctx: OpContext) -> Prepared:
    return _elementwise(ctx, _clamp(-1, 1))


@op("RELU_0_TO_1", kernels=integer_kernels("activations_int:relu_0_to_1"))
def relu_0_to_1(ctx: OpContext) -> Prepared:
    return _elementwise(ctx, _clamp(0, 1))


@op("LEAKY_RELU",
    kernels=integer_kernels("activations_int:leaky_relu"), quantized=Quantized(REQUANT, 2, int16=2))
def leaky_relu(ctx: OpContext) -> Prepared:
    from qengine.kernels.float_ops import leaky_relu_f32

    alpha = np.float32(getattr(ctx.options, "alpha", 0.0) if ctx.options else 0.0)

    def compute(x):  # x > 0 ? x : x * alpha, one compiled pass
        return leaky_relu_f32(np.ascontiguousarray(x, np.float32).reshape(-1), alpha) \
            .reshape(np.shape(x))

    return _elementwise(ctx, compute)


@op("PRELU",
    kernels=integer_kernels("activations_int:prelu"),
    quantized=Quantized(REQUANT, 1, int16=1, int8_inputs=(1,)))
def prelu(ctx: OpContext) -> Prepared:
    """x >= 0 ? x : x * alpha, with alpha broadcast against x; like TFLite, the broadcast
    must not change x's shape."""
    ctx.expect_inputs(2)
    x, alpha = ctx.input(0), ctx.input(1)
    if is_quantized(x):
        return quantized_path(ctx, "activations")
    ctx.expect_dtype(x, "float32")
    ctx.expect_dtype(alpha, "float32")
    if broadcast_shape(ctx, x.shape, alpha.shape) != x.shape:
        raise ctx.invalid(f"alpha of shape {alpha.shape} would broadcast the input {x.shape} "
                          f"to a larger shape")

    from qengine.kernels.elementwise import trailing_period
    from qengine.kernels.float_ops import prelu_f32

    period = trailing_period(x.shape, alpha.shape)

    def run(value, slope):
        if period and value.shape == x.shape:  # one Numba pass (e.g. a slope per channel)
            rows = np.ascontiguousarray(value).reshape(-1, period)
            return prelu_f32(rows, np.ascontiguousarray(slope).reshape(-1, period)[0]).reshape(
                value.shape)
        return np.asarray(where(value >= 0, value, value * slope), dtype=np.float32)

    return Prepared(run, [ctx.output_spec(0, x.shape, "float32")])


@op("ELU",
    kernels=integer_kernels("activations_int:elu"), quantized=Quantized(REQUANT, 1))
def elu(ctx: OpContext) -> Prepared:
    return _elementwise(ctx, lambda x: where(x < 0, np.expm1(x), x))  # x < 0 ? expm1(x) : x


@op("HARD_SWISH",
    kernels=integer_kernels("activations_int:hard_swish"), quantized=Quantized(REQUANT, 1))
def hard_swish(ctx: OpContext) -> Prepared:
    return _elementwise(ctx, hard_swish_values)


def each_value(kernel_name: str):
    """compute(x): the float32 kernel `kernel_name` of kernels/float_ops.py, which maps a flat
    vector value by value, on x of any shape (Numba imported only when an op needs it)."""
    def compute(x):
        from qengine.kernels import float_ops

        x = np.ascontiguousarray(x, np.float32)
        return getattr(float_ops, kernel_name)(x.reshape(-1)).reshape(x.shape)

    return compute


hard_swish_values = each_value("hard_swish_f32")  # x * min(6, max(0, x + 3)) / 6


SQRT_2_OVER_PI = np.float32(math.sqrt(2 / math.pi))


def _gelu_tanh(x):
    # 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
    inner = SQRT_2_OVER_PI * (x + np.float32(0.044715) * x * x * x)
    return np.float32(0.5) * x * (np.float32(1) + np.tanh(inner))


# 0.5 * x * erfc(-x / sqrt(2)): TFLite's cancellation-free form of 0.5 * x * (1 + erf(...))
_gelu_erf = each_value("gelu_erf_f32")


@op("GELU",
    kernels=integer_kernels("activations_int:gelu"), quantized=Quantized(REQUANT, 2, int16=2))
def gelu(ctx: OpContext) -> Prepared:
    approximate = bool(getattr(ctx.options, "approximate", False)) if ctx.options else False
    return _elementwise(ctx, _gelu_tanh if approximate else _gelu_erf)


# TFLite's float Logistic: beyond these the result is 1, or exp(x) to float precision
LOGISTIC_UPPER, LOGISTIC_LOWER = np.float32(16.619047164916992188), np.float32(-9.0)


def _logistic(x):
    logistic_select = select_kernels().logistic_select
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty_like(x)
    e = np.negative(x)
    with np.errstate(over="ignore"):  # exp(-x) of a very negative x is inf: the low tail
        np.exp(e, out=e)  # (in place: one temporary instead of two)
    logistic_select(x.reshape(-1), e.reshape(-1), LOGISTIC_UPPER, LOGISTIC_LOWER,
                    out.reshape(-1))
    return out


@op("LOGISTIC",
    kernels=integer_kernels("activations_int:logistic"),
    quantized=Quantized(FIXED, 2, int16=3, fixed=(1 / 256, -128), fixed16=(1 / 32768, 0)))
def logistic(ctx: OpContext) -> Prepared:
    return _elementwise(ctx, _logistic)


@op("TANH",
    kernels=integer_kernels("activations_int:tanh"),
    quantized=Quantized(FIXED, 2, int16=3, fixed=(1 / 128, 0), fixed16=(1 / 32768, 0)))
def tanh(ctx: OpContext) -> Prepared:
    return _elementwise(ctx, np.tanh)
