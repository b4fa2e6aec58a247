"""The int8 ops TensorFlow's converter emits beyond the common ones — RSQRT, ABS, EXP, LOG, GELU
(elementwise_int / activations_int) and LOG_SOFTMAX (nn_int) — against TFLite's reference
kernels bit for bit: every int8 input value under random and extreme parameters, models
quantized by qengine, the converter's own int8 corpus models end to end, and the parameter
combinations TFLite refuses."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import check_against_tflite, rng
from tflite_ref import quantize_inputs, run_tflite

import qengine
from qengine.builder import GraphBuilder, options
from qengine.errors import InputError, InvalidModelError, UnsupportedOpError
from qengine.ir import Quantization

UNARY = ["RSQRT", "ABS", "EXP", "LOG", "GELU", "GELU_APPROXIMATE"]
EVERY_INT8 = np.arange(-128, 128).astype(np.int8).reshape(2, 4, 32)


def q(scale, zero_point=0):
    return Quantization.per_tensor(scale, zero_point)


def log_uniform(r, low, high):
    return float(np.exp(r.uniform(np.log(low), np.log(high))))


def unary_model(name, shape, in_q, out_q):
    """A one-op int8 model; GELU_APPROXIMATE is GELU with approximate=True."""
    op, opts = name, None
    if name.startswith("GELU"):
        op, opts = "GELU", options("GeluOptions", approximate=name == "GELU_APPROXIMATE")
    b = GraphBuilder()
    x = b.input("x", shape, "int8", in_q)
    out = b.op(op, [x], shape, "int8", options=opts, out_quantization=out_q, version=2)
    return b.build(outputs=[out])


def valid_inputs(name, zero_point):
    """Every int8 value, except that RSQRT takes only values >= the zero point (reals >= 0):
    those are repeated to fill the same shape."""
    if name != "RSQRT":
        return EVERY_INT8
    allowed = np.arange(zero_point, 128)
    return np.resize(allowed, EVERY_INT8.shape).astype(np.int8)


def check_unary(name, in_q, out_q):
    model = unary_model(name, EVERY_INT8.shape, in_q, out_q)
    check_against_tflite(model, [valid_inputs(name, int(in_q.zero_point[0]))])


@pytest.mark.tf
@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("seed", range(8))
def test_every_input_value_random_params(name, seed):
    r = rng(name, seed)
    in_q = q(log_uniform(r, 1e-3, 0.5), int(r.integers(-128, 128)))
    out_q = q(log_uniform(r, 1e-3, 0.5), int(r.integers(-128, 128)))
    check_unary(name, in_q, out_q)


# multipliers far above and below 1, zero points at both ends, equal parameters (ABS's
# no-rescale path), EXP overflowing to inf (TFLite's float-to-int cast then gives -128)
EXTREMES = [(q(0.5, -128), q(0.5, 127)), (q(1e-4, 127), q(0.9, -128)), (q(0.05, 0), q(1e-3, 0)),
            (q(1 / 16, 3), q(1 / 32, -3)), (q(0.03, 0), q(0.03, 0)), (q(2.0, -128), q(1e-3, 0)),
            (q(1e-5, -100), q(1e-5, 100)), (q(0.9, 0), q(20.0, -128))]


@pytest.mark.tf
@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("case", range(len(EXTREMES)))
def test_extreme_params(name, case):
    check_unary(name, *EXTREMES[case])


@pytest.mark.tf
@pytest.mark.parametrize("in_scale", [1e-4, 3e-3, 0.1, 1.0, 7.0])
@pytest.mark.parametrize("out_scale", [1e-3, 0.02, 0.5, 4.0])
def test_rsqrt_scales(in_scale, out_scale):
    """RSQRT's two multiplications span 2^-20 .. 2^20 of rescaling here."""
    for zero_point in (-128, -1, 60):
        check_unary("RSQRT", q(in_scale, zero_point), q(out_scale, -17))


@pytest.mark.tf
@pytest.mark.parametrize("in_scale, out_scale", [(1e-8, 1e-6), (1e-12, 1e-9), (1.0, 1000.0),
                                                 (4.0, 500.0)])
def test_rsqrt_multiplier_edges(in_scale, out_scale):
    """Final shifts from +30 (the int32 left shift wraps, as in TFLite) down to -29."""
    for zero_point in (-128, 0):
        check_unary("RSQRT", q(in_scale, zero_point), q(out_scale, -5))


@pytest.mark.tf
def test_rsqrt_rejects_negative_inputs_at_run_time():
    model = unary_model("RSQRT", (4,), q(0.1, 10), q(0.1, 0))
    x = np.array([10, 20, 9, 30], np.int8)  # 9 is below the zero point: a negative real
    with pytest.raises(RuntimeError, match="Rsqrt is only defined for positive values"):
        run_tflite(model.to_bytes(), [x])
    interpreter = qengine.Interpreter(model.to_bytes())
    with pytest.raises(InputError, match="RSQRT of a negative value"):
        interpreter.run([x])


# -- LOG_SOFTMAX -----------------------------------------------------------------------------

LOG_SOFTMAX_OUT = q(16 / 256, 127)


def log_softmax_model(shape, in_q, out_q=LOG_SOFTMAX_OUT):
    b = GraphBuilder()
    x = b.input("x", shape, "int8", in_q)
    out = b.op("LOG_SOFTMAX", [x], shape, "int8", options=options("LogSoftmaxOptions"),
               out_quantization=out_q, version=2)
    return b.build(outputs=[out])


