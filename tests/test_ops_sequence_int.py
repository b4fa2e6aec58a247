"""Full-integer (8x8_16) UNIDIRECTIONAL_SEQUENCE_LSTM and LSTM against TFLite's reference
kernels, exactly, over several invokes of ONE interpreter each (the int8 output state and
int16 cell state carry over): every variant of lstm_eval.cc's integer path (CIFG, peephole,
projection, layer norm, cell and projection clipping, time- and batch-major)."""

import numpy as np
import pytest
from op_harness import rng
from tflite_ref import make_interpreter

import qengine
from qengine.builder import GraphBuilder, options
from qengine.errors import QEngineError
from qengine.ir import Quantization

pytestmark = pytest.mark.tf

CALLS = 3
CELL_SCALE = 2.0 ** -11


def _q(scale, zero_point=0):
    return Quantization(np.array([scale], np.float32), np.array([zero_point]))


def _int_weights(b, name, shape, seed, dtype="int8", std=0.5):
    """Float N(0, std) weights quantized symmetrically to int8 / int16; returns the tensor."""
    real = rng(name, seed).standard_normal(shape) * std
    top = 127 if dtype == "int8" else 32767
    scale = float(np.abs(real).max()) / top
    return b.const(name, np.round(real / scale).astype(dtype), quantization=_q(scale))


def _bias(b, name, n, seed, scale):
    real = rng(name, seed).standard_normal(n) * 0.5
    return b.const(name, np.round(real / scale).astype(np.int32), quantization=_q(scale))


def _state(b, name, shape, dtype, quantization):
    t = b.tensor(name, shape, dtype, quantization)
    t.is_variable = True
    return t


VARIANTS = {  # name: (cifg, peephole, projection, layer_norm)
    "plain": (False, False, False, False), "cifg": (True, False, False, False),
    "peephole": (False, True, False, False), "projection": (False, False, True, False),
    "layer_norm": (False, True, False, True), "cifg_layer_norm_projection": (True, False, True,
                                                                               True),
}
X_Q = (0.03, 3)  # input scale / zero point


def integer_lstm_model(variant, op, x_shape, time_major, clip, seed, hidden_zp=0,
                       cell_scale=CELL_SCALE):
    cifg, peephole, projection, layer_norm = VARIANTS[variant]
    n_input, n_cell = x_shape[-1], 8
    n_output = 4 if projection else n_cell
    batch = x_shape[1] if op != "LSTM" and time_major else x_shape[0]
    h_q = _q(0.02, -5) if projection else _q(1 / 128, hidden_zp)
    b = GraphBuilder()
    x = b.input("x", x_shape, "int8", _q(*X_Q))

    def weights(name, shape, dtype="int8", present=True):
        return _int_weights(b, name, shape, seed, dtype) if present else None

    ins = [x, weights("w_i", (n_cell, n_input), present=not cifg)]
    ins += [weights(n, (n_cell, n_input)) for n in ("w_f", "w_c", "w_o")]
    ins += [weights("r_i", (n_cell, n_output), present=not cifg)]
    ins += [weights(n, (n_cell, n_output)) for n in ("r_f", "r_c", "r_o")]
    ins += [weights("p_i", (n_cell,), "int16", peephole and not cifg),
            weights("p_f", (n_cell,), "int16", peephole),
            weights("p_o", (n_cell,), "int16", peephole)]
    bias_scale = X_Q[0] * 0.004
    ins += [None if cifg else _bias(b, "b_i", n_cell, seed, bias_scale)]
    ins += [_bias(b, n, n_cell, seed, bias_scale) for n in ("b_f", "b_c", "b_o")]
    ins += [weights("proj", (n_output, n_cell), present=projection),
            _bias(b, "proj_b", n_output, seed, 0.0001) if projection else None]
    ins += [_state(b, "h", (batch, n_output), "int8", h_q),
            _state(b, "c", (batch, n_cell), "int16", _q(cell_scale))]
    if layer_norm:
        ins += [None if cifg else _int_weights(b, "ln_i", (n_cell,), seed, "int16", 1.0)]
        ins += [_int_weights(b, n, (n_cell,), seed, "int16", 1.0) for n in
                ("ln_f", "ln_c", "ln_o")]
    else:
        ins += [None] * 4
    if op == "LSTM":
        opts = options("LSTMOptions", fusedActivationFunction=4, cellClip=clip, projClip=clip)
        shape = (batch, n_output)
    else:
        opts = options("UnidirectionalSequenceLSTMOptions", fusedActivationFunction=4,
                       cellClip=clip, projClip=clip, timeMajor=time_major)
        shape = x_shape[:-1] + (n_output,)
    y = b.op(op, ins, shape, "int8", options=opts, out_quantization=h_q)
    gate_scale = 2.0 ** -10
    b.subgraph.operators[-1].intermediates = [
        b.tensor(f"gate_{g}", (), "int16", _q(gate_scale)) for g in "ifco"] + [
        b.tensor("hidden", (), "int8", _q(1 / 128, hidden_zp))]
    return b.build([y])


