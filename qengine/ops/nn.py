"""Float neural-network ops: pooling, the softmax family, normalizations, resizing, transpose
convolution, batch matmul and embedding lookup.

Each kernel reproduces TFLite's reference kernel (tensorflow/lite/kernels/internal/reference);
the float32 index arithmetic of the resize ops is copied step by step because it decides which
pixels are read. Quantized inputs go to `nn_int` through `quantized_path`.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..runtime.registry import OpContext, Prepared, Spec
from .common import (
    NONE,
    SUB_BYTE_TYPES,
    conv_output_size,
    float_activation,
    float_activation_bounds,
    fused_activation,
    geometry,
    is_quantized,
    patches,
    quantized_path,
)
from .opdef import (
    FIXED,
    HYBRID,
    OHWI,
    REQUANT,
    SAME,
    TABLE,
    Quantized,
    Weight,
    integer_kernels,
    op,
)


def _float_input(ctx: OpContext, i: int = 0) -> Spec:
    spec = ctx.input(i)
    ctx.expect_dtype(spec, "float32")
    return spec


def _option(ctx: OpContext, name: str, default):
    value = getattr(ctx.options, name, None) if ctx.options is not None else None
    return default if value is None else value


# -- pooling ---------------------------------------------------------------------------------


def _pool(ctx: OpContext, reduce_window, clamps: bool = False) -> Prepared:
    """Shared prepare of the 2-D pools; reduce_window(x, geometry, counts) -> [N, OH, OW, C],
    then the fused activation's clamp (unless the kernel `clamps` itself)."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    ctx.expect_rank(x, 4)
    if is_quantized(x):
        return quantized_path(ctx, "nn")
    ctx.expect_dtype(x, "float32")
    if ctx.options is None:
        raise ctx.invalid("Pool2DOptions are missing")
    kh, kw = ctx.options.filterHeight, ctx.options.filterWidth
    if kh < 1 or kw < 1:
        raise ctx.invalid(f"filter size {kh}x{kw} must be at least 1x1")
    g = geometry(ctx, x.shape, kh, kw)
    # the number of taps of each window that fall inside the image (padding is not counted)
    counts = patches(np.ones((1, g.in_h, g.in_w, 1), np.float32), g).sum(axis=(3, 4))
    if g.out_h * g.out_w and counts.min() == 0:
        raise ctx.invalid("a pooling window lies entirely in the padding")
    activation = (lambda v: v) if clamps else float_activation(ctx)
    out_shape = (g.batch, g.out_h, g.out_w, x.shape[3])

    def run(x):
        return activation(reduce_window(x, g, counts).astype(np.float32, copy=False))

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


@op("AVERAGE_POOL_2D",
    kernels=integer_kernels("nn_int:average_pool_2d"), quantized=Quantized(SAME, 2, int16=3))
def average_pool_2d(ctx: OpContext) -> Prepared:
    # out = sum(in-image taps) / count(in-image taps), one compiled pass (NumPy's sum of the
    # patches took 0.9 ms on BirdNET's 96x256x24 pool)
    from qengine.kernels.float_ops import average_pool_f32

    low, high = (np.float32(v) for v in float_activation_bounds(ctx))

    def average_window(x, g, _counts):
        return average_pool_f32(np.ascontiguousarray(x, np.float32), g.kernel_h, g.kernel_w,
                                g.stride_h, g.stride_w, g.pad_top, g.pad_left, g.out_h,
                                g.out_w, low, high)

    return _pool(ctx, average_window, clamps=True)


@op("MAX_POOL_2D",
    kernels=integer_kernels("nn_int:max_pool_2d"), quantized=Quantized(SAME, 2, int16=3))
def max_pool_2d(ctx: OpContext) -> Prepared:
    # reference MaxPool: max = std::max(max, tap) from float lowest, so NaN taps are skipped
    # and a window of -inf (or NaN) gives -FLT_MAX
    from qengine.kernels.float_conv import empty_f32
    from qengine.kernels.float_ops import max_pool_f32, max_pool_f32_split

    # one pass, the same as the NumPy twin np.fmax.reduce(patches(x, g, -np.inf), axis=(3, 4),
    # initial=-np.finfo(np.float32).max), then the clamp
    bounds = float_activation_bounds(ctx)

    def max_window(x, g, _counts):
        return pool_rows(max_pool_f32, max_pool_f32_split, empty_f32,
                         np.ascontiguousarray(x), g, bounds, ctx.num_threads)

    return _pool(ctx, max_window, clamps=True)


