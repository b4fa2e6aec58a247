"""Quantized activations (qengine.ops.activations_int) against TFLite's reference kernels, bit
for bit: every int8 input value under random and extreme parameters, models quantized by
qengine, and the parameter combinations TFLite refuses."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import check_against_tflite, rng

import qengine
from qengine.builder import GraphBuilder, options
from qengine.errors import InvalidModelError, UnsupportedOpError
from qengine.ir import Quantization

# ELU is not in TFLite's reference resolver; the builtin kernel (same LUT) is the reference
RESOLVER = {"ELU": "nodelegate"}
REQUANTIZING = ["RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "HARD_SWISH",
                "TANH", "ELU"]
# TFLite registers these ops only at version 1 (the int8 kernels included)
VERSION_1 = {"ELU", "RELU_N1_TO_1", "RELU_0_TO_1", "HARD_SWISH", "PRELU"}
EVERY_INT8 = np.arange(-128, 128).astype(np.int8).reshape(2, 4, 32)


def q(scale, zero_point=0):
    return Quantization.per_tensor(scale, zero_point)


def unary_model(op, shape, in_q, out_q, opts=None):
    b = GraphBuilder()
    x = b.input("x", shape, "int8", in_q)
    out = b.op(op, [x], shape, "int8", options=opts, out_quantization=out_q,
               version=1 if op in VERSION_1 else 2)
    return b.build(outputs=[out])


def op_options(op, r):
    if op == "LEAKY_RELU":
        return options("LeakyReluOptions", alpha=float(r.choice([0.01, 0.2, -0.3, 1.7])))
    return None


def check(op, model, inputs):
    check_against_tflite(model, inputs, resolver=RESOLVER.get(op, "ref"))


@pytest.mark.tf
@pytest.mark.parametrize("op", REQUANTIZING)
@pytest.mark.parametrize("seed", range(6))
def test_every_input_value_random_params(op, seed):
    r = rng(op, seed)
    in_q = q(float(np.exp(r.uniform(np.log(1e-3), np.log(0.5)))), int(r.integers(-128, 128)))
    if op == "TANH" and seed % 2:
        out_q = q(1 / 128, 0)
    else:
        out_q = q(float(np.exp(r.uniform(np.log(1e-3), np.log(0.5)))), int(r.integers(-128, 128)))
    if op == "HARD_SWISH":  # TFLite needs s_in / (128 * s_out) <= 1
        out_q = q(max(float(out_q.scale[0]), float(in_q.scale[0]) / 100), int(out_q.zero_point[0]))
    check(op, unary_model(op, EVERY_INT8.shape, in_q, out_q, op_options(op, r)), [EVERY_INT8])


EXTREMES = [(q(0.5, -128), q(0.5, 127)), (q(1e-4, 127), q(0.9, -128)), (q(0.05, 0), q(1e-3, 0)),
            (q(1 / 16, 3), q(1 / 32, -3)), (q(0.03, 0), q(0.03, 0))]


@pytest.mark.tf
@pytest.mark.parametrize("op", REQUANTIZING)
@pytest.mark.parametrize("case", range(len(EXTREMES)))
def test_extreme_params(op, case):
    in_q, out_q = EXTREMES[case]
    if op == "HARD_SWISH" and case == 1:
        pytest.skip("TFLite refuses this output multiplier; see test_hard_swish_refusal")
    opts = options("LeakyReluOptions", alpha=-2.0) if op == "LEAKY_RELU" else None
    check(op, unary_model(op, EVERY_INT8.shape, in_q, out_q, opts), [EVERY_INT8])


@pytest.mark.tf
@pytest.mark.parametrize("scale", [1e-3, 0.02, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("zero_point", [-128, -3, 127])
def test_logistic(scale, zero_point):
    model = unary_model("LOGISTIC", EVERY_INT8.shape, q(scale, zero_point), q(1 / 256, -128))
    check("LOGISTIC", model, [EVERY_INT8])


@pytest.mark.tf
@pytest.mark.parametrize("alpha_shape", [(1,), (16,), (1, 1, 16), (3, 1, 16), (2, 3, 5, 16)])
def test_prelu(alpha_shape):
    shape = (2, 3, 5, 16)
    r = rng("prelu", alpha_shape)
    for _ in range(3):
        b = GraphBuilder()
        x = b.input("x", shape, "int8", q(float(r.uniform(0.01, 0.3)), int(r.integers(-128, 128))))
        alpha_q = q(float(r.uniform(0.001, 0.05)), int(r.integers(-128, 128)))
        alpha = b.const("alpha", r.integers(-128, 128, size=alpha_shape).astype(np.int8),
                        quantization=alpha_q)
        out_q = q(float(r.uniform(0.01, 0.3)), int(r.integers(-128, 128)))
        out = b.op("PRELU", [x, alpha], shape, "int8", out_quantization=out_q)
        model = b.build(outputs=[out])
        check("PRELU", model, [r.integers(-128, 128, size=shape).astype(np.int8)])


@pytest.mark.tf
@pytest.mark.parametrize("op", ["RELU", "RELU6", "LEAKY_RELU", "HARD_SWISH", "LOGISTIC", "TANH",
                                "ELU", "PRELU"])
def test_models_quantized_by_qengine(op):
    shape = (1, 4, 4, 8)
    b = GraphBuilder()
    x = b.input("x", shape)
    inputs = [x]
    if op == "PRELU":
        inputs.append(b.const("alpha", np.linspace(-0.5, 0.5, 8).astype(np.float32)))
    opts = options("LeakyReluOptions", alpha=0.1) if op == "LEAKY_RELU" else None
    out = b.op(op, inputs, shape, options=opts)
    r = rng("quantized", op)
    model = qengine.quantize(b.build(outputs=[out]), mode="int8",
                             calibration=r.normal(size=(16, *shape)).astype(np.float32) * 4,
                             quiet=True)
    for o in model.subgraphs[0].operators:
        if o.opcode.name in VERSION_1:  # the quantizer writes v2 for ELU and PRELU
            o.opcode.version = 1
    for _ in range(3):
        check(op, model, [r.integers(-128, 128, size=shape).astype(np.int8)])


def refused(model):
    with pytest.raises((InvalidModelError, UnsupportedOpError)) as info:
        qengine.Interpreter(model.to_bytes())
    return info.type


def test_logistic_output_scale_must_be_1_256():
    assert refused(unary_model("LOGISTIC", (4,), q(0.1), q(1 / 128, -128))) is UnsupportedOpError


def test_hard_swish_refusal():
    """s_in / (128 * s_out) > 1 makes TFLite's HardSwishPrepare fail."""
    assert refused(unary_model("HARD_SWISH", (4,), q(0.9), q(1e-4))) is UnsupportedOpError


def test_prelu_alpha_must_not_enlarge_the_input():
    b = GraphBuilder()
    x = b.input("x", (1, 4), "int8", q(0.1))
    alpha = b.const("alpha", np.ones((3, 4), np.int8), quantization=q(0.1))
    out = b.op("PRELU", [x, alpha], (3, 4), "int8", out_quantization=q(0.1))
    assert refused(b.build(outputs=[out])) is InvalidModelError


def test_uint8_and_per_channel_are_unsupported():
    model = unary_model("RELU", (4,), q(0.1), q(0.1))
    for t in model.subgraphs[0].tensors:
        t.dtype = "uint8"
    assert refused(model) is UnsupportedOpError
    per_channel = Quantization(np.array([0.1, 0.2], np.float32), np.zeros(2, np.int64), 1)
    assert refused(unary_model("TANH", (1, 2), per_channel, q(1 / 128))) is UnsupportedOpError
