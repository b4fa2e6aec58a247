"""Int8 and hybrid CONV_2D / DEPTHWISE_CONV_2D, called from `conv.py` with the geometry.

Int8 convolutions reproduce TFLite's reference kernels (ConvPerChannel,
DepthwiseConvPerChannel): always the per-channel path, even with one filter scale, with
`eff[c] = double(s_in) * double(s_w[c]) / double(s_out)` through QuantizeMultiplier
(kernel_util.cc PopulateConvolutionQuantizationParams).

Hybrid convolutions (float input, int8 filter) quantize each batch image on the fly
(conv.cc EvalHybrid / EvalHybridPerChannel, depthwise_conv.cc EvalHybridPerChannel):

- CONV_2D with one filter scale (or all scales equal): symmetric, `sf_b *= s_w`,
  `out = float(acc) * sf_b + bias` (optimized_ops::HybridConv, the only implementation).
- CONV_2D with differing scales: asymmetric, `out = (float(acc) * s_w[c]) * sf_b + bias`
  (reference_ops::HybridConvPerChannel).
- DEPTHWISE_CONV_2D: always asymmetric, `out = float(acc) * (s_w[c] * sf_b) + bias`
  (reference_integer_ops::DepthwiseConvHybridPerChannel).
Every product is a float32 operation, in that order; the fused activation is a float clamp.
"""

from __future__ import annotations

import numpy as np

from qengine.kernels import hybrid
from qengine.kernels.conv import conv2d_int8, depthwise_conv2d_int8
from qengine.kernels.depthwise_int8 import (
    depthwise_conv2d_int8_fast,
    plan_depthwise_int8,
    run_depthwise_int8,
)
from qengine.kernels.fixedpoint import quantize_multipliers
from qengine.kernels.float_conv import NO_POST, output_allocator
from qengine.kernels.gemm_int8 import (
    conv2d_int8_fast,
    kernel_threads,
    plan_conv2d_int8,
    run_conv2d_int8,
)
from qengine.kernels.hybrid_conv import (
    plan_hybrid_conv,
    plan_hybrid_depthwise,
    run_hybrid_conv_serial,
    run_hybrid_conv_split,
    run_hybrid_depthwise,
    run_hybrid_depthwise_serial,
    run_hybrid_depthwise_split,
)
from qengine.kernels.pack import DW_ORDER, ROWS, pack_conv_weights, pack_depthwise_weights
from qengine.kernels.threads import DEPTHWISE_MAC_FLOPS, split_run

from ..runtime.registry import OpContext, Prepared, Spec
from . import xnnpack_int
from .common import (
    ConvGeometry,
    expect_filter_type,
    float_activation,
    float_activation_bounds,
    quantized_activation_range,
    required_per_tensor,
    use_fast_kernels,
)
from .conv import ConvEpilogue

# -- validation shared by all four ----------------------------------------------------------


def _filter_scales(ctx: OpContext, w: Spec, out_c: int) -> np.ndarray:
    """The filter's scales, one per output channel (a single scale is repeated)."""
    expect_filter_type(ctx, w)
    q = w.quantization
    if q is None or q.scale.size == 0:
        raise ctx.invalid(f"{w.dtype} filter {w.name!r} has no quantization parameters")
    if q.scale.size not in (1, out_c):
        raise ctx.invalid(f"filter {w.name!r} has {q.scale.size} scales for {out_c} output "
                          f"channels")
    if q.scale.size > 1 and (q.axis >= w.rank or w.shape[q.axis] != out_c):
        raise ctx.invalid(f"filter {w.name!r} is quantized along axis {q.axis}, which is not "
                          f"its output-channel axis")
    return np.broadcast_to(q.scale, (out_c,)).astype(np.float32)


def _bias(ctx: OpContext, out_c: int, dtype: str, required: bool) -> bool:
    """Check the optional bias input; True when there is one."""
    spec = ctx.optional_input(2)
    if spec is None:
        if required:  # conv.cc Prepare: TF_LITE_ENSURE(context, has_bias)
            raise ctx.invalid(f"{ctx.op.type} on int8 filters needs a bias input (TFLite "
                              f"refuses it without one)")
        return False
    ctx.expect_dtype(spec, dtype)
    if int(np.prod(spec.shape)) != out_c:
        raise ctx.invalid(f"bias {spec.shape} does not match {out_c} output channels")
    q = spec.quantization
    if dtype == "int32" and q is not None and q.zero_point.size == 1 and q.zero_point[0] != 0:
        raise ctx.invalid(f"bias {spec.name!r} has zero point {q.zero_point[0]}, must be 0")
    return True


