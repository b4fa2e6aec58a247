"""Elementwise ops: binary arithmetic and comparisons with NumPy broadcasting, logical ops,
SELECT, unary math, CAST and ZEROS_LIKE (TFLite has no ONES_LIKE builtin).

Float ops compute in float32 as TFLite's reference kernels do. Integer ops reproduce TFLite's
C++ semantics: overflow wraps, DIV truncates towards zero, FLOOR_DIV/FLOOR_MOD follow the sign
of the divisor, and a zero integer divisor is an error. Quantized int8/int16 inputs of the ops
that requantize go to `qengine.ops.elementwise_int`.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..runtime.registry import OpContext, Prepared, register_folding
from .common import (
    RELU,
    RELU6,
    RELU_N1_TO_1,
    broadcast_shape,
    float_activation_bounds,
    fused_activation,
    is_quantized,
    quantized_path,
    where,
)
from .opdef import REQUANT, SHARED, Quantized, integer_kernels, op, resolve_kernel

# an int8 lookup op folded into its producer (runtime/fusion.py) prepares through this
register_folding("lookup", lambda: resolve_kernel("elementwise_int:fold_lookup"))

FLOAT = ("float32",)
INTS = ("int32", "int64")
NUMERIC = FLOAT + INTS
BOOL = ("bool",)
SMALL_INTS = ("int8", "uint8", "int16")  # as plain integers, i.e. without quantization


# -- shared machinery ------------------------------------------------------------------------


def _wrapping(fn):
    """Integer overflow wraps as in TFLite's C++; float inf/nan are results, not warnings."""
    def run(*arrays):
        with np.errstate(all="ignore"):
            return fn(*arrays)
    return run


_CLAMPS = {RELU: (0, None), RELU6: (0, 6), RELU_N1_TO_1: (-1, 1)}


def _fused_clamp(ctx: OpContext, dtype: str):
    """TFLite CalculateActivationRange + ActivationFunctionWithMinMax: the fused activation as
    a clamp.

    NONE, TANH and SIGN_BIT give the type's full range (TFLite's arithmetic kernels ignore the
    latter two). For floats that range is finite, so an infinite result becomes +-FLT_MAX;
    NaN passes through.
    """
    if dtype == "float32":
        low, high = float_activation_bounds(ctx)
        return lambda x: _clamp_f32(x, low, high)
    else:
        low, high = _CLAMPS.get(fused_activation(ctx), (None, None))
        if low is None:
            return lambda x: x
    return lambda x: np.clip(x, low, high).astype(dtype, copy=False)


def _clamp_f32(x, low: float, high: float):
    """np.clip into x itself when x is the op's own fresh float32 array (one pass less)."""
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable:
        return np.clip(x, low, high, out=x)
    return np.clip(x, low, high).astype(np.float32, copy=False)


def _binary(ctx: OpContext, compute, dtypes, *, out_dtype: str | None = None,
            fused: bool = False, quantized: bool = False, check=None,
            float_op: str | None = None) -> Prepared:
    """A broadcasting binary op: validates, then runs `compute(x, y)` in the inputs' dtype.

    `check(y)` (optional) validates the second operand's values and returns an error message or
    None: for a constant at prepare time (a malformed model), else on every run (bad data).
    `float_op` ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM": a name in
    kernels/float_ops.py): float32 operands
    where one repeats along the other run `float_ops.binary_f32`, the op and its fused
    activation in one pass (`check` must accept every float32 operand then).
    """
    ctx.expect_inputs(2)
    a, b = ctx.input(0), ctx.input(1)
    if quantized and (is_quantized(a) or is_quantized(b)):
        return quantized_path(ctx, "elementwise")
    ctx.expect_dtype(a, *dtypes)
    if b.dtype != a.dtype:
        raise ctx.invalid(f"input dtypes differ: {a.dtype} and {b.dtype}")
    shape = broadcast_shape(ctx, a.shape, b.shape)
    dtype = out_dtype or a.dtype
    clamp = _fused_clamp(ctx, dtype) if fused else (lambda x: x)
    if check is not None and b.value is not None:
        message = check(b.value)
        if message:
            raise ctx.invalid(message)
    if float_op is not None and dtype == "float32":
        one_pass = _one_pass_f32(ctx, float_op, a.shape, b.shape, shape, fused)
        if one_pass is not None:
            return Prepared(one_pass, [ctx.output_spec(0, shape, dtype)])

    @_wrapping
    def run(x, y):
        if check is not None:
            message = check(y)
            if message:
                raise InputError(f"{ctx.where()}: {message}")
        return np.asarray(clamp(np.asarray(compute(x, y))), dtype=dtype)

    return Prepared(run, [ctx.output_spec(0, shape, dtype)])


