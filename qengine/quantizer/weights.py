"""Quantizing constants: weights symmetric per channel, biases to int32, other constants affine.

The arithmetic is `qengine.qparams`'s; here it is applied to the quantizer's tensors.
"""

from __future__ import annotations

import numpy as np

from ..ir import Quantization
from ..qparams import (
    choose_qparams,
    dequantize,
    power_of_two_scales,
    quantize,
    quantize_bias,
    quantize_per_tensor,
    zero_point_from_min,
)


def bias_int32(b: np.ndarray, input_scale: float, weight_scales: np.ndarray
               ) -> tuple[np.ndarray, Quantization]:
    """int32 bias with scale input_scale * weight_scale[c] and zero point 0 (TFLite spec)."""
    return _bias(b, input_scale, weight_scales, "int32")


def bias_int64(b: np.ndarray, input_scale: float, weight_scales: np.ndarray
               ) -> tuple[np.ndarray, Quantization]:
    """The 16x8 bias: int64 with scale input_scale * weight_scale[c] and zero point 0."""
    return _bias(b, input_scale, weight_scales, "int64")


def _bias(b, input_scale, weight_scales, dtype: str) -> tuple[np.ndarray, Quantization]:
    q, scale = quantize_bias(b, input_scale, weight_scales, dtype)
    return q, Quantization(scale, np.zeros(scale.size, np.int64), axis=0)


def affine_constant(value: np.ndarray, dtype: str = "int8") -> tuple[np.ndarray, Quantization]:
    """A constant used like an activation (ADD/MUL operand, PRELU alpha): per-tensor affine."""
    q, scale, zero_point = quantize_per_tensor(value, dtype)
    return q, Quantization.per_tensor(float(scale), zero_point)


# ---------------------------------------------------------------------------------------------
# research schemes (qengine.quantizer.scheme): fewer bits, full range, power-of-two scales,
# asymmetric and blockwise weights


def scheme_weights(w: np.ndarray, axis: int, scheme) -> tuple[np.ndarray, Quantization]:
    """Weights the int8 kernels can run: zero point 0, one scale per channel (or tensor).

    q = clip(round(w / scale), qmin, qmax) with scale = max|w| / qmax over the slice, rounded
    up to a power of two if the scheme asks (rounding up keeps max|w| inside the range).
    """
    w = np.asarray(w, np.float64)
    qmin, qmax = scheme.weight_range
    reduce = None if scheme.granularity == "per_tensor" else axis
    if scheme.weight_clipping == "mse":
        rows = w.reshape(1, -1) if reduce is None else np.moveaxis(w, axis, 0).reshape(
            w.shape[axis], -1)
        bound = mse_bounds(rows, qmin, qmax)
    else:
        bound = np.abs(w).max(axis=_others(w, reduce), initial=0.0).reshape(-1)
    scale = power_of_two_scales(bound / qmax, scheme.power_of_two)
    q = quantize(w, scale, 0, "int8", "float64", qrange=(qmin, qmax), axis=reduce)
    return q, Quantization(scale, np.zeros(scale.size, np.int64),
                           axis=axis if reduce is not None else 0)


def fake_quantized_weights(w: np.ndarray, axis: int, scheme) -> np.ndarray:
    """dequantize(quantize(w)) for schemes no int8 kernel runs: affine (zero point per slice)
    and/or blockwise (one scale per `block_size` consecutive values along the last axis, the
    input channels of CONV_2D / FULLY_CONNECTED filters, at each output channel and kernel tap).
    Returned as float32 values scale * (q - zero_point)."""
    w = np.asarray(w, np.float64)
    if scheme.granularity == "blockwise" and axis != w.ndim - 1:
        rows = w.reshape(-1, w.shape[-1])
        return _fake_quant_blocks(rows, scheme).reshape(w.shape).astype(np.float32)
    # per-channel or per-tensor affine (DEPTHWISE's last axis is its output channels, so its
    # blockwise falls back to one block per channel)
    moved = np.moveaxis(w, axis, 0) if scheme.granularity != "per_tensor" else w.reshape(1, -1)
    rows = moved.reshape(moved.shape[0], -1)
    fake = _fake_quant_rows(rows, scheme).reshape(moved.shape)
    out = np.moveaxis(fake, 0, axis) if scheme.granularity != "per_tensor" else fake
    return out.reshape(w.shape).astype(np.float32)


