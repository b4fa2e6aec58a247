"""QUANTIZE and DEQUANTIZE as qengine's ops run them: int → int (requantization) and, per
tensor, float32 → int (AffineQuantize) and int → float32 (Dequantize), as TFLite's reference
kernels compute them.

The real <-> integer formulas live in `qengine.qparams` (`quantize`, `dequantize`); the
float <-> int kernels here are their runtime forms (one pass instead of six NumPy passes, 19 ns per
element), pinned against qparams.quantize by tests/test_kernels_quantize.py, plus what the C++
does outside int32 that qparams, which saturates, does not model.

The kernel works on 1-D contiguous arrays (the caller ravels; the op is elementwise). The
output is written into a caller-provided `out` array whose dtype (int8, uint8, int16, ...) the
caller chooses; `qmin`/`qmax` are that dtype's limits. `out` is returned.
"""

import numpy as np
from qengine.kernels.fixedpoint import mbqm, quantize_multiplier
from qengine.kernels.jit import kernel

__all__ = ["affine_dequantize", "affine_quantize", "requantize", "requantize_params"]

INT32_MIN = -(2 ** 31)
TWO_31 = np.float32(2.0 ** 31)


def requantize_params(s_in, zp_in, s_out, zp_out) -> tuple:
    """QUANTIZE int → int Prepare (tflite/kernels/quantize.cc): real = double(s_in) / double(s_out).

    Returns (zp_in, m, sh, zp_out) in requantize's argument order.
    """
    real = float(np.float32(s_in)) / float(np.float32(s_out))
    m, sh = quantize_multiplier(real)
    return int(zp_in), m, sh, int(zp_out)


@kernel
def requantize(x, zp_in, m, sh, zp_out, qmin, qmax, out):
    """QUANTIZE int → int, reference_ops::Requantize (…/reference/requantize.h).

      out = clamp(MBQM(x - zp_in, m, sh) + zp_out, qmin, qmax)
    Covers int8→int8, int8↔uint8, int16→int8/int16 and int32→int8/int16 (int32 MBQM
    overload in every case). TFLite's int8↔uint8 fast path for equal scales and a zero-point
    difference of 128 (`x ^ 0x80`) gives the same values, since then m = 2^30, sh = 1 and
    MBQM is the identity.
    """
    for i in range(x.shape[0]):
        v = mbqm(np.int64(x[i]) - zp_in, m, sh) + zp_out
        out[i] = min(max(v, qmin), qmax)
    return out


@kernel
def affine_quantize(x, scale, zero_point, qmin, qmax, out):
    """float32 → int, reference_ops::AffineQuantize:

      out = clamp(int32(roundf(x / scale)) + zero_point, qmin, qmax)
    with the division in float32 and roundf rounding half away from zero. A quotient outside
    int32, or NaN, converts to INT32_MIN (x86's cvttss2si; UB in C++), and adding the zero
    point wraps in int32 (also UB; what x86 does): NaN and ±inf become qmin, unless a negative
    zero point wraps the sum to the top (then qmax).
    """
    for i in range(x.shape[0]):
        r = x[i] / scale  # float32: both operands are
        if -TWO_31 <= r < TWO_31:  # false for NaN
            whole = np.int64(r)  # truncates toward zero; exact below 2^31
            frac = r - np.float32(whole)  # exact: r and whole share r's exponent
            q = whole + (1 if frac >= 0.5 else (-1 if frac <= -0.5 else 0))
        else:
            q = np.int64(INT32_MIN)
        v = (q + zero_point - INT32_MIN) % (2 ** 32) + INT32_MIN  # int32 wrap-around
        out[i] = min(max(v, qmin), qmax)
    return out


@kernel
def affine_dequantize(x, scale, zero_point, out):
    """int → float32, reference_integer_ops::Dequantize: float(double(scale) * (x - zp)), the
    product in float64 (`scale` is the float32 scale widened) rounded once to float32."""
    for i in range(x.shape[0]):
        out[i] = np.float32(scale * np.float64(np.int64(x[i]) - zero_point))
    return out