def _unary(ctx: OpContext, compute, dtypes, *, out_dtype: str | None = None,
           quantized: bool = False) -> Prepared:
    ctx.expect_inputs(1)
    x = ctx.input(0)
    if quantized and is_quantized(x):
        return quantized_path(ctx, "elementwise")
    ctx.expect_dtype(x, *dtypes)
    dtype = out_dtype or x.dtype

    @_wrapping
    def run(value):
        return np.asarray(compute(value), dtype=dtype)

    return Prepared(run, [ctx.output_spec(0, x.shape, dtype)])


def _one_pass_f32(ctx: OpContext, float_op: str, a_shape, b_shape, shape, fused: bool):
    """run(x, y) in one compiled pass: through `float_ops.binary_f32` when one operand has the
    output's shape and the other repeats along its last axes (same shape, per-channel, scalar),
    through `float_ops.binary_broadcast_f32` for other broadcasts of up to 4 axes; else None.
    An op without a fused activation (`fused` False: MAXIMUM, MINIMUM) gets no clamp at all."""
    from qengine.kernels import float_ops
    from qengine.kernels.elementwise import as_4d, trailing_period

    code, binary_f32, threads = getattr(float_ops, float_op), float_ops.binary_f32, ctx.num_threads
    shape = None if shape is None else tuple(shape)
    if shape is None or 0 in shape:
        return None
    bounds = float_activation_bounds(ctx) if fused else (-np.inf, np.inf)
    low, high = (np.float32(v) for v in bounds)
    if tuple(a_shape) == shape and trailing_period(shape, b_shape):
        def run(x, y):
            return binary_f32(code, _flat_f32(x), _flat_f32(y), False, low, high,
                              threads).reshape(shape)
    elif tuple(b_shape) == shape and trailing_period(shape, a_shape):
        def run(x, y):
            return binary_f32(code, _flat_f32(y), _flat_f32(x), True, low, high,
                              threads).reshape(shape)
    elif len(shape) <= 4:
        broadcast = float_ops.binary_broadcast_f32

        def run(x, y):
            out = np.empty(shape, np.float32)
            broadcast(code, as_4d(np.ascontiguousarray(x, np.float32)),
                      as_4d(np.ascontiguousarray(y, np.float32)), low, high, as_4d(out))
            return out
    else:
        return None
    return run


def _flat_f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, np.float32).reshape(-1)


def _integer_divisor(y) -> str | None:
    return None if y.dtype.kind == "f" or np.all(y != 0) else "integer division by zero"


def _any_divisor(y) -> str | None:
    return None if np.all(y != 0) else "division by zero"  # TFLite's FLOOR_DIV, floats too


def _non_negative_exponent(y) -> str | None:
    if y.dtype.kind == "f" or np.all(y >= 0):
        return None
    return "integers cannot be raised to negative powers"


# -- arithmetic ------------------------------------------------------------------------------


@op("ADD",
    kernels=integer_kernels("elementwise_int:add"),
    quantized=Quantized(REQUANT, 2, int16=3, converter_widens_inputs=True,
                        int16_options=("AddOptions", "potScaleInt16", False)))
def add(ctx: OpContext) -> Prepared:
    return _binary(ctx, np.add, NUMERIC, fused=True, quantized=True, float_op="ADD")


@op("SUB",
    kernels=integer_kernels("elementwise_int:sub"),
    quantized=Quantized(REQUANT, 2, int16=5, int16_options=("SubOptions", "potScaleInt16", False)))
