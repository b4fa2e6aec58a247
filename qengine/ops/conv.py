"""CONV_2D and DEPTHWISE_CONV_2D.

Float convolutions go through im2col and NumPy's BLAS matmul; int8 ones through the reference
kernels in `qengine.kernels.conv`, with multipliers computed here exactly as TFLite's
PopulateConvolutionQuantizationParams does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runtime.registry import OpContext, Prepared, register_op
from .common import conv_output_size, float_activation_bounds


@dataclass
class ConvGeometry:
    batch: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    pad_top: int
    pad_left: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    dil_h: int
    dil_w: int


def geometry(ctx: OpContext, x_shape, kernel_h: int, kernel_w: int) -> ConvGeometry:
    o = ctx.options
    if o is None:
        raise ctx.invalid("options are missing")
    if kernel_h < 1 or kernel_w < 1:
        raise ctx.invalid(f"kernel size {kernel_h}x{kernel_w} is empty")
    stride_h, stride_w = o.strideH, o.strideW
    dil_h, dil_w = getattr(o, "dilationHFactor", 1), getattr(o, "dilationWFactor", 1)
    n, h, w = x_shape[0], x_shape[1], x_shape[2]
    out_h, pad_top = conv_output_size(ctx, o.padding, h, kernel_h, stride_h, dil_h)
    out_w, pad_left = conv_output_size(ctx, o.padding, w, kernel_w, stride_w, dil_w)
    return ConvGeometry(n, h, w, out_h, out_w, pad_top, pad_left, kernel_h, kernel_w,
                        stride_h, stride_w, dil_h, dil_w)


def patches(x: np.ndarray, g: ConvGeometry, pad_value=0) -> np.ndarray:
    """im2col: [N, OH, OW, KH, KW, C] view of the padded input (copied on reshape)."""
    n, h, w, c = x.shape
    need_h = (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dil_h + 1
    need_w = (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dil_w + 1
    bottom = max(need_h - h - g.pad_top, 0)
    right = max(need_w - w - g.pad_left, 0)
    padded = np.pad(x, ((0, 0), (g.pad_top, bottom), (g.pad_left, right), (0, 0)),
                    constant_values=pad_value)
    sn, sh, sw, sc = padded.strides
    return np.lib.stride_tricks.as_strided(
        padded, (n, g.out_h, g.out_w, g.kernel_h, g.kernel_w, c),
        (sn, sh * g.stride_h, sw * g.stride_w, sh * g.dil_h, sw * g.dil_w, sc), writeable=False)


def _bias(ctx: OpContext, index: int, channels: int, dtype: str):
    spec = ctx.optional_input(index)
    if spec is None:
        return None
    ctx.expect_dtype(spec, dtype)
    value = ctx.constant(index, "bias")
    if value.size != channels:
        raise ctx.invalid(f"bias has {value.size} elements for {channels} output channels")
    return value.reshape(channels)


@register_op("CONV_2D")
def conv_2d(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2, 3)
    if ctx.optional_input(2) is None:  # conv.cc Prepare: TF_LITE_ENSURE(context, has_bias)
        raise ctx.invalid("CONV_2D has no bias input; TFLite requires one")
    x, w = ctx.input(0), ctx.input(1)
    ctx.expect_rank(x, 4)
    ctx.expect_rank(w, 4)
    out_c, kh, kw, in_c_per_group = w.shape
    in_c = x.shape[3]
    if in_c_per_group == 0 or in_c % in_c_per_group or out_c % (in_c // in_c_per_group or 1):
        raise ctx.invalid(f"input channels {in_c} do not split into groups of "
                          f"{in_c_per_group} for {out_c} filters")
    g = geometry(ctx, x.shape, kh, kw)
    out_shape = (g.batch, g.out_h, g.out_w, out_c)
    groups = in_c // in_c_per_group
    if x.dtype == "float32" and w.dtype == "float32":
        return _conv_float(ctx, g, w, out_shape, groups)
    from . import conv_int as quantized  # numba kernels load only when an int model needs them

    if x.dtype == "float32":  # int8 filter, float activations: dynamic range ("hybrid")
        return quantized.hybrid_conv_2d(ctx, g, out_shape, groups)
    return quantized.conv_2d(ctx, g, out_shape, groups)


def _conv_float(ctx: OpContext, g: ConvGeometry, w_spec, out_shape, groups: int) -> Prepared:
    from qengine.kernels.float_conv import bias_clamp_f32
    from qengine.kernels.threads import matmul_rows

    ctx.expect_dtype(w_spec, "float32")
    weights = ctx.constant(1, "filter") if w_spec.value is not None else None
    out_c = out_shape[3]
    bias = _bias(ctx, 2, out_c, "float32")
    bias = np.zeros(out_c, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    low, high = float_activation_bounds(ctx)
    per_group = out_c // groups

    pointwise = (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_top, g.pad_left,
                 groups) == (1, 1, 1, 1, 0, 0, 1)
    from ..runtime.interpreter import blas_is_limited

    # without threadpoolctl BLAS keeps its own threads: then do not add ours on top
    threads = ctx.num_threads if blas_is_limited() else 1

    def matmul(x, w):
        if groups == 1:  # parallel over output rows (kernels/threads.py), im2col per block
            out = np.empty((g.batch * g.out_h * g.out_w, out_c), np.float32)
            blocks, rows_of = _im2col_blocks(x, g, pointwise)
            copied = 0 if pointwise else out.shape[0] // blocks * w[0].size * 4
            matmul_rows(rows_of, blocks, w.reshape(out_c, -1).T, out, threads, copied)
            return out
        cols = patches(x, g)
        in_per_group = w.shape[3]
        out = np.empty((cols.shape[0] * g.out_h * g.out_w, out_c), np.float32)
        for group in range(groups):
            part = cols[..., group * in_per_group:(group + 1) * in_per_group]
            part = part.reshape(-1, g.kernel_h * g.kernel_w * in_per_group)
            wg = w[group * per_group:(group + 1) * per_group].reshape(per_group, -1)
            np.matmul(part, wg.T, out=out[:, group * per_group:(group + 1) * per_group])
        return out

    def run(x, w, b=None):
        out = matmul(x, weights if weights is not None else w)
        bias_clamp_f32(out, bias, low, high)  # bias and fused activation in one pass, in place
        return out.reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


def _im2col_blocks(x: np.ndarray, g: ConvGeometry, pointwise: bool):
    """(units, rows_of): the conv's output split into `units` blocks of whole output rows (one
    image's rows, or whole images when batch > 1); rows_of(u0, u1) is the [pixels, KH*KW*C]
    left operand of blocks [u0, u1): a slice of the input for a 1x1 convolution (no copy), else
    that block's im2col copy, made by the thread that multiplies it."""
    if pointwise:
        flat = x.reshape(-1, x.shape[3])
        units = g.batch * g.out_h
        return units, lambda u0, u1: flat[u0 * g.out_w:u1 * g.out_w]
    cols = patches(x, g)
    depth = g.kernel_h * g.kernel_w * x.shape[3]
    if g.batch == 1:
        return g.out_h, lambda u0, u1: cols[0, u0:u1].reshape(-1, depth)
    return g.batch, lambda u0, u1: cols[u0:u1].reshape(-1, depth)


