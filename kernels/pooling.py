"""Int8 AVERAGE_POOL_2D and MAX_POOL_2D reproducing TFLite's reference kernels bit for bit.

Neither op requantizes: TFLite assumes (but does not enforce) equal input and output
quantization and only clamps to the fused-activation range.
"""

import numpy as np
from qengine.kernels.jit import kernel

__all__ = ["avg_pool_int8", "max_pool_int8"]


@kernel
def avg_pool_int8(
    x, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w, act_min, act_max
):
    """TFLite `reference_integer_ops::AveragePool` (integer_ops/pooling.h), int8.

    x [N, H, W, C] → [N, out_h, out_w, C]. Only in-image taps are summed and counted (count n):

        avg = acc > 0 ? (acc + n/2) / n : (acc - n/2) / n    (C division: round half away from zero)
        out = clamp(avg, act_min, act_max)

    TFLite fails the op when a window has no in-image tap; SAME/VALID padding never produces one,
    and this kernel then writes clamp(0).
    """
    n, in_h, in_w, chans = x.shape
    out = np.empty((n, out_h, out_w, chans), np.int8)
    for row in range(n * out_h):
        b = row // out_h
        oy = row - b * out_h
        iy0 = oy * stride_h - pad_top
        y_lo = max(0, iy0)
        y_hi = min(in_h, iy0 + filter_h)
        acc = np.empty(chans, np.int32)
        for ox in range(out_w):
            ix0 = ox * stride_w - pad_left
            x_lo = max(0, ix0)
            x_hi = min(in_w, ix0 + filter_w)
            count = max(y_hi - y_lo, 0) * max(x_hi - x_lo, 0)
            acc[:] = 0
            for iy in range(y_lo, y_hi):
                for ix in range(x_lo, x_hi):
                    for c in range(chans):
                        acc[c] += x[b, iy, ix, c]
            half = count // 2
            for c in range(chans):
                a = np.int64(acc[c])
                if count == 0:
                    avg = np.int64(0)
                elif a > 0:
                    avg = (a + half) // count
                else:  # C truncates toward zero: -((-a + half) // count)
                    avg = -((half - a) // count)
                out[b, oy, ox, c] = min(max(avg, np.int64(act_min)), np.int64(act_max))
    return out


@kernel
def max_pool_int8(
    x, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w, act_min, act_max
):
    """TFLite `reference_integer_ops::MaxPool` (integer_ops/pooling.h), int8.

    x [N, H, W, C] → [N, out_h, out_w, C]:
        out = clamp(max(-128, max over in-image taps of x), act_min, act_max)
    """
    n, in_h, in_w, chans = x.shape
    out = np.empty((n, out_h, out_w, chans), np.int8)
    for row in range(n * out_h):
        b = row // out_h
        oy = row - b * out_h
        iy0 = oy * stride_h - pad_top
        y_lo = max(0, iy0)
        y_hi = min(in_h, iy0 + filter_h)
        best = np.empty(chans, np.int8)
        for ox in range(out_w):
            ix0 = ox * stride_w - pad_left
            x_lo = max(0, ix0)
            x_hi = min(in_w, ix0 + filter_w)
            best[:] = -128
            for iy in range(y_lo, y_hi):
                for ix in range(x_lo, x_hi):
                    for c in range(chans):
                        best[c] = max(best[c], x[b, iy, ix, c])
            for c in range(chans):
                out[b, oy, ox, c] = min(
                    max(np.int64(best[c]), np.int64(act_min)), np.int64(act_max)
                )
    return out
