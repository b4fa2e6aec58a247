"""Int8 FULLY_CONNECTED and BATCH_MATMUL reproducing TFLite's reference kernels bit for bit."""

import numpy as np
from qengine.kernels.fixedpoint import requantize, round_half_away_int32, wrap_int32
from qengine.kernels.jit import kernel

__all__ = ["batch_matmul_int8", "fully_connected_int8", "fully_connected_int8_mbqm"]


@kernel
def _fc_accumulators(x, w, bias, in_zp, w_zp):
    """acc[b, o] = Σ_d (w[o,d] - w_zp) * (x[b,d] - in_zp) + bias[o], int32 with wrapping."""
    batches, depth = x.shape
    out_c = w.shape[0]
    xs = np.empty(depth, np.int32)
    ws = np.empty(depth, np.int32)
    acc = np.empty((batches, out_c), np.int32)
    for b in range(batches):
        for d in range(depth):
            xs[d] = np.int32(x[b, d]) - np.int32(in_zp)
        for o in range(out_c):
            for d in range(depth):
                ws[d] = np.int32(w[o, d]) - np.int32(w_zp)
            total = np.int32(0)
            for d in range(depth):  # an int32 reduction LLVM can vectorize
                total += ws[d] * xs[d]
            acc[b, o] = wrap_int32(np.int64(total) + bias[o])
    return acc


@kernel
def fully_connected_int8(x, w, bias, in_zp, w_zp, eff_scale, out_zp, act_min, act_max):
    """TFLite `reference_integer_ops::FullyConnected[PerChannel]`, float-requant overloads.

    The current reference (LiteRT >= 1.3.0, "Make the fully_connected ref kernel do requant in
    float") used by BUILTIN_REF. x [B, D] int8, w [O, D] int8, bias [O] int32 (zeros if absent),
    eff_scale [O] float64 = double(s_in) * double(s_w[o]) / double(s_out) → [B, O] int8:

        acc = Σ_d (w[o,d] - w_zp) * (x[b,d] - in_zp) + bias[o]     (w_zp = 0 when per-channel)
        out = clamp(int32(round_half_away(double(acc) * eff_scale[o])) + out_zp)

    The double→int32 cast of an out-of-range value follows x86-64 (INT32_MIN).
    """
    acc = _fc_accumulators(x, w, bias, in_zp, w_zp)
    batches, out_c = acc.shape
    out = np.empty((batches, out_c), np.int8)
    for b in range(batches):
        for o in range(out_c):
            scaled = round_half_away_int32(np.float64(acc[b, o]) * eff_scale[o])
            v = wrap_int32(scaled + np.int64(out_zp))
            out[b, o] = min(max(v, np.int64(act_min)), np.int64(act_max))
    return out


@kernel
def fully_connected_int8_mbqm(x, w, bias, in_zp, w_zp, mult, shift, out_zp, act_min, act_max):
    """TFLite `reference_integer_ops::FullyConnected[PerChannel]`, multiplier/shift overloads.

    The pre-LiteRT-1.3.0 reference and tflite-micro's kernel; mult/shift [O] (repeat the one
    per-tensor value O times):

        out = clamp(MBQM(acc, M[o], shift[o]) + out_zp)
    """
    acc = _fc_accumulators(x, w, bias, in_zp, w_zp)
    batches, out_c = acc.shape
    out = np.empty((batches, out_c), np.int8)
    for b in range(batches):
        for o in range(out_c):
            out[b, o] = requantize(acc[b, o], mult[o], shift[o], out_zp, act_min, act_max)
    return out


@kernel
def batch_matmul_int8(x, y, in_zp_x, in_zp_y, mult, shift, out_zp, act_min, act_max):
    """TFLite `reference_ops::BatchMatMul<int8_t, int32_t>` (reference/batch_matmul.h).

    x [B, M, K] int8 (LHS), y [B, K, N] int8 (RHS) → [B, M, N] int8. The caller broadcasts
    batches and applies adj_x/adj_y. One per-tensor multiplier; TFLite's driver passes the RHS
    zero point as weights_offset and the LHS zero point as input_offset:

        acc = Σ_k (x[b,m,k] - in_zp_x) * (y[b,k,n] - in_zp_y)       (int32, wrapping; no bias)
        out = clamp(MBQM(acc, M, shift) + out_zp)                  (the op has no fused activation)
    """
    batches, rows, depth = x.shape
    cols = y.shape[2]
    out = np.empty((batches, rows, cols), np.int8)
    for row in range(batches * rows):
        b = row // rows
        m = row - b * rows
        acc = np.zeros(cols, np.int32)
        yv = np.empty(cols, np.int32)
        for k in range(depth):
            xv = np.int32(x[b, m, k]) - np.int32(in_zp_x)
            for n in range(cols):
                yv[n] = np.int32(y[b, k, n]) - np.int32(in_zp_y)
            for n in range(cols):
                acc[n] += xv * yv[n]  # int32 wrap on store
        for n in range(cols):
            out[b, m, n] = requantize(acc[n], mult, shift, out_zp, act_min, act_max)
    return out
