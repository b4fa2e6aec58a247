"""Operand packing for the int8 GEMM (`gemm_int8`) and depthwise (`depthwise_int8`) kernels.

* Weights, once at prepare time: a CONV_2D / FULLY_CONNECTED filter becomes int8 panels of 16
  output channels, [panel, K/2, 16, 2], K = KH·KW·Cin: for each pair of taps (2i, 2i+1) the 16
  channels' two weights lie side by side, the operand layout of `vpmaddwd`
  (`pack_conv_weights`, `pack_fc_weights`). A depthwise filter becomes int16 [KH, KW, Co]
  (`pack_depthwise_weights`) and, for the 16-channel tile, tap pairs interleaved per channel
  (`interleave_taps`).
* Activations, per GEMM row block: im2col of 6 output pixels as int16 `x - in_zp` rows
  (`pack_block`). Taps outside the image are 0, i.e. `x - in_zp` of a pixel padded with the
  input zero point, which is exactly the reference's "skip the tap".
* For `vpdpbusd` (VNNI hosts), weights in groups of 4 taps (`pack_conv_weights_u8`) and
  activations as uint8 `q + 128` (`pack_block` into a uint8 block): a tap outside the image
  holds `zp + 128`, so q - zp = 0 there too once the GEMM's Σ(q + 128)·w drops (zp + 128)·Σw.
"""

from typing import NamedTuple

import numpy as np
from numba.core import types
from numba.core.extending import overload
from qengine.kernels.emit import addr, copy_bytes, fill_bytes, widen, zero_fill
from qengine.kernels.jit import inline_kernel, kernel

ROWS = 6  # output pixels (GEMM rows) per micro-kernel tile
LANES = 16  # output channels per weight panel (two int32x8 accumulators)


class PackedConvWeights(NamedTuple):
    """`pack_conv_weights` output. `panels` int8 [ceil(Co/16), ceil(K/2), 16, 2], K = KH*KW*Cig."""

    panels: np.ndarray
    out_c: int
    k_h: int
    k_w: int
    in_c: int  # input channels per group (w.shape[3])
    w: np.ndarray  # the original filter, for the grouped-conv fallback


def _pack_panels(w2, taps=2):
    """[Co, K] int8 → [ceil(Co/16), ceil(K/taps), 16, taps] int8, zero-padded."""
    out_c, depth = w2.shape
    n_panels, groups = -(-out_c // LANES), -(-depth // taps)
    padded = np.zeros((n_panels * LANES, groups * taps), np.int8)
    padded[:out_c, :depth] = w2
    return np.ascontiguousarray(
        padded.reshape(n_panels, LANES, groups, taps).transpose(0, 2, 1, 3))


def pack_conv_weights(w) -> PackedConvWeights:
    """Prepare-time packing of a CONV_2D filter [Co, KH, KW, Cig] int8 for the GEMM."""
    w = np.ascontiguousarray(w, dtype=np.int8)
    out_c, k_h, k_w, in_c = w.shape
    panels = _pack_panels(w.reshape(out_c, k_h * k_w * in_c))
    return PackedConvWeights(panels, out_c, k_h, k_w, in_c, w)


QUAD = 4  # taps per int32 lane of `vpdpbusd`


def pack_conv_weights_u8(w):
    """Prepare-time packing of a CONV_2D filter [Co, KH, KW, Cig] int8 for the VNNI tile:
    (panels int8 [ceil(Co/16), ceil(K/4), 16, 4], Σ_k w int64 [Co])."""
    w2 = np.ascontiguousarray(w, dtype=np.int8).reshape(w.shape[0], -1)
    return _pack_panels(w2, QUAD), w2.astype(np.int64).sum(axis=1)


def pack_fc_weights(w) -> PackedConvWeights:
    """Prepare-time packing of a FULLY_CONNECTED filter [O, D] int8: a 1×1 convolution's."""
    w = np.asarray(w, np.int8)
    return pack_conv_weights(w.reshape(w.shape[0], 1, 1, w.shape[1]))


def pack_depthwise_weights(w) -> np.ndarray:
    """Prepare-time repacking of a DEPTHWISE_CONV_2D filter [1, KH, KW, Co] int8 → int16
    [KH, KW, Co]."""
    return np.ascontiguousarray(np.asarray(w)[0], dtype=np.int16)


# The depthwise tile's lane order: `vpmaddwd` of two int16x16 vectors whose lanes hold
# (tap 2i, tap 2i+1) of channels 0-3, 8-11 (`TAPS_LO`) or 4-7, 12-15 (`TAPS_HI`), which is
# what one unpack of two 16-channel rows yields; the int32x8 sums are then in `DW_ORDER`.
TAPS_LO = [0, 16, 1, 17, 2, 18, 3, 19, 8, 24, 9, 25, 10, 26, 11, 27]
TAPS_HI = [4, 20, 5, 21, 6, 22, 7, 23, 12, 28, 13, 29, 14, 30, 15, 31]
DW_ORDER = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]


