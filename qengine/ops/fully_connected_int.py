"""Int8, 16x8 and hybrid FULLY_CONNECTED (the kernels `fully_connected.py`'s OpDef keys).

Int8 (fully_connected.cc, reference_integer_ops::FullyConnected[PerChannel], LiteRT >= 1.3):

    acc = Σ_d (w[o,d] - w_zp) * (x[b,d] - in_zp) + bias[o]     (w_zp = 0 when per-channel)
    out = clamp(round(double(acc) * double(s_in) * double(s_w[o]) / double(s_out)) + out_zp)

Hybrid, float input with int8 weights (EvalHybridDense): each batch row is quantized on the fly,
symmetric or (asymmetric_quantize_inputs) asymmetric, then

    out = bias[o] + float(dot - zp_b * rowsum[o]) * scale[b, o]          (float32)
    scale = sf_b * s_w (per-tensor)   or   s_w[o] * sf_b (per-channel, one float32 product)

followed by the fused activation as tensor_utils::ApplyActivationToVector applies it
(`_vector_activation`: no clamp for NONE, so ±inf stay; NaN and -0.0 through std::max).

INT4 and INT2 filters (per-tensor or per-channel, zero point 0) are unpacked to int8 by TFLite
before either path runs, so they take the int8 arithmetic above unchanged. A constant INT4
filter with BlockwiseQuantization and a float input runs TFLite's blockwise kernel instead
(`qengine.kernels.lowbit.blockwise_hybrid_fc`; the optimized kernels' EvalBlockwise4Bit).
"""

from __future__ import annotations

import numpy as np

from qengine.kernels import hybrid
from qengine.kernels.fully_connected import fully_connected_int8
from qengine.kernels.gemm_int8 import (
    fc_accumulator_plan,
    fully_connected_hybrid_fast,
    fully_connected_int8_fast,
    kernel_threads,
)
from qengine.kernels.lowbit import blockwise_hybrid_fc
from qengine.kernels.pack import pack_fc_weights
from qengine.kernels.requant import hybrid_epilogue

from ..lowbit import blockwise_fc_problem
from ..runtime.registry import OpContext, Prepared, Spec
from . import int16_int, xnnpack_int
from .common import (
    NONE,
    RELU,
    RELU6,
    RELU_N1_TO_1,
    expect_filter_type,
    float_activation,
    float_activation_bounds,
    fused_activation,
    quantized_activation_range,
    required_per_tensor,
    use_fast_kernels,
)
from .fully_connected import _output_shape

BIAS_SCALE_TOLERANCE = 0.02  # kernel_util.cc GetQuantizedConvolutionMultipler


def int16(ctx: OpContext) -> Prepared:  # 16x8
    _expect_output(ctx, "int16")
    x, w = ctx.input(0), ctx.input(1)
    return int16_int.fully_connected(ctx, _output_shape(ctx, x.shape, w.shape))


def _weight_scales(ctx: OpContext, w: Spec) -> np.ndarray:
    expect_filter_type(ctx, w)
    if w.value is not None and w.value.shape != w.shape:
        raise ctx.unsupported(f"sparse weights {w.name!r} (densify them first)")
    q = w.quantization
    if q is None or q.scale.size == 0:
        raise ctx.invalid(f"{w.dtype} weights {w.name!r} have no quantization parameters")
    if w.dtype != "int8" and np.any(q.zero_point):
        raise ctx.invalid(f"{w.dtype} weights {w.name!r} have a non-zero zero point; TFLite's "
                          f"FULLY_CONNECTED requires 0 for int4/int2 filters")
    units = w.shape[0]
    if q.scale.size > 1 and (q.scale.size != units or q.axis != 0):
        raise ctx.invalid(f"weights {w.name!r} have {q.scale.size} scales along axis {q.axis};"
                          f" per-channel weights need {units} scales along axis 0")
    return q.scale.astype(np.float32)


def _bias_spec(ctx: OpContext, dtype: str, units: int) -> Spec | None:
    spec = ctx.optional_input(2)
    if spec is not None:
        ctx.expect_dtype(spec, dtype)
        if int(np.prod(spec.shape)) != units:
            raise ctx.invalid(f"bias has shape {spec.shape} for {units} output units")
    return spec


def _expect_output(ctx: OpContext, dtype: str) -> None:
    if ctx.outputs[0].dtype != dtype:
        raise ctx.unsupported(f"{ctx.input(0).dtype} input with {ctx.outputs[0].dtype} output;"
                              f" expected {dtype}")


# -- int8 --------------------------------------------------------------------------------------


