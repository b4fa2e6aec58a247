"""CONV_2D and DEPTHWISE_CONV_2D: shared checks and geometry, the float kernels, and the
definitions (`OpDef`) that key every dtype's kernel and hold the ops' quantization facts.

Float convolutions with a constant filter run kernels/float_gemm.py (bit-identical to TFLite's
reference kernels), split over output pixels or rows between threads; grouped ones and
non-constant filters go through im2col and NumPy's BLAS matmul. Hybrid and int8 ones are in
`conv_int` (multipliers computed exactly as TFLite's PopulateConvolutionQuantizationParams
does), 16x8 ones in `int16_int`.
"""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .common import (
    ConvGeometry,
    broadcast_shape,
    float_activation_bounds,
    float_bounds,
    geometry,
    patches,
    where,
)
from .opdef import (
    DEPTHWISE_1HWO,
    FLOAT32,
    HYBRID,
    INT8,
    INT16,
    OHWI,
    REQUANT,
    XNNPACK,
    Hybrid,
    OpDef,
    Quantized,
    Weight,
    define,
)


def _bias(ctx: OpContext, index: int, channels: int, dtype: str):
    spec = ctx.optional_input(index)
    if spec is None:
        return None
    ctx.expect_dtype(spec, dtype)
    value = ctx.constant(index, "bias")
    if value.size != channels:
        raise ctx.invalid(f"bias has {value.size} elements for {channels} output channels")
    return value.reshape(channels)


def _most_inputs(ctx: OpContext) -> int:
    """Input, filter, bias; and a folded ADD's residual and PRELU's slopes (runtime/fusion.py)."""
    return 3 if ctx.op.fused_epilogue is None else 5


class ConvEpilogue:
    """The ADD, PRELU and/or HARD_SWISH runtime/fusion.py folded into a float conv (`Operator
    .fused_epilogue`, inputs 3 and 4): run by the kernels on each tile of output
    (`kernels.float_conv.post_f32`) when the residual has the conv's output shape and the slopes
    one value per channel, else (shapes only known at run time) over the whole output with
    NumPy's broadcasting, the same formulas. `out_shape` is the fused op's output shape."""

    def __init__(self, ctx: OpContext, conv_shape: tuple):
        folded = ctx.op.fused_epilogue
        self.residual = folded is not None and folded.residual_activation is not None
        self.prelu = folded is not None and folded.prelu
        self.hard_swish = folded is not None and folded.hard_swish
        self.low, self.high = float_bounds(folded.residual_activation) if self.residual \
            else (0.0, 0.0)
        self.pad = folded.residual_pad if self.residual else 0  # zero channels to append
        self.out_shape, same_shapes = conv_shape, True
        if self.residual:
            ctx.expect_dtype(ctx.input(3), "float32")
            padded = _padded_shape(ctx.input(3).shape, self.pad)
            self.out_shape = broadcast_shape(ctx, conv_shape, padded)
            same_shapes = padded == tuple(conv_shape)
        self.alpha = None  # the slopes per channel, when known at prepare time
        if self.prelu:
            slopes = ctx.input(4)
            ctx.expect_dtype(slopes, "float32")
            if broadcast_shape(ctx, self.out_shape, slopes.shape) != self.out_shape:
                raise ctx.invalid(f"PRELU's alpha of shape {slopes.shape} would broadcast "
                                  f"{self.out_shape} to a larger shape")
            if slopes.value is not None:
                self.alpha = self._per_channel(slopes.value)
        self.in_kernel = same_shapes and (
            not self.prelu or all(d == 1 for d in ctx.input(4).shape[:-1]))
        from qengine.kernels.float_conv import NO_POST, post_args

        self._post_args = post_args
        # the `post` of every run, unless it holds the run's residual or slopes (None): one
        # tuple object, which Numba's dispatcher types faster than a new one (~0.3 us, not 0.9)
        self.fixed = None
        if not (self.in_kernel and self.any):
            self.fixed = NO_POST
        elif not self.residual and (self.alpha is not None or not self.prelu):
            self.fixed = post_args(None, self.low, self.high, self.alpha, self.hard_swish)

    @property
    def any(self) -> bool:
        return self.residual or self.prelu or self.hard_swish

    def _per_channel(self, alpha) -> np.ndarray:
        """The kernels' slopes (float_conv.tile_slopes) from an alpha of shape [1, .., 1, C]
        or [1, .., 1, 1]."""
        from qengine.kernels.float_conv import tile_slopes

        alpha = np.asarray(alpha, np.float32).reshape(-1)
        return tile_slopes(np.broadcast_to(alpha, (self.out_shape[-1],)))

    def post(self, residual, alpha) -> tuple:
        """The kernels' `post` argument for one run (nothing to do unless `in_kernel`)."""
        if self.fixed is not None:
            return self.fixed
        if self.residual:
            residual = np.ascontiguousarray(residual, np.float32)
            residual = residual.reshape(-1, residual.shape[-1])
        else:
            residual = None
        if self.prelu:
            alpha = self.alpha if self.alpha is not None else self._per_channel(alpha)
        else:
            alpha = None
        return self._post_args(residual, self.low, self.high, alpha, self.hard_swish)

    def whole(self, out: np.ndarray, residual, alpha) -> np.ndarray:
        """The epilogue as one pass over a finished output (kernels without it in their
        tiles), then `after`."""
        from qengine.kernels.float_conv import post_f32

        if self.in_kernel and self.any:
            flat = out.reshape(-1, out.shape[-1])
            post_f32(flat, 0, flat.shape[0], self.post(residual, alpha))
        return self.after(out, residual, alpha)

    def after(self, out: np.ndarray, residual, alpha) -> np.ndarray:
        """The fused op's output from the conv's `out`: unchanged when the kernels ran the
        epilogue, else the ADD, clamp, PRELU and HARD_SWISH over the whole array."""
        if self.in_kernel or not self.any:
            return out
        with np.errstate(all="ignore"):  # overflow to inf is the float result, as in C++
            if self.residual:  # ADD: clamp(x + y) to the activation's bounds, NaN through
                if self.pad:  # the folded PAD
                    residual = np.pad(np.asarray(residual, np.float32),
                                      [(0, 0)] * (np.ndim(residual) - 1) + [(0, self.pad)])
                out = np.clip(out + residual, np.float32(self.low), np.float32(self.high))
            if self.prelu:
                out = where(out >= 0, out, out * alpha)
        if self.hard_swish:
            from .activations import hard_swish_values

            out = hard_swish_values(out)
        return np.asarray(out, np.float32)


