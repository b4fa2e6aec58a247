"""Hybrid ("dynamic range") kernels: float activations quantized on the fly, int8 weights.

TFLite quantizes a float input per batch row (FULLY_CONNECTED) or per batch image (CONV_2D,
DEPTHWISE_CONV_2D), takes an exact integer dot product with the int8 filter, and scales the
int32 result back to float. The float steps are reproduced here operation by operation in
float32, in the order of TFLite's x86 build (tensor_utils is compiled as NEON through
NEON_2_SSE there, so the quantizers are the Neon* ones; the int8 matrix-vector product is the
SSE one):

- `quantize_symmetric`: NeonSymmetricQuantizeFloats.
- `quantize_asymmetric`: NeonAsymmetricQuantizeFloats.
- `row_sums_sse`: SseReductionSumVector, whose 16-bit lanes wrap on very long rows.
- `conv_accumulators`, `depthwise_accumulators`: the integer part of
  reference_ops::HybridConvPerChannel / reference_integer_ops::DepthwiseConvHybridPerChannel
  (and of optimized_ops::HybridConv, whose im2col pads with the zero point 0).

The float epilogues (`acc * scale + bias`, clamping) are a few NumPy float32 operations and
live with the ops in qengine/ops.
"""

import numpy as np
from qengine.kernels.jit import kernel

__all__ = [
    "conv_accumulators",
    "depthwise_accumulators",
    "matmul_accumulators",
    "quantize_asymmetric",
    "quantize_symmetric",
    "round_away_f32",
    "row_sums_sse",
]

_HALF = np.float32(0.5)
_NEON_BLOCK = 8  # the Neon quantizers handle blocks of 8 values, then a scalar tail


def round_away_f32(v: np.ndarray) -> np.ndarray:
    """roundf (TfLiteRound on a float): ties away from zero, computed exactly in float64."""
    v = v.astype(np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)  # |v| + 0.5 is exact for float32 inputs


def _round_away_f64(v: np.ndarray) -> np.ndarray:
    """std::round on doubles: v - trunc(v) is exact, so ties are detected exactly."""
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)


def _neon_round(v: np.ndarray) -> np.ndarray:
    """The non-aarch64 Neon RoundToNearest: truncate(v + copysign(0.5f, v)) in float32.

    Differs from roundf only for |v| = 0.5 - 2^-25, where the float32 sum rounds up to 1.
    """
    v = v.astype(np.float32)
    return np.trunc(v + np.copysign(_HALF, v)).astype(np.float64)


