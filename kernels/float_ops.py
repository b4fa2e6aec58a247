"""Float32 kernels of ops whose NumPy form makes several passes over memory: PRELU and
MAX_POOL_2D. Each computes exactly what its NumPy twin in qengine/ops computes (no fastmath:
one product or one comparison per value, so the results are bit-identical), in one pass.
"""

import numpy as np

from .jit import kernel


@kernel
def prelu_f32(x, alpha):
    """x [rows, m] float32, alpha [m]: out = x >= 0 ? x : x * alpha (alpha repeats along x's
    last axes, e.g. one slope per channel: the caller reshapes). NaN takes the product branch
    and stays NaN. The inner loop is branch-free, so LLVM vectorizes it."""
    rows, m = x.shape
    out = np.empty((rows, m), dtype=np.float32)
    for r in range(rows):
        for c in range(m):
            v = x[r, c]
            out[r, c] = v if v >= 0 else v * alpha[c]
    return out


@kernel
def max_pool_f32(x, k_h, k_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w):
    """x [N,H,W,C] float32 -> [N,OH,OW,C]: the max over the window's in-image taps, starting
    from -FLT_MAX, with NaN taps skipped (reference MaxPool: max = std::max(max, tap); as
    np.fmax.reduce(..., initial=-FLT_MAX))."""
    n_batch, in_h, in_w, c = x.shape
    lowest = np.float32(-3.4028234663852886e38)
    out = np.empty((n_batch, out_h, out_w, c), np.float32)
    for n in range(n_batch):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_top
            for ox in range(out_w):
                x0 = ox * stride_w - pad_left
                for ch in range(c):
                    out[n, oy, ox, ch] = lowest
                for ky in range(k_h):
                    iy = y0 + ky
                    if iy < 0 or iy >= in_h:
                        continue
                    for kx in range(k_w):
                        ix = x0 + kx
                        if ix < 0 or ix >= in_w:
                            continue
                        for ch in range(c):
                            v = x[n, iy, ix, ch]
                            if v > out[n, oy, ox, ch]:  # noqa: PLR1730 (NaN compares false: skipped)
                                out[n, oy, ox, ch] = v
    return out