def interleave_taps(w16):
    """int16 [KH, KW, Co] → [Co/16, pairs, 2, 16]: per 16 channels, tap pairs as TAPS_LO/HI
    (an odd tap count gets a zero-weight last tap)."""
    out_c = w16.shape[2]
    taps = w16.reshape(-1, out_c // LANES, LANES).transpose(1, 0, 2)  # [groups, T, 16]
    if taps.shape[1] % 2:
        taps = np.concatenate([taps, np.zeros_like(taps[:, :1])], axis=1)
    pairs = taps.reshape(taps.shape[0], -1, 2 * LANES)  # [groups, pairs, (tap 2i, tap 2i+1)]
    return np.ascontiguousarray(pairs[:, :, [TAPS_LO, TAPS_HI]], np.int16)


@inline_kernel
def block_source(x, xf, a, ints):
    """What `pack_block` reads, as integers, made once per kernel call: (x's geometry from
    ints, see `gemm_int8.ConvInt8Plan`; xf's address and end; a's address and size; a zero of
    a's dtype). An array passed to a kernel costs two atomic reference counts per call: per
    6-pixel block, 4 % of an int8 pose_landmark_full run."""
    geometry = (x.shape[1], x.shape[2], x.shape[3], ints[1], ints[2], ints[13], ints[14],
                ints[7], ints[8], ints[9], ints[10], ints[11], ints[12])
    return geometry, addr(xf), addr(xf) + xf.size, addr(a), a.size, a.dtype.type(0)


def block_for(x, n):
    """An A block of n values for x's tile family (`pack_block`): int16 pairs (x int8) or
    uint8 quads (x uint8)."""


@overload(block_for)
def _block_for_impl(x, n):
    dtype = np.uint8 if x.dtype == types.uint8 else np.int16

    def impl(x, n):
        return np.empty(n, dtype)

    return impl


@inline_kernel
def rows_in_place(x, a, kp, ints):
    """Whether `pack_block` would copy A's rows verbatim: a 1x1 stride-1 unpadded conv on the
    input grid whose taps fill the quads (uint8 blocks, Kp = Cin). The tiles then read them
    straight from x (one row per output pixel, Cin bytes apart)."""
    return (a.itemsize == 1 and kp == x.shape[3] and ints[1] == 1 and ints[2] == 1
            and ints[7] == 1 and ints[8] == 1 and ints[11] == 0 and ints[12] == 0
            and ints[13] == x.shape[1] and ints[14] == x.shape[2])


@inline_kernel
def reads_kernel_rows(x, a, ints, kp, in_place):
    """Whether a conv's tiles may read A straight from x, one kernel row at a time
    (`kernel_rows_at`): quads (a uint8 block `a`), undilated kernel rows of a multiple of 4
    bytes (Kp = K: no padding), and not already read whole (`rows_in_place`)."""
    k_h, k_w, dil_w, in_c = ints[1], ints[2], ints[10], x.shape[3]
    return a.itemsize == 1 and dil_w == 1 and (k_w * in_c) % 4 == 0 \
        and kp == k_h * k_w * in_c and not in_place  # fmt: skip


@inline_kernel
def kernel_row_layout(x, ints):
    """How the tiles walk A read in place (`kernel_rows_at`): (bytes from one pixel's row to
    the next's, stride_w·Cin; groups of 4 taps in a kernel row, KW·Cin / 4; kernel rows, KH;
    bytes from one kernel row to the next, dil_h·W·Cin)."""
    in_w, in_c = x.shape[2], x.shape[3]
    return ints[8] * in_c, ints[2] * in_c // 4, ints[1], ints[9] * in_w * in_c


@inline_kernel
def kernel_rows_at(x, ints, p0, rows):
    """The byte offset in x of tap (0, 0) of output pixel p0 when the block's ROWS pixels lie
    in one output row with every tap inside the image, else -1. Pixel r's kernel row ky then
    starts stride_w·Cin·r bytes after pixel p0's, which starts dil_h·W·Cin·ky bytes after its
    kernel row 0."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    k_h, k_w, stride_h, stride_w = ints[1], ints[2], ints[7], ints[8]
    dil_h, pad_top, pad_left, out_h, out_w = ints[9], ints[11], ints[12], ints[13], ints[14]
    if rows != ROWS:
        return -1
    b = p0 // (out_h * out_w)  # (a division or two per block of ROWS·Co·K multiply-adds)
    oy = (p0 - b * out_h * out_w) // out_w
    ox = p0 - (b * out_h + oy) * out_w
    iy0, ix0 = oy * stride_h - pad_top, ox * stride_w - pad_left
    if ox + ROWS > out_w or iy0 < 0 or iy0 + (k_h - 1) * dil_h >= in_h or ix0 < 0 \
            or ix0 + (ROWS - 1) * stride_w + k_w > in_w:  # fmt: skip
        return -1
    return ((b * in_h + iy0) * in_w + ix0) * in_c


@inline_kernel
def two_panels_fit(j, pan0, rows, out_c, p0, end, from_panel0):
    """Whether a block of `rows` pixels from p0 runs weight panels j - 1 and j as one wide tile
    (32 lanes; panels taken last to first): a whole block, panel j - 1 in this call's
    [pan0, ...), and panel j whole, or at least half full with the 8-15 extra lanes it spills
    into the next pixel's first channels rewritten later by this call: the call has panel 0
    (`from_panel0`) and the last spill stays before element `end` of out [P, out_c]."""
    oc0 = j * LANES
    return rows == ROWS and j > pan0 and (oc0 + LANES <= out_c or (
        from_panel0 and 2 * (out_c - oc0) >= LANES
        and (p0 + ROWS - 1) * out_c + oc0 + LANES <= end))


@inline_kernel
def block_rows(sources, in_place, kp, blk0, blk, blk1, pixels, zp, x_addr):
    """The address of row block blk's A rows (blocks blk0..blk1-1 taken in order): x's own
    (`rows_in_place`) or a packed block. sources: `block_source`s of two blocks, which take
    turns: block blk + 1 is packed before the tiles read block blk, so that their loads do not
    wait on stores still in flight (a load spanning two stores waits for both). The first call
    packs block blk0 too."""
    if blk == blk0:
        _pack_unless_in_place(sources[0], in_place, kp, blk0, pixels, zp)
    turn = (blk - blk0) % 2
    if blk + 1 < blk1:
        _pack_unless_in_place(sources[1 - turn], in_place, kp, blk + 1, pixels, zp)
    if in_place and pixels - blk * ROWS >= ROWS:
        return x_addr + blk * ROWS * kp
    return sources[turn][3]  # the block's address


@inline_kernel
def _pack_unless_in_place(source, in_place, kp, blk, pixels, zp):
    p0 = blk * ROWS
    rows = min(ROWS, pixels - p0)
    if not (in_place and rows == ROWS):
        pack_block(source, kp, p0, rows, zp)


def _itemsize(value):
    """The byte size of a scalar's type, a constant where the kernel is compiled."""


@overload(_itemsize)
def _itemsize_impl(value):
    size = value.bitwidth // 8
    return lambda value: size


@kernel
def pack_block(source, kp, p0, rows, zp):
    """A block a [ROWS·Kp + 16] for output pixels p0..p0+rows-1, im2col rows of Kp values
    (K = KH·KW·Cin taps, then 0 up to Kp) of x [N, H, W, Cin]; source = `block_source(x, xf,
    a, ints)`, xf being x flattened. Two forms, by a's itemsize:
    - int16 (`vpmaddwd`): x int8, values x - zp, taps outside the image 0, Kp = 2·ceil(K/2);
    - uint8 (`vpdpbusd`): x uint8 (q + 128), values copied, taps outside the image zp (here
      the caller's zp + 128), Kp = 4·ceil(K/4).
    Rows past `rows` are 0.

    An int16 run of n values is copied 16 at a time (`emit.widen`), writing up to 15 values
    past its end when the source has room; rows and runs are written in increasing order, so
    those values are overwritten by the next run, row or zero fill (`a` has 16 spare elements
    for the last).
    """
    geometry, xa, x_end, aa, a_size, family = source
    size = _itemsize(family)  # 2: int16 x - zp; 1: uint8 copies (a compile-time constant)
    in_h, in_w, in_c, k_h, k_w, out_h, out_w = geometry[:7]
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left = geometry[7:]
    z = np.int64(zp)
    depth = k_h * k_w * in_c
    pointwise = k_h == 1 and k_w == 1 and stride_h == 1 and stride_w == 1
    same_grid = pad_top == 0 and pad_left == 0 and out_h == in_h and out_w == in_w
    if pointwise and same_grid and kp == depth:  # pixel p's input row is A's row p - p0
        _put_run(size, aa, xa + p0 * in_c, x_end, rows * in_c, z)
        zero_fill(aa + size * rows * in_c, size * (a_size - rows * in_c))
        return
    b = p0 // (out_h * out_w)  # then stepped: a division costs ~40 cycles
    oy = (p0 - b * out_h * out_w) // out_w
    ox = p0 - (b * out_h + oy) * out_w
    row_run = k_w * in_c
    for r in range(rows):
        k = r * kp
        ix0 = ox * stride_w - pad_left
        whole = dil_w == 1 and 0 <= ix0 and ix0 + k_w <= in_w  # the kx taps are one run
        for ky in range(k_h):
            iy = oy * stride_h - pad_top + ky * dil_h
            if iy < 0 or iy >= in_h:
                _put_outside(size, aa + size * k, row_run, z)
                k += row_run
            elif whole:
                _put_run(size, aa + size * k, xa + ((b * in_h + iy) * in_w + ix0) * in_c,
                         x_end, row_run, z)  # fmt: skip
                k += row_run
            else:
                for kx in range(k_w):
                    ix = ix0 + kx * dil_w
                    if 0 <= ix < in_w:
                        _put_run(size, aa + size * k,
                                 xa + ((b * in_h + iy) * in_w + ix) * in_c, x_end, in_c, z)
                    else:
                        _put_outside(size, aa + size * k, in_c, z)
                    k += in_c
        zero_fill(aa + size * k, size * (kp - depth))
        ox += 1
        if ox == out_w:
            ox, oy = 0, oy + 1
            if oy == out_h:
                oy, b = 0, b + 1
    zero_fill(aa + size * rows * kp, size * (a_size - rows * kp))


@inline_kernel
def _put_run(size, dst, src, src_end, n, zp):
    """n taps from src into the block at dst: int16 x - zp (size 2), or uint8 copies."""
    if size == 2:
        widen(src, src_end, dst, n, zp)
    elif n <= 16 and src + 16 <= src_end:  # one 16-byte move (a call to memcpy costs more)
        copy_bytes(dst, src, 16)
    else:
        copy_bytes(dst, src, n)


@inline_kernel
def _put_outside(size, dst, n, zp):
    """n taps outside the image: int16 0 (size 2), or uint8 zp."""
    if size == 2:
        zero_fill(dst, 2 * n)
    else:
        fill_bytes(dst, n, zp)
