"""Slow, obviously-correct twins of the float32 convolutions, in TFLite's reference order.

reference_ops::Conv and DepthwiseConv sum each output as `total = 0; total += x * w` over
(ky, kx, ic), skipping taps outside the image, then `total + bias`, then clamp. NumPy's
float32 products and sums are each correctly rounded, so doing the same steps here, one
(ky, kx, ic) at a time over whole arrays, gives the reference's float32 result bit for bit.
"""

from __future__ import annotations

import numpy as np


def _taps(x, kernel, stride, dilation, pad, out_hw):
    """(ky, kx, valid [OH, OW], patch [N, OH, OW, C]) for each tap; patch is x at the tap's
    input pixel (clipped into the image where not valid)."""
    h, w = x.shape[1], x.shape[2]
    oy, ox = np.arange(out_hw[0]), np.arange(out_hw[1])
    for ky in range(kernel[0]):
        iy = oy * stride[0] - pad[0] + ky * dilation[0]
        for kx in range(kernel[1]):
            ix = ox * stride[1] - pad[1] + kx * dilation[1]
            valid = ((iy >= 0) & (iy < h))[:, None] & ((ix >= 0) & (ix < w))[None, :]
            patch = x[:, np.clip(iy, 0, h - 1)][:, :, np.clip(ix, 0, w - 1)]
            yield ky, kx, valid[None, :, :, None], patch


def clamp(v, low, high):
    """std::min(std::max(v, low), high): NaN passes through, as np.maximum/np.minimum do."""
    return np.minimum(np.maximum(v, np.float32(low)), np.float32(high))


def conv2d_f32(x, w, bias, stride, dilation, pad, out_hw, low, high) -> np.ndarray:
    """x [N,H,W,Ci], w [Co,KH,KW,Ci], bias [Co] float32 -> [N,OH,OW,Co] float32."""
    total = np.zeros((x.shape[0], *out_hw, w.shape[0]), np.float32)
    for ky, kx, valid, patch in _taps(x, w.shape[1:3], stride, dilation, pad, out_hw):
        for c in range(x.shape[3]):
            total = np.where(valid, total + patch[..., c:c + 1] * w[:, ky, kx, c], total)
    return clamp(total + bias, low, high)


def depthwise_f32(x, w, bias, stride, dilation, pad, out_hw, low, high) -> np.ndarray:
    """Multiplier 1: x [N,H,W,C], w [KH,KW,C], bias [C] float32 -> [N,OH,OW,C] float32."""
    total = np.zeros((x.shape[0], *out_hw, x.shape[3]), np.float32)
    for ky, kx, valid, patch in _taps(x, w.shape[:2], stride, dilation, pad, out_hw):
        total = np.where(valid, total + patch * w[ky, kx], total)
    return clamp(total + bias, low, high)


# -- XNNPACK's order: each sum starts at the bias, every step one fused multiply-add --------------
# Its f32 GEMM/IGEMM micro-kernels walk (ky, kx, ic) like the reference; its depthwise ones walk
# the taps column by column (kx, then ky). Taps in the padding read XNNPACK's zero buffer, so
# they add fma(0, w, acc) instead of being skipped.


def fma_f32(a, b, c) -> np.ndarray:
    """round_to_float32(a*b + c) with one rounding, for float32 arrays. In float64 a*b is exact
    (24 + 24 bits < 53); the sum is rounded to odd (TwoSum gives its exact error; an inexact
    result with an even last bit moves one ulp toward the error), and a float64 rounded to odd
    rounds to float32 exactly as the exact value would (53 >= 24 + 2 bits)."""
    p = np.asarray(a, np.float64) * np.asarray(b, np.float64)
    c = np.asarray(c, np.float64)
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    even = (s.view(np.int64) & 1) == 0
    with np.errstate(invalid="ignore"):
        s = np.where((err != 0) & even & np.isfinite(s), np.nextafter(s, s + err), s)
    return s.astype(np.float32)


def conv2d_f32_xnnpack(x, w, bias, stride, dilation, pad, out_hw, low, high) -> np.ndarray:
    """conv2d_f32 in XNNPACK's arithmetic."""
    total = np.broadcast_to(bias, (x.shape[0], *out_hw, w.shape[0])).astype(np.float32)
    for ky, kx, valid, patch in _taps(x, w.shape[1:3], stride, dilation, pad, out_hw):
        patch = np.where(valid, patch, np.float32(0))
        for c in range(x.shape[3]):
            total = fma_f32(patch[..., c:c + 1], w[:, ky, kx, c], total)
    return clamp(total, low, high)


def depthwise_f32_xnnpack(x, w, bias, stride, dilation, pad, out_hw, low, high) -> np.ndarray:
    """depthwise_f32 in XNNPACK's arithmetic."""
    total = np.broadcast_to(bias, (x.shape[0], *out_hw, x.shape[3])).astype(np.float32)
    taps = sorted(_taps(x, w.shape[:2], stride, dilation, pad, out_hw),
                  key=lambda tap: (tap[1], tap[0]))  # column by column
    for ky, kx, valid, patch in taps:
        total = fma_f32(np.where(valid, patch, np.float32(0)), w[ky, kx], total)
    return clamp(total, low, high)


def post_twin(out, residual, low, high, alpha):
    """A float conv's folded ADD then PRELU (runtime/fusion.py): clip(out + residual) to [low,
    high] (NaN through, +-inf to the bound), then v >= 0 ? v : v * alpha."""
    v = out
    if residual is not None:
        v = np.clip(v + residual.reshape(v.shape), np.float32(low), np.float32(high))
    if alpha is not None:
        v = np.where(v >= 0, v, v * alpha).astype(np.float32)
    return v