@pytest.mark.tf
@pytest.mark.parametrize("shape", [(10,), (3, 17), (2, 3, 256), (1, 2, 2, 2, 5), (4, 1000)])
@pytest.mark.parametrize("scale", [2e-7, 1e-3, 0.0625, 0.3, 4.0, 40.0])
def test_log_softmax(shape, scale):
    r = rng("log_softmax", shape, scale)
    model = log_softmax_model(shape, q(scale, int(r.integers(-128, 128))))
    x = r.integers(-128, 128, size=shape).astype(np.int8)
    rows = x.reshape(-1, shape[-1])
    rows[0] = 5  # a row of equal values
    if len(rows) > 1:
        rows[1] = -128
        rows[1, 0] = 127  # one dominant value
    if len(rows) > 2:
        rows[2] = r.integers(120, 128, size=shape[-1])  # a narrow spread
    check_against_tflite(model, [x])


def refused(model):
    with pytest.raises((InvalidModelError, UnsupportedOpError)) as info:
        qengine.Interpreter(model.to_bytes())
    return info.type


def test_log_softmax_refusals():
    # output parameters other than exactly (16/256, 127)
    assert refused(log_softmax_model((4,), q(0.1), q(16 / 256, 0))) is UnsupportedOpError
    assert refused(log_softmax_model((4,), q(0.1), q(1 / 16 * 1.0001, 127))) is UnsupportedOpError
    # s_in * 2^26 <= 1: TFLite aborts in PreprocessSoftmaxScaling
    assert refused(log_softmax_model((4,), q(1e-8))) is UnsupportedOpError
    assert refused(log_softmax_model((), q(0.1))) is InvalidModelError


# -- refusals of the unary ops ---------------------------------------------------------------


def test_rsqrt_refuses_multipliers_outside_tflite_defined_range():
    # 1 / (sqrt(s_in) * s_out) < 2^-12 would need a right shift beyond 31 bits
    assert refused(unary_model("RSQRT", (4,), q(100.0), q(1000.0))) is UnsupportedOpError


@pytest.mark.parametrize("name", UNARY)
def test_per_channel_is_unsupported(name):
    # (int16 versions of these ops are 16x8 kernels: tests/test_int16x8_ops.py)
    per_channel = Quantization(np.array([0.1, 0.2], np.float32), np.zeros(2, np.int64), 1)
    assert refused(unary_model(name, (1, 2), per_channel, q(0.1))) is UnsupportedOpError


# -- models quantized by qengine --------------------------------------------------------------


def float_op(b, name, x, shape):
    if name == "LOG_SOFTMAX":
        return b.op(name, [x], shape, options=options("LogSoftmaxOptions"))
    if name.startswith("GELU"):
        return b.op("GELU", [x], shape,
                    options=options("GeluOptions", approximate=name == "GELU_APPROXIMATE"))
    return b.op(name, [x], shape)


@pytest.mark.tf
@pytest.mark.parametrize("name", UNARY + ["LOG_SOFTMAX"])
def test_models_quantized_by_qengine(name):
    shape = (1, 4, 4, 8)
    r = rng("quantized", name)
    b = GraphBuilder()
    x = b.input("x", shape)
    out = float_op(b, name, x, shape)
    calibration = r.normal(size=(16, *shape)).astype(np.float32) * 2
    if name in ("RSQRT", "LOG"):
        calibration = np.abs(calibration) + 0.05
    try:
        model = qengine.quantize(b.build(outputs=[out]), mode="int8", calibration=calibration,
                                 quiet=True)
    except qengine.errors.QEngineError as e:
        pytest.skip(f"qengine's int8 quantizer does not take {name}: {e}")
    ops = [o.opcode.name for o in model.subgraphs[0].operators]
    if name.split("_APPROXIMATE")[0] not in ops or model.subgraphs[0].inputs[0].dtype != "int8":
        pytest.skip(f"qengine's int8 quantizer keeps {name} in float: {ops}")
    zero_point = int(model.subgraphs[0].inputs[0].quantization.zero_point[0])
    low = zero_point if name == "RSQRT" else -128
    for _ in range(3):
        check_against_tflite(model, [r.integers(low, 128, size=shape).astype(np.int8)])


# -- the converter's int8 corpus models, end to end -------------------------------------------

CORPUS_SAMPLES = 4


@pytest.mark.tf
@pytest.mark.parametrize("name", ["digits", "mlp", "mobilenet_v2", "mobilenet_v3_small",
                                  "efficientnet_b0", "transformer"])
def test_converter_int8_corpus_model(corpus, name):
    """Every corpus model the converter made in int8 runs bit-exactly against BUILTIN_REF."""
    assert name in corpus.names()
    data = corpus.path(name, "int8").read_bytes()
    inputs = quantize_inputs(data, [corpus.sample_inputs(name, CORPUS_SAMPLES, seed=1)])
    check_against_tflite(data, inputs)


def test_corpus_list_is_covered(corpus):
    """A model added to the corpus must be added to test_converter_int8_corpus_model too."""
    assert set(corpus.names()) == {"digits", "mlp", "mobilenet_v2", "mobilenet_v3_small",
                                   "efficientnet_b0", "transformer"}
