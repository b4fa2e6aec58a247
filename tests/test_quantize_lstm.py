"""qengine's int8 quantization of float UNIDIRECTIONAL_SEQUENCE_LSTM models into TFLite's 8x8_16
form: TFLite's reference kernels run the written model exactly as qengine does (over several
invokes, state carried), and it stays close to the float model."""

import numpy as np
import pytest
from op_harness import rng
from test_ops_sequence import _lstm_model
from test_ops_sequence_int import (
    KERAS_SHAPE,
    _informative,
    compare_over_calls,
    keras_calibration,
    keras_lstm_path,
)

import qengine
from qengine.ir import Tensor

pytestmark = pytest.mark.tf


def _lstm_ops(model):
    return [op for op in model.subgraphs[0].operators
            if op.opcode.name == "UNIDIRECTIONAL_SEQUENCE_LSTM"]


def _check_form(model) -> None:
    for op in _lstm_ops(model):
        assert op.inputs[0].dtype == "int8" and op.outputs[0].dtype == "int8"
        assert op.inputs[19].dtype == "int16" and len(op.intermediates) == 5


def _dequantized(interpreter, model, x: np.ndarray) -> np.ndarray:
    tin, tout = model.main.inputs[0], model.main.outputs[0]
    q_in, q_out = tin.quantization, tout.quantization
    xq = np.clip(np.round(x / q_in.scale[0]) + q_in.zero_point[0], -128, 127).astype(np.int8)
    y = interpreter.run(xq)[tout.name].astype(np.float32)
    return (y - q_out.zero_point[0]) * q_out.scale[0]


def test_quantize_keras_lstm():
    """The converter's float tf_keras model (two stacked LSTMs) quantized by qengine."""
    source = keras_lstm_path("float").read_bytes()
    quantized = qengine.quantize(source, "int8", keras_calibration(), quiet=True)
    assert len(_lstm_ops(quantized)) == 2
    _check_form(quantized)
    compare_over_calls(quantized.to_bytes(), KERAS_SHAPE)
    # held-out sequences, each from a zero state: outputs reach about 0.2; measured max errors
    # 0.0026-0.0054 (1-2 output steps of 0.00256)
    floats, ints = qengine.Interpreter(source), qengine.Interpreter(quantized)
    for call in range(3):
        x = (4 * rng("keras-lstm-held-out", call).standard_normal(KERAS_SHAPE)).astype(
            np.float32)
        floats.reset_variables()
        ints.reset_variables()
        want = floats.run(x)[floats.model.main.outputs[0].name]
        got = _dequantized(ints, quantized, x)
        assert np.abs(got - want).max() < 0.015, np.abs(got - want).max()


def test_quantized_keras_lstm_equals_converters():
    """Every LSTM input (dtype, scale, zero point, constant values) and the hidden-state
    intermediate match what TensorFlow's converter writes for the same model and data."""
    source = keras_lstm_path("float").read_bytes()
    ours = _lstm_ops(qengine.quantize(source, "int8", keras_calibration(), quiet=True))
    theirs = _lstm_ops(qengine.load(keras_lstm_path("int8").read_bytes()))
    differences = []
    for k, (a, b) in enumerate(zip(theirs, ours)):
        for i, (s, t) in enumerate(zip(a.inputs + a.intermediates[4:],
                                       b.inputs + b.intermediates[4:])):
            if s is None or t is None:
                if (s is None) != (t is None):
                    differences.append((k, i, "presence"))
                continue
            if s.dtype != t.dtype or not np.array_equal(s.quantization.scale,
                                                         t.quantization.scale) or \
                    not np.array_equal(s.quantization.zero_point, t.quantization.zero_point):
                differences.append((k, i, s.dtype, t.dtype, s.quantization, t.quantization))
            elif (s.data is None) != (t.data is None) or (
                    s.data is not None and not np.array_equal(s.data, t.data)):
                differences.append((k, i, "values"))
    assert len(ours) == len(theirs) == 2 and not differences, differences


