"""The full-integer quantizer folds standalone RELU/RELU6/RELU_N1_TO_1 into the op before them
(quantizer/passes.fuse_activations), as TensorFlow's converter does."""

from __future__ import annotations

import numpy as np
import pytest

import qengine
from qengine.builder import SAME, GraphBuilder, options

NONE, RELU, RELU6 = 0, 1, 3
SHAPE = (1, 8, 8, 4)


def _conv(b, x, seed, name):
    rng = np.random.default_rng(seed)
    w = b.const(name + "/w", rng.normal(0, 0.5, (4, 3, 3, 4)).astype(np.float32))
    bias = b.const(name + "/b", rng.normal(0, 0.1, 4).astype(np.float32))
    return b.op("CONV_2D", [x, w, bias], SHAPE, options=options(
        "Conv2DOptions", padding=SAME, strideW=1, strideH=1, fusedActivationFunction=NONE))


def _net(branch_reads_conv: bool = False):
    """conv -> RELU -> conv -> (+ input) ADD -> RELU6; with branch_reads_conv the first conv's
    output also feeds the ADD, so its RELU must stay an op of its own."""
    b = GraphBuilder()
    x = b.input("image", SHAPE)
    c1 = _conv(b, x, 0, "c1")
    r1 = b.op("RELU", [c1], SHAPE)
    c2 = _conv(b, r1, 1, "c2")
    added = b.op("ADD", [c2, c1 if branch_reads_conv else x], SHAPE,
                 options=options("AddOptions", fusedActivationFunction=NONE))
    return b.build([b.op("RELU6", [added], SHAPE)])


def _calibration(n=8):
    rng = np.random.default_rng(5)
    return [rng.normal(0, 1, SHAPE).astype(np.float32) for _ in range(n)]


def _ops(model):
    return [(op.type, getattr(op.options, "fusedActivationFunction", None))
            for op in model.main.operators]


def test_activations_fold_into_the_ops_before_them_in_int8_and_16x8():
    for mode in ("int8", "int16x8"):
        quantized = qengine.quantize(_net(), mode, _calibration(), quiet=True)
        assert _ops(quantized) == [("CONV_2D", RELU), ("CONV_2D", NONE), ("ADD", RELU6)], mode


def test_an_activation_whose_input_has_other_readers_stays_apart():
    quantized = qengine.quantize(_net(branch_reads_conv=True), "int8", _calibration(),
                                 quiet=True)
    assert _ops(quantized) == [("CONV_2D", NONE), ("RELU", None), ("CONV_2D", NONE),
                               ("ADD", RELU6)]


def test_keep_float_keeps_an_activation_apart():
    quantized = qengine.quantize(_net(), "int8", _calibration(), keep_float=["RELU6"],
                                 quiet=True)
    types = [t for t, _ in _ops(quantized)]
    assert types.count("RELU6") == 1 and ("CONV_2D", RELU) in _ops(quantized)


def test_folding_leaves_the_float_function_unchanged():
    """The float model with its two activations folded computes the same values."""
    from qengine.flatbuffer_io import load
    from qengine.quantizer.passes import fuse_activations

    net = _net()
    folded = load(net.to_bytes())
    assert fuse_activations(folded) == 2
    x = _calibration(1)[0]
    want = qengine.Interpreter(net).run([x])
    got = qengine.Interpreter(folded).run([x])
    np.testing.assert_array_equal(next(iter(got.values())), next(iter(want.values())))


@pytest.mark.tf
def test_tflites_xnnpack_takes_the_whole_int8_graph_and_agrees_with_qengine():
    """One delegate partition (a standalone int8 RELU with its own output quantization is left
    to the builtin kernels, cutting the graph); TFLite's reference kernels give qengine's
    int8 outputs exactly."""
    from tflite_ref import make_interpreter, run_tflite

    quantized = qengine.quantize(_net(), "int8", _calibration(), quiet=True)
    data = quantized.to_bytes()
    interpreter = make_interpreter(data, "auto", False, 1)
    interpreter.allocate_tensors()  # (where the delegate takes its partitions)
    assert [d["op_name"] for d in interpreter._get_ops_details()].count("DELEGATE") == 1
    x = np.random.default_rng(9).integers(-128, 128, SHAPE).astype(np.int8)
    want = run_tflite(data, [x])
    got = qengine.Interpreter(quantized).run([x])
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


@pytest.mark.tf
def test_a_folded_16x8_model_agrees_with_tflites_reference_kernels():
    from tflite_ref import run_tflite

    quantized = qengine.quantize(_net(), "int16x8", _calibration(), quiet=True)
    x = np.random.default_rng(11).integers(-32768, 32768, SHAPE).astype(np.int16)
    want = run_tflite(quantized.to_bytes(), [x])
    got = qengine.Interpreter(quantized).run([x])
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)
