"""Int8 AVERAGE_POOL_2D and MAX_POOL_2D reproducing TFLite's reference kernels bit for bit.

Neither op requantizes: TFLite assumes (but does not enforce) equal input and output
quantization and only clamps to the fused-activation range.
"""

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic
from qengine.kernels import threads as pool
from qengine.kernels.emit import I64, const64, loop
from qengine.kernels.float_gemm import (
    _F32,
    LANES,
    VEC,
    _clamp,
    _load_vec,
    _splat,
    _store_vec,
    row_part,
)
from qengine.kernels.jit import inline_kernel, kernel, prange

__all__ = ["avg_pool_int8", "interior_columns", "max_pool_int8", "max_pool_int8_rows",
           "max_pool_int8_split", "pool_fits", "pool_run_f32", "pool_run_i8", "tap_offsets"]

LOWEST_F32 = -3.4028234663852886e38  # -FLT_MAX: where the reference float MaxPool starts
_I8 = ir.IntType(8)
I8_LANES = 16  # int8 channels per vector of the int8 row kernel (it needs C >= 16)


@kernel
def avg_pool_int8(
    x, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w, act_min, act_max
):
    """TFLite `reference_integer_ops::AveragePool` (integer_ops/pooling.h), int8.

    x [N, H, W, C] → [N, out_h, out_w, C]. Only in-image taps are summed and counted (count n):

        avg = acc > 0 ? (acc + n/2) / n : (acc - n/2) / n    (C division: round half away from zero)
        out = clamp(avg, act_min, act_max)

    TFLite fails the op when a window has no in-image tap; SAME/VALID padding never produces one,
    and this kernel then writes clamp(0).
    """
    n, in_h, in_w, chans = x.shape
    out = np.empty((n, out_h, out_w, chans), np.int8)
    for row in range(n * out_h):
        b = row // out_h
        oy = row - b * out_h
        iy0 = oy * stride_h - pad_top
        y_lo = max(0, iy0)
        y_hi = min(in_h, iy0 + filter_h)
        acc = np.empty(chans, np.int32)
        for ox in range(out_w):
            ix0 = ox * stride_w - pad_left
            x_lo = max(0, ix0)
            x_hi = min(in_w, ix0 + filter_w)
            count = max(y_hi - y_lo, 0) * max(x_hi - x_lo, 0)
            acc[:] = 0
            for iy in range(y_lo, y_hi):
                for ix in range(x_lo, x_hi):
                    for c in range(chans):
                        acc[c] += x[b, iy, ix, c]
            half = count // 2
            for c in range(chans):
                a = np.int64(acc[c])
                if count == 0:
                    avg = np.int64(0)
                elif a > 0:
                    avg = (a + half) // count
                else:  # C truncates toward zero: -((-a + half) // count)
                    avg = -((half - a) // count)
                out[b, oy, ox, c] = min(max(avg, np.int64(act_min)), np.int64(act_max))
    return out


@kernel
def max_pool_int8(
    x, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w, act_min, act_max
):
    """TFLite `reference_integer_ops::MaxPool` (integer_ops/pooling.h), int8.

    x [N, H, W, C] → [N, out_h, out_w, C]:
        out = clamp(max(-128, max over in-image taps of x), act_min, act_max)
    One thread; `max_pool_int8_rows` runs a range of output rows into a given output,
    `max_pool_int8_split` the ranges on several threads."""
    out = np.empty((x.shape[0], out_h, out_w, x.shape[3]), np.int8)
    max_pool_int8_rows(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left,
                       act_min, act_max, 0, x.shape[0] * out_h)
    return out


@inline_kernel
def pool_fits(x, out, r0, r1):
    """out [N, OH, OW, C] has x's batch and channels, and [r0, r1) lies within its N*OH rows
    (the geometry itself was checked when the op was prepared)."""
    return (out.shape[0] == x.shape[0] and out.shape[3] == x.shape[3]
            and 0 <= r0 <= r1 <= out.shape[0] * out.shape[1])


@kernel
def max_pool_int8_rows(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left,
                       act_min, act_max, r0, r1):
    """Output rows [r0, r1) of max_pool_int8 (row = n * OH + oy) into out: with 16 channels
    or more, the pixels whose window lies inside the image run in vectors of channels
    (`pool_run_i8`), the others pixel by pixel."""
    if not pool_fits(x, out, r0, r1):
        raise ValueError("max_pool_int8_rows: out or [r0, r1) do not fit x")
    in_h, in_w, chans = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = out.shape[1], out.shape[2]
    offs = tap_offsets(filter_h, filter_w, in_w, chans)
    ox_lo, ox_hi = interior_columns(out_w, in_w, filter_w, stride_w, pad_left)
    if chans < I8_LANES:
        ox_lo = ox_hi = 0
    for row in range(r0, r1):
        b = row // out_h
        oy = row - b * out_h
        iy0 = oy * stride_h - pad_top
        inside = iy0 >= 0 and iy0 + filter_h <= in_h and ox_hi > ox_lo
        if inside:
            corner = x.ctypes.data + ((b * in_h + iy0) * in_w + ox_lo * stride_w - pad_left) \
                * chans
            pool_run_i8(corner, stride_w * chans, offs.ctypes.data, offs.size,
                        out.ctypes.data + ((b * out_h + oy) * out_w + ox_lo) * chans,
                        ox_hi - ox_lo, chans, np.int8(act_min), np.int8(act_max))
        for part in range(0, 3, 2):  # the border parts, at one call site (a call with a
            ox0, ox1 = row_part(part, inside, ox_lo, ox_hi, out_w)  # literal 0 compiled twice)
            if ox1 > ox0:  # (a kernel's array arguments cost reference counts, even idle)
                _max_pool_pixels(x, out, b, oy, ox0, ox1, filter_h, filter_w, stride_w, iy0,
                                 pad_left, act_min, act_max)


@kernel(parallel=True)
def max_pool_int8_split(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left,
                        act_min, act_max, rows, parts):
    """max_pool_int8_rows over rows [0, rows) cut into `parts` ranges run at once."""
    if not pool_fits(x, out, 0, rows):
        raise ValueError("max_pool_int8_split: out or its rows do not fit x")
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        max_pool_int8_rows(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left,
                           act_min, act_max, r0, r1)


@kernel
def _max_pool_pixels(x, out, b, oy, ox0, ox1, filter_h, filter_w, stride_w, iy0, pad_left,
                     act_min, act_max):
    """Pixels [ox0, ox1) of output row (b, oy), over their in-image taps."""
    in_h, in_w, chans = x.shape[1], x.shape[2], x.shape[3]
    y_lo = max(0, iy0)
    y_hi = min(in_h, iy0 + filter_h)
    best = np.empty(chans, np.int8)
    for ox in range(ox0, ox1):
        ix0 = ox * stride_w - pad_left
        x_lo = max(0, ix0)
        x_hi = min(in_w, ix0 + filter_w)
        for c in range(chans):
            best[c] = -128
        for iy in range(y_lo, y_hi):
            for ix in range(x_lo, x_hi):
                for c in range(chans):
                    best[c] = max(best[c], x[b, iy, ix, c])
        for c in range(chans):
            out[b, oy, ox, c] = min(max(np.int64(best[c]), np.int64(act_min)), np.int64(act_max))


# --- the row kernel of MAX_POOL_2D's interior pixels (float and int8) -----------------------


@inline_kernel
def tap_offsets(k_h, k_w, in_w, chans):
    """Each tap's element offset from its window's corner, row by row ([KH*KW] int64)."""
    offs = np.empty(k_h * k_w, np.int64)
    for ky in range(k_h):
        for kx in range(k_w):
            offs[ky * k_w + kx] = (ky * in_w + kx) * chans
    return offs


@inline_kernel
def interior_columns(out_w, in_w, k_w, stride_w, pad_left):
    """[lo, hi): the output columns whose window lies inside the image's columns,
    0 <= ox*sw - pl and ox*sw - pl + KW - 1 < W."""
    lo = min(out_w, (pad_left + stride_w - 1) // stride_w)
    return lo, max(lo, min(out_w, (in_w - k_w + pad_left) // stride_w + 1))


def _pool_rows(builder, args, vec_t, lowest, less, clamp):
    """out[i*chans + c] = clamp(max over t of x[i*x_step + offs[t] + c], from `lowest`) for
    i < count and every channel c, in vectors of vec_t's lanes (the last one ending at chans,
    overlapping the one before: a max recomputed is the same max). Each step is the reference's
    std::max(m, tap) = m < tap ? tap : m (`less`): a float NaN tap leaves m."""
    x_addr, x_step, offs_addr, taps, out_addr, count, chans, low, high = args
    elem = vec_t.element.as_pointer()
    x = builder.inttoptr(x_addr, elem)
    offs = builder.inttoptr(offs_addr, I64.as_pointer())
    out = builder.inttoptr(out_addr, elem)
    lanes = vec_t.count
    start = _splat(builder, ir.Constant(vec_t.element, lowest), vec_t)
    low_v, high_v = _splat(builder, low, vec_t), _splat(builder, high, vec_t)
    blocks = builder.sdiv(builder.add(chans, const64(lanes - 1)), const64(lanes))
    last = builder.sub(chans, const64(lanes))

    def pixel_step(i, _):
        base = builder.mul(i, x_step)

        def block_step(block, _):
            c = builder.mul(block, const64(lanes))
            c = builder.select(builder.icmp_signed("<", c, last), c, last)
            at = builder.add(base, c)

            def tap_step(t, m):
                off = builder.load(builder.gep(offs, [t]), align=8)
                tap = _load_vec(builder, x, builder.add(at, off), vec_t)
                return [builder.select(less(builder, m[0], tap), tap, m[0])]

            m = loop(builder, taps, [start], tap_step, "pooltap")[0]
            _store_vec(builder, clamp(builder, m, low_v, high_v), out,
                       builder.add(builder.mul(i, chans), c))
            return []

        loop(builder, blocks, [], block_step, "poolblock")
        return []

    loop(builder, count, [], pixel_step, f"pool{lanes}")


def _float_less(builder, a, b):
    return builder.fcmp_ordered("<", a, b)


def _int_less(builder, a, b):
    return builder.icmp_signed("<", a, b)


def _int_clamp(builder, v, low, high):
    v = builder.select(builder.icmp_signed("<", v, low), low, v)
    return builder.select(builder.icmp_signed(">", v, high), high, v)


def _pool_f32_codegen(context, builder, signature, args):
    """float32: 16 lanes from 16 channels on, else 8 (the caller needs C >= 8); starts at
    -FLT_MAX, the clamp lets nothing NaN through (no NaN is ever kept)."""
    with builder.if_else(builder.icmp_signed(">=", args[6], const64(LANES))) as (wide, narrow):
        with wide:
            _pool_rows(builder, args, ir.VectorType(_F32, LANES), LOWEST_F32, _float_less,
                       _clamp)
        with narrow:
            _pool_rows(builder, args, ir.VectorType(_F32, VEC), LOWEST_F32, _float_less,
                       _clamp)
    return context.get_dummy_value()


def _pool_i8_codegen(context, builder, signature, args):
    """int8: 16 lanes (the caller needs C >= 16), from -128."""
    _pool_rows(builder, args, ir.VectorType(_I8, I8_LANES), -128, _int_less, _int_clamp)
    return context.get_dummy_value()


@intrinsic
def pool_run_f32(typingctx, x_addr, x_step, offs_addr, taps, out_addr, count, chans, low,
                 high):
    """float MAX_POOL_2D over `count` interior pixels of a row (see `_pool_rows`)."""
    sig = types.void(types.uintp, types.intp, types.uintp, types.intp, types.uintp, types.intp,
                     types.intp, types.float32, types.float32)
    return sig, _pool_f32_codegen


@intrinsic
def pool_run_i8(typingctx, x_addr, x_step, offs_addr, taps, out_addr, count, chans, low, high):
    """int8 MAX_POOL_2D over `count` interior pixels of a row (see `_pool_rows`)."""
    sig = types.void(types.uintp, types.intp, types.uintp, types.intp, types.uintp, types.intp,
                     types.intp, types.int8, types.int8)
    return sig, _pool_i8_codegen
