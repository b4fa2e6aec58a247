"""Ops kept float in an int8/16x8 model whose source stores float16 weights keep them float16.

The converter's float16 models hold each weight as a float16 constant behind DEQUANTIZE;
quantizing folds those to float32 for calibration. An op the recipe keeps float must get the
same float16 constant back (half the bytes of float32, the same values at run time), and the
file must run in TFLite like qengine runs it.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import op_by_op

import qengine
from qengine.quantizer.scheme import Override, Recipe, Scheme

pytestmark = pytest.mark.tf

FLOAT_REL = 1e-5  # float ops: float32 summation order differs between implementations


@pytest.fixture(scope="module")
def float16_model() -> bytes:
    import tensorflow as tf
    from tflite_ref import convert_keras

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((12, 12, 3)),
        tf.keras.layers.Conv2D(16, 3, activation="relu", name="first"),
        tf.keras.layers.Conv2D(8, 3, name="second")])
    return convert_keras(model, "float16")


def float16_constants(model) -> dict[str, np.ndarray]:
    """Every float16 constant read by a DEQUANTIZE, by the name of the float tensor it makes."""
    return {op.outputs[0].name: op.inputs[0].data for op in model.main.operators
            if op.type == "DEQUANTIZE" and op.inputs[0].dtype == "float16"}


@pytest.mark.parametrize("activations", ["int8", "int16"])
def test_float_kept_conv_keeps_the_source_float16_weights(float16_model, activations):
    source = qengine.load(float16_model)
    rng = np.random.default_rng(0)
    calibration = [[rng.random((1, 12, 12, 3), dtype=np.float32)] for _ in range(8)]
    kept = Recipe(Scheme(activations=activations), (Override("CONV_2D", None),))
    data = qengine.quantize(source, recipe=kept, calibration=calibration,
                            quiet=True).to_bytes()
    model = qengine.load(data)
    written, published = float16_constants(model), float16_constants(source)
    # both convs' weights (3*3*3*16 and 3*3*16*8 values) come back bit for bit as float16;
    # the biases (16 and 8 values) are too small to be worth a DEQUANTIZE and stay float32
    weights = {name: value for name, value in published.items() if value.size >= 128}
    assert len(weights) == 2
    for name, value in weights.items():
        assert np.array_equal(written[name].view(np.uint16), value.view(np.uint16)), name
    assert not any(t.dtype == "float32" and t.is_constant and t.data.size >= 128
                   for t in model.main.tensors)
    assert len(data) < len(float16_model) + 2048  # no float32 copy of any weight
    x = [rng.integers(-128, 128, t.shape).astype(t.dtype) if t.dtype != "float32" else
         rng.random(t.shape, dtype=np.float32) for t in model.main.inputs]
    checked = op_by_op(data, x)
    assert {op.type for _, op, _ in checked} >= {"DEQUANTIZE", "CONV_2D"}
    for index, op, rel in checked:
        floating = op.outputs[0].dtype == "float32"
        assert rel <= (FLOAT_REL if floating else 0.0), (index, op.opcode.display, rel)
