"""The int8 GEMM of CONV_2D, FULLY_CONNECTED, their hybrid forms and the XNNPACK-arithmetic
path, bit-exact with the reference kernels in `conv.py` / `fully_connected.py`.

A convolution is out[p, oc] = Σ_k A[p, k] · B[k, oc] with p = (batch, out_y, out_x) and
k = (ky, kx, ic); FULLY_CONNECTED is the 1×1 convolution of [B, 1, 1, D]. B is packed once
into 16-channel panels (`pack.pack_conv_weights`); A, im2col minus the input zero point in
int16, is packed 6 pixels at a time (`pack.pack_block`): row-major, row r holding pixel p0+r's
taps. For a 1×1 stride-1 unpadded convolution that is a contiguous slice of the input.

The micro-kernel (`_tile`, 6×16, 1×16, and 6×8 for a last panel of at most 8 channels) keeps
2·rows int32x8 accumulators in registers and per tap pair does 2 weight loads (sign-extended
int8→int16), one broadcast per row and 2·rows `vpmaddwd` + `vpaddd`. `vpmaddwd` computes
x0·w0 + x1·w1 of int16 pairs into int32 without saturation (|pair| ≤ 2·255·128), and the
int32 adds wrap like the reference's, so any summation order gives the same int32 (sums are
taken mod 2^32 either way). The epilogue (`requant.epilogue_kind` of the plan's `q`)
requantizes in registers (one 16-lane pass per row with AVX-512) and stores int8 (MBQM,
XNNPACK fp32) or stores the int32 accumulators (FC's double epilogue and hybrid FC's float one
then run over them). The accumulation is `tile_sums`, which hybrid CONV_2D's float-epilogue
tiles (`hybrid_conv.py`) share.

On VNNI hosts the requantizing plans take the quad tiles instead (`_tile_q`: `tile_sums_u8`,
`vpdpbusd`, 4 taps per int32 lane, twice `vpmaddwd`'s work per instruction): A holds the
input's own int8 bytes (taps outside the image: in_zp), each broadcast flipped to x + 128, so
the tiles sum Σ (x + 128)·w over every tap, and the plan's bias carries -(in_zp + 128)·Σw
(`_conv_plan`), which leaves the reference's int32 sum mod 2^32. Where a block's 6 pixels
lie in one output row inside the image and a kernel row is a multiple of 4 bytes, the quad
tiles read A straight from the input, one kernel row at a time (`pack.kernel_rows_at`,
`_tile_rows_q`): no im2col copy. On AVX512-VNNI hosts a block's panels go two at a time where
they can (`_tile_wide_q`, `_tile_wide_rows_q`: 32 channels in 512-bit `vpdpbusd`, each 4-byte
broadcast feeding twice the channels; the quad tiles are bound by their broadcasts).

Threads: `_gemm_split` runs the serial `nogil` kernel `_gemm_blocks` over row blocks (or weight
panels when there are fewer row blocks than threads) in a `prange`, as many parts as
`threads.split_cores` grants.
"""

from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic, overload
from qengine.kernels import threads as pool
from qengine.kernels.conv import conv2d_int8
from qengine.kernels.emit import (
    HAS_AVX512,
    HAS_VNNI,
    I8,
    I32,
    V8I32,
    V16I8,
    V16I16,
    V16I32,
    accumulate,
    addr,
    const64,
    dpbusd,
    join_halves,
    load_vec,
    loop,
    madd,
    splat,
)
from qengine.kernels.fully_connected import fully_connected_int8
from qengine.kernels.jit import inline_kernel, kernel, prange
from qengine.kernels.pack import (
    LANES,
    ROWS,
    PackedConvWeights,
    block_for,
    block_rows,
    block_source,
    kernel_row_layout,
    kernel_rows_at,
    pack_block,
    pack_conv_weights_u8,
    reads_kernel_rows,
    rows_in_place,
    two_panels_fit,
)
from qengine.kernels.requant import (
    PARAM_ROWS,
    RAW,
    HybridEpilogue,
    apply_hybrid,
    epilogue_kind,
    epilogue_vec,
    fc_requant_rows,
    fp32_bits,
    requant_params,
)

__all__ = [
    "ConvInt8Plan",
    "conv2d_int8_acc_fast",
    "conv2d_int8_fast",
    "fc_accumulator_plan",
    "fully_connected_hybrid_fast",
    "fully_connected_int8_acc_fast",
    "fully_connected_int8_fast",
    "kernel_threads",
    "plan_conv2d_int8",
    "plan_conv2d_int8_fp32",
    "run_conv2d_int8",
    "threads_or_default",
]

FC_GEOMETRY = (1, 1, 1, 1, 0, 0, 1, 1)  # FULLY_CONNECTED: a 1x1 convolution of 1x1 images


# --- the micro-kernel ------------------------------------------------------------------------


