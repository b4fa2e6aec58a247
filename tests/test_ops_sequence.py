"""Float recurrent ops (UNIDIRECTIONAL_SEQUENCE_LSTM, LSTM, RNN, UNIDIRECTIONAL_SEQUENCE_RNN,
SVDF) against TFLite's reference kernels over several invokes of ONE interpreter each: the
state in the variable tensors must carry over exactly as TFLite carries it."""

import numpy as np
import pytest
from op_harness import assert_close, rng
from tflite_ref import make_interpreter

import qengine
from qengine.builder import GraphBuilder, options

pytestmark = pytest.mark.tf

CALLS = 4


def _weights(b: GraphBuilder, name: str, shape, seed, scale=0.5):
    return b.const(name, (rng(name, seed).standard_normal(shape) * scale).astype(np.float32))


def _state(b: GraphBuilder, name: str, shape):
    t = b.tensor(name, shape, "float32")
    t.is_variable = True
    return t


def _compare_over_calls(model, make_input):
    data = model.to_bytes()
    tfl = make_interpreter(data)
    tfl.allocate_tensors()
    (tin,), (tout,) = tfl.get_input_details(), tfl.get_output_details()
    interpreter = qengine.Interpreter(data)
    for call in range(CALLS):
        x = make_input(call)
        tfl.set_tensor(tin["index"], x)
        tfl.invoke()
        assert_close(f"call {call}", interpreter.run(x)[tout["name"]],
                     tfl.get_tensor(tout["index"]))
    interpreter.reset_variables()  # back to zero state: the first call again
    tfl = make_interpreter(data)
    tfl.allocate_tensors()
    tfl.set_tensor(tin["index"], make_input(0))
    tfl.invoke()
    assert_close("after reset", interpreter.run(make_input(0))[tout["name"]],
                 tfl.get_tensor(tout["index"]))


LSTM_VARIANTS = {  # name: (cifg, peephole, projection, layer_norm)
    "plain": (False, False, False, False), "cifg": (True, False, False, False),
    "peephole": (False, True, False, False), "projection": (False, False, True, False),
    "layer_norm": (False, True, True, True), "cifg_layer_norm": (True, False, False, True),
}


def _lstm_model(variant: str, op: str, x_shape, time_major: bool, clip: float, seed: int):
    cifg, peephole, projection, layer_norm = LSTM_VARIANTS[variant]
    n_input, n_cell = x_shape[-1], 6
    n_output = 4 if projection else n_cell
    batch = x_shape[1] if op != "LSTM" and time_major else x_shape[0]
    b = GraphBuilder()
    x = b.input("x", x_shape)

    def maybe(flag, name, shape):
        return _weights(b, name, shape, seed) if flag else None

    ins = [x]
    ins += [maybe(not cifg, "w_i", (n_cell, n_input))] + [
        _weights(b, n, (n_cell, n_input), seed) for n in ("w_f", "w_c", "w_o")]
    ins += [maybe(not cifg, "r_i", (n_cell, n_output))] + [
        _weights(b, n, (n_cell, n_output), seed) for n in ("r_f", "r_c", "r_o")]
    ins += [maybe(peephole and not cifg, "p_i", (n_cell,)), maybe(peephole, "p_f", (n_cell,)),
            maybe(peephole, "p_o", (n_cell,))]
    ins += [maybe(not cifg, "b_i", (n_cell,))] + [
        _weights(b, n, (n_cell,), seed) for n in ("b_f", "b_c", "b_o")]
    ins += [maybe(projection, "proj", (n_output, n_cell)), maybe(projection, "proj_b",
                                                                 (n_output,))]
    ins += [_state(b, "h", (batch, n_output)), _state(b, "c", (batch, n_cell))]
    if layer_norm:
        ins += [maybe(not cifg, "ln_i", (n_cell,))] + [
            _weights(b, n, (n_cell,), seed) for n in ("ln_f", "ln_c", "ln_o")]
    if op == "LSTM":
        opts = options("LSTMOptions", fusedActivationFunction=4, cellClip=clip, projClip=clip)
        shape = (batch, n_output)
    else:
        opts = options("UnidirectionalSequenceLSTMOptions", fusedActivationFunction=4,
                       cellClip=clip, projClip=clip, timeMajor=time_major)
        shape = x_shape[:-1] + (n_output,)
    y = b.op(op, ins, shape, "float32", options=opts)
    return b.build([y])


