"""Fast int8 FULLY_CONNECTED, bit-exact with `fully_connected.fully_connected_int8`.

The layer is the 1×1 convolution GEMM of `fast_conv` over [B, D] × [D, O] (rows = batches),
with FC's float epilogue `round_half_away(double(acc) * eff_scale[o])`. One row (B = 1) uses a
GEMV micro-kernel that streams four weight panels per pass and splits panels across threads.
Hybrid FULLY_CONNECTED runs the same GEMM with each batch row as its own image of the hybrid
epilogue (`fast_conv.HybridEpilogue`).
"""

import numba
import numpy as np
from qengine.kernels.fast_conv import (
    HybridEpilogue,
    PackedConvWeights,
    _gemm,
    _hybrid_conv_call,
    pack_conv_weights,
)
from qengine.kernels.fully_connected import fully_connected_int8

__all__ = [
    "fully_connected_hybrid_fast",
    "fully_connected_int8_acc_fast",
    "fully_connected_int8_fast",
    "pack_fc_weights",
]

_FC_GEOMETRY = (1, 1, 1, 1, 0, 0, 1, 1)  # a 1x1 convolution of 1x1 images

_NO_INT = np.zeros(0, np.int32)


def pack_fc_weights(w) -> PackedConvWeights:
    """Prepare-time packing of a FULLY_CONNECTED filter [O, D] int8 for `fully_connected_int8_fast`."""
    w = np.asarray(w, np.int8)
    return pack_conv_weights(w.reshape(w.shape[0], 1, 1, w.shape[1]))


def fully_connected_int8_fast(x, packed: PackedConvWeights, bias, in_zp, w_zp, eff_scale, out_zp,
                              act_min, act_max):  # fmt: skip
    """Bit-exact fast twin of `fully_connected.fully_connected_int8` (float requantization).

    fully_connected_int8_fast(x, packed, bias, in_zp, w_zp, eff_scale, out_zp, act_min, act_max)

    x [B, D] int8; packed = pack_fc_weights(w) for w [O, D]; bias [O] int32 (zeros if absent);
    eff_scale [O] float64 = double(s_in)·double(s_w[o])/double(s_out) → [B, O] int8. A nonzero
    (legacy per-tensor) weight zero point runs the reference kernel.
    """
    if w_zp != 0:
        w = packed.w.reshape(packed.out_c, packed.in_c)
        return fully_connected_int8(x, w, bias, in_zp, w_zp, eff_scale, out_zp, act_min, act_max)
    batches, depth = x.shape
    x4 = np.ascontiguousarray(x).reshape(batches, 1, 1, depth)
    bias = np.ascontiguousarray(bias, np.int32)
    scale = np.ascontiguousarray(eff_scale, np.float64)
    return _gemm(
        x4,
        packed.panels,
        packed.out_c,
        bias,
        _NO_INT,
        _NO_INT,
        _NO_INT,
        scale,
        in_zp,
        out_zp,
        act_min,
        act_max,
        1,
        1,
        1,
        1,
        1,
        1,
        0,
        0,
        1,
        1,
        numba.get_num_threads(),
    )


def _hybrid_fc(x, packed, epilogue, raw):
    batches, depth = x.shape
    x4 = np.ascontiguousarray(x, np.int8).reshape(batches, 1, 1, depth)
    zps = np.zeros(batches, np.int16)  # TFLite subtracts zp * rowsum afterwards (zp_sums)
    out = _hybrid_conv_call(x4, packed, zps, epilogue, _FC_GEOMETRY, raw)
    return out.reshape(batches, packed.out_c)


def fully_connected_int8_acc_fast(x, packed: PackedConvWeights):
    """Bit-exact fast twin of `hybrid.matmul_accumulators`: x [B, D] int8 → int32 [B, O]."""
    return _hybrid_fc(x, packed, None, raw=True)


def fully_connected_hybrid_fast(x, packed: PackedConvWeights, epilogue: HybridEpilogue):
    """`HybridEpilogue` (one image per batch row) applied to `fully_connected_int8_acc_fast`,
    fused → float32 [B, O]."""
    return _hybrid_fc(x, packed, epilogue, raw=False)