@register_op("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2, 3)
    x, w = ctx.input(0), ctx.input(1)
    ctx.expect_rank(x, 4)
    ctx.expect_rank(w, 4)
    _, kh, kw, out_c = w.shape
    in_c = x.shape[3]
    if w.shape[0] != 1 or in_c == 0 or out_c % in_c:
        raise ctx.invalid(f"filter {w.shape} does not fit {in_c} input channels")
    multiplier = out_c // in_c  # TFLite recomputes it from the shapes and ignores the option
    g = geometry(ctx, x.shape, kh, kw)
    out_shape = (g.batch, g.out_h, g.out_w, out_c)
    if x.dtype == "float32" and w.dtype == "float32":
        return _depthwise_float(ctx, g, w, out_shape, multiplier)
    from . import conv_int as quantized

    if x.dtype == "float32":
        return quantized.hybrid_depthwise_conv_2d(ctx, g, out_shape, multiplier)
    return quantized.depthwise_conv_2d(ctx, g, out_shape, multiplier)


def _depthwise_float(ctx, g: ConvGeometry, w_spec, out_shape, multiplier: int) -> Prepared:
    from qengine.kernels.float_conv import depthwise_conv2d_f32

    ctx.expect_dtype(w_spec, "float32")
    out_c = out_shape[3]
    bias = _bias(ctx, 2, out_c, "float32")
    zeros = np.zeros(out_c, np.float32)
    low, high = float_activation_bounds(ctx)

    def run(x, w, b=None):
        return depthwise_conv2d_f32(
            x, np.ascontiguousarray(w[0]), zeros if bias is None else bias, g.stride_h,
            g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left, g.out_h, g.out_w, multiplier,
            low, high)

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])