def _padded_shape(shape, pad: int) -> tuple:
    """A residual's shape once its folded PAD appended `pad` channels."""
    shape = tuple(shape)
    return (*shape[:-1], shape[-1] + pad) if shape else shape


def _conv_shared(ctx: OpContext) -> tuple:
    """Checks and geometry of every CONV_2D: (geometry, output shape, groups)."""
    ctx.expect_inputs(2, _most_inputs(ctx))
    if ctx.optional_input(2) is None:  # conv.cc Prepare: TF_LITE_ENSURE(context, has_bias)
        raise ctx.invalid(f"{ctx.op.type} has no bias input; TFLite requires one")
    x, w = ctx.input(0), ctx.input(1)
    ctx.expect_rank(x, 4)
    ctx.expect_rank(w, 4)
    out_c, kh, kw, in_c_per_group = w.shape
    in_c = x.shape[3]
    if in_c_per_group == 0 or in_c % in_c_per_group or out_c % (in_c // in_c_per_group or 1):
        raise ctx.invalid(f"input channels {in_c} do not split into groups of "
                          f"{in_c_per_group} for {out_c} filters")
    g = geometry(ctx, x.shape, kh, kw)
    return g, (g.batch, g.out_h, g.out_w, out_c), in_c // in_c_per_group


def _conv_float(ctx: OpContext, g: ConvGeometry, out_shape, groups: int) -> Prepared:
    from qengine.kernels.float_conv import bias_clamp_f32
    from qengine.kernels.threads import matmul_rows

    w_spec = ctx.input(1)
    ctx.expect_dtype(w_spec, "float32")
    weights = ctx.constant(1, "filter") if w_spec.value is not None else None
    out_c = out_shape[3]
    bias = _bias(ctx, 2, out_c, "float32")
    bias = np.zeros(out_c, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    low, high = float_activation_bounds(ctx)
    per_group = out_c // groups
    epilogue = ConvEpilogue(ctx, out_shape)

    if groups == 1 and weights is not None:
        return conv_float_direct(ctx, g, out_shape, weights, bias, low, high, epilogue)
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

    def run(x, w, b=None, residual=None, alpha=None):
        out = matmul(x, weights if weights is not None else w)
        bias_clamp_f32(out, bias, low, high)  # bias and fused activation in one pass, in place
        return epilogue.whole(out.reshape(out_shape), residual, alpha)

    return Prepared(run, [ctx.output_spec(0, epilogue.out_shape, "float32")])


def conv_float_direct(ctx, g: ConvGeometry, out_shape, weights, bias, low, high,
                      epilogue: ConvEpilogue | None = None) -> Prepared:
    """A constant-filter, one-group float conv: packed weights, the indirect micro-kernel
    (kernels/float_gemm.py) over blocks of output pixels, one block per thread."""
    from qengine.kernels.float_conv import output_allocator
    from qengine.kernels.float_gemm import (
        LANES,
        WIDE,
        conv2d_f32_rows,
        conv2d_f32_split,
        pack_conv_f32,
        pad_channels,
    )
    from qengine.kernels.jit import pinned
    from qengine.kernels.threads import split_grid

    epilogue = epilogue or ConvEpilogue(ctx, out_shape)  # (FULLY_CONNECTED's has none)

    fused = ctx.arithmetic == XNNPACK  # XNNPACK's sums: from the bias, fused multiply-adds
    if _row_vectorized(out_shape[3], weights.shape[3], weights[0].size, g.out_w, WIDE):
        return _conv_float_narrow(ctx, g, out_shape, weights, bias, low, high, fused, epilogue)
    panels, bias16 = pack_conv_f32(weights), pad_channels(bias, LANES)
    pixels = g.batch * g.out_h * g.out_w
    new_out = output_allocator((pixels, out_shape[3]))
    flops = 2 * pixels * weights.size
    shape = (g.out_w, g.kernel_h, g.kernel_w, *_strides_pads(g), low, high, WIDE, fused)
    by_panels = _weights_outweigh(panels, g, weights.shape[3], out_shape[3])
    rows_kernel, split_kernel = pinned(conv2d_f32_rows), pinned(conv2d_f32_split)

    def run(x, w, b=None, residual=None, alpha=None):
        x = np.ascontiguousarray(x, np.float32)  # the kernel reads raw addresses
        out = new_out()
        post = epilogue.post(residual, alpha)
        split_grid(rows_kernel, split_kernel, (x, panels, bias16, out, *shape, post),
                   pixels, panels.shape[0], ctx.num_threads, flops, by_panels=by_panels)
        return epilogue.after(out.reshape(out_shape), residual, alpha)

    return Prepared(run, [ctx.output_spec(0, epilogue.out_shape, "float32")])


def _weights_outweigh(panels: np.ndarray, g: ConvGeometry, in_c: int, out_c: int) -> bool:
    """Whether a float conv split between threads should split its weight panels rather than
    its output pixels: each core then reads half the weights, but every input pixel, and
    writes a part of every output pixel, which the next layer (split by pixels) reads from
    the other core's cache. So: when the weights outweigh the input and output (a 7x7 layer of
    pose_detection, 1x1 192 -> 1152: 884 KB of weights, 262 KB of activations)."""
    activations = g.batch * (g.in_h * g.in_w * in_c + g.out_h * g.out_w * out_c)
    return panels.size > activations


def _row_vectorized(out_c: int, in_c: int, depth: int, out_w: int, wide: bool) -> bool:
    """Whether a float conv runs along output rows (conv2d_f32_narrow_rows) rather than as the
    indirect GEMM: 1-4 output channels; 5-8 with a long enough sum to amortize the row tiles'
    epilogue; 9-32 from at most 4 input channels (first layers: a GEMM tap of 3 floats is
    mostly address overhead, and 24 channels are one and a half 16-lane panels; at 64 the
    GEMM is as fast; on AVX2 in groups of 8 channels: the 5x5/2 3 -> 24 first layer at
    128x128 347 -> 296 us), but for 3x3 windows on AVX-512, where the GEMM's 16-lane tiles
    are faster (Zen 5, `benchmarks/float_conv_paths.py`: 3x3/2 3 -> 16 at 192x192 92 vs 115
    us, 3 -> 24 at 224x224 172 vs 182; 5x5/2 3 -> 24 at 128x128 143 vs 116). Only where an
    output row holds a row tile's run of pixels, or 64 pixels for the `_axpy` fallback: below
    that the GEMM is 1.5-8x faster (palm's 12x12 1x1 256 -> 6: 9 vs 71 us; BirdNET's 48x1 ->
    24: 1 vs 15 us)."""
    from qengine.kernels.float_gemm import NARROW, row_channels, row_run

    run = row_run(row_channels(out_c), wide)
    if out_c <= NARROW // 2 or (out_c <= NARROW and depth >= 64):
        return out_w >= min(64, run)
    three_by_three = depth == 9 * in_c
    return out_c <= 32 and in_c <= 4 and out_w >= run and not (wide and three_by_three)


def _conv_float_narrow(ctx, g: ConvGeometry, out_shape, weights, bias, low, high,
                       fused, epilogue: ConvEpilogue) -> Prepared:
    """A float conv with 1-8 output channels: vectorized along output rows, split by rows."""
    from qengine.kernels.float_conv import output_allocator
    from qengine.kernels.float_gemm import (
        WIDE,
        conv2d_f32_narrow_rows,
        conv2d_f32_narrow_split,
        pack_narrow_f32,
    )
    from qengine.kernels.jit import pinned
    from qengine.kernels.threads import split_run

    w8 = pack_narrow_f32(weights)
    new_out = output_allocator(out_shape)
    rows = g.batch * g.out_h
    flops = 2 * rows * g.out_w * weights.size
    shape = (g.kernel_h, g.kernel_w, *_strides_pads(g), low, high, WIDE, fused)
    rows_kernel, split_kernel = pinned(conv2d_f32_narrow_rows), pinned(conv2d_f32_narrow_split)

    def run(x, w, b=None, residual=None, alpha=None):
        x = np.ascontiguousarray(x, np.float32)
        out = new_out()
        post = epilogue.post(residual, alpha)
        split_run(rows_kernel, split_kernel, (x, w8, bias, out, *shape, post), rows,
                  ctx.num_threads, flops)
        return epilogue.after(out, residual, alpha)

    return Prepared(run, [ctx.output_spec(0, epilogue.out_shape, "float32")])


def _pad_last(a: np.ndarray, extra: int) -> np.ndarray:
    """a as C-contiguous float32 with `extra` zeros appended along its last axis."""
    if extra:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], extra), a.dtype)], axis=-1)
    return np.ascontiguousarray(a, np.float32)




