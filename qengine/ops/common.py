"""Helpers shared by op prepare functions: fused activations, padding and convolution
geometry, broadcasting, per-tensor parameters."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidModelError
from ..qparams import QUANTIZED_TYPES, int_range, per_tensor_params, rounded_quotient
from ..runtime.registry import OpContext, Spec
from .opdef import definitions

# ActivationFunctionType codes
NONE, RELU, RELU_N1_TO_1, RELU6, TANH, SIGN_BIT = range(6)
FLT_MAX = float(np.finfo(np.float32).max)
_FLOAT_BOUNDS = {RELU: (0.0, FLT_MAX), RELU_N1_TO_1: (-1.0, 1.0), RELU6: (0.0, 6.0)}



def fused_activation(ctx: OpContext) -> int:
    code = getattr(ctx.options, "fusedActivationFunction", NONE) if ctx.options else NONE
    if code not in (NONE, RELU, RELU_N1_TO_1, RELU6, TANH, SIGN_BIT):
        raise ctx.invalid(f"unknown fused activation {code}")
    return code


def float_activation(ctx: OpContext):
    """The fused activation as a clamp on float arrays, as TFLite's float kernels apply it.

    TFLite's CalculateActivationRange knows only RELU, RELU6 and RELU_N1_TO_1; every other code
    (NONE, TANH, SIGN_BIT) clamps to [-FLT_MAX, FLT_MAX], which turns +-inf into +-FLT_MAX and
    lets NaN through.
    """
    low, high = float_activation_bounds(ctx)

    def clamp(x):
        return np.clip(x, low, high, out=x) if x.flags.writeable else np.clip(x, low, high)

    return clamp


def float_activation_bounds(ctx: OpContext) -> tuple[float, float]:
    """[low, high] of the fused activation's clamp (see float_activation)."""
    return float_bounds(fused_activation(ctx))


def float_bounds(code: int) -> tuple[float, float]:
    """[low, high] of the clamp of ActivationFunctionType `code` on floats."""
    return _FLOAT_BOUNDS.get(code, (-FLT_MAX, FLT_MAX))


def quantized_activation_range(ctx: OpContext, scale: float, zero_point: int,
                               dtype: str) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized: the clamp a fused activation becomes."""
    qmin, qmax = int_range(dtype)
    code = fused_activation(ctx)

    def quantize(v):  # zp + round(v / scale), the division in float32 as TFLite does
        return zero_point + int(rounded_quotient(v, scale))

    if code == RELU:
        return max(qmin, zero_point), qmax
    if code == RELU6:
        return max(qmin, zero_point), min(qmax, quantize(6.0))
    if code == RELU_N1_TO_1:
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    if code != NONE:
        raise ctx.unsupported(f"fused activation {code} on a quantized op")
    return qmin, qmax


def conv_output_size(ctx: OpContext, padding: int, size: int, kernel: int, stride: int,
                     dilation: int) -> tuple[int, int]:
    """(output size, padding before) for TFLite's SAME (0) and VALID (1) padding."""
    if stride < 1 or dilation < 1:
        raise ctx.invalid(f"stride {stride} and dilation {dilation} must be >= 1")
    effective = (kernel - 1) * dilation + 1
    if padding == 0:  # SAME: out = ceil(in / stride); the odd pixel of padding goes at the end
        out = (size + stride - 1) // stride
        total = max((out - 1) * stride + effective - size, 0)
        return out, total // 2
    if padding == 1:  # VALID
        out = (size + stride - effective) // stride
        if out < 1 and size > 0:
            raise ctx.shape_error(f"kernel extent {effective} is larger than the input size "
                                  f"{size}")
        return max(out, 0), 0
    raise ctx.invalid(f"unknown padding {padding}")


@dataclass
class ConvGeometry:
    batch: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    pad_top: int
    pad_left: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    dil_h: int
    dil_w: int


def geometry(ctx: OpContext, x_shape, kernel_h: int, kernel_w: int) -> ConvGeometry:
    o = ctx.options
    if o is None:
        raise ctx.invalid("options are missing")
    if kernel_h < 1 or kernel_w < 1:
        raise ctx.invalid(f"kernel size {kernel_h}x{kernel_w} is empty")
    stride_h, stride_w = o.strideH, o.strideW
    dil_h, dil_w = getattr(o, "dilationHFactor", 1), getattr(o, "dilationWFactor", 1)
    n, h, w = x_shape[0], x_shape[1], x_shape[2]
    if ctx.op.fused_padding is not None:  # a PAD folded in (runtime/fusion.py), then VALID
        top, bottom, left, right = ctx.op.fused_padding
        out_h, _ = conv_output_size(ctx, o.padding, h + top + bottom, kernel_h, stride_h, dil_h)
        out_w, _ = conv_output_size(ctx, o.padding, w + left + right, kernel_w, stride_w, dil_w)
        return ConvGeometry(n, h, w, out_h, out_w, top, left, kernel_h, kernel_w, stride_h,
                            stride_w, dil_h, dil_w)
    out_h, pad_top = conv_output_size(ctx, o.padding, h, kernel_h, stride_h, dil_h)
    out_w, pad_left = conv_output_size(ctx, o.padding, w, kernel_w, stride_w, dil_w)
    return ConvGeometry(n, h, w, out_h, out_w, pad_top, pad_left, kernel_h, kernel_w,
                        stride_h, stride_w, dil_h, dil_w)


