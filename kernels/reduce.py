"""Int8 MEAN and SUM reproducing TFLite's reference `QuantizedMeanOrSum` bit for bit.

The caller reshapes (and, for non-adjacent axes, transposes) the input to
[outer, reduced, inner] so that the reduced axes form the middle dimension; the result is
[outer, inner], which the caller reshapes to the op's output shape (keep_dims or not).

MEAN and SUM share one kernel and differ only in the multiplier, computed at prepare time by
`mean_multiplier` / `sum_multiplier` (TFLite `reduce.cc` PrepareMeanOrSum and
`reference/reduce.h` QuantizedMeanOrSum).
"""

import numpy as np
from qengine.kernels.fixedpoint import mbqm, quantize_multiplier, wrap_int32
from qengine.kernels.jit import inline_kernel, kernel

__all__ = ["mean_int8_ref", "mean_multiplier", "sum_int8_ref", "sum_multiplier"]


def sum_multiplier(in_scale: float, out_scale: float) -> tuple[int, int]:
    """(M, shift) = QuantizeMultiplier(double(s_in) / double(s_out)).

    Pass the tensors' float32 scales (as Python floats; widening is exact).
    """
    return quantize_multiplier(float(in_scale) / float(out_scale))


def mean_multiplier(in_scale: float, out_scale: float, n: int) -> tuple[int, int]:
    """SUM's multiplier with 1/n folded in, exactly as the reference MEAN does it.

        sh = min(floor(log2(n)), 32, 31 + shift)
        M' = int32((int64(M) << sh) / n)       (truncating division)
        shift' = shift - sh
    For n == 0 the op writes zeros and the multiplier is unused; (M, shift) is returned.
    """
    mult, shift = sum_multiplier(in_scale, out_scale)
    if n <= 0:
        return mult, shift
    sh = min(n.bit_length() - 1, 32, 31 + shift)
    return (mult << sh) // n, shift - sh  # both non-negative, so // truncates like C


@kernel
def sum_int8_ref(x, in_zp, mult, shift, out_zp):
    """TFLite `reference_ops::QuantizedMeanOrSum<int8_t, int32_t>` (reference/reduce.h).

    x [outer, n, inner] int8 → [outer, inner] int8; mult/shift from `sum_multiplier` (SUM) or
    `mean_multiplier` (MEAN):

        sum = Σ_r x[o, r, i]                          (int32, wrapping)
        out = clamp(MBQM(int32(sum - in_zp * n), M, shift) + out_zp, -128, 127)

    No fused activation. An empty reduction (n == 0) gives zeros.
    """
    outer, n, inner = x.shape
    out = np.zeros((outer, inner), np.int8)
    if n == 0:
        return out
    offset = np.int64(in_zp) * np.int64(n)
    acc = np.zeros(inner, np.int32)  # one buffer: an allocation per row cost ~100 ns
    for o in range(outer):
        for r in range(n):
            for i in range(inner):
                acc[i] += x[o, r, i]
        for i in range(inner):
            out[o, i] = _requantize_sum(acc[i], offset, mult, shift, out_zp)
            acc[i] = 0
    return out


@inline_kernel
def _requantize_sum(acc, offset, mult, shift, out_zp):
    shifted = wrap_int32(np.int64(acc) - offset)
    v = wrap_int32(mbqm(shifted, mult, shift) + np.int64(out_zp))
    return min(max(v, np.int64(-128)), np.int64(127))


@kernel
def mean_int8_ref(x, in_zp, mult, shift, out_zp):
    """TFLite reference int8 MEAN (`QuantizedMeanOrSum`, compute_sum=false).

    The same arithmetic as `sum_int8_ref`; the division by n lives in the multiplier from
    `mean_multiplier(s_in, s_out, n)`. (The optimized kernel for 4-D keep_dims over H,W uses a
    different formula; this is the BUILTIN_REF one.)
    """
    return sum_int8_ref(x, in_zp, mult, shift, out_zp)
