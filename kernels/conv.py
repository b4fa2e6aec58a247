"""Integer convolutions reproducing TFLite's reference kernels bit for bit: int8 and 16x8.

Layouts are NHWC activations and TFLite's filter layouts. One loop per op serves both schemes;
Numba compiles it once per dtype combination, and the bias's dtype names the accumulator:

- int8 (reference_integer_ops, int8 input): `filter * (x - in_zp)` summed in int32 (wrapping,
  like the C code; the order of int32 additions does not change a wrapped sum), int32 bias.
- 16x8 (the int16 overloads of the same functions): int16 input with zero point 0, `filter * x`
  summed in int64, int64 bias (pass in_zp = out_zp = 0).

Products are taken in int64 and stored into the accumulator array, whose int32 store wraps
exactly as the C int32 sum does. The epilogue is `requantize_accumulator` (fixedpoint.py):
`clamp(MBQM(acc + bias, M[oc], shift[oc]) + out_zp, act_min, act_max)` with the int32 MBQM
for int8 and the int64 overload (a 16-bit multiplier, one rounding) for 16x8. The output has
the input's dtype.

Loops keep output channels innermost over contiguous memory (filters are re-laid out once per
call) so LLVM can vectorize them. Shapes are validated by the caller at prepare time.
"""

import numpy as np
from qengine.kernels.fixedpoint import requantize_accumulator
from qengine.kernels.jit import kernel

__all__ = [
    "conv2d",
    "conv2d_int8",
    "depthwise_conv2d",
    "depthwise_conv2d_int8",
    "transpose_conv",
    "transpose_conv_int8",
]


@kernel
def _filter_hwio(w):
    """[O, KH, KW, I] int8 → [KH, KW, I, O] int32, so the output channel is the fastest axis."""
    out_c, k_h, k_w, in_c = w.shape
    wt = np.empty((k_h, k_w, in_c, out_c), np.int32)
    for oc in range(out_c):
        for ky in range(k_h):
            for kx in range(k_w):
                for ic in range(in_c):
                    wt[ky, kx, ic, oc] = w[oc, ky, kx, ic]
    return wt


@kernel
def conv2d(
    x, w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
):  # fmt: skip
    """TFLite `reference_integer_ops::ConvPerChannel` (integer_ops/conv.h), int8 or int16 input.

    x [N, H, W, Ci] int8/int16, w [Co, KH, KW, Ci/groups] int8, bias [Co] int32 (int8) or
    int64 (16x8), zeros if absent; mult/shift [Co] int32 → [N, out_h, out_w, Co] of x's dtype.
    Grouped when Ci = groups * w.shape[3]: output channel oc belongs to group
    oc // (Co / groups) and reads that group's input slice.

        acc[oc] = Σ_{ky,kx in image, ic} w[oc,ky,kx,ic] * (x[b, iy, ix, g*Cig + ic] - in_zp)
        iy = oy*stride_h - pad_top + ky*dil_h,  ix = ox*stride_w - pad_left + kx*dil_w
        out = clamp(MBQM(acc + bias[oc], M[oc], shift[oc]) + out_zp)

    Taps outside the image are skipped, which is padding with the input zero point.
    """
    n, in_h, in_w, in_c = x.shape
    out_c, k_h, k_w, group_c = w.shape
    groups = in_c // group_c
    per_group = out_c // groups
    wt = _filter_hwio(w)
    out = np.empty((n, out_h, out_w, out_c), x.dtype)
    zp = np.int32(in_zp)
    acc = np.empty(out_c, bias.dtype)
    for row in range(n * out_h):
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
                    for g in range(groups):
                        oc0 = g * per_group
                        for ic in range(group_c):
                            xv = np.int32(x[b, iy, ix, g * group_c + ic]) - zp
                            for oc in range(oc0, oc0 + per_group):
                                acc[oc] += wt[ky, kx, ic, oc] * xv  # int32 acc: wraps on store
            for oc in range(out_c):
                out[b, oy, ox, oc] = requantize_accumulator(
                    acc[oc], bias[oc], mult[oc], shift[oc], out_zp, act_min, act_max
                )
    return out


