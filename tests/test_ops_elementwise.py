"""Elementwise ops against TFLite's reference kernels: broadcasting, dtypes, fused activations,
integer edge cases (overflow, signs of division and modulo), special float values."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from deviations import DEVIATIONS
from op_harness import check_against_tflite, rng
from tflite_ref import run_tflite

import qengine
from qengine.builder import ACTIVATIONS, GraphBuilder, options
from qengine.errors import InputError, InvalidModelError
from qengine.ir import Quantization

# Every op here matches TFLite within the default tolerance (1e-5 of the output range); float
# transcendental results (EXP, LOG, SIN, COS, POW, RSQRT) may differ from glibc's in the last
# ulp, which that tolerance covers. Integer and bool outputs are exact.

# CEIL and ROUND have no reference kernel; TFLite's builtin (optimized) ones are used instead
RESOLVER = {"CEIL": "nodelegate", "ROUND": "nodelegate"}

OPTIONS_KIND = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions",
                "DIV": "DivOptions"}
COMPARISONS = ["EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL"]

# (shape a, shape b) pairs; TFLite's broadcasting kernels for some ops stop at rank 4
BROADCAST_4D = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)),
                ((), (3,)), ((5,), ()), ((2, 3, 1, 1), (1, 1, 4, 5)), ((1, 1, 1, 7), (3, 1, 1))]
BROADCAST_5D = BROADCAST_4D + [((1, 2, 1, 3, 1), (2, 1, 4, 1, 2)), ((2, 3, 2, 2, 3), (3,))]


def random(r, shape, dtype, low=-50, high=50):
    if dtype == "float32":
        return (r.normal(size=shape) * 4).astype(np.float32)
    if dtype == "bool":
        return r.random(shape) < 0.5
    return r.integers(low, high, size=shape, endpoint=True).astype(dtype)


def nonzero(r, shape, dtype):
    x = random(r, shape, dtype)
    return np.where(x == 0, np.ones_like(x), x)


def broadcast_or_first(*shapes):
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:  # models built to be rejected
        return shapes[0]


def binary_model(op, dtype, shape_a, shape_b, out_dtype=None, opts=None, const_b=None):
    b = GraphBuilder()
    x = b.input("x", shape_a, dtype)
    y = b.const("y", const_b, dtype) if const_b is not None else b.input("y", shape_b, dtype)
    out = b.op(op, [x, y], broadcast_or_first(shape_a, shape_b), out_dtype or dtype,
               options=opts)
    return b.build(outputs=[out])


def unary_model(op, dtype, shape, out_dtype=None, opts=None):
    b = GraphBuilder()
    x = b.input("x", shape, dtype)
    out = b.op(op, [x], shape, out_dtype or dtype, options=opts)
    return b.build(outputs=[out])


def fused(op, activation):
    return options(OPTIONS_KIND[op], fusedActivationFunction=ACTIVATIONS[activation])


# -- arithmetic ------------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("shapes", BROADCAST_5D)
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM"])
def test_arithmetic_broadcasting(op, dtype, shapes):
    r = rng(op, dtype, shapes)
    model = binary_model(op, dtype, *shapes)
    check_against_tflite(model, [random(r, shapes[0], dtype), random(r, shapes[1], dtype)])


@pytest.mark.tf
@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1", "TANH",
                                        "SIGN_BIT"])
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "DIV"])
def test_fused_activation(op, dtype, activation):
    if op == "DIV" and dtype == "int64":
        pytest.skip("TFLite DIV has no int64 kernel")
    r = rng(op, dtype, activation)
    model = binary_model(op, dtype, (2, 3, 4), (3, 1), opts=fused(op, activation))
    a = random(r, (2, 3, 4), dtype, -8, 8) if dtype != "float32" else random(r, (2, 3, 4), dtype)
    check_against_tflite(model, [a, nonzero(r, (3, 1), dtype)])


@pytest.mark.tf
@pytest.mark.parametrize("shapes", BROADCAST_5D)
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_div(dtype, shapes):
    r = rng("DIV", dtype, shapes)
    model = binary_model("DIV", dtype, *shapes)
    check_against_tflite(model, [random(r, shapes[0], dtype), nonzero(r, shapes[1], dtype)])


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_squared_difference(dtype):
    for shapes in BROADCAST_4D:
        r = rng("SQUARED_DIFFERENCE", dtype, shapes)
        model = binary_model("SQUARED_DIFFERENCE", dtype, *shapes)
        check_against_tflite(model, [random(r, shapes[0], dtype), random(r, shapes[1], dtype)])


@pytest.mark.tf
@pytest.mark.parametrize("shapes", BROADCAST_4D)
@pytest.mark.parametrize("dtype", ["float32", "int8", "int16", "int32"])
@pytest.mark.parametrize("op", ["FLOOR_DIV", "FLOOR_MOD"])
def test_floor_div_mod(op, dtype, shapes):
    r = rng(op, dtype, shapes)
    model = binary_model(op, dtype, *shapes)
    check_against_tflite(model, [random(r, shapes[0], dtype), nonzero(r, shapes[1], dtype)])


@pytest.mark.tf
def test_floor_mod_int64():
    r = rng("FLOOR_MOD", "int64")
    a = r.integers(-2 ** 40, 2 ** 40, size=(4, 5))
    b = np.where(np.arange(5) % 2, -1, 1) * r.integers(1, 2 ** 20, size=(5,))
    check_against_tflite(binary_model("FLOOR_MOD", "int64", (4, 5), (5,)), [a, b])


@pytest.mark.tf
@pytest.mark.parametrize("shapes", BROADCAST_4D)
def test_pow_float(shapes):
    r = rng("POW", shapes)
    base = np.abs(random(r, shapes[0], "float32")) + 0.1
    exponent = r.uniform(-3, 3, size=shapes[1]).astype(np.float32)
    check_against_tflite(binary_model("POW", "float32", *shapes), [base, exponent])


@pytest.mark.tf
def test_pow_int32_overflow():
    """std::pow in double; results beyond int32 become INT32_MIN like x86's conversion."""
    base = np.array([[-7, -3, -1, 0, 1, 2, 5, 40, -40, 65536]], np.int32)
    exponent = np.array([[0], [1], [2], [3], [7], [31], [12]], np.int32)
    check_against_tflite(binary_model("POW", "int32", (1, 10), (7, 1)), [base, exponent])


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "SQUARED_DIFFERENCE"])
def test_int32_overflow_wraps(op):
    big = np.array([2 ** 31 - 1, -2 ** 31, 2 ** 30, -2 ** 30 - 7, 123456789, 0], np.int32)
    check_against_tflite(binary_model(op, "int32", (6,), (6, 1)), [big, big.reshape(6, 1)])