def _with_layer_norm(model):
    """The model's LSTM with layer-norm coefficients (around 1) on all four gates."""
    graph = model.subgraphs[0]
    (op,) = graph.operators
    op.inputs = op.inputs[:20] + [None] * 4
    for k, gate in enumerate("ifco"):
        t = Tensor(f"ln_{gate}", (6,), "float32")
        t.data = (1 + 0.3 * rng("ln", gate).standard_normal(6)).astype(np.float32)
        graph.tensors.append(t)
        op.inputs[20 + k] = t
    return model


@pytest.mark.parametrize("variant", ["plain", "cifg", "peephole", "projection",
                                     "peephole_layer_norm", "cifg_layer_norm"])
def test_quantize_builder_lstm(variant):
    """Single-op float LSTMs (the float tests' models) quantized, then run by TFLite."""
    shape = (2, 5, 3)
    if variant == "peephole_layer_norm":
        model = _with_layer_norm(_lstm_model("peephole", "UNIDIRECTIONAL_SEQUENCE_LSTM", shape,
                                             False, 0.0, 7))
    else:
        model = _lstm_model(variant, "UNIDIRECTIONAL_SEQUENCE_LSTM", shape, False, 0.0, 7)
    calibration = [rng("lstm-q-cal", i).standard_normal(shape).astype(np.float32)
                   for i in range(8)]
    quantized = qengine.quantize(model, "int8", calibration, quiet=True)
    _check_form(quantized)
    _informative(compare_over_calls(quantized.to_bytes(), shape))
    # the first calibration sequence (inside the calibrated ranges; held-out ones can exceed
    # 8 samples' ranges), from the zero state: within 3 output steps of the float model, plus
    # what rounding the input to its int8 grid alone changes in the float model (layer norm
    # amplifies it: 0.024 = 4.6 steps for peephole_layer_norm; the others 1.0-1.5 steps)
    floats, ints = qengine.Interpreter(model), qengine.Interpreter(quantized)
    x = calibration[0]
    want = floats.run(x)[floats.model.main.outputs[0].name]
    error = np.abs(_dequantized(ints, quantized, x) - want).max()
    q_in = quantized.main.inputs[0].quantization
    rounded = (np.clip(np.round(x / q_in.scale[0]) + q_in.zero_point[0], -128, 127)
               - q_in.zero_point[0]) * q_in.scale[0]
    floats.reset_variables()
    sensitivity = np.abs(floats.run(rounded.astype(np.float32))[
        floats.model.main.outputs[0].name] - want).max()
    step = quantized.main.outputs[0].quantization.scale[0]
    assert error < 3 * step + sensitivity, (error, step, sensitivity)


@pytest.mark.parametrize("variant", ["plain", "cifg_layer_norm"])
def test_quantize_single_step_lstm(variant):
    model = _lstm_model(variant, "LSTM", (2, 3), True, 0.0, 8)
    calibration = [rng("lstm1-q-cal", i).standard_normal((2, 3)).astype(np.float32)
                   for i in range(8)]
    quantized = qengine.quantize(model, "int8", calibration, quiet=True)
    (op,) = quantized.subgraphs[0].operators
    assert op.opcode.name == "LSTM" and op.inputs[0].dtype == "int8"
    assert len(op.intermediates) == 5
    compare_over_calls(quantized.to_bytes(), (2, 3))


def test_peephole_projection_lstm_stays_float():
    """Peepholes with n_output != n_cell: TFLite's integer kernel reads the peephole product
    with the output size, so the quantizer leaves such an LSTM float."""
    shape = (2, 5, 3)
    model = _lstm_model("layer_norm", "UNIDIRECTIONAL_SEQUENCE_LSTM", shape, False, 0.0, 7)
    calibration = [rng("lstm-q-cal", i).standard_normal(shape).astype(np.float32)
                   for i in range(4)]
    (op,) = _lstm_ops(qengine.quantize(model, "int8", calibration, quiet=True))
    assert op.inputs[0].dtype == "float32"