def tile_sums(builder, a_ptr, a_row, b_ptr, k2, rows, halves=2):
    """Emit the micro-kernel's accumulation: Σ_i A[r, 2i:2i+2] · panel[i] for r < rows, as
    int32x8 values, sums[halves·r + h] = channels 8h..8h+7. a_ptr, b_ptr: int8 pointers to A
    (int16 rows `a_row` bytes apart) and the panel (int8 [k2, 16, 2]); halves = 1 takes the
    panel's first 8 channels only (the hybrid GEMM's narrow tile)."""

    def step(i, accs):
        weights = []  # channels 0-7 (and 8-15) of the panel, taps 2i and 2i+1 of each
        for half in range(halves):
            at = builder.add(builder.mul(i, const64(32)), const64(16 * half))
            weights.append(builder.sext(load_vec(builder, b_ptr, at, V16I8), V16I16))
        new = []
        for r in range(rows):  # broadcast row r's pair (x[2i], x[2i+1]) to all 8 int32 lanes
            offset = builder.add(builder.mul(const64(r), a_row), builder.mul(i, const64(4)))
            ptr = builder.bitcast(builder.gep(a_ptr, [offset]), I32.as_pointer())
            xs = builder.bitcast(splat(builder, builder.load(ptr, align=4)), V16I16)
            for h, w in enumerate(weights):
                new.append(builder.add(accs[halves * r + h], madd(builder, xs, w)))
        return new

    return accumulate(builder, k2, halves * rows, step, f"tile{halves}")


def tile_sums_u8(builder, a_ptr, a_row, b_ptr, k4, rows, halves=2, flip=False, segments=None,
                 seg_bytes=None):  # fmt: skip
    """`tile_sums` for VNNI hosts: Σ_i A[r, 4i:4i+4] · panel[i] by `vpdpbusd`, A uint8 rows
    `a_row` bytes apart, the panel int8 [k4, 16, 4] (`pack.pack_conv_weights_u8`); per group
    of 4 taps, 2 weight loads, one 4-byte broadcast per row and 2·rows `vpdpbusd`. flip: A
    holds int8 bytes, each taken as x + 128 (x ^ 0x80 on the broadcast, one vpxor per row and
    step: the broadcast stays a load; a scalar xor first cost ~5 % more). segments (LLVM
    values, with seg_bytes): A is that many pieces of k4 quads each, piece s at a_ptr +
    s·seg_bytes, taking the panel's groups s·k4 .. s·k4 + k4 - 1 (a kernel row at a time,
    read straight from the input: `_gemm_blocks`)."""
    v32i8 = ir.VectorType(I8, 32)
    flips = splat(builder, 0x80808080 - 2**32)

    def steps_from(a_first, b_first):
        def step(i, accs):
            at = builder.mul(builder.add(b_first, i), const64(64))
            weights = [builder.bitcast(load_vec(builder, b_ptr, builder.add(
                at, const64(32 * half)), v32i8), V8I32) for half in range(halves)]  # fmt: skip
            new = []
            for r in range(rows):
                offset = builder.add(builder.mul(const64(r), a_row), builder.mul(i, const64(4)))
                ptr = builder.bitcast(builder.gep(a_first, [offset]), I32.as_pointer())
                xs = splat(builder, builder.load(ptr, align=1))
                if flip:
                    xs = builder.xor(xs, flips)
                for h, w in enumerate(weights):
                    new.append(dpbusd(builder, accs[halves * r + h], xs, w))
            return new

        return step

    name = f"tile_u8_{halves}"
    if segments is None:
        return accumulate(builder, k4, halves * rows, steps_from(a_ptr, const64(0)), name)

    def segment(s, accs):
        a_first = builder.gep(a_ptr, [builder.mul(s, seg_bytes)])
        return loop(builder, k4, accs, steps_from(a_first, builder.mul(s, k4)), name + "_row")

    return loop(builder, segments, [ir.Constant(V8I32, None)] * (halves * rows), segment,
                name + "_rows")  # fmt: skip


def tile_sums_wide(builder, a_ptr, a_row, b_ptr, k4, rows, segments=None, seg_bytes=None,
                   flip=True):  # fmt: skip
    """`tile_sums_u8` over two consecutive quad panels at once in 512-bit vectors
    (AVX512-VNNI): sums[2·r + p] = Σ_i A'[r, 4i:4i+4] · panel p[i], 16 int32 lanes,
    the channels of panel p. Per group of 4 taps, 2 weight loads, one broadcast per row and
    2·rows `vpdpbusd`: each broadcast feeds 32 channels, twice `tile_sums_u8`'s, which is
    bound by its broadcasts (one 512-bit register of 16 channels a row ran no faster than
    two 256-bit ones). The flip is a scalar xor before the broadcast: a vector xor of a
    512-bit broadcast made LLVM 22 hang in code generation. A' is A + 128 (flip: A holds int8
    bytes), or A itself (already uint8); segments, seg_bytes: A in pieces of k4 quads, as
    `tile_sums_u8`'s."""
    v64i8 = ir.VectorType(I8, 64)
    groups = k4 if segments is None else builder.mul(segments, k4)  # of a whole panel
    panel_bytes = builder.mul(groups, const64(64))
    flips = ir.Constant(I32, 0x80808080 - 2**32)

    def steps_from(a_first, b_first):
        def step(i, accs):
            at = builder.mul(builder.add(b_first, i), const64(64))
            weights = [builder.bitcast(load_vec(builder, b_ptr, offset, v64i8), V16I32)
                       for offset in (at, builder.add(at, panel_bytes))]
            new = []
            for r in range(rows):
                offset = builder.add(builder.mul(const64(r), a_row), builder.mul(i, const64(4)))
                ptr = builder.bitcast(builder.gep(a_first, [offset]), I32.as_pointer())
                x4 = builder.load(ptr, align=1)
                xs = splat(builder, builder.xor(x4, flips) if flip else x4, V16I32)
                new.extend(dpbusd(builder, accs[2 * r + p], xs, w)
                           for p, w in enumerate(weights))
            return new

        return step

    zeros = [ir.Constant(V16I32, None)] * (2 * rows)
    if segments is None:
        return loop(builder, k4, zeros, steps_from(a_ptr, const64(0)), "tile_u8_wide")

    def segment(s, accs):
        a_first = builder.gep(a_ptr, [builder.mul(s, seg_bytes)])
        return loop(builder, k4, accs, steps_from(a_first, builder.mul(s, k4)),
                    "tile_u8_wide_row")

    return loop(builder, segments, zeros, segment, "tile_u8_wide_rows")


