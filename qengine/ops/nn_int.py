"""Quantized NN ops on int8, as TFLite's reference kernels compute them: AVERAGE_POOL_2D,
MAX_POOL_2D, SOFTMAX, LOG_SOFTMAX, L2_NORMALIZATION, RESIZE_BILINEAR, BATCH_MATMUL and
TRANSPOSE_CONV.

qengine.ops.nn has validated the shapes and options these ops share with their float
versions; prepare here checks the types and quantization parameters and computes the
multipliers as TFLite's Prepare does.
"""

from __future__ import annotations

import numpy as np

from qengine.kernels import activations as activation_kernels
from qengine.kernels import conv as conv_kernels
from qengine.kernels import fully_connected, hybrid, pooling, resize, xnnpack
from qengine.kernels import softmax as softmax_kernels
from qengine.kernels.elementwise import inv_sqrt_multiplier_exp
from qengine.kernels.fixedpoint import mbqm_array as mbqm
from qengine.kernels.fixedpoint import (
    quantize_multiplier,
    quantize_multipliers,
    wrap_int32,
)

from ..runtime.registry import OpContext, Prepared, Spec
from .common import (
    conv_output_size,
    float_activation_bounds,
    geometry,
    per_tensor,
    quantized_activation_range,
)
from .nn import pool_rows

SAME = 0


def _option(ctx: OpContext, name: str, default):
    value = getattr(ctx.options, name, None) if ctx.options is not None else None
    return default if value is None else value


def _expect_int8(ctx: OpContext, *specs: Spec) -> None:
    dtypes = [s.dtype for s in specs]
    if any(d != "int8" for d in dtypes):
        raise ctx.unsupported(f"quantized {ctx.op.type} on {', '.join(dtypes)}; supported: int8")


def _output(ctx: OpContext, shape) -> tuple[Spec, float, int]:
    out = ctx.output_spec(0, shape, "int8")
    _expect_int8(ctx, ctx.output_spec(0, shape))
    scale, zero_point = per_tensor(ctx, out)
    return out, scale, zero_point


# -- pooling: no requantization; TFLite only clamps to the output's activation range ---------


def _pool(ctx: OpContext, window, int16_kernel: str) -> Prepared:
    """window(values, geometry, act_min, act_max, threads) -> the int8 output; the
    kernels.int16 function named `int16_kernel` for 16x8."""
    x = ctx.input(0)
    if x.dtype == "int16":  # 16x8
        return _pool_int16(ctx, int16_kernel)
    _expect_int8(ctx, x)
    per_tensor(ctx, x)
    if ctx.options is None:
        raise ctx.invalid("Pool2DOptions are missing")
    kh, kw = ctx.options.filterHeight, ctx.options.filterWidth
    if kh < 1 or kw < 1:
        raise ctx.invalid(f"filter size {kh}x{kw} must be at least 1x1")
    g = geometry(ctx, x.shape, kh, kw)
    out, scale, zero_point = _output(ctx, (g.batch, g.out_h, g.out_w, x.shape[3]))
    low, high = quantized_activation_range(ctx, scale, zero_point, "int8")
    return Prepared(lambda values: window(values, g, low, high, ctx.num_threads), [out])


def _pool_int16(ctx: OpContext, kernel_name: str) -> Prepared:
    from . import int16_int

    x = ctx.input(0)
    if ctx.options is None:
        raise ctx.invalid("Pool2DOptions are missing")
    kh, kw = ctx.options.filterHeight, ctx.options.filterWidth
    if kh < 1 or kw < 1:
        raise ctx.invalid(f"filter size {kh}x{kw} must be at least 1x1")
    g = geometry(ctx, x.shape, kh, kw)
    return int16_int.pool(ctx, kernel_name, g, (g.batch, g.out_h, g.out_w, x.shape[3]))


def average_pool_2d(ctx: OpContext) -> Prepared:
    return _pool(ctx, _average_window, "avg_pool_int16")


