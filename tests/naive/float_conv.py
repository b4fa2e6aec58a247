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
