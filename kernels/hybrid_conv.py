"""Fast hybrid ("dynamic range") CONV_2D and DEPTHWISE_CONV_2D: the int8 cores of
`gemm_int8` and `depthwise_int8` with a float epilogue fused in registers.

Each input image is quantized once per run (`hybrid`'s Neon quantizer: a vectorized min/max
pass, TFLite's scan order for an image holding a NaN, then one vectorized quantizing pass),
then the exact int32 accumulators of the int8 kernels go through

    out[c] = clamp((float32(wrap32(acc[c] - corr[c])) * pre[c]) * scale[c] + bias[c], lo, hi)

every operation one IEEE float32 rounding, in that order (no fused multiply-add: the IR carries
no fast-math flags). That is TFLite's order for each hybrid op when `pre`/`scale` are chosen as
in qengine/ops/conv_int.py (absent factors are 1, x·1 = x; an absent bias is -0.0, x + -0.0 = x);
`lo`/`hi` compare as `v < lo ? lo : v > hi ? hi : v`, so NaN passes as in `np.clip`.

- CONV_2D, one of two tile families per plan:
  - pairs (any x86-64 with AVX2): `pack.pack_block`'s im2col holds `q - zp` in int16 (0
    off-image, i.e. the reference's skipped taps) and `gemm_int8.tile_sums` multiplies 6 of its
    rows with a 16-channel weight panel through `vpmaddwd` (`_htile`; `_htile8` takes the first
    8 channels of a last panel of <= 8); corr is 0, so acc is the reference's exact int32 sum.
  - quads (VNNI hosts, `emit.HAS_VNNI`): the image is quantized to uint8 q + 128, the im2col
    copies it with zp + 128 off-image, and `gemm_int8.tile_sums_u8` takes 4 taps per
    `vpdpbusd` (twice `vpmaddwd`'s work per instruction); acc = Σ (q + 128)·w over all taps
    and corr = (zp + 128)·Σw, which leaves the same exact Σ (q - zp)·w. A 1x1 stride-1 conv
    whose channels fill quads reads its rows straight from the quantized image.
  Which family a kernel holds follows the image's dtype (int8 or uint8), one per kernel.
- DEPTHWISE_CONV_2D: `depthwise_int8.dw16_sums` on raw int8 taps, 16 channels per call
  (`_hdw16`; an off-image tap reads a row of zp), so acc = Σ w·q and corr = zp·Σw, which leaves
  Σ w·(q - zp) over the in-image taps (mod 2^32, exact). A channel count that is not a multiple
  of 16 runs its last group with zero weights in the unused lanes (their loads read up to 15
  bytes past a pixel: `quantize_images` leaves 16 spare bytes after the last image). Depth
  multipliers > 1 run `depthwise_int8._dw_pixel` and the epilogue in scalar float32.

Tiles whose last channels do not fill the vector store it anyway where the spill lands on
outputs the same call writes later, else they go through a scratch tile. Epilogue parameters
come in a float32 table [groups of 16 channels, 6, 16]: corr (int32 bits), pre, scale, bias, lo,
hi; `plan_*` fill what is fixed at prepare time, `run_*` the per-image scale (and corr).

The ops run `run_hybrid_*_serial` / `_split`: quantizing and the tiles in one compiled call
(the two-step `quantize_images` + `run_hybrid_*` costs ~10 us more in NumPy and dispatch), the
split one cutting each image's output row blocks (or weight panels) into a compiled prange's
parts (`threads.split_run`).
"""

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic, overload
from qengine.kernels import threads as pool
from qengine.kernels.depthwise_int8 import GROUP_SPLIT_ROWS, _dw_pixel, border_offsets, dw16_sums
from qengine.kernels.emit import (
    HAS_VNNI,
    I8,
    I32,
    I64,
    V8F32,
    V16I16,
    addr,
    const64,
    lanes,
)
from qengine.kernels.float_conv import NO_POST, post_due, post_fits, run_post
from qengine.kernels.gemm_int8 import (
    WIDE_TILES,
    _copy_tile,
    checked_vnni,
    tile_sums,
    tile_sums_u8,
    tile_sums_wide,
)
from qengine.kernels.hybrid import SPARE_BYTES, quantize_image_compiled, quantize_image_parts
from qengine.kernels.jit import inline_kernel, kernel, prange
from qengine.kernels.pack import (
    DW_ORDER,
    LANES,
    ROWS,
    PackedConvWeights,
    block_for,
    block_source,
    interleave_taps,
    kernel_row_layout,
    kernel_rows_at,
    pack_block,
    pack_conv_weights_u8,
    reads_kernel_rows,
    rows_in_place,
    two_panels_fit,
)

__all__ = [
    "HybridConvPlan",
    "HybridDepthwisePlan",
    "plan_hybrid_conv",
    "plan_hybrid_depthwise",
    "run_hybrid_conv",
    "run_hybrid_depthwise",
]

_CORR, _PRE, _SCALE, _BIAS, _LO_ROW, _HI_ROW = range(6)  # rows of an epilogue table
_TABLE_BYTES = 6 * LANES * 4  # one group's table


# --- the float epilogue (LLVM) ------------------------------------------------------------------


def _table_rows(builder, e_ptr, first, width=8):
    """The 6 epilogue rows of lanes first..first+width-1 (first 0 or 8 with width 8, 0 with
    16) of a group's table."""
    floats, ints = ir.VectorType(ir.FloatType(), width), ir.VectorType(I32, width)
    rows = []
    for row in range(6):
        ptr = builder.gep(e_ptr, [const64(LANES * row + first)])
        rows.append(builder.load(builder.bitcast(ptr, floats.as_pointer()), align=4))
    rows[_CORR] = builder.bitcast(rows[_CORR], ints)
    return rows


