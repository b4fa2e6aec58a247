"""16x8 quantized paths: int16 activations (symmetric, zero point 0) with int8 weights.

The `_int` op modules hand their op here when the activation input is int16. Prepare checks
what TFLite's Prepare checks for int16 (zero points 0, int8 filters, int64 or int32 biases,
fixed output parameters) and computes multipliers with TFLite's precision; run only calls a
kernel from qengine.kernels.int16. (The `_int` suffix keeps this module out of the eager op
import: it loads Numba kernels.)
"""

from __future__ import annotations

import math

import numpy as np

from qengine.kernels import activations as activation_kernels
from qengine.kernels import conv as conv_kernels
from qengine.kernels import fast_int16
from qengine.kernels import fully_connected as fc_kernels
from qengine.kernels import int16 as kernels
from qengine.kernels.fixedpoint import mbqm_array as mbqm
from qengine.kernels.fixedpoint import quantize_multiplier, quantize_multipliers

from ..numerics import round_half_away_int
from ..qparams import rounded_quotient
from ..runtime.registry import OpContext, Prepared, Spec
from .common import (
    broadcast_shape,
    expect_filter_type,
    flattened,
    per_tensor,
    quantized_activation_range,
    use_fast_kernels,
)

INT16_MIN, INT16_MAX = -32768, 32767


def _symmetric(ctx: OpContext, spec: Spec) -> float:
    """The scale of an int16 activation, which TFLite requires to have zero point 0."""
    ctx.expect_dtype(spec, "int16")
    scale, zero_point = per_tensor(ctx, spec)
    if zero_point != 0:
        raise ctx.unsupported(f"int16 tensor {spec.name!r} has zero point {zero_point}; "
                              f"TFLite's int16 kernels require 0")
    return scale


def _output_scale(ctx: OpContext) -> float:
    return _symmetric(ctx, ctx.output_spec(0, None))


# -- CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED ------------------------------------------------


def _filter_scales(ctx: OpContext, w: Spec, out_c: int, axis: int) -> np.ndarray:
    expect_filter_type(ctx, w)
    q = w.quantization
    if q is None or q.scale.size == 0:
        raise ctx.invalid(f"{w.dtype} filter {w.name!r} has no quantization parameters")
    if q.scale.size not in (1, out_c) or (q.scale.size > 1 and q.axis != axis):
        raise ctx.invalid(f"filter {w.name!r} has {q.scale.size} scales along axis {q.axis} "
                          f"for {out_c} output channels on axis {axis}")
    return np.broadcast_to(q.scale.astype(np.float64), (out_c,))


def _bias(ctx: OpContext, index: int, out_c: int, required: bool,
          dtypes=("int64", "int32")):
    """The int64 (or int32) bias as an int64 array, zeros when absent; must be constant."""
    spec = ctx.optional_input(index)
    if spec is None:
        if required:
            raise ctx.invalid(f"int16 {ctx.op.type} needs a bias input")
        return np.zeros(out_c, np.int64)
    ctx.expect_dtype(spec, *dtypes)
    value = ctx.constant(index, "bias")
    if value.size != out_c:
        raise ctx.invalid(f"bias has {value.size} elements for {out_c} output channels")
    return value.astype(np.int64).reshape(out_c)


def _requantization(ctx: OpContext, reals: np.ndarray):
    """(M, shift) per channel and the activation clamp; the int64 MBQM overload takes shifts
    in [-31, 7]."""
    mult, shift = quantize_multipliers(reals)
    if np.any(shift > 7):
        raise ctx.unsupported("a 16x8 requantization multiplier >= 2^7: TFLite's int64 "
                              "MultiplyByQuantizedMultiplier does not allow it")
    low, high = quantized_activation_range(ctx, _output_scale(ctx), 0, "int16")
    return mult, shift, low, high