def sub(ctx: OpContext) -> Prepared:
    return _binary(ctx, np.subtract, NUMERIC, fused=True, quantized=True,
                   float_op="SUB")


@op("MUL",
    kernels=integer_kernels("elementwise_int:mul"), quantized=Quantized(REQUANT, 2, int16=4))
def mul(ctx: OpContext) -> Prepared:
    return _binary(ctx, np.multiply, NUMERIC, fused=True, quantized=True,
                   float_op="MUL")


def _truncating_divide(x, y):
    """C's `/`: float division, or integer division rounded towards zero."""
    if x.dtype.kind == "f":
        return x / y
    q = np.floor_divide(x, y)
    inexact_negative = (np.remainder(x, y) != 0) & ((x < 0) != (y < 0))
    return q + inexact_negative.astype(q.dtype)


@op("DIV")
def div(ctx: OpContext) -> Prepared:
    # TFLite: float32 and int32 (plus quantized uint8, which goes to the int module)
    return _binary(ctx, _truncating_divide, ("float32", "int32"), fused=True, quantized=True,
                   check=_integer_divisor, float_op="DIV")  # (the check passes any float)


@op("SQUARED_DIFFERENCE",
    kernels=integer_kernels("elementwise_int:squared_difference"), quantized=Quantized(REQUANT, 2))
def squared_difference(ctx: OpContext) -> Prepared:
    def compute(x, y):
        d = x - y
        return d * d
    return _binary(ctx, compute, ("float32", "int32"), quantized=True)


def _maximum(x, y):
    return where(x > y, x, y)  # TFLite's `a > b ? a : b`: a NaN in x yields y


def _minimum(x, y):
    return where(x < y, x, y)


@op("MAXIMUM",
    kernels=integer_kernels("elementwise_int:maximum"), quantized=Quantized(SHARED, 2, int16=4))
def maximum(ctx: OpContext) -> Prepared:
    return _binary(ctx, _maximum, SMALL_INTS + NUMERIC, quantized=True, float_op="MAXIMUM")


@op("MINIMUM",
    kernels=integer_kernels("elementwise_int:minimum"), quantized=Quantized(SHARED, 2, int16=4))
def minimum(ctx: OpContext) -> Prepared:
    return _binary(ctx, _minimum, SMALL_INTS + NUMERIC, quantized=True, float_op="MINIMUM")


INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def _power(x, y):
    """TFLite Pow: powf for floats; for int32, std::pow in double converted back to int32,
    where a result out of range becomes INT32_MIN (what x86's conversion yields)."""
    if x.dtype.kind == "f":
        return np.power(x, y)
    exact = np.power(x.astype(np.float64), y.astype(np.float64))
    in_range = (exact >= INT32_MIN) & (exact <= INT32_MAX)
    return np.where(in_range, exact, INT32_MIN).astype(np.int32)


@op("POW")
def pow_(ctx: OpContext) -> Prepared:
    return _binary(ctx, _power, ("float32", "int32"), check=_non_negative_exponent)


def _floor_divide(x, y):
    """TFLite FloorDiv: floor(double(x) / double(y)), converted back to the input type."""
    return np.floor(x.astype(np.float64) / y.astype(np.float64)).astype(x.dtype)


@op("FLOOR_DIV")
def floor_div(ctx: OpContext) -> Prepared:
    return _binary(ctx, _floor_divide, ("float32", "int8", "int16", "int32"),
                   check=_any_divisor)


def _floor_mod(x, y):
    """TFLite FloorMod: the truncated remainder (C's % or fmodf), moved to the divisor's sign."""
    trunc = np.fmod(x, y)
    adjust = (trunc != 0) & ((y < 0) != (trunc < 0))
    return np.where(adjust, trunc + y, trunc)


@op("FLOOR_MOD")
def floor_mod(ctx: OpContext) -> Prepared:
    return _binary(ctx, _floor_mod, ("float32", "int8", "int16", "int32", "int64"),
                   check=_integer_divisor)


# -- comparisons and logic -------------------------------------------------------------------

ORDERED = NUMERIC + SMALL_INTS


