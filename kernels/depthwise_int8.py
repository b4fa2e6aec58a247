"""Fast int8 DEPTHWISE_CONV_2D, bit-exact with `conv.depthwise_conv2d_int8` (reference
DepthwiseConvPerChannel), and raw accumulators bit-exact with `hybrid.depthwise_accumulators`
(the hybrid op itself runs `dw16_sums` with a float epilogue: `hybrid_conv.py`).

Channels are innermost and vectorized. A pixel whose every tap lies in the image needs no
zero-point bookkeeping per tap: Σ w·(x - zp) = Σ w·x - zp·Σw (mod 2^32), so the plan folds
-zp·Σw into the bias and the 16-channel tile (`_dw16`) multiplies raw int8 x. Taps go in
pairs through `vpmaddwd`: x of taps t and t+1 interleaved per channel (|w·x| ≤ 128·128, a
pair sum fits int32), weights pre-interleaved the same way (`pack.interleave_taps`), an odd tap
count padded with a zero-weight tap. 16 channels per call, their accumulators in registers,
then the fused requantization (`requant.epilogue_vec`). A border pixel's off-image taps read a
row of in_zp instead (w·zp, which the folded bias cancels: the reference skips them).

With stride_w = 1, S = 16 / gcd(C, 16) neighbouring output pixels of C channels (C not a
multiple of 16) read S·C contiguous input bytes per tap and write S·C contiguous output bytes:
the tile treats them as one pixel of S·C "channels" (a multiple of 16) with the weights and
parameters tiled S times, so 8- or 24-channel layers run the same vector code. The pixels the
tile cannot read in place (a span whose taps leave the image on the left or right, depth
multipliers > 1, stride_w > 1 with such C) are staged one at a time (`_stage_pixel`: each
tap's channels, input channel oc // dm for output channel oc, in_zp off the image; with dm = 1
a tap is one memcpy, and so is the pixel's way back: 3x3 SAME layers of 24-88 channels stage
two pixels a row, which took a fifth to half of their time copied byte by byte) and run
through the same tile.

Threads: `threads.split_run` splits the output rows (or, on maps of a few rows whose pixels
are read in place in whole 16-lane groups, the groups: a 7-row map cut in rows gives 4 and
3); each part is one call of a serial kernel, run at once in a compiled prange.
"""

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic
from qengine.kernels import threads as pool
from qengine.kernels.conv import depthwise_conv2d_int8
from qengine.kernels.emit import (
    I8,
    I64,
    V8I32,
    V16I8,
    V16I16,
    accumulate,
    addr,
    const64,
    copy_bytes,
    lanes,
    load_vec,
    madd,
    splat,
)
from qengine.kernels.gemm_int8 import threads_or_default
from qengine.kernels.jit import inline_kernel, kernel, prange
from qengine.kernels.pack import DW_ORDER, LANES, TAPS_HI, TAPS_LO, interleave_taps
from qengine.kernels.requant import (
    PARAM_ROWS,
    epilogue_kind,
    epilogue_vec,
    fp32_bits,
    requant_params,
)

__all__ = [
    "DepthwiseInt8Plan",
    "depthwise_conv2d_int8_acc_fast",
    "depthwise_conv2d_int8_fast",
    "plan_depthwise_int8",
    "plan_depthwise_int8_fp32",
    "run_depthwise_int8",
]

# --- any depth multiplier and channel count: one pixel's accumulators ----------------------


def _dw_tap16_codegen(context, builder, signature, args):
    acc_addr, x_addr, w_addr, zp = args
    v16i32 = ir.VectorType(ir.IntType(32), 16)
    xs = builder.load(builder.inttoptr(x_addr, V16I8.as_pointer()), align=1)
    xs = builder.sub(builder.sext(xs, V16I16), splat(builder, zp, V16I16))  # exact in int16
    ws = builder.load(builder.inttoptr(w_addr, V16I16.as_pointer()), align=2)
    prod = builder.sext(builder.mul(xs, ws), v16i32)  # |product| <= 255·128: exact in int16
    acc_ptr = builder.inttoptr(acc_addr, v16i32.as_pointer())
    builder.store(builder.add(builder.load(acc_ptr, align=4), prod), acc_ptr, align=4)
    return context.get_dummy_value()


@intrinsic
def _dw_tap16(typingctx, acc_addr, x_addr, w_addr, zp):
    """acc[0:16] += int16(x[0:16] - zp) * w[0:16] (int32 acc, int8 x, int16 w; addresses)."""
    return types.void(types.int64, types.int64, types.int64, types.int64), _dw_tap16_codegen