def _expect_output(ctx: OpContext, dtype: str) -> None:
    got = ctx.outputs[0].dtype
    if got != dtype:
        raise ctx.unsupported(f"{ctx.inputs[0].dtype} input with {got} output; expected {dtype}")


# -- int8 --------------------------------------------------------------------------------------


def _int8_params(ctx: OpContext, out_c: int, bias_required: bool):
    x, w = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(x, "int8")
    _expect_output(ctx, "int8")
    scales = _filter_scales(ctx, w, out_c)
    in_scale, in_zp = required_per_tensor(ctx, x)
    out_spec = ctx.output_spec(0, None)
    out_scale, out_zp = required_per_tensor(ctx, out_spec)
    has_bias = _bias(ctx, out_c, "int32", bias_required)
    # eff[c] = double(s_in) * double(s_w[c]) / double(s_out), QuantizeMultiplier per channel
    mult, shift = quantize_multipliers(np.float64(in_scale) * scales.astype(np.float64)
                                       / np.float64(out_scale))
    act_min, act_max = quantized_activation_range(ctx, out_scale, out_zp, "int8")
    return {"in_zp": in_zp, "mult": mult, "shift": shift, "out_zp": out_zp,
            "act_min": act_min, "act_max": act_max, "in_q": (in_scale, in_zp),
            "out_q": (out_scale, out_zp), "filter_scales": scales}, has_bias


def _xnnpack(ctx: OpContext, p: dict, geometry: tuple, out_shape, depthwise: bool) -> Prepared:
    """arithmetic="xnnpack": the delegate's float32 requantization (ops/xnnpack_int.py)."""
    return xnnpack_int.conv(ctx, geometry, out_shape, p["in_q"], p["filter_scales"], p["out_q"],
                            depthwise)


def _bias_or_zeros(b, out_c: int) -> np.ndarray:
    return np.zeros(out_c, np.int32) if b is None else np.ascontiguousarray(b, np.int32).ravel()


def _conv_params(ctx: OpContext, g: ConvGeometry, out_shape) -> tuple[dict, tuple]:
    """int8 CONV_2D's Prepare, whatever the arithmetic: (parameters, kernel geometry)."""
    w = ctx.input(1)
    q = w.quantization
    if q is not None and np.any(q.zero_point != 0):  # conv.cc Prepare
        raise ctx.invalid(f"filter {w.name!r} has non-zero zero points")
    p, _ = _int8_params(ctx, out_shape[3], bias_required=True)
    return p, (g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left, g.out_h, g.out_w)


def conv_2d_xnnpack(ctx: OpContext, g: ConvGeometry, out_shape, groups: int) -> Prepared:
    """arithmetic="xnnpack": the delegate's float32 requantization (ops/xnnpack_int.py)."""
    p, geometry = _conv_params(ctx, g, out_shape)
    return _xnnpack(ctx, p, geometry, out_shape, depthwise=False)


def conv_2d(ctx: OpContext, g: ConvGeometry, out_shape, groups: int) -> Prepared:
    out_c = out_shape[3]
    w = ctx.input(1)
    p, geometry = _conv_params(ctx, g, out_shape)
    if use_fast_kernels() and w.value is not None:
        packed = pack_conv_weights(np.ascontiguousarray(w.value))  # once, at prepare time
        b_spec = ctx.optional_input(2)
        plan, threads = None, kernel_threads(ctx.num_threads)
        if groups == 1 and b_spec is not None and b_spec.value is not None:
            plan = plan_conv2d_int8(packed, _bias_or_zeros(b_spec.value, out_c), p["in_zp"],
                                    p["mult"], p["shift"], p["out_zp"], p["act_min"],
                                    p["act_max"], *geometry)

        def run(x, w, b=None):
            if plan is not None:  # requantization parameters made at prepare time
                return run_conv2d_int8(plan, x, threads)
            return conv2d_int8_fast(x, packed, _bias_or_zeros(b, out_c), p["in_zp"], p["mult"],
                                    p["shift"], p["out_zp"], p["act_min"], p["act_max"],
                                    *geometry)
    else:
        def run(x, w, b=None):
            return conv2d_int8(x, w, _bias_or_zeros(b, out_c), p["in_zp"], p["mult"],
                               p["shift"], p["out_zp"], p["act_min"], p["act_max"], *geometry)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int8")])


