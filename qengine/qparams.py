"""Quantization parameters and the real <-> integer conversion: the one place for each formula.

    real = scale * (q - zero_point)
    q    = clamp(round(real / scale) + zero_point, qmin, qmax)

Two precisions of the division exist in TFLite and both are needed bit for bit:

- `"float32"`: the runtime's QUANTIZE (reference_ops::AffineQuantize) and every activation
  bound a kernel's Prepare computes divide a float32 value by the float32 scale, then round
  half away from zero;
- `"float64"`: the converter quantizes constants (weights, biases, constant operands) in
  double precision from the float32 scale.

Everything here is plain NumPy on scalars or arrays; the Numba kernels never quantize a float.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError, InvalidModelError
from .numerics import round_half_away, round_half_away_int

INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
              "int32": (-(2 ** 31), 2 ** 31 - 1), "int4": (-8, 7), "int2": (-2, 1)}
QUANTIZED_TYPES = ("int8", "uint8", "int16")  # integer types of activations with a scale
LOW_BIT_TYPES = ("int4", "int2")  # weights below 8 bits
INT32_BIAS_RANGE = (-(2 ** 31) + 1, 2 ** 31 - 1)  # the converter keeps -2^31 out of biases


def int_range(dtype: str, narrow: bool = False) -> tuple[int, int]:
    """[qmin, qmax] of an integer type; narrow drops qmin (int8 weights: [-127, 127])."""
    try:
        qmin, qmax = INT_RANGES[dtype]
    except KeyError:
        raise InputError(f"no integer range for dtype {dtype!r}") from None
    return qmin + int(narrow), qmax


# -- validation ---------------------------------------------------------------------------------

def check_scale(scale: float, name: str) -> float:
    """A scale must be a positive finite float (TFLite divides by it)."""
    scale = float(scale)
    if not scale > 0 or not math.isfinite(scale):
        raise InvalidModelError(f"tensor {name!r} has scale {scale}; it must be positive")
    return scale


def per_tensor_params(quantization, name: str) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized tensor, validated."""
    q = quantization
    if q is None or q.scale.size == 0:
        raise InvalidModelError(f"tensor {name!r} has no quantization parameters")
    if q.scale.size != 1 or q.zero_point.size != 1:
        raise InvalidModelError(f"tensor {name!r} needs per-tensor quantization")
    return check_scale(q.scale[0], name), int(q.zero_point[0])


def axis_shape(ndim: int, axis: int, size: int) -> list[int]:
    """The broadcast shape of per-axis parameters: `size` on `axis`, 1 elsewhere."""
    shape = [1] * ndim
    shape[axis] = size
    return shape


def _broadcastable(ndim: int, axis: int | None, scale: np.ndarray, zero_point: np.ndarray):
    """Per-axis parameters shaped to broadcast along `axis`; per-tensor ones as scalars."""
    if axis is None:
        return (scale.reshape(()) if scale.size == 1 else scale,
                zero_point.reshape(()) if zero_point.size == 1 else zero_point)
    shape = axis_shape(ndim, axis, scale.size)
    return scale.reshape(shape), np.broadcast_to(zero_point, scale.shape).reshape(shape)


# -- choosing parameters ------------------------------------------------------------------------