def _per_channel_multipliers(ctx: OpContext, scales: np.ndarray):
    """eff[c] = double(s_in) * double(s_w[c]) / double(s_out) (PopulateConvolution...Params)."""
    x_scale, out_scale = _symmetric(ctx, ctx.input(0)), _output_scale(ctx)
    return _requantization(ctx, np.float64(x_scale) * scales / np.float64(out_scale))


def _packable(w: Spec) -> bool:
    """A constant filter held as dense int8 values: the fast kernels pack it at prepare time
    (QENGINE_KERNELS=reference asks for the reference loops)."""
    return (use_fast_kernels() and w.value is not None and w.value.dtype == np.int8
            and w.value.shape == tuple(w.shape))


def conv_2d(ctx: OpContext, g, out_shape, groups: int) -> Prepared:
    out_c = out_shape[3]
    w = ctx.input(1)
    scales = _filter_scales(ctx, w, out_c, 0)
    if np.any(w.quantization.zero_point != 0):
        raise ctx.invalid(f"filter {w.name!r} has non-zero zero points")
    bias = _bias(ctx, 2, out_c, required=True)
    mult, shift, low, high = _per_channel_multipliers(ctx, scales)
    geometry = (g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left, g.out_h, g.out_w)
    if _packable(w) and groups == 1:
        plan = fast_int16.plan_conv2d_int16(np.ascontiguousarray(w.value), bias, mult, shift,
                                            low, high, *geometry)  # weights packed once
        threads = ctx.num_threads

        def run(x, w, b=None):
            return fast_int16.run_conv2d_int16(plan, x, threads)
    else:
        def run(x, w, b=None):
            return conv_kernels.conv2d(x, w, bias, 0, mult, shift, 0, low, high, *geometry)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int16")])


def depthwise_conv_2d(ctx: OpContext, g, out_shape, multiplier: int) -> Prepared:
    out_c = out_shape[3]
    w = ctx.input(1)
    scales = _filter_scales(ctx, w, out_c, 3)
    bias = _bias(ctx, 2, out_c, required=False)
    mult, shift, low, high = _per_channel_multipliers(ctx, scales)
    geometry = (g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left, g.out_h,
                g.out_w, multiplier)
    plan = None
    if _packable(w):
        plan = fast_int16.plan_depthwise_int16(np.ascontiguousarray(w.value), bias, mult, shift,
                                               low, high, *geometry)
    threads = ctx.num_threads

    def run(x, w, b=None):
        if plan is not None:
            return fast_int16.run_depthwise_int16(plan, x, threads)
        return conv_kernels.depthwise_conv2d(x, w, bias, 0, mult, shift, 0, low, high,
                                             *geometry)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int16")])


def fully_connected(ctx: OpContext, out_shape) -> Prepared:
    """fully_connected.cc, int16 input: the reference kernel requantizes in double with
    eff[o] = double(s_in) * double(s_w[o]) / double(s_out) (one weight scale serves all)."""
    x, w = ctx.input(0), ctx.input(1)
    units, depth = w.shape
    scales = _filter_scales(ctx, w, units, 0)
    bias = _bias(ctx, 2, units, required=False)
    # per-channel weights are symmetric; per-tensor ones use weights_offset = -zp
    w_zp = int(w.quantization.zero_point[0]) if w.quantization.scale.size == 1 else 0
    eff = np.float64(_symmetric(ctx, x)) * scales / np.float64(_output_scale(ctx))
    low, high = quantized_activation_range(ctx, _output_scale(ctx), 0, "int16")
    plan = None
    if _packable(w) and w_zp == 0:
        plan = fast_int16.plan_fully_connected_int16(np.ascontiguousarray(w.value), bias, eff,
                                                     low, high)  # weights packed once
    threads = ctx.num_threads

    def run(x, w, b=None):
        rows = np.ascontiguousarray(x).reshape(-1, depth)
        if plan is not None:
            return fast_int16.run_fully_connected_int16(plan, rows, threads).reshape(out_shape)
        return fc_kernels.fully_connected(rows, w, bias, 0, w_zp, eff, 0, low,
                                          high).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int16")])


