"""Float32 depthwise convolution: vectorized over channels, parallel over output rows.

Float results need not be bit-identical to TFLite's (its summation order differs anyway); they
are compared within a tolerance. Taps that fall outside the image are skipped, which equals
padding with zeros.
"""

import numpy as np

from .jit import float_kernel, kernel, prange


@float_kernel(parallel=True)
def depthwise_conv2d_f32(x, w, bias, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                         out_h, out_w, multiplier, act_min, act_max):
    """x [N,H,W,Ci] float32, w [KH,KW,Co] float32 (Co = Ci*multiplier), bias [Co] -> [N,OH,OW,Co].

    out[n,oy,ox,c] = bias[c] + sum_{ky,kx} x[n, oy*sh - pt + ky*dh, ox*sw - pl + kx*dw, c // m]
                     * w[ky,kx,c], then clamped to [act_min, act_max].
    """
    n_batch, in_h, in_w, in_c = x.shape
    k_h, k_w, out_c = w.shape
    low, high = np.float32(act_min), np.float32(act_max)  # a float64 clamp would widen acc
    out = np.empty((n_batch, out_h, out_w, out_c), np.float32)
    for row in prange(n_batch * out_h):
        n = row // out_h
        oy = row % out_h
        acc = np.empty(out_c, np.float32)
        for ox in range(out_w):
            for c in range(out_c):
                acc[c] = bias[c]
            for ky in range(k_h):
                iy = oy * stride_h - pad_top + ky * dil_h
                if iy < 0 or iy >= in_h:
                    continue
                for kx in range(k_w):
                    ix = ox * stride_w - pad_left + kx * dil_w
                    if ix < 0 or ix >= in_w:
                        continue
                    if multiplier == 1:
                        for c in range(out_c):
                            acc[c] += x[n, iy, ix, c] * w[ky, kx, c]
                    else:
                        for c in range(out_c):
                            acc[c] += x[n, iy, ix, c // multiplier] * w[ky, kx, c]
            for c in range(out_c):
                out[n, oy, ox, c] = min(max(acc[c], low), high)
    return out



@kernel
def bias_clamp_f32(out, bias, act_min, act_max):
    """In place on out [rows, C] float32: out[r, c] = clamp(out[r, c] + bias[c]) to
    [act_min, act_max], the epilogue of a matmul convolution in one pass over the output.

    As TFLite's ActivationFunctionWithMinMax (std::min(std::max(v, lo), hi)), NaN passes through
    and +-inf becomes the bound; so no fastmath here, and the comparisons are written out.
    One thread: it is memory-bound and short (0.01-0.6 ms per MobileNetV2 layer), and a parallel
    launch right after a BLAS call would wake Numba's OpenMP pool while BLAS's threads spin.
    """
    rows, channels = out.shape
    low, high = np.float32(act_min), np.float32(act_max)
    for r in range(rows):
        for c in range(channels):
            v = out[r, c] + bias[c]
            if v < low:
                v = low
            elif v > high:
                v = high
            out[r, c] = v