def _int8_input(shape, call):
    return rng("lstm-int-x", call).integers(-128, 128, shape).astype(np.int8)


def compare_over_calls(model, shape) -> np.ndarray:
    """Runs CALLS invokes on TFLite and qengine; asserts equal outputs; returns the last."""
    data = model if isinstance(model, bytes) else model.to_bytes()
    tfl = make_interpreter(data)
    tfl.allocate_tensors()
    (tin,), (tout,) = tfl.get_input_details(), tfl.get_output_details()
    interpreter = qengine.Interpreter(data)
    outputs = []
    for call in range(CALLS):
        x = _int8_input(shape, call)
        tfl.set_tensor(tin["index"], x)
        tfl.invoke()
        want = tfl.get_tensor(tout["index"])
        got = interpreter.run(x)[tout["name"]]
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want, err_msg=f"call {call}")
        outputs.append(want)
    interpreter.reset_variables()
    tfl = make_interpreter(data)
    tfl.allocate_tensors()
    tfl.set_tensor(tin["index"], _int8_input(shape, 0))
    tfl.invoke()
    np.testing.assert_array_equal(interpreter.run(_int8_input(shape, 0))[tout["name"]],
                                  tfl.get_tensor(tout["index"]), err_msg="after reset")
    return np.stack(outputs)


def _informative(outputs: np.ndarray) -> None:
    """The test means something only if the outputs vary (not all saturated or constant)."""
    assert len(np.unique(outputs)) > 8, np.unique(outputs)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("time_major", [False, True])
def test_integer_unidirectional_sequence_lstm(variant, time_major):
    shape = (5, 2, 3) if time_major else (2, 5, 3)
    model = integer_lstm_model(variant, "UNIDIRECTIONAL_SEQUENCE_LSTM", shape, time_major,
                               0.0, 1)
    _informative(compare_over_calls(model, shape))


@pytest.mark.parametrize("variant", ["plain", "projection", "layer_norm"])
def test_integer_lstm_clipped(variant):
    shape = (2, 6, 3)
    model = integer_lstm_model(variant, "UNIDIRECTIONAL_SEQUENCE_LSTM", shape, False, 0.3, 2,
                               hidden_zp=4)
    _informative(compare_over_calls(model, shape))


@pytest.mark.parametrize("variant", ["plain", "cifg_layer_norm_projection"])
def test_integer_lstm_single_step(variant):
    model = integer_lstm_model(variant, "LSTM", (2, 3), True, 0.0, 3)
    _informative(compare_over_calls(model, (2, 3)))


def test_integer_lstm_cell_scale_below_2_to_minus_15():
    """TFLite's tanh of the cell state does nothing there; the output gate multiplies the
    input gate left in its buffer. qengine reproduces that, and refuses CIFG (where that
    buffer is uninitialized)."""
    shape = (2, 4, 3)
    model = integer_lstm_model("plain", "UNIDIRECTIONAL_SEQUENCE_LSTM", shape, False, 0.0, 5,
                               cell_scale=2.0 ** -16)
    compare_over_calls(model, shape)
    model = integer_lstm_model("cifg", "UNIDIRECTIONAL_SEQUENCE_LSTM", shape, False, 0.0, 5,
                               cell_scale=2.0 ** -16)
    with pytest.raises(QEngineError, match="uninitialized"):
        qengine.Interpreter(model.to_bytes())


def test_integer_lstm_bad_cell_scale():
    model = integer_lstm_model("plain", "UNIDIRECTIONAL_SEQUENCE_LSTM", (1, 2, 3), False, 0.0,
                               4)
    cell = next(t for t in model.subgraphs[0].tensors if t.name == "c")
    cell.quantization = _q(0.001)
    with pytest.raises(QEngineError, match="power of two"):
        qengine.Interpreter(model.to_bytes())


