"""Float32 kernels of ops whose NumPy form makes several passes over memory or costs
microseconds of calls on a small tensor: PRELU, GELU, MAX_POOL_2D, RESIZE_BILINEAR, the
fused-activation ADD/SUB/MUL/DIV (repeating or broadcasting) and the ordered sums of SUM and
MEAN. Each computes exactly
what its NumPy twin in qengine/ops computes (no fastmath: one operation per value in float32,
so the results are bit-identical), in one pass.
"""

import math

import numpy as np

from . import threads as pool
from .elementwise import broadcast_row, broadcasts_to
from .float_conv import activation_f32, hard_swish_value
from .float_gemm import VEC, row_part
from .jit import inline_kernel, kernel, prange
from .pooling import LOWEST_F32, interior_columns, pool_fits, pool_run_f32, tap_offsets

# gelu.h: static_cast<float>(-M_SQRT1_2); kernels/activations.py holds it too, for the int8
# GELU tables (not imported from there: that module's import costs a float model ~10 ms)
_MINUS_SQRT_HALF = np.float32(-0.7071067811865476)


@kernel
def gelu_erf_f32(x):
    """x [n] float32 -> 0.5 * x * erfc(-x / sqrt(2)) (TFLite's GeluTransform, the erfc form),
    float32 left to right, erfc evaluated in double from the float32 argument and rounded."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in range(x.shape[0]):
        v = x[i]
        tail = np.float32(math.erfc(np.float64(v * _MINUS_SQRT_HALF)))
        out[i] = np.float32(0.5) * v * tail
    return out


@kernel
def fully_connected_f32_small(x, w_t, bias, low, high):
    """x [rows, depth] @ w_t [depth, units] + bias, clamped to [low, high], in TFLite's
    reference order: each sum from 0.0 over the depth in order, every product rounded
    (reference_ops::FullyConnected; the float conv GEMM's order too). Vectorized along the
    units (a row of sums in L1, one pass over w_t per row): for the small layers of tiny
    graphs, where the GEMM's call of ~20 arguments costs more than the work."""
    rows, depth = x.shape
    units = w_t.shape[1]
    if w_t.shape[0] != depth or bias.shape[0] != units:
        raise ValueError("fully_connected_f32_small: x, w_t and bias do not fit")
    out = np.zeros((rows, units), np.float32)
    for r in range(rows):
        sums = out[r]
        for d in range(depth):
            v, w_row = x[r, d], w_t[d]
            for u in range(units):
                sums[u] += v * w_row[u]
        for u in range(units):
            sums[u] = activation_f32(sums[u] + bias[u], low, high)
    return out


@kernel
def hard_swish_f32(x):
    """x [n] float32 -> HARD_SWISH of each value (`float_conv.hard_swish_value`), one pass
    (NumPy's five took 41 us for MobileNetV3's 1024 values)."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in range(x.shape[0]):
        out[i] = hard_swish_value(x[i])
    return out


@kernel
def softmax_f32(x, beta):
    """x [rows, depth] float32 -> softmax of each row as TFLite's reference kernel computes it:
    m = the row's max (std::max from the lowest float: NaNs are passed over), e = expf((x - m)
    * beta) (the C library's expf, through LLVM), sum = 0 + e0 + e1 + ... in order, out = e /
    sum."""
    rows, depth = x.shape
    out = np.empty((rows, depth), dtype=np.float32)
    for r in range(rows):
        row, dst = x[r], out[r]
        top = np.float32(LOWEST_F32)
        for c in range(depth):
            top = row[c] if top < row[c] else top  # noqa: FURB136 (std::max's NaN order)
        total = np.float32(0.0)
        for c in range(depth):
            e = np.float32(math.exp(np.float32((row[c] - top) * beta)))
            dst[c] = e
            total += e
        for c in range(depth):
            dst[c] = dst[c] / total
    return out


@kernel
def leaky_relu_f32(x, alpha):
    """x [n] float32 -> x > 0 ? x : x * alpha (TFLite's LeakyRelu; NaN takes the product and
    stays NaN), one pass LLVM vectorizes."""
    out = np.empty(x.shape[0], dtype=np.float32)
    alpha = np.float32(alpha)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = v if v > 0 else v * alpha
    return out


@kernel
def prelu_f32(x, alpha):
    """x [rows, m] float32, alpha [m]: out = x >= 0 ? x : x * alpha (alpha repeats along x's
    last axes, e.g. one slope per channel: the caller reshapes). NaN takes the product branch
    and stays NaN. The inner loop is branch-free, so LLVM vectorizes it."""
    rows, m = x.shape
    out = np.empty((rows, m), dtype=np.float32)
    for r in range(rows):
        for c in range(m):
            v = x[r, c]
            out[r, c] = v if v >= 0 else v * alpha[c]
    return out


@kernel
def average_pool_f32(x, k_h, k_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w, low,
                     high):
    """x [N,H,W,C] float32 (C-contiguous) -> [N,OH,OW,C]: reference AveragePool, the window's
    in-image taps summed from 0 in (ky, kx) order, divided by their count, then the fused
    activation's clamp to [low, high]; all in float32. The channel loop is innermost, so the
    adds vectorize across channels and keep each value's order. The caller checks that no
    window lies wholly in the padding."""
    batch, in_h, in_w, chans = x.shape
    out = np.empty((batch, out_h, out_w, chans), np.float32)
    for n in range(batch):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_top
            ky0, ky1 = max(0, -y0), min(k_h, in_h - y0)
            for ox in range(out_w):
                x0 = ox * stride_w - pad_left
                kx0, kx1 = max(0, -x0), min(k_w, in_w - x0)
                dst = out[n, oy, ox]
                for c in range(chans):
                    dst[c] = np.float32(0.0)
                for ky in range(ky0, ky1):
                    for kx in range(kx0, kx1):
                        src = x[n, y0 + ky, x0 + kx]
                        for c in range(chans):
                            dst[c] += src[c]
                count = np.float32(max(ky1 - ky0, 0) * max(kx1 - kx0, 0))
                for c in range(chans):
                    dst[c] = activation_f32(dst[c] / count, low, high)
    return out


@kernel
def max_pool_f32(x, k_h, k_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w, low, high):
    """x [N,H,W,C] float32 (C-contiguous) -> [N,OH,OW,C]: the max over the window's in-image
    taps, starting from -FLT_MAX, with NaN taps skipped (reference MaxPool: max =
    std::max(max, tap); as np.fmax.reduce(..., initial=-FLT_MAX)), then the fused activation's
    clamp to [low, high]; the taps' order per value is the reference's (it does not matter to a
    max, but NaN and -0.0 keep their place). One thread; `max_pool_f32_rows` runs a range of
    output rows into a given output, `max_pool_f32_split` the ranges on several threads."""
    out = np.empty((x.shape[0], out_h, out_w, x.shape[3]), np.float32)
    max_pool_f32_rows(x, out, k_h, k_w, stride_h, stride_w, pad_top, pad_left, low, high, 0,
                      x.shape[0] * out_h)
    return out


@kernel
def max_pool_f32_rows(x, out, k_h, k_w, stride_h, stride_w, pad_top, pad_left, low, high, r0,
                      r1):
    """Output rows [r0, r1) of max_pool_f32 (row = n * OH + oy) into out: with 8 channels or
    more, the pixels whose window lies inside the image run in vectors of channels
    (`pooling.pool_run_f32`), the others by `_pool_columns`."""
    if not pool_fits(x, out, r0, r1):
        raise ValueError("max_pool_f32_rows: out or [r0, r1) do not fit x")
    in_h, in_w, c = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = out.shape[1], out.shape[2]
    low, high = np.float32(low), np.float32(high)
    xf, of = x.reshape(x.size), out.reshape(out.size)
    row = out_w * c
    offs = tap_offsets(k_h, k_w, in_w, c)
    ox_lo, ox_hi = interior_columns(out_w, in_w, k_w, stride_w, pad_left)
    if c < VEC:  # (the row kernel's vectors need 8 channels)
        ox_lo = ox_hi = 0
    for r in range(r0, r1):
        n = r // out_h
        oy = r - n * out_h
        dst = of[r * row : (r + 1) * row]
        iy0 = oy * stride_h - pad_top
        inside = iy0 >= 0 and iy0 + k_h <= in_h and ox_hi > ox_lo  # every filter row
        if inside:
            corner = xf[((n * in_h + iy0) * in_w + ox_lo * stride_w - pad_left) * c:]
            pool_run_f32(corner.ctypes.data, stride_w * c, offs.ctypes.data, offs.size,
                         dst[ox_lo * c:].ctypes.data, ox_hi - ox_lo, c, low, high)
        for part in range(0, 3, 2):  # the border parts, at one call site
            ox0, ox1 = row_part(part, inside, ox_lo, ox_hi, out_w)
            if ox1 > ox0:  # (a kernel's array arguments cost reference counts, even idle)
                _pool_columns(xf, dst, n, oy, ox0, ox1, x.shape, k_h, k_w, stride_h,
                              stride_w, pad_top, pad_left, low, high)


@kernel(parallel=True)
def max_pool_f32_split(x, out, k_h, k_w, stride_h, stride_w, pad_top, pad_left, low, high,
                       rows, parts):
    """max_pool_f32_rows over rows [0, rows) cut into `parts` ranges run at once."""
    if not pool_fits(x, out, 0, rows):
        raise ValueError("max_pool_f32_split: out or its rows do not fit x")
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        max_pool_f32_rows(x, out, k_h, k_w, stride_h, stride_w, pad_top, pad_left, low, high,
                          r0, r1)


@kernel
def _pool_columns(xf, dst, n, oy, ox0, ox1, shape, k_h, k_w, stride_h, stride_w, pad_top,
                  pad_left, low, high):
    """Columns [ox0, ox1) of output row (n, oy) into dst (the row, [OW*C] flat): each tap
    (ky, kx) updates every column whose tap is in the image, over flat runs of values (with
    stride 1, one run for the columns), then the clamp."""
    if ox1 <= ox0:
        return
    in_h, in_w, c = shape[1], shape[2], shape[3]
    dst[ox0 * c : ox1 * c] = np.float32(LOWEST_F32)
    for ky in range(k_h):
        iy = oy * stride_h - pad_top + ky
        if iy < 0 or iy >= in_h:
            continue
        src_row = (n * in_h + iy) * in_w * c
        for kx in range(k_w):
            # the columns whose tap kx is in the image: 0 <= ox·sw - pl + kx < W
            lo = max(ox0, -(-(pad_left - kx) // stride_w))
            hi = min(ox1, (in_w - 1 + pad_left - kx) // stride_w + 1)
            if hi <= lo:
                continue
            first = src_row + (lo * stride_w - pad_left + kx) * c
            if stride_w == 1:
                _max_into(dst[lo * c : hi * c], xf[first : first + (hi - lo) * c])
                continue
            for ox in range(lo, hi):
                at = first + (ox - lo) * stride_w * c
                _max_into(dst[ox * c : ox * c + c], xf[at : at + c])
    for i in range(ox0 * c, ox1 * c):
        dst[i] = activation_f32(dst[i], low, high)


@inline_kernel
def _max_into(acc, taps):
    """acc = max(acc, taps) elementwise as std::max(acc, tap): a NaN tap compares false."""
    for i in range(acc.shape[0]):  # a masked store: LLVM vectorizes this form best
        v = taps[i]
        if v > acc[i]:  # noqa: PLR1730
            acc[i] = v


def resize_bilinear_f32(image, y0, y1, dy, x0, x1, dx, threads: int = 1, lerp=False):
    """image [N,H,W,C] float32 -> [N,OH,OW,C]; y0/y1/dy [OH] and x0/x1/dx [OW] are the rows,
    columns and weights of the second of each pair. TFLite's reference sum, in its order and in
    float32 (positions from ComputeInterpolationValues, qengine/ops/nn.py):
      out = r0[x0]*(1-dy)*(1-dx) + r1[x0]*dy*(1-dx) + r0[x1]*(1-dy)*dx + r1[x1]*dy*dx
    where r0 = image[:, y0], r1 = image[:, y1]; or, `lerp`, XNNPACK's f32 ibilinear (positions
    from kernels/xnnpack.resize_positions), one rounding per operation, no fused multiply-add:
      top = r0[x0] + (r0[x1] - r0[x0])*dx,  bottom = r1[x0] + (r1[x1] - r1[x0])*dx
      out = top + (bottom - top)*dy
    Output rows are split between threads."""
    out = np.empty((image.shape[0], y0.shape[0], x0.shape[0], image.shape[3]), np.float32)
    rows = out.shape[0] * out.shape[1]
    pool.split_run(_resize_f32_rows, _resize_f32_split,
                   (image, y0, y1, dy, x0, x1, dx, lerp, out), rows, threads,
                   pool.ELEMENT_FLOPS * out.size)
    return out


@kernel
def _resize_f32_rows(image, y0, y1, dy, x0, x1, dx, lerp, out, row0, row1):
    """`resize_bilinear_f32` over output rows row0..row1-1 (row = n * OH + oy)."""
    out_h, out_w, c = out.shape[1], out.shape[2], out.shape[3]
    one = np.float32(1)
    for row in range(row0, row1):
        n, oy = row // out_h, row % out_h
        wy1 = dy[oy]
        wy0 = one - wy1
        r0, r1 = image[n, y0[oy]], image[n, y1[oy]]
        for ox in range(out_w):
            wx1 = dx[ox]
            wx0 = one - wx1
            a, b = r0[x0[ox]], r1[x0[ox]]
            p, q = r0[x1[ox]], r1[x1[ox]]
            o = out[n, oy, ox]
            if lerp:
                for ch in range(c):
                    top = a[ch] + (p[ch] - a[ch]) * wx1
                    bottom = b[ch] + (q[ch] - b[ch]) * wx1
                    o[ch] = top + (bottom - top) * wy1
                continue
            for ch in range(c):
                o[ch] = (a[ch] * wy0 * wx0 + b[ch] * wy1 * wx0
                         + p[ch] * wy0 * wx1 + q[ch] * wy1 * wx1)


@kernel(parallel=True)
def _resize_f32_split(image, y0, y1, dy, x0, x1, dx, lerp, out, rows, parts):
    """`_resize_f32_rows` over rows 0..rows-1 in `parts` parts at once."""
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        _resize_f32_rows(image, y0, y1, dy, x0, x1, dx, lerp, out, r0, r1)


# binary_f32's operations, as in TFLite's reference kernels: x op y in float32
ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM = 0, 1, 2, 3, 4, 5


@inline_kernel
def _combine(op, a, b):
    if op == ADD:
        return a + b
    if op == SUB:
        return a - b
    if op == MUL:
        return a * b
    # TFLite's a > b ? a : b (a NaN a yields b, a NaN b itself; and max(0.0, -0.0) is -0.0),
    # written out: Python's max/min do not promise that order
    if op == MAXIMUM:
        return a if a > b else b  # noqa: FURB136
    if op == MINIMUM:
        return a if a < b else b  # noqa: FURB136
    return a / b


@kernel
def _binary_span(op, x, y, y_first, low, high, out, i0, i1):
    """binary_f32 over values i0..i1-1, in runs along y: from y[i0 % m] to y's end, then
    whole rows of y (m = len(y)). Loops run over slices indexed from 0, which Numba knows are
    not negative: they vectorize (no wraparound test)."""
    m = y.shape[0]
    i, c = i0, i0 % m
    while i < i1:
        run = min(m - c, i1 - i)
        xs, ys, outs = x[i : i + run], y[c : c + run], out[i : i + run]
        if y_first:
            for k in range(run):
                outs[k] = activation_f32(_combine(op, ys[k], xs[k]), low, high)
        else:
            for k in range(run):
                outs[k] = activation_f32(_combine(op, xs[k], ys[k]), low, high)
        i, c = i + run, 0


@kernel(parallel=True)
def _binary_split(op, x, y, y_first, low, high, out, n, parts):
    """`_binary_span` over 0..n-1 in `parts` parts at once (threads.split_run)."""
    for i in prange(parts):
        i0, i1 = pool.part(n, parts, i)
        _binary_span(op, x, y, y_first, low, high, out, i0, i1)


@kernel
def _repeated(y, count):
    """y repeated `count` times (not np.tile: a kernel call costs less on a tiny op)."""
    m = y.shape[0]
    out = np.empty(m * count, np.float32)
    for j in range(count):
        for k in range(m):
            out[j * m + k] = y[k]
    return out


@kernel
def binary_broadcast_f32(op, x, y, low, high, out):
    """out = clamp(x op y) for x, y, out 4-D float32 (C-contiguous) where each axis of x and y
    has out's size or 1 (`elementwise.broadcasts_to`), and not both 1 where out's is larger:
    the shapes `binary_f32` does not cover, such as [1, 16, 1] * [1, 1, 32]."""
    if not (broadcasts_to(x, out) and broadcasts_to(y, out)):
        raise ValueError("binary_broadcast_f32: shapes do not broadcast to out's")
    for k in range(4):
        if x.shape[k] == 1 and y.shape[k] == 1 and out.shape[k] != 1:
            raise ValueError("binary_broadcast_f32: shapes do not broadcast to out's")
    n0, n1, n2, n3 = out.shape
    for a in range(n0):
        for b in range(n1):
            for c in range(n2):
                xr, yr, dst = broadcast_row(x, a, b, c), broadcast_row(y, a, b, c), out[a, b, c]
                # the last axis split three ways, so each loop vectorizes
                if xr.shape[0] == n3 and yr.shape[0] == n3:
                    for d in range(n3):
                        dst[d] = activation_f32(_combine(op, xr[d], yr[d]), low, high)
                elif xr.shape[0] == n3:
                    for d in range(n3):
                        dst[d] = activation_f32(_combine(op, xr[d], yr[0]), low, high)
                else:
                    for d in range(n3):
                        dst[d] = activation_f32(_combine(op, xr[0], yr[d]), low, high)


def binary_f32(op, x, y, y_first, low, high, threads: int = 1):
    """out[i] = clamp(x[i] op y[i % m]) for x [n], y [m] float32 (n a multiple of m: y
    repeats along x, e.g. a per-channel bias or a scalar), or clamp(y[i % m] op x[i]) when
    y_first. One pass: TFLite's ADD/SUB/MUL/DIV with their fused activation's [low, high].
    A short y is first repeated to >= 64 values, so each run's loop has work to vectorize.
    Split between threads from ~60k values on: the inputs usually come from an op split the
    same way, so each core reads what it wrote (1.4x on pose_landmark_full's ADDs)."""
    n, m = x.shape[0], y.shape[0]
    if m == 0 or n % m:
        raise ValueError(f"binary_f32: {n} values do not repeat {m} values")
    if m < 64 and n > m:  # runs of at least 64 values (n a multiple of the repeated length:
        y = _repeated(y, min(64 // m, n // m))  # when not, the last run is shorter)
    out = np.empty(n, np.float32)
    pool.split_run(_binary_span, _binary_split, (op, x, y, y_first, low, high, out), n,
                   threads, pool.STREAM_FLOPS * n)
    return out


@kernel
def sum_in_order_f32(x, out, mean):
    """out[o, i] = ((0 + x[o, 0, i]) + x[o, 1, i]) + ... + x[o, R - 1, i] in float32, divided
    by float(R) when `mean`; x [O, R, I] float32 (C-contiguous), out [O, I]. This is TFLite's
    reference SUM/MEAN (ReduceSumImpl, then sum / count for MEAN) when R runs over the reduced
    positions in row-major order: each add rounds, and -0.0 + -0.0 from 0 gives +0.0. The loop
    over i is innermost, so the adds vectorize across outputs and keep their order."""
    outer, count, inner = x.shape
    if out.shape[0] != outer or out.shape[1] != inner:
        raise ValueError("sum_in_order_f32: x and out do not fit")
    for o in range(outer):
        sums = out[o]
        for i in range(inner):
            sums[i] = np.float32(0.0)
        for r in range(count):
            row = x[o, r]
            for i in range(inner):
                sums[i] += row[i]
        if mean:
            divisor = np.float32(count)
            for i in range(inner):
                sums[i] = sums[i] / divisor
