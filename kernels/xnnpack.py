"""XNNPACK's int8 arithmetic, as TFLite's default interpreter (the XNNPACK delegate) runs it.

The qs8 / qc8w GEMM, IGEMM and DWCONV microkernels of XNNPACK accumulate exactly in int32
(bias and input zero point folded in; int32 sums wrap, so the order does not matter) and
requantize in float32 ("fp32" requantization, e.g. xnn_qs8_requantize_fp32):

    scale[c] = float32(float32(s_in * s_w[c]) / s_out)        (computed once, in float32)
    out      = clamp(rint(float32(acc) * scale[c]) + out_zp, act_min, act_max)

`float32(acc)` rounds accumulators above 2^24 to nearest even, and `rint` rounds ties to even
(cvtps2dq / lrintf / the 1.5 * 2^23 "magic bias" variants all agree). Rounding before or after
the clamp gives the same result because the bounds are integers.
"""

import numpy as np
from qengine.kernels.jit import kernel

__all__ = ["requantize_fp32", "requantization_scales"]


def requantization_scales(in_scale, filter_scales, out_scale) -> np.ndarray:
    """float32 (s_in * s_w[c]) / s_out, both operations in float32 as XNNPACK's create functions
    compute them (convolution-nhwc.c, fully-connected-nc.c)."""
    product = np.float32(in_scale) * np.asarray(filter_scales, np.float32)
    return (product / np.float32(out_scale)).astype(np.float32)


@kernel
def requantize_fp32(acc, scale, out_zp, act_min, act_max):
    """acc [R, C] int32 (bias included), scale [C] float32 -> int8 [R, C]:

        out = clamp(rint(float32(acc) * scale[c]) + out_zp, act_min, act_max)
    """
    rows, channels = acc.shape
    out = np.empty((rows, channels), np.int8)
    lo = np.float32(act_min - out_zp)  # clamp in float before converting: no int overflow
    hi = np.float32(act_max - out_zp)
    for r in range(rows):
        for c in range(channels):
            v = np.float32(acc[r, c]) * scale[c]  # float32 product, one rounding
            v = min(max(v, lo), hi)
            out[r, c] = np.int8(np.int32(np.rint(v)) + out_zp)
    return out