def _check_bias_scale(ctx: OpContext, bias: Spec | None, in_scale, w_scale, out_scale) -> None:
    """Per-tensor weights: |s_in*s_w - s_bias| / s_out <= 0.02, s_in*s_w in float32."""
    if bias is None:
        return
    q = bias.quantization
    bias_scale = float(q.scale[0]) if q is not None and q.scale.size == 1 else 0.0
    product = float(np.float32(in_scale) * np.float32(w_scale))
    if abs(product - bias_scale) / out_scale > BIAS_SCALE_TOLERANCE:
        raise ctx.invalid(f"bias scale {bias_scale:g} is not input scale x weight scale "
                          f"({product:g}) within {BIAS_SCALE_TOLERANCE:g} of the output scale")


def int8(ctx: OpContext) -> Prepared:
    x, w = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(x, "int8")
    _expect_output(ctx, "int8")
    out_shape = _output_shape(ctx, x.shape, w.shape)
    units, depth = w.shape
    scales = _weight_scales(ctx, w)
    bias = _bias_spec(ctx, "int32", units)
    in_scale, in_zp = required_per_tensor(ctx, x)
    out_scale, out_zp = required_per_tensor(ctx, ctx.output_spec(0, None))
    w_zp = 0  # per-channel weights are symmetric; TFLite ignores their zero points
    if scales.size == 1:
        w_zp = int(w.quantization.zero_point[0])  # per-tensor: weights_offset = -zp
        _check_bias_scale(ctx, bias, in_scale, scales[0], out_scale)
    eff = np.float64(in_scale) * np.broadcast_to(scales, (units,)).astype(np.float64) \
        / np.float64(out_scale)
    act_min, act_max = quantized_activation_range(ctx, out_scale, out_zp, "int8")
    # XNNPACK takes only symmetric weights; the default interpreter runs other FCs with its
    # optimized kernel, whose rounding qengine does not reproduce (the reference path follows)
    if ctx.arithmetic == "xnnpack" and w_zp == 0:
        return xnnpack_int.fully_connected(ctx, out_shape, (in_scale, in_zp),
                                           np.broadcast_to(scales, (units,)),
                                           (out_scale, out_zp))

    packed = pack_fc_weights(np.ascontiguousarray(w.value)) \
        if use_fast_kernels() and w.value is not None else None
    plan = None if packed is None else fc_accumulator_plan(packed, in_zp)
    threads = kernel_threads(ctx.num_threads)  # (asking Numba costs ~2 us a run)

    def run(x, w, b=None):
        b = np.zeros(units, np.int32) if b is None else np.ascontiguousarray(b, np.int32).ravel()
        rows = np.ascontiguousarray(x.reshape(-1, depth))
        if packed is not None:
            out = fully_connected_int8_fast(rows, packed, b, in_zp, w_zp, eff, out_zp,
                                            act_min, act_max, threads, plan)
        else:
            out = fully_connected_int8(rows, w, b, in_zp, w_zp, eff, out_zp, act_min, act_max)
        return out.reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int8")])


# -- hybrid ------------------------------------------------------------------------------------


def hybrid_fully_connected(ctx: OpContext) -> Prepared:
    x, w = ctx.input(0), ctx.input(1)
    _expect_output(ctx, "float32")
    out_shape = _output_shape(ctx, x.shape, w.shape)
    if w.quantization is not None and w.quantization.blockwise is not None:
        return _blockwise_hybrid(ctx, out_shape)
    units, depth = w.shape
    scales = _weight_scales(ctx, w)
    _bias_spec(ctx, "float32", units)
    asymmetric = bool(getattr(ctx.options, "asymmetricQuantizeInputs", False))
    activation = _vector_activation(ctx)

    def quantize(x):
        rows = np.ascontiguousarray(x, np.float32).reshape(-1, depth)
        if asymmetric:
            return hybrid.quantize_asymmetric(rows)
        (q, sf), zp = hybrid.quantize_symmetric(rows), np.zeros(len(rows), np.int32)
        return q, sf, zp

    def scale_of(sf):
        if scales.size == 1:
            return (sf * scales[0])[:, None]  # scaling_factors[b] *= filter scale
        return scales[None, :] * sf[:, None]

    rows = int(np.prod(x.shape)) // max(depth, 1)
    if use_fast_kernels() and w.value is not None and depth > 0 and \
            rows * units * depth <= hybrid.SMALL_FC_MACS:
        return _small_hybrid(ctx, out_shape, scales, asymmetric, activation)
    if use_fast_kernels() and w.value is not None:
        packed = pack_fc_weights(np.ascontiguousarray(w.value))  # once, at prepare time
        plan = fc_accumulator_plan(packed)
        row_sums = hybrid.row_sums_sse(np.ascontiguousarray(w.value)).astype(np.int64)
        ones = np.ones(units, np.float32)  # the epilogue's `pre`
        threads = kernel_threads(ctx.num_threads)  # (asking Numba costs ~2 us a run)

        def run_fast(x, w, b=None):
            q, sf, zp = quantize(x)
            zp_sums = (zp[:, None].astype(np.int64) * row_sums).astype(np.int32)  # wraps
            if b is not None:
                b = np.ascontiguousarray(b, np.float32).reshape(-1)
            e = hybrid_epilogue(len(q), units, scale_of(sf), ones, b, zp_sums)
            out = fully_connected_hybrid_fast(q, packed, e, threads, plan)
            return activation(out.reshape(out_shape))

        return Prepared(run_fast, [ctx.output_spec(0, out_shape, "float32")])

    def run(x, w, b=None):
        q, sf, zp = quantize(x)
        acc = hybrid.matmul_accumulators(q, w)
        if np.any(zp):  # dot - zp_b * rowsum[o], in int32
            acc = (acc - zp[:, None].astype(np.int64) * hybrid.row_sums_sse(w)).astype(np.int32)
        out = acc.astype(np.float32) * scale_of(sf)
        if b is not None:
            out = np.asarray(b, np.float32).ravel() + out
        return activation(out.reshape(out_shape))

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