def _comparison(ctx: OpContext, compute, dtypes=ORDERED) -> Prepared:
    return _binary(ctx, compute, dtypes, out_dtype="bool", quantized=True)


@op("EQUAL",
    kernels=integer_kernels("elementwise_int:equal"),
    quantized=Quantized(REQUANT, 2, small_input_scales=True))
def equal(ctx: OpContext) -> Prepared:
    return _comparison(ctx, np.equal, ORDERED + BOOL)


@op("NOT_EQUAL",
    kernels=integer_kernels("elementwise_int:not_equal"),
    quantized=Quantized(REQUANT, 2, small_input_scales=True))
def not_equal(ctx: OpContext) -> Prepared:
    return _comparison(ctx, np.not_equal, ORDERED + BOOL)


@op("LESS",
    kernels=integer_kernels("elementwise_int:less"),
    quantized=Quantized(REQUANT, 2, small_input_scales=True))
def less(ctx: OpContext) -> Prepared:
    return _comparison(ctx, np.less)


@op("LESS_EQUAL",
    kernels=integer_kernels("elementwise_int:less_equal"),
    quantized=Quantized(REQUANT, 2, small_input_scales=True))
def less_equal(ctx: OpContext) -> Prepared:
    return _comparison(ctx, np.less_equal)


@op("GREATER",
    kernels=integer_kernels("elementwise_int:greater"),
    quantized=Quantized(REQUANT, 2, small_input_scales=True))
def greater(ctx: OpContext) -> Prepared:
    return _comparison(ctx, np.greater)


@op("GREATER_EQUAL",
    kernels=integer_kernels("elementwise_int:greater_equal"),
    quantized=Quantized(REQUANT, 2, small_input_scales=True))
def greater_equal(ctx: OpContext) -> Prepared:
    return _comparison(ctx, np.greater_equal)


@op("LOGICAL_AND")
def logical_and(ctx: OpContext) -> Prepared:
    return _binary(ctx, np.logical_and, BOOL)


@op("LOGICAL_OR")
def logical_or(ctx: OpContext) -> Prepared:
    return _binary(ctx, np.logical_or, BOOL)


@op("LOGICAL_NOT")
def logical_not(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.logical_not, BOOL)


SELECTABLE = ("bool", "float32", "int8", "uint8", "int16", "int32", "int64")


def _select_inputs(ctx: OpContext):
    ctx.expect_inputs(3)
    cond, x, y = ctx.input(0), ctx.input(1), ctx.input(2)
    ctx.expect_dtype(cond, "bool")
    ctx.expect_dtype(x, *SELECTABLE)
    if y.dtype != x.dtype:
        raise ctx.invalid(f"the two value inputs have different dtypes: {x.dtype} and {y.dtype}")
    return cond, x, y


@op("SELECT")
def select(ctx: OpContext) -> Prepared:
    """cond ? x : y where x and y have one shape and cond has it too, or is a vector choosing
    whole slices along the first dimension (TF1's Select), or is a scalar."""
    cond, x, y = _select_inputs(ctx)
    if x.shape != y.shape:
        raise ctx.invalid(f"SELECT needs equal value shapes, got {x.shape} and {y.shape}")
    row_select = cond.rank == 1 and x.rank > 1 and cond.shape[0] == x.shape[0]
    if cond.shape != x.shape and cond.rank != 0 and not row_select:
        raise ctx.invalid(f"condition shape {cond.shape} neither equals the value shape "
                          f"{x.shape} nor selects along its first dimension")
    cond_shape = (cond.shape[0],) + (1,) * (x.rank - 1) if row_select else cond.shape

    def run(c, a, b):
        return where(c.reshape(cond_shape), a, b)

    return Prepared(run, [ctx.output_spec(0, x.shape, x.dtype)])


@op("SELECT_V2")
def select_v2(ctx: OpContext) -> Prepared:
    """cond ? x : y with all three broadcast against each other."""
    cond, x, y = _select_inputs(ctx)
    shape = broadcast_shape(ctx, cond.shape, x.shape, y.shape)

    def run(c, a, b):
        return np.asarray(where(c, a, b), dtype=x.dtype)

    return Prepared(run, [ctx.output_spec(0, shape, x.dtype)])