def pool_rows(whole, split, new_out, x, g, bounds, threads: int) -> np.ndarray:
    """A max pool's output: whole(x, KH, KW, SH, SW, PT, PL, OH, OW, *bounds) on this thread,
    or, when the work is worth splitting (threads.POOL_TAP_FLOPS a tap of each output value),
    split(x, out, ..., *bounds, N*OH, parts) into new_out(shape), each part a range of output
    rows. (On one thread `whole` allocates inside the kernel: palm_detection_lite's 96x96x32
    float pool took 18 us so, 26 with its output made by new_out and the row kernel called.)"""
    from qengine.kernels.threads import POOL_TAP_FLOPS, split_cores, worth_splitting

    shape = (g.batch, g.out_h, g.out_w, x.shape[3])
    geometry = (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_top, g.pad_left)
    if worth_splitting(threads, math.prod(shape) * g.kernel_h * g.kernel_w * POOL_TAP_FLOPS):
        with split_cores(threads, g.batch * g.out_h) as parts:
            if parts > 1:
                out = new_out(shape)
                split(x, out, *geometry, *bounds, g.batch * g.out_h, parts)
                return out
    return whole(x, *geometry, g.out_h, g.out_w, *bounds)


@op("L2_POOL_2D")
def l2_pool_2d(ctx: OpContext) -> Prepared:
    # out = sqrt(sum(in-image taps ** 2) / count(in-image taps))
    return _pool(ctx, lambda x, g, counts: np.sqrt(patches(x * x, g).sum(axis=(3, 4)) / counts))


# -- softmax and normalizations --------------------------------------------------------------