@kernel
def depthwise_conv2d(
    x, w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, depth_multiplier,
):  # fmt: skip
    """TFLite `reference_integer_ops::DepthwiseConvPerChannel` (integer_ops/depthwise_conv.h),
    int8 or int16 input.

    x [N, H, W, Ci], w [1, KH, KW, Co] int8 with Co = Ci * depth_multiplier, bias [Co] int32
    (int8) or int64 (16x8), zeros if absent; mult/shift [Co] → [N, out_h, out_w, Co].

        oc = ic * depth_multiplier + m
        acc[oc] = Σ_{ky,kx in image} w[0,ky,kx,oc] * (x[b, iy, ix, ic] - in_zp)
        out = clamp(MBQM(acc + bias[oc], M[oc], shift[oc]) + out_zp)
    """
    n, in_h, in_w, in_c = x.shape
    k_h = w.shape[1]
    k_w = w.shape[2]
    out_c = w.shape[3]
    out = np.empty((n, out_h, out_w, out_c), x.dtype)
    zp = np.int32(in_zp)
    acc = np.empty(out_c, bias.dtype)
    for row in range(n * out_h):
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
                    for ic in range(in_c):
                        xv = np.int32(x[b, iy, ix, ic]) - zp
                        for m in range(depth_multiplier):
                            oc = ic * depth_multiplier + m
                            acc[oc] += np.int32(w[0, ky, kx, oc]) * xv
            for oc in range(out_c):
                out[b, oy, ox, oc] = requantize_accumulator(
                    acc[oc], bias[oc], mult[oc], shift[oc], out_zp, act_min, act_max
                )
    return out


@kernel
def transpose_conv(
    x, w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
    stride_h, stride_w, pad_top, pad_left, out_h, out_w,
):  # fmt: skip
    """TFLite `reference_integer_ops::TransposeConv` (integer_ops/transpose_conv.h), int8 or
    int16 input.

    x [N, H, W, Ci], w [Co, KH, KW, Ci] int8, bias [Co] int32 (int8) or int64 (16x8), zeros
    if absent; mult/shift [Co] → [N, out_h, out_w, Co]. Each input pixel scatters into a
    scratch of the accumulator's dtype (int32 wraps); taps landing outside the output are
    dropped:

        scratch[b, iy*stride_h - pad_top + ky, ix*stride_w - pad_left + kx, oc]
            += (x[b, iy, ix, ic] - in_zp) * w[oc, ky, kx, ic]
        out = clamp(MBQM(scratch + bias[oc], M[oc], shift[oc]) + out_zp)

    (Older TFLite versions had no bias input and clamped to [-128, 127]; pass zeros and the
    full range to get that behaviour.)
    """
    n, in_h, in_w, in_c = x.shape
    out_c, k_h, k_w, _ = w.shape
    wt = _filter_hwio(w)
    scratch = np.zeros((n, out_h, out_w, out_c), bias.dtype)
    zp = np.int32(in_zp)
    for b in range(n):
        for iy in range(in_h):
            oy0 = iy * stride_h - pad_top
            for ix in range(in_w):
                ox0 = ix * stride_w - pad_left
                for ic in range(in_c):
                    xv = np.int32(x[b, iy, ix, ic]) - zp
                    for ky in range(k_h):
                        oy = oy0 + ky
                        if oy < 0 or oy >= out_h:
                            continue
                        for kx in range(k_w):
                            ox = ox0 + kx
                            if ox < 0 or ox >= out_w:
                                continue
                            for oc in range(out_c):
                                scratch[b, oy, ox, oc] += xv * wt[ky, kx, ic, oc]
    out = np.empty((n, out_h, out_w, out_c), x.dtype)
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                for oc in range(out_c):
                    out[b, oy, ox, oc] = requantize_accumulator(
                        scratch[b, oy, ox, oc], bias[oc], mult[oc], shift[oc], out_zp,
                        act_min, act_max)
    return out


# the int8 names, which the fast int8 kernels and their tests call
conv2d_int8 = conv2d
depthwise_conv2d_int8 = depthwise_conv2d
transpose_conv_int8 = transpose_conv