# -- ADD, SUB, MUL ---------------------------------------------------------------------------


def _binary(ctx: OpContext):
    ctx.expect_inputs(2)
    a, b = ctx.input(0), ctx.input(1)
    if b.dtype != "int16":
        raise ctx.unsupported(f"quantized {ctx.op.type} on {a.dtype} and {b.dtype}")
    shape = broadcast_shape(ctx, a.shape, b.shape)
    return _symmetric(ctx, a), _symmetric(ctx, b), _output_scale(ctx), shape


def _elementwise(ctx: OpContext, shape, kernel, *params) -> Prepared:
    def run(x, y):
        return kernel(flattened(x, shape), flattened(y, shape), *params).reshape(shape)

    return Prepared(run, [ctx.output_spec(0, shape, "int16")])


def _pot_exponent(scale: float) -> int | None:
    """CheckedLog2: the rounded log2 of a scale, if the scale is (within 1e-3) a power of 2."""
    log = math.log2(scale)
    rounded = round(log)
    return rounded if abs(log - rounded) < 1e-3 else None


def add_sub(ctx: OpContext, sign: int) -> Prepared:
    """add.cc / sub.cc, int16. pot_scale_int16 (default true) with all three scales powers
    of two takes the shift-only kernel; otherwise the general one with left shift 15:
    twice_max = 2 max(s1, s2); r1 = s1 / twice_max, r2 = s2 / twice_max,
    r_out = twice_max / (2^15 s_out), all double, through QuantizeMultiplier."""
    s1, s2, s_out, shape = _binary(ctx)
    low, high = quantized_activation_range(ctx, s_out, 0, "int16")
    pot = getattr(ctx.options, "potScaleInt16", True) if ctx.options is not None else True
    exponents = [_pot_exponent(s) for s in (s1, s2, s_out)]
    if pot and None not in exponents:
        shift1, shift2 = exponents[0] - exponents[2], exponents[1] - exponents[2]
        if (shift1 and shift2) or shift1 > 0 or shift2 > 0:  # Prepare's TF_LITE_ENSUREs
            raise ctx.unsupported(f"power-of-two int16 {ctx.op.type} needs one input at the "
                                  f"output scale and the other at a smaller one")
        return _elementwise(ctx, shape, kernels.add_pot_int16, sign, shift1, shift2, low, high)
    twice_max = 2.0 * max(s1, s2)
    reals = (s1 / twice_max, s2 / twice_max,
             twice_max / ((1 << kernels.ADD_SUB_LEFT_SHIFT_INT16) * s_out))
    if sign > 0 and not reals[2] < 1:  # ADD: QuantizeMultiplierSmallerThanOneExp CHECK
        raise ctx.unsupported(f"output multiplier {reals[2]:.6g} >= 1: TFLite aborts")
    (m1, sh1), (m2, sh2), (m_out, sh_out) = (quantize_multiplier(r) for r in reals)
    params = kernels.add_sub_params_int16(m1, sh1, m2, sh2, m_out, sh_out)
    return _elementwise(ctx, shape, kernels.add_sub_int16, sign, params, low, high)


def mul(ctx: OpContext) -> Prepared:
    """mul.cc: real = double(float(s1 * s2 / s_out)) in float32 arithmetic."""
    s1, s2, s_out, shape = _binary(ctx)
    real = float(np.float32(np.float32(s1) * np.float32(s2)) / np.float32(s_out))
    m, sh = quantize_multiplier(real)
    low, high = quantized_activation_range(ctx, s_out, 0, "int16")
    return _elementwise(ctx, shape, kernels.mul_int16, m, sh, low, high)


# -- pools, MEAN -------------------------------------------------------------------------------