def _last_axis_op(ctx: OpContext, kernel, max_rank: int | None = None):
    """Prepare of a shape-preserving op over the last axis: float32 only, rank >= 1."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    if is_quantized(x):
        return quantized_path(ctx, "nn")
    ctx.expect_dtype(x, "float32")
    if x.rank < 1 or (max_rank is not None and x.rank > max_rank):
        raise ctx.invalid(f"input of rank {x.rank}; the op needs rank 1 to {max_rank or 'any'}")
    return Prepared(kernel, [ctx.output_spec(0, x.shape, "float32")])


@op("SOFTMAX",
    kernels=integer_kernels("nn_int:softmax"),
    quantized=Quantized(FIXED, 2, int16=3, fixed=(1 / 256, -128), fixed16=(1 / 32768, 0)))
def softmax(ctx: OpContext) -> Prepared:
    # TFLite reads beta only from the options; without them it stays 0 (a uniform output)
    from qengine.kernels.float_ops import softmax_f32  # (Numba: only when needed)

    beta = np.float32(_option(ctx, "beta", 0.0))

    def run(x):  # exp((x - max) * beta) / sum(exp((x - max) * beta)), per row
        x = np.ascontiguousarray(x, np.float32)
        if x.size == 0:
            return x.copy()
        return softmax_f32(x.reshape(-1, x.shape[-1]), beta).reshape(x.shape)

    return _last_axis_op(ctx, run)


@op("LOG_SOFTMAX",
    kernels=integer_kernels("nn_int:log_softmax"),
    quantized=Quantized(FIXED, 2, fixed=(16 / 256, 127)))
def log_softmax(ctx: OpContext) -> Prepared:
    def run(x):  # (x - max) - log(sum(exp(x - max)))
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    return _last_axis_op(ctx, run)


L2_NORM_EPSILON = np.float32(1e-6)  # hard-coded in TFLite's l2norm.cc


@op("L2_NORMALIZATION",
    kernels=integer_kernels("nn_int:l2_normalization"),
    quantized=Quantized(FIXED, 2, fixed=(1 / 128, 0)))
def l2_normalization(ctx: OpContext) -> Prepared:
    if fused_activation(ctx) != NONE:
        raise ctx.invalid("L2_NORMALIZATION takes no fused activation")

    def run(x):  # x / max(sqrt(sum(x^2)), epsilon)
        norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))
        return x / np.maximum(norm, L2_NORM_EPSILON)

    return _last_axis_op(ctx, run)


@op("LOCAL_RESPONSE_NORMALIZATION")
def local_response_normalization(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = _float_input(ctx)
    ctx.expect_rank(x, 4)
    radius = int(_option(ctx, "radius", 0))
    if radius < 0:
        raise ctx.invalid(f"radius {radius} is negative")
    bias = np.float32(_option(ctx, "bias", 0.0))
    alpha = np.float32(_option(ctx, "alpha", 0.0))
    beta = np.float32(_option(ctx, "beta", 0.0))
    depth = x.shape[3]
    # TFLite's reference kernel sums channels [c - radius, c + radius) (its end is exclusive);
    # its optimized kernel, like TensorFlow, sums [c - radius, c + radius]
    before = min(radius, max(depth - 1, 0))
    after = min(radius - (ctx.arithmetic == "ref"), max(depth - 1, 0))

    def run(x):
        # accum[c] = sum(x[j]^2 for j in the window around c, inside [0, depth))
        squares = np.pad(x * x, ((0, 0),) * 3 + ((before, max(after, 0)),))
        accum = np.zeros_like(x)
        for offset in range(before + after + 1):
            accum += squares[..., offset:offset + depth]
        return x * (bias + alpha * accum) ** -beta

    return Prepared(run, [ctx.output_spec(0, x.shape, "float32")])


# -- resizing --------------------------------------------------------------------------------


def _resize_geometry(ctx: OpContext) -> tuple[Spec, int, int, bool, bool]:
    ctx.expect_inputs(2)
    x = ctx.input(0)
    ctx.expect_rank(x, 4)
    size_spec = ctx.input(1)
    ctx.expect_dtype(size_spec, "int32")
    size = np.ravel(ctx.constant(1, "size"))
    if size.size != 2 or (size < 1).any():
        raise ctx.invalid(f"size must be two positive values, is {size.tolist()}")
    align_corners = bool(_option(ctx, "alignCorners", False))
    half_pixel = bool(_option(ctx, "halfPixelCenters", False))
    return x, int(size[0]), int(size[1]), align_corners, half_pixel


def _resize_scale(in_size: int, out_size: int, align_corners: bool) -> np.float32:
    """in / out, or (in - 1) / (out - 1) with align_corners, in float32 as TFLite does."""
    if align_corners and out_size > 1:
        return np.float32(in_size - 1) / np.float32(out_size - 1)
    return np.float32(in_size) / np.float32(out_size)


def _bilinear_axis(in_size: int, out_size: int, align_corners: bool, half_pixel: bool):
    """ComputeInterpolationValues for every output index, in float32:
    v = (o + 0.5) * scale - 0.5 (half pixel centers) or o * scale;
    lower = max(floor(v), 0), upper = min(ceil(v), in - 1); weight of upper = v - lower."""
    scale = _resize_scale(in_size, out_size, align_corners)
    o = np.arange(out_size, dtype=np.float32)
    v = (o + np.float32(0.5)) * scale - np.float32(0.5) if half_pixel else o * scale
    lower = np.maximum(np.floor(v), 0).astype(np.int64)
    upper = np.minimum(np.ceil(v).astype(np.int64), in_size - 1)
    return lower, upper, v - lower.astype(np.float32)


@op("RESIZE_BILINEAR",
    kernels=integer_kernels("nn_int:resize_bilinear"), quantized=Quantized(SAME, 2, int16=4))
def resize_bilinear(ctx: OpContext) -> Prepared:
    x, out_h, out_w, align_corners, half_pixel = _resize_geometry(ctx)
    if align_corners and half_pixel:
        raise ctx.invalid("alignCorners and halfPixelCenters cannot both be set")
    if is_quantized(x):
        return quantized_path(ctx, "nn")
    ctx.expect_dtype(x, "float32")
    n, in_h, in_w, c = x.shape
    from qengine.kernels.float_ops import resize_bilinear_f32

    lerp = ctx.arithmetic == "xnnpack"  # XNNPACK's f32 ibilinear: its positions, its formula
    if lerp:
        from qengine.kernels.xnnpack import resize_positions as axis
    else:  # TFLite's reference sum, in its order
        axis = _bilinear_axis
    y0, y1, dy = axis(in_h, out_h, align_corners, half_pixel)
    x0, x1, dx = axis(in_w, out_w, align_corners, half_pixel)

    def run(image, size=None):
        return resize_bilinear_f32(np.ascontiguousarray(image), y0, y1, dy, x0, x1, dx,
                                   ctx.num_threads, lerp)

    return Prepared(run, [ctx.output_spec(0, (n, out_h, out_w, c), "float32")])


def _nearest_axis(in_size: int, out_size: int, align_corners: bool, half_pixel: bool):
    """GetNearestNeighbor for every output index, in float32:
    i = min(round((o + offset) * scale) if align_corners else floor(...), in - 1), and
    max(i, 0) with half pixel centers (offset 0.5 then, else 0); round is half away from 0."""
    scale = _resize_scale(in_size, out_size, align_corners)
    offset = np.float32(0.5 if half_pixel else 0.0)
    v = (np.arange(out_size, dtype=np.float32) + offset) * scale
    index = np.floor(v + np.float32(0.5)) if align_corners else np.floor(v)  # v >= 0 here
    index = np.minimum(index.astype(np.int64), in_size - 1)
    return np.maximum(index, 0) if half_pixel else index


@op("RESIZE_NEAREST_NEIGHBOR", quantized=Quantized(SAME, 2, int16=4))
def resize_nearest_neighbor(ctx: OpContext) -> Prepared:
    # a pure gather: works for every dtype, quantized tensors keep their parameters
    x, out_h, out_w, align_corners, half_pixel = _resize_geometry(ctx)
    n, in_h, in_w, c = x.shape
    rows = _nearest_axis(in_h, out_h, align_corners, half_pixel)
    cols = _nearest_axis(in_w, out_w, align_corners, half_pixel)

    def run(image, size=None):
        return image[:, rows][:, :, cols]

    return Prepared(run, [ctx.output_spec(0, (n, out_h, out_w, c), x.dtype)])


# -- transpose convolution -------------------------------------------------------------------


@op("TRANSPOSE_CONV",  # nn_int.transpose_conv also runs the hybrid kernel (float input)
    kernels={**integer_kernels("nn_int:transpose_conv"), HYBRID: "nn_int:transpose_conv"},
    weight=Weight(1, 0, OHWI),
    quantized=Quantized(REQUANT, 3, int16=3, bias=3,
                        bias_optional=True, data_input=2))
def transpose_conv(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(3, 4)
    shape_spec, w, x = ctx.input(0), ctx.input(1), ctx.input(2)
    ctx.expect_dtype(shape_spec, "int32")
    ctx.expect_rank(w, 4)
    ctx.expect_rank(x, 4)
    out_shape = tuple(int(d) for d in np.ravel(ctx.constant(0, "output_shape")))
    out_c, in_c = w.shape[0], w.shape[3]
    if len(out_shape) != 4 or min(out_shape) < 1:
        raise ctx.invalid(f"output_shape {list(out_shape)} must be 4 positive sizes")
    if x.shape[3] != in_c or out_shape[0] != x.shape[0] or out_shape[3] != out_c:
        raise ctx.invalid(f"input {x.shape}, filter {w.shape} and output_shape "
                          f"{list(out_shape)} do not fit together")
    if is_quantized(x) or w.dtype != "float32":
        return quantized_path(ctx, "nn")
    ctx.expect_dtype(x, "float32")
    _check_bias(ctx, out_c)
    return _transpose_conv_float(ctx, x.shape, w.shape, out_shape)


def _check_bias(ctx: OpContext, channels: int) -> None:
    spec = ctx.optional_input(3)
    if spec is not None:
        ctx.expect_dtype(spec, "float32")
        if int(np.prod(spec.shape)) != channels:
            raise ctx.invalid(f"bias has shape {spec.shape} for {channels} output channels")


def _transpose_padding(ctx: OpContext, in_size: int, out_size: int, kernel: int,
                       stride: int) -> int:
    """TFLite pads as the forward conv from the output back to the input would, and requires
    that conv to give back the input's size."""
    back, pad = conv_output_size(ctx, ctx.options.padding, out_size, kernel, stride, 1)
    if back != in_size:
        raise ctx.invalid(f"an output size of {out_size} does not come from an input size of "
                          f"{in_size} (kernel {kernel}, stride {stride}, padding "
                          f"{ctx.options.padding}): a conv back gives {back}")
    return pad


