"""SOFTMAX whose input scale TFLite's reference kernel aborts on (beta * s_in * 2^26 <= 1) runs
as TFLite's default interpreter runs it (the optimized kernel's float table), with one note."""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import rng
from tflite_ref import run_tflite

import qengine
from qengine.builder import GraphBuilder, options
from qengine.ir import Quantization

pytestmark = pytest.mark.tf


def softmax_model(s_in: float):
    b = GraphBuilder()
    x = b.input("x", (4, 10), "int8", Quantization.per_tensor(s_in, 3))
    y = b.op("SOFTMAX", [x], options=options("SoftmaxOptions", beta=1.0),
             out_quantization=Quantization.per_tensor(1 / 256, -128))
    return b.build([y])


@pytest.mark.parametrize("s_in", [1e-9, 1e-8, 2.0 ** -27])
def test_degenerate_softmax_runs_as_the_default_interpreter_with_one_note(s_in, capsys):
    data = softmax_model(s_in).to_bytes()
    x = rng("softmax-degenerate", s_in).integers(-128, 128, (4, 10)).astype(np.int8)
    want = run_tflite(data, [x], "auto")
    interpreter = qengine.Interpreter(data)
    got = interpreter.run(x)
    interpreter.run(x)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "SOFTMAX" in err and "optimized kernel" in err
    assert interpreter.notes == [err.strip()]


@pytest.mark.slow
def test_converter_made_model_with_a_degenerate_softmax_runs_within_one_step(capsys):
    """TensorFlow's converter quantizes near-zero logits with a scale so small that TFLite's
    reference SOFTMAX would abort the process (so BUILTIN_REF is never run here); the default
    interpreter runs it, and so does qengine: within one int8 step of TFLite's default
    interpreter with the reference arithmetic elsewhere, exactly with arithmetic="xnnpack"."""
    import keras
    from tflite_ref import convert_keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(16,), name="features"),
        keras.layers.Dense(10, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-9),
                           bias_initializer="zeros"),
        keras.layers.Softmax(),
    ])
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    data = convert_keras(model, "int8", x)
    interpreter = qengine.Interpreter(data)
    softmax = next(op for op in interpreter.model.main.operators if op.type == "SOFTMAX")
    s_in = softmax.inputs[0].quantization.scale[0]
    assert s_in * 2.0 ** 26 <= 1  # the reference kernel's CHECK would fail
    q = np.clip(np.round(x[:8] / interpreter.inputs[0].scale) + interpreter.inputs[0].zero_point,
                -128, 127).astype(np.int8)
    want = run_tflite(data, [q], "auto")
    got = interpreter.run(q)
    exact = qengine.Interpreter(data, arithmetic="xnnpack").run(q)
    for name, value in want.items():
        assert np.abs(got[name].astype(np.int32) - value).max() <= 1, name
        np.testing.assert_array_equal(exact[name], value, err_msg=name)
    assert "SOFTMAX" in capsys.readouterr().err