# -- unary math ------------------------------------------------------------------------------


@op("NEG")
def neg(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.negative, NUMERIC)


@op("ABS",
    kernels=integer_kernels("elementwise_int:abs_"), quantized=Quantized(REQUANT, 2, int16=3))
def abs_(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.abs, ("float32", "int32"), quantized=True)  # abs(INT_MIN) wraps


@op("SQRT")
def sqrt(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.sqrt, FLOAT)


@op("RSQRT",
    kernels=integer_kernels("elementwise_int:rsqrt"), quantized=Quantized(REQUANT, 2, int16=2))
def rsqrt(ctx: OpContext) -> Prepared:
    # TFLite: 1.f / std::sqrt(x)
    return _unary(ctx, lambda x: np.float32(1) / np.sqrt(x), FLOAT, quantized=True)


@op("SQUARE")
def square(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.square, FLOAT)


@op("EXP",
    kernels=integer_kernels("elementwise_int:exp"), quantized=Quantized(REQUANT, 2, int16=2))
def exp(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.exp, FLOAT, quantized=True)


@op("LOG",
    kernels=integer_kernels("elementwise_int:log"), quantized=Quantized(REQUANT, 2, int16=2))
def log(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.log, FLOAT, quantized=True)


@op("SIN")
def sin(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.sin, FLOAT)


@op("COS")
def cos(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.cos, FLOAT)


@op("FLOOR")
def floor(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.floor, FLOAT)


@op("CEIL")
def ceil(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.ceil, FLOAT)


@op("ROUND")
def round_(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.rint, FLOAT)  # TFLite RoundToNearest: halves go to the even integer


def _sign(x):
    # (0 < x) - (x < 0), with NaN passed through (checked against TFLite)
    signs = (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)
    return np.where(np.isnan(x), x, signs) if x.dtype.kind == "f" else signs


@op("SIGN")
def sign(ctx: OpContext) -> Prepared:
    return _unary(ctx, _sign, ("float32", "float64", "int32"))


# -- dtype and fill --------------------------------------------------------------------------

CASTABLE = ("bool", "float16", "float32", "float64", "int8", "uint8", "int16", "uint16",
            "int32", "uint32", "int64", "complex64")


def _saturating_trunc(x, dtype: str):
    """TFLite's float to integer cast: truncate, saturate at the type's limits; NaN gives
    the maximum (checked against TFLite)."""
    info = np.iinfo(dtype)
    t = np.trunc(x.astype(np.float64))
    above = np.isnan(t) | (t >= float(info.max) + 1)  # both bounds are exact in float64
    below = t < float(info.min)
    inside = np.where(above | below, 0, t).astype(dtype)
    return np.where(above, info.max, np.where(below, info.min, inside)).astype(dtype)


def _cast_to(dtype: str):
    """TFLite Cast: nonzero (NaN included) becomes true, float to int saturates, integers
    narrow by wrapping (static_cast), everything else rounds to the nearest value. complex64
    to anything else keeps the real part (TFLite's std::real; to integers its static_cast is
    undefined outside the target's range, where qengine saturates as for floats); anything to
    complex64 has imaginary part 0."""
    if dtype == "complex64":
        return lambda x: x.astype(np.complex64)

    def real(x):
        return x.real if x.dtype.kind == "c" else x

    if dtype == "bool":
        return lambda x: real(x) != 0
    if np.dtype(dtype).kind in "iu":
        return lambda x: (_saturating_trunc(real(x), dtype) if x.dtype.kind in "fc"
                          else x.astype(dtype))
    return lambda x: real(x).astype(dtype)


@op("CAST")
def cast(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    out = ctx.outputs[0].dtype
    if out not in CASTABLE:
        raise ctx.unsupported(f"cast to {out}; supported: {', '.join(CASTABLE)}")
    # the input's raw values are converted; quantization parameters play no part
    return _unary(ctx, _cast_to(out), CASTABLE, out_dtype=out)


@op("ZEROS_LIKE")
def zeros_like(ctx: OpContext) -> Prepared:
    return _unary(ctx, np.zeros_like, NUMERIC)