@pytest.mark.tf
@pytest.mark.parametrize("op", ["DIV", "FLOOR_DIV", "FLOOR_MOD"])
def test_integer_division_signs(op):
    """Every sign combination, exact and inexact quotients."""
    a = np.array([7, -7, 6, -6, 0, 1, -1, 2 ** 31 - 1, -2 ** 31 + 1], np.int32)
    b = np.array([2, -2, 3, -3, 1, -1, 7, -7], np.int32).reshape(8, 1)
    check_against_tflite(binary_model(op, "int32", (9,), (8, 1)), [a, b])


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "FLOOR_DIV",
                                "FLOOR_MOD", "SQUARED_DIFFERENCE", "POW"])
def test_special_floats(op):
    specials = np.array([0.0, -0.0, 1.5, -2.5, 3.0, np.inf, -np.inf, np.nan], np.float32)
    divisors = specials[2:] if op == "FLOOR_DIV" else specials  # TFLite rejects 0 there
    model = binary_model(op, "float32", (8,), (len(divisors), 1))
    check_against_tflite(model, [specials, divisors.reshape(-1, 1)])


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
@pytest.mark.parametrize("op", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum_unquantized_small_ints(op, dtype):
    r = rng(op, dtype)
    low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    a, b = random(r, (3, 4), dtype, low, high), random(r, (4,), dtype, low, high)
    check_against_tflite(binary_model(op, dtype, (3, 4), (4,)), [a, b])


@pytest.mark.tf
def test_constant_operand():
    r = rng("const")
    model = binary_model("MUL", "float32", (2, 3), (3,), const_b=np.float32([1.5, -2, 0.25]))
    check_against_tflite(model, [random(r, (2, 3), "float32")])


# -- comparisons, logic, select --------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64", "int16"])
@pytest.mark.parametrize("op", COMPARISONS)
def test_comparisons(op, dtype):
    if (op, dtype) == ("NOT_EQUAL", "int16"):
        pytest.skip(DEVIATIONS[("test_ops_elementwise", "NOT_EQUAL")])
    for shapes in BROADCAST_4D:
        r = rng(op, dtype, shapes)
        # a small range makes ties common
        a, b = random(r, shapes[0], dtype, -3, 3), random(r, shapes[1], dtype, -3, 3)
        if dtype == "float32":
            a, b = np.round(a), np.round(b)
        check_against_tflite(binary_model(op, dtype, *shapes, out_dtype="bool"), [a, b])


@pytest.mark.tf
@pytest.mark.parametrize("op", ["EQUAL", "NOT_EQUAL"])
def test_equality_of_bools(op):
    r = rng(op)
    model = binary_model(op, "bool", (3, 4), (4,), out_dtype="bool")
    check_against_tflite(model, [random(r, (3, 4), "bool"), random(r, (4,), "bool")])


@pytest.mark.tf
@pytest.mark.parametrize("op", COMPARISONS)
def test_comparisons_with_nan(op):
    specials = np.array([0.0, -0.0, 1.0, np.inf, -np.inf, np.nan], np.float32)
    model = binary_model(op, "float32", (6,), (6, 1), out_dtype="bool")
    check_against_tflite(model, [specials, specials.reshape(6, 1)])


@pytest.mark.tf
@pytest.mark.parametrize("shapes", BROADCAST_4D)
@pytest.mark.parametrize("op", ["LOGICAL_AND", "LOGICAL_OR"])
def test_logical_binary(op, shapes):
    r = rng(op, shapes)
    model = binary_model(op, "bool", *shapes)
    check_against_tflite(model, [random(r, shapes[0], "bool"), random(r, shapes[1], "bool")])


@pytest.mark.tf
@pytest.mark.parametrize("shape", [(1,), (5,), (2, 3, 4)])
def test_logical_not(shape):
    check_against_tflite(unary_model("LOGICAL_NOT", "bool", shape),
                         [random(rng("not", shape), shape, "bool")])


def select_model(op, dtype, cond_shape, x_shape, y_shape):
    b = GraphBuilder()
    c = b.input("cond", cond_shape, "bool")
    x = b.input("x", x_shape, dtype)
    y = b.input("y", y_shape, dtype)
    out = b.op(op, [c, x, y], broadcast_or_first(cond_shape, x_shape, y_shape), dtype)
    return b.build(outputs=[out])


SELECT_DTYPES = ["float32", "int32", "int64", "bool", "int8", "uint8", "int16"]


@pytest.mark.tf
@pytest.mark.parametrize("dtype", SELECT_DTYPES)
@pytest.mark.parametrize("cond_shape,shape", [((2, 3, 4), (2, 3, 4)), ((2,), (2, 3, 4)),
                                              ((4,), (4,)), ((3,), (3, 5))])
def test_select(cond_shape, shape, dtype):
    r = rng("SELECT", dtype, cond_shape, shape)
    model = select_model("SELECT", dtype, cond_shape, shape, shape)
    check_against_tflite(model, [random(r, cond_shape, "bool"), random(r, shape, dtype),
                                 random(r, shape, dtype)])


@pytest.mark.tf
@pytest.mark.parametrize("dtype", SELECT_DTYPES)
@pytest.mark.parametrize("shapes", [((2, 3, 4), (2, 3, 4), (2, 3, 4)), ((), (3,), (2, 1)),
                                    ((4,), (3, 1), ()), ((2, 1, 4), (1, 3, 1), (3, 4)),
                                    ((1, 2, 1, 3, 1), (2, 1, 1, 1, 2), (4, 1, 1))])
def test_select_v2(shapes, dtype):
    r = rng("SELECT_V2", dtype, shapes)
    model = select_model("SELECT_V2", dtype, *shapes)
    check_against_tflite(model, [random(r, shapes[0], "bool"), random(r, shapes[1], dtype),
                                 random(r, shapes[2], dtype)])


# -- unary -----------------------------------------------------------------------------------

# a rank-0 graph input arrives as shape (1,): Interpreter._check_input's ascontiguousarray
UNARY_SHAPES = [(1,), (7,), (2, 3, 4, 5), (1, 2, 3, 2, 4)]


def unary_input(op, r, shape, dtype):
    if dtype != "float32":
        return random(r, shape, dtype, -1000, 1000)
    if op in ("SQRT", "RSQRT", "LOG"):
        return r.uniform(0.01, 100, size=shape).astype(np.float32)
    if op == "EXP":
        return r.uniform(-20, 20, size=shape).astype(np.float32)
    if op in ("SIN", "COS"):
        return r.uniform(-50, 50, size=shape).astype(np.float32)
    if op in ("ROUND", "FLOOR", "CEIL"):  # halves and near-integers
        return (r.integers(-40, 40, size=shape) / 4).astype(np.float32)
    return random(r, shape, dtype)


UNARY_DTYPES = {"NEG": ["float32", "int32", "int64"], "ABS": ["float32", "int32"],
                "SIGN": ["float32", "int32"], "SQRT": ["float32"], "RSQRT": ["float32"],
                "SQUARE": ["float32"], "EXP": ["float32"], "LOG": ["float32"],
                "SIN": ["float32"], "COS": ["float32"], "FLOOR": ["float32"],
                "CEIL": ["float32"], "ROUND": ["float32"],
                "ZEROS_LIKE": ["float32", "int32", "int64"]}
UNARY_CASES = [(op, dtype) for op, dtypes in UNARY_DTYPES.items() for dtype in dtypes]


@pytest.mark.tf
@pytest.mark.parametrize("op,dtype", UNARY_CASES)
def test_unary(op, dtype):
    for shape in UNARY_SHAPES:
        r = rng(op, dtype, shape)
        model = unary_model(op, dtype, shape)
        check_against_tflite(model, [unary_input(op, r, shape, dtype)],
                             resolver=RESOLVER.get(op, "ref"))


@pytest.mark.tf
@pytest.mark.parametrize("op", ["NEG", "ABS", "SIGN", "SQRT", "RSQRT", "SQUARE", "EXP", "LOG",
                                "SIN", "COS", "FLOOR", "CEIL", "ROUND"])
def test_unary_special_floats(op):
    specials = np.array([0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, -1.0, 100.0, np.inf, -np.inf,
                         np.nan], np.float32)
    check_against_tflite(unary_model(op, "float32", (12,)), [specials],
                         resolver=RESOLVER.get(op, "ref"))


@pytest.mark.tf
@pytest.mark.parametrize("op", ["NEG", "ABS"])
def test_unary_int32_extremes(op):
    x = np.array([-2 ** 31, 2 ** 31 - 1, -1, 0, 1], np.int32)
    check_against_tflite(unary_model(op, "int32", (5,)), [x])


CASTS = [("float32", "int32"), ("float32", "int64"), ("float32", "int16"), ("float32", "uint8"),
         ("float32", "int8"), ("float32", "bool"), ("int32", "float32"), ("int32", "int64"),
         ("int64", "int32"), ("int32", "bool"), ("bool", "float32"), ("bool", "int32"),
         ("int8", "float32"), ("uint8", "int32"), ("int16", "int32"), ("int32", "uint8"),
         ("int32", "int8"), ("int64", "float32"), ("float32", "float64"), ("float64", "float32"), ("float32", "float16"),
         ("int32", "uint32"), ("int32", "uint16"), ("complex64", "float32"),
         ("complex64", "int32"), ("complex64", "bool"), ("float32", "complex64"),
         ("int32", "complex64"), ("complex64", "complex64")]


def cast_input(r, dtype):
    if dtype == "complex64":  # the real part carries what a cast keeps; zeros in both parts
        values = cast_input(r, "float32") + 1j * cast_input(r, "float32")
        values[1, :2] = [0.0, 1j]
        return values.astype(dtype)
    if dtype.startswith("float"):  # fractions of both signs, in range of every target
        values = r.uniform(-100, 100, size=(3, 7))
        values[0, :4] = [0.0, -0.0, 0.5, -0.99]
        return values.astype(dtype)
    if dtype == "int64":
        return r.integers(-2 ** 40, 2 ** 40, size=(3, 7))
    if dtype == "bool":
        return random(r, (3, 7), dtype)
    info = np.iinfo(dtype)
    return r.integers(info.min, info.max, size=(3, 7), endpoint=True).astype(dtype)


@pytest.mark.tf
@pytest.mark.parametrize("dst", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                                 "bool"])
@pytest.mark.parametrize("src", ["float32", "float64"])
def test_cast_float_saturates(src, dst):
    """Truncation towards zero, saturation at the limits, NaN to the maximum."""
    x = np.array([-1e19, -9.3e18, -5e9, -70000.7, -300.5, -128.5, -2.5, -0.5, -0.0, 0.5, 1.99,
                  127.9, 128.5, 255.9, 256.5, 70000.2, 5e9, 9.3e18, 1e19, np.nan, np.inf,
                  -np.inf], src)
    check_against_tflite(unary_model("CAST", src, x.shape, out_dtype=dst), [x])


