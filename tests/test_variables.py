"""Resource variables, CALL_ONCE and streaming: state carried across Interpreter.run calls.

Converter-made models (a tf.Module whose ring buffer is a tf.Variable) are compared with ONE
TFLite BUILTIN_REF interpreter invoked on the same sequence, call by call: integers exactly,
floats within the default tolerance. Hand-built models check the error paths.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from op_harness import assert_close, rng

import qengine
from qengine.builder import GraphBuilder, options
from qengine.cli import main
from qengine.errors import InvalidModelError
from qengine.ir import Model, OpCode, Operator, Tensor, verify

FRAME = (1, 1, 8)  # one feature frame per call
HISTORY = 4  # frames the model remembers


# --------------------------------------------------------------------------- hand-built models


def _var_handle(b: GraphBuilder, name: str):
    return b.op("VAR_HANDLE", [], (), "resource",
                options=options("VarHandleOptions", container=b"", sharedName=name.encode()))


def _accumulator(init_index: int | None = 1, dynamic: bool = False) -> Model:
    """main: CALL_ONCE(init); acc = read(acc) + x; assign(acc); return acc.
    init (subgraph 1): assign(acc, 10)."""
    b = GraphBuilder()
    x = b.input("x", (1, 3), dynamic_batch=dynamic)
    if init_index is not None:
        b.op("CALL_ONCE", [], options=options("CallOnceOptions", initSubgraphIndex=init_index),
             outputs=[])
    state = b.op("READ_VARIABLE", [_var_handle(b, "acc")], (1, 3), "float32")
    total = b.op("ADD", [state, x], (1, 3), options=options("AddOptions"))
    b.op("ASSIGN_VARIABLE", [_var_handle(b, "acc"), total], outputs=[])
    b.subgraph.outputs = [total]
    init = GraphBuilder("init")
    ten = init.const("ten", np.full((1, 3), 10, np.float32))
    init.op("ASSIGN_VARIABLE", [_var_handle(init, "acc"), ten], outputs=[])
    model = Model(subgraphs=[b.subgraph, init.subgraph], description="test")
    verify(model)
    return model


def test_state_persists_across_runs_and_resets():
    interpreter = qengine.Interpreter(_accumulator())
    x = np.array([[1, 2, 3]], np.float32)
    outputs = [interpreter.run(x)["add_out"] for _ in range(3)]
    np.testing.assert_array_equal(outputs[0], 10 + x)  # the init subgraph ran once, first
    np.testing.assert_array_equal(outputs[2], 10 + 3 * x)
    np.testing.assert_array_equal(interpreter.variables()["acc"], 10 + 3 * x)
    interpreter.reset_variables()
    np.testing.assert_array_equal(interpreter.run(x)["add_out"], 10 + x)


def test_keep_shows_variable_values_under_the_handle_names():
    interpreter = qengine.Interpreter(_accumulator())
    x = np.ones((1, 3), np.float32)
    interpreter.run(x)
    kept = interpreter.run(x, keep=True)
    np.testing.assert_array_equal(kept["read_variable_out"], np.full((1, 3), 11, np.float32))
    np.testing.assert_array_equal(kept["var_handle_out"], np.full((1, 3), 12, np.float32))


def test_read_before_any_assignment_is_a_clear_error():
    with pytest.raises(InvalidModelError, match="'acc' is read before anything was assigned"):
        qengine.Interpreter(_accumulator(init_index=None)).run(np.ones((1, 3), np.float32))


def test_call_once_to_a_missing_subgraph_is_refused_at_prepare():
    with pytest.raises(InvalidModelError, match="init subgraph 7 is not a subgraph"):
        qengine.Interpreter(_accumulator(init_index=7))


def test_assignment_changing_a_variables_shape_is_refused():
    interpreter = qengine.Interpreter(_accumulator(dynamic=True))
    interpreter.run(np.ones((1, 3), np.float32))
    with pytest.raises(InvalidModelError, match=r"'acc' holds float32 \(1, 3\)"):
        interpreter.run(np.ones((2, 3), np.float32))


def _endless_loop() -> Model:
    """WHILE(cond: always true, body: identity)."""
    b = GraphBuilder()
    x = b.input("x", (1,))
    y = b.op("WHILE", [x], (1,), options=options("WhileOptions", condSubgraphIndex=1,
                                                   bodySubgraphIndex=2))
    cond = GraphBuilder("cond")
    cx = cond.input("cx", (1,))
    cond.subgraph.outputs = [cond.const("always", np.array([True]))]
    body = GraphBuilder("body")
    bx = body.input("bx", (1,))
    body.subgraph.outputs = [body.op("ABS", [bx], (1,))]
    del cx
    b.subgraph.outputs = [y]
    model = Model(subgraphs=[b.subgraph, cond.subgraph, body.subgraph], description="test")
    verify(model)
    return model


def test_a_while_loop_that_never_ends_hits_the_iteration_limit(tmp_path, capsys):
    model = _endless_loop()
    with pytest.raises(InvalidModelError, match="did not finish within 50 iterations"):
        qengine.Interpreter(model, max_iterations=50).run(np.ones(1, np.float32))
    path = tmp_path / "loop.tflite"
    model.save(path)
    np.save(tmp_path / "x.npy", np.ones(1, np.float32))
    code = main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--max-iterations", "20",
                 "--output", str(tmp_path / "out.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "within 20 iterations" in err[0]
    assert not (tmp_path / "out.npz").exists()


def test_cli_stream_writes_every_calls_outputs(tmp_path, capsys):
    model_path = tmp_path / "acc.tflite"
    _accumulator().save(model_path)
    seq = np.arange(12, dtype=np.float32).reshape(4, 3)  # 4 chunks of the (1, 3) input
    np.save(tmp_path / "seq.npy", seq)
    out = tmp_path / "out.npz"
    code = main(["run", str(model_path), "--input", str(tmp_path / "seq.npy"), "--stream",
                 "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    with np.load(out) as saved:
        got = saved["add_out"]
    assert got.shape == (4, 1, 3)
    np.testing.assert_array_equal(got[:, 0], 10 + np.cumsum(seq, axis=0))
    np.save(tmp_path / "bad.npy", np.ones(5, np.float32))
    code = main(["run", str(model_path), "--input", str(tmp_path / "bad.npy"), "--stream"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "takes chunks of shape (1, 3)" in err[0]


# ---------------------------------------------------------------------- converter-made models


def _streaming_module():
    import tensorflow as tf

    class Stream(tf.Module):
        """A streaming dense layer over the last HISTORY + 1 frames, kept in a tf.Variable."""

        def __init__(self):
            g = rng("stream-weights")
            self.state = tf.Variable(np.zeros((1, HISTORY, FRAME[2]), np.float32))
            self.w = tf.constant(g.normal(size=((HISTORY + 1) * FRAME[2], 6)).astype(
                np.float32) * 0.3)

        @tf.function(input_signature=[tf.TensorSpec(FRAME, tf.float32)])
        def __call__(self, x):
            window = tf.concat([self.state, x], axis=1)
            self.state.assign(window[:, 1:])
            return tf.nn.relu(tf.reshape(window, (1, -1)) @ self.w)

    return Stream()


@pytest.fixture(scope="module")
def streaming_models(tmp_path_factory):
    """float, int8 with a float state, int8 with an int8 state (variable quantization)."""
    import tensorflow as tf
    from tflite_ref import _configure, _convert_quietly

    module = _streaming_module()
    saved = tmp_path_factory.mktemp("stream") / "saved"
    tf.saved_model.save(module, str(saved), signatures=module.__call__)
    representative = rng("stream-calibration").normal(size=(64,) + FRAME[1:]).astype(np.float32)
    models = {}
    for name, mode, quantize_variables in [("float", "float", False),
                                           ("int8", "int8", False),
                                           ("int8_state", "int8", True)]:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        converter.experimental_enable_resource_variables = True
        converter._experimental_variable_quantization = quantize_variables
        models[name] = _convert_quietly(_configure(converter, mode, representative))
    return models


def _quantized_frames(model_bytes: bytes, frames: np.ndarray) -> np.ndarray:
    t = qengine.load(model_bytes).main.inputs[0]
    if t.dtype == "float32":
        return frames
    q = np.round(frames / t.scale) + t.zero_point
    return np.clip(q, -128, 127).astype(np.int8)


@pytest.mark.tf
@pytest.mark.slow  # the SavedModel export and three conversions: ~20 s
@pytest.mark.parametrize("name", ["float", "int8", "int8_state"])
def test_converter_streaming_model_matches_tflite_on_every_call(streaming_models, name):
    from tflite_ref import make_interpreter

    data = streaming_models[name]
    ops = {op.opcode.name for s in qengine.load(data).subgraphs for op in s.operators}
    assert {"CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"} <= ops
    frames = _quantized_frames(data, rng("stream", name).normal(size=(40,) + FRAME)
                               .astype(np.float32))
    tfl = make_interpreter(data)
    tfl.allocate_tensors()
    (tin,), (tout,) = tfl.get_input_details(), tfl.get_output_details()
    interpreter = qengine.Interpreter(data)
    for rerun in range(2):  # the second pass after reset_variables() starts from scratch too
        if rerun:
            interpreter.reset_variables()
            tfl = make_interpreter(data)
            tfl.allocate_tensors()
        for i, frame in enumerate(frames):
            tfl.set_tensor(tin["index"], frame)
            tfl.invoke()
            want = tfl.get_tensor(tout["index"])
            assert_close(f"call {i}", interpreter.run(frame)[tout["name"]], want)
    state = next(iter(interpreter.variables().values()))
    assert state.shape == (1, HISTORY, FRAME[2]) and np.any(state != 0)


# ------------------------------------------------------------------- quantizing stateful models


@pytest.mark.tf
@pytest.mark.slow  # shares the converter fixture
@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_quantized_streaming_model_runs_in_tflite_identically(streaming_models, mode):
    """qengine quantizes the float streaming model (calibration carries the state from sample
    to sample); the result runs in TFLite BUILTIN_REF exactly as in qengine over 60 calls and
    stays close to the float model."""
    from tflite_ref import make_interpreter

    float_model = qengine.load(streaming_models["float"])
    calibration = rng("stream-cal", mode).normal(size=(64,) + FRAME).astype(np.float32)
    quantized = qengine.quantize(float_model, mode=mode, calibration=calibration, quiet=True)
    init = quantized.subgraphs[1].operators[-1].inputs[1]
    read = next(op for op in quantized.main.operators if op.type == "READ_VARIABLE")
    assert init.dtype == read.outputs[0].dtype == ("int16" if mode == "int16x8" else "int8")
    assert init.quantization.scale[0] == read.outputs[0].quantization.scale[0]
    data = quantized.to_bytes()
    tfl = make_interpreter(data)
    tfl.allocate_tensors()
    (tin,), (tout,) = tfl.get_input_details(), tfl.get_output_details()
    (scale, zero_point), (out_scale, out_zero) = tin["quantization"], tout["quantization"]
    info = np.iinfo(tin["dtype"])
    interpreter, reference = qengine.Interpreter(data), qengine.Interpreter(float_model)
    errors = []
    for i, frame in enumerate(rng("stream-run", mode).normal(size=(60,) + FRAME)
                              .astype(np.float32)):
        q = np.clip(np.round(frame / scale) + zero_point, info.min, info.max).astype(info.dtype)
        tfl.set_tensor(tin["index"], q)
        tfl.invoke()
        want = tfl.get_tensor(tout["index"])
        got = interpreter.run(q)[tout["name"]]
        np.testing.assert_array_equal(got, want, err_msg=f"call {i}")
        expected = next(iter(reference.run(frame).values()))
        errors.append(np.abs((got.astype(np.float32) - out_zero) * out_scale - expected).max()
                      / max(np.abs(expected).max(), 1e-3))
    assert np.median(errors) < 0.05, np.median(errors)  # int8: median 1.1%, 16x8: 0.5%


def _doubling_loop() -> Model:
    """main: h = x * w; (i, h) = WHILE(i < 3: (i + 1, h * 2)); y = h + h.
    With keep_float=["WHILE"] the loop body stays float under quantization; MUL and ADD
    around it are quantized."""
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    h = b.op("MUL", [x, b.const("w", np.array([[0.5, -1.0, 2.0, 0.25]], np.float32))], (1, 4),
             options=options("MulOptions"))
    i, looped = b.op("WHILE", [b.const("i0", np.array([0], np.int32)), h], [(1,), (1, 4)],
                     options=options("WhileOptions", condSubgraphIndex=1, bodySubgraphIndex=2),
                     n_outputs=2, outputs=[b.tensor("i", (1,), "int32"),
                                           b.tensor("looped", (1, 4))])
    y = b.op("ADD", [looped, looped], (1, 4), options=options("AddOptions"))
    b.subgraph.outputs = [y]
    cond = GraphBuilder("cond")
    ci, cond_h = cond.input("ci", (1,), "int32"), cond.input("ch", (1, 4))
    cond.subgraph.outputs = [cond.op("LESS", [ci, cond.const("three", np.array([3], np.int32))],
                                     (1,), "bool")]
    del cond_h
    body = GraphBuilder("body")
    bi, bh = body.input("bi", (1,), "int32"), body.input("bh", (1, 4))
    body.subgraph.outputs = [
        body.op("ADD", [bi, body.const("one", np.array([1], np.int32))], (1,),
                options=options("AddOptions")),
        body.op("MUL", [bh, body.const("two", np.array([[2.0]], np.float32))], (1, 4),
                options=options("MulOptions"))]
    del i
    model = Model(subgraphs=[b.subgraph, cond.subgraph, body.subgraph], description="test")
    verify(model)
    return model


def test_control_flow_bodies_stay_float_and_the_rest_quantizes():
    model = _doubling_loop()
    calibration = rng("loop-cal").uniform(-1, 1, (16, 1, 4)).astype(np.float32)
    quantized = qengine.quantize(model, mode="int8", calibration=calibration, quiet=True,
                                 inference_type="float32", keep_float=["WHILE"])
    main_ops = [op.type for op in quantized.main.operators]
    assert "WHILE" in main_ops and main_ops.count("QUANTIZE") >= 1
    assert quantized.main.operators[main_ops.index("MUL")].inputs[0].dtype == "int8"
    x = rng("loop-x").uniform(-1, 1, (1, 4)).astype(np.float32)
    got = next(iter(qengine.Interpreter(quantized).run(x).values()))
    np.testing.assert_allclose(got, x * [[0.5, -1.0, 2.0, 0.25]] * 16, atol=0.2)
    if importlib.util.find_spec("ai_edge_litert"):  # and TFLite runs it identically
        from tflite_ref import run_tflite

        want = next(iter(run_tflite(quantized.to_bytes(), [x]).values()))
        np.testing.assert_array_equal(got, want)


def test_variables_inside_control_flow_are_refused_by_the_quantizer():
    model = _doubling_loop()
    body = model.subgraphs[2]
    handle = Tensor("v", (), "resource")
    body.tensors.append(handle)
    body.operators.insert(0, Operator(OpCode("VAR_HANDLE", 1), [], [handle], options(
        "VarHandleOptions", container=b"", sharedName=b"v")))
    with pytest.raises(qengine.errors.QuantizationError, match="uses resource variables"):
        qengine.quantize(model, mode="int8", calibration=np.ones((2, 1, 4), np.float32),
                         quiet=True)