@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("clip", [0.0, 0.8])
def test_unidirectional_sequence_lstm(variant, time_major, clip):
    shape = (5, 2, 3) if time_major else (2, 5, 3)
    model = _lstm_model(variant, "UNIDIRECTIONAL_SEQUENCE_LSTM", shape, time_major, clip, 1)
    _compare_over_calls(model, lambda call: rng("lstm-x", call).standard_normal(shape)
                        .astype(np.float32))


@pytest.mark.parametrize("variant", ["plain", "cifg", "layer_norm"])
def test_lstm_single_step(variant):
    model = _lstm_model(variant, "LSTM", (2, 3), True, 0.0, 2)
    _compare_over_calls(model, lambda call: rng("lstm1-x", call).standard_normal((2, 3))
                        .astype(np.float32))


@pytest.mark.parametrize("op,shape,time_major", [("RNN", (2, 3), True),
                                                 ("UNIDIRECTIONAL_SEQUENCE_RNN", (2, 5, 3), False),
                                                 ("UNIDIRECTIONAL_SEQUENCE_RNN", (5, 2, 3), True)])
@pytest.mark.parametrize("activation", [0, 1, 4])  # NONE, RELU, TANH
def test_rnn(op, shape, time_major, activation):
    units, batch = 4, (shape[1] if op != "RNN" and time_major else shape[0])
    b = GraphBuilder()
    x = b.input("x", shape)
    ins = [x, _weights(b, "w", (units, 3), 3), _weights(b, "r", (units, units), 3, 0.3),
           _weights(b, "b", (units,), 3), _state(b, "h", (batch, units))]
    opts = options("RNNOptions", fusedActivationFunction=activation) if op == "RNN" else \
        options("SequenceRNNOptions", fusedActivationFunction=activation, timeMajor=time_major)
    y = b.op(op, ins, shape[:-1] + (units,), "float32", options=opts)
    _compare_over_calls(b.build([y]), lambda call: rng("rnn-x", call).standard_normal(shape)
                        .astype(np.float32))


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", [0, 1])
def test_svdf(rank, bias, activation):
    batch, n_input, units, memory = 2, 5, 3, 4
    filters = units * rank
    b = GraphBuilder()
    x = b.input("x", (batch, n_input))
    ins = [x, _weights(b, "wf", (filters, n_input), 4), _weights(b, "wt", (filters, memory), 4),
           _weights(b, "bias", (units,), 4) if bias else None,
           _state(b, "state", (batch, memory * filters))]
    y = b.op("SVDF", ins, (batch, units), "float32",
             options=options("SVDFOptions", rank=rank, fusedActivationFunction=activation))
    _compare_over_calls(b.build([y]), lambda call: rng("svdf-x", call).standard_normal(
        (batch, n_input)).astype(np.float32))


def _direction(b: GraphBuilder, tag: str, n_input: int, n_cell: int, n_output: int,
               cifg: bool, seed: int) -> list:
    """The 17 weight inputs of one LSTM direction (peephole-free; projection if n_output
    differs from n_cell)."""
    def w(name, shape):
        return _weights(b, tag + name, shape, seed)

    gates = ("i", "f", "c", "o")
    ins = [None if cifg and g == "i" else w("w_" + g, (n_cell, n_input)) for g in gates]
    ins += [None if cifg and g == "i" else w("r_" + g, (n_cell, n_output)) for g in gates]
    ins += [None, None, None]
    ins += [None if cifg and g == "i" else w("b_" + g, (n_cell,)) for g in gates]
    projection = n_output != n_cell
    ins += [w("proj", (n_output, n_cell)) if projection else None, None]
    return ins