@pytest.mark.tf
@pytest.mark.parametrize("src,dst", CASTS)
def test_cast(src, dst):
    model = unary_model("CAST", src, (3, 7), out_dtype=dst)
    check_against_tflite(model, [cast_input(rng("CAST", src, dst), src)])


# -- quantized routing -----------------------------------------------------------------------


def int8_binary_model(op, out_dtype="int8"):
    q = Quantization(scale=np.float32([0.05]), zero_point=np.int64([3]))
    b = GraphBuilder()
    x = b.input("x", (2, 3), "int8", q)
    y = b.input("y", (2, 3), "int8", q)
    out = b.op(op, [x, y], (2, 3), out_dtype, out_quantization=q if out_dtype == "int8" else None)
    return b.build(outputs=[out])


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE",
                                "LESS", "EQUAL"])
def test_quantized_inputs_go_to_the_int_module(op, monkeypatch):
    from qengine.ops import elementwise

    calls = []

    def fake(ctx, family):
        calls.append((ctx.op.type, family))
        raise qengine.errors.UnsupportedOpError("stub")

    monkeypatch.setattr(elementwise, "quantized_path", fake)
    out_dtype = "bool" if op in COMPARISONS else "int8"
    with pytest.raises(qengine.errors.UnsupportedOpError):
        qengine.Interpreter(int8_binary_model(op, out_dtype))
    assert calls == [(op, "elementwise")]