@kernel
def _dw_pixel(acc, x, w16, b, oy, ox, in_zp, ints, xs):
    """acc [Co] = the depthwise accumulators Σ w·(x - in_zp) of output pixel (b, oy, ox), taps
    outside the image skipped as in the reference; ints: the plan's geometry; xs [Ci] int16
    scratch. Products fit int16 (|x - in_zp| <= 255, |w| <= 128); sums wrap in int32."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    k_h, k_w, out_c = w16.shape
    stride_h, stride_w, dil_h, dil_w = ints[4], ints[5], ints[6], ints[7]
    pad_top, pad_left, depth_multiplier = ints[8], ints[9], ints[12]
    zp = np.int16(in_zp)
    for c in range(out_c):
        acc[c] = 0
    for ky in range(k_h):
        iy = oy * stride_h - pad_top + ky * dil_h
        if iy < 0 or iy >= in_h:
            continue
        for kx in range(k_w):
            ix = ox * stride_w - pad_left + kx * dil_w
            if ix < 0 or ix >= in_w:
                continue
            xrow = x[b, iy, ix]
            wrow = w16[ky, kx]
            if depth_multiplier == 1:
                vec_end = out_c - out_c % 16
                for c in range(0, vec_end, 16):
                    _dw_tap16(addr(acc) + 4 * c, addr(xrow) + c, addr(wrow) + 2 * c,
                              np.int64(in_zp))  # fmt: skip
                for c in range(vec_end, out_c):
                    acc[c] += np.int16(np.int16(xrow[c]) - zp) * wrow[c]
            else:
                for c in range(in_c):
                    xs[c] = np.int16(xrow[c]) - zp
                for oc in range(out_c):
                    acc[oc] += xs[oc // depth_multiplier] * wrow[oc]


# --- 16 channels of one pixel, all taps in registers ----------------------------------------


def dw16_sums(builder, x_ptr, offs, w_ptr, pairs):
    """Emit the 16-channel tap loop: Σ_t x[offs[t] + c] · w[t, c] as two int32x8 values, the
    channels in DW_ORDER lane order. x_ptr: int8 pointer; offs: int64 pointer to 2·pairs byte
    offsets; w_ptr: int16x16 pointer to [pairs, 2, 16] interleaved as TAPS_LO/TAPS_HI."""

    def step(i, accs):
        xs = []
        for t in range(2):  # taps 2i and 2i+1: 16 channels of int8 x, sign-extended
            off = builder.load(builder.gep(offs, [builder.add(builder.mul(i, const64(2)),
                                                              const64(t))]))  # fmt: skip
            xs.append(builder.sext(load_vec(builder, x_ptr, off, V16I8), V16I16))
        new = []
        for h, idx in enumerate((TAPS_LO, TAPS_HI)):
            pair = builder.shuffle_vector(xs[0], xs[1], lanes(idx))
            w = builder.load(builder.gep(w_ptr, [builder.add(builder.mul(i, const64(2)),
                                                             const64(h))]), align=2)  # fmt: skip
            new.append(builder.add(accs[h], madd(builder, pair, w)))
        return new

    return accumulate(builder, pairs, 2, step, "dw")


def _dw16_codegen(context, builder, signature, args, kind):
    x_addr, offs_addr, w_addr, pairs, q_addr, out_addr, out_zp, act_min, act_max = args[:9]
    x_ptr = builder.inttoptr(x_addr, I8.as_pointer())
    offs = builder.inttoptr(offs_addr, I64.as_pointer())
    w_ptr = builder.inttoptr(w_addr, V16I16.as_pointer())
    q_ptr = builder.inttoptr(q_addr, V8I32.as_pointer())
    sums = dw16_sums(builder, x_ptr, offs, w_ptr, pairs)
    outs = []
    for h in range(2):  # q: [4, 16] in DW_ORDER lanes (see `_dw16`)
        params = [builder.load(builder.gep(q_ptr, [const64(2 * row + h)]), align=4)
                  for row in range(PARAM_ROWS[kind])]  # fmt: skip
        outs.append(epilogue_vec(builder, kind, sums[h], params, out_zp, act_min, act_max))
    both = builder.shuffle_vector(outs[0], outs[1], lanes([DW_ORDER.index(c) for c in range(16)]))
    v16i8 = ir.VectorType(I8, 16)
    builder.store(builder.trunc(both, v16i8), builder.inttoptr(out_addr, v16i8.as_pointer()),
                  align=1)  # fmt: skip
    return context.get_dummy_value()


@intrinsic
def _dw16(typingctx, x_addr, offs_addr, w_addr, pairs, q_addr, out_addr, out_zp, act_min,
          act_max, q):  # fmt: skip
    """out[0:16] = epilogue(Σ_t x[offs[t] + c] · w[t, c]) for 16 channels c (addresses).

    offs: int64 [2·pairs] byte offsets of the taps from x_addr; w: int16 [pairs, 2, 16], the
    pairs interleaved as TAPS_LO/TAPS_HI; q_addr: [4, 16] of the plan's `q` in DW_ORDER lane
    order, int32 bias', M, left, right, or uint32 bias' and float32 scale bits (the dtype of
    `q` picks the epilogue, `requant.epilogue_kind`).
    """
    kind = epilogue_kind(q)

    def codegen(context, builder, signature, args):
        return _dw16_codegen(context, builder, signature, args, kind)

    return types.void(*[types.int64] * 9, q), codegen


class DepthwiseInt8Plan(NamedTuple):
    """What `depthwise_conv2d_int8_fast` needs besides the input (`plan_depthwise_int8`, or
    `plan_depthwise_int8_fp32`: then params and q are uint32, bias and float32 scale bits in
    place of bias, M and 0, 0 in place of left, right)."""

    w16: np.ndarray  # int16 [KH, KW, Co]
    params: np.ndarray  # int32 [4, Co]: bias, M, left, right
    w_pairs: np.ndarray  # int16 [L/16, pairs, 2, 16], L = S·Co or Co padded to 16 lanes
    q: np.ndarray  # int32 [L/16, 4, 16]: bias - zp·Σw, M, left, right in DW_ORDER
    ints: np.ndarray  # int64: in_zp, out_zp, act_min, act_max, geometry, dm, S, direct, tail
    # (tail: the first channel of the last 16-lane group when it overlaps the one before, -1)
    in_c: int
    out_hwc: tuple  # (out_h, out_w, out_c)


def plan_depthwise_int8(w16, bias, in_zp, mult, shift, out_zp, act_min, act_max, stride_h,
                        stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                        depth_multiplier):  # fmt: skip
    """A `DepthwiseInt8Plan` with the reference's MBQM, or None for multipliers
    QuantizeMultiplier never makes (see `gemm_int8.plan_conv2d_int8`)."""
    params = requant_params(bias, mult, shift)
    if params is None or np.any(params[1] == -(2**31)):
        return None
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                depth_multiplier)
    return _depthwise_plan(w16, np.stack(params), in_zp, out_zp, act_min, act_max, geometry)


def plan_depthwise_int8_fp32(w16, bias, in_zp, scale, out_zp, act_min, act_max, stride_h,
                             stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                             depth_multiplier) -> DepthwiseInt8Plan:  # fmt: skip
    """A `DepthwiseInt8Plan` with XNNPACK's float32 requantization (scale [Co] float32; see
    `gemm_int8.plan_conv2d_int8_fp32`): `xnnpack.requantize_fp32` of
    `hybrid.depthwise_accumulators` (zero point in_zp) plus the bias."""
    params = np.zeros((4, np.shape(scale)[0]), np.uint32)
    params[:2] = fp32_bits(bias, scale)
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                depth_multiplier)
    return _depthwise_plan(w16, params, in_zp, out_zp, act_min, act_max, geometry)


def _depthwise_plan(w16, params, in_zp, out_zp, act_min, act_max,
                    geometry) -> DepthwiseInt8Plan:  # fmt: skip
    """params [4, Co] int32 or uint32 (see `DepthwiseInt8Plan`), the bias bits first."""
    stride_w, depth_multiplier = geometry[1], geometry[-1]
    w16 = np.ascontiguousarray(w16, np.int16)
    out_c = w16.shape[2]
    span = LANES // np.gcd(out_c, LANES)  # output pixels per tile call (see the module doc)
    direct = depth_multiplier == 1 and (span == 1 or stride_w == 1)  # x read in place
    # stride_w > 1, more than 16 channels but not a multiple: in place too, the last 16
    # lanes ending at Co (channels computed twice, identically) instead of staging each pixel
    tail = out_c - LANES if depth_multiplier == 1 and not direct and out_c > LANES else -1
    if not direct:
        span = 1
    if tail >= 0:
        direct, columns = True, np.r_[0:out_c // LANES * LANES, tail:out_c]
        w_span, folded = w16[:, :, columns], params[:, columns]
    else:
        width = -(-span * out_c // LANES) * LANES  # the tile's lanes: S·Co, or Co padded to 16
        w_span = np.zeros((*w16.shape[:2], width), np.int16)
        w_span[:, :, : span * out_c] = np.tile(w16, span)  # S neighbouring pixels as one
        folded = np.zeros((4, width), params.dtype)
        folded[:, : span * out_c] = np.tile(params, span)
    width = w_span.shape[2]
    sum_w = w_span.reshape(-1, width).astype(np.int64).sum(axis=0)
    bias = folded[0].view(np.int32).astype(np.int64)
    folded[0] = (bias - in_zp * sum_w).astype(np.int32).view(params.dtype)  # mod 2^32
    w_pairs = interleave_taps(w_span)
    q = np.ascontiguousarray(folded.reshape(4, -1, LANES).transpose(1, 0, 2)[:, :, DW_ORDER])
    ints = np.array([in_zp, out_zp, act_min, act_max, *geometry, span, direct, tail], np.int64)
    out_hwc = (int(geometry[6]), int(geometry[7]), out_c)
    return DepthwiseInt8Plan(w16, params, w_pairs, q, ints, out_c // depth_multiplier, out_hwc)


@inline_kernel
def border_offsets(edge, inner, off_image, iy0, ix0, k_h, k_w, dil_h, dil_w, in_h, in_w):
    """The tap offsets of a border pixel whose tap (0, 0) is at (iy0, ix0): `inner`'s for taps
    inside the image, `off_image` (the zero-point row, relative to tap (0, 0)) for taps off it
    and for the zero-weight padding tap that rounds the taps up to pairs."""
    for t in range(edge.shape[0]):
        edge[t] = off_image
    t = 0
    for ky in range(k_h):
        iy = iy0 + ky * dil_h
        for kx in range(k_w):
            ix = ix0 + kx * dil_w
            if 0 <= iy < in_h and 0 <= ix < in_w:
                edge[t] = inner[t]
            t += 1


@kernel
def _dw_plan_rows(x, plan_w16, params, w_pairs, q, ints, out, g0, g1, row0, row1):
    """Output rows row0..row1-1 (row = batch·out_h + oy) of out [N, out_h, out_w, Co], their
    16-lane groups g0..g1-1 (a staged pixel: all of them)."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w, out_c = out.shape[1], out.shape[2], out.shape[3]
    k_h, k_w = plan_w16.shape[0], plan_w16.shape[1]
    in_zp, out_zp, act_min, act_max = ints[0], ints[1], ints[2], ints[3]
    stride_h, stride_w, dil_h, dil_w = ints[4], ints[5], ints[6], ints[7]
    pad_top, pad_left, span, direct, tail = ints[8], ints[9], ints[13], ints[14] != 0, ints[15]
    groups, pairs = w_pairs.shape[0], w_pairs.shape[1]
    if not (0 <= g0 <= g1 <= groups and 0 <= row0 <= row1 <= out.shape[0] * out_h):
        raise ValueError("depthwise: group or row range out of bounds")
    padded = -(-out_c // LANES) * LANES  # a staged pixel's lanes
    # what an off-image tap reads: w·zp, cancelled by bias'
    zp_row = np.empty(max(in_c, groups * LANES), np.int8)
    for c in range(zp_row.size):  # loops, not np.full / np.zeros: less for Numba to compile
        zp_row[c] = in_zp
    inner = np.empty(2 * pairs, np.int64)  # byte offsets of the taps from tap (0, 0): interior
    edge = np.empty(2 * pairs, np.int64)  # the same for one border pixel
    staged = np.empty(2 * pairs, np.int64)  # the same in `stage`
    for t in range(2 * pairs):  # (a zero-weight last tap reads tap (0, 0))
        inner[t] = ((t // k_w) * dil_h * in_w + (t % k_w) * dil_w) * in_c if t < k_h * k_w else 0
        staged[t] = t * padded if t < k_h * k_w else 0
    stage = np.empty(k_h * k_w * padded, np.int8)  # one pixel's taps, channel oc = x[oc // dm]
    scratch = np.empty(padded, np.int8)  # its output
    # interior: ox in [ox_lo, ox_hi) has every kx tap in the image
    ox_lo = min(out_w, max(0, -(-pad_left // stride_w)))
    ox_hi = max(ox_lo, min(out_w, (in_w - 1 - (k_w - 1) * dil_w + pad_left) // stride_w + 1))
    xa, oa, wa, qa, za = addr(x), addr(out), addr(w_pairs), addr(q), addr(zp_row)
    inner_at, edge_at, staged_at = addr(inner), addr(edge), addr(staged)
    sa, ta = addr(stage), addr(scratch)
    w_group, q_group = pairs * 2 * LANES * 2, 4 * LANES * 4  # bytes per 16 channels
    for row in range(row0, row1):
        b = row // out_h
        oy = row - b * out_h
        iy0 = oy * stride_h - pad_top
        rows_in = iy0 >= 0 and iy0 + (k_h - 1) * dil_h < in_h
        ox = 0
        while ox < out_w:  # one tile call per pixel span (in place) or staged pixel
            staging = not direct or (span > 1 and not (ox_lo <= ox and ox + span <= ox_hi))
            ix0 = ox * stride_w - pad_left
            src = xa + ((b * in_h + iy0) * in_w + ix0) * in_c  # tap (0, 0), maybe off-image
            offs = inner_at  # an address: an array variable here would be reference-counted
            pixel = oa + ((b * out_h + oy) * out_w + ox) * out_c
            dst, first, last, step = pixel, g0, g1, span
            if staging:
                _stage_pixel(x, stage, padded, b, oy, ox, in_zp, ints, k_h, k_w, out_c)
                src, offs, dst, first, last, step = sa, staged_at, ta, 0, padded // LANES, 1
            elif not (rows_in and ox_lo <= ox < ox_hi):
                offs = edge_at
                border_offsets(edge, inner, za - src, iy0, ix0, k_h, k_w, dil_h, dil_w,
                               in_h, in_w)
            for g in range(first, last):  # one call site: each site compiles its own copy
                at = tail if g == groups - 1 and tail >= 0 and not staging else g * LANES
                _dw16(src + at, offs, wa + g * w_group, pairs, qa + g * q_group, dst + at,
                      out_zp, act_min, act_max, q)
            if staging:
                copy_bytes(pixel, ta, out_c)
            ox += step


@inline_kernel
def _stage_pixel(x, stage, padded, b, oy, ox, in_zp, ints, k_h, k_w, out_c):
    """stage[t·padded + oc] = x[b, iy, ix, oc // dm] for tap t = (ky, kx) of output pixel
    (b, oy, ox), in_zp where the tap is off the image (w·zp, cancelled by the folded bias)."""
    in_h, in_w = x.shape[1], x.shape[2]
    stride_h, stride_w, dil_h, dil_w = ints[4], ints[5], ints[6], ints[7]
    pad_top, pad_left, depth_multiplier = ints[8], ints[9], ints[12]
    t = 0
    for ky in range(k_h):
        iy = oy * stride_h - pad_top + ky * dil_h
        for kx in range(k_w):
            ix = ox * stride_w - pad_left + kx * dil_w
            at = t * padded
            if 0 <= iy < in_h and 0 <= ix < in_w and depth_multiplier == 1:  # one memcpy
                copy_bytes(addr(stage) + at, addr(x) + ((b * in_h + iy) * in_w + ix) * out_c,
                           out_c)
            elif 0 <= iy < in_h and 0 <= ix < in_w:
                for c in range(out_c):
                    stage[at + c] = x[b, iy, ix, c // depth_multiplier]
            else:
                for c in range(out_c):
                    stage[at + c] = in_zp
            t += 1


# With fewer output rows than this a part (7x7 maps on two threads: 4 rows and 3), the
# parts take channel groups instead: even shares, each reading every row of its channels.
GROUP_SPLIT_ROWS = 4


@kernel(parallel=True)
def _dw_plan_split(x, plan_w16, params, w_pairs, q, ints, out, g0, g1, rows, parts):
    """`_dw_plan_rows` over rows 0..rows-1 in `parts` parts at once: parts of the rows, or,
    when there are fewer than GROUP_SPLIT_ROWS rows a part and every pixel is read in place
    in whole groups (span 1, no overlapping tail), parts of the 16-lane groups."""
    by_groups = rows < GROUP_SPLIT_ROWS * parts and ints[13] == 1 and ints[14] != 0 \
        and ints[15] < 0 and g1 - g0 >= parts  # fmt: skip
    for i in prange(parts):
        if by_groups:
            a, b = pool.part(g1 - g0, parts, i)
            _dw_plan_rows(x, plan_w16, params, w_pairs, q, ints, out, g0 + a, g0 + b, 0, rows)
        else:
            r0, r1 = pool.part(rows, parts, i)
            _dw_plan_rows(x, plan_w16, params, w_pairs, q, ints, out, g0, g1, r0, r1)


def run_depthwise_int8(plan: DepthwiseInt8Plan, x, threads=None) -> np.ndarray:
    """Run a `DepthwiseInt8Plan` on x [N, H, W, Ci] int8 → [N, out_h, out_w, Co] int8 on
    `threads` threads (default: numba.get_num_threads())."""
    x = np.ascontiguousarray(x, np.int8)
    assert x.shape[3] == plan.in_c, "channels differ from the filter's"
    out = np.empty((x.shape[0], *plan.out_hwc), np.int8)
    args = (x, plan.w16, plan.params, plan.w_pairs, plan.q, plan.ints, out, 0,
            plan.w_pairs.shape[0])
    macs = out.size * plan.w16.shape[0] * plan.w16.shape[1]
    pool.split_run(_dw_plan_rows, _dw_plan_split, args, x.shape[0] * plan.out_hwc[0],
                   threads_or_default(threads), pool.DEPTHWISE_MAC_FLOPS * macs)
    return out


def depthwise_conv2d_int8_fast(x, w16, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                               stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                               depth_multiplier):  # fmt: skip
    """Bit-exact fast twin of `conv.depthwise_conv2d_int8` (reference DepthwiseConvPerChannel).

    x [N, H, W, Ci] int8; w16 = pack_depthwise_weights(w) for w [1, KH, KW, Co], Co = Ci·dm;
    bias [Co] int32; mult/shift [Co] → [N, out_h, out_w, Co] int8. Multipliers
    QuantizeMultiplier never makes (see `plan_depthwise_int8`) run the reference kernel.
    """
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                depth_multiplier)
    plan = plan_depthwise_int8(w16, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                               *geometry)  # fmt: skip
    if plan is None:
        w = np.asarray(w16, np.int8)[None]
        return depthwise_conv2d_int8(x, w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                                     *geometry)  # fmt: skip
    return run_depthwise_int8(plan, x)


# --- hybrid (float input quantized per image, float output) ---------------------------------


@kernel
def _dw_acc_rows(x, w16, zps, ints, acc_out, row0, row1):
    """The raw accumulators Σ w·(x - zps[b]) of output rows row0..row1-1 into acc_out
    [N, out_h, out_w, Co] int32; ints: a plan's geometry."""
    out_h, out_w = acc_out.shape[1], acc_out.shape[2]
    xs = np.empty(x.shape[3], np.int16)
    for row in range(row0, row1):
        b = row // out_h
        oy = row - b * out_h
        for ox in range(out_w):
            _dw_pixel(acc_out[b, oy, ox], x, w16, b, oy, ox, zps[b], ints, xs)


@kernel(parallel=True)
def _dw_acc_split(x, w16, zps, ints, acc_out, rows, parts):
    """`_dw_acc_rows` over rows 0..rows-1 in `parts` parts at once."""
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        _dw_acc_rows(x, w16, zps, ints, acc_out, r0, r1)


def depthwise_conv2d_int8_acc_fast(x, w16, zps, stride_h, stride_w, dil_h, dil_w, pad_top,
                                   pad_left, out_h, out_w, depth_multiplier,
                                   threads=None):  # fmt: skip
    """Bit-exact fast twin of `hybrid.depthwise_accumulators`.

    x [N, H, W, Ci] int8; w16 = pack_depthwise_weights(w); zps [N] per-image zero points →
    int32 [N, out_h, out_w, Co] = Σ w · (x - zps[b]), taps outside the image skipped.
    """
    x = np.ascontiguousarray(x, np.int8)
    w16 = np.ascontiguousarray(w16, np.int16)
    zps = np.ascontiguousarray(zps, np.int64)
    ints = np.array([0, 0, 0, 0, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h,
                     out_w, depth_multiplier], np.int64)  # fmt: skip
    acc = np.empty((x.shape[0], out_h, out_w, w16.shape[2]), np.int32)

    pool.split_run(_dw_acc_rows, _dw_acc_split, (x, w16, zps, ints, acc), x.shape[0] * out_h,
                   threads_or_default(threads), 2 * acc.size * w16.shape[0] * w16.shape[1])
    return acc