def pool(ctx: OpContext, kernel_name: str, g, shape) -> Prepared:
    """AVERAGE/MAX_POOL_2D int16: no requantization, the output's fused-activation clamp."""
    _symmetric(ctx, ctx.input(0))
    low, high = quantized_activation_range(ctx, _output_scale(ctx), 0, "int16")
    kernel = getattr(kernels, kernel_name)
    kh, kw = ctx.options.filterHeight, ctx.options.filterWidth

    def run(values):
        return kernel(values, kh, kw, g.stride_h, g.stride_w, g.pad_top, g.pad_left, g.out_h,
                      g.out_w, low, high)

    return Prepared(run, [ctx.output_spec(0, shape, "int16")])


def mean(ctx: OpContext, n: int, multiplier, to_3d, out_shape) -> Prepared:
    in_zp = per_tensor(ctx, ctx.input(0))[1]
    out_zp = per_tensor(ctx, ctx.output_spec(0, None))[1]
    mult, shift = multiplier

    def run(x, _):
        return kernels.mean_int16(to_3d(x), in_zp, mult, shift, out_zp).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int16")])


# -- SOFTMAX -----------------------------------------------------------------------------------

LUT_SIZE = 513


def lut_populate_int16(transform, input_min: float, input_max: float) -> np.ndarray:
    """LUTPopulate<int16_t> with FloatT = double, as SoftmaxPrepare builds its tables (output
    range [-1, 1]): 512 segments over [input_min, input_max], each anchor lowered by half the
    interpolation error at the segment's midpoint, plus a closing anchor."""
    output_min, output_max = -1.0, 1.0
    step = (input_max - input_min) / (LUT_SIZE - 1)
    half_step = step / 2
    scaling = 65536.0 / (output_max - output_min)

    def scaled(v):
        return round_half_away_int(v * scaling)

    table = np.empty(LUT_SIZE, np.int16)
    for i in range(LUT_SIZE - 1):
        sample = transform(input_min + i * step)
        midpoint = transform(input_min + i * step + half_step)
        following = transform(input_min + (i + 1) * step)
        # the C++ halves with "/ 2"; "* 0.5" is the same double, exactly
        interpolated = round_half_away_int((following * scaling + scaled(sample)) * 0.5)
        error = round_half_away_int((interpolated - scaled(midpoint)) * 0.5)
        table[i] = min(max(scaled(sample) - error, INT16_MIN), INT16_MAX)
    table[-1] = min(max(scaled(transform(input_max)), INT16_MIN), INT16_MAX)
    return table


def softmax(ctx: OpContext) -> Prepared:
    """SoftmaxPrepare, int16 -> int16: zero points 0; the input is rescaled so that the
    difference range [-65535, 0] spans [-10, 0]: QuantizeMultiplier(s_in * beta / (10/65535))."""
    x = ctx.input(0)
    s_in = _symmetric(ctx, x)
    _output_scale(ctx)
    beta = float(getattr(ctx.options, "beta", 1.0)) if ctx.options is not None else 1.0
    real = float(np.float32(s_in)) * float(np.float32(beta)) / (10.0 / 65535.0)
    mult, shift = quantize_multiplier(real)
    exp_lut = lut_populate_int16(math.exp, -10.0, 0.0)
    recip_lut = lut_populate_int16(lambda v: 1.0 / (1.0 + v), 0.0, 1.0)
    depth = x.shape[-1]

    def run(values):
        rows = np.ascontiguousarray(values).reshape(-1, depth)
        return kernels.softmax_int16(rows, mult, shift, exp_lut, recip_lut).reshape(values.shape)

    return Prepared(run, [ctx.output_spec(0, x.shape, "int16")])


# -- LOGISTIC, TANH ------------------------------------------------------------------------------

INPUT_INTEGER_BITS = 3  # the tables cover [-8, 8) scaled by 4/3 to [-10.7, 10.7)