# -- malformed models and bad data -----------------------------------------------------------


def test_shapes_that_do_not_broadcast():
    with pytest.raises(InvalidModelError, match="do not broadcast"):
        qengine.Interpreter(binary_model("ADD", "float32", (2, 3), (4,)))


def test_mixed_input_dtypes():
    b = GraphBuilder()
    x, y = b.input("x", (3,), "float32"), b.input("y", (3,), "int32")
    model = b.build(outputs=[b.op("ADD", [x, y], (3,), "float32")])
    with pytest.raises(InvalidModelError, match="dtypes differ"):
        qengine.Interpreter(model)


def test_unknown_fused_activation():
    model = binary_model("ADD", "float32", (3,), (3,), opts=options("AddOptions",
                                                                    fusedActivationFunction=42))
    with pytest.raises(InvalidModelError, match="activation"):
        qengine.Interpreter(model)


def test_constant_zero_divisor():
    model = binary_model("DIV", "int32", (3,), (3,), const_b=np.int32([1, 0, 2]))
    with pytest.raises(InvalidModelError, match="division by zero"):
        qengine.Interpreter(model)


@pytest.mark.parametrize("op", ["DIV", "FLOOR_DIV", "FLOOR_MOD"])
def test_zero_divisor_at_run_time(op):
    interpreter = qengine.Interpreter(binary_model(op, "int32", (3,), (3,)))
    with pytest.raises(InputError, match="division by zero"):
        interpreter.run([np.int32([1, 2, 3]), np.int32([1, 0, 2])])


