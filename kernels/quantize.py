"""QUANTIZE int → int (requantization), TFLite reference; what qengine's QUANTIZE op runs.

Float → int QUANTIZE and DEQUANTIZE are NumPy expressions in `qengine.qparams` (`quantize`,
`dequantize`), the one place of the real <-> integer formulas.

The kernel works on 1-D contiguous arrays (the caller ravels; the op is elementwise). The
output is written into a caller-provided `out` array whose dtype (int8, uint8, int16, ...) the
caller chooses; `qmin`/`qmax` are that dtype's limits. `out` is returned.
"""

import numpy as np
from qengine.kernels.fixedpoint import mbqm, quantize_multiplier
from qengine.kernels.jit import kernel

__all__ = ["requantize", "requantize_params"]


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
