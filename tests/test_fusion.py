"""runtime/fusion.py: what fuses and what must not, and that a fused run gives the values of the
graph as written, exactly (keep=True runs the graph as written; TFLite's reference kernels run
the file). Inputs carry +-inf and NaN, where a clamp that were not the same would show."""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import rng

import qengine
from qengine.builder import ACTIVATIONS, SAME, VALID, GraphBuilder, options
from qengine.errors import QEngineError
from qengine.ir import Quantization
from qengine.runtime.fusion import fuse


def conv_opts(kind, padding=VALID, stride=1, act="NONE", multiplier=1):
    fields = {"padding": padding, "strideH": stride, "strideW": stride,
              "fusedActivationFunction": ACTIVATIONS[act]}
    if kind == "DEPTHWISE_CONV_2D":
        return options("DepthwiseConv2DOptions", depthMultiplier=multiplier, **fields)
    return options("Conv2DOptions", **fields)


def conv(b, r, kind, x, in_c, out_c, k=3, **kw):
    shape = (1, k, k, out_c) if kind == "DEPTHWISE_CONV_2D" else (out_c, k, k, in_c)
    w = b.const(f"w{len(b.subgraph.operators)}", r.standard_normal(shape).astype(np.float32))
    bias = b.const(f"b{len(b.subgraph.operators)}", r.standard_normal(out_c).astype(np.float32))
    return b.op(kind, [x, w, bias], options=conv_opts(kind, **kw))


def pad(b, x, amounts):
    return b.op("PAD", [x, b.const(f"p{len(b.subgraph.operators)}",
                                   np.array(amounts, np.int32))])


def special_input(r, shape):
    x = r.standard_normal(shape).astype(np.float32) * 4
    flat = x.reshape(-1)
    flat[::17], flat[5::23], flat[9::31] = np.inf, -np.inf, np.nan
    return x


def run_both(model, x):
    """(fused run, the graph as written) of an interpreter; each output equal bit for bit."""
    interpreter = qengine.Interpreter(model)
    fast = interpreter.run([x])
    kept = interpreter.run([x], keep=True)
    for name, value in fast.items():
        np.testing.assert_array_equal(value, kept[name], err_msg=name)
    return fast, kept


def fused_count(model) -> int:
    fused, _ = fuse(model.main)
    return len(model.main.operators) - len(fused.operators)


@pytest.mark.parametrize("producer", ["CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL"])
@pytest.mark.parametrize("act", ["RELU", "RELU6", "RELU_N1_TO_1"])
def test_activation_folds_into_its_producer(producer, act):
    r = rng("act", producer, act)
    b = GraphBuilder()
    x = b.input("x", (1, 9, 8, 8))
    if producer in ("ADD", "SUB", "MUL"):
        y = b.op(producer, [x, b.const("c", r.standard_normal((1, 1, 1, 8)).astype(np.float32))],
                 options=options(producer.capitalize() + "Options"))
    else:
        y = conv(b, r, producer, x, 8, 8, padding=SAME)
    model = b.build([b.op(act, [y])])
    assert fused_count(model) == 1
    _, kept = run_both(model, special_input(r, (1, 9, 8, 8)))
    assert y.name in kept  # keep=True shows the tensor before the activation


@pytest.mark.parametrize("kind", ["CONV_2D", "DEPTHWISE_CONV_2D"])
@pytest.mark.parametrize("amounts, stride", [([[0, 0], [1, 1], [1, 1], [0, 0]], 1),
                                             ([[0, 0], [0, 2], [1, 0], [0, 0]], 2),
                                             ([[0, 0], [3, 0], [0, 1], [0, 0]], 1)])
def test_pad_folds_into_a_valid_conv(kind, amounts, stride):
    r = rng("pad", kind, str(amounts), stride)
    b = GraphBuilder()
    x = b.input("x", (1, 11, 10, 16))
    y = conv(b, r, kind, pad(b, x, amounts), 16, 16, stride=stride)
    model = b.build([b.op("RELU", [y])])
    assert fused_count(model) == 2
    run_both(model, special_input(r, (1, 11, 10, 16)))


def test_fused_run_equals_tflite_reference():
    """A chain of every rewrite against TFLite's reference kernels, exactly (the float kernels
    are bit-identical to them)."""
    pytest.importorskip("ai_edge_litert")
    from tflite_ref import run_tflite

    r = rng("chain")
    b = GraphBuilder()
    x = b.input("x", (1, 12, 12, 8))
    y = b.op("RELU6", [conv(b, r, "CONV_2D", x, 8, 16, padding=SAME)])
    y = conv(b, r, "DEPTHWISE_CONV_2D", pad(b, y, [[0, 0], [0, 1], [0, 1], [0, 0]]), 16, 16,
             stride=2)
    y = b.op("RELU", [b.op("ADD", [y, y], options=options("AddOptions"))])
    model = b.build([y])
    assert fused_count(model) == 3
    inputs = [r.standard_normal((1, 12, 12, 8)).astype(np.float32)]
    fast, _ = run_both(model, inputs[0])
    want = run_tflite(model.to_bytes(), inputs, "ref")
    np.testing.assert_array_equal(fast[y.name], want[y.name])


def test_what_must_not_fuse():
    r = rng("not")
    b = GraphBuilder()
    x = b.input("x", (1, 8, 8, 8))
    shared = conv(b, r, "CONV_2D", x, 8, 8, padding=SAME)
    twice = [b.op("RELU", [shared]), b.op("RELU6", [shared])]  # two readers
    with_act = b.op("RELU", [conv(b, r, "CONV_2D", x, 8, 8, padding=SAME, act="RELU6")])
    channels = conv(b, r, "CONV_2D", pad(b, x, [[0, 0], [1, 1], [1, 1], [0, 8]]), 16, 8)
    same = conv(b, r, "CONV_2D", pad(b, x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 8, 8,
                padding=SAME)
    padded = pad(b, x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    two_convs = [conv(b, r, "CONV_2D", padded, 8, 8), conv(b, r, "CONV_2D", padded, 8, 8)]
    visible = conv(b, r, "CONV_2D", x, 8, 8, padding=SAME)  # a graph output, then RELU
    after_visible = b.op("RELU", [visible])
    model = b.build([*twice, with_act, channels, same, *two_convs, visible, after_visible])
    assert fused_count(model) == 0
    run_both(model, special_input(r, (1, 8, 8, 8)))


def test_int8_relu_stays():  # it requantizes: not a clamp of the producer's output
    b = GraphBuilder()
    q = Quantization.per_tensor(0.1, 3)
    x = b.input("x", (1, 4, 4, 2), "int8", q)
    y = b.op("ADD", [x, x], options=options("AddOptions"),
             out_quantization=Quantization.per_tensor(0.2, -5))
    model = b.build([b.op("RELU", [y], out_quantization=Quantization.per_tensor(0.05, -128))])
    assert fused_count(model) == 0


def test_messages_name_the_file_op_index():
    """An op after a fused one is reported under its index in the file, not in the rewrite."""
    r = rng("msg")
    b = GraphBuilder()
    x = b.input("x", (1, 6, 6, 4))
    y = b.op("RELU", [conv(b, r, "CONV_2D", x, 4, 4, padding=SAME)])
    bad = b.op("RESHAPE", [y, b.const("shape", np.array([7, 7], np.int32))])
    model = b.build([bad])
    with pytest.raises(QEngineError, match=r"^op 2 RESHAPE"):
        qengine.Interpreter(model)
