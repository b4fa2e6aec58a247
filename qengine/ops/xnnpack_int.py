"""`arithmetic="xnnpack"`: int8 CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED as TFLite's
default interpreter runs them, through the XNNPACK delegate (kernels/xnnpack.py):

    acc   = bias[c] + Σ (x - in_zp) * w                (int32, exact, wrapping)
    scale = float32(float32(s_in * s_w[c]) / s_out)
    out   = clamp(rint(float32(acc) * scale) + out_zp)  (ties to even)

With constant filters (and bias) the fast kernels' prepare-time plans run it
(gemm_int8.plan_conv2d_int8_fp32 / depthwise_int8.plan_depthwise_int8_fp32; FULLY_CONNECTED as a 1x1
convolution of 1x1 images): the same exact int32 sums, requantized in registers. Otherwise,
or with QENGINE_KERNELS=reference, the accumulators come from the reference-kernel integer
loops (kernels/hybrid.py), which pad with the input zero point as XNNPACK's indirection
buffers do; both equal (tests/test_xnnpack_fast.py). The conv_int / fully_connected_int
prepare functions validate the model first and call in here.
"""

from __future__ import annotations

import numpy as np

from qengine.kernels import hybrid
from qengine.kernels.depthwise_int8 import plan_depthwise_int8_fp32, run_depthwise_int8
from qengine.kernels.gemm_int8 import (
    FC_GEOMETRY,
    kernel_threads,
    plan_conv2d_int8_fp32,
    run_conv2d_int8,
)
from qengine.kernels.pack import pack_conv_weights, pack_depthwise_weights, pack_fc_weights
from qengine.kernels.xnnpack import requantization_scales, requantize_fp32

from ..qparams import quantize_bound_xnnpack
from ..runtime.registry import OpContext, Prepared
from .common import RELU, RELU6, RELU_N1_TO_1, fused_activation, use_fast_kernels

XNNPACK_MAX_SCALE = 256.0  # xnn_create_* refuse requantization scales >= 256


def activation_range(ctx: OpContext, scale: float, zero_point: int) -> tuple[int, int]:
    """The int8 clamp of the fused activation, from its float range [0, 6], [-1, 1], ..."""
    low, high = {RELU: (0.0, None), RELU6: (0.0, 6.0),
                 RELU_N1_TO_1: (-1.0, 1.0)}.get(fused_activation(ctx), (None, None))
    act_min = -128 if low is None else quantize_bound_xnnpack(low, scale, zero_point)
    act_max = 127 if high is None else quantize_bound_xnnpack(high, scale, zero_point)
    return act_min, act_max


def _scales(ctx: OpContext, in_scale: float, filter_scales, out_scale: float) -> np.ndarray:
    scales = requantization_scales(in_scale, filter_scales, out_scale)
    if not np.all(scales < XNNPACK_MAX_SCALE):
        raise ctx.unsupported(f"requantization scale {scales.max():g} >= 256: XNNPACK refuses "
                              f"it, and TFLite's default interpreter fails to prepare the model")
    return scales


def _requantize(acc: np.ndarray, bias, scales, out_zp, act_min, act_max) -> np.ndarray:
    """acc [..., C] without bias → int8 [..., C]."""
    channels = acc.shape[-1]
    if bias is not None:  # int32 addition that wraps, as XNNPACK's packed bias does
        acc = (acc.astype(np.int64) + np.asarray(bias, np.int64).ravel()).astype(np.int32)
    rows = np.ascontiguousarray(acc.reshape(-1, channels), np.int32)
    return requantize_fp32(rows, scales, out_zp, act_min, act_max).reshape(acc.shape)


def _constant_bias(ctx: OpContext, out_c: int) -> np.ndarray | None:
    """The bias as int32 [out_c] (zeros when absent), or None when it is not a constant."""
    spec = ctx.optional_input(2)
    if spec is None:
        return np.zeros(out_c, np.int32)
    return None if spec.value is None else np.ascontiguousarray(spec.value, np.int32).ravel()