def _wide_codegen(context, builder, signature, args, rows, kind, segmented):
    """`_tile_codegen` of the wide tile: 32 channels, panels p = 0, 1 of `tile_sums_wide`,
    each through the 16-lane epilogue with its own parameters (q rows 64 int32 apart);
    segmented: args[10], args[11] are A's pieces, as `_tile_codegen`'s."""
    a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp, act_min, act_max = args[:10]
    a_ptr = builder.inttoptr(a_addr, I8.as_pointer())
    b_ptr = builder.inttoptr(b_addr, I8.as_pointer())
    q_ptr = builder.inttoptr(q_addr, I32.as_pointer())
    out_ptr = builder.inttoptr(out_addr, I8.as_pointer())
    pieces = (args[10], args[11]) if segmented else (None, None)
    sums = tile_sums_wide(builder, a_ptr, a_row, b_ptr, steps, rows, *pieces)
    params = [[load_vec(builder, q_ptr, const64(4 * LANES * p + LANES * row), V16I32, align=4)
               for row in range(PARAM_ROWS[kind])] for p in range(2)]  # fmt: skip
    out_bytes = ir.VectorType(I8, LANES)
    for r in range(rows):
        row_ptr = builder.gep(out_ptr, [builder.mul(const64(r), out_row)])
        for p in range(2):
            out = epilogue_vec(builder, kind, sums[2 * r + p], params[p], out_zp, act_min,
                               act_max)  # fmt: skip
            ptr = builder.bitcast(builder.gep(row_ptr, [const64(LANES * p)]),
                                  out_bytes.as_pointer())  # fmt: skip
            builder.store(builder.trunc(out, out_bytes), ptr, align=1)
    return context.get_dummy_value()


def _tile_codegen(context, builder, signature, args, rows, kind, quads, halves, segmented):
    a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp, act_min, act_max = args[:10]
    a_ptr = builder.inttoptr(a_addr, I8.as_pointer())
    b_ptr = builder.inttoptr(b_addr, I8.as_pointer())
    q_ptr = builder.inttoptr(q_addr, I32.as_pointer())
    out_ptr = builder.inttoptr(out_addr, I8.as_pointer())
    if segmented:  # kernel rows read from the input: `steps` quads each, args[10] of them
        sums = tile_sums_u8(builder, a_ptr, a_row, b_ptr, steps, rows, halves, flip=True,
                            segments=args[10], seg_bytes=args[11])  # fmt: skip
    elif quads:
        sums = tile_sums_u8(builder, a_ptr, a_row, b_ptr, steps, rows, halves, flip=True)
    else:
        sums = tile_sums(builder, a_ptr, a_row, b_ptr, steps, rows, halves)
    # q [4, 16]: the panel's per-channel epilogue parameters, one int32 row each
    params = [[load_vec(builder, q_ptr, const64(16 * row + 8 * h), V8I32, align=4)
               for row in range(PARAM_ROWS[kind])] for h in range(halves)]  # fmt: skip
    joined = lambda lo, hi: join_halves(builder, lo, hi)
    out_bytes = ir.VectorType(I8, 8 * halves)
    for r in range(rows):
        row_ptr = builder.gep(out_ptr, [builder.mul(const64(r), out_row)])
        row_sums = sums[halves * r : halves * (r + 1)]
        if kind == RAW:  # 8·halves int32 accumulators
            for h, acc in enumerate(row_sums):
                ptr = builder.bitcast(builder.gep(row_ptr, [const64(32 * h)]),
                                      V8I32.as_pointer())  # fmt: skip
                builder.store(acc, ptr, align=4)
            continue
        if HAS_AVX512 and halves == 2:  # 16 channels in one 512-bit epilogue: half the work
            out = epilogue_vec(builder, kind, joined(*row_sums),
                               [joined(lo, hi) for lo, hi in zip(*params)], out_zp, act_min,
                               act_max)  # fmt: skip
        else:
            outs = [epilogue_vec(builder, kind, acc, params[h], out_zp, act_min, act_max)
                    for h, acc in enumerate(row_sums)]  # fmt: skip
            out = joined(*outs) if halves == 2 else outs[0]
        builder.store(builder.trunc(out, out_bytes),
                      builder.bitcast(row_ptr, out_bytes.as_pointer()), align=1)  # fmt: skip
    return context.get_dummy_value()