def _bidirectional_lstm(merge: bool, time_major: bool, cifg: bool):
    shape = (5, 2, 3) if time_major else (2, 5, 3)
    batch = shape[1] if time_major else shape[0]
    b = GraphBuilder()
    x = b.input("x", shape)
    # TFLite needs one cell and one output size for both directions; with CIFG, no projection
    n_out = 6 if cifg else 4
    ins = [x] + _direction(b, "fw_", 3, 6, n_out, cifg, 5) + _direction(b, "bw_", 3, 6, n_out,
                                                                       cifg, 6)
    ins += [_state(b, "fw_h", (batch, n_out)), _state(b, "fw_c", (batch, 6)),
            _state(b, "bw_h", (batch, n_out)), _state(b, "bw_c", (batch, 6))] + [None] * 9
    opts = options("BidirectionalSequenceLSTMOptions", fusedActivationFunction=4,
                   mergeOutputs=merge, timeMajor=time_major)
    lead = shape[:-1]
    outs = b.op("BIDIRECTIONAL_SEQUENCE_LSTM", ins, lead + (2 * n_out,) if merge else
                [lead + (n_out,)] * 2, "float32", options=opts, n_outputs=1 if merge else 2)
    return b.build(outs if isinstance(outs, list) else [outs]), shape


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("cifg", [False, True])
def test_bidirectional_sequence_lstm(merge, time_major, cifg):
    model, shape = _bidirectional_lstm(merge, time_major, cifg)

    def make_input(call):
        return rng("bilstm-x", call).standard_normal(shape).astype(np.float32)

    if not (merge and not time_major):
        _compare_all_outputs(model, make_input)
        return
    unmerged, _ = _bidirectional_lstm(False, time_major, cifg)  # see tests/deviations.py
    tfl = make_interpreter(unmerged.to_bytes())
    tfl.allocate_tensors()
    interpreter = qengine.Interpreter(model)
    for call in range(CALLS):
        tfl.set_tensor(tfl.get_input_details()[0]["index"], make_input(call))
        tfl.invoke()
        want = np.concatenate([tfl.get_tensor(d["index"]) for d in tfl.get_output_details()],
                              axis=-1)
        (got,) = interpreter.run(make_input(call)).values()
        assert_close(f"call {call}", got, want)


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("time_major", [True, False])
def test_bidirectional_sequence_rnn(merge, time_major):
    shape = (5, 2, 3) if time_major else (2, 5, 3)
    batch = shape[1] if time_major else shape[0]
    b = GraphBuilder()
    x = b.input("x", shape)
    ins = [x]
    for tag, units in (("fw_", 4), ("bw_", 3)):
        ins += [_weights(b, tag + "w", (units, 3), 7), _weights(b, tag + "r", (units, units), 7,
                                                               0.3),
                _weights(b, tag + "b", (units,), 7), _state(b, tag + "h", (batch, units))]
    opts = options("BidirectionalSequenceRNNOptions", fusedActivationFunction=4,
                   mergeOutputs=merge, timeMajor=time_major)
    lead = shape[:-1]
    ins += [None] * 3  # no auxiliary input
    outs = b.op("BIDIRECTIONAL_SEQUENCE_RNN", ins, lead + (7,) if merge else
                [lead + (4,), lead + (3,)], "float32", options=opts,
                n_outputs=1 if merge else 2)
    model = b.build(outs if isinstance(outs, list) else [outs])
    _compare_all_outputs(model, lambda call: rng("birnn-x", call).standard_normal(shape)
                         .astype(np.float32))


def _compare_all_outputs(model, make_input):
    data = model.to_bytes()
    tfl = make_interpreter(data)
    tfl.allocate_tensors()
    (tin,) = tfl.get_input_details()
    interpreter = qengine.Interpreter(data)
    for call in range(CALLS):
        x = make_input(call)
        tfl.set_tensor(tin["index"], x)
        tfl.invoke()
        got = interpreter.run(x)
        for d in tfl.get_output_details():
            assert_close(f"call {call} {d['name']}", got[d["name"]], tfl.get_tensor(d["index"]))


