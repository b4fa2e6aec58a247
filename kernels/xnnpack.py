"""XNNPACK's int8 arithmetic, as TFLite's default interpreter (the XNNPACK delegate) runs it.

The qs8 / qc8w GEMM, IGEMM and DWCONV microkernels of XNNPACK accumulate exactly in int32
(bias and input zero point folded in; int32 sums wrap, so the order does not matter) and
requantize in float32 ("fp32" requantization, e.g. xnn_qs8_requantize_fp32):

    scale[c] = float32(float32(s_in * s_w[c]) / s_out)        (computed once, in float32)
    out      = clamp(rint(float32(acc) * scale[c]) + out_zp, act_min, act_max)

`float32(acc)` rounds accumulators above 2^24 to nearest even, and `rint` rounds ties to even
(cvtps2dq / lrintf / the 1.5 * 2^23 "magic bias" variants all agree). Rounding before or after
the clamp gives the same result because the bounds are integers.

The other qs8 operators have their own schemes, each below with its formula: MEAN (float32
scale and bias), ADD/SUB (integer multipliers and one shift), MUL (fp32 like the GEMMs),
LEAKY_RELU (8-bit multipliers), ELU (a 256-entry table computed in float32, the output zero
point added before rounding) and RESIZE_BILINEAR (float32 source coordinates, Q11 weights
rounded to even, int32 interpolation rounded half up). LOGISTIC and TANH need nothing here:
the delegate's tables equal TFLite's reference ones. SOFTMAX, which the delegate declines, is
TFLite's optimized kernel (kernels/softmax.py, softmax_int8_float_table). Every detail was
checked against TFLite's default interpreter (ai-edge-litert 2.3.0, x86-64 AVX2) with inputs
built to expose it (tests/test_xnnpack_arithmetic.py).
"""

import numpy as np
from qengine.kernels.jit import inline_kernel, kernel

__all__ = [
    "add_int8",
    "add_params",
    "float_lut",
    "leaky_relu_table",
    "mean_fp32",
    "mean_params",
    "mul_int8",
    "mul_scale",
    "requantization_scales",
    "requantize_fp32",
    "requantize_fp32_value",
    "resize_bilinear_q11",
    "resize_coordinates_q11",
]


def requantization_scales(in_scale, filter_scales, out_scale) -> np.ndarray:
    """float32 (s_in * s_w[c]) / s_out, both operations in float32 as XNNPACK's create functions
    compute them (convolution-nhwc.c, fully-connected-nc.c)."""
    product = np.float32(in_scale) * np.asarray(filter_scales, np.float32)
    return (product / np.float32(out_scale)).astype(np.float32)


@inline_kernel
def requantize_fp32_value(acc, scale, out_zp, act_min, act_max):
    """One int32 accumulator (bias included) → int8, with its channel's float32 scale:

        out = clamp(rint(float32(acc) * scale) + out_zp, act_min, act_max)
    """
    lo = np.float32(act_min - out_zp)  # clamp in float before converting: no int overflow
    hi = np.float32(act_max - out_zp)
    v = np.float32(acc) * scale  # float32 product, one rounding
    v = min(max(v, lo), hi)
    return np.int8(np.int32(np.rint(v)) + out_zp)


@kernel
def requantize_fp32(acc, scale, out_zp, act_min, act_max):
    """acc [R, C] int32 (bias included), scale [C] float32 -> int8 [R, C], each value by
    `requantize_fp32_value`."""
    rows, channels = acc.shape
    out = np.empty((rows, channels), np.int8)
    for r in range(rows):
        for c in range(channels):
            out[r, c] = requantize_fp32_value(acc[r, c], scale[c], out_zp, act_min, act_max)
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


# -- ADD / SUB / MUL ---------------------------------------------------------------------------

ADD_MULTIPLIER_BITS = 20  # the larger multiplier of qs8 vadd lies in [2^20, 2^21)