def _float_epilogue(builder, acc, rows):
    """int32 lanes acc → float32 lanes clamp((float(acc - corr) * pre) * scale + bias, lo, hi)."""
    corr, pre, scale, bias, lo, hi = rows
    floats = ir.VectorType(ir.FloatType(), acc.type.count)
    v = builder.sitofp(builder.sub(acc, corr), floats)  # rounds to nearest, as float(int32)
    v = builder.fadd(builder.fmul(builder.fmul(v, pre), scale), bias)
    above = builder.select(builder.fcmp_ordered(">", v, hi), hi, v)
    return builder.select(builder.fcmp_ordered("<", v, lo), lo, above)


def _store8(builder, out_ptr, index, value):
    ptr = builder.bitcast(builder.gep(out_ptr, [index]), V8F32.as_pointer())
    builder.store(value, ptr, align=4)


# --- CONV_2D: `gemm_int8`'s micro-kernel with the float epilogue ----------------------------------


def _htile_codegen(context, builder, signature, args, halves, sums_of, segmented=False):
    a_addr, a_row, b_addr, steps, out_addr, out_row, e_addr = args[:7]
    a_ptr = builder.inttoptr(a_addr, I8.as_pointer())
    b_ptr = builder.inttoptr(b_addr, I8.as_pointer())
    e_ptr = builder.inttoptr(e_addr, ir.FloatType().as_pointer())
    out_ptr = builder.inttoptr(out_addr, ir.FloatType().as_pointer())

    if segmented:  # kernel rows read from the image: args[7] of them, args[8] bytes apart
        sums = sums_of(builder, a_ptr, a_row, b_ptr, steps, ROWS, halves, segments=args[7],
                       seg_bytes=args[8])  # fmt: skip
    else:
        sums = sums_of(builder, a_ptr, a_row, b_ptr, steps, ROWS, halves)
    tables = [_table_rows(builder, e_ptr, 8 * h) for h in range(halves)]
    for r in range(ROWS):
        row_start = builder.mul(const64(r), out_row)
        for h in range(halves):
            value = _float_epilogue(builder, sums[halves * r + h], tables[h])
            _store8(builder, out_ptr, builder.add(row_start, const64(8 * h)), value)
    return context.get_dummy_value()