def _checked_log2(scale: float) -> tuple[bool, int]:
    """CheckedLog2 (float32): (is a power of two within 1e-3, the rounded exponent)."""
    log2 = np.float32(np.log(np.float32(scale))) * np.float32(1.0 / np.log(np.float32(2.0)))
    rounded = round_half_away_int(float(log2))
    return abs(float(log2) - rounded) < 1e-3, rounded


def _table_scaling(ctx: OpContext, pot_shifts) -> tuple[int, int]:
    """SigmoidPrepare / TanhPrepare, int16: (input_multiplier, input_left_shift) bringing the
    input to units of 1/(3*4096). A power-of-two input scale whose shift is in `pot_shifts`
    uses M = 3 << shift, shift 0; otherwise M = int(s_in * 4096 * 3 * 2^k) with k the
    doublings that take it above 32767/2 (at most 31)."""
    scale = _symmetric(ctx, ctx.input(0))
    is_pot, log2 = _checked_log2(scale)
    left_shift = (15 - INPUT_INTEGER_BITS) + log2
    if is_pot and left_shift in pot_shifts:
        return 3 << left_shift, 0
    multiplier, left_shift = float(np.float32(scale)) * 4096.0 * 3.0, 0
    while multiplier <= 32767.0 / 2.0 and left_shift <= 30:
        left_shift += 1
        multiplier *= 2.0
    return int(multiplier), left_shift


def _lookup_activation(ctx: OpContext, kernel, pot_shifts) -> Prepared:
    x = ctx.input(0)
    out_scale = _output_scale(ctx)
    is_pot, log2 = _checked_log2(out_scale)
    if not is_pot or log2 != -15:
        raise ctx.unsupported(f"int16 {ctx.op.type} needs output scale 2^-15, has {out_scale}")
    multiplier, left_shift = _table_scaling(ctx, pot_shifts)

    def run(values):
        flat = np.ascontiguousarray(values).ravel()
        return kernel(flat, multiplier, left_shift,
                      kernels.SIGMOID_TABLE_UINT16).reshape(values.shape)

    return Prepared(run, [ctx.output_spec(0, x.shape, "int16")])


def logistic(ctx: OpContext) -> Prepared:
    return _lookup_activation(ctx, kernels.logistic_int16, pot_shifts=(0,))


def tanh(ctx: OpContext) -> Prepared:
    return _lookup_activation(ctx, kernels.tanh_int16, pot_shifts=(0, 1))


# -- TRANSPOSE_CONV, BATCH_MATMUL --------------------------------------------------------------


def transpose_conv(ctx: OpContext, out_shape, pads) -> Prepared:
    """transpose_conv.cc, int16 input: int8 filter with zero points 0 and one scale or one per
    output channel, an optional int64 bias; eff[c] = double(s_in) * double(s_w[c]) / double(s_out)
    through QuantizeMultiplier; the int64 accumulator is requantized by the int64 MBQM."""
    w, x = ctx.input(1), ctx.input(2)
    out_c = w.shape[0]
    scales = _filter_scales(ctx, w, out_c, 0)
    if np.any(w.quantization.zero_point != 0):
        raise ctx.invalid(f"filter {w.name!r} has non-zero zero points")
    # TFLite reads an int16 TRANSPOSE_CONV's bias as int64 whatever its type (an int32 one
    # gives garbage in BUILTIN_REF), so only int64 is accepted
    bias = _bias(ctx, 3, out_c, required=False, dtypes=("int64",))
    s_in, s_out = _symmetric(ctx, x), _output_scale(ctx)
    mult, shift, low, high = _requantization(ctx, np.float64(s_in) * scales / np.float64(s_out))
    stride_h, stride_w = ctx.options.strideH, ctx.options.strideW
    pad_top, pad_left = pads

    def run(_shape, weights, values, _bias=None):
        return conv_kernels.transpose_conv(values, weights, bias, 0, mult, shift, 0, low, high,
                                           stride_h, stride_w, pad_top, pad_left,
                                           out_shape[1], out_shape[2])

    return Prepared(run, [ctx.output_spec(0, out_shape, "int16")])