def _tile_intrinsic(emit, segmented):
    """The intrinsic of a tile whose code `emit(context, builder, signature, args, kind)`
    writes, `kind` the epilogue of its plan's `q`: arguments (a_addr, a_row, b_addr, steps,
    out_addr, out_row, q_addr, out_zp, act_min, act_max[, segments, seg_bytes], q)."""

    def signature_of(q, count):
        kind = epilogue_kind(q)

        def codegen(context, builder, signature, args):
            return emit(context, builder, signature, args, kind)

        return types.void(*[types.int64] * count, q), codegen

    if segmented:
        @intrinsic
        def tile_rows(typingctx, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr,
                      out_zp, act_min, act_max, segments, seg_bytes, q):  # fmt: skip
            return signature_of(q, 12)

        return tile_rows

    @intrinsic
    def tile(typingctx, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp,
             act_min, act_max, q):  # fmt: skip
        return signature_of(q, 10)

    return tile


def _make_wide_tile(rows, segmented=False):
    """The wide quad tile, two consecutive panels (`_wide_codegen`), arguments as `_make_tile`'s
    (b_addr: the first panel; q_addr: its parameters, the second panel's follow)."""
    return _tile_intrinsic(lambda context, builder, signature, args, kind: _wide_codegen(
        context, builder, signature, args, rows, kind, segmented), segmented)


def _make_tile(rows, quads=False, halves=2, segmented=False):
    """out[r, 0:8·halves] = epilogue(Σ_i A[r, i] · panel[i]) for r < rows (addresses,
    strides in bytes), i over `steps` groups of taps.

    A: int16 pairs x - zp, rows `a_row` bytes apart, and panel int8 [steps, 16, 2]; or
    (quads) int8 taps x, each taken as x + 128, and panel int8 [steps, 16, 4]. q_addr: [4, 16]
    of the plan's array `q`, whose dtype picks the epilogue (`requant.epilogue_kind`); out:
    rows `out_row` bytes apart, of int8 (requantized) or int32 (raw accumulators). segmented
    (quads): two more arguments before q, A being `segments` pieces of `steps` groups,
    `seg_bytes` apart (`tile_sums_u8`).
    """
    return _tile_intrinsic(lambda context, builder, signature, args, kind: _tile_codegen(
        context, builder, signature, args, rows, kind, quads, halves, segmented), segmented)


# Each unrolled tile costs seconds of LLVM optimization on a cold cache, so there are few: three
# per family, and two more for the quads' kernel rows; a kernel compiles one family only
# (`_family_tile`, `_rows_tile`).
_tile = _make_tile(ROWS)
_tile1 = _make_tile(1)  # a last block of one pixel (7x7 = 8·6 + 1), and GEMV
_tile8 = _make_tile(ROWS, halves=1)  # a last panel of at most 8 channels (24 = 16 + 8 is common)
_tile_q = _make_tile(ROWS, quads=True)  # VNNI hosts: x viewed as uint8 picks these
_tile1_q = _make_tile(1, quads=True)
_tile8_q = _make_tile(ROWS, quads=True, halves=1)
_tile_wide_q = _make_wide_tile(ROWS)  # AVX512-VNNI hosts: two whole panels at a time
_tile_wide_rows_q = _make_wide_tile(ROWS, segmented=True)
_tile_rows_q = _make_tile(ROWS, quads=True, segmented=True)  # A straight from the input
_tile8_rows_q = _make_tile(ROWS, quads=True, halves=1, segmented=True)


def _family_tile(x, shape, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp,
                 act_min, act_max, q):  # fmt: skip
    """The tile of x's family, by shape: 0 ROWS rows × 16 channels, 1 one row × 16, 2 ROWS
    rows × 8. Families: tap pairs (x int8) or quads (x uint8, the int8 input's bytes, VNNI)."""


@overload(_family_tile)
def _family_tile_impl(x, shape, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr,
                      out_zp, act_min, act_max, q):  # fmt: skip
    quads = x.dtype == types.uint8
    tile, tile1, tile8 = (_tile_q, _tile1_q, _tile8_q) if quads else (_tile, _tile1, _tile8)

    def impl(x, shape, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp,
             act_min, act_max, q):  # fmt: skip
        if shape == 0:
            tile(a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp, act_min,
                 act_max, q)  # fmt: skip
        elif shape == 1:
            tile1(a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp, act_min,
                  act_max, q)  # fmt: skip
        else:
            tile8(a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp, act_min,
                  act_max, q)  # fmt: skip

    return impl


def _rows_tile(x, narrow, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp,
               act_min, act_max, segments, seg_bytes, q):  # fmt: skip
    """The segmented quad tile (`_tile_rows_q`, or `_tile8_rows_q` when narrow) for x uint8;
    for x int8 nothing (the pairs never read kernel rows in place: `pack.reads_kernel_rows`)."""