def test_negative_integer_exponent():
    interpreter = qengine.Interpreter(binary_model("POW", "int32", (2,), (2,)))
    with pytest.raises(InputError, match="negative"):
        interpreter.run([np.int32([2, 3]), np.int32([1, -1])])


@pytest.mark.parametrize("cond_shape,shape", [((3,), (2, 3)), ((2, 2), (2, 3)), ((2, 3), (2,))])
def test_select_condition_shape(cond_shape, shape):
    with pytest.raises(InvalidModelError):
        qengine.Interpreter(select_model("SELECT", "float32", cond_shape, shape, shape))


def test_select_values_differ_in_dtype():
    b = GraphBuilder()
    c, x, y = b.input("c", (3,), "bool"), b.input("x", (3,), "float32"), b.input("y", (3,), "int32")
    model = b.build(outputs=[b.op("SELECT_V2", [c, x, y], (3,), "float32")])
    with pytest.raises(InvalidModelError):
        qengine.Interpreter(model)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"])
@pytest.mark.parametrize("b_shape", [(8, 8), (8,), (1,)], ids=["same", "row", "scalar"])
@pytest.mark.parametrize("b_first", [False, True])
def test_special_floats_in_one_pass(op, b_shape, b_first):
    """The compiled one-pass float path (`float_ops.binary_f32`: an operand of the output's
    shape, the other repeating along it) on every pair of special values, bit for bit against
    TFLite's reference kernels (NaN compared as NaN): MAXIMUM and MINIMUM clamp nothing."""
    specials = np.array([0.0, -0.0, 1.5, -2.5, 3.0, np.inf, -np.inf, np.nan], np.float32)
    full = np.repeat(specials, 8).reshape(8, 8)  # full[i, j] = specials[i]
    other = {(8, 8): np.tile(specials, (8, 1)), (8,): specials,  # every pair; a row; NaN
             (1,): np.float32([np.nan])}[b_shape]
    a_in, b_in = (other, full) if b_first else (full, other)
    model = binary_model(op, "float32", a_in.shape, b_in.shape)
    want = run_tflite(model.to_bytes(), [a_in, b_in])
    got = qengine.Interpreter(model).run([a_in, b_in])
    for name, value in want.items():
        nan = np.isnan(value)
        np.testing.assert_array_equal(np.isnan(got[name]), nan)
        np.testing.assert_array_equal(got[name][~nan].view(np.int32), value[~nan].view(np.int32))