def _q(scale, zero_point=0):
    from qengine.ir import Quantization

    return Quantization.per_tensor(scale, zero_point)


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_svdf_int8_exact_with_tflites_state(rank, bias):
    """Integer SVDF: every output and the int16 state tensor equal TFLite's, call by call."""
    batch, n_input, units, memory = 2, 6, 3, 5
    filters = units * rank
    g = rng("svdf-int8", rank, bias)
    b = GraphBuilder()
    x = b.input("x", (batch, n_input), "int8", _q(0.05, 3))
    wf = b.const("wf", g.integers(-127, 128, (filters, n_input)).astype(np.int8),
                 quantization=_q(0.02))
    wt = b.const("wt", g.integers(-3000, 3000, (filters, memory)).astype(np.int16),
                 quantization=_q(0.001))
    bias_t = b.const("bias", g.integers(-500, 500, (units,)).astype(np.int32),
                     quantization=_q(0.00001)) if bias else None
    state = b.tensor("state", (batch, memory * filters), "int16", _q(0.01))
    state.is_variable = True
    y = b.op("SVDF", [x, wf, wt, bias_t, state], (batch, units), "int8",
             options=options("SVDFOptions", rank=rank, fusedActivationFunction=1),  # RELU
             out_quantization=_q(1.5, -5))
    data = b.build([y]).to_bytes()
    tfl = make_interpreter(data)
    tfl.allocate_tensors()
    (tin,), (tout,) = tfl.get_input_details(), tfl.get_output_details()
    state_index = next(d["index"] for d in tfl.get_tensor_details() if d["name"] == "state")
    interpreter = qengine.Interpreter(data)
    for call in range(6):
        values = g.integers(-128, 128, (batch, n_input)).astype(np.int8)
        tfl.set_tensor(tin["index"], values)
        tfl.invoke()
        kept = interpreter.run(values, keep=True)
        np.testing.assert_array_equal(kept[tout["name"]], tfl.get_tensor(tout["index"]))
        np.testing.assert_array_equal(kept["state"], tfl.get_tensor(state_index))


@pytest.mark.parametrize("rank", [1, 2])
def test_svdf_hybrid(rank, time_dtype="int8"):
    """int8 feature (and time) weights on a float input: within the float tolerance of
    TFLite over 4 invokes (and after a reset)."""
    batch, n_input, units, memory = 2, 5, 3, 4
    filters = units * rank
    g = rng("svdf-hybrid", rank, time_dtype)
    b = GraphBuilder()
    x = b.input("x", (batch, n_input))
    wf = b.const("wf", g.integers(-127, 128, (filters, n_input)).astype(np.int8),
                 quantization=_q(0.01))
    wt = (b.const("wt", g.integers(-127, 128, (filters, memory)).astype(np.int8),
                  quantization=_q(0.02)) if time_dtype == "int8"
          else _weights(b, "wt", (filters, memory), 9))
    ins = [x, wf, wt, _weights(b, "bias", (units,), 9), _state(b, "state", (batch, memory *
                                                                          filters))]
    y = b.op("SVDF", ins, (batch, units), "float32",
             options=options("SVDFOptions", rank=rank, fusedActivationFunction=1))
    _compare_over_calls(b.build([y]), lambda call: rng("svdf-h-x", call).standard_normal(
        (batch, n_input)).astype(np.float32))


@pytest.mark.parametrize("op,shape,time_major", [("RNN", (2, 3), True),
                                                 ("UNIDIRECTIONAL_SEQUENCE_RNN", (2, 5, 3), False)])