def _hwide_codegen(context, builder, signature, args, segmented):
    """The hybrid tile of two consecutive quad panels (32 channels, `gemm_int8.tile_sums_wide`
    on A already uint8, AVX512-VNNI), each panel's 16 lanes through the float epilogue with
    its own table."""
    a_addr, a_row, b_addr, steps, out_addr, out_row, e_addr = args[:7]
    a_ptr = builder.inttoptr(a_addr, I8.as_pointer())
    b_ptr = builder.inttoptr(b_addr, I8.as_pointer())
    e_ptr = builder.inttoptr(e_addr, ir.FloatType().as_pointer())
    out_ptr = builder.inttoptr(out_addr, ir.FloatType().as_pointer())
    pieces = (args[7], args[8]) if segmented else (None, None)
    sums = tile_sums_wide(builder, a_ptr, a_row, b_ptr, steps, ROWS, *pieces, flip=False)
    tables = [_table_rows(builder, builder.gep(e_ptr, [const64(p * _TABLE_BYTES // 4)]), 0, 16)
              for p in range(2)]  # fmt: skip
    v16f32 = ir.VectorType(ir.FloatType(), 16)
    for r in range(ROWS):
        row_start = builder.mul(const64(r), out_row)
        for p in range(2):
            value = _float_epilogue(builder, sums[2 * r + p], tables[p])
            ptr = builder.gep(out_ptr, [builder.add(row_start, const64(LANES * p))])
            builder.store(value, builder.bitcast(ptr, v16f32.as_pointer()), align=4)
    return context.get_dummy_value()


def _htile_intrinsic(emit, segmented):
    """The intrinsic of a hybrid tile whose code `emit(context, builder, signature, args)`
    writes: out[r, 0:n] = epilogue(Σ_i A[r, i] · panel[i, 0:n]) for the ROWS rows of A, i over
    `steps` groups of taps, with arguments (a_addr, a_row, b_addr, steps, out_addr, out_row,
    e_addr[, segments, seg_bytes]): A rows `a_row` bytes apart, int16 pairs (`tile_sums`) or
    uint8 quads (`tile_sums_u8`); panel int8 [steps, 16, 2 or 4]; out float32 rows `out_row`
    elements apart; e the panel's float32 [6, 16] epilogue table (addresses). segmented
    (quads): A is `segments` kernel rows `seg_bytes` apart (`gemm_int8.tile_sums_u8`)."""

    def signature_of(count):
        return types.void(*[types.int64] * count), emit

    if segmented:
        @intrinsic
        def htile_rows(typingctx, a_addr, a_row, b_addr, steps, out_addr, out_row, e_addr,
                       segments, seg_bytes):  # fmt: skip
            return signature_of(9)

        return htile_rows

    @intrinsic
    def htile(typingctx, a_addr, a_row, b_addr, steps, out_addr, out_row, e_addr):
        return signature_of(7)

    return htile


def _make_htile(halves, sums_of, segmented=False):
    """A hybrid tile of 8·halves channels (`_htile_codegen`, `_htile_intrinsic`)."""
    return _htile_intrinsic(lambda context, builder, signature, args: _htile_codegen(
        context, builder, signature, args, halves, sums_of, segmented), segmented)


def _make_hwide_tile(segmented=False):
    """A hybrid wide tile (`_hwide_codegen`), arguments as `_make_htile`'s (b_addr: the first
    panel, e_addr: its table; the second panel's follow)."""
    return _htile_intrinsic(lambda context, builder, signature, args: _hwide_codegen(
        context, builder, signature, args, segmented), segmented)


_htile = _make_htile(2, tile_sums)
_htile8 = _make_htile(1, tile_sums)  # a last panel of at most 8 channels (24 = 16 + 8 is common)
_htile_u8 = _make_htile(2, tile_sums_u8)  # VNNI hosts (emit.HAS_VNNI)
_htile8_u8 = _make_htile(1, tile_sums_u8)
_htile_rows_u8 = _make_htile(2, tile_sums_u8, segmented=True)  # A straight from the image
_htile8_rows_u8 = _make_htile(1, tile_sums_u8, segmented=True)
_htile_wide_u8 = _make_hwide_tile()  # AVX512-VNNI hosts: two whole panels at a time
_htile_wide_rows_u8 = _make_hwide_tile(segmented=True)


class HybridConvPlan(NamedTuple):
    """What `run_hybrid_conv` needs besides the quantized input (`plan_hybrid_conv`)."""

    panels: np.ndarray  # int8 [ceil(Co/16), k2, 16, 2], or with vnni [ceil(Co/16), k4, 16, 4]
    table: np.ndarray  # float32 [6, 16·ceil(Co/16)] in channel order: pre, bias, lo, hi
    ints: np.ndarray  # int64 in `gemm_int8.ConvInt8Plan`'s layout (read by `pack_block`)
    in_c: int
    out_hwc: tuple  # (out_h, out_w, out_c)
    sum_w: np.ndarray  # int64 [Co] Σ_k w (vnni: corr = (zp + 128)·Σw), else empty
    family: np.ndarray  # empty, uint8 with vnni, else int8: its dtype picks the fused kernels'

    @property
    def vnni(self) -> bool:
        """The uint8 `vpdpbusd` tiles: the input is q + 128 (uint8)."""
        return self.family.dtype == np.uint8


def _table(out_c, pre, bias, lo, hi):
    """The fixed part of an epilogue table, [6, 16·ceil(out_c/16)] in channel order: pre [Co]
    (None: 1), bias [Co] (None: -0.0), lo, hi; scale and corr 0, and every row 0 past out_c."""
    t = np.zeros((6, -(-out_c // LANES) * LANES), np.float32)
    t[_PRE, :out_c] = 1 if pre is None else pre
    t[_BIAS, :out_c] = -0.0 if bias is None else np.ravel(bias)
    t[_LO_ROW], t[_HI_ROW] = lo, hi
    return t


_CHANNEL_ORDER = np.arange(LANES)
_NO_CORR = np.zeros(0, np.int64)


def _image_table(table, out_c, scale, zp=0, sum_w=None, order=None):
    """An image's epilogue table [groups, 6, 16] (`_fill_image_table`): scale [Co] or a scalar;
    corr = zp * sum_w when sum_w is given; order None: channel order."""
    dst = np.empty((table.shape[1] // LANES, 6, LANES), np.float32)
    scales = np.ascontiguousarray(np.broadcast_to(scale, (out_c,)), np.float32)
    _fill_image_table(table, scales, zp, _NO_CORR if sum_w is None else sum_w,
                      _CHANNEL_ORDER if order is None else np.asarray(order, np.int64), dst)
    return dst


@kernel
def _fill_image_table(table, scales, zp, sum_w, order, dst):
    """dst [groups, 6, 16], an image's epilogue table: the plan's `table` [6, 16·groups] with
    scale[c] = scales[c] and, when sum_w is not empty, corr[c] = int32(zp · sum_w[c]) (wrapping,
    its bits in the float32 row) for channels c < Co = scales.size; lane l of group g holds
    channel 16·g + order[l]."""
    out_c = scales.shape[0]
    bits = dst.reshape(dst.size).view(np.int32)
    for g in range(dst.shape[0]):
        for lane in range(LANES):
            c = g * LANES + order[lane]
            for r in range(6):
                dst[g, r, lane] = table[r, c]
            if c < out_c:
                dst[g, _SCALE, lane] = scales[c]
                if sum_w.size:
                    bits[(g * 6 + _CORR) * LANES + lane] = np.int32(zp * sum_w[c])


def plan_hybrid_conv(packed: PackedConvWeights, pre, bias, lo, hi, stride_h, stride_w, dil_h,
                     dil_w, pad_top, pad_left, out_h, out_w, vnni=HAS_VNNI) -> HybridConvPlan:  # fmt: skip
    """pre [Co] float32 (None: 1), bias [Co] float32 (None: -0.0), lo/hi the float clamp;
    vnni: the `vpdpbusd` tiles (default: when the host has them)."""
    out_c = packed.out_c
    ints = np.array([out_c, packed.k_h, packed.k_w, 0, 0, 0, 0, stride_h, stride_w, dil_h,
                     dil_w, pad_top, pad_left, out_h, out_w], np.int64)  # fmt: skip
    panels, sum_w = packed.panels, np.zeros(0, np.int64)
    if checked_vnni(vnni):
        panels, sum_w = pack_conv_weights_u8(packed.w)
    return HybridConvPlan(panels, _table(out_c, pre, bias, lo, hi), ints, packed.in_c,
                          (out_h, out_w, out_c), sum_w,
                          np.empty(0, np.uint8 if vnni else np.int8))  # fmt: skip


def _tile_for(x, a_addr, a_row, panel, steps, dst, stride, e, sixteen):
    """The tile of x's family: `_htile`/`_htile8` (x int8) or `_htile_u8`/`_htile8_u8` (x uint8,
    VNNI); 16 lanes when sixteen, else 8. A kernel holds one family only: both in each would
    double its compile time."""


@overload(_tile_for)
def _tile_for_impl(x, a_addr, a_row, panel, steps, dst, stride, e, sixteen):
    tile16, tile8 = (_htile_u8, _htile8_u8) if x.dtype == types.uint8 else (_htile, _htile8)

    def impl(x, a_addr, a_row, panel, steps, dst, stride, e, sixteen):
        if sixteen:
            tile16(a_addr, a_row, panel, steps, dst, stride, e)
        else:
            tile8(a_addr, a_row, panel, steps, dst, stride, e)

    return impl


def _wide_for(x) -> bool:
    """At typing: whether x's Numba type takes the wide tile (quads on an AVX512-VNNI host)."""
    return WIDE_TILES and x.dtype == types.uint8


def _wide_tile_for(x, a_addr, a_row, panel, steps, dst, stride, e, segments, seg_bytes):
    """`_htile_wide_u8`, or with segments > 0 `_htile_wide_rows_u8`, for x uint8 on an
    AVX512-VNNI host; elsewhere never called (compiles to nothing)."""


@overload(_wide_tile_for)
def _wide_tile_for_impl(x, a_addr, a_row, panel, steps, dst, stride, e, segments, seg_bytes):
    if not _wide_for(x):
        return lambda x, a_addr, a_row, panel, steps, dst, stride, e, segments, seg_bytes: None

    def impl(x, a_addr, a_row, panel, steps, dst, stride, e, segments, seg_bytes):
        if segments > 0:
            _htile_wide_rows_u8(a_addr, a_row, panel, steps, dst, stride, e, segments,
                                seg_bytes)  # fmt: skip
        else:
            _htile_wide_u8(a_addr, a_row, panel, steps, dst, stride, e)

    return impl


def _takes_wide(x):
    """Whether `_hconv_part` runs two panels at once for this x (a constant at compile time)."""


@overload(_takes_wide)
def _takes_wide_impl(x):
    takes = _wide_for(x)
    return lambda x: takes


def _rows_tile_for(x, a_addr, a_row, panel, steps, dst, stride, e, sixteen, segments,
                   seg_bytes):  # fmt: skip
    """`_htile_rows_u8`/`_htile8_rows_u8` for x uint8 (VNNI); for x int8 nothing (the pairs
    never read kernel rows in place: `pack.reads_kernel_rows`)."""


@overload(_rows_tile_for)
def _rows_tile_for_impl(x, a_addr, a_row, panel, steps, dst, stride, e, sixteen, segments,
                        seg_bytes):  # fmt: skip
    if x.dtype != types.uint8:
        return lambda x, a_addr, a_row, panel, steps, dst, stride, e, sixteen, segments, \
            seg_bytes: None  # fmt: skip

    def impl(x, a_addr, a_row, panel, steps, dst, stride, e, sixteen, segments, seg_bytes):
        if sixteen:
            _htile_rows_u8(a_addr, a_row, panel, steps, dst, stride, e, segments, seg_bytes)
        else:
            _htile8_rows_u8(a_addr, a_row, panel, steps, dst, stride, e, segments, seg_bytes)

    return impl


@kernel
def _hconv_part(x, panels, table, ints, zp, out, post, blk0, blk1, pan0, pan1):
    """Row blocks blk0..blk1-1 (ROWS output pixels each) × weight panels pan0..pan1-1 of one
    image x [1, H, W, Ci] into out [P, Co] float32; the last row block and a partial last panel
    go through a scratch tile. With every panel, each finished block gets `post` (a folded ADD
    or PRELU, float_conv.post_args; the caller runs it after a cut by panels). x int8: panels
    of tap pairs, A = x - zp in int16; x uint8 (q + 128, VNNI): panels of 4 taps, zp the fill
    of taps outside the image (zp + 128), and a 1x1 stride-1 unpadded conv with Ci % 4 == 0
    reads its A rows straight from x."""
    out_c, pixels = out.shape[1], out.shape[0]
    steps, taps = panels.shape[1], panels.shape[3]
    kp = taps * steps
    a = block_for(x, ROWS * kp + 16)  # + room for `widen`'s last 16
    xf = x.reshape(x.size)
    tail = np.empty((ROWS, LANES), np.float32)
    pa, ta, oa, ea = addr(panels), addr(tail), addr(out), addr(table)
    source = block_source(x, xf, a, ints)
    direct = rows_in_place(x, a, kp, ints)
    panel_bytes = steps * LANES * taps
    # A tile stores 16 (or 8) channels per row: with fewer left in a row (`width`), the extra
    # lanes land in the next rows' first channels, which the block's other panels (taken last
    # to first) and the range's later blocks overwrite. So a tile stores straight into `out`
    # when this thread owns every panel and its last lane stays inside this range's pixels;
    # else through the scratch tile.
    all_panels = pan0 == 0 and pan1 == panels.shape[0]
    range_end = min(blk1 * ROWS, pixels) * out_c
    post_from = blk0 * ROWS  # the first output pixel still waiting for `post`
    rows_read = reads_kernel_rows(x, a, ints, kp, direct)
    pixel_bytes, row_steps, kernel_rows, seg_bytes = kernel_row_layout(x, ints)
    wide = _takes_wide(x)
    for blk in range(blk0, blk1):
        p0 = blk * ROWS
        rows = min(ROWS, pixels - p0)
        first_tap = kernel_rows_at(x, ints, p0, rows) if rows_read else -1
        if first_tap >= 0:  # A's rows straight from x, a kernel row at a time
            aa = addr(xf) + first_tap
        elif direct and rows == ROWS:
            aa = addr(xf) + p0 * kp
        else:
            pack_block(source, kp, p0, rows, zp)
            aa = addr(a)
        j = pan1 - 1
        while j >= pan0:
            oc0 = j * LANES
            width = min(LANES, out_c - oc0)
            if wide and two_panels_fit(j, pan0, rows, out_c, p0, range_end, all_panels):
                in_x = first_tap >= 0  # kernel rows read from x, or A's block
                _wide_tile_for(x, aa, pixel_bytes if in_x else kp * a.itemsize,
                               pa + (j - 1) * panel_bytes, row_steps if in_x else steps,
                               oa + (p0 * out_c + oc0 - LANES) * 4, out_c,
                               ea + (j - 1) * _TABLE_BYTES, kernel_rows if in_x else 0,
                               seg_bytes)  # fmt: skip
                j -= 2
                continue
            lanes = LANES if width > LANES // 2 else LANES // 2
            spill_ok = all_panels and (p0 + ROWS - 1) * out_c + oc0 + lanes <= range_end
            direct_out = rows == ROWS and (width == lanes or spill_ok)
            dst = oa + (p0 * out_c + oc0) * 4 if direct_out else ta
            stride = out_c if direct_out else LANES
            if first_tap >= 0:
                _rows_tile_for(x, aa, pixel_bytes, pa + j * panel_bytes, row_steps, dst,
                               stride, ea + j * _TABLE_BYTES, lanes == LANES, kernel_rows,
                               seg_bytes)  # fmt: skip
            else:
                _tile_for(x, aa, kp * a.itemsize, pa + j * panel_bytes, steps, dst, stride,
                          ea + j * _TABLE_BYTES, lanes == LANES)  # fmt: skip
            if not direct_out:
                _copy_tile(tail, out, p0, oc0, rows, width)
            j -= 1
        # the block's rows are final when this part has every panel (tiles spill only into
        # later rows)
        if all_panels and post_due(post_from, p0 + rows, range_end // out_c, out_c, post[4]):
            run_post(out, post_from, p0 + rows, post)
            post_from = p0 + rows


@kernel(parallel=True)
def _hconv_split(x, panels, table, ints, zp, out, post, blocks, n_panels, by_panels, parts):
    """`_hconv_part` over all of out in `parts` parts at once (threads.split_grid)."""
    for i in prange(parts):
        b0, b1, p0, p1 = pool.grid_part(blocks, n_panels, by_panels, parts, i)
        _hconv_part(x, panels, table, ints, zp, out, post, b0, b1, p0, p1)
    if by_panels:
        run_post(out, 0, out.shape[0], post)


def run_hybrid_conv(plan: HybridConvPlan, q, zps, scales, threads=1) -> np.ndarray:
    """q [N, H, W, Ci] int8, or uint8 q + 128 (`quantize_images(..., unsigned=True)`, what a
    vnni plan reads; int8 is converted), image b quantized with zero point zps[b]; scales
    [N, Co] or [N] float32 (the per-image factor after `pre`) → float32 [N, out_h, out_w, Co]."""
    n = q.shape[0]
    assert q.shape[3] == plan.in_c, "input channels differ from the filter's"
    if plan.vnni and q.dtype != np.uint8:
        q = np.ascontiguousarray(q, np.int8).view(np.uint8) ^ np.uint8(128)
    elif not plan.vnni:
        assert q.dtype == np.int8, "a plan without vnni reads int8"
    out_h, out_w, out_c = plan.out_hwc
    pixels = out_h * out_w
    out = np.empty((n, pixels, out_c), np.float32)
    for b in range(n):
        zp = int(zps[b])
        if plan.vnni:  # Σ(q + 128)·w - (zp + 128)·Σw = Σ(q - zp)·w, the taps outside being zp
            table, zp = _image_table(plan.table, out_c, scales[b], zp + 128, plan.sum_w), zp + 128
        else:
            table = _image_table(plan.table, out_c, scales[b])
        args = (q[b : b + 1], plan.panels, table, plan.ints, zp, out[b], NO_POST)
        flops = 2 * pixels * plan.panels.shape[1] * plan.panels.shape[3] * out_c
        pool.split_grid(_hconv_part, _hconv_split, args, -(-pixels // ROWS),
                        plan.panels.shape[0], threads, flops)
    return out.reshape(n, out_h, out_w, out_c)


QUANTIZE_PARTS_FROM = 32768  # values: a smaller image is quantized on one thread (~0.35 ns
# a value there; cutting it into parts costs two more parallel regions, ~2 us each)


@inline_kernel
def _quantize_image(image, q, symmetric, shift, parts):
    """(sf, zp) of one image quantized into q: on this thread, or in `parts` parts at once."""
    if parts == 1 or image.size < QUANTIZE_PARTS_FROM:
        return quantize_image_compiled(image, q, symmetric, shift)
    return quantize_image_parts(image, q, symmetric, shift, parts)


@kernel
def _quantize_for_tiles(image, q, shift, symmetric, filter_scale, table, sum_w, out_c,
                        image_table, parts):  # fmt: skip
    """Quantize one image into q (int8, or uint8 q + 128 with shift 128; in `parts` parts at
    once) and fill its epilogue table for out_c channels from the plan's `table` (corr =
    (zp + 128)·Σw when sum_w is not empty); returns the zero point the tiles read (zp +
    shift)."""
    sf, zp = _quantize_image(image, q, symmetric, shift, parts)
    scales = np.empty(out_c, np.float32)
    scales[:] = sf * filter_scale if symmetric else sf
    _fill_image_table(table, scales, zp + shift, sum_w, np.arange(LANES), image_table)
    return zp + shift


def _image_buffer(family, n):
    """n values of the family's dtype (int8 q, or uint8 q + 128 for the VNNI tiles) for an
    image of n - SPARE_BYTES values, which quantizing writes; the spare ones 0."""


@overload(_image_buffer)
def _image_buffer_impl(family, n):
    dtype = np.uint8 if family.dtype == types.uint8 else np.int8

    def impl(family, n):
        q = np.empty(n, dtype)
        for i in range(n - SPARE_BYTES, n):
            q[i] = 0
        return q

    return impl


def _shift_of(family):
    """What the family adds to q: 128 for uint8 q + 128, else 0."""


@overload(_shift_of)
def _shift_of_impl(family):
    shift = 128 if family.dtype == types.uint8 else 0
    return lambda family: shift


@inline_kernel
def _post_fits_images(post, images, pixels, channels):
    """A `post` fits an image's output [pixels, channels] and, when it has a step, there is
    one image (its residual is that image's)."""
    return post_fits(post, pixels, channels) and (post[4] == 0 or images == 1)


@kernel
def run_hybrid_conv_serial(x, family, panels, table, ints, sum_w, symmetric, filter_scale, out,
                           post, blk0, blk1):  # fmt: skip
    """`quantize_images` + `run_hybrid_conv` in one compiled call on this thread (a dozen NumPy
    and dispatch steps cost ~10 us, more than a small layer's work): row blocks blk0..blk1-1 of
    each image of x [N, H, W, Ci] float32 into out [N, P, Co] float32. family: the plan's
    empty array, int8, or uint8 for a vnni plan (whose q is uint8 q + 128 and sum_w its Σw);
    filter_scale multiplies each image's factor (per-tensor filters; 1 and unused when per
    channel, i.e. when not symmetric); `post` (float_conv.post_args, one image only) runs on
    each finished block."""
    if not _post_fits_images(post, x.shape[0], out.shape[1], out.shape[2]):
        raise ValueError("run_hybrid_conv: post does not fit out (or more than one image)")
    q = _image_buffer(family, x[0].size + SPARE_BYTES)
    image_table = np.empty((table.shape[1] // LANES, 6, LANES), np.float32)
    image = q[: x[0].size].reshape(x[0:1].shape)
    for b in range(x.shape[0]):
        zp = _quantize_for_tiles(x[b], q, _shift_of(family), symmetric, filter_scale, table,
                                 sum_w, out.shape[2], image_table, np.int64(1))  # fmt: skip
        _hconv_part(image, panels, image_table, ints, zp, out[b], post, blk0, blk1, 0,
                    panels.shape[0])  # fmt: skip


@kernel(parallel=True)
def run_hybrid_conv_split(x, family, panels, table, ints, sum_w, symmetric, filter_scale, out,
                          post, blocks, parts):  # fmt: skip
    """`run_hybrid_conv_serial` over all `blocks` row blocks, each image quantized and then its
    tiles run in `parts` parts at once (`threads.split_run`; the
    cut of `split_grid`: by weight panels when there are fewer row blocks than parts)."""
    if not _post_fits_images(post, x.shape[0], out.shape[1], out.shape[2]):
        raise ValueError("run_hybrid_conv: post does not fit out (or more than one image)")
    q = _image_buffer(family, x[0].size + SPARE_BYTES)
    image_table = np.empty((table.shape[1] // LANES, 6, LANES), np.float32)
    image = q[: x[0].size].reshape(x[0:1].shape)
    n_panels = panels.shape[0]
    by_panels = blocks < parts and n_panels >= 2
    for b in range(x.shape[0]):
        zp = _quantize_for_tiles(x[b], q, _shift_of(family), symmetric, filter_scale, table,
                                 sum_w, out.shape[2], image_table, parts)  # fmt: skip
        for i in prange(parts):
            b0, b1, p0, p1 = pool.grid_part(blocks, n_panels, by_panels, parts, i)
            _hconv_part(image, panels, image_table, ints, zp, out[b], post, b0, b1, p0, p1)
        if by_panels:  # (blocks cut by panels have no part with every panel)
            run_post(out[b], 0, out.shape[1], post)


# --- DEPTHWISE_CONV_2D: `depthwise_int8`'s 16-channel tap loop with the float epilogue -----------


def _hdw16_codegen(context, builder, signature, args):
    x_addr, offs_addr, w_addr, pairs, e_addr, out_addr = args
    x_ptr = builder.inttoptr(x_addr, I8.as_pointer())
    offs = builder.inttoptr(offs_addr, I64.as_pointer())
    w_ptr = builder.inttoptr(w_addr, V16I16.as_pointer())
    e_ptr = builder.inttoptr(e_addr, ir.FloatType().as_pointer())
    out_ptr = builder.inttoptr(out_addr, ir.FloatType().as_pointer())
    sums = dw16_sums(builder, x_ptr, offs, w_ptr, pairs)
    # the table is in DW_ORDER lane order: its lanes 0-7 go with sums[0], 8-15 with sums[1]
    outs = [_float_epilogue(builder, sums[h], _table_rows(builder, e_ptr, 8 * h))
            for h in range(2)]  # fmt: skip
    back = lanes([DW_ORDER.index(c) for c in range(16)])  # lane order → channel order
    both = builder.shuffle_vector(outs[0], outs[1], back)
    v16f32 = ir.VectorType(ir.FloatType(), 16)
    builder.store(both, builder.bitcast(out_ptr, v16f32.as_pointer()), align=4)
    return context.get_dummy_value()


@intrinsic
def _hdw16(typingctx, x_addr, offs_addr, w_addr, pairs, e_addr, out_addr):
    """out[0:16] = epilogue(Σ_t x[offs[t] + c] · w[t, c]) for 16 channels c (addresses).

    offs: int64 [2·pairs] byte offsets of the taps from x_addr; w: int16 [pairs, 2, 16]
    interleaved as `TAPS_LO`/`TAPS_HI`; e: float32 [6, 16] epilogue table in `DW_ORDER` lane order;
    out: 16 float32.
    """
    return types.void(*[types.int64] * 6), _hdw16_codegen


class HybridDepthwisePlan(NamedTuple):
    """What `run_hybrid_depthwise` needs besides the quantized input (`plan_hybrid_depthwise`)."""

    w16: np.ndarray  # int16 [KH, KW, Co] (depth multipliers > 1)
    w_pairs: np.ndarray  # int16 [ceil(Co/16), pairs, 2, 16], zero past Co (multiplier 1)
    sum_w: np.ndarray  # int64 [Co]: Σ_taps w (corr = zp·Σw, multiplier 1)
    table: np.ndarray  # float32 [6, 16·ceil(Co/16)] in channel order: pre, bias, lo, hi
    ints: np.ndarray  # int64: 0, 0, 0, 0, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
    # out_h, out_w, depth_multiplier, k_h, k_w (`depthwise_int8`'s layout, read by `_dw_pixel`)


def plan_hybrid_depthwise(w16, pre, bias, lo, hi, stride_h, stride_w, dil_h, dil_w, pad_top,
                          pad_left, out_h, out_w, depth_multiplier) -> HybridDepthwisePlan:  # fmt: skip
    """w16 = pack.pack_depthwise_weights(w); pre, bias, lo, hi as `plan_hybrid_conv`."""
    w16 = np.ascontiguousarray(w16, np.int16)
    k_h, k_w, out_c = w16.shape
    sum_w = w16.reshape(-1, out_c).astype(np.int64).sum(axis=0)
    if depth_multiplier == 1:  # zero weights in the lanes past Co
        w_pairs = interleave_taps(np.pad(w16, ((0, 0), (0, 0), (0, -out_c % LANES))))
    else:
        w_pairs = np.zeros((0, 0, 2, LANES), np.int16)
    ints = np.array([0, 0, 0, 0, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h,
                     out_w, depth_multiplier, k_h, k_w], np.int64)  # fmt: skip
    return HybridDepthwisePlan(w16, w_pairs, sum_w, _table(out_c, pre, bias, lo, hi), ints)


@kernel
def _hdw_rows(x, w_pairs, table, ints, zp, out, post, g0, g1, row0, row1):
    """Output rows row0..row1-1 of one image x [1, H, W, Ci] (16 readable bytes past its end)
    into out [out_h, out_w, Co] float32, their 16-lane groups g0..g1-1 (a range of groups
    other than all of them: Co a multiple of 16 and no `post`), depth multiplier 1 (as
    `depthwise_int8._dw_plan_rows`); `post` (float_conv.post_args) runs on each finished
    row."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    out_w, out_c = out.shape[1], out.shape[2]
    stride_h, stride_w, dil_h, dil_w = ints[4], ints[5], ints[6], ints[7]
    pad_top, pad_left = ints[8], ints[9]
    groups, pairs = w_pairs.shape[0], w_pairs.shape[1]
    every_group = g0 == 0 and g1 == groups
    if not (0 <= g0 <= g1 <= groups and (every_group or (out_c % LANES == 0 and post[4] == 0))
            and 0 <= row0 <= row1 <= out.shape[0]):
        raise ValueError("hybrid depthwise: group or row range out of bounds")
    taps = 2 * pairs  # k_h·k_w, rounded up to even (the extra tap has zero weights)
    k_h, k_w = ints[13], ints[14]
    zp_row = np.full(groups * LANES, zp, np.int8)  # what an off-image tap reads (w·zp: corr)
    inner = np.zeros(taps, np.int64)  # byte offsets of the taps from tap (0, 0): interior
    edge = np.zeros(taps, np.int64)  # the same for one border pixel
    for t in range(k_h * k_w):
        inner[t] = ((t // k_w) * dil_h * in_w + (t % k_w) * dil_w) * in_c
    ox_lo = min(out_w, max(0, -(-pad_left // stride_w)))
    ox_hi = max(ox_lo, min(out_w, (in_w - 1 - (k_w - 1) * dil_w + pad_left) // stride_w + 1))
    scratch = np.empty(LANES, np.float32)
    xa, oa, wa, ea, za, sa = addr(x), addr(out), addr(w_pairs), addr(table), addr(zp_row), \
        addr(scratch)  # fmt: skip
    inner_at, edge_at = addr(inner), addr(edge)
    full = out_c // LANES
    w_group = pairs * 2 * LANES * 2  # bytes per 16 channels
    range_end = row1 * out_w * out_c
    flat = out.reshape((out.shape[0] * out_w, out_c))
    post_from = row0 * out_w  # the first output pixel still waiting for `post`
    for oy in range(row0, row1):
        iy0 = oy * stride_h - pad_top
        rows_in = iy0 >= 0 and iy0 + (k_h - 1) * dil_h < in_h
        for ox in range(out_w):
            ix0 = ox * stride_w - pad_left
            src = xa + (iy0 * in_w + ix0) * in_c  # tap (0, 0), maybe off-image
            offs = inner_at
            if not (rows_in and ox_lo <= ox < ox_hi):
                offs = edge_at
                border_offsets(edge, inner, za - src, iy0, ix0, k_h, k_w, dil_h, dil_w,
                               in_h, in_w)
            at = (oy * out_w + ox) * out_c  # this pixel's first output element
            for g in range(g0, min(g1, full)):
                _hdw16(src + g * LANES, offs, wa + g * w_group, pairs, ea + g * _TABLE_BYTES,
                       oa + (at + g * LANES) * 4)  # fmt: skip
            if full == groups or g1 < groups:
                continue
            # the last channels: their 16 lanes spill into the next pixels, which this range
            # computes later, unless the spill would pass the range's end: then the scratch row
            tail = at + full * LANES
            direct = tail + LANES <= range_end
            _hdw16(src + full * LANES, offs, wa + full * w_group, pairs,
                   ea + full * _TABLE_BYTES, oa + tail * 4 if direct else sa)  # fmt: skip
            if not direct:
                for c in range(out_c - full * LANES):
                    out[oy, ox, full * LANES + c] = scratch[c]
        # (tails spill into later rows only)
        if post_due(post_from, (oy + 1) * out_w, row1 * out_w, flat.shape[1], post[4]):
            run_post(flat, post_from, (oy + 1) * out_w, post)
            post_from = (oy + 1) * out_w


@kernel
def _hdw_pixel_rows(x, w16, table_c, ints, zp, out, row0, row1):
    """Output rows row0..row1-1 of one image for any depth multiplier: `_dw_pixel`'s
    exact accumulators (taps off the image skipped), then the epilogue of table_c [6, Co]
    (channel order, corr 0) in scalar float32 operations."""
    out_w, out_c = out.shape[1], out.shape[2]
    acc = np.empty(out_c, np.int32)
    xs = np.empty(x.shape[3], np.int16)
    for oy in range(row0, row1):
        for ox in range(out_w):
            _dw_pixel(acc, x, w16, 0, oy, ox, zp, ints, xs)
            for c in range(out_c):
                v = (np.float32(acc[c]) * table_c[_PRE, c]) * table_c[_SCALE, c] \
                    + table_c[_BIAS, c]  # fmt: skip
                if v < table_c[_LO_ROW, c]:  # NaN passes
                    v = table_c[_LO_ROW, c]
                elif v > table_c[_HI_ROW, c]:
                    v = table_c[_HI_ROW, c]
                out[oy, ox, c] = v


def _with_spare_bytes(q):
    """q itself when it is C-contiguous int8 and its buffer has SPARE_BYTES readable bytes past
    its end (as `hybrid.quantize_images` leaves them), else a copy that has them."""
    owner = q if q.base is None else q.base
    if (q.dtype == np.int8 and q.flags.c_contiguous and isinstance(owner, np.ndarray)
            and owner.ctypes.data + owner.nbytes >= q.ctypes.data + q.nbytes + SPARE_BYTES):
        return q
    buffer = np.zeros(q.size + SPARE_BYTES, np.int8)
    buffer[: q.size] = q.ravel()
    return buffer[: q.size].reshape(q.shape)


@kernel(parallel=True)
def _hdw_split(x, w_pairs, table, ints, zp, out, post, g0, g1, rows, parts):
    """`_hdw_rows` over rows 0..rows-1 in `parts` parts at once (threads.split_run)."""
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        _hdw_rows(x, w_pairs, table, ints, zp, out, post, g0, g1, r0, r1)


@kernel(parallel=True)
def _hdw_pixel_split(x, w16, table, ints, zp, out, rows, parts):
    """`_hdw_pixel_rows` over rows 0..rows-1 in `parts` parts at once (threads.split_run)."""
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        _hdw_pixel_rows(x, w16, table, ints, zp, out, r0, r1)


@kernel
def _quantize_for_dw(image, q, table, sum_w, filter_scales, order, image_table, parts):
    """Quantize one image into q (int8; in `parts` parts at once) and fill its epilogue table:
    scale[c] = s_w[c] * sf, corr[c] = int32(zp * Σw[c]) (`_fill_image_table`, lanes in
    `order`); returns zp."""
    # (asymmetric and shift 0 as values, not constants: the same compiled quantizer as the
    # conv tiles' when theirs are int8, where constants would compile a second copy of it)
    sf, zp = _quantize_image(image, q, np.bool_(False), _shift_of(q), parts)
    scales = np.empty(filter_scales.shape[0], np.float32)
    for c in range(scales.shape[0]):
        scales[c] = filter_scales[c] * sf
    _fill_image_table(table, scales, zp, sum_w, order, image_table)
    return zp


@kernel
def run_hybrid_depthwise_serial(x, w_pairs, table, ints, sum_w, filter_scales, order, out, post,
                                row0, row1):  # fmt: skip
    """`quantize_images` + `run_hybrid_depthwise` in one compiled call on this thread, depth
    multiplier 1: output rows row0..row1-1 of each image of x [N, H, W, C] float32 into
    out [N, out_h, out_w, C] float32; filter_scales [C] float32, order = pack.DW_ORDER; `post`
    (float_conv.post_args, one image only) runs on each finished row."""
    if not _post_fits_images(post, x.shape[0], out.shape[1] * out.shape[2], out.shape[3]):
        raise ValueError("run_hybrid_depthwise: post does not fit out (or more than one image)")
    q = np.zeros(x[0].size + SPARE_BYTES, np.int8)
    image_table = np.empty((table.shape[1] // LANES, 6, LANES), np.float32)
    for b in range(x.shape[0]):
        zp = _quantize_for_dw(x[b], q, table, sum_w, filter_scales, order, image_table,
                              np.int64(1))  # (not a constant: see quantize_image_parts)
        image = q[: x[0].size].reshape(x[0:1].shape)
        _hdw_rows(image, w_pairs, image_table, ints, zp, out[b], post, 0, w_pairs.shape[0],
                  row0, row1)


@kernel(parallel=True)
def run_hybrid_depthwise_split(x, w_pairs, table, ints, sum_w, filter_scales, order, out, post,
                               rows, parts):  # fmt: skip
    """`run_hybrid_depthwise_serial` over rows 0..rows-1, each image quantized and then its
    rows run in `parts` parts at once (`threads.split_run`), or its 16-lane groups when there
    are fewer than GROUP_SPLIT_ROWS rows a part (as `depthwise_int8`), Co is a multiple of
    16 and no `post` runs."""
    if not _post_fits_images(post, x.shape[0], out.shape[1] * out.shape[2], out.shape[3]):
        raise ValueError("run_hybrid_depthwise: post does not fit out (or more than one image)")
    q = np.zeros(x[0].size + SPARE_BYTES, np.int8)
    image_table = np.empty((table.shape[1] // LANES, 6, LANES), np.float32)
    groups = w_pairs.shape[0]
    by_groups = rows < GROUP_SPLIT_ROWS * parts and out.shape[3] % LANES == 0 \
        and post[4] == 0 and groups >= parts  # fmt: skip
    for b in range(x.shape[0]):
        zp = _quantize_for_dw(x[b], q, table, sum_w, filter_scales, order, image_table, parts)
        image = q[: x[0].size].reshape(x[0:1].shape)
        for i in prange(parts):
            if by_groups:
                g0, g1 = pool.part(groups, parts, i)
                _hdw_rows(image, w_pairs, image_table, ints, zp, out[b], post, g0, g1, 0, rows)
            else:
                r0, r1 = pool.part(rows, parts, i)
                _hdw_rows(image, w_pairs, image_table, ints, zp, out[b], post, 0, groups, r0,
                          r1)


def run_hybrid_depthwise(plan: HybridDepthwisePlan, q, zps, scales, threads=1) -> np.ndarray:
    """q [N, H, W, Ci] int8 (image b quantized with zero point zps[b]; `hybrid.quantize_images`
    leaves the spare bytes the tap loads need, other arrays are copied), scales [N, Co] float32
    → float32 [N, out_h, out_w, Co]."""
    q = _with_spare_bytes(q)
    n = q.shape[0]
    out_h, out_w, multiplier = (int(v) for v in plan.ints[10:13])
    out_c = plan.w16.shape[2]
    assert q.shape[3] * multiplier == out_c, "channels differ from the filter's"
    out = np.empty((n, out_h, out_w, out_c), np.float32)
    for b in range(n):
        x, zp, dst = q[b : b + 1], int(zps[b]), out[b]
        if multiplier == 1:
            table = _image_table(plan.table, out_c, scales[b], zp, plan.sum_w, DW_ORDER)
            serial, driver = _hdw_rows, _hdw_split
            args = (x, plan.w_pairs, table, plan.ints, zp, dst, NO_POST, 0,
                    plan.w_pairs.shape[0])
        else:
            table = _image_table(plan.table, out_c, scales[b])
            table = np.ascontiguousarray(table.transpose(1, 0, 2).reshape(6, -1))
            serial, driver = _hdw_pixel_rows, _hdw_pixel_split
            args = (x, plan.w16, table, plan.ints, zp, dst)
        flops = pool.DEPTHWISE_MAC_FLOPS * out_h * out_w * out_c * plan.ints[13] * plan.ints[14]
        pool.split_run(serial, driver, args, out_h, threads, flops)
    return out