def _strides_pads(g: ConvGeometry) -> tuple:
    """The float kernels' geometry arguments, in their order."""
    return g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left


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


def _depthwise_shared(ctx: OpContext) -> tuple:
    """Checks and geometry of every DEPTHWISE_CONV_2D: (geometry, output shape, multiplier)."""
    ctx.expect_inputs(2, _most_inputs(ctx))
    x, w = ctx.input(0), ctx.input(1)
    ctx.expect_rank(x, 4)
    ctx.expect_rank(w, 4)
    _, kh, kw, out_c = w.shape
    in_c = x.shape[3]
    if w.shape[0] != 1 or in_c == 0 or out_c % in_c:
        raise ctx.invalid(f"filter {w.shape} does not fit {in_c} input channels")
    multiplier = out_c // in_c  # TFLite recomputes it from the shapes and ignores the option
    g = geometry(ctx, x.shape, kh, kw)
    return g, (g.batch, g.out_h, g.out_w, out_c), multiplier


def _depthwise_float(ctx, g: ConvGeometry, out_shape, multiplier: int) -> Prepared:
    ctx.expect_dtype(ctx.input(1), "float32")
    out_c = out_shape[3]
    bias = _bias(ctx, 2, out_c, "float32")
    bias = np.zeros(out_c, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    low, high = float_activation_bounds(ctx)
    return _depthwise_float_direct(ctx, g, out_shape, multiplier, bias, low, high,
                                   ConvEpilogue(ctx, out_shape))


def _depthwise_float_direct(ctx, g: ConvGeometry, out_shape, multiplier, bias, low,
                            high, epilogue: ConvEpilogue) -> Prepared:
    """Float depthwise: kernels/float_gemm.py's channel-vector kernel over blocks of output
    rows, one block per thread. With a depth multiplier m, output channel c reads input
    channel c // m: the input is repeated m times along channels first (the same values, so
    the same sums)."""
    from qengine.kernels.float_conv import NO_POST, output_allocator
    from qengine.kernels.float_gemm import VEC, depthwise_f32_rows, depthwise_f32_split
    from qengine.kernels.jit import pinned
    from qengine.kernels.threads import split_run

    taps = g.kernel_h * g.kernel_w
    out_c = out_shape[3]
    # the kernel wants 8 channels or more: fewer run zero-padded to 8 (pad_c of them)
    pad_c = max(0, VEC - out_c)
    # XNNPACK's sums start at the bias and step by fused multiply-adds; its depthwise kernel
    # takes the taps column by column (with a multiplier it runs a grouped GEMM, row by row)
    fused = ctx.arithmetic == XNNPACK
    if taps == 1 and multiplier == 1 and not fused and _pointwise(g) and \
            ctx.input(1).value is not None:
        return _depthwise_float_pointwise(ctx, g, out_shape, bias, low, high, epilogue)
    x_major = fused and multiplier == 1

    def pack(w):  # [1, KH, KW, C] -> [taps, C + pad_c], the taps in the kernel's order
        w = w.reshape(g.kernel_h, g.kernel_w, -1)
        return _pad_last((w.transpose(1, 0, 2) if x_major else w).reshape(taps, -1), pad_c)

    packed = pack(ctx.constant(1, "filter")) if ctx.input(1).value is not None else None
    bias = _pad_last(bias, pad_c)
    padded_shape = (*out_shape[:3], out_c + pad_c)
    new_out = output_allocator(padded_shape)
    rows = g.batch * g.out_h
    # against the split's bar (threads.MIN_SPLIT_FLOPS, set by GEMMs): a depthwise
    # multiply-add takes ~3x a GEMM one (a load each, sums in the reference order)
    flops = 6 * rows * g.out_w * out_shape[3] * taps
    shape = (*_strides_pads(g), g.kernel_h, g.kernel_w, low, high, fused, x_major)
    rows_kernel, split_kernel = pinned(depthwise_f32_rows), pinned(depthwise_f32_split)

    def run(x, w, b=None, residual=None, alpha=None):
        if multiplier > 1:
            x = np.repeat(x, multiplier, axis=3)
        x = _pad_last(x, pad_c)  # C-contiguous float32: the kernel reads raw addresses
        w = packed if packed is not None else pack(w)
        out = new_out()
        if pad_c:  # the epilogue after the padding channels are cut off
            split_run(rows_kernel, split_kernel, (x, w, bias, out, *shape, NO_POST), rows,
                      ctx.num_threads, flops)
            return epilogue.whole(np.ascontiguousarray(out[..., :out_c]), residual, alpha)
        split_run(rows_kernel, split_kernel,
                  (x, w, bias, out, *shape, epilogue.post(residual, alpha)), rows,
                  ctx.num_threads, flops)
        return epilogue.after(out, residual, alpha)

    return Prepared(run, [ctx.output_spec(0, epilogue.out_shape, "float32")])


def _pointwise(g: ConvGeometry) -> bool:
    """Every output pixel reads the input pixel at its own place (a 1x1 filter)."""
    return (g.stride_h == g.stride_w == 1 and g.pad_top == g.pad_left == 0
            and (g.out_h, g.out_w) == (g.in_h, g.in_w))


def _depthwise_float_pointwise(ctx, g: ConvGeometry, out_shape, bias, low, high,
                               epilogue: ConvEpilogue) -> Prepared:
    """A 1x1 float depthwise of multiplier 1 (hand_recrop's per-channel scales): a flat
    per-channel multiply-add over the pixels in TFLite's reference order
    (kernels/float_conv.pointwise_depthwise_f32), split between threads like an elementwise
    pass."""
    from qengine.kernels.float_conv import (
        pointwise_depthwise_f32,
        pointwise_depthwise_f32_split,
        tile_slopes,
    )
    from qengine.kernels.threads import STREAM_FLOPS, split_run

    w = tile_slopes(ctx.constant(1, "filter").reshape(-1))
    bias = tile_slopes(bias)
    pixels = g.batch * g.out_h * g.out_w
    bounds = (np.float32(low), np.float32(high))

    def run(x, _w, b=None, residual=None, alpha=None):
        x = np.ascontiguousarray(x, np.float32).reshape(pixels, -1)
        out = np.empty_like(x)
        split_run(pointwise_depthwise_f32, pointwise_depthwise_f32_split,
                  (x, w, bias, out, *bounds, epilogue.post(residual, alpha)), pixels,
                  ctx.num_threads, STREAM_FLOPS * out.size)
        return epilogue.after(out.reshape(out_shape), residual, alpha)

    return Prepared(run, [ctx.output_spec(0, epilogue.out_shape, "float32")])


# -- compare's headroom audit: the int32 accumulators in exact (float64) arithmetic ---------------


def _conv_accumulator(op, index: int, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """acc[n, y, x, o] = sum w * (x - zp_x) per image; padding contributes x - zp = 0, as
    TFLite's kernels skip it."""
    return np.stack([_conv_acc(op, index, image[None], w) for image in x])


def _conv_acc(op, index: int, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    out_c, kh, kw, per_group = w.shape
    g = geometry(OpContext(op, index, []), x.shape, kh, kw)
    cols = patches(x, g)[0]  # [OH, OW, KH, KW, C]
    groups = x.shape[3] // per_group
    step = out_c // groups
    parts = [cols[..., k * per_group:(k + 1) * per_group].reshape(-1, kh * kw * per_group)
             @ w[k * step:(k + 1) * step].reshape(step, -1).T for k in range(groups)]
    return np.concatenate(parts, axis=1).reshape(g.out_h, g.out_w, out_c)


def _depthwise_accumulator(op, index: int, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Output channel c reads input channel c // multiplier."""
    return np.stack([_depthwise_acc(op, index, image[None], w) for image in x])


def _depthwise_acc(op, index: int, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    _, kh, kw, out_c = w.shape
    g = geometry(OpContext(op, index, []), x.shape, kh, kw)
    cols = patches(x, g)[0]  # [OH, OW, KH, KW, C]
    source = np.arange(out_c) // (out_c // x.shape[3])
    acc = np.zeros((g.out_h, g.out_w, out_c))
    for i in range(kh):
        for j in range(kw):
            acc += cols[:, :, i, j, source] * w[0, i, j]
    return acc


# -- the definitions --------------------------------------------------------------------------

CONV_2D = define(OpDef(
    "CONV_2D", shared=_conv_shared,
    kernels={FLOAT32: _conv_float, HYBRID: "conv_int:hybrid_conv_2d", INT8: "conv_int:conv_2d",
             (INT8, XNNPACK): "conv_int:conv_2d_xnnpack", INT16: "int16_int:conv_2d"},
    weight=Weight(1, 0, OHWI, types=("int8", "int4")),
    quantized=Quantized(REQUANT, 3, int16=3, bias=2),
    hybrid=Hybrid(per_tensor=2, per_channel=5),
    accumulator=_conv_accumulator))

DEPTHWISE_CONV_2D = define(OpDef(
    "DEPTHWISE_CONV_2D", shared=_depthwise_shared,
    kernels={FLOAT32: _depthwise_float, HYBRID: "conv_int:hybrid_depthwise_conv_2d",
             INT8: "conv_int:depthwise_conv_2d",
             (INT8, XNNPACK): "conv_int:depthwise_conv_2d_xnnpack",
             INT16: "int16_int:depthwise_conv_2d"},
    # hybrid and int16 kernels take int8 filters only (the int16 one would read packed bytes)
    weight=Weight(1, 3, DEPTHWISE_1HWO, types=("int8", "int4"),
                  types_by_input=(("float32", ("int8",)), ("int16", ("int8",)))),
    quantized=Quantized(REQUANT, 3, int16=3, bias=2),
    # TFLite's hybrid depthwise kernel reads one scale per channel whatever the file holds
    hybrid=Hybrid(per_tensor=4, per_channel=6, always_per_channel=True),
    accumulator=_depthwise_accumulator))