def batch_matmul(ctx: OpContext, out_shape, prepare_operands) -> Prepared:
    """batch_matmul.cc, int16: all zero points 0; one multiplier
    double(float(s_l * s_r)) / double(s_out) (GetQuantizedConvolutionMultipler); the int64
    sum is requantized by the int64 MBQM and clamped to the int16 range (no fused activation)."""
    lhs, rhs = ctx.input(0), ctx.input(1)
    s_l, s_r, s_out = _symmetric(ctx, lhs), _symmetric(ctx, rhs), _output_scale(ctx)
    real = float(np.float32(np.float32(s_l) * np.float32(s_r))) / s_out
    mult, shift = quantize_multiplier(real)
    if shift > 7:
        raise ctx.unsupported("a 16x8 requantization multiplier >= 2^7: TFLite's int64 "
                              "MultiplyByQuantizedMultiplier does not allow it")

    def run(a, b):
        a, b = prepare_operands(a, b)
        return kernels.batch_matmul_int16(a, b, mult, shift).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int16")])


# -- RELU, RELU6, LEAKY_RELU ---------------------------------------------------------------------


def _unary_scales(ctx: OpContext) -> tuple[float, float]:
    ctx.expect_inputs(1)
    x = ctx.input(0)
    ctx.output_spec(0, x.shape)
    return _symmetric(ctx, x), _output_scale(ctx)


def _unary(ctx: OpContext, kernel, *params) -> Prepared:
    x = ctx.input(0)

    def run(values):
        return kernel(np.ascontiguousarray(values).ravel(), *params).reshape(values.shape)

    return Prepared(run, [ctx.output_spec(0, x.shape, "int16")])


def relu_x(ctx: OpContext, low: float, high: float) -> Prepared:
    """ReluPrepare / QuantizedReluX<int16_t>: real = double(float(s_in / s_out)); bounds
    max(-32768, roundf(low / s_out)) and (high = inf ? 32767 : min(32767, roundf(high / s_out)))
    with the division in float32."""
    s_in, s_out = _unary_scales(ctx)
    m, sh = quantize_multiplier(float(np.float32(np.float32(s_in) / np.float32(s_out))))

    def bound(v: float) -> int:
        return int(rounded_quotient(v, s_out))  # in float32

    qmin = max(INT16_MIN, bound(low))
    qmax = INT16_MAX if high == math.inf else min(INT16_MAX, bound(high))
    return _unary(ctx, kernels.relu_int16, m, sh, qmin, qmax)


def leaky_relu(ctx: OpContext, alpha: float) -> Prepared:
    """LeakyReluPrepare, float32 arithmetic: identity multiplier double(float(s_in / s_out)),
    alpha multiplier double(float(float(s_in * alpha) / s_out))."""
    s_in, s_out = (np.float32(s) for s in _unary_scales(ctx))
    m_id, sh_id = quantize_multiplier(float(np.float32(s_in / s_out)))
    m_alpha, sh_alpha = quantize_multiplier(
        float(np.float32(np.float32(s_in * np.float32(alpha)) / s_out)))
    return _unary(ctx, kernels.leaky_relu_int16, m_id, sh_id, m_alpha, sh_alpha)


# -- ABS -----------------------------------------------------------------------------------------


def abs_(ctx: OpContext) -> Prepared:
    """AbsEvalQuantized<int16_t> (elementwise.cc), zero points 0: d = |x| in int32;
    out = clamp(s_in != s_out ? MBQM(d, QuantizeMultiplier(double(float(s_in / s_out)))) : d).
    Each output depends only on the input value, so prepare tabulates all 65536 of them."""
    from qengine.kernels.elementwise import abs_params

    s_in, s_out = _unary_scales(ctx)
    _, _, rescale, m, sh = abs_params(s_in, 0, s_out, 0)
    if rescale and sh > 30:  # MBQM's x * (1 << shift) is undefined in C beyond that
        raise ctx.unsupported(f"ABS rescale {s_in}/{s_out} is too large for TFLite's kernel")
    magnitude = np.abs(np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int64))
    scaled = mbqm(magnitude, m, sh) if rescale else magnitude
    table = np.clip(scaled, INT16_MIN, INT16_MAX).astype(np.int16)

    def run(values):
        return table[values.astype(np.int32) - INT16_MIN]

    return Prepared(run, [ctx.output_spec(0, ctx.input(0).shape, "int16")])


