"""Quantizing constants: weights symmetric per channel, biases to int32, other constants affine."""

from __future__ import annotations

import numpy as np

from ..calibrate import QRANGES, choose_qparams
from ..ir import Quantization
from ..numerics import round_half_away  # noqa: F401  (re-exported to the passes)


def symmetric_weights(w: np.ndarray, axis: int | None, dtype: str = "int8",
                      narrow_range: bool = True) -> tuple[np.ndarray, Quantization]:
    """q = round(w / scale), scale = max|w| / qmax per slice along `axis` (or per tensor).

    Narrow range ([-127, 127] for int8) as the TFLite spec requires for weights. A slice that is
    all zeros gets scale 1 so nothing divides by zero.
    """
    w = np.asarray(w, np.float64)
    qmin, qmax = QRANGES[dtype]
    if narrow_range:
        qmin = -qmax
    if axis is None:
        bound = np.abs(w).max(initial=0.0).reshape(1)
    else:
        others = tuple(d for d in range(w.ndim) if d != axis)
        bound = np.abs(w).max(axis=others, initial=0.0)
    scale = np.where(bound > 0, bound / qmax, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = scale.size
    q = np.clip(round_half_away(w / scale.astype(np.float64).reshape(shape)), qmin, qmax)
    return q.astype(dtype), Quantization(scale, np.zeros(scale.size, np.int64),
                                         axis=axis if axis is not None else 0)


def bias_int32(b: np.ndarray, input_scale: float, weight_scales: np.ndarray
               ) -> tuple[np.ndarray, Quantization]:
    """int32 bias with scale input_scale * weight_scale[c] and zero point 0 (TFLite spec)."""
    scale = (np.float64(input_scale) * weight_scales.astype(np.float64)).astype(np.float32)
    q = round_half_away(np.asarray(b, np.float64) / scale.astype(np.float64))
    q = np.clip(q, -(2 ** 31) + 1, 2 ** 31 - 1).astype(np.int32)
    return q, Quantization(scale, np.zeros(scale.size, np.int64), axis=0)


def affine_constant(value: np.ndarray, dtype: str = "int8") -> tuple[np.ndarray, Quantization]:
    """A constant used like an activation (ADD/MUL operand, PRELU alpha): per-tensor affine."""
    value = np.asarray(value, np.float64)
    scale, zero_point = choose_qparams(value.min(initial=0.0), value.max(initial=0.0), dtype)
    qmin, qmax = QRANGES[dtype]
    q = np.clip(round_half_away(value / np.float64(scale)) + zero_point, qmin, qmax)
    return q.astype(dtype), Quantization.per_tensor(float(scale), zero_point)