def patches(x: np.ndarray, g: ConvGeometry, pad_value=0) -> np.ndarray:
    """im2col: [N, OH, OW, KH, KW, C] view of the padded input (copied on reshape)."""
    n, h, w, c = x.shape
    need_h = (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dil_h + 1
    need_w = (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dil_w + 1
    bottom = max(need_h - h - g.pad_top, 0)
    right = max(need_w - w - g.pad_left, 0)
    padded = np.pad(x, ((0, 0), (g.pad_top, bottom), (g.pad_left, right), (0, 0)),
                    constant_values=pad_value)
    sn, sh, sw, sc = padded.strides
    return np.lib.stride_tricks.as_strided(
        padded, (n, g.out_h, g.out_w, g.kernel_h, g.kernel_w, c),
        (sn, sh * g.stride_h, sw * g.stride_w, sh * g.dil_h, sw * g.dil_w, sc), writeable=False)


def broadcast_shape(ctx: OpContext, *shapes) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ctx.shape_error(f"shapes {' and '.join(map(str, shapes))} do not broadcast") \
            from None


@functools.cache
def select_kernels():
    """qengine.kernels.select, imported on first use (importing Numba takes time) and then
    held: an import statement in a run closure costs ~0.6 us a call, an interpreter's op."""
    from qengine.kernels import select

    return select


def where(mask, a, b) -> np.ndarray:
    """np.where(mask, a, b), branch-free for large arrays (kernels/select.py says why)."""
    return select_kernels().where(mask, a, b)


def as_float32(x):
    return np.asarray(x, dtype=np.float32)


def is_quantized(spec) -> bool:
    """An integer tensor with quantization parameters: it stands for real numbers."""
    return spec is not None and spec.dtype in QUANTIZED_TYPES and spec.quantization is not None


def quantized_path(ctx: OpContext, family: str):
    """Prepare the op with the integer kernel its definition keys by the input's dtype
    (`kernels=integer_kernels("<family>_int:<function>")` in its `@op`); `family` says which
    `_int` module the caller expects it in, and a definition pointing elsewhere is a bug.

    The `_int` modules import Numba kernels, so they load only when a quantized model needs
    them.
    """
    definition = definitions()[ctx.op.type]
    elsewhere = [k for k in definition.kernels.values()
                 if isinstance(k, str) and not k.startswith(f"{family}_int:")]
    assert not elsewhere, f"{ctx.op.type}'s integer kernels {elsewhere} are not in {family}_int"
    return definition.kernel(ctx)(ctx)


def use_fast_kernels() -> bool:
    """Packed/vectorized int8 kernels (bit-exact with the reference ones) unless
    QENGINE_KERNELS=reference asks for the plain reference loops (for debugging and benchmarks)."""
    import os

    return os.environ.get("QENGINE_KERNELS", "fast") != "reference"


# -- quantized tensors -----------------------------------------------------------------------


def per_tensor(ctx: OpContext, spec: Spec) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized tensor; anything else is refused."""
    q = spec.quantization
    if q is None or q.scale.size == 0:
        raise ctx.invalid(f"tensor {spec.name!r} has no quantization parameters")
    if q.scale.size != 1 or q.zero_point.size != 1:
        raise ctx.unsupported(f"tensor {spec.name!r} is quantized per channel; this op takes "
                              f"per-tensor parameters")
    try:
        return per_tensor_params(q, spec.name)
    except InvalidModelError as e:  # a scale <= 0: say which op reads it
        raise ctx.invalid(str(e)) from None


def required_per_tensor(ctx: OpContext, spec: Spec) -> tuple[float, int]:
    """per_tensor for tensors that must be per-tensor quantized to form a valid model (the
    data and output of conv, FC and reductions): anything else is an invalid model."""
    q = spec.quantization
    if q is None or q.scale.size != 1:
        raise ctx.invalid(f"tensor {spec.name!r} needs per-tensor quantization")
    return per_tensor(ctx, spec)


def output_params(ctx: OpContext, dtype: str) -> tuple[float, int]:
    """The output's (scale, zero point), checking that it is a quantized `dtype` tensor."""
    out = ctx.output_spec(0, ())
    if out.dtype != dtype:
        raise ctx.unsupported(f"{out.dtype} output {out.name!r} for {dtype} inputs")
    return per_tensor(ctx, out)


def flattened(x: np.ndarray, shape) -> np.ndarray:
    """x broadcast to `shape`, as a contiguous 1-D array (what the elementwise kernels take)."""
    return np.ascontiguousarray(np.broadcast_to(x, shape)).ravel()


SUB_BYTE_TYPES = ("int4", "int2", "uint4")


def filter_types(op: str, input_dtype: str) -> tuple[str, ...]:
    """The filter dtypes TFLite's `op` kernel reads with this input dtype: its definition's
    `Weight.types` (TFLite unpacks int4/int2 filters to int8, then runs its int8 arithmetic),
    or int8."""
    definition = definitions().get(op)
    weight = definition.weight if definition else None
    return ("int8",) if weight is None else weight.types_for(input_dtype)


def expect_filter_type(ctx: OpContext, w) -> None:
    """An int8 filter, or a sub-byte one where TFLite has a kernel for it (depends on the op and
    its input type: float32 input is the hybrid kernel).

    A sub-byte filter where TFLite has none is a malformed model (InvalidModelError naming the
    rule); any other dtype is just not a quantized filter qengine runs."""
    op, x_dtype = ctx.op.type, ctx.input(0).dtype
    allowed = filter_types(op, x_dtype)
    if w.dtype in allowed:
        return
    if w.dtype in SUB_BYTE_TYPES:
        kind = {"float32": "hybrid ", "int16": "int16 "}.get(x_dtype, "")
        raise ctx.invalid(f"{w.dtype} filter {w.name!r}: TFLite has no {w.dtype} kernel for "
                          f"{kind}{op} (its filters: {', '.join(allowed)})")
    ctx.expect_dtype(w, *allowed)
