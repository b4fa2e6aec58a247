"""Fast 16x8 CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED, bit-exact with the reference loops
(`conv.conv2d`, `conv.depthwise_conv2d`, `fully_connected.fully_connected` on an int16 input
with an int64 bias).

The reference sums int16 x int8 products in int64. A product is at most 2^15 * 2^7 = 2^22 in
magnitude, so a partial sum of up to 511 of them is exact in int32 (511 * 2^22 < 2^31; 512
taps of -32768 * -128 would reach 2^31). The kernels sum blocks of at most `BLOCK_TAPS` taps
in int32, which vectorizes, and add the blocks into int64; integer addition is associative,
so the result is the reference's int64 sum whatever the order.

- CONV_2D and FULLY_CONNECTED (a 1x1 convolution over [1, 1, B, D]) run the int8 GEMM's
  pieces (`pack`, `gemm_int8`): weights packed once at prepare into int8 panels of 16 output
  channels (`pack.pack_conv_weights`), the im2col of 6 output pixels as int16 rows (zero
  point 0: an off-image tap is 0, which is the reference's "skip the tap"), and its 6x16
  `vpmaddwd` tile with the raw epilogue (int32 sums stored) over K blocks of `BLOCK_TAPS`
  taps; the blocks are summed into int64, then the 16x8 epilogue.
- DEPTHWISE_CONV_2D sums a pixel's taps (at most `BLOCK_TAPS` of them, checked at plan time)
  in an int32 row over the channels, then the epilogue.

Epilogues: conv/depthwise clamp(MBQM_int64(acc + bias, M, shift)), with each channel's 16-bit
multiplier reduced once at prepare (`fixedpoint.mbqm_int64_params`), so the per-channel loop
has no branches; FC clamp(int32(round_half_away(double(acc + bias) * eff))). Each op's output
is split into blocks of output pixels (`threads.split_grid`: serial nogil kernels in a compiled
prange), or into weight panels when there are fewer pixel blocks than threads; ops under
MIN_SPLIT_FLOPS stay on the calling thread.
"""

from typing import NamedTuple

import numpy as np
from qengine.kernels import threads as pool
from qengine.kernels.emit import addr
from qengine.kernels.fixedpoint import mbqm_int64_params, mbqm_int64_reduced, round_half_away_int32
from qengine.kernels.gemm_int8 import _tile as _tile_6x16  # with a raw `q`: stores int32 sums
from qengine.kernels.jit import inline_kernel, kernel, prange
from qengine.kernels.pack import LANES, ROWS
from qengine.kernels.pack import pack_conv_weights as _pack_conv_weights

__all__ = [
    "BLOCK_TAPS",
    "Conv16Plan",
    "Depthwise16Plan",
    "plan_conv2d_int16",
    "plan_depthwise_int16",
    "plan_fully_connected_int16",
    "run_conv2d_int16",
    "run_depthwise_int16",
    "run_fully_connected_int16",
]

# taps per int32 partial sum: even (the GEMM's K runs in tap pairs) and <= 511 (see above)
BLOCK_TAPS = 510
_BLOCK_PAIRS = BLOCK_TAPS // 2
# below this many output-pixel blocks per thread the work is split over weight panels instead
_MIN_BLOCKS_PER_THREAD = 2
_NO_SCALE = np.zeros(0, np.float64)
_NO_INTS = np.zeros(0, np.int64)


class Conv16Plan(NamedTuple):
    """What `run_conv2d_int16` needs besides the input, made once at prepare time."""

    panels: np.ndarray  # int8 [ceil(Co/16), ceil(K/2), 16, 2] (pack.pack_conv_weights)
    in_c: int  # the input channels the filter reads (D for FC)
    out_c: int
    bias: np.ndarray  # int64 [Co]
    reduced: np.ndarray  # int64 [Co], mbqm_int64_params(M, shift); empty for FC
    total: np.ndarray  # int64 [Co]
    eff_scale: np.ndarray  # float64 [Co] for FC's float epilogue; empty for MBQM
    act_min: int
    act_max: int
    geometry: tuple  # k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w


