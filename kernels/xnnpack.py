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

__all__ = ["mean_fp32", "mean_params", "requantize_fp32", "requantization_scales"]


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


def mean_params(in_scale, out_scale, n, in_zp, out_zp) -> tuple[np.float32, np.float32]:
    """XNNPACK's qs8 MEAN constants, float32 throughout (reduce-nd.c multiplies the operator's
    scale s_in / s_out by 1.0f / n; the zero points fold into one float bias):

        scale = float32(s_in / s_out) * float32(1 / n)
        bias  = float32(out_zp) - float32(n * in_zp) * scale
    """
    f32 = np.float32
    scale = f32(f32(in_scale) / f32(out_scale)) * f32(f32(1.0) / f32(n))
    bias = f32(out_zp) - f32(f32(n * in_zp) * scale)
    return f32(scale), f32(bias)


@kernel
def mean_fp32(x, scale, bias):
    """x [outer, n, inner] int8 -> int8 [outer, inner], XNNPACK's qs8 MEAN:

        out = clamp(rint(float32(float32(Σ_n x) * scale) + bias), -128, 127)
    Two float32 roundings (product, then sum; no FMA), ties to even.
    """
    outer, n, inner = x.shape
    out = np.empty((outer, inner), np.int8)
    for o in range(outer):
        for i in range(inner):
            total = np.int32(0)
            for k in range(n):
                total += np.int32(x[o, k, i])
            v = np.float32(np.float32(total) * scale) + bias
            v = min(max(v, np.float32(-128.0)), np.float32(127.0))
            out[o, i] = np.int8(np.rint(v))
    return out