def add_params(in_scale_a, zp_a, in_scale_b, zp_b, out_scale, subtract=False):
    """qs8 vadd constants (xnn_init_qs8_add_minmax_scalar_params), from float32 ratios:

        r_a = float32(s_a / s_out), r_b = ±float32(s_b / s_out)     (minus for SUB)
        shift = 20 - exponent(max(|r_a|, |r_b|))
        m_a = rint(r_a * 2^shift), m_b likewise                        (ties to even)
        bias = 2^(shift-1) - m_a * zp_a - m_b * zp_b
    Returns (m_a, m_b, bias, shift), or None where XNNPACK refuses the ratios (outside
    [2^-10, 2^8)); TFLite then runs its built-in kernel.
    """
    f32 = np.float32
    r_a = f32(f32(in_scale_a) / f32(out_scale))
    r_b = f32(f32(in_scale_b) / f32(out_scale))
    if not all(2.0**-10 <= r < 2.0**8 for r in (r_a, r_b)):
        return None
    exponent = int(np.frexp(max(r_a, r_b))[1]) - 1  # r = 1.f * 2^exponent
    shift = ADD_MULTIPLIER_BITS - exponent
    m_a = int(np.rint(r_a * f32(2.0**shift)))  # exact power-of-two scaling, then rint
    m_b = int(np.rint(r_b * f32(2.0**shift))) * (-1 if subtract else 1)
    bias = (1 << (shift - 1)) - m_a * int(zp_a) - m_b * int(zp_b)
    return m_a, m_b, bias, shift


@kernel
def add_int8(a, b, m_a, m_b, bias, shift, out_zp, act_min, act_max):
    """qs8 vadd on flat int8 arrays: out = clamp(((bias + a*m_a + b*m_b) >> shift) + out_zp),
    an arithmetic shift (the bias holds the 2^(shift-1) rounding term: ties go up)."""
    out = np.empty(a.size, np.int8)
    for i in range(a.size):
        acc = np.int32(bias) + np.int32(a[i]) * np.int32(m_a) + np.int32(b[i]) * np.int32(m_b)
        v = (acc >> shift) + out_zp
        out[i] = min(max(v, act_min), act_max)
    return out


def mul_scale(in_scale_a, in_scale_b, out_scale):
    """qs8 vmul: float32(float32(s_a * s_b) / s_out), or None outside XNNPACK's [2^-16, 2^8)."""
    f32 = np.float32
    scale = f32(f32(f32(in_scale_a) * f32(in_scale_b)) / f32(out_scale))
    return scale if 2.0**-16 <= scale < 2.0**8 else None


@kernel
def mul_int8(a, b, zp_a, zp_b, scale, out_zp, act_min, act_max):
    """qs8 vmul, fp32 requantization, on flat int8 arrays:
    out = clamp(rint(float32((a - zp_a) * (b - zp_b)) * scale) + out_zp)."""
    out = np.empty(a.size, np.int8)
    lo = np.float32(act_min - out_zp)
    hi = np.float32(act_max - out_zp)
    for i in range(a.size):
        product = (np.int32(a[i]) - np.int32(zp_a)) * (np.int32(b[i]) - np.int32(zp_b))
        v = min(max(np.float32(product) * scale, lo), hi)
        out[i] = np.int8(np.int32(np.rint(v)) + out_zp)
    return out


# -- LEAKY_RELU --------------------------------------------------------------------------------

NEGATIVE_SCALE_MIN = -127.99609375  # -0x1.FFFCp+6: 256 * m_neg stays >= -32767


def leaky_relu_table(in_scale, zp_in, out_scale, zp_out, alpha):
    """qs8 vlrelu as a 256-entry table (entry k for input k - 128), or None where XNNPACK's
    limits refuse the scales. Multipliers with 8 fractional bits (xnn_init_qs8_lrelu_*):

        m_pos = rint(256 * float32(s_in / s_out)),  m_neg = rint(256 * float32(r * alpha))
        out   = clamp(((x - zp_in) * m + 128) >> 8) + zp_out),  m = m_pos if x >= zp_in else m_neg
    (an arithmetic shift: ties go up).
    """
    f32 = np.float32
    positive = f32(f32(in_scale) / f32(out_scale))
    negative = f32(positive * f32(alpha))
    if not (2.0**-8 <= positive <= 2.0**7 and 2.0**-8 <= abs(negative)
            and NEGATIVE_SCALE_MIN <= negative <= 2.0**7):
        return None
    m_pos, m_neg = int(np.rint(f32(256) * positive)), int(np.rint(f32(256) * negative))
    d = np.arange(-128, 128, dtype=np.int64) - int(zp_in)
    scaled = (d * np.where(d >= 0, m_pos, m_neg) + 128) >> 8
    return np.clip(scaled + int(zp_out), -128, 127).astype(np.int8)


# -- table-driven unary ops (ELU) ----------------------------------------------------------------