def _depthwise_params(ctx: OpContext, g: ConvGeometry, out_shape,
                      multiplier: int) -> tuple[dict, tuple]:
    """int8 DEPTHWISE_CONV_2D's Prepare, whatever the arithmetic: (parameters, geometry)."""
    p, _ = _int8_params(ctx, out_shape[3], bias_required=False)  # filter zero point ignored
    return p, (g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left, g.out_h,
               g.out_w, multiplier)


def depthwise_conv_2d_xnnpack(ctx: OpContext, g: ConvGeometry, out_shape,
                              multiplier: int) -> Prepared:
    """arithmetic="xnnpack": the delegate's float32 requantization (ops/xnnpack_int.py)."""
    p, geometry = _depthwise_params(ctx, g, out_shape, multiplier)
    return _xnnpack(ctx, p, geometry, out_shape, depthwise=True)


def depthwise_conv_2d(ctx: OpContext, g: ConvGeometry, out_shape, multiplier: int) -> Prepared:
    out_c = out_shape[3]
    p, geometry = _depthwise_params(ctx, g, out_shape, multiplier)
    w = ctx.input(1)
    if use_fast_kernels() and w.value is not None:
        packed = pack_depthwise_weights(np.ascontiguousarray(w.value))
        b_spec = ctx.optional_input(2)
        plan, threads = None, kernel_threads(ctx.num_threads)
        if b_spec is None or b_spec.value is not None:
            bias = _bias_or_zeros(None if b_spec is None else b_spec.value, out_c)
            plan = plan_depthwise_int8(packed, bias, p["in_zp"], p["mult"], p["shift"],
                                       p["out_zp"], p["act_min"], p["act_max"], *geometry)

        def run(x, w, b=None):
            if plan is not None:  # requantization parameters made at prepare time
                return run_depthwise_int8(plan, x, threads)
            return depthwise_conv2d_int8_fast(
                x, packed, _bias_or_zeros(b, out_c), p["in_zp"], p["mult"], p["shift"],
                p["out_zp"], p["act_min"], p["act_max"], *geometry)
    else:
        def run(x, w, b=None):
            return depthwise_conv2d_int8(
                x, w, _bias_or_zeros(b, out_c), p["in_zp"], p["mult"], p["shift"], p["out_zp"],
                p["act_min"], p["act_max"], *geometry)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int8")])


# -- hybrid (float input, int8 filter) -------------------------------------------------------


def _hybrid_params(ctx: OpContext, out_c: int, bias_required: bool):
    x = ctx.input(0)
    ctx.expect_dtype(x, "float32")
    _expect_output(ctx, "float32")
    scales = _filter_scales(ctx, ctx.input(1), out_c)
    _bias(ctx, out_c, "float32", bias_required)
    return scales, float_activation(ctx)  # CalculateActivationRange: a clamp, never tanh


def _finish(acc: np.ndarray, scale: np.ndarray, b, clamp) -> np.ndarray:
    """out = clamp(float(acc) * scale + bias), float32 throughout."""
    out = acc.astype(np.float32) * scale
    if b is not None:
        out += np.asarray(b, np.float32).ravel()
    return clamp(out)


def _images(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.float32).reshape(x.shape[0], -1)


def _hybrid_fast(ctx: OpContext, plan, out_shape, run_plan, epilogue,
                 folds: bool = True) -> Prepared:
    """A fast hybrid conv (kernels/hybrid_conv.py): each image quantized once per run, then the
    int8 kernel with the float epilogue fused. plan(bias) makes the kernel's plan (at prepare
    time when the bias is a constant); run_plan(plan, x[, post]) runs it on the float input, in
    one compiled call where it can (`run_hybrid_*_serial`/`_split`: the two steps,
    quantize_images then run_hybrid_*, cost ~10 us more in NumPy and dispatch; a 32x32x64 -> 32
    1x1 conv: 48 -> 38 us). A folded ADD or PRELU (`conv.ConvEpilogue`) runs inside the kernel
    as its `post` when run_plan `folds` it and there is one image, else as a pass over the
    whole output."""
    b_spec = ctx.optional_input(2)
    fixed = plan(None if b_spec is None else b_spec.value)
    constant_bias = b_spec is None or b_spec.value is not None
    in_kernel = folds and out_shape[0] == 1

    def run(x, w, b=None, residual=None, alpha=None):
        p = fixed if constant_bias else plan(b)
        if not in_kernel:
            return epilogue.whole(run_plan(p, x), residual, alpha)
        return epilogue.after(run_plan(p, x, epilogue.post(residual, alpha)), residual, alpha)

    return Prepared(run, [ctx.output_spec(0, epilogue.out_shape, "float32")])


