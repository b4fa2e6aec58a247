"""Quantized elementwise ops (qengine.ops.elementwise_int) against TFLite's reference kernels:
int8 ADD/SUB/MUL/SQUARED_DIFFERENCE/MAXIMUM/MINIMUM and int8/uint8/int16 comparisons, bit for
bit, on models quantized by qengine and on hand-built models reaching extreme parameters."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import check_against_tflite, rng
from qengine.kernels.fixedpoint import mbqm as mbqm_scalar

import qengine
from qengine.builder import ACTIVATIONS, GraphBuilder, options
from qengine.errors import InvalidModelError, ShapeError, UnsupportedOpError
from qengine.ir import Quantization
from qengine.ops.elementwise_int import mbqm

OPTIONS = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}
COMPARISONS = ["EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL"]
SHAPE_PAIRS = [((7,), (7,)), ((2, 3), (3,)), ((4, 1, 5), (1, 3, 1)), ((1,), (2, 3, 4)),
               ((2, 3, 4, 5), (2, 1, 4, 1)), ((1, 2, 3, 2, 4), (2, 1, 1, 4)),
               ((2, 3, 40), (1, 1, 1)), ((6, 50), (1,))]  # (the last two: one value of b)
RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def q(scale, zero_point=0):
    return Quantization.per_tensor(scale, zero_point)


def random_q(r, dtype="int8"):
    low, high = RANGES[dtype]
    return q(float(np.exp(r.uniform(np.log(1e-3), np.log(0.5)))), int(r.integers(low, high + 1)))


def random_ints(r, shape, dtype="int8"):
    low, high = RANGES[dtype]
    return r.integers(low, high + 1, size=shape).astype(dtype)


def binary_model(op, shapes, quants, out_q, dtype="int8", out_dtype=None, opts=None, version=2,
                 out_shape=None):
    b = GraphBuilder()
    a = b.input("a", shapes[0], dtype, quants[0])
    c = b.input("b", shapes[1], dtype, quants[1])
    out_shape = out_shape or np.broadcast_shapes(*shapes)
    out = b.op(op, [a, c], out_shape, out_dtype or dtype, options=opts,
               out_quantization=out_q, version=version)
    return b.build(outputs=[out])


def check(model, shapes, r, dtype="int8"):
    check_against_tflite(model, [random_ints(r, s, dtype) for s in shapes])


def test_vector_mbqm_matches_the_scalar_kernel():
    r = rng("mbqm")
    x = r.integers(-(2**31), 2**31, size=2000)
    for multiplier, shift in [(2**30, 0), (1518500250, -3), (2**31 - 1, -31), (1073741825, 2),
                              (1999999999, -12)]:
        want = [mbqm_scalar(int(v), multiplier, shift) for v in x]
        assert mbqm(x, multiplier, shift).tolist() == want


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
def test_arithmetic_random_params(op, activation):
    for shapes in SHAPE_PAIRS:
        r = rng(op, activation, shapes)
        for _ in range(2):
            quants = [random_q(r), random_q(r)]
            opts = options(OPTIONS[op], fusedActivationFunction=ACTIVATIONS[activation])
            model = binary_model(op, shapes, quants, random_q(r), opts=opts)
            check(model, shapes, r)


EXTREMES = [  # (input 1, input 2, output) parameters
    (q(0.5, -128), q(0.5, 127), q(0.5, 0)),
    (q(1e-4, 127), q(0.9, -128), q(2e-3, -128)),
    (q(0.02, 0), q(0.02, 0), q(1e-3, 127)),  # outputs saturate
    (q(3.0, 5), q(7.5, -3), q(0.25, 10)),  # scales > 1
    (q(1.0 / 128, 0), q(1.0 / 256, -128), q(1.0 / 64, 0)),  # exact powers of two: ties
]


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "SQUARED_DIFFERENCE"])
@pytest.mark.parametrize("params", range(len(EXTREMES)))
def test_arithmetic_extreme_params(op, params):
    shapes = ((3, 1, 200), (1, 5, 200))
    r = rng(op, params)
    model = binary_model(op, shapes, EXTREMES[params][:2], EXTREMES[params][2])
    check(model, shapes, r)


@pytest.mark.tf
def test_mul_multiplier_above_one():
    shapes = ((500,), (500,))
    model = binary_model("MUL", shapes, [q(0.5, 3), q(0.8, -7)], q(0.01, 2), version=3)
    check(model, shapes, rng("mul>1"))


@pytest.mark.tf
def test_squared_difference_random_params():
    for shapes in SHAPE_PAIRS:
        r = rng("sqd", shapes)
        model = binary_model("SQUARED_DIFFERENCE", shapes, [random_q(r), random_q(r)],
                             q(float(r.uniform(0.01, 0.3)), int(r.integers(-128, 0))))
        check(model, shapes, r)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum(op):
    for shapes in SHAPE_PAIRS:
        r = rng(op, shapes)
        same = random_q(r)
        check(binary_model(op, shapes, [same, same], same), shapes, r)


@pytest.mark.tf
@pytest.mark.parametrize("op", COMPARISONS)
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_comparisons_rescale_both_inputs(op, dtype):
    for shapes in SHAPE_PAIRS:
        r = rng(op, dtype, shapes)
        quants = [random_q(r, dtype), random_q(r, dtype)]
        check(binary_model(op, shapes, quants, None, dtype, "bool"), shapes, r, dtype)
    # nearly equal real values: equal scales, zero points one apart
    shapes = ((2000,), (2000,))
    base = 128 if dtype == "uint8" else 0
    model = binary_model(op, shapes, [q(0.1, base), q(0.1, base + 1)], None, dtype, "bool")
    check(model, shapes, rng(op, dtype, "tight"), dtype)


@pytest.mark.tf
@pytest.mark.parametrize("op", COMPARISONS)
def test_int16_comparisons(op):
    """EQUAL/NOT_EQUAL rescale quantized int16 inputs; the ordering ones compare raw values."""
    shapes = ((3, 50), (50,))
    r = rng(op, "int16")
    model = binary_model(op, shapes, [q(0.01), q(0.5)], None, "int16", "bool")
    a, b = random_ints(r, shapes[0], "int16"), random_ints(r, shapes[1], "int16")
    a[0, :] = b  # some equal raw values
    check_against_tflite(model, [a, b])


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "SQUARED_DIFFERENCE", "MAXIMUM"])
def test_models_quantized_by_qengine(op):
    shapes = ((2, 3, 8), (3, 8))
    b = GraphBuilder()
    x, y = b.input("x", shapes[0]), b.input("y", shapes[1])
    out = b.op(op, [x, y], shapes[0])
    model = b.build(outputs=[out])
    r = rng("quantized", op)
    calibration = {name: r.normal(size=(16, *s)).astype(np.float32) * 3
                   for name, s in zip("xy", shapes)}
    int8_model = qengine.quantize(model, mode="int8", calibration=calibration, quiet=True)
    for _ in range(3):
        check(int8_model, shapes, r)


def interpreter_error(model):
    with pytest.raises((InvalidModelError, UnsupportedOpError)) as info:
        qengine.Interpreter(model.to_bytes())
    return info.type


def test_mismatched_shapes_are_invalid():
    model = binary_model("ADD", ((2, 3), (4,)), [q(0.1), q(0.1)], q(0.1), out_shape=(2, 3))
    assert interpreter_error(model) is ShapeError  # an InvalidModelError: shapes that misfit


@pytest.mark.parametrize("op", ["ADD", "MUL", "LESS"])
def test_per_channel_activation_is_unsupported(op):
    per_channel = Quantization(np.array([0.1, 0.2, 0.3], np.float32), np.zeros(3, np.int64), 0)
    out_q, dtype = (None, "bool") if op == "LESS" else (q(0.1), "int8")
    model = binary_model(op, ((3,), (3,)), [per_channel, q(0.1)], out_q, out_dtype=dtype)
    assert interpreter_error(model) is UnsupportedOpError


def test_mixed_dtypes_are_refused():
    model = binary_model("LESS", ((3,), (3,)), [q(0.1), q(0.1)], None, out_dtype="bool")
    model.subgraphs[0].inputs[1].dtype = "uint8"
    assert interpreter_error(model) is InvalidModelError


def test_add_with_tiny_output_scale_is_unsupported():
    """r_out = 2 * max(s1, s2) / (2^20 * s_out) >= 1 fails TFLite's CHECK in Prepare."""
    model = binary_model("ADD", ((3,), (3,)), [q(0.5), q(0.5)], q(1e-7))
    assert interpreter_error(model) is UnsupportedOpError


def test_comparison_with_scale_above_one_is_unsupported():
    model = binary_model("LESS", ((3,), (3,)), [q(2.0), q(0.1)], None, out_dtype="bool")
    assert interpreter_error(model) is UnsupportedOpError
