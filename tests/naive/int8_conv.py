"""Slow, obviously-correct twins of the int8 kernels: NumPy int64 maths and Python-int requantization.

Nothing here uses Numba or qengine. Convolutions are written as "pad with the input zero point,
gather patches, einsum in int64"; requantization follows the C code with Python ints.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .fixedpoint import I32_MAX, I32_MIN, c_div, mbqm, quantize_multiplier, round_away_exact, wrap32


def requant_mbqm(acc: np.ndarray, mult, shift, out_zp: int, lo: int, hi: int) -> np.ndarray:
    """clamp(wrap32(MBQM(acc, M[c], shift[c]) + zp)) over the last axis as channel; int8 result."""
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.broadcast_to(np.asarray(mult, dtype=np.int64), acc.shape[-1:])
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), acc.shape[-1:])
    out = np.empty(acc.shape, np.int8)
    for idx, a in np.ndenumerate(acc):
        c = idx[-1]
        v = wrap32(mbqm(wrap32(a), int(mult[c]), int(shift[c])) + out_zp)
        out[idx] = min(max(v, lo), hi)
    return out


def requant_float(acc: np.ndarray, eff_scale, out_zp: int, lo: int, hi: int) -> np.ndarray:
    """clamp(wrap32(int32(round(double(acc) * eff[c])) + zp)); out-of-range casts give INT32_MIN."""
    acc = np.asarray(acc, dtype=np.int64)
    eff = np.broadcast_to(np.asarray(eff_scale, dtype=np.float64), acc.shape[-1:])
    out = np.empty(acc.shape, np.int8)
    for idx, a in np.ndenumerate(acc):
        product = float(wrap32(a)) * float(eff[idx[-1]])  # one IEEE double multiplication
        r = round_away_exact(product)
        if not I32_MIN <= r <= I32_MAX:
            r = I32_MIN
        out[idx] = min(max(wrap32(r + out_zp), lo), hi)
    return out


# --- padding ------------------------------------------------------------------------------


def same_padding(size: int, k: int, stride: int, dil: int) -> tuple[int, int]:
    """(out, pad_before) for TFLite SAME padding."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dil + 1 - size, 0)
    return out, total // 2


def valid_padding(size: int, k: int, stride: int, dil: int) -> tuple[int, int]:
    eff = (k - 1) * dil + 1
    return (size + stride - eff) // stride, 0


def _patches(xs: np.ndarray, k_h, k_w, stride, dil, pad, out_hw) -> np.ndarray:
    """[N, oh, KH, ow, KW, C] taps of xs (already zero-point-shifted) padded with zeros."""
    n, h, w, c = xs.shape
    (sh, sw), (dh, dw), (pt, pl), (oh, ow) = stride, dil, pad, out_hw
    big_h = max(h + pt, (oh - 1) * sh + (k_h - 1) * dh + 1)
    big_w = max(w + pl, (ow - 1) * sw + (k_w - 1) * dw + 1)
    xp = np.zeros((n, big_h, big_w, c), np.int64)
    xp[:, pt : pt + h, pl : pl + w] = xs
    rows = np.arange(oh)[:, None] * sh + np.arange(k_h)[None, :] * dh  # [oh, KH]
    cols = np.arange(ow)[:, None] * sw + np.arange(k_w)[None, :] * dw  # [ow, KW]
    return xp[:, rows[:, :, None, None], cols[None, None, :, :], :]


# --- kernels --------------------------------------------------------------------------------


def conv2d(x, w, bias, in_zp, mult, shift, out_zp, act, stride, dil, pad, out_hw):
    xs = x.astype(np.int64) - in_zp
    co, k_h, k_w, cig = w.shape
    groups = x.shape[3] // cig
    per_group = co // groups
    p = _patches(xs, k_h, k_w, stride, dil, pad, out_hw)
    acc = np.concatenate(
        [
            np.einsum(
                "nyhxwc,ohwc->nyxo",
                p[..., g * cig : (g + 1) * cig],
                w[g * per_group : (g + 1) * per_group].astype(np.int64),
            )
            for g in range(groups)
        ],
        axis=-1,
    )
    return requant_mbqm(acc + bias.astype(np.int64), mult, shift, out_zp, *act)


def depthwise_conv2d(
    x, w, bias, in_zp, mult, shift, out_zp, act, stride, dil, pad, out_hw, depth_multiplier
):
    xs = np.repeat(
        x.astype(np.int64) - in_zp, depth_multiplier, axis=-1
    )  # channel oc reads ic = oc // dm
    p = _patches(xs, w.shape[1], w.shape[2], stride, dil, pad, out_hw)
    acc = np.einsum("nyhxwc,hwc->nyxc", p, w[0].astype(np.int64))
    return requant_mbqm(acc + bias.astype(np.int64), mult, shift, out_zp, *act)