@overload(_rows_tile)
def _rows_tile_impl(x, narrow, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr,
                    out_zp, act_min, act_max, segments, seg_bytes, q):  # fmt: skip
    if x.dtype != types.uint8:
        return lambda x, narrow, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, \
            out_zp, act_min, act_max, segments, seg_bytes, q: None  # fmt: skip

    def impl(x, narrow, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp,
             act_min, act_max, segments, seg_bytes, q):  # fmt: skip
        if narrow:
            _tile8_rows_q(a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp,
                          act_min, act_max, segments, seg_bytes, q)  # fmt: skip
        else:
            _tile_rows_q(a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp,
                         act_min, act_max, segments, seg_bytes, q)  # fmt: skip

    return impl


WIDE_TILES = HAS_AVX512 and HAS_VNNI  # the quad family's 32-channel tile: 512-bit `vpdpbusd`


def _takes_wide(x, q):
    """Whether `_gemm_blocks` runs two whole panels at once for this x and plan (a constant
    at compile time): quads (x uint8) on an AVX512-VNNI host, requantizing plans."""


def _wide_for(x, q) -> bool:
    """At typing: whether x's and q's Numba types take the wide tile."""
    return WIDE_TILES and x.dtype == types.uint8 and epilogue_kind(q) != RAW


@overload(_takes_wide)
def _takes_wide_impl(x, q):
    takes = _wide_for(x, q)
    return lambda x, q: takes


def _wide_tile(x, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp, act_min,
               act_max, segments, seg_bytes, q):  # fmt: skip
    """`_tile_wide_q`, or with segments > 0 `_tile_wide_rows_q` (A read as that many kernel
    rows), where `_takes_wide(x, q)`; elsewhere never called (compiles to nothing)."""


@overload(_wide_tile)
def _wide_tile_impl(x, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp, act_min,
                    act_max, segments, seg_bytes, q):  # fmt: skip
    if not _wide_for(x, q):
        return lambda x, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp, \
            act_min, act_max, segments, seg_bytes, q: None  # fmt: skip

    def impl(x, a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp, act_min,
             act_max, segments, seg_bytes, q):  # fmt: skip
        if segments > 0:
            _tile_wide_rows_q(a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp,
                              act_min, act_max, segments, seg_bytes, q)  # fmt: skip
        else:
            _tile_wide_q(a_addr, a_row, b_addr, steps, out_addr, out_row, q_addr, out_zp,
                         act_min, act_max, q)  # fmt: skip

    return impl


@inline_kernel
def _copy_tile(tail, out, p0, oc0, rows, width):
    """out[p0 : p0+rows, oc0 : oc0+width] = tail[:rows, :width], element by element: Numba's
    array-to-slice assignment compiles its shape-mismatch message (str/join of the shapes),
    about 4 s of a first int8 run's compile time, for a copy whose shapes always agree."""
    for r in range(rows):
        for j in range(width):
            out[p0 + r, oc0 + j] = tail[r, j]