# -- EXP, LOG, RSQRT, GELU: 513-entry interpolated tables ---------------------------------------


def _lut_op(ctx: OpContext, make_lut, check=None) -> Prepared:
    """exp.cc / elementwise.cc / GELU, int16: LUTPopulate<int16_t> in float32 over the input's
    range, read by LUTLookup. Each output depends only on the input value, so prepare expands
    the 513 anchors to all 65536 outputs and run indexes them."""
    s_in, s_out = _unary_scales(ctx)
    table = kernels.lut_table_int16(make_lut(s_in, s_out))

    def run(values):
        if check is not None:
            check(values)
        return table[values.astype(np.int32) - INT16_MIN]

    return Prepared(run, [ctx.output_spec(0, ctx.input(0).shape, "int16")])


def exp(ctx: OpContext) -> Prepared:
    return _lut_op(ctx, activation_kernels.exp_lut_int16)


def log(ctx: OpContext) -> Prepared:
    return _lut_op(ctx, activation_kernels.log_lut_int16)


def rsqrt(ctx: OpContext) -> Prepared:
    """RsqrtEvalQuantizedInt16 refuses a negative input at invoke; so does run."""
    from ..errors import InputError

    def check(values):
        if values.size and int(values.min()) < 0:
            raise InputError(f"{ctx.where()}: RSQRT of a negative value; TFLite refuses it too")

    return _lut_op(ctx, activation_kernels.rsqrt_lut_int16, check)


def gelu(ctx: OpContext, approximate: bool) -> Prepared:
    return _lut_op(ctx, lambda s_in, s_out: activation_kernels.gelu_lut_int16(s_in, s_out,
                                                                             approximate))


# -- PRELU ---------------------------------------------------------------------------------------


def prelu(ctx: OpContext) -> Prepared:
    """PRELU on an int16 input: BUILTIN_REF reads alpha as int8 whatever its type (an int16
    alpha's bytes are misread, [EMPIRICAL]), so only an int8 alpha is accepted. Otherwise the
    int8 formula with zero points 0 for input and output and an int16 clamp:
    out = x >= 0 ? MBQM(x, m1, sh1) : MBQM(x * (alpha - zp_alpha), m2, sh2)."""
    x, alpha = ctx.input(0), ctx.input(1)
    if alpha.dtype != "int8":
        raise ctx.unsupported(f"int16 PRELU with a {alpha.dtype} alpha: TFLite's kernel reads "
                              f"alpha as int8, so give it an int8 alpha")
    if broadcast_shape(ctx, x.shape, alpha.shape) != tuple(x.shape):
        raise ctx.invalid(f"alpha of shape {alpha.shape} would broadcast the input {x.shape} "
                          f"to a larger shape")
    s_in, s_out = _symmetric(ctx, x), _output_scale(ctx)
    s_alpha, zp_alpha = per_tensor(ctx, alpha)
    _, _, _, *multipliers = activation_kernels.prelu_params(s_in, 0, s_alpha, zp_alpha, s_out, 0)
    params = (zp_alpha, *multipliers)

    def run(values, slopes):
        flat = np.ascontiguousarray(values).ravel()
        return kernels.prelu_int16(flat, flattened(slopes, values.shape),
                                   *params).reshape(values.shape)

    return Prepared(run, [ctx.output_spec(0, x.shape, "int16")])