def _quantize_rows(rows: np.ndarray, inv: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The Neon quantizer loops: vector blocks of 8 round with `_neon_round`, the tail with roundf.

        q = clamp(round(x * inv) + offset)       (x * inv is a float32 product)
    """
    scaled = rows * inv[:, None]  # float32
    block = rows.shape[1] & ~(_NEON_BLOCK - 1)
    rounded = np.empty(rows.shape, np.float64)
    rounded[:, :block] = _neon_round(scaled[:, :block])
    rounded[:, block:] = round_away_f32(scaled[:, block:])
    return rounded + offset[:, None]


def quantize_symmetric(rows: np.ndarray):
    """NeonSymmetricQuantizeFloats on each row of a float32 [B, N] array.

        range = max(|min|, |max|)     sf = range / 127     inv = 127 / range     (float32)
        q = clamp(round(x * inv), -127, 127);   a row of zeros gives q = 0, sf = 1.
    Returns (q int8 [B, N], sf float32 [B]).
    """
    rows = np.asarray(rows, np.float32)
    if rows.shape[1] == 0:
        return np.zeros(rows.shape, np.int8), np.ones(rows.shape[0], np.float32)
    top = np.maximum(np.abs(rows.min(axis=1)), np.abs(rows.max(axis=1)))
    zero = top == 0
    safe = np.where(zero, np.float32(1), top)
    sf = np.where(zero, np.float32(1), safe / np.float32(127)).astype(np.float32)
    inv = (np.float32(127) / safe).astype(np.float32)
    q = np.clip(_quantize_rows(rows, inv, np.zeros(len(rows))), -127, 127)
    q[zero] = 0
    return q.astype(np.int8), sf


def quantize_asymmetric(rows: np.ndarray):
    """NeonAsymmetricQuantizeFloats on each row of a float32 [B, N] array.

        rmin = min(0, min x), rmax = max(0, max x)                       (float32)
        scale = double(rmax - rmin) / 255         (the difference is taken in float32)
        zp = the nudged zero point from whichever of rmin/rmax has the smaller error
        sf = float(scale)     inv = float(1.0 / double(sf))
        q = clamp(round(x * inv) + zp, -128, 127);   rmin == rmax gives q = 0, sf = 1, zp = 0
    Returns (q int8 [B, N], sf float32 [B], zp int32 [B]).
    """
    rows = np.asarray(rows, np.float32)
    if rows.shape[1] == 0:
        n = rows.shape[0]
        return np.zeros(rows.shape, np.int8), np.ones(n, np.float32), np.zeros(n, np.int32)
    rmin = np.minimum(rows.min(axis=1), np.float32(0))
    rmax = np.maximum(rows.max(axis=1), np.float32(0))
    flat = rmin == rmax
    scale = (rmax - rmin).astype(np.float64) / 255.0
    scale = np.where(flat, 1.0, scale)
    low, high = rmin.astype(np.float64) / scale, rmax.astype(np.float64) / scale
    from_min, from_max = -128.0 - low, 127.0 - high
    zp_real = np.where(128.0 + np.abs(low) < 127.0 + np.abs(high), from_min, from_max)
    zp = np.clip(_round_away_f64(zp_real), -128, 127)
    zp = np.where(flat, 0, zp).astype(np.int32)
    sf = np.where(flat, 1.0, scale).astype(np.float32)
    inv = (1.0 / sf.astype(np.float64)).astype(np.float32)
    q = np.clip(_quantize_rows(rows, inv, zp.astype(np.float64)), -128, 127)
    q[flat] = 0
    return q.astype(np.int8), sf, zp


@kernel
def row_sums_sse(w):
    """SseReductionSumVector (SSE4.1): Σ_d w[o, d] with 16-bit partial sums that wrap.

    Blocks of 16 columns add pairs into 8 int16 lanes, one block of 8 adds single values into
    them, the lanes are summed in int32 and the last < 8 columns are added one by one.
    """
    rows, cols = w.shape
    out = np.empty(rows, np.int32)
    lanes = np.empty(8, np.int64)
    for o in range(rows):
        lanes[:] = 0
        col = 0
        while col < (cols & ~15):
            for j in range(8):
                lanes[j] += np.int64(w[o, col + 2 * j]) + np.int64(w[o, col + 2 * j + 1])
            col += 16
        if col < (cols & ~7):
            for j in range(8):
                lanes[j] += np.int64(w[o, col + j])
            col += 8
        total = np.int64(0)
        for j in range(8):
            v = lanes[j] & 0xFFFF  # the int16 lane wraps
            total += v - 0x10000 if v >= 0x8000 else v
        for c in range(col, cols):
            total += np.int64(w[o, c])
        out[o] = total
    return out


@kernel
def matmul_accumulators(q, w):
    """acc[b, o] = Σ_d w[o, d] * q[b, d] in int32 (int8 products cannot overflow before 2^16 terms)."""
    batches, depth = q.shape
    out_c = w.shape[0]
    acc = np.empty((batches, out_c), np.int32)
    xs = np.empty(depth, np.int32)
    for b in range(batches):
        for d in range(depth):
            xs[d] = q[b, d]
        for o in range(out_c):
            total = np.int32(0)
            for d in range(depth):
                total += np.int32(w[o, d]) * xs[d]
            acc[b, o] = total
    return acc


@kernel
def conv_accumulators(q, w, offsets, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                      out_h, out_w):
    """The integer part of TFLite's hybrid CONV_2D (grouped when Ci = groups * w.shape[3]).

    q [N, H, W, Ci] int8 (the quantized input), w [Co, KH, KW, Ci/groups] int8,
    offsets [N] int32 (the per-image zero points; 0 for symmetric) → int32 [N, OH, OW, Co]:

        acc[oc] = Σ_{ky,kx in image, ic} w[oc,ky,kx,ic] * (q[b, iy, ix, g*Cig + ic] - offsets[b])

    Taps outside the image are skipped (padding with the zero point).
    """
    n, in_h, in_w, in_c = q.shape
    out_c, k_h, k_w, group_c = w.shape
    per_group = out_c // (in_c // group_c)
    out = np.zeros((n, out_h, out_w, out_c), np.int32)
    for b in range(n):
        zp = np.int32(offsets[b])
        for oy in range(out_h):
            for ox in range(out_w):
                for oc in range(out_c):
                    base = (oc // per_group) * group_c
                    acc = np.int32(0)
                    for ky in range(k_h):
                        iy = oy * stride_h - pad_top + ky * dil_h
                        if iy < 0 or iy >= in_h:
                            continue
                        for kx in range(k_w):
                            ix = ox * stride_w - pad_left + kx * dil_w
                            if ix < 0 or ix >= in_w:
                                continue
                            for ic in range(group_c):
                                acc += np.int32(w[oc, ky, kx, ic]) * (
                                    np.int32(q[b, iy, ix, base + ic]) - zp)
                    out[b, oy, ox, oc] = acc
    return out


@kernel
def depthwise_accumulators(q, w, offsets, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                           out_h, out_w, depth_multiplier):
    """The integer part of reference_integer_ops::DepthwiseConvHybridPerChannel.

    q [N, H, W, Ci] int8, w [1, KH, KW, Co] int8 with Co = Ci * depth_multiplier,
    offsets [N] int32 → int32 [N, OH, OW, Co]:

        oc = ic * depth_multiplier + m
        acc[oc] = Σ_{ky,kx in image} w[0,ky,kx,oc] * (q[b, iy, ix, ic] - offsets[b])
    """
    n, in_h, in_w, in_c = q.shape
    k_h = w.shape[1]
    k_w = w.shape[2]
    out_c = w.shape[3]
    out = np.zeros((n, out_h, out_w, out_c), np.int32)
    for b in range(n):
        zp = np.int32(offsets[b])
        for oy in range(out_h):
            for ox in range(out_w):
                for ky in range(k_h):
                    iy = oy * stride_h - pad_top + ky * dil_h
                    if iy < 0 or iy >= in_h:
                        continue
                    for kx in range(k_w):
                        ix = ox * stride_w - pad_left + kx * dil_w
                        if ix < 0 or ix >= in_w:
                            continue
                        for ic in range(in_c):
                            xv = np.int32(q[b, iy, ix, ic]) - zp
                            for m in range(depth_multiplier):
                                oc = ic * depth_multiplier + m
                                out[b, oy, ox, oc] += np.int32(w[0, ky, kx, oc]) * xv
    return out