def plan_conv2d_int16(w, bias, mult, shift, act_min, act_max, stride_h, stride_w, dil_h,
                      dil_w, pad_top, pad_left, out_h, out_w):  # fmt: skip
    """A CONV_2D plan for an ungrouped filter w [Co, KH, KW, Ci] int8 with bias [Co] int64."""
    out_c, k_h, k_w, in_c = w.shape
    geometry = (k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    return Conv16Plan(_pack_conv_weights(w).panels, in_c, out_c,
                      np.ascontiguousarray(bias, np.int64), *mbqm_int64_params(mult, shift),
                      _NO_SCALE, int(act_min), int(act_max), geometry)


def plan_fully_connected_int16(w, bias, eff_scale, act_min, act_max):
    """An FC plan for w [O, D] int8 with zero points 0 (the caller runs the reference
    kernel for a per-tensor weight zero point), bias [O] int64, eff_scale [O] float64."""
    units, depth = w.shape
    geometry = (1, 1, 1, 1, 1, 1, 0, 0, 1, 0)  # out_w (the batch) is set per run
    return Conv16Plan(_pack_conv_weights(w.reshape(units, 1, 1, depth)).panels, depth, units,
                      np.ascontiguousarray(bias, np.int64), _NO_INTS, _NO_INTS,
                      np.ascontiguousarray(eff_scale, np.float64), int(act_min), int(act_max),
                      geometry)


@inline_kernel
def _requant16(acc, bias, reduced, total, act_min, act_max):
    """clamp(MBQM_int64(acc + bias, M, shift)), (reduced, total) = mbqm_int64_params(M, shift)."""
    v = mbqm_int64_reduced(np.int64(acc) + bias, reduced, total)
    return min(max(v, np.int64(act_min)), np.int64(act_max))


@inline_kernel
def _epilogue_16x8(acc, p0, rows, oc0, width, bias, reduced, total, eff_scale, act_min, act_max,
                   out):  # fmt: skip
    """out[p0 + r, oc0 + j] for r < rows, j < width from the int64 sums acc [ROWS, LANES]:
    FC's float requantization when eff_scale is non-empty, else the conv's MBQM_int64."""
    for r in range(rows):
        if eff_scale.size:
            for j in range(width):
                scaled = np.float64(acc[r, j] + bias[oc0 + j]) * eff_scale[oc0 + j]
                v = round_half_away_int32(scaled)
                out[p0 + r, oc0 + j] = min(max(v, np.int64(act_min)), np.int64(act_max))
        else:
            for j in range(width):
                out[p0 + r, oc0 + j] = _requant16(acc[r, j], bias[oc0 + j], reduced[oc0 + j],
                                                  total[oc0 + j], act_min, act_max)


@kernel
def _pack_taps(x, a, kp, p0, rows, k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
               out_h, out_w):  # fmt: skip
    """im2col of output pixels p0..p0+rows-1 into the GEMM's A block a [ROWS * kp] int16, row r
    (pixel p0 + r) at a[r * kp:], tap k = (ky, kx, ic) at a[r * kp + k]; kp = 2 * ceil(K / 2).
    Off-image taps, an odd K's padding tap and rows past `rows` are 0 (zero point 0)."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    a[:] = 0
    for r in range(rows):
        p = p0 + r
        b = p // (out_h * out_w)
        oy = (p // out_w) % out_h
        ox = p % out_w
        k = r * kp
        for ky in range(k_h):
            iy = oy * stride_h - pad_top + ky * dil_h
            for kx in range(k_w):
                ix = ox * stride_w - pad_left + kx * dil_w
                if 0 <= iy < in_h and 0 <= ix < in_w:
                    for ic in range(in_c):
                        a[k + ic] = x[b, iy, ix, ic]
                k += in_c


@kernel
def _gemm16_part(x, panels, bias, reduced, total, eff_scale, act_min, act_max, k_h, k_w,
                 stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, out,
                 blk0, blk1, pan0, pan1):  # fmt: skip
    """Output-pixel blocks blk0..blk1-1 (ROWS pixels each) x weight panels pan0..pan1-1 of
    out [P, Co] int16: pack the block's taps, then per panel sum K in blocks of
    `_BLOCK_PAIRS` tap pairs (int32 tile) into int64, then the epilogue."""
    k2 = panels.shape[1]
    kp = 2 * k2
    out_c = out.shape[1]
    pixels = out.shape[0]
    a = np.empty(ROWS * kp, np.int16)
    c = np.empty((ROWS, LANES), np.int32)
    acc = np.empty((ROWS, LANES), np.int64)
    raw = np.zeros((1, 4, LANES), np.int64)  # the tile's parameters: int64 = store the sums
    panel_bytes = k2 * LANES * 2
    for blk in range(blk0, blk1):
        p0 = blk * ROWS
        rows = min(ROWS, pixels - p0)
        _pack_taps(x, a, kp, p0, rows, k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top,
                   pad_left, out_h, out_w)  # fmt: skip
        for j in range(pan0, pan1):
            acc[:] = 0
            for q0 in range(0, k2, _BLOCK_PAIRS):
                pairs = min(_BLOCK_PAIRS, k2 - q0)
                a_addr = addr(a) + 4 * q0  # pair q0 of row 0; rows are 2 * kp bytes apart
                b_addr = addr(panels) + j * panel_bytes + q0 * LANES * 2
                _tile_6x16(a_addr, 2 * kp, b_addr, pairs, addr(c), LANES * 4, addr(raw), 0, 0,
                           0, raw)  # fmt: skip
                for r in range(rows):
                    for lane in range(LANES):
                        acc[r, lane] += c[r, lane]
            oc0 = j * LANES
            _epilogue_16x8(acc, p0, rows, oc0, min(LANES, out_c - oc0), bias, reduced, total,
                           eff_scale, act_min, act_max, out)  # fmt: skip


@kernel(parallel=True)
def _gemm16_split(x, panels, bias, reduced, total, eff_scale, act_min, act_max, k_h, k_w,
                  stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, out, blocks,
                  n_panels, by_panels, parts):  # fmt: skip
    """`_gemm16_part` over all of out in `parts` parts at once (threads.split_grid)."""
    for i in prange(parts):
        b0, b1, p0, p1 = pool.grid_part(blocks, n_panels, by_panels, parts, i)
        _gemm16_part(x, panels, bias, reduced, total, eff_scale, act_min, act_max, k_h, k_w,
                     stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, out, b0,
                     b1, p0, p1)  # fmt: skip


def _expect_channels(x, channels: int) -> None:
    """The kernels index by the plan's shapes (Numba does not bounds-check)."""
    if x.dtype != np.int16 or x.ndim != 4 or x.shape[3] != channels:
        raise ValueError(f"int16 input of {channels} channels expected, got {x.dtype} "
                         f"{x.shape}")


def _run_gemm16(plan: Conv16Plan, x, geometry, threads: int) -> np.ndarray:
    _expect_channels(x, plan.in_c)
    out_h, out_w = geometry[-2:]
    pixels = x.shape[0] * out_h * out_w
    out = np.empty((pixels, plan.out_c), np.int16)
    blocks = (pixels + ROWS - 1) // ROWS

    args = (x, plan.panels, plan.bias, plan.reduced, plan.total, plan.eff_scale, plan.act_min,
            plan.act_max, *geometry, out)
    flops = 2 * pixels * plan.out_c * plan.panels.shape[1] * 2
    pool.split_grid(_gemm16_part, _gemm16_split, args, blocks, plan.panels.shape[0], threads,
                    flops, _MIN_BLOCKS_PER_THREAD)
    return out


def run_conv2d_int16(plan: Conv16Plan, x, threads: int = 1) -> np.ndarray:
    """x [N, H, W, Ci] int16 → [N, out_h, out_w, Co] int16."""
    out_h, out_w = plan.geometry[-2:]
    return _run_gemm16(plan, x, plan.geometry, threads).reshape(x.shape[0], out_h, out_w,
                                                                plan.out_c)


def run_fully_connected_int16(plan: Conv16Plan, x, threads: int = 1) -> np.ndarray:
    """x [B, D] int16 → [B, O] int16."""
    batch, depth = x.shape
    geometry = plan.geometry[:-1] + (batch,)
    return _run_gemm16(plan, np.ascontiguousarray(x).reshape(1, 1, batch, depth), geometry,
                       threads)


# --- DEPTHWISE_CONV_2D -------------------------------------------------------------------------


class Depthwise16Plan(NamedTuple):
    """What `run_depthwise_int16` needs besides the input."""

    w: np.ndarray  # int32 [KH, KW, Co]
    bias: np.ndarray  # int64 [Co]
    reduced: np.ndarray  # int64 [Co], mbqm_int64_params(M, shift)
    total: np.ndarray  # int64 [Co]
    act_min: int
    act_max: int
    geometry: tuple  # stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, dm


def plan_depthwise_int16(w, bias, mult, shift, act_min, act_max, stride_h, stride_w, dil_h,
                         dil_w, pad_top, pad_left, out_h, out_w, depth_multiplier):  # fmt: skip
    """A plan for w [1, KH, KW, Co] int8, or None when a pixel has more taps than an int32
    partial sum holds exactly (KH * KW > BLOCK_TAPS; the caller runs the reference)."""
    if w.shape[1] * w.shape[2] > BLOCK_TAPS:
        return None
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                depth_multiplier)
    return Depthwise16Plan(np.ascontiguousarray(w[0], np.int32),
                           np.ascontiguousarray(bias, np.int64), *mbqm_int64_params(mult, shift),
                           int(act_min), int(act_max), geometry)