def test_integer_lstm_needs_five_intermediates():
    model = integer_lstm_model("plain", "UNIDIRECTIONAL_SEQUENCE_LSTM", (1, 2, 3), False, 0.0,
                               4)
    model.subgraphs[0].operators[-1].intermediates.pop()
    with pytest.raises(QEngineError, match="intermediate"):
        qengine.Interpreter(model.to_bytes())


# -- the converter's own 8x8_16 LSTM ------------------------------------------------------------

KERAS_SHAPE = (1, 6, 3)


def _build_keras_lstm(mode: str) -> bytes:
    """Two stacked Keras 2 (tf_keras) LSTMs; TensorFlow's converter fuses each into an
    UNIDIRECTIONAL_SEQUENCE_LSTM and its full-int8 quantization writes the 8x8_16 form."""
    import tensorflow as tf
    import tf_keras
    from tflite_ref import _configure, _convert_quietly

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([
        tf_keras.Input(KERAS_SHAPE[1:], batch_size=1),
        tf_keras.layers.LSTM(8, return_sequences=True),
        tf_keras.layers.LSTM(4, return_sequences=True)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return _convert_quietly(_configure(converter, mode, keras_calibration()))


def keras_calibration() -> np.ndarray:
    # wide inputs give the cell states ranges above 0.5 (cell scale >= 2^-15), see above
    return (4 * rng("keras-lstm-calibration").standard_normal((20,) + KERAS_SHAPE[1:])).astype(
        np.float32)


def keras_lstm_path(mode: str):
    from corpus import _build_lock, cache_dir
    from tflite_ref import write_model

    target = cache_dir() / f"keras2_lstm.r2.{mode}.tflite"
    if not target.exists():
        with _build_lock(target.with_suffix(".lock")):
            if not target.exists():
                write_model(_build_keras_lstm(mode), target)
    return target


def test_converter_int8_lstm():
    data = keras_lstm_path("int8").read_bytes()
    model = qengine.load(data)
    ops = [op.opcode.name for op in model.subgraphs[0].operators]
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 2, ops
    assert all(len(op.intermediates) == 5 for op in model.subgraphs[0].operators
               if op.opcode.name == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    _informative(compare_over_calls(data, KERAS_SHAPE))


# -- the gemmlowp int16 tables against the scalar twin --------------------------------------------


@pytest.mark.parametrize("function,integer_bits", [("sigmoid", 3), ("tanh", 3), ("tanh", 0),
                                                   ("tanh", 4), ("tanh", 6)])
def test_gemmlowp_tables_match_scalar_twin(function, integer_bits):
    import naive_lstm_int
    from qengine.kernels.lstm_int import gemmlowp_int16_table

    table = gemmlowp_int16_table(function, integer_bits)
    twin = naive_lstm_int.logistic if function == "sigmoid" else naive_lstm_int.tanh
    raws = list(range(-32768, -32700)) + list(range(-32700, 32700, 7)) + list(
        range(-300, 300)) + list(range(32700, 32768))
    for raw in raws:
        assert table[raw + 32768] == twin(raw, integer_bits), raw
    # and both approximate the real function (F0 output, 2^-15 steps)
    real = np.array(raws) / 2.0 ** (15 - integer_bits)
    exact = 1 / (1 + np.exp(-real)) if function == "sigmoid" else np.tanh(real)
    got = table[np.array(raws) + 32768] / 32768.0
    error = np.abs(got - exact).max()
    assert error < 2e-4 * (1 if function == "sigmoid" else 2), error


@pytest.mark.parametrize("change", ["w_c shape", "proj shape", "no r_i", "ln shape"])
def test_integer_lstm_inconsistent_inputs(change):
    variant = {"proj shape": "projection", "ln shape": "layer_norm"}.get(change, "plain")
    model = integer_lstm_model(variant, "UNIDIRECTIONAL_SEQUENCE_LSTM", (1, 2, 3), False, 0.0,
                               4)
    op = model.subgraphs[0].operators[-1]
    if change == "no r_i":
        op.inputs[5] = None
    else:
        index = {"w_c shape": 3, "proj shape": 16, "ln shape": 21}[change]
        t = op.inputs[index]
        t.data = t.data[:-1]
        t.shape = t.data.shape
    with pytest.raises(QEngineError, match="shape|inconsistent|expected"):
        qengine.Interpreter(model.to_bytes())
