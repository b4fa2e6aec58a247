"""QUANTIZE (float → int, int → int requantize) and DEQUANTIZE (int → float), TFLite reference.

Kernels work on 1-D contiguous arrays (the caller ravels; these ops are elementwise).
Integer outputs are written into a caller-provided `out` array whose dtype (int8, uint8,
int16, ...) the caller chooses; `qmin`/`qmax` are that dtype's limits. `out` is returned.
"""

import numpy as np
from qengine.kernels.fixedpoint import mbqm, quantize_multiplier, round_half_away
from qengine.kernels.jit import kernel

__all__ = ["affine_quantize", "dequantize", "requantize", "requantize_params"]


@kernel
def affine_quantize(x, scale, zero_point, qmin, qmax, out):
    """QUANTIZE float32 → int, reference_ops::AffineQuantize (…/reference/quantize.h).

      q = clamp(round_half_away(float32(x) / float32(scale)) + zero_point, qmin, qmax)
    The division is a float32 division (the optimized kernel multiplies by a reciprocal and
    rounds ties to even instead: a different result). The clamp is done before the integer
    conversion, as TFLite clamps in double, so ±inf saturate. NaN inputs are undefined in C;
    here they give qmin.
    """
    s = np.float32(scale)
    for i in range(x.shape[0]):
        q = np.float64(np.float32(x[i]) / s)  # float32 quotient, exactly widened
        if np.isnan(q):
            out[i] = qmin
            continue
        # |q| may exceed int64: clamp in float first, like TFLite's clamp in double.
        q = min(max(q, -1e18), 1e18)
        v = round_half_away(q) + zero_point
        out[i] = min(max(v, qmin), qmax)
    return out


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
def dequantize(x, scale, zero_point):
    """DEQUANTIZE int → float32, reference_integer_ops::Dequantize (…/integer_ops/dequantize.h).

      out = float32(double(scale) * (x - zero_point))   (product in double, one rounding to float)
    `scale` is the tensor's float32 scale, widened exactly.
    """
    n = x.shape[0]
    out = np.empty(n, dtype=np.float32)
    s = np.float64(np.float32(scale))
    for i in range(n):
        out[i] = np.float32(s * np.float64(np.int64(x[i]) - zero_point))
    return out