def _average_window(values, g, low: int, high: int, _threads: int) -> np.ndarray:
    return pooling.avg_pool_int8(values, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
                                 g.pad_top, g.pad_left, g.out_h, g.out_w, low, high)


def max_pool_2d(ctx: OpContext) -> Prepared:
    return _pool(ctx, _max_window, "max_pool_int16")


def _max_window(values, g, low: int, high: int, threads: int) -> np.ndarray:
    return pool_rows(pooling.max_pool_int8, pooling.max_pool_int8_split,
                     lambda shape: np.empty(shape, np.int8),
                     np.ascontiguousarray(values), g, (low, high), threads)


# -- SOFTMAX -----------------------------------------------------------------------------------


def softmax(ctx: OpContext) -> Prepared:
    """SoftmaxPrepare<kReference>, int8 -> int8: the output must be (1/256, -128) within 0.1 %
    of the scale; the input multiplier beta * s_in * 2^26 must exceed 1. arithmetic="xnnpack"
    runs the optimized kernel (a float table of exponentials), which has no such limit; so does
    a softmax whose input scale the reference kernel would abort on, with a note: TFLite's
    default interpreter runs those models."""
    x = ctx.input(0)
    if x.dtype == "int16":  # 16x8
        from . import int16_int

        return int16_int.softmax(ctx)
    _expect_int8(ctx, x)
    s_in, _ = per_tensor(ctx, x)  # the input zero point cancels in x - max(x)
    out, s_out, zp_out = _output(ctx, x.shape)
    ideal = np.float32(1.0 / 256)
    if zp_out != -128 or abs(np.float32(s_out) - ideal) > np.float32(0.001) * ideal:
        raise ctx.unsupported(f"int8 SOFTMAX needs output scale 1/256 and zero point -128, "
                              f"has {s_out} and {zp_out}")
    beta = float(_option(ctx, "beta", 0.0))
    depth = x.shape[-1]
    if ctx.arithmetic == "xnnpack":  # XNNPACK declines it; the optimized kernel's float table
        return _softmax_float_table(s_in, beta, s_out, zp_out, depth, out)
    try:
        params = softmax_kernels.softmax_params(s_in, beta)
    except ValueError as e:  # TFLite's reference kernel CHECK-fails (aborts) in Prepare
        ctx.note(f"beta {beta} and input scale {s_in:.6g}: {e} for TFLite's reference kernel; "
                 f"computed as TFLite's optimized kernel (its default interpreter) does")
        return _softmax_float_table(s_in, beta, s_out, zp_out, depth, out)

    exps = softmax_kernels.softmax_exps(*params)

    def run(values):
        rows = np.ascontiguousarray(values).reshape(-1, depth)
        return softmax_kernels.softmax_int8_rows(rows, exps).reshape(values.shape)

    return Prepared(run, [out])


def _softmax_float_table(s_in, beta, s_out, zp_out, depth, out) -> Prepared:
    """SoftmaxInt8LUT of the optimized kernels: a float32 table of expf, summed in order."""
    table = softmax_kernels.softmax_exp_table(s_in, beta)
    return Prepared(lambda values: softmax_kernels.softmax_int8_float_table(
        np.ascontiguousarray(values).reshape(-1, depth), table, s_out, zp_out,
    ).reshape(values.shape), [out])


# -- LOG_SOFTMAX -------------------------------------------------------------------------------

LOG_SOFTMAX_OUTPUT = (16.0 / 256, 127)  # (scale, zero point) LogSoftmaxPrepare requires