@kernel
def _depthwise16_rows(x, w, bias, reduced, total, act_min, act_max, stride_h, stride_w, dil_h,
                      dil_w, pad_top, pad_left, out_h, out_w, dm, out, row0, row1):  # fmt: skip
    """Output rows row0..row1-1 (over batch * out_h) of out [N, out_h, out_w, Co]:
    acc[oc] = Σ_{in-image taps} w[ky, kx, oc] * x[b, iy, ix, oc // dm] in int32 (exact: at
    most BLOCK_TAPS taps), then clamp(MBQM_int64(acc + bias)) per channel."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    k_h, k_w, out_c = w.shape
    acc = np.empty(out_c, np.int32)
    for row in range(row0, row1):
        b = row // out_h
        oy = row - b * out_h
        iy0 = oy * stride_h - pad_top
        for ox in range(out_w):
            ix0 = ox * stride_w - pad_left
            acc[:] = 0
            for ky in range(k_h):
                iy = iy0 + ky * dil_h
                if iy < 0 or iy >= in_h:
                    continue
                for kx in range(k_w):
                    ix = ix0 + kx * dil_w
                    if ix < 0 or ix >= in_w:
                        continue
                    if dm == 1:  # channel c reads input channel c: one vector loop
                        for oc in range(out_c):
                            acc[oc] += w[ky, kx, oc] * np.int32(x[b, iy, ix, oc])
                    else:
                        for ic in range(in_c):
                            xv = np.int32(x[b, iy, ix, ic])
                            for m in range(dm):
                                acc[ic * dm + m] += w[ky, kx, ic * dm + m] * xv
            for oc in range(out_c):
                out[b, oy, ox, oc] = _requant16(acc[oc], bias[oc], reduced[oc], total[oc],
                                                act_min, act_max)


@kernel(parallel=True)
def _depthwise16_split(x, w, bias, reduced, total, act_min, act_max, stride_h, stride_w, dil_h,
                       dil_w, pad_top, pad_left, out_h, out_w, dm, out, rows, parts):  # fmt: skip
    """`_depthwise16_rows` over rows 0..rows-1 in `parts` parts at once (threads.split_run)."""
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        _depthwise16_rows(x, w, bias, reduced, total, act_min, act_max, stride_h, stride_w,
                          dil_h, dil_w, pad_top, pad_left, out_h, out_w, dm, out, r0, r1)


def run_depthwise_int16(plan: Depthwise16Plan, x, threads: int = 1) -> np.ndarray:
    """x [N, H, W, Ci] int16 → [N, out_h, out_w, Co] int16."""
    out_h, out_w = plan.geometry[6:8]
    _expect_channels(x, plan.w.shape[2] // plan.geometry[8])
    out = np.empty((x.shape[0], out_h, out_w, plan.w.shape[2]), np.int16)

    args = (x, plan.w, plan.bias, plan.reduced, plan.total, plan.act_min, plan.act_max,
            *plan.geometry, out)
    flops = 2 * out.size * plan.w.shape[0] * plan.w.shape[1]
    pool.split_run(_depthwise16_rows, _depthwise16_split, args, x.shape[0] * out_h, threads,
                   flops)
    return out
