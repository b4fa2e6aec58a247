"""int8 quantization inside WHILE/IF bodies: loop-carried and branch tensors share one scale
and zero point, the bodies' ops are integer, and TFLite's reference kernels run the result
exactly as qengine does."""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import rng
from test_calibrate_subgraphs import _branches
from test_variables import _doubling_loop

import qengine

W = np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)  # _doubling_loop's weight


def _quantized_types(model) -> list[list[tuple[str, tuple]]]:
    return [[(op.type, tuple(t.dtype for t in op.outputs if t is not None))
             for op in sub.operators] for sub in model.subgraphs]


def _params(t) -> tuple[float, int]:
    return float(t.quantization.scale[0]), int(t.quantization.zero_point[0])


def _first(outputs: dict) -> np.ndarray:
    return next(iter(outputs.values()))


def _quantized_loop():
    calibration = rng("loop-cal").uniform(-1, 1, (16, 1, 4)).astype(np.float32)
    model = qengine.quantize(_doubling_loop(), mode="int8", calibration=calibration,
                             quiet=True, inference_type="float32")
    return model, calibration


def test_loop_carried_tensors_share_the_union_of_their_ranges():
    model, calibration = _quantized_loop()
    main, cond, body = model.subgraphs
    loop = next(op for op in main.operators if op.type == "WHILE")
    carried = [loop.inputs[1], loop.outputs[1], cond.inputs[1], body.inputs[1],
               body.outputs[1]]
    assert {t.dtype for t in carried} == {"int8"}
    assert len({_params(t) for t in carried}) == 1
    assert [t.type for t in body.operators] == ["ADD", "MUL"]  # no QUANTIZE/DEQUANTIZE
    # the union: h = x * w before the loop up to h * 8 after it (NumPy twin)
    h = calibration * W
    low, high = min(float(h.min()) * 8, 0.0), max(float(h.max()) * 8, 0.0)
    scale, zero_point = _params(carried[0])
    assert scale == pytest.approx((high - low) / 255, rel=1e-6)
    assert zero_point == round(-128 - low / scale)


def test_quantized_loop_is_within_its_rounding_bound_of_float():
    model, calibration = _quantized_loop()
    scale = _params(model.main.operators[1].outputs[0])[0]  # h's (the group's) scale
    x = calibration[:8]  # inside the calibrated ranges (outside them int8 saturates)
    interpreter = qengine.Interpreter(model)
    got = np.stack([_first(interpreter.run(sample)) for sample in x])
    # the initial h is rounded to scale / 2, then doubled 4 times (x16, with y = h + h); each
    # body MUL and the ADD add at most scale / 2 more, doubled by the rest (7 + 2) / 2; the
    # input's and w's rounding add < scale: 8 + 4.5 + 1 < 14 steps of the group's scale
    np.testing.assert_allclose(got, x * W * 16, rtol=0, atol=14 * scale)


def test_if_branches_quantize_with_the_if_ops_parameters():
    x = rng("if-cal").uniform(-2, 2, (16, 1, 4)).astype(np.float32)
    flag = np.array([[True], [False]] * 8)
    model = qengine.quantize(_branches(), mode="int8", calibration={"flag": flag, "x": x},
                             quiet=True, inference_type="float32")
    main, then, other = model.subgraphs
    branch = next(op for op in main.operators if op.type == "IF")
    inputs = [branch.inputs[1], then.inputs[0], other.inputs[0]]
    outputs = [branch.outputs[0], then.outputs[0], other.outputs[0]]
    assert len({_params(t) for t in inputs}) == 1 and len({_params(t) for t in outputs}) == 1
    assert _quantized_types(model)[1:] == [[("MUL", ("int8",))], [("SUB", ("int8",))]]
    # x * 3 in [-6, 6] and x - 1 in [-3, 1]: the output scale covers [-6, 6] -> 12 / 255
    interpreter = qengine.Interpreter(model)
    for f in (True, False):
        sample = rng(f"if-x{f}").uniform(-2, 2, (1, 4)).astype(np.float32)
        got = _first(interpreter.run({"flag": np.array([f]), "x": sample}))
        want = sample * 3 if f else sample - 1
        np.testing.assert_allclose(got, want, rtol=0, atol=3 * 12 / 255 + 4 / 255 * 3)


def test_a_branch_calibration_never_took_keeps_the_bodies_float(capsys):
    """Every calibration sample takes the then-branch: the else-branch has no ranges, so both
    stay float (with a note) instead of failing for want of ranges; TFLite's reference
    kernels run the result as qengine does."""
    from tflite_ref import run_tflite

    x = rng("if-cal").uniform(-2, 2, (8, 1, 4)).astype(np.float32)
    flag = np.ones((8, 1), bool)
    model = qengine.quantize(_branches(), mode="int8", calibration={"flag": flag, "x": x},
                             inference_type="float32")
    assert "calibration never ran 1 op(s) inside WHILE/IF bodies" in capsys.readouterr().err
    assert _quantized_types(model)[1:] == [[("MUL", ("float32",))], [("SUB", ("float32",))]]
    branch = next(op for op in model.main.operators if op.type == "IF")
    assert branch.inputs[1].dtype == "float32"  # dequantized before the IF
    interpreter, data = qengine.Interpreter(model), model.to_bytes()
    for f in (True, False):
        sample = rng(f"if-x{f}").uniform(-2, 2, (1, 4)).astype(np.float32)
        feeds = [np.array([f]), sample]
        got = _first(interpreter.run(feeds))
        np.testing.assert_array_equal(got, _first(run_tflite(data, feeds, resolver="ref")))
        want = sample * 3 if f else sample - 1
        np.testing.assert_allclose(got, want, rtol=0, atol=4 / 255 * 3)