def _fast_plan(ctx: OpContext, out_c: int, make):
    """make(w, bias) at prepare time when the fast kernels are on and the filter and bias are
    constants; else None (the reference loops run)."""
    w, bias = ctx.input(1).value, _constant_bias(ctx, out_c)
    if not use_fast_kernels() or w is None or bias is None:
        return None
    return make(np.ascontiguousarray(w), bias)


def conv(ctx: OpContext, geometry: tuple, out_shape, in_q, filter_scales, out_q,
         depthwise: bool) -> Prepared:
    """CONV_2D (geometry = stride, dilation, padding, out size) or DEPTHWISE_CONV_2D
    (geometry also ends with the depth multiplier)."""
    (in_scale, in_zp), (out_scale, out_zp) = in_q, out_q
    scales = _scales(ctx, in_scale, filter_scales, out_scale)
    act_min, act_max = activation_range(ctx, out_scale, out_zp)
    out_c, threads = out_shape[3], kernel_threads(ctx.num_threads)
    q = (in_zp, scales, out_zp, act_min, act_max)
    if depthwise:
        plan = _fast_plan(ctx, out_c, lambda w, bias: plan_depthwise_int8_fp32(
            pack_depthwise_weights(w), bias, *q, *geometry))
        if plan is not None:
            return Prepared(lambda x, w, b=None: run_depthwise_int8(plan, x, threads),
                            [ctx.output_spec(0, out_shape, "int8")])
    elif ctx.input(0).shape[3] == ctx.input(1).shape[3]:  # grouped: the reference loops
        plan = _fast_plan(ctx, out_c, lambda w, bias: plan_conv2d_int8_fp32(
            pack_conv_weights(w), bias, *q, *geometry))
        if plan is not None:
            return Prepared(lambda x, w, b=None: run_conv2d_int8(plan, x, threads),
                            [ctx.output_spec(0, out_shape, "int8")])
    accumulate = hybrid.depthwise_accumulators if depthwise else hybrid.conv_accumulators

    def run(x, w, b=None):
        offsets = np.full(x.shape[0], in_zp, np.int32)  # the input zero point of every image
        acc = accumulate(np.ascontiguousarray(x), np.ascontiguousarray(w), offsets, *geometry)
        return _requantize(acc, b, scales, out_zp, act_min, act_max)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int8")])


def fully_connected(ctx: OpContext, out_shape, in_q, filter_scales, out_q) -> Prepared:
    (in_scale, in_zp), (out_scale, out_zp) = in_q, out_q
    scales = _scales(ctx, in_scale, filter_scales, out_scale)
    act_min, act_max = activation_range(ctx, out_scale, out_zp)
    units, depth = ctx.input(1).shape
    threads = kernel_threads(ctx.num_threads)
    plan = _fast_plan(ctx, units, lambda w, bias: plan_conv2d_int8_fp32(
        pack_fc_weights(w), bias, in_zp, scales, out_zp, act_min, act_max, *FC_GEOMETRY))
    if plan is not None:  # a 1x1 convolution of [rows, 1, 1, depth]
        def run_fast(x, w, b=None):
            pixels = np.ascontiguousarray(x, np.int8).reshape(-1, 1, 1, depth)
            return run_conv2d_int8(plan, pixels, threads).reshape(out_shape)

        return Prepared(run_fast, [ctx.output_spec(0, out_shape, "int8")])

    def run(x, w, b=None):
        rows = np.ascontiguousarray(x, np.int8).reshape(-1, w.shape[1])
        # Σ w * (x - in_zp) = Σ w * x - in_zp * Σ w, exact in int32 modular arithmetic
        acc = hybrid.matmul_accumulators(rows, np.ascontiguousarray(w, np.int8))
        row_sums = np.asarray(w, np.int64).sum(axis=1)
        acc = (acc.astype(np.int64) - np.int64(in_zp) * row_sums).astype(np.int32)
        return _requantize(acc, b, scales, out_zp, act_min, act_max).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int8")])