@kernel
def _gemm_blocks(x, panels, q, ints, out, blk0, blk1, pan0, pan1):
    """Row blocks blk0..blk1-1 × weight panels pan0..pan1-1 of out [P, Co] (int8, or int32 for
    a raw `q`); x int8 with panels of tap pairs, or x uint8 (the int8 input's bytes) with
    panels of quads (VNNI, `plan_conv2d_int8`).

    Tiles store 16 channels straight into `out`, or 8 for a last panel of at most 8 channels
    in a block of ROWS pixels (the narrow tile, half the work). A partial last panel stores
    all its tile's lanes too, spilling into the next pixel's first channels: panels run last
    to first and rows in order, so panel 0 or a later row of this call rewrites them. Where
    the spill would leave this call's pixels (or this call lacks panel 0), for fewer channels
    than half the tile's lanes (a 1-channel conv ran 2.4x slower with 15 overlapping stores
    per row), and for a last block of 2-5 pixels (the 6-row tile), the tile goes through a
    [ROWS, 16] scratch tile.
    """
    out_c, pixels, size = out.shape[1], out.shape[0], out.itemsize
    end = min(blk1 * ROWS, pixels) * out_c  # this call writes out.flat[blk0·ROWS·Co : end]
    steps, taps = panels.shape[1], panels.shape[3]
    kp = taps * steps
    zp = ints[3]  # pairs: A = x - zp; quads: the byte of taps outside the image
    out_zp, act_min, act_max = ints[4], ints[5], ints[6]
    a = block_for(x, ROWS * kp + 16)  # + room for `widen`'s last 16
    a_next = block_for(x, ROWS * kp + 16)  # (packed while the tiles read `a`: `block_rows`)
    xf = x.reshape(x.size)
    tail = np.empty((ROWS, LANES), out.dtype)
    pa, qa, oa, ta = addr(panels), addr(q), addr(out), addr(tail)
    sources = (block_source(x, xf, a, ints), block_source(x, xf, a_next, ints))
    in_place = rows_in_place(x, a, kp, ints)
    panel_bytes, q_bytes = steps * LANES * taps, 4 * LANES * q.itemsize
    # a conv whose blocks may read kernel rows from x packs only the others, and none ahead
    # (packing ahead would copy the blocks read in place too)
    rows_read = reads_kernel_rows(x, a, ints, kp, in_place)
    pixel_bytes, row_steps, kernel_rows, seg_bytes = kernel_row_layout(x, ints)
    wide = _takes_wide(x, q)
    for blk in range(blk0, blk1):
        p0 = blk * ROWS
        rows = min(ROWS, pixels - p0)
        first_tap = kernel_rows_at(x, ints, p0, rows) if rows_read else -1
        if first_tap >= 0:
            aa = addr(xf) + first_tap
        elif rows_read:
            pack_block(sources[0], kp, p0, rows, zp)
            aa = addr(a)
        else:
            aa = block_rows(sources, in_place, kp, blk0, blk, blk1, pixels, zp, addr(xf))
        j = pan1 - 1
        while j >= pan0:
            oc0 = j * LANES
            if wide and two_panels_fit(j, pan0, rows, out_c, p0, end, pan0 == 0):
                in_x = first_tap >= 0  # kernel rows read from x, or the packed block
                _wide_tile(x, aa, pixel_bytes if in_x else kp * a.itemsize,
                           pa + (j - 1) * panel_bytes, row_steps if in_x else steps,
                           oa + (p0 * out_c + oc0 - LANES) * size, out_c * size,
                           qa + (j - 1) * q_bytes, out_zp, act_min, act_max,
                           kernel_rows if in_x else 0, seg_bytes, q)  # fmt: skip
                j -= 2
                continue
            width = min(LANES, out_c - oc0)
            narrow = rows == ROWS and 2 * width <= LANES  # the 8-channel tile
            lanes = LANES // 2 if narrow else LANES
            spill_ok = (2 * width >= lanes and pan0 == 0  # (many overlapping stores stall)
                        and (p0 + rows - 1) * out_c + oc0 + lanes <= end)  # fmt: skip
            direct = (rows == ROWS or rows == 1) and (width == lanes or spill_ok)
            dst = oa + (p0 * out_c + oc0) * size if direct else ta
            stride = out_c * size if direct else LANES * size
            if first_tap >= 0:
                _rows_tile(x, narrow, aa, pixel_bytes, pa + j * panel_bytes, row_steps, dst,
                           stride, qa + j * q_bytes, out_zp, act_min, act_max, kernel_rows,
                           seg_bytes, q)  # fmt: skip
            else:
                shape = 2 if narrow else (1 if rows == 1 else 0)
                _family_tile(x, shape, aa, kp * a.itemsize, pa + j * panel_bytes, steps, dst,
                             stride, qa + j * q_bytes, out_zp, act_min, act_max, q)  # fmt: skip
            if not direct:
                _copy_tile(tail, out, p0, oc0, rows, width)
            j -= 1


def kernel_threads(n) -> int:
    """The thread count to pass to `run_*_int8` for an interpreter running on n threads."""
    return max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))


def threads_or_default(threads):
    """Numba's current thread count unless given (asking costs ~2 µs, a tenth of a small layer)."""
    return numba.get_num_threads() if threads is None else threads


@kernel(parallel=True)
def _gemm_split(x, panels, q, ints, out, blocks, n_panels, by_panels, parts):
    """`_gemm_blocks` over all of out in `parts` parts at once (threads.split_grid)."""
    for i in prange(parts):
        b0, b1, p0, p1 = pool.grid_part(blocks, n_panels, by_panels, parts, i)
        _gemm_blocks(x, panels, q, ints, out, b0, b1, p0, p1)