def _whole_epilogue(ctx: OpContext, out_shape, run) -> Prepared:
    """run(x, w, b) with a folded ADD or PRELU (`conv.ConvEpilogue`) as a pass over its output."""
    epilogue = ConvEpilogue(ctx, out_shape)

    def with_epilogue(x, w, b=None, residual=None, alpha=None):
        return epilogue.whole(run(x, w, b), residual, alpha)

    return Prepared(with_epilogue if epilogue.any else run,
                    [ctx.output_spec(0, epilogue.out_shape, "float32")])


def hybrid_conv_2d(ctx: OpContext, g: ConvGeometry, out_shape, groups: int) -> Prepared:
    out_c = out_shape[3]
    scales, clamp = _hybrid_params(ctx, out_c, bias_required=True)
    per_channel = bool(np.any(scales != scales[0]))
    if groups != 1 and not per_channel:
        raise ctx.unsupported("grouped hybrid CONV_2D with one filter scale (TFLite runs it "
                              "through the per-channel kernel without its buffers)")
    geometry = (g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left, g.out_h,
                g.out_w)
    column = (slice(None), None, None, None)  # a per-image value broadcast over H, W, C
    w = ctx.input(1)
    if use_fast_kernels() and w.value is not None and groups == 1:
        packed = pack_conv_weights(np.ascontiguousarray(w.value))  # once, at prepare time
        pre = scales if per_channel else None  # (float(acc) * s_w[c]) * sf_b
        bounds = float_activation_bounds(ctx)

        def plan(b):
            return plan_hybrid_conv(packed, pre, b, *bounds, *geometry)

        filter_scale = np.float32(1 if per_channel else scales[0])

        flops = 2 * int(np.prod(out_shape)) * int(np.prod(w.shape[1:]))
        blocks = -(-g.out_h * g.out_w // ROWS)
        threads = max(1, ctx.num_threads)
        new_out = output_allocator((out_shape[0], g.out_h * g.out_w, out_c))

        def run_fused(p, x, post=NO_POST):
            out = new_out()
            args = (np.ascontiguousarray(x, np.float32), p.family, p.panels, p.table, p.ints,
                    p.sum_w, not per_channel, filter_scale, out, post)
            split_run(run_hybrid_conv_serial, run_hybrid_conv_split, args, blocks, threads,
                      flops)
            return out.reshape(out_shape)

        fast = _hybrid_fast(ctx, plan, out_shape, run_fused, ConvEpilogue(ctx, out_shape))
    else:
        fast = None

    def run_symmetric(x, w, b=None, geometry=geometry):
        q, sf = hybrid.quantize_symmetric(_images(x))
        sf = sf * scales[0]  # scaling_factors[b] *= filter scale, float32
        acc = hybrid.conv_accumulators(q.reshape(x.shape), w, np.zeros(len(q), np.int32),
                                       *geometry)
        return _finish(acc, sf[column], b, clamp)

    def run_asymmetric(x, w, b=None, geometry=geometry):
        q, sf, zp = hybrid.quantize_asymmetric(_images(x))
        acc = hybrid.conv_accumulators(q.reshape(x.shape), w, zp, *geometry)
        scaled = acc.astype(np.float32) * scales  # (float(acc) * s_w[c]) * sf_b
        return _finish(scaled, sf[column], b, clamp)

    reference = run_asymmetric if per_channel else run_symmetric
    prepared = fast if fast is not None else _whole_epilogue(ctx, out_shape, reference)
    return _unless_nan_unfold(ctx, prepared, reference, geometry, out_shape)


def hybrid_depthwise_conv_2d(ctx: OpContext, g: ConvGeometry, out_shape,
                             multiplier: int) -> Prepared:
    out_c = out_shape[3]
    w = ctx.input(1)
    scales, clamp = _hybrid_params(ctx, out_c, bias_required=False)
    q = w.quantization
    if q.scale.size != w.shape[q.axis]:  # depthwise_conv.cc Prepare
        raise ctx.invalid(f"filter {w.name!r} has {q.scale.size} scales for dimension "
                          f"{q.axis} of size {w.shape[q.axis]}")
    if q.scale.size == 1 and out_c > 1:
        raise ctx.unsupported("hybrid DEPTHWISE_CONV_2D needs per-channel filter scales "
                              "(TFLite's kernel reads one scale per output channel)")
    option = getattr(ctx.options, "depthMultiplier", 0)
    if option != multiplier:  # the hybrid kernel loops over the option's value
        raise ctx.unsupported(f"depth_multiplier option {option} differs from the filter's "
                              f"{multiplier}; TFLite's hybrid kernel would use the option")
    geometry = (g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left, g.out_h,
                g.out_w, multiplier)

    if use_fast_kernels() and w.value is not None:
        w16 = pack_depthwise_weights(np.ascontiguousarray(w.value))  # once, at prepare time
        bounds = float_activation_bounds(ctx)

        def plan(b):
            return plan_hybrid_depthwise(w16, None, b, *bounds, *geometry)

        filter_scales = np.ascontiguousarray(scales, np.float32)
        order = np.array(DW_ORDER, np.int64)

        flops = DEPTHWISE_MAC_FLOPS * int(np.prod(out_shape)) * g.kernel_h * g.kernel_w
        threads = max(1, ctx.num_threads)
        new_out = output_allocator(out_shape)

        def run_fused(p, x, post=NO_POST):
            out = new_out()
            args = (np.ascontiguousarray(x, np.float32), p.w_pairs, p.table, p.ints, p.sum_w,
                    filter_scales, order, out, post)
            split_run(run_hybrid_depthwise_serial, run_hybrid_depthwise_split, args, g.out_h,
                      threads, flops)
            return out

        def run_two_steps(p, x):  # depth multipliers > 1: no fused kernel
            q, sf, zp = hybrid.quantize_images(x, False, threads)
            # float(acc) * (s_w[c] * sf_b): the product first, float32
            return run_hybrid_depthwise(p, q, zp, scales[None, :] * sf[:, None], threads)

        if multiplier == 1:
            fast = _hybrid_fast(ctx, plan, out_shape, run_fused, ConvEpilogue(ctx, out_shape))
        else:
            fast = _hybrid_fast(ctx, plan, out_shape, run_two_steps,
                                ConvEpilogue(ctx, out_shape), folds=False)
    else:
        fast = None

    def run(x, w, b=None, geometry=geometry):
        q, sf, zp = hybrid.quantize_asymmetric(_images(x))
        acc = hybrid.depthwise_accumulators(q.reshape(x.shape), w, zp, *geometry)
        scale = scales[None, :] * sf[:, None]  # s_w[c] * sf_b first, float32
        return _finish(acc, scale[:, None, None, :], b, clamp)

    prepared = fast if fast is not None else _whole_epilogue(ctx, out_shape, run)
    return _unless_nan_unfold(ctx, prepared, run, geometry, out_shape)


def _unless_nan_unfold(ctx: OpContext, prepared: Prepared, reference, geometry,
                       out_shape) -> Prepared:
    """A hybrid conv with a PAD folded in (runtime/fusion.py): TFLite quantizes the PAD's
    output. Its zeros leave the range alone (min(0, low) .. max(0, high), or the larger
    magnitude) and quantize to the zero point, whose taps add (zp - zp) * w = 0 as the
    kernels' off-image taps do; so the folded conv gives the same values, except that with a
    NaN in the image the range comes from a scan in memory order (hybrid.py), which the
    zeros change. An image holding a NaN is padded and run as written (`reference`, VALID:
    the pads of `geometry` become 0); checking costs one pass over it (split between
    threads as the PAD was), a fraction of the PAD's copy."""
    if ctx.op.fused_padding is None:
        return prepared
    top, bottom, left, right = ctx.op.fused_padding
    pads = ((0, 0), (top, bottom), (left, right), (0, 0))
    valid = list(geometry)
    valid[4] = valid[5] = 0  # (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, ...)
    valid = tuple(valid)
    epilogue = ConvEpilogue(ctx, out_shape)
    folded = prepared.run

    def run(x, w, b=None, *epilogue_inputs):  # (the folded ADD's and PRELU's, if any)
        if not hybrid.has_nan(x, ctx.num_threads):
            return folded(x, w, b, *epilogue_inputs)
        residual, alpha = (*epilogue_inputs, None, None)[:2]
        as_written = reference(np.pad(x, pads), w, b, geometry=valid)
        return epilogue.whole(as_written, residual, alpha)

    return Prepared(run, prepared.outputs)