def choose_qparams(rmin: float, rmax: float, dtype: str = "int8", symmetric: bool = False,
                   narrow_range: bool = False, *, power_of_two: bool = False,
                   qrange: tuple[int, int] | None = None) -> tuple[np.float32, int]:
    """Scale and zero point for real values in [rmin, rmax], as TFLite's converter picks them.

    The range is first widened to contain 0, so that 0.0 (padding, ReLU's floor) is exactly
    representable. Asymmetric: scale = (rmax - rmin) / (qmax - qmin), and the zero point is
    the rounded integer nudged into [qmin, qmax], taken from whichever end (qmin - rmin/scale or
    qmax - rmax/scale) loses less precision. Symmetric: zero point 0 and
    scale = max(|rmin|, |rmax|) / qmax. A range that is all zeros gets scale 1.
    """
    qmin, qmax = qrange or int_range(dtype)
    if narrow_range:
        qmin += 1
    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    if not (math.isfinite(rmin) and math.isfinite(rmax)):
        raise InputError(f"cannot quantize the range [{rmin}, {rmax}]")
    if power_of_two:
        return _power_of_two_qparams(rmin, rmax, qmin, qmax, symmetric)
    if symmetric:
        bound = max(-rmin, rmax)
        scale = bound / qmax if bound > 0 else 1.0
        return np.float32(scale), 0
    if rmax - rmin == 0:
        return np.float32(1.0), 0
    scale = (rmax - rmin) / (qmax - qmin)
    from_min, from_max = qmin - rmin / scale, qmax - rmax / scale
    error_min = abs(qmin) + abs(rmin / scale)
    error_max = abs(qmax) + abs(rmax / scale)
    zero_point = from_min if error_min < error_max else from_max
    nudged = qmin if zero_point < qmin else qmax if zero_point > qmax else \
        round_half_away_int(zero_point)
    return np.float32(scale), int(nudged)


def _power_of_two_qparams(rmin: float, rmax: float, qmin: int, qmax: int,
                          symmetric: bool) -> tuple[np.float32, int]:
    """The research scheme's scale 2^ceil(log2 s) for the s above (never smaller, so the range
    still fits); the zero point then follows from rmin (see `zero_point_from_min`)."""
    if symmetric:
        bound = max(-rmin, rmax)
        raw = bound / qmax if bound > 0 else 1.0
    else:
        raw = (rmax - rmin) / (qmax - qmin) if rmax > rmin else 1.0
    scale = float(2.0 ** math.ceil(math.log2(raw)))
    if symmetric:
        return np.float32(scale), 0
    return np.float32(scale), int(zero_point_from_min(rmin, scale, qmin, qmax))


def zero_point_from_min(rmin, scale, qmin: int, qmax: int):
    """clamp(round(qmin - rmin / scale), qmin, qmax) in float64: the zero point that maps rmin
    to qmin (scalars or arrays)."""
    rmin = np.asarray(rmin, np.float64)
    zero = np.clip(round_half_away(qmin - rmin / np.asarray(scale, np.float64)), qmin, qmax)
    return zero if zero.ndim else float(zero)


def power_of_two_scales(raw, enabled: bool = True) -> np.ndarray:
    """float32 scales from raw ones; a zero (an all-zero slice) gets 1, and 2^ceil(log2 s)
    when `enabled`."""
    raw = np.asarray(raw, np.float64)
    scale = np.where(raw > 0, raw, 1.0)
    if enabled:
        scale = np.exp2(np.ceil(np.log2(scale)))
    return scale.astype(np.float32)


# -- real -> integer ----------------------------------------------------------------------------

def rounded_quotient(values, scale, precision: str = "float32"):
    """round_half_away(values / scale) with the division in `precision` (see the module
    docstring); float result, scalars or arrays (scale may be per-axis, broadcast)."""
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision is 'float32' or 'float64', not {precision!r}")
    with np.errstate(invalid="ignore"):  # ±inf stay ±inf (and saturate in quantize)
        return round_half_away(np.asarray(values, precision) / np.asarray(scale, precision))


def quantize(values, scale, zero_point, dtype: str, precision: str = "float32", *,
             qrange: tuple[int, int] | None = None, axis: int | None = None) -> np.ndarray:
    """q = clamp(round(values / scale) + zero_point, qmin, qmax) as a `dtype` array.

    Per-axis: `scale` and `zero_point` are 1-D along `axis` of `values`. `qrange` narrows the
    clamp (weights: [-127, 127]); ±inf saturate; the clamp happens in float64 before the cast.
    """
    values = np.asarray(values)
    scale, zero_point = _broadcastable(values.ndim, axis, np.asarray(scale),
                                       np.asarray(zero_point))
    qmin, qmax = qrange or int_range(dtype)
    q = rounded_quotient(values, scale, precision).astype(np.float64)
    return np.clip(q + zero_point.astype(np.float64), qmin, qmax).astype(dtype)