def _transpose_conv_float(ctx: OpContext, x_shape, w_shape, out_shape) -> Prepared:
    if ctx.options is None:
        raise ctx.invalid("TransposeConvOptions are missing")
    n, in_h, in_w, in_c = x_shape
    out_c, kh, kw, _ = w_shape
    sh, sw = ctx.options.strideH, ctx.options.strideW
    pad_top = _transpose_padding(ctx, in_h, out_shape[1], kh, sh)
    pad_left = _transpose_padding(ctx, in_w, out_shape[2], kw, sw)
    activation = float_activation(ctx)
    # the scatter target: every position a tap can reach, and the output window inside it
    full_h = max((in_h - 1) * sh + kh, pad_top + out_shape[1])
    full_w = max((in_w - 1) * sw + kw, pad_left + out_shape[2])

    def run(output_shape, w, x, b=None):
        # taps[n, y, x, ky, kx, o] = sum_i x[n, y, x, i] * w[o, ky, kx, i]
        taps = (x.reshape(-1, in_c) @ w.reshape(-1, in_c).T).reshape(n, in_h, in_w, out_c, kh, kw)
        full = np.zeros((n, full_h, full_w, out_c), np.float32)
        for ky in range(kh):  # input pixel (y, x) adds to output (y*stride + ky, x*stride + kx)
            for kx in range(kw):
                full[:, ky:ky + (in_h - 1) * sh + 1:sh, kx:kx + (in_w - 1) * sw + 1:sw] += \
                    taps[..., ky, kx]
        out = full[:, pad_top:pad_top + out_shape[1], pad_left:pad_left + out_shape[2]].copy()
        if b is not None:
            out += b.reshape(out_c)
        return activation(out)

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


