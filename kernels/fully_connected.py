"""Integer FULLY_CONNECTED (int8 and 16x8) and int8 BATCH_MATMUL reproducing TFLite's reference
kernels bit for bit. As in `conv.py`, one loop serves int8 and int16 inputs and the bias's
dtype names the accumulator: int32 (wrapping) for int8, int64 for 16x8."""

import numpy as np
from qengine.kernels.fixedpoint import requantize, round_half_away_int32, wrap_int32
from qengine.kernels.jit import kernel

__all__ = ["batch_matmul_int8", "fully_connected", "fully_connected_int8",
           "fully_connected_int8_mbqm"]


@kernel
def _fc_accumulators(x, w, bias, in_zp, w_zp):
    """acc[b, o] = Σ_d (w[o,d] - w_zp) * (x[b,d] - in_zp) + bias[o] in the bias's dtype: the sum
    is exact in int64 (|term| < 2^24) and an int32 store wraps it as the C int32 sum does."""
    batches, depth = x.shape
    out_c = w.shape[0]
    xs = np.empty(depth, np.int32)
    ws = np.empty(depth, np.int32)
    acc = np.empty((batches, out_c), bias.dtype)
    for b in range(batches):
        for d in range(depth):
            xs[d] = np.int32(x[b, d]) - np.int32(in_zp)
        for o in range(out_c):
            for d in range(depth):
                ws[d] = np.int32(w[o, d]) - np.int32(w_zp)
            total = np.int64(0)
            for d in range(depth):  # a reduction LLVM can vectorize
                total += ws[d] * xs[d]
            acc[b, o] = total + bias[o]  # an int32 accumulator wraps on this store
    return acc


@kernel
def fully_connected(x, w, bias, in_zp, w_zp, eff_scale, out_zp, act_min, act_max):
    """TFLite `reference_integer_ops::FullyConnected[PerChannel]`, float-requant overloads,
    int8 or int16 input.

    The current reference (LiteRT >= 1.3.0, "Make the fully_connected ref kernel do requant in
    float") used by BUILTIN_REF. x [B, D] int8/int16, w [O, D] int8, bias [O] int32 (int8) or
    int64 (16x8), zeros if absent; eff_scale [O] float64 = double(s_in) * double(s_w[o]) /
    double(s_out) → [B, O] of x's dtype:

        acc = Σ_d (w[o,d] - w_zp) * (x[b,d] - in_zp) + bias[o]     (w_zp = 0 when per-channel)
        out = clamp(int32(round_half_away(double(acc) * eff_scale[o])) + out_zp)

    16x8 passes in_zp = out_zp = 0 (int16 activations are symmetric). The double→int32 cast
    of an out-of-range value follows x86-64 (INT32_MIN).
    """
    acc = _fc_accumulators(x, w, bias, in_zp, w_zp)
    batches, out_c = acc.shape
    out = np.empty((batches, out_c), x.dtype)
    for b in range(batches):
        for o in range(out_c):
            scaled = round_half_away_int32(np.float64(acc[b, o]) * eff_scale[o])
            v = wrap_int32(scaled + np.int64(out_zp))
            out[b, o] = min(max(v, np.int64(act_min)), np.int64(act_max))
    return out


fully_connected_int8 = fully_connected  # the int8 name, which gemm_int8 and its tests call


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