def quantize_reciprocal(values, scale, zero_point, dtype: str) -> np.ndarray:
    """TFLite's optimized (and XNNPACK's) QUANTIZE: rint(float32(x) * float32(1 / scale)),
    ties to even, + zero point, clamped."""
    inverse = np.float32(1.0) / np.float32(scale)
    q = np.rint(np.asarray(values, np.float32) * inverse)
    return np.clip(q + zero_point, *int_range(dtype)).astype(dtype)


def quantize_bound_xnnpack(value: float, scale: float, zero_point: int) -> int:
    """A fused activation bound as XNNPACK quantizes it: rint(v / s + zp) all in float32 (the
    zero point is added before rounding, ties to even), clamped to int8."""
    q = np.rint(np.float32(value) / np.float32(scale) + np.float32(zero_point))
    return int(np.clip(q, *INT_RANGES["int8"]))


def quantize_per_tensor(values, dtype: str = "int8") -> tuple[np.ndarray, np.float32, int]:
    """A constant used like an activation (ADD/MUL operand, PRELU alpha): affine, its own
    min/max range, quantized in float64 as the converter does. Returns (q, scale, zp)."""
    values = np.asarray(values, np.float64)
    scale, zero_point = choose_qparams(values.min(initial=0.0), values.max(initial=0.0), dtype)
    return quantize(values, scale, zero_point, dtype, "float64"), scale, zero_point


def quantize_symmetric(values, dtype: str, qrange: tuple[int, int] | None = None
                       ) -> tuple[np.ndarray, np.float32]:
    """Zero point 0, scale max|v| / qmax (16x8 constant operands: [-32767, 32767])."""
    values = np.asarray(values, np.float64)
    qmin, qmax = qrange or int_range(dtype, narrow=True)
    scale, _ = choose_qparams(values.min(initial=0.0), values.max(initial=0.0),
                              symmetric=True, qrange=(qmin, qmax))
    return quantize(values, scale, 0, dtype, "float64", qrange=(qmin, qmax)), scale


# -- biases -------------------------------------------------------------------------------------

def bias_scales(input_scale: float, weight_scales) -> np.ndarray:
    """scale_bias[c] = input_scale * weight_scale[c], the product in float64 stored as float32."""
    return (np.float64(input_scale) * np.asarray(weight_scales, np.float64)).astype(np.float32)


def quantize_bias(values, input_scale: float, weight_scales, dtype: str = "int32"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A bias as the converter writes it: zero point 0, scale input_scale * weight_scale[c],
    round(b / scale) in float64. int32 (int8 scheme) is clamped to [-2^31 + 1, 2^31 - 1];
    int64 (16x8) is not. Returns (q, scales)."""
    scale = bias_scales(input_scale, weight_scales)
    q = rounded_quotient(values, scale, "float64")
    if dtype == "int32":
        q = np.clip(q, *INT32_BIAS_RANGE)
    elif dtype != "int64":
        raise ValueError(f"biases are int32 or int64, not {dtype}")
    return q.astype(dtype), scale


# -- integer -> real ----------------------------------------------------------------------------

def dequantize(q, scale, zero_point, axis: int | None = None, dtype=np.float32) -> np.ndarray:
    """real = double(scale) * (q - zero_point), rounded once to `dtype` (float32:
    reference_integer_ops::Dequantize; float64 keeps the exact product)."""
    q = np.asarray(q)
    scale, zero_point = _broadcastable(q.ndim, axis, np.asarray(scale, np.float32).astype(
        np.float64), np.asarray(zero_point, np.int64))
    return (scale * (q.astype(np.int64) - zero_point)).astype(dtype)