def transpose_conv(x, w, bias, in_zp, mult, shift, out_zp, act, stride, pad, out_hw):
    """Scatter every input pixel's `x·w` onto an uncropped canvas, then crop by the padding."""
    n, h, wd, _ = x.shape
    co, k_h, k_w, _ = w.shape
    (sh, sw), (pt, pl), (oh, ow) = stride, pad, out_hw
    xs = x.astype(np.int64) - in_zp
    canvas = np.zeros(
        (n, max((h - 1) * sh + k_h, pt + oh), max((wd - 1) * sw + k_w, pl + ow), co), np.int64
    )
    for iy in range(h):
        for ix in range(wd):
            contrib = np.einsum("nc,ohwc->nhwo", xs[:, iy, ix], w.astype(np.int64))
            canvas[:, iy * sh : iy * sh + k_h, ix * sw : ix * sw + k_w] += contrib
    acc = canvas[:, pt : pt + oh, pl : pl + ow]
    return requant_mbqm(acc + bias.astype(np.int64), mult, shift, out_zp, *act)


def fully_connected(x, w, bias, in_zp, w_zp, eff_scale, out_zp, act):
    acc = (x.astype(np.int64) - in_zp) @ (w.astype(np.int64) - w_zp).T + bias.astype(np.int64)
    return requant_float(acc, eff_scale, out_zp, *act)


def fully_connected_mbqm(x, w, bias, in_zp, w_zp, mult, shift, out_zp, act):
    acc = (x.astype(np.int64) - in_zp) @ (w.astype(np.int64) - w_zp).T + bias.astype(np.int64)
    return requant_mbqm(acc, mult, shift, out_zp, *act)


def batch_matmul(x, y, zp_x, zp_y, mult, shift, out_zp, act):
    acc = np.einsum("bmk,bkn->bmn", x.astype(np.int64) - zp_x, y.astype(np.int64) - zp_y)
    return requant_mbqm(acc, mult, shift, out_zp, *act)


def _pool_windows(x, fh, fw, stride, pad, out_hw):
    n, h, w, _ = x.shape
    (sh, sw), (pt, pl), (oh, ow) = stride, pad, out_hw
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                y0, x0 = oy * sh - pt, ox * sw - pl
                yield (
                    (b, oy, ox),
                    x[
                        b,
                        max(y0, 0) : max(min(y0 + fh, h), 0),
                        max(x0, 0) : max(min(x0 + fw, w), 0),
                    ],
                )


def avg_pool(x, fh, fw, stride, pad, out_hw, act):
    out = np.empty((x.shape[0], *out_hw, x.shape[3]), np.int8)
    for (b, oy, ox), win in _pool_windows(x, fh, fw, stride, pad, out_hw):
        count = win.shape[0] * win.shape[1]
        for c in range(x.shape[3]):
            avg = (
                round_away_exact(Fraction(int(win[..., c].astype(np.int64).sum()), count))
                if count
                else 0
            )
            out[b, oy, ox, c] = min(max(avg, act[0]), act[1])
    return out


def max_pool(x, fh, fw, stride, pad, out_hw, act):
    out = np.empty((x.shape[0], *out_hw, x.shape[3]), np.int8)
    for (b, oy, ox), win in _pool_windows(x, fh, fw, stride, pad, out_hw):
        for c in range(x.shape[3]):
            m = max([-128, *win[..., c].ravel().tolist()])
            out[b, oy, ox, c] = min(max(m, act[0]), act[1])
    return out


def mean_or_sum(x, axes, in_zp, in_scale, out_zp, out_scale, mean: bool):
    """TFLite QuantizedMeanOrSum on the original tensor and axes (keep_dims=False)."""
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    sums = x.astype(np.int64).sum(axis=tuple(axes))
    m, s = quantize_multiplier(float(in_scale) / float(out_scale))
    if mean and n > 0:
        sh = min(math.floor(math.log2(n)), 32, 31 + s)
        m, s = c_div(m * 2**sh, n), s - sh
    out = np.zeros(sums.shape, np.int8)
    if n == 0:
        return out
    for idx, total in np.ndenumerate(sums):
        v = wrap32(mbqm(wrap32(int(total) - in_zp * n), m, s) + out_zp)
        out[idx] = min(max(v, -128), 127)
    return out