def test_keep_float_while_leaves_the_bodies_float():
    calibration = rng("loop-cal").uniform(-1, 1, (4, 1, 4)).astype(np.float32)
    model = qengine.quantize(_doubling_loop(), mode="int8", calibration=calibration,
                             quiet=True, keep_float=["WHILE"])
    assert model.subgraphs[2].operators[1].outputs[0].dtype == "float32"


# -- TensorFlow-converted models: TFLite's reference kernels as the oracle -------------------


def _check_against_tflite(float_bytes: bytes, calibration: np.ndarray, samples: np.ndarray,
                          atol: float, mode: str = "int8") -> list:
    """TFLite equals qengine exactly on held-out `samples`; accuracy vs float is checked on
    calibration samples (held-out values beyond the calibrated ranges saturate: measured up
    to 0.035 on the LSTM, 0.2 on the tf.cond model, from clipped carried tensors)."""
    from tflite_ref import run_tflite

    model = qengine.load(float_bytes)
    quantized = qengine.quantize(model, mode=mode, calibration=calibration, quiet=True,
                                 inference_type="float32")
    ours, reference = qengine.Interpreter(quantized), qengine.Interpreter(model)
    data = quantized.to_bytes()
    for sample in samples:
        got = _first(ours.run(sample))
        np.testing.assert_array_equal(got, _first(run_tflite(data, [sample])))
    for sample in calibration[:8]:
        np.testing.assert_allclose(_first(ours.run(sample)), _first(reference.run(sample)),
                                   rtol=0, atol=atol)
    return _quantized_types(quantized)


@pytest.mark.tf
@pytest.mark.slow
def test_keras_lstm_while_body_quantizes_and_tflite_agrees():
    import keras
    from tflite_ref import convert_keras

    keras.utils.set_random_seed(13)
    net = keras.Sequential([keras.Input((6, 3), batch_size=1), keras.layers.LSTM(5),
                            keras.layers.Dense(2)])
    calibration = rng("lstm-cal").uniform(-1, 1, (24, 1, 6, 3)).astype(np.float32)
    samples = rng("lstm-x").uniform(-1, 1, (6, 1, 6, 3)).astype(np.float32)
    # measured: max |int8 - float| 0.0045 (outputs within +-0.21, output scale 0.0016):
    # bound 5 output steps
    float_bytes = convert_keras(net)
    types = _check_against_tflite(float_bytes, calibration, samples, atol=0.008)
    main_types = [t for t, _ in types[0]]
    assert "WHILE" in main_types
    body = max(types[1:], key=len)  # the loop body: the LSTM cell
    assert {"FULLY_CONNECTED", "LOGISTIC", "TANH", "MUL"} <= {t for t, _ in body}
    assert not any("float32" in dtypes for _, dtypes in body)
    # 16x8: measured max |int16 - float| 0.0005 on the same samples
    types = _check_against_tflite(float_bytes, calibration, samples[:3], atol=0.002,
                                  mode="int16x8")
    body = max(types[1:], key=len)
    assert not any("float32" in dtypes for _, dtypes in body)
    assert ("LOGISTIC", ("int16",)) in body


@pytest.mark.tf
def test_tf_cond_branches_quantize_and_tflite_agrees():
    import tensorflow as tf
    from tflite_ref import convert_tf_function

    w = tf.constant(rng("cond-w").uniform(-1, 1, (4, 3)).astype(np.float32))

    def choose(x):
        return tf.cond(x[0, 0] > 0, lambda: tf.matmul(x, w) * 2.0,
                       lambda: tf.tanh(tf.matmul(x, w)) - 1.0)

    fb = convert_tf_function(tf.function(choose), [tf.TensorSpec((1, 4), tf.float32)])
    calibration = rng("cond-cal").uniform(-1, 1, (32, 1, 4)).astype(np.float32)
    samples = rng("cond-x").uniform(-1, 1, (8, 1, 4)).astype(np.float32)
    # measured: max |int8 - float| 0.0123 (outputs within [-1.8, 1.2], output scale 0.0145):
    # bound 2 output steps
    types = _check_against_tflite(fb, calibration, samples, atol=0.029)
    assert "IF" in [t for t, _ in types[0]]
    for branch in types[1:]:
        assert branch and not any("float32" in dtypes for _, dtypes in branch)


def test_cli_quantize_writes_integer_bodies(capsys, tmp_path):
    from qengine.cli import main

    source, out = tmp_path / "loop.tflite", tmp_path / "loop_int8.tflite"
    _doubling_loop().save(source)
    np.save(tmp_path / "cal.npy", rng("loop-cal").uniform(-1, 1, (8, 1, 4)).astype(np.float32))
    code = main(["quantize", str(source), "--mode", "int8", "--calibration",
                 str(tmp_path / "cal.npy"), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "stay float" not in err  # the old note: bodies are now quantized
    body = qengine.load(out).subgraphs[2]
    assert [(op.type, op.outputs[0].dtype) for op in body.operators] == [
        ("ADD", "int32"), ("MUL", "int8")]


def test_loops_with_a_wrong_body_are_refused_when_quantizing_from_statistics():
    from qengine.calibrate import calibrate
    from qengine.errors import InvalidModelError

    model = _doubling_loop()
    stats = calibrate(model, rng("loop-cal").uniform(-1, 1, (2, 1, 4)).astype(np.float32),
                      quiet=True)
    model.subgraphs[2].outputs.pop()  # the body no longer returns h
    with pytest.raises(InvalidModelError, match="WHILE: subgraph 2 takes 2 inputs and returns 1"):
        qengine.quantize(model, mode="int8", statistics=stats, quiet=True)