def _small_hybrid(ctx: OpContext, out_shape, scales, asymmetric: bool, activation) -> Prepared:
    """A small hybrid FULLY_CONNECTED as one kernel call (`hybrid.fully_connected_hybrid_small`,
    the same arithmetic as the packed path)."""
    w = ctx.input(1)
    units, depth = w.shape
    codes = np.ascontiguousarray(w.value, np.int8)
    row_sums = hybrid.row_sums_sse(codes)  # int32
    no_bias = np.full(units, -0.0, np.float32)  # x + -0.0 == x, -0.0 included

    def run(x, w, b=None):
        rows = np.ascontiguousarray(x, np.float32).reshape(-1, depth)
        bias = no_bias if b is None else np.ascontiguousarray(b, np.float32).reshape(-1)
        out = hybrid.fully_connected_hybrid_small(rows, codes, scales, row_sums, bias,
                                                  not asymmetric)
        return activation(out.reshape(out_shape))

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


def _vector_activation(ctx: OpContext):
    """tensor_utils::ApplyActivationToVector, what EvalHybridDense applies to its float output
    (not CalculateActivationRange's clamp): NONE is the identity, ±inf included; the ReLUs are
    y = (high < x ? high : x), then (low < y ? y : low), with the float clamp's bounds except
    RELU's, which has no std::min (+inf stays), so NaN becomes low and -0.0 becomes +0.0
    where low is 0. Other codes keep the float clamp (`float_activation`)."""
    code = fused_activation(ctx)
    if code == NONE:
        return lambda x: x
    if code not in (RELU, RELU6, RELU_N1_TO_1):
        return float_activation(ctx)
    low, high = float_activation_bounds(ctx)
    low, high = np.float32(low), np.float32(np.inf if code == RELU else high)

    def apply(x):
        y = np.where(high < x, high, x)
        return np.where(low < y, y, low).astype(np.float32, copy=False)

    return apply


# -- blockwise ---------------------------------------------------------------------------------


def _blockwise_hybrid(ctx: OpContext, out_shape) -> Prepared:
    """Float input, constant INT4 filter with float16 block scales (EvalBlockwise4Bit).

    TFLite's reference kernels and its other filter types have no blockwise path: they read the
    filter as per-tensor with scale 0 and return the bias, so qengine refuses those files
    rather than copy that. EvalBlockwise4Bit skips the fused activation; qengine applies it, as
    TFLite's default (XNNPACK) interpreter does.
    """
    w = ctx.input(1)
    block = w.quantization.blockwise
    units, depth = w.shape
    problem = blockwise_fc_problem(w.dtype, units, depth) or (
        None if w.value is not None else "TFLite's blockwise kernel needs a constant filter")
    if problem:
        raise ctx.unsupported(f"blockwise weights {w.name!r}: {problem}")
    if block.scales.dtype != "float16":
        raise ctx.invalid(f"blockwise scales {block.scales.name!r} are {block.scales.dtype}; "
                          f"TFLite reads them as float16")
    _bias_spec(ctx, "float32", units)
    values = np.ascontiguousarray(w.value, np.int8)
    scales = np.ascontiguousarray(block.scales.data.astype(np.float32))
    activation = float_activation(ctx)

    def run(x, w, b=None):
        rows = np.ascontiguousarray(x, np.float32).reshape(-1, depth)
        q, sf, zp = hybrid.quantize_asymmetric(rows)
        bias = np.zeros(units, np.float32) if b is None else np.asarray(b, np.float32).ravel()
        out = blockwise_hybrid_fc(q, sf, zp, values, scales, block.block_size, bias,
                                  b is not None)
        return activation(out.reshape(out_shape))

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])