def float_lut(in_scale, zp_in, out_scale, zp_out, fn):
    """A qs8 unary op as XNNPACK tabulates it (entry k for input k - 128), float32 throughout:

        y   = fn(float32(x - zp_in) * s_in)
        out = clamp(rint(y * float32(1 / s_out) + zp_out), -128, 127)
    The zero point is added before rounding (ties to even), so y / s_out = 19.5 with
    zp_out = -9 gives 10, where rint-then-add would give 11.
    """
    f32 = np.float32
    inv = f32(f32(1) / f32(out_scale))
    table = np.empty(256, np.int8)
    for k in range(256):
        y = f32(fn(f32(f32(k - 128 - int(zp_in)) * f32(in_scale))))
        v = f32(f32(y * inv) + f32(zp_out))
        table[k] = int(np.clip(np.rint(v), -128, 127))
    return table


# -- RESIZE_BILINEAR -----------------------------------------------------------------------------

RESIZE_WEIGHT_BITS = 11  # interpolation weights in Q11: alpha = w / 2048


def resize_positions(n_in, n_out, align_corners, half_pixel_centers):
    """Per output index along one axis: (first [n_out], second [n_out], alpha [n_out]), the two
    source indices and the weight of the second, in float32 as XNNPACK's resize indirection
    computes them:

        scale = (n_in - a) / (n_out - a)        a = 1 with align_corners (and n_out > 1)
        pos   = o * scale                        (align_corners, or neither flag)
        pos   = max(o * scale + (0.5 * scale - 0.5), 0)   (half_pixel_centers)
        first = floor(pos), second = min(first + 1, n_in - 1), alpha = pos - first
    """
    f32 = np.float32
    adjust = 1 if align_corners and n_out > 1 else 0
    scale = f32(f32(n_in - adjust) / f32(n_out - adjust))
    offset = f32(f32(f32(0.5) * scale) - f32(0.5))
    first, second = np.empty(n_out, np.int32), np.empty(n_out, np.int32)
    alpha = np.empty(n_out, np.float32)
    for o in range(n_out):
        pos = f32(f32(o) * scale)
        if half_pixel_centers:
            pos = min(max(f32(pos + offset), f32(0)), f32(n_in - 1))
        first[o] = int(np.floor(pos))
        second[o] = min(first[o] + 1, n_in - 1)
        alpha[o] = f32(pos - f32(first[o]))
    return first, second, alpha


def resize_coordinates_q11(n_in, n_out, align_corners, half_pixel_centers):
    """Per output index along one axis: (first, second, w), `resize_positions` with the weight
    of the second in Q11: w = rint(alpha * 2^11) (ties to even)."""
    first, second, alpha = resize_positions(n_in, n_out, align_corners, half_pixel_centers)
    weight = np.rint(alpha * np.float32(2**RESIZE_WEIGHT_BITS)).astype(np.int32)
    return np.stack([first, second, weight], axis=1)


@kernel
def resize_bilinear_q11(x, ys, xs):
    """x [N, H, W, C] int8, ys / xs from resize_coordinates_q11 -> int8 [N, len(ys), len(xs), C],
    XNNPACK's qs8 ibilinear: with a = xs weight, b = ys weight (Q11), in int32,

        top = (tl << 11) + (tr - tl) * a,  bottom = (bl << 11) + (br - bl) * a
        out = ((top << 11) + (bottom - top) * b + 2^21) >> 22     (arithmetic shift: ties up)
    |acc| < 2^7 * 2^22 = 2^29, so int32 cannot overflow.
    """
    batches, _, _, channels = x.shape
    out = np.empty((batches, ys.shape[0], xs.shape[0], channels), np.int8)
    for n in range(batches):
        for i in range(ys.shape[0]):
            t, bo, b = ys[i, 0], ys[i, 1], np.int32(ys[i, 2])
            for j in range(xs.shape[0]):
                left, right, a = xs[j, 0], xs[j, 1], np.int32(xs[j, 2])
                for c in range(channels):
                    tl, tr = np.int32(x[n, t, left, c]), np.int32(x[n, t, right, c])
                    bl, br = np.int32(x[n, bo, left, c]), np.int32(x[n, bo, right, c])
                    top = (tl << 11) + (tr - tl) * a
                    bottom = (bl << 11) + (br - bl) * a
                    acc = (top << 11) + (bottom - top) * b
                    out[n, i, j, c] = np.int8((acc + (1 << 21)) >> 22)
    return out
