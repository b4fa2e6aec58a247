"""Float activations against TFLite's reference kernels, including special values and the
quantized routing."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import check_against_tflite, rng
from tflite_ref import run_tflite

import qengine
from qengine.builder import GraphBuilder, options
from qengine.errors import InvalidModelError, UnsupportedOpError
from qengine.ir import Quantization

# Every op matches TFLite within the default tolerance (1e-5 of the output range). The
# transcendental ones (ELU, GELU, LOGISTIC, TANH) may differ from TFLite's libm/Eigen results
# in the last ulp, which that tolerance covers.
GELU_APPROXIMATE_REL = 1e-4

# ELU has no reference kernel in TFLite; its builtin (optimized) one is the reference instead
RESOLVER = {"ELU": "nodelegate"}

SHAPES = [(1,), (7,), (2, 3, 4, 5), (1, 2, 3, 2, 4)]
SIMPLE = ["RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "ELU", "HARD_SWISH", "LOGISTIC",
          "TANH"]
SPECIALS = np.array([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 6.0, 7.5, -9.5, 16.7, 20.0,
                     -20.0, 1e30, -1e30, np.inf, -np.inf, np.nan], np.float32)


def activation_model(op, shape, opts=None, dtype="float32", quantization=None):
    b = GraphBuilder()
    x = b.input("x", shape, dtype, quantization)
    out = b.op(op, [x], shape, dtype, options=opts, out_quantization=quantization)
    return b.build(outputs=[out])


def inputs(r, shape, spread=4.0):
    return (r.normal(size=shape) * spread).astype(np.float32)


@pytest.mark.tf
@pytest.mark.parametrize("op", SIMPLE)
def test_activation(op):
    for shape in SHAPES:
        check_against_tflite(activation_model(op, shape), [inputs(rng(op, shape), shape)],
                             resolver=RESOLVER.get(op, "ref"))


@pytest.mark.tf
@pytest.mark.parametrize("op", SIMPLE + ["GELU"])
def test_special_values(op):
    check_against_tflite(activation_model(op, SPECIALS.shape), [SPECIALS],
                         resolver=RESOLVER.get(op, "ref"))


@pytest.mark.tf
def test_hard_swish_is_bit_exact():
    """HARD_SWISH equals TFLite's reference kernel bit for bit: a dense sweep of [-8, 8]
    (both bends, -3 and 3, and the signed zeros of the flat part), the special values (NaN
    through std::max's 0) and random ones."""
    x = np.concatenate([np.linspace(-8, 8, 4001, dtype=np.float32), SPECIALS,
                        inputs(rng("hard-swish"), (999,), spread=10)])
    model = activation_model("HARD_SWISH", x.shape)
    want = run_tflite(model.to_bytes(), [x], "ref")
    got = qengine.Interpreter(model).run([x])
    for name, value in want.items():
        np.testing.assert_array_equal(got[name].view(np.int32), value.view(np.int32))


@pytest.mark.tf
@pytest.mark.parametrize("op", ["LOGISTIC", "TANH", "ELU"])
def test_wide_range(op):
    """Both saturated tails and the cut-offs of TFLite's LOGISTIC (-9, 16.62)."""
    x = np.linspace(-30, 30, 6001, dtype=np.float32)
    check_against_tflite(activation_model(op, x.shape), [x], resolver=RESOLVER.get(op, "ref"))


@pytest.mark.tf
@pytest.mark.parametrize("alpha", [0.0, 0.2, -0.5, 1.0, 2.5])
def test_leaky_relu(alpha):
    model = activation_model("LEAKY_RELU", (2, 3, 4, 5), options("LeakyReluOptions", alpha=alpha))
    check_against_tflite(model, [inputs(rng(alpha), (2, 3, 4, 5))])


@pytest.mark.tf
@pytest.mark.parametrize("alpha", [0.2, -0.5])
def test_leaky_relu_special_values(alpha):
    """x > 0 ? x : x * alpha on +-0, +-inf and NaN, bit for bit (NaN as NaN): -0.0 takes the
    product, so a negative alpha makes it +0.0."""
    x = np.array([0.0, -0.0, 1.5, -2.5, np.inf, -np.inf, np.nan, 1e-45], np.float32)
    model = activation_model("LEAKY_RELU", x.shape, options("LeakyReluOptions", alpha=alpha))
    want = run_tflite(model.to_bytes(), [x])
    got = qengine.Interpreter(model).run([x])
    for name, value in want.items():
        nan = np.isnan(value)
        np.testing.assert_array_equal(np.isnan(got[name]), nan)
        np.testing.assert_array_equal(got[name][~nan].view(np.int32), value[~nan].view(np.int32))


@pytest.mark.tf
@pytest.mark.parametrize("approximate", [False, True])
def test_gelu(approximate):
    for shape in SHAPES:
        model = activation_model("GELU", shape, options("GeluOptions", approximate=approximate))
        check_against_tflite(model, [inputs(rng("GELU", approximate, shape), shape)],
                             rel=GELU_APPROXIMATE_REL if approximate else 1e-5)


@pytest.mark.tf
@pytest.mark.parametrize("approximate", [None, False, True])
def test_gelu_range(approximate):
    """No options means the exact (erf) form."""
    opts = None if approximate is None else options("GeluOptions", approximate=approximate)
    x = np.linspace(-12, 12, 2401, dtype=np.float32)
    check_against_tflite(activation_model("GELU", x.shape, opts), [x],
                         rel=GELU_APPROXIMATE_REL if approximate else 1e-5)


def prelu_model(x_shape, alpha, const=True):
    b = GraphBuilder()
    x = b.input("x", x_shape)
    a = b.const("alpha", alpha) if const else b.input("alpha", alpha.shape)
    return b.build(outputs=[b.op("PRELU", [x, a], x_shape, "float32")])


# TFLite's PRELU broadcasts alpha into the input's shape, up to rank 4
PRELU_SHAPES = [((2, 3, 4, 5), (5,)), ((2, 3, 4, 5), (1, 1, 5)), ((2, 3, 4, 5), (3, 1, 1)),
                ((1, 4, 4, 3), (1, 1, 3)), ((6,), (6,)), ((2, 6), ()), ((3, 2, 4), (2, 1)),
                ((2, 3), (2, 3))]


@pytest.mark.tf
@pytest.mark.parametrize("const", [True, False])
@pytest.mark.parametrize("x_shape,alpha_shape", PRELU_SHAPES)
def test_prelu(x_shape, alpha_shape, const):
    r = rng("PRELU", x_shape, alpha_shape)
    alpha = r.uniform(-1, 2, size=alpha_shape).astype(np.float32)
    model = prelu_model(x_shape, alpha, const)
    feeds = [inputs(r, x_shape)] + ([] if const else [alpha])
    check_against_tflite(model, feeds)


# -- quantized routing and bad models ---------------------------------------------------------


@pytest.mark.parametrize("op", SIMPLE + ["LEAKY_RELU", "GELU", "PRELU"])
def test_quantized_inputs_go_to_the_int_module(op, monkeypatch):
    from qengine.ops import activations

    calls = []

    def fake(ctx, family):
        calls.append((ctx.op.type, family))
        raise UnsupportedOpError("stub")

    monkeypatch.setattr(activations, "quantized_path", fake)
    q = Quantization(scale=np.float32([0.05]), zero_point=np.int64([-3]))
    if op == "PRELU":
        b = GraphBuilder()
        x = b.input("x", (1, 4, 4, 3), "int8", q)
        a = b.const("alpha", np.int8([10, 20, 30]), quantization=q)
        model = b.build(outputs=[b.op("PRELU", [x, a], (1, 4, 4, 3), "int8",
                                      out_quantization=q)])
    else:
        model = activation_model(op, (1, 4, 4, 3), dtype="int8", quantization=q)
    with pytest.raises(UnsupportedOpError):
        qengine.Interpreter(model)
    assert calls == [(op, "activations")]


def test_unquantized_integers_are_unsupported():
    with pytest.raises(UnsupportedOpError, match="int32"):
        qengine.Interpreter(activation_model("RELU", (3,), dtype="int32"))


def test_prelu_alpha_that_does_not_broadcast():
    with pytest.raises(InvalidModelError, match="do not broadcast"):
        qengine.Interpreter(prelu_model((2, 3, 4), np.ones((3,), np.float32)))


def test_prelu_alpha_that_would_grow_the_input():
    with pytest.raises(InvalidModelError, match="larger shape"):
        qengine.Interpreter(prelu_model((3, 1, 4), np.ones((2, 1), np.float32)))


def test_prelu_missing_alpha():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    model = b.build(outputs=[b.op("PRELU", [x], (2, 3), "float32")])
    with pytest.raises(InvalidModelError, match="inputs"):
        qengine.Interpreter(model)