# -- batch matmul ----------------------------------------------------------------------------


@op("BATCH_MATMUL",
    kernels=integer_kernels("nn_int:batch_matmul"), quantized=Quantized(REQUANT, 2, int16=3))
def batch_matmul(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    lhs, rhs = ctx.input(0), ctx.input(1)
    for spec in (lhs, rhs):
        if not 2 <= spec.rank <= 5:
            raise ctx.invalid(f"tensor {spec.name!r} has rank {spec.rank}; BATCH_MATMUL takes "
                              f"ranks 2 to 5")
    adj_x, adj_y = bool(_option(ctx, "adjX", False)), bool(_option(ctx, "adjY", False))
    m, k = lhs.shape[-1:-3:-1] if adj_x else lhs.shape[-2:]
    k_rhs, n = rhs.shape[-1:-3:-1] if adj_y else rhs.shape[-2:]
    if k != k_rhs:
        raise ctx.invalid(f"cannot multiply {lhs.shape} (adj_x={adj_x}) by {rhs.shape} "
                          f"(adj_y={adj_y}): inner sizes {k} and {k_rhs} differ")
    batch = _broadcast_batch(ctx, lhs.shape[:-2], rhs.shape[:-2])
    if is_quantized(lhs) or rhs.dtype != "float32":
        return quantized_path(ctx, "nn")
    ctx.expect_dtype(lhs, "float32")

    def run(a, b):
        a = np.swapaxes(a, -1, -2) if adj_x else a
        b = np.swapaxes(b, -1, -2) if adj_y else b
        return np.matmul(a, b)

    return Prepared(run, [ctx.output_spec(0, batch + (m, n), "float32")])


def _broadcast_batch(ctx: OpContext, a: tuple, b: tuple) -> tuple:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise ctx.invalid(f"batch dimensions {a} and {b} do not broadcast") from None


# -- embedding lookup ------------------------------------------------------------------------


@op("EMBEDDING_LOOKUP", weight=Weight(1, 0, TABLE, blockwise=True))
def embedding_lookup(ctx: OpContext) -> Prepared:
    """embedding_lookup.cc: rows of `values` picked by `ids`. Quantized rows (int8, or int4/int2
    unpacked as TFLite's Unpack4Bit/Unpack2Bit read them) into a float32/float16 output are
    `float32(q) * float32(scale)` with one scale per tensor, per row or per block (blockwise,
    float16 scales), rounded to the output type."""
    ctx.expect_inputs(2)
    ids, table = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(ids, "int32")
    ctx.expect_rank(ids, 1)
    if table.rank < 2:
        raise ctx.invalid(f"the value tensor has rank {table.rank}; it needs rank >= 2")
    rows = table.shape[0]
    if ids.value is not None:
        _check_ids(ids.value, rows, ctx.invalid)
    out_dtype = ctx.outputs[0].dtype
    out_shape = ids.shape + table.shape[1:]
    fail = _run_error(ctx)
    blockwise = table.quantization is not None and table.quantization.blockwise is not None
    if out_dtype == table.dtype and not blockwise and table.dtype not in SUB_BYTE_TYPES:
        def run(i, values):  # a plain gather of rows
            _check_ids(i, rows, fail)
            return values[i]
    elif table.dtype in ("int8", *LOOKUP_SUB_BYTE) and out_dtype in ("float32", "float16"):
        gather, scales = _dequantizing_gather(ctx, table, blockwise)

        def run(i, values):
            _check_ids(i, rows, fail)
            return (gather(values, i) * scales(i)).astype(out_dtype).reshape((len(i),)
                                                                            + table.shape[1:])
    else:
        raise ctx.unsupported(f"lookup of {table.dtype} values into a {out_dtype} output")
    return Prepared(run, [ctx.output_spec(0, out_shape, out_dtype)])


LOOKUP_SUB_BYTE = ("int4", "int2")


def _dequantizing_gather(ctx: OpContext, table: Spec, blockwise: bool):
    """(gather(values, ids) -> float32 [n, row], scales(ids) -> float32 broadcastable)."""
    rows, row = table.shape[0], int(np.prod(table.shape[1:]))
    per_byte = {"int4": 2, "int2": 4}.get(table.dtype, 1)
    q = table.quantization
    if blockwise:
        block = q.blockwise
        if table.dtype not in LOOKUP_SUB_BYTE:
            raise ctx.invalid(f"blockwise table {table.name!r} is {table.dtype}; TFLite's "
                              f"blockwise EMBEDDING_LOOKUP reads int4 or int2 only")
        if block.scales.dtype != "float16":
            raise ctx.invalid(f"blockwise scales {block.scales.name!r} are "
                              f"{block.scales.dtype}; TFLite reads them as float16")
        run_length, size = block.block_size, block.block_size
        block_scales = block.scales.data.astype(np.float32).reshape(rows, -1)

        def scales(i):
            return np.repeat(block_scales[i], size, axis=1)
    else:
        if q is None or q.scale.size == 0:
            raise ctx.invalid(f"quantized table {table.name!r} has no scale")
        if q.zero_point.size and q.zero_point[0] != 0:
            raise ctx.invalid(f"table {table.name!r} has zero point {q.zero_point[0]}; TFLite's "
                              f"hybrid EMBEDDING_LOOKUP is symmetric only")
        if q.scale.size > 1 and (q.scale.size != rows or q.axis != 0):
            raise ctx.invalid(f"table {table.name!r} has {q.scale.size} scales along axis "
                              f"{q.axis}; per-axis lookup needs one per row along axis 0")
        run_length = row
        row_scales = np.broadcast_to(np.asarray(q.scale, np.float32).ravel(), (rows,))

        def scales(i):
            return row_scales[i][:, None]

    from qengine.kernels.lowbit import lookup_rows  # NumPy only; keeps Numba off float models

    def gather(values, i):
        flat = np.asarray(values).reshape(-1)
        return lookup_rows(flat, i, row, run_length, per_byte).astype(np.float32)

    return gather, scales


def _check_ids(ids: np.ndarray, rows: int, fail) -> None:
    bad = (ids < 0) | (ids >= rows)
    if bad.any():
        raise fail(f"embedding index {int(ids[bad][0])} is outside [0, {rows})")


def _run_error(ctx: OpContext):
    return lambda message: InputError(f"{ctx.where()}: {message}")
