"""int8 quantization of models with the data-movement ops added for issue #13: they run in
int8 (the values keep one scale and zero point), and the quantized model runs in TFLite's
reference kernels exactly as in qengine."""

import numpy as np
import pytest
from op_harness import rng

import qengine
from qengine.builder import GraphBuilder, options

pytestmark = pytest.mark.tf


def _dense(b, x, units, seed):
    g = rng("dense", seed)
    w = b.const(f"w{seed}", g.normal(size=(units, x.shape[-1])).astype(np.float32))
    return b.op("FULLY_CONNECTED", [x, w, b.const(f"b{seed}", np.zeros(units, np.float32))],
                (x.shape[0], units), options=options("FullyConnectedOptions"))


def _scalar(b, name, value, dtype):
    t = b.const(name, np.array(value, dtype))
    t.shape = ()
    return t


def _models():
    """name -> (model, input shape): FULLY_CONNECTED feeding the op, so its input is int8."""
    models = {}
    b = GraphBuilder()
    h = _dense(b, b.input("x", (2, 8)), 6, 1)
    values, indices = b.op("TOPK_V2", [h, _scalar(b, "k", 3, np.int32)], [(2, 3), (2, 3)],
                           n_outputs=2)
    indices.dtype = "int32"
    models["TOPK_V2"] = (b.build([values, indices]), (2, 8))
    b = GraphBuilder()
    h = _dense(b, b.input("x", (2, 8)), 4, 2)
    models["MATRIX_DIAG"] = (b.build([b.op("MATRIX_DIAG", [h], (2, 4, 4))]), (2, 8))
    b = GraphBuilder()
    h = _dense(b, b.input("x", (3, 8)), 4, 3)
    column = _dense(b, h, 1, 4)  # (3, 1) -> the diagonal (3,)
    small = b.op("RESHAPE", [column, b.const("s3", np.array([3], np.int32))], (3,))
    models["MATRIX_SET_DIAG"] = (b.build([b.op("MATRIX_SET_DIAG", [h, small], (3, 4))]),
                                 (3, 8))
    b = GraphBuilder()
    h = _dense(b, b.input("x", (3, 8)), 5, 5)
    update = _dense(b, h, 2, 6)
    start = b.const("start", np.array([1, 2], np.int32))
    models["DYNAMIC_UPDATE_SLICE"] = (b.build([b.op("DYNAMIC_UPDATE_SLICE",
                                                    [h, update, start], (3, 5))]), (3, 8))
    b = GraphBuilder()
    h = _dense(b, b.input("x", (2, 8)), 3, 7)
    pad = b.const("pad", np.array(0.5, np.float32))
    pad.shape = ()
    models["DILATE"] = (b.build([b.op("DILATE", [h, b.const("d", np.array([2, 2], np.int32)),
                                                 pad], (3, 5))]), (2, 8))
    b = GraphBuilder()
    h = _dense(b, b.input("x", (1, 8)), 3, 8)
    flat = b.op("RESHAPE", [h, b.const("s", np.array([3], np.int32))], (3,))
    models["SPARSE_TO_DENSE"] = (b.build([b.op("SPARSE_TO_DENSE", [
        b.const("i", np.array([[0, 1], [2, 0], [1, 3]], np.int32)),
        b.const("shape", np.array([3, 4], np.int32)), flat,
        _scalar(b, "default", -0.25, np.float32)], (3, 4))]), (1, 8))
    return models


@pytest.mark.parametrize("name", ["TOPK_V2", "MATRIX_DIAG", "MATRIX_SET_DIAG",
                                  "DYNAMIC_UPDATE_SLICE", "DILATE", "SPARSE_TO_DENSE"])
def test_data_movement_ops_quantize_to_int8(name):
    from tflite_ref import run_tflite

    model, shape = _models()[name]
    calibration = rng("cal", name).normal(size=(32,) + shape).astype(np.float32)
    quantized = qengine.quantize(model, mode="int8", calibration=calibration, quiet=True)
    op = next(op for op in quantized.main.operators if op.type == name)
    assert op.outputs[0].dtype == "int8"  # the op runs on int8 values, no DEQUANTIZE around it
    x = rng("x", name).normal(size=shape).astype(np.float32)
    q_in = quantized.main.inputs[0].quantization
    xq = np.clip(np.round(x / q_in.scale[0]) + q_in.zero_point[0], -128, 127).astype(np.int8)
    want = run_tflite(quantized.to_bytes(), [xq])
    got = qengine.Interpreter(quantized).run(xq)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)
    expected = qengine.Interpreter(model).run(x)
    out = quantized.main.outputs[0]
    scale, zero = float(out.quantization.scale[0]), int(out.quantization.zero_point[0])
    first = next(iter(expected.values()))
    dequantized = (got[out.name].astype(np.float32) - zero) * scale
    assert np.abs(dequantized - first).max() <= 3 * scale + 0.05 * np.abs(first).max()
