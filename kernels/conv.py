"""Int8 convolutions reproducing TFLite's reference kernels bit for bit.

Layouts are NHWC activations and TFLite's filter layouts. Every kernel accumulates
`filter * (x - in_zp)` in int32 (wrapping, like the C code; the order of int32 additions does
not change a wrapped sum), adds the bias, then applies the shared epilogue
`clamp(MBQM(acc, M[oc], shift[oc]) + out_zp, act_min, act_max)`.

Loops keep output channels innermost over contiguous memory (filters are re-laid out once per
call) so LLVM can vectorize them, and the outermost loop runs over `batch * out_rows` so it can
become a `prange`. Shapes are validated by the caller at prepare time.
"""

import numpy as np
from qengine.kernels.fixedpoint import requantize, wrap_int32
from qengine.kernels.jit import kernel

__all__ = ["conv2d_int8", "depthwise_conv2d_int8", "transpose_conv_int8"]


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
def conv2d_int8(
    x, w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
):  # fmt: skip
    """TFLite `reference_integer_ops::ConvPerChannel` (integer_ops/conv.h), int8 in/out.

    x [N, H, W, Ci] int8, w [Co, KH, KW, Ci/groups] int8, bias [Co] int32 (zeros if absent),
    mult/shift [Co] int32 → [N, out_h, out_w, Co] int8. Grouped when Ci = groups * w.shape[3]:
    output channel oc belongs to group oc // (Co / groups) and reads that group's input slice.

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
    out = np.empty((n, out_h, out_w, out_c), np.int8)
    zp = np.int32(in_zp)
    for row in range(n * out_h):
        b = row // out_h
        oy = row - b * out_h
        iy0 = oy * stride_h - pad_top
        acc = np.empty(out_c, np.int32)
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
                                acc[oc] += wt[ky, kx, ic, oc] * xv  # int32 wrap on store
            for oc in range(out_c):
                total = wrap_int32(np.int64(acc[oc]) + bias[oc])
                out[b, oy, ox, oc] = requantize(
                    total, mult[oc], shift[oc], out_zp, act_min, act_max
                )
    return out


@kernel
def depthwise_conv2d_int8(
    x, w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, depth_multiplier,
):  # fmt: skip
    """TFLite `reference_integer_ops::DepthwiseConvPerChannel` (integer_ops/depthwise_conv.h).

    x [N, H, W, Ci] int8, w [1, KH, KW, Co] int8 with Co = Ci * depth_multiplier,
    bias [Co] int32 (zeros if absent), mult/shift [Co] → [N, out_h, out_w, Co] int8.

        oc = ic * depth_multiplier + m
        acc[oc] = Σ_{ky,kx in image} w[0,ky,kx,oc] * (x[b, iy, ix, ic] - in_zp)
        out = clamp(MBQM(acc + bias[oc], M[oc], shift[oc]) + out_zp)
    """
    n, in_h, in_w, in_c = x.shape
    k_h = w.shape[1]
    k_w = w.shape[2]
    out_c = w.shape[3]
    out = np.empty((n, out_h, out_w, out_c), np.int8)
    zp = np.int32(in_zp)
    for row in range(n * out_h):
        b = row // out_h
        oy = row - b * out_h
        iy0 = oy * stride_h - pad_top
        acc = np.empty(out_c, np.int32)
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
                total = wrap_int32(np.int64(acc[oc]) + bias[oc])
                out[b, oy, ox, oc] = requantize(
                    total, mult[oc], shift[oc], out_zp, act_min, act_max
                )
    return out


@kernel
def transpose_conv_int8(
    x, w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
    stride_h, stride_w, pad_top, pad_left, out_h, out_w,
):  # fmt: skip
    """TFLite `reference_integer_ops::TransposeConv` (integer_ops/transpose_conv.h), int8.

    x [N, H, W, Ci] int8, w [Co, KH, KW, Ci] int8, bias [Co] int32 (zeros if absent),
    mult/shift [Co] → [N, out_h, out_w, Co] int8. Each input pixel scatters into an int32
    scratch (wrapping); taps landing outside the output are dropped:

        scratch[b, iy*stride_h - pad_top + ky, ix*stride_w - pad_left + kx, oc]
            += (x[b, iy, ix, ic] - in_zp) * w[oc, ky, kx, ic]
        out = clamp(MBQM(scratch + bias[oc], M[oc], shift[oc]) + out_zp)

    (Older TFLite versions had no bias input and clamped to [-128, 127]; pass zeros and the
    full range to get that behaviour.)
    """
    n, in_h, in_w, in_c = x.shape
    out_c, k_h, k_w, _ = w.shape
    wt = _filter_hwio(w)
    scratch = np.zeros((n, out_h, out_w, out_c), np.int32)
    zp = np.int32(in_zp)
    for b in range(n):  # scatter: rows of one image overlap, so parallelize over images only
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
    out = np.empty((n, out_h, out_w, out_c), np.int8)
    for row in range(n * out_h):
        b = row // out_h
        oy = row - b * out_h
        for ox in range(out_w):
            for oc in range(out_c):
                total = wrap_int32(np.int64(scratch[b, oy, ox, oc]) + bias[oc])
                out[b, oy, ox, oc] = requantize(
                    total, mult[oc], shift[oc], out_zp, act_min, act_max
                )
    return out