def log_softmax(ctx: OpContext) -> Prepared:
    """LogSoftmaxPrepare<kReference>, int8 -> int8: output (16/256, 127) exactly; the input
    multiplier s_in * 2^26 must exceed 1 (TFLite CHECK-fails below)."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    _expect_int8(ctx, x)
    if x.rank < 1:
        raise ctx.invalid("LOG_SOFTMAX needs an input of rank >= 1")
    s_in, _ = per_tensor(ctx, x)  # the input zero point cancels in x - max(x)
    out, s_out, zp_out = _output(ctx, x.shape)
    if (s_out, zp_out) != LOG_SOFTMAX_OUTPUT:
        raise ctx.unsupported(f"int8 LOG_SOFTMAX needs output scale 16/256 and zero point 127, "
                              f"has {s_out} and {zp_out}")
    try:
        params = activation_kernels.log_softmax_params(s_in)
    except ValueError as e:
        raise ctx.unsupported(f"input scale {s_in}: {e}; TFLite aborts") from None
    depth = x.shape[-1]

    def run(values):
        rows = np.ascontiguousarray(values).reshape(-1, depth)
        return activation_kernels.log_softmax_int8(rows, *params).reshape(values.shape)

    return Prepared(run, [out])


# -- L2_NORMALIZATION -------------------------------------------------------------------------


L2_OUTPUT_SHIFT = 7  # the output scale is 1/128


def l2_normalization(ctx: OpContext) -> Prepared:
    """reference_integer_ops::L2Normalization: per row,
    out = clamp(MBQM(x - zp, inv_sqrt(sum (x - zp)^2), shift + 7)); output (1/128, 0)."""
    x = ctx.input(0)
    _expect_int8(ctx, x)
    _, zp_in = per_tensor(ctx, x)
    out, s_out, zp_out = _output(ctx, x.shape)
    if s_out != 1.0 / 128 or zp_out != 0:
        raise ctx.unsupported(f"int8 L2_NORMALIZATION needs output scale 1/128 and zero point "
                              f"0, has {s_out} and {zp_out}")
    if x.rank > 4:
        raise ctx.unsupported(f"TFLite's L2_NORMALIZATION takes rank <= 4, not {x.rank}")
    depth = x.shape[-1]

    def run(values):
        rows = values.reshape(-1, depth).astype(np.int64) - zp_in
        result = np.empty(rows.shape, np.int8)
        for i, row in enumerate(rows):
            multiplier, shift = inv_sqrt_multiplier_exp(int(wrap_int32(int((row * row).sum()))))
            scaled = mbqm(row, multiplier, shift + L2_OUTPUT_SHIFT)
            result[i] = np.clip(scaled, -128, 127)
        return result.reshape(values.shape)

    return Prepared(run, [out])


# -- RESIZE_BILINEAR ---------------------------------------------------------------------------


def resize_bilinear(ctx: OpContext) -> Prepared:
    """ResizeBilinearInteger: interpolation in Q10 fixed point; in and out share parameters."""
    x = ctx.input(0)
    if x.dtype not in ("int8", "int16"):
        raise ctx.unsupported(f"quantized RESIZE_BILINEAR on {x.dtype}; supported: int8, int16")
    size = np.ravel(ctx.constant(1, "size"))  # nn.resize_bilinear checked: two values >= 1
    out_h, out_w = int(size[0]), int(size[1])
    align_corners = bool(_option(ctx, "alignCorners", False))
    half_pixel = bool(_option(ctx, "halfPixelCenters", False))
    out_shape = (x.shape[0], out_h, out_w, x.shape[3])
    if ctx.arithmetic == "xnnpack" and x.dtype == "int8":  # XNNPACK's qs8 ibilinear, Q11
        ys = xnnpack.resize_coordinates_q11(x.shape[1], out_h, align_corners, half_pixel)
        xs = xnnpack.resize_coordinates_q11(x.shape[2], out_w, align_corners, half_pixel)
        return Prepared(lambda values, _size=None: xnnpack.resize_bilinear_q11(
            np.ascontiguousarray(values), ys, xs), [ctx.output_spec(0, out_shape, "int8")])

    def run(values, _size=None):
        return resize.resize_bilinear_integer(values, out_h, out_w, align_corners, half_pixel,
                                              ctx.num_threads)

    return Prepared(run, [ctx.output_spec(0, out_shape, x.dtype)])


# -- BATCH_MATMUL ------------------------------------------------------------------------------


def _batches(v: np.ndarray, batch: tuple, rows: int, cols: int) -> np.ndarray:
    """v [..., rows, cols] broadcast to batch + (rows, cols), as [B, rows, cols] contiguous
    (np.broadcast_to only when the batch dims differ: ~4 us a call on a small operand)."""
    if v.shape[:-2] != batch:
        v = np.broadcast_to(v, batch + (rows, cols))
    return np.ascontiguousarray(v).reshape(-1, rows, cols)


def batch_matmul(ctx: OpContext) -> Prepared:
    """batch_matmul.cc, int8: acc = sum_k (lhs - zp_l) * (rhs - zp_r) with one multiplier
    double(float(s_l * s_r)) / double(s_out) (GetQuantizedConvolutionMultipler); no fused
    activation, so the clamp is the full int8 range."""
    lhs, rhs = ctx.input(0), ctx.input(1)
    adj_x, adj_y = bool(_option(ctx, "adjX", False)), bool(_option(ctx, "adjY", False))
    m = lhs.shape[-1] if adj_x else lhs.shape[-2]
    n = rhs.shape[-2] if adj_y else rhs.shape[-1]
    k = lhs.shape[-2] if adj_x else lhs.shape[-1]
    batch = tuple(np.broadcast_shapes(lhs.shape[:-2], rhs.shape[:-2]))  # nn checked it

    def operands(a, b):
        """[B, m, k] and [B, k, n]: adjoints applied, batches broadcast and flattened."""
        a = np.swapaxes(a, -1, -2) if adj_x else a
        b = np.swapaxes(b, -1, -2) if adj_y else b
        return _batches(a, batch, m, k), _batches(b, batch, k, n)

    if lhs.dtype == "int16" and rhs.dtype == "int16":  # 16x8
        from . import int16_int

        return int16_int.batch_matmul(ctx, batch + (m, n), operands)
    _expect_int8(ctx, lhs, rhs)
    (s_l, zp_l), (s_r, zp_r) = per_tensor(ctx, lhs), per_tensor(ctx, rhs)
    out, s_out, zp_out = _output(ctx, batch + (m, n))
    multiplier, shift = quantize_multiplier(
        float(np.float32(np.float32(s_l) * np.float32(s_r))) / s_out)

    def run(a, b):
        a, b = operands(a, b)
        result = fully_connected.batch_matmul_int8(a, b, zp_l, zp_r, multiplier, shift,
                                                   zp_out, -128, 127)
        return result.reshape(batch + (m, n))

    return Prepared(run, [out])


# -- TRANSPOSE_CONV ----------------------------------------------------------------------------


def _transpose_padding(ctx: OpContext, padding: int, out_size: int, kernel: int,
                       stride: int) -> int:
    """The padding of the forward conv from the output back to the input (dilation 1)."""
    return conv_output_size(ctx, padding, out_size, kernel, stride, 1)[1]


def _filter_multipliers(ctx: OpContext, x: Spec, w: Spec, s_out: float):
    """PopulateConvolutionQuantizationParams: per output channel,
    eff[c] = double(s_in) * double(s_w[c]) / double(s_out); one filter scale serves all."""
    q = w.quantization
    if q is None or q.scale.size == 0:
        raise ctx.invalid(f"filter {w.name!r} has no quantization parameters")
    channels = w.shape[0]
    if q.scale.size not in (1, channels):
        raise ctx.invalid(f"filter {w.name!r} has {q.scale.size} scales for {channels} "
                          f"output channels")
    if q.scale.size > 1 and w.shape[q.axis] != channels:
        raise ctx.invalid(f"filter {w.name!r} is quantized along axis {q.axis}, not along its "
                          f"{channels} output channels")
    s_in, _ = per_tensor(ctx, x)
    filter_scales = np.broadcast_to(q.scale.astype(np.float64), (channels,))
    return quantize_multipliers(s_in * filter_scales / s_out)


def _bias(ctx: OpContext, channels: int) -> np.ndarray:
    spec = ctx.optional_input(3)
    if spec is None:
        return np.zeros(channels, np.int32)
    if spec.dtype != "int32":
        raise ctx.unsupported(f"{spec.dtype} bias {spec.name!r} for an int8 TRANSPOSE_CONV; "
                              f"TFLite takes int32")
    if spec.quantization is not None and np.any(spec.quantization.zero_point != 0):
        raise ctx.invalid(f"bias {spec.name!r} has a non-zero zero point")
    return np.ravel(ctx.constant(3, "bias")).astype(np.int32)


def transpose_conv(ctx: OpContext) -> Prepared:
    """TFLite reference_integer_ops::TransposeConv (per channel). nn.transpose_conv has checked
    the output_shape constant against the input and filter shapes."""
    out_size, w, x = ctx.constant(0, "output_shape"), ctx.input(1), ctx.input(2)
    if ctx.options is None:
        raise ctx.invalid("TransposeConvOptions are missing")
    out_shape = tuple(int(d) for d in np.ravel(out_size))
    out_c, kh, kw, _ = w.shape
    o = ctx.options
    pad_top = _transpose_padding(ctx, o.padding, out_shape[1], kh, o.strideH)
    pad_left = _transpose_padding(ctx, o.padding, out_shape[2], kw, o.strideW)
    if x.dtype == "float32":
        return _hybrid_transpose_conv(ctx, out_shape, pad_top, pad_left)
    if x.dtype == "int16" and w.dtype == "int8":  # 16x8
        from . import int16_int

        return int16_int.transpose_conv(ctx, out_shape, (pad_top, pad_left))
    _expect_int8(ctx, x, w)
    out, s_out, zp_out = _output(ctx, out_shape)
    multipliers, shifts = _filter_multipliers(ctx, x, w, s_out)
    bias = _bias(ctx, out_c)
    low, high = quantized_activation_range(ctx, s_out, zp_out, "int8")
    _, zp_in = per_tensor(ctx, x)

    def run(_shape, weights, values, _unused_bias=None):
        return conv_kernels.transpose_conv_int8(
            values, weights, bias, zp_in, multipliers, shifts, zp_out, low, high,
            o.strideH, o.strideW, pad_top, pad_left, out_shape[1], out_shape[2])

    return Prepared(run, [out])


def _hybrid_transpose_conv(ctx: OpContext, out_shape, pad_top: int, pad_left: int) -> Prepared:
    """transpose_conv.cc EvalHybrid: float input, int8 filter. Each image is quantized with
    AsymmetricQuantizeFloats; one filter scale (per tensor) is repeated per output channel, as
    TFLite's Prepare does; then reference_ops::HybridTransposeConv (kernels/hybrid.py)."""
    w, o = ctx.input(1), ctx.options
    ctx.expect_dtype(w, "int8")
    if ctx.outputs[0].dtype != "float32":
        raise ctx.unsupported(f"hybrid TRANSPOSE_CONV with a {ctx.outputs[0].dtype} output")
    out_c = w.shape[0]
    q = w.quantization
    if q is None or q.scale.size not in (1, out_c) or (q.scale.size > 1 and q.axis != 0):
        raise ctx.invalid(f"filter {w.name!r} needs one scale, or one per output channel on "
                          f"axis 0")
    scales = np.ascontiguousarray(np.broadcast_to(q.scale.astype(np.float32), (out_c,)))
    bias = ctx.optional_input(3)
    if bias is not None:
        ctx.expect_dtype(bias, "float32")
        if int(np.prod(bias.shape)) != out_c:
            raise ctx.invalid(f"bias has shape {bias.shape} for {out_c} output channels")
    low, high = float_activation_bounds(ctx)

    def run(_shape, weights, values, b=None):
        images = np.ascontiguousarray(values, np.float32)
        quantized, scaling, offsets = hybrid.quantize_asymmetric(images.reshape(len(images), -1))
        b = np.zeros(out_c, np.float32) if b is None else np.asarray(b, np.float32).ravel()
        return hybrid.transpose_conv_hybrid(
            quantized.reshape(images.shape), scaling, offsets, weights, scales, b,
            bias is not None, o.strideH, o.strideW, pad_top, pad_left, out_shape[1],
            out_shape[2], np.float32(low), np.float32(high))

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])