def _fake_quant_blocks(rows: np.ndarray, scheme) -> np.ndarray:
    size = scheme.block_size
    padded = -(-rows.shape[1] // size) * size
    wide = np.zeros((rows.shape[0], padded))
    wide[:, :rows.shape[1]] = rows
    blocks = wide.reshape(-1, size)  # every (row, block) its own scale; padding adds zeros
    return _fake_quant_rows(blocks, scheme).reshape(rows.shape[0], padded)[:, :rows.shape[1]]


def _fake_quant_rows(rows: np.ndarray, scheme) -> np.ndarray:
    """Quantize each row with its own scale (and zero point if asymmetric), then dequantize."""
    qmin, qmax = scheme.weight_range
    if scheme.symmetric:
        scale = power_of_two_scales(np.abs(rows).max(axis=1, initial=0.0) / qmax,
                                    scheme.power_of_two)
        zero = np.zeros(rows.shape[0])
    else:
        scale, zero = _affine_params(rows, qmin, qmax, scheme.power_of_two)
    q = quantize(rows, scale, zero, "int8", "float64", qrange=(qmin, qmax), axis=0)
    return dequantize(q, scale, zero, axis=0, dtype=np.float64)


def _affine_params(rows: np.ndarray, qmin: int, qmax: int, power_of_two: bool):
    """Per-row affine parameters through the one choose_qparams (range widened to hold 0)."""
    pairs = [choose_qparams(lo, hi, qrange=(qmin, qmax)) for lo, hi in
             zip(rows.min(axis=1, initial=0.0), rows.max(axis=1, initial=0.0))]
    scale = np.array([s for s, _ in pairs], np.float32)
    zero = np.array([z for _, z in pairs], np.float64)
    if power_of_two:
        lo = rows.min(axis=1, initial=0.0)
        scale = power_of_two_scales(scale)
        zero = zero_point_from_min(lo, scale, qmin, qmax)
    return scale, zero


def _others(w: np.ndarray, axis: int | None):
    return None if axis is None else tuple(d for d in range(w.ndim) if d != axis)


# ---------------------------------------------------------------------------------------------
# sub-byte storage: TFLite's INT4/INT2 tensors and blockwise float16 scales


def storage_dtype(bits: int) -> str:
    """The narrowest tensor type holding `bits`-bit symmetric weights."""
    return "int2" if bits <= 2 else "int4" if bits <= 4 else "int8"


def blockwise_weights(w: np.ndarray, block_size: int, bits: int, clipping: str = "minmax"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """[rows, depth] weights -> (q int8 [rows, depth], float16 scales [rows, depth / block]).

    Symmetric, narrow range: scale = bound / qmax over each block (bound = max|w|, or the
    MSE-optimal clipping bound), rounded to float16 (the type TFLite reads), and
    q = clip(round(w / scale)) with that rounded scale."""
    w = np.asarray(w, np.float64)
    rows, depth = w.shape
    qmax = 2 ** (bits - 1) - 1
    blocks = w.reshape(rows, depth // block_size, block_size)
    if clipping == "mse":
        bound = mse_bounds(blocks.reshape(-1, block_size), -qmax, qmax).reshape(rows, -1)
    else:
        bound = np.abs(blocks).max(axis=2)
    scale = float16_scales(bound, qmax)
    q = quantize(blocks, scale.astype(np.float64)[:, :, None], 0, "int8", "float64",
                 qrange=(-qmax, qmax))
    return q.reshape(rows, depth), scale


def float16_scales(bound: np.ndarray, qmax: int) -> np.ndarray:
    """bound / qmax as the float16 scales TFLite reads (1 for an all-zero block; kept inside
    float16's normal range)."""
    tiny, huge = float(np.finfo(np.float16).tiny), float(np.finfo(np.float16).max)
    return np.where(bound > 0, np.clip(bound / qmax, tiny, huge), 1.0).astype(np.float16)


# Clipping bounds tried by mse_bounds, as fractions of max|w|
CLIP_RATIOS = np.linspace(0.3, 1.0, 71)


def mse_bounds(rows: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """Per row, the clipping bound b = r * max|w| (r in CLIP_RATIOS) whose quantization
    s * clip(round(w / s), qmin, qmax), s = b / qmax, has the least squared error."""
    rows = np.asarray(rows, np.float64)
    peak = np.abs(rows).max(axis=1, initial=0.0)
    best, best_error = peak.copy(), np.full(len(rows), np.inf)
    for ratio in CLIP_RATIOS:
        scale = np.where(peak > 0, ratio * peak / qmax, 1.0)[:, None]
        fake = quantize(rows, scale, 0, "int8", "float64", qrange=(qmin, qmax)) * scale
        error = ((rows - fake) ** 2).sum(1)
        better = error < best_error
        best_error[better], best[better] = error[better], ratio * peak[better]
    return best