def _gemm(x, panels, q, ints, out, threads):
    """Fill out [P, Co] from x [N, H, W, Ci] int8 on `threads` threads: split over row blocks,
    or over weight panels when there are fewer row blocks than threads."""
    pixels, n_panels = out.shape[0], panels.shape[0]
    flops = 2 * pixels * panels.shape[1] * panels.shape[3] * n_panels * LANES
    pool.split_grid(_gemm_blocks, _gemm_split, (x, panels, q, ints, out), -(-pixels // ROWS),
                    n_panels, threads, flops)


# --- plans -----------------------------------------------------------------------------------


class ConvInt8Plan(NamedTuple):
    """What the GEMM needs besides the input, made once by `plan_conv2d_int8` (or
    `plan_conv2d_int8_fp32`, or `_raw_plan`)."""

    panels: np.ndarray  # int8 [ceil(Co/16), k2, 16, 2]
    q: np.ndarray  # [ceil(Co/16), 4, 16]: int32 bias, M, left, right (0 past Co), or uint32
    # bias and float32 scale bits, or int64 (raw accumulators): the dtype picks the epilogue
    ints: np.ndarray  # int64: out_c, k_h, k_w, in_zp, out_zp, act_min, act_max, geometry
    in_c: int
    out_hwc: tuple  # (out_h, out_w, out_c)


def _conv_plan(packed: PackedConvWeights, q_rows, dtype, in_zp, out_zp, act_min, act_max,
               geometry, vnni=False) -> ConvInt8Plan:  # fmt: skip
    """q_rows: up to 4 [Co] arrays, the tile's per-channel parameters (0 past Co), as `dtype`,
    the first the int32 bias. vnni: panels of quads, whose tiles sum Σ (x + 128)·w over every
    tap, those outside the image holding in_zp; that is the reference's Σ (x - in_zp)·w over
    the image's taps plus (in_zp + 128)·Σw, which the bias takes off (mod 2^32, as the int32
    sums wrap)."""
    panels = packed.panels
    if vnni:
        panels, sum_w = pack_conv_weights_u8(packed.w)
        bias = q_rows[0].astype(np.int64) - (in_zp + 128) * sum_w
        q_rows = [(bias & 0xFFFFFFFF).astype(np.uint32).view(dtype), *q_rows[1:]]
    n_panels = panels.shape[0]
    q = np.zeros((n_panels * LANES, 4), dtype)
    if q_rows:
        q[: packed.out_c, : len(q_rows)] = np.stack(q_rows, axis=1)
    q = np.ascontiguousarray(q.reshape(n_panels, LANES, 4).transpose(0, 2, 1))
    ints = np.array([packed.out_c, packed.k_h, packed.k_w, in_zp, out_zp, act_min, act_max,
                     *geometry], np.int64)  # fmt: skip
    out_h, out_w = geometry[-2:]
    return ConvInt8Plan(panels, q, ints, packed.in_c, (out_h, out_w, packed.out_c))


def checked_vnni(vnni: bool) -> bool:
    """vnni, or ValueError when it asks for `vpdpbusd` tiles on a CPU without them."""
    if vnni and not HAS_VNNI:  # LLVM would fail to compile `vpdpbusd` for this CPU
        raise ValueError("vnni tiles need a CPU with AVX-VNNI or AVX512-VNNI")
    return vnni


def plan_conv2d_int8(packed: PackedConvWeights, bias, in_zp, mult, shift, out_zp, act_min,
                     act_max, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h,
                     out_w, vnni=HAS_VNNI):  # fmt: skip
    """A `ConvInt8Plan` with the reference's MBQM, or None for multipliers QuantizeMultiplier
    never makes: a right shift > 31 with M ≠ 0, or M = INT32_MIN (SRDHM's saturating case,
    left out of the tiles). vnni: the `vpdpbusd` tiles (default: when the host has them)."""
    params = requant_params(bias, mult, shift)
    if params is None or np.any(params[1] == -(2**31)):
        return None
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    return _conv_plan(packed, params, np.int32, in_zp, out_zp, act_min, act_max, geometry,
                      checked_vnni(vnni))  # fmt: skip


def plan_conv2d_int8_fp32(packed: PackedConvWeights, bias, in_zp, scale, out_zp, act_min,
                          act_max, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h,
                          out_w, vnni=HAS_VNNI) -> ConvInt8Plan:  # fmt: skip
    """A `ConvInt8Plan` with XNNPACK's float32 requantization (`xnnpack.requantize_fp32`,
    scale [Co] float32) instead of MBQM; `run_conv2d_int8` runs it. The accumulators are the
    same exact int32 sums, so the output is that of `xnnpack.requantize_fp32` applied to
    `hybrid.conv_accumulators` (zero point in_zp) plus the bias."""
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    q_rows = fp32_bits(bias, scale)
    return _conv_plan(packed, q_rows, np.uint32, in_zp, out_zp, act_min, act_max, geometry,
                      checked_vnni(vnni))  # fmt: skip


_RAW_Q = np.zeros((1, 4, LANES), np.int64)  # a raw tile reads no parameters: one for all


def _raw_plan(packed: PackedConvWeights, in_zp, geometry) -> ConvInt8Plan:
    """A plan whose GEMM stores the int32 accumulators Σ w·(x - in_zp); made per call (a few
    µs: a batch-1 FULLY_CONNECTED takes ~20 µs)."""
    ints = np.array([packed.out_c, packed.k_h, packed.k_w, in_zp, 0, 0, 0, *geometry], np.int64)
    out_h, out_w = geometry[-2:]
    return ConvInt8Plan(packed.panels, _RAW_Q, ints, packed.in_c, (out_h, out_w, packed.out_c))


def run_conv2d_int8(plan: ConvInt8Plan, x, threads=None) -> np.ndarray:
    """Run a `ConvInt8Plan` on x [N, H, W, Ci] int8 → [N, out_h, out_w, Co] int8 (int32 for a
    raw plan) on `threads` threads (default: numba.get_num_threads())."""
    x = np.ascontiguousarray(x, np.int8)
    assert x.shape[3] == plan.in_c, "input channels differ from the filter's"
    out_h, out_w, out_c = plan.out_hwc
    dtype = np.int32 if plan.q.dtype == np.int64 else np.int8
    out = np.empty((x.shape[0] * out_h * out_w, out_c), dtype)
    quads = plan.panels.shape[3] == 4  # x's bytes as uint8 pick those tiles
    _gemm(x.view(np.uint8) if quads else x, plan.panels, plan.q, plan.ints, out,
          threads_or_default(threads))  # fmt: skip
    return out.reshape(x.shape[0], out_h, out_w, out_c)


# --- CONV_2D ---------------------------------------------------------------------------------


def conv2d_int8_fast(x, packed: PackedConvWeights, bias, in_zp, mult, shift, out_zp, act_min,
                     act_max, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h,
                     out_w, vnni=HAS_VNNI):  # fmt: skip
    """Bit-exact fast twin of `conv.conv2d_int8` (TFLite reference ConvPerChannel).

    x [N, H, W, Ci] int8; packed = pack_conv_weights(w) for w [Co, KH, KW, Ci/groups];
    bias [Co] int32 (zeros if absent); mult/shift [Co] int32 → [N, out_h, out_w, Co] int8.
    Grouped convolutions (Ci ≠ w.shape[3]) and multipliers QuantizeMultiplier never makes
    (see `plan_conv2d_int8`) run the reference kernel.
    """
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    plan = None
    if x.shape[3] == packed.in_c:
        plan = plan_conv2d_int8(packed, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                                *geometry, vnni=vnni)  # fmt: skip
    if plan is None:
        return conv2d_int8(x, packed.w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                           *geometry)  # fmt: skip
    return run_conv2d_int8(plan, x)


# --- FULLY_CONNECTED -------------------------------------------------------------------------


def fully_connected_int8_fast(x, packed: PackedConvWeights, bias, in_zp, w_zp, eff_scale, out_zp,
                              act_min, act_max, threads=None, plan=None):  # fmt: skip
    """Bit-exact fast twin of `fully_connected.fully_connected_int8` (float requantization).

    x [B, D] int8; packed = pack_fc_weights(w) for w [O, D]; bias [O] int32 (zeros if absent);
    eff_scale [O] float64 = double(s_in)·double(s_w[o])/double(s_out) → [B, O] int8: the raw
    GEMM, then `requant.fc_requant_rows`. A nonzero (legacy per-tensor) weight zero point runs
    the reference kernel. `plan`: `fc_accumulator_plan(packed, in_zp)`, made once.
    """
    if w_zp != 0:
        w = packed.w.reshape(packed.out_c, packed.in_c)
        return fully_connected_int8(x, w, bias, in_zp, w_zp, eff_scale, out_zp, act_min, act_max)
    acc = _fc_accumulators(x, packed, in_zp, threads, plan)
    out = np.empty(acc.shape, np.int8)
    bias, eff_scale = np.ascontiguousarray(bias, np.int32), np.asarray(eff_scale, np.float64)
    fc_requant_rows(acc, out, bias, np.ascontiguousarray(eff_scale), out_zp, act_min, act_max)
    return out


def _fc_accumulators(x, packed, in_zp, threads, plan=None):
    """int32 [B, O] = Σ_d w[o, d] · (x[b, d] - in_zp); `plan`: `fc_accumulator_plan(packed,
    in_zp)`, made once by a caller that runs the same weights again."""
    batches, depth = x.shape
    x4 = np.ascontiguousarray(x, np.int8).reshape(batches, 1, 1, depth)
    acc = run_conv2d_int8(plan or fc_accumulator_plan(packed, in_zp), x4, threads)
    return acc.reshape(batches, packed.out_c)


def fc_accumulator_plan(packed: PackedConvWeights, in_zp: int = 0) -> ConvInt8Plan:
    """The raw plan of a FULLY_CONNECTED's accumulators (see `_fc_accumulators`)."""
    return _raw_plan(packed, in_zp, FC_GEOMETRY)


# --- raw accumulators and hybrid FULLY_CONNECTED (hybrid CONV_2D: hybrid_conv.py) ------------


def conv2d_int8_acc_fast(x, packed: PackedConvWeights, zps, stride_h, stride_w, dil_h, dil_w,
                         pad_top, pad_left, out_h, out_w, threads=None):  # fmt: skip
    """Bit-exact fast twin of `hybrid.conv_accumulators` for ungrouped filters.

    x [N, H, W, Ci] int8; packed = pack_conv_weights(w); zps [N] per-image zero points →
    int32 [N, out_h, out_w, Co] = Σ w · (x - zps[b]), taps outside the image skipped.
    """
    assert x.shape[3] == packed.in_c, "grouped convolutions: use hybrid.conv_accumulators"
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    x = np.ascontiguousarray(x, np.int8)
    images = [run_conv2d_int8(_raw_plan(packed, int(zps[b]), geometry), x[b : b + 1], threads)
              for b in range(x.shape[0])]  # one plan per image: its own zero point
    return np.concatenate(images)


def fully_connected_int8_acc_fast(x, packed: PackedConvWeights, threads=None):
    """Bit-exact fast twin of `hybrid.matmul_accumulators`: x [B, D] int8 → int32 [B, O]."""
    return _fc_accumulators(x, packed, 0, threads)


def fully_connected_hybrid_fast(x, packed: PackedConvWeights, epilogue: HybridEpilogue,
                                threads=None, plan=None):  # fmt: skip
    """`HybridEpilogue` (one image per batch row) applied to `fully_connected_int8_acc_fast`
    → float32 [B, O]. TFLite subtracts zp·rowsum afterwards (the epilogue's zp_sums). `plan`:
    `fc_accumulator_plan(packed)`, made once."""
    acc = _fc_accumulators(x, packed, 0, threads, plan)
    return apply_hybrid(acc, epilogue, threads_or_default(threads))