@pytest.mark.parametrize("asymmetric", [False, True])
def test_rnn_hybrid(op, shape, time_major, asymmetric):
    """int8 weights on float input and state (the hybrid kernel, inputs and state quantized
    per row on the fly), within the float tolerance of TFLite over 4 invokes."""
    units, batch = 4, shape[0]
    g = rng("rnn-hybrid", op, asymmetric)
    b = GraphBuilder()
    x = b.input("x", shape)
    w = b.const("w", g.integers(-127, 128, (units, 3)).astype(np.int8), quantization=_q(0.01))
    r = b.const("r", g.integers(-127, 128, (units, units)).astype(np.int8),
                quantization=_q(0.004))
    ins = [x, w, r, _weights(b, "b", (units,), 3), _state(b, "h", (batch, units))]
    opts = (options("RNNOptions", fusedActivationFunction=4, asymmetricQuantizeInputs=asymmetric)
            if op == "RNN" else
            options("SequenceRNNOptions", fusedActivationFunction=4, timeMajor=time_major,
                    asymmetricQuantizeInputs=asymmetric))
    y = b.op(op, ins, shape[:-1] + (units,), "float32", options=opts)
    _compare_over_calls(b.build([y]), lambda call: rng("rnn-h-x", call).standard_normal(shape)
                        .astype(np.float32))


def _to_hybrid(model, indices):
    """Quantize the op's float weight inputs at `indices` to int8, symmetric per tensor."""
    op = model.main.operators[0]
    for i in indices:
        t = op.inputs[i]
        if t is None:
            continue
        value = t.data.astype(np.float64)
        scale = float(np.abs(value).max()) / 127
        t.dtype, t.quantization = "int8", _q(scale)
        t.data = np.clip(np.round(value / np.float32(scale)), -127, 127).astype(np.int8)
    return model


@pytest.mark.parametrize("variant", ["plain", "cifg", "peephole", "projection", "layer_norm"])
@pytest.mark.parametrize("asymmetric", [False, True])
def test_unidirectional_sequence_lstm_hybrid(variant, asymmetric):
    shape = (2, 5, 3)
    model = _lstm_model(variant, "UNIDIRECTIONAL_SEQUENCE_LSTM", shape, False, 0.0, 3)
    model.main.operators[0].options.asymmetricQuantizeInputs = asymmetric
    _to_hybrid(model, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16])
    _compare_over_calls(model, lambda call: rng("lstm-h-x", call).standard_normal(shape)
                        .astype(np.float32))


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("cifg", [False, True])
def test_bidirectional_sequence_lstm_hybrid(merge, cifg):
    model, shape = _bidirectional_lstm(merge, True, cifg)
    weights = [first + k for first in (1, 18) for k in range(16) if k not in (11, 12, 13, 14)]
    _to_hybrid(model, weights)
    _compare_all_outputs(model, lambda call: rng("bilstm-h-x", call).standard_normal(shape)
                         .astype(np.float32))


@pytest.mark.parametrize("asymmetric", [False, True])
def test_bidirectional_sequence_rnn_hybrid(asymmetric):
    shape, batch = (2, 5, 3), 2
    b = GraphBuilder()
    x = b.input("x", shape)
    ins = [x]
    for tag, units in (("fw_", 4), ("bw_", 3)):
        ins += [_weights(b, tag + "w", (units, 3), 8), _weights(b, tag + "r", (units, units), 8,
                                                               0.3),
                _weights(b, tag + "b", (units,), 8), _state(b, tag + "h", (batch, units))]
    opts = options("BidirectionalSequenceRNNOptions", fusedActivationFunction=4,
                   timeMajor=False, asymmetricQuantizeInputs=asymmetric)
    outs = b.op("BIDIRECTIONAL_SEQUENCE_RNN", ins + [None] * 3, [(2, 5, 4), (2, 5, 3)],
                "float32", options=opts, n_outputs=2)
    model = _to_hybrid(b.build(outs), [1, 2, 5, 6])
    _compare_all_outputs(model, lambda call: rng("birnn-h-x", call).standard_normal(shape)
                         .astype(np.float32))
