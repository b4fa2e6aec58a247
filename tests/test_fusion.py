"""runtime/fusion.py: what fuses and what must not, and that a fused run gives the values of the
graph as written, exactly (keep=True runs the graph as written; TFLite's reference kernels run
the file). Inputs carry +-inf and NaN, where a clamp that were not the same would show."""

from __future__ import annotations

import numpy as np
import pytest
from deviations import DEVIATIONS
from op_harness import rng

import qengine
from qengine.builder import ACTIVATIONS, SAME, VALID, GraphBuilder, options
from qengine.errors import QEngineError
from qengine.ir import Quantization
from qengine.runtime.fusion import folded_ops, fuse


def conv_opts(kind, padding=VALID, stride=1, act="NONE", multiplier=1):
    fields = {"padding": padding, "strideH": stride, "strideW": stride,
              "fusedActivationFunction": ACTIVATIONS[act]}
    if kind == "DEPTHWISE_CONV_2D":
        return options("DepthwiseConv2DOptions", depthMultiplier=multiplier, **fields)
    return options("Conv2DOptions", **fields)


def conv(b, r, kind, x, in_c, out_c, k=3, out_shape=None, **kw):
    shape = (1, k, k, out_c) if kind == "DEPTHWISE_CONV_2D" else (out_c, k, k, in_c)
    w = b.const(f"w{len(b.subgraph.operators)}", r.standard_normal(shape).astype(np.float32))
    bias = b.const(f"b{len(b.subgraph.operators)}", r.standard_normal(out_c).astype(np.float32))
    return b.op(kind, [x, w, bias], out_shape, options=conv_opts(kind, **kw))


def pad(b, x, amounts):
    return b.op("PAD", [x, b.const(f"p{len(b.subgraph.operators)}",
                                   np.array(amounts, np.int32))])


def special_input(r, shape):
    x = r.standard_normal(shape).astype(np.float32) * 4
    flat = x.reshape(-1)
    flat[::17], flat[5::23], flat[9::31] = np.inf, -np.inf, np.nan
    return x


def run_both(model, x, arithmetic="ref"):
    """(fused run, the graph as written) of an interpreter; each output equal bit for bit."""
    interpreter = qengine.Interpreter(model, arithmetic=arithmetic)
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
    """... into each of the convs reading it (pose_detection's PADs feed two depthwise)."""
    r = rng("pad", kind, str(amounts), stride)
    b = GraphBuilder()
    x = b.input("x", (1, 11, 10, 16))
    padded = pad(b, x, amounts)
    y = conv(b, r, kind, padded, 16, 16, stride=stride)
    second = conv(b, r, kind, padded, 16, 16, k=1, stride=stride)
    model = b.build([b.op("RELU", [y]), second])
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
    two_convs = [conv(b, r, "CONV_2D", padded, 8, 8), b.op("RELU", [padded])]  # and a RELU
    visible = conv(b, r, "CONV_2D", x, 8, 8, padding=SAME)  # a graph output, then RELU
    after_visible = b.op("RELU", [visible])
    model = b.build([*twice, with_act, channels, same, *two_convs, visible, after_visible])
    assert fused_count(model) == 0
    run_both(model, special_input(r, (1, 8, 8, 8)))


def test_int8_relu_folds_as_a_table_not_a_clamp():
    """An int8 RELU requantizes, so it is not the ADD's fused activation (a clamp of the ADD's
    own output); it folds as a table after the ADD's table instead."""
    b = GraphBuilder()
    q = Quantization.per_tensor(0.1, 3)
    x = b.input("x", (1, 4, 4, 2), "int8", q)
    y = b.op("ADD", [x, x], options=options("AddOptions"),
             out_quantization=Quantization.per_tensor(0.2, -5))
    model = b.build([b.op("RELU", [y], out_quantization=Quantization.per_tensor(0.05, -128))])
    fused, _ = fuse(model.main)
    (op,) = fused.operators
    assert op.type == "ADD" and op.options.fusedActivationFunction == 0
    assert op.fused_lookup.type == "RELU"
    values = np.arange(-128, 128, dtype=np.int8).reshape(1, 4, 4, 16)[..., :2].copy()
    run_both(model, values)


def q8(scale, zero_point):
    return Quantization.per_tensor(scale, zero_point)


def int8_pair_then(b, r, kind, after, shape, alpha_shape=None):
    """int8 `kind` (ADD, SUB, MUL) of two inputs of `shape`, then the int8 op `after`."""
    x = b.input(f"x{len(b.subgraph.operators)}", shape, "int8", q8(0.05, 3))
    other = b.input(f"y{len(b.subgraph.operators)}", shape, "int8", q8(0.07, -9))
    z = b.op(kind, [x, other], options=options(kind.capitalize() + "Options"),
             out_quantization=q8(0.09, -4))
    return int8_lookup(b, r, after, z, alpha_shape)


def int8_conv_then(b, r, kind, after, shape, alpha_shape=None):
    """An int8 conv (3x3 SAME, or depthwise) of an input of `shape`, then the int8 op
    `after` on its output."""
    x = b.input(f"x{len(b.subgraph.operators)}", shape, "int8", q8(0.05, 3))
    c = shape[3]
    w_shape = (1, 3, 3, c) if kind == "DEPTHWISE_CONV_2D" else (c, 3, 3, c)
    w = b.const(f"w{len(b.subgraph.operators)}", r.integers(-127, 128, w_shape).astype(np.int8),
                "int8", q8(0.01, 0))
    bias = b.const(f"b{len(b.subgraph.operators)}", r.integers(-999, 999, c).astype(np.int32),
                   "int32", q8(0.0005, 0))
    y = b.op(kind, [x, w, bias], options=conv_opts(kind, padding=SAME),
             out_quantization=q8(0.2, -6))
    return int8_lookup(b, r, after, y, alpha_shape)


def int8_lookup(b, r, after, z, alpha_shape):
    """The int8 op `after` on z; PRELU's int8 slopes of `alpha_shape`, constant, or a graph
    input of shape (1, 1, 24) when alpha_shape is "input"."""
    inputs = [z]
    if after == "PRELU" and alpha_shape == "input":
        inputs.append(b.input(f"a{len(b.subgraph.operators)}", (1, 1, 24), "int8",
                              q8(0.01, 5)))
    elif after == "PRELU":
        inputs.append(b.const(f"a{len(b.subgraph.operators)}",
                              r.integers(-128, 128, alpha_shape).astype(np.int8), "int8",
                              q8(0.01, 5)))
    opts = options("LeakyReluOptions", alpha=0.2) if after == "LEAKY_RELU" else None
    low_bound = {"LOGISTIC": q8(1 / 256, -128), "TANH": q8(1 / 128, 0)}
    return b.op(after, inputs, options=opts, out_quantization=low_bound.get(after, q8(0.06, -20)))


LOOKUP_PAIRS = [("ADD", "RELU", None), ("SUB", "RELU6", None), ("MUL", "LOGISTIC", None),
                ("ADD", "TANH", None), ("ADD", "HARD_SWISH", None), ("SUB", "LEAKY_RELU", None),
                ("ADD", "PRELU", (1, 1, 24)), ("MUL", "PRELU", (24,)), ("ADD", "PRELU", ()),
                ("ADD", "PRELU", "input"),
                ("CONV_2D", "RELU", None), ("DEPTHWISE_CONV_2D", "PRELU", (1, 1, 24))]


@pytest.mark.parametrize("threads", [1, 2])
def test_int8_lookup_folds_into_the_pair_table(threads, monkeypatch):
    """int8 ADD/SUB/MUL -> RELU, RELU6, LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU (one composed
    table) and -> PRELU per channel or scalar (both tables in one pass; a constant alpha's
    table holds only the rows of the values it has; an input alpha's, all), int8 conv -> RELU
    and depthwise -> PRELU (the lookup in place on the conv's output): each pair folds, and
    the fused run equals the graph as written and TFLite's reference kernels exactly (2
    threads: every lookup split)."""
    pytest.importorskip("ai_edge_litert")
    from qengine.kernels import threads as pool
    from tflite_ref import run_tflite

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 1)
    r = rng("int8-lookups")
    shape = (1, 9, 7, 24)
    b = GraphBuilder()
    outs = [(int8_conv_then if kind.endswith("CONV_2D") else int8_pair_then)(
        b, r, kind, after, shape, alpha) for kind, after, alpha in LOOKUP_PAIRS]
    model = b.build(outs)
    fused, _ = fuse(model.main)
    assert [op.type for op in fused.operators] == [kind for kind, _, _ in LOOKUP_PAIRS]
    assert [op.fused_lookup.type for op in fused.operators] == [a for _, a, _ in LOOKUP_PAIRS]
    inputs = [r.integers(-128, 128, t.shape).astype(np.int8) for t in model.main.inputs]
    want = run_tflite(model.to_bytes(), inputs, "ref")
    interpreter = qengine.Interpreter(model, num_threads=threads)
    got, kept = interpreter.run(inputs), interpreter.run(inputs, keep=True)
    for out in outs:
        np.testing.assert_array_equal(got[out.name], want[out.name], err_msg=out.name)
        np.testing.assert_array_equal(kept[out.name], want[out.name], err_msg=out.name)


@pytest.mark.parametrize("threads", [1, 2])
def test_int8_lookup_folds_under_xnnpack_arithmetic(threads):
    """With XNNPACK's int8 ADD/MUL and convs (not pair tables), the folded lookups run after
    them, in place: the same values as the graph as written."""
    r = rng("int8-lookups")
    b = GraphBuilder()
    outs = [(int8_conv_then if kind.endswith("CONV_2D") else int8_pair_then)(
        b, r, kind, after, (1, 9, 7, 24), alpha) for kind, after, alpha in LOOKUP_PAIRS]
    model = b.build(outs)
    inputs = [r.integers(-128, 128, t.shape).astype(np.int8) for t in model.main.inputs]
    interpreter = qengine.Interpreter(model, num_threads=threads, arithmetic="xnnpack")
    got, kept = interpreter.run(inputs), interpreter.run(inputs, keep=True)
    for out in outs:
        np.testing.assert_array_equal(got[out.name], kept[out.name], err_msg=out.name)


def test_int8_lookup_that_must_not_fold():
    """A pair op's output read twice, or a graph output, keeps its lookup op; so does one
    after a FULLY_CONNECTED (not a producer that folds one), and an int16 one (16x8)."""
    r = rng("int8-lookups-not")
    shape = (1, 4, 4, 8)
    b = GraphBuilder()
    x = b.input("x", shape, "int8", q8(0.05, 3))
    z = b.op("ADD", [x, x], options=options("AddOptions"), out_quantization=q8(0.09, -4))
    twice = [b.op("RELU", [z], out_quantization=q8(0.06, -20)),
             b.op("TANH", [z], out_quantization=q8(1 / 128, 0))]
    seen = b.op("SUB", [x, x], options=options("SubOptions"), out_quantization=q8(0.09, -4))
    after_seen = b.op("RELU", [seen], out_quantization=q8(0.06, -20))
    w = b.const("w", r.integers(-127, 128, (4, 8)).astype(np.int8), "int8", q8(0.02, 0))
    dense = b.op("FULLY_CONNECTED", [b.input("v", (1, 8), "int8", q8(0.05, 3)), w,
                                     b.const("bias", np.zeros(4, np.int32), "int32",
                                             q8(0.001, 0))],
                 options=options("FullyConnectedOptions"), out_quantization=q8(0.1, 0))
    after_dense = b.op("LOGISTIC", [dense], out_quantization=q8(1 / 256, -128))
    h = b.input("h", shape, "int16", Quantization.per_tensor(0.001, 0))
    h_sum = b.op("ADD", [h, h], options=options("AddOptions"),
                 out_quantization=Quantization.per_tensor(0.002, 0))
    after_h = b.op("RELU", [h_sum], out_quantization=Quantization.per_tensor(0.002, 0))
    model = b.build([*twice, seen, after_seen, after_dense, after_h])
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


# -- the folded ADD and PRELU (shapes declared, as converters write them) ---------------------

SHAPE = (1, 8, 8, 16)


def add(b, x, y, act="NONE", shape=SHAPE):
    return b.op("ADD", [x, y], shape,
                options=options("AddOptions", fusedActivationFunction=ACTIVATIONS[act]))


def prelu(b, r, x, alpha_shape=(1, 1, 16), shape=SHAPE, float16=False):
    alpha = r.standard_normal(alpha_shape).astype(np.float32)
    if float16:  # MediaPipe's files: float16 slopes behind a DEQUANTIZE
        half = b.const(f"a16_{len(b.subgraph.operators)}", alpha.astype(np.float16))
        slopes = b.op("DEQUANTIZE", [half], alpha_shape, "float32")
    else:
        slopes = b.const(f"a{len(b.subgraph.operators)}", alpha)
    return b.op("PRELU", [x, slopes], shape)


@pytest.mark.parametrize("kind", ["CONV_2D", "DEPTHWISE_CONV_2D"])
@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6"])
@pytest.mark.parametrize("conv_first", [True, False])
def test_residual_add_folds_into_the_conv(kind, act, conv_first):
    """ADD(conv(x), x') with x' made after the conv (a PAD, as in BlazeBlocks), in either
    operand order; the fused op runs in the ADD's place."""
    r = rng("residual", kind, act, conv_first)
    b = GraphBuilder()
    x = b.input("x", SHAPE)
    y = conv(b, r, kind, x, 16, 16, padding=SAME, out_shape=SHAPE)
    skip = pad(b, x, [[0, 0], [0, 0], [0, 0], [0, 0]])
    skip.shape = SHAPE
    z = add(b, y, skip, act) if conv_first else add(b, skip, y, act)
    model = b.build([b.op("MUL", [z, z], SHAPE, options=options("MulOptions"))])
    fused, _ = fuse(model.main)
    assert [op.type for op in fused.operators] == ["PAD", kind, "MUL"]
    assert fused.operators[1].fused_epilogue.residual_activation == ACTIVATIONS[act]
    _, kept = run_both(model, special_input(r, SHAPE))
    assert y.name in kept and skip.name in kept


@pytest.mark.parametrize("kind", ["CONV_2D", "DEPTHWISE_CONV_2D"])
@pytest.mark.parametrize("act", ["NONE", "RELU"])
@pytest.mark.parametrize("arithmetic", ["ref", "xnnpack"])
def test_channel_pad_of_the_residual_folds_too(kind, act, arithmetic):
    """BlazeFace's widening blocks: ADD(conv(x), PAD(x, 8 zero channels)) -> PRELU; the conv
    reads x unpadded and adds +0.0 to its last 8 channels, then the ADD's clamp (RELU).
    In XNNPACK's order a sum starts at the bias, so the two outputs with -0.0 weights and
    bias are -0.0 on a positive input: the +0.0 turns them to +0.0, which PRELU keeps."""
    r = rng("channel-pad", kind, act)
    b = GraphBuilder()
    narrow, wide = (1, 8, 8, 8), (1, 8, 8, 16)
    x = b.input("x", narrow)
    if kind == "CONV_2D":
        y = conv(b, r, kind, x, 8, 16, padding=SAME, out_shape=wide)
    else:  # a depth multiplier of 2 widens
        y = conv(b, r, kind, x, 8, 16, padding=SAME, out_shape=wide, multiplier=2)
    w_t, bias_t = b.subgraph.operators[-1].inputs[1:3]
    zero = np.float32(-0.0 if arithmetic == "xnnpack" else 0.0)
    if kind == "CONV_2D":  # two zero outputs
        w_t.data = np.concatenate([w_t.data[:-2], np.full_like(w_t.data[-2:], zero)])
    else:
        w_t.data = np.concatenate([w_t.data[..., :-2], np.full_like(w_t.data[..., -2:], zero)],
                                  -1)
    bias_t.data = np.concatenate([bias_t.data[:-2], np.full(2, zero, np.float32)])
    skip = pad(b, x, [[0, 0], [0, 0], [0, 0], [0, 8]])
    skip.shape = wide
    y = prelu(b, r, add(b, y, skip, act, shape=wide), (16,), shape=wide)
    model = b.build([y])
    fused, _ = fuse(model.main)
    assert [op.type for op in fused.operators] == [kind]
    assert fused.operators[0].fused_epilogue.residual_pad == 8
    x_value = special_input(r, narrow)
    x_value[0, 0, 0, 0] = -0.0
    if arithmetic == "xnnpack":  # finite too: a conv's every output reads an inf or NaN here
        x_value = np.abs(np.nan_to_num(x_value, nan=1.0, posinf=1.0, neginf=1.0))
    fast, kept = run_both(model, x_value, arithmetic)
    got, want = fast[y.name], kept[y.name]
    finite = ~np.isnan(want)
    np.testing.assert_array_equal(got[finite].view(np.int32), want[finite].view(np.int32))


@pytest.mark.parametrize("kind", ["CONV_2D", "DEPTHWISE_CONV_2D"])
@pytest.mark.parametrize("float16", [False, True])
@pytest.mark.parametrize("k", [3, 1])
def test_prelu_and_add_then_prelu_fold(kind, float16, k):
    """conv -> PRELU, and conv -> ADD -> RELU (into the ADD's clamp) -> ... -> conv -> ADD ->
    PRELU, slopes one per channel ([16], [1, 1, 16], [1, 1, 1, 1]); 3x3 and 1x1 filters (a
    1x1 depthwise is a flat multiply-add of its own)."""
    r = rng("prelu", kind, float16, k)
    b = GraphBuilder()
    x = b.input("x", SHAPE)

    def conv_k(y):
        return conv(b, r, kind, y, 16, 16, k=k, padding=SAME, out_shape=SHAPE)

    y = prelu(b, r, conv_k(x), (16,), float16=float16)
    y = b.op("RELU", [add(b, conv_k(y), y)], SHAPE)
    y = prelu(b, r, add(b, conv_k(y), x), (1, 1, 16), float16=float16)
    y = prelu(b, r, conv_k(y), (1, 1, 1, 1))
    model = b.build([y])
    fused, _ = fuse(model.main)
    convs = [op for op in fused.operators if op.type == kind]
    assert [op.type for op in fused.operators if op.type != "DEQUANTIZE"] == [kind] * 4
    assert [(c.fused_epilogue.residual_activation, c.fused_epilogue.prelu) for c in convs] == \
        [(None, True), (ACTIVATIONS["RELU"], False), (0, True), (None, True)]
    run_both(model, special_input(r, SHAPE))


def three_blocks(b, r, x, k=3, float16=False):
    """MediaPipe's three kinds of block on x [1, H, W, C]: conv -> ADD(x) -> PRELU,
    depthwise -> ADD(RELU6) and a 1x1 conv widening to C + 8 channels -> ADD(PAD of 8 zero
    channels); 5 ops fold away."""
    shape = tuple(x.shape)
    channels = shape[3]
    wide = (*shape[:3], channels + 8)
    y = prelu(b, r, add(b, conv(b, r, "CONV_2D", x, channels, channels, k=k, padding=SAME,
                                out_shape=shape), x, shape=shape),
              (1, 1, channels), shape=shape, float16=float16)
    y = add(b, conv(b, r, "DEPTHWISE_CONV_2D", y, channels, channels, padding=SAME,
                    out_shape=shape), y, "RELU6", shape=shape)
    skip = pad(b, y, [[0, 0], [0, 0], [0, 0], [0, 8]])
    skip.shape = wide
    return add(b, conv(b, r, "CONV_2D", y, channels, channels + 8, k=1, out_shape=wide), skip,
               shape=wide)


def test_folded_epilogue_equals_tflite_reference():
    """conv -> ADD -> PRELU, depthwise -> ADD(RELU6) and conv -> ADD(PAD of 8 channels)
    against TFLite's reference kernels, exactly, whole and on two threads (split tiles each
    run their part of the epilogue)."""
    pytest.importorskip("ai_edge_litert")
    from tflite_ref import run_tflite

    r = rng("epilogue-tflite")
    b = GraphBuilder()
    shape = (1, 24, 24, 16)
    y = three_blocks(b, r, b.input("x", shape), float16=True)
    model = b.build([y])
    assert fused_count(model) == 5
    inputs = [r.standard_normal(shape).astype(np.float32) * 3]
    want = run_tflite(model.to_bytes(), inputs, "ref")[y.name]
    fast, _ = run_both(model, inputs[0])
    np.testing.assert_array_equal(fast[y.name], want)
    two = qengine.Interpreter(model, num_threads=2).run(inputs)
    np.testing.assert_array_equal(two[y.name], want)


def test_residual_and_prelu_that_must_not_fold():
    r = rng("epilogue-not")
    b = GraphBuilder()
    x = b.input("x", SHAPE)
    outs = []
    shared = conv(b, r, "CONV_2D", x, 16, 16, padding=SAME, out_shape=SHAPE)
    outs += [add(b, shared, x), b.op("RELU", [shared], SHAPE)]  # the conv output read twice
    row = b.const("row", r.standard_normal((1, 1, 1, 16)).astype(np.float32))
    outs.append(add(b, conv(b, r, "CONV_2D", x, 16, 16, padding=SAME, out_shape=SHAPE), row))
    twice = conv(b, r, "CONV_2D", x, 16, 16, padding=SAME, out_shape=SHAPE)
    outs.append(add(b, twice, twice))  # ADD(y, y)
    outs.append(prelu(b, r, conv(b, r, "CONV_2D", x, 16, 16, padding=SAME, out_shape=SHAPE),
                      (8, 1, 16)))  # slopes vary along rows
    undeclared = conv(b, r, "CONV_2D", x, 16, 16, padding=SAME)  # shape () in the file
    outs.append(b.op("ADD", [undeclared, x], options=options("AddOptions")))
    tanh = add(b, conv(b, r, "CONV_2D", x, 16, 16, padding=SAME, out_shape=SHAPE), x)
    tanh_op = b.subgraph.operators[-1]
    tanh_op.options.fusedActivationFunction = 4  # TANH: ADD's own op says what that means
    outs.append(tanh)
    visible = conv(b, r, "CONV_2D", x, 16, 16, padding=SAME, out_shape=SHAPE)
    outs += [visible, add(b, visible, x)]  # a graph output
    model = b.build(outs)
    assert fused_count(model) == 0


def test_residual_shape_known_only_at_run_time():
    """A file that declares the residual [1, 8, 8, 16] but computes [1, 1, 1, 16] (a RESHAPE):
    the fused conv adds it with broadcasting over the whole output instead of per tile."""
    r = rng("epilogue-late")
    b = GraphBuilder()
    x = b.input("x", SHAPE)
    row = b.op("RESHAPE", [b.const("v", r.standard_normal(16).astype(np.float32)),
                           b.const("s", np.array([1, 1, 1, 16], np.int32))], SHAPE)
    y = prelu(b, r, add(b, conv(b, r, "CONV_2D", x, 16, 16, padding=SAME, out_shape=SHAPE), row,
                        "RELU6"))
    model = b.build([y])
    assert fused_count(model) == 2
    fast, _ = run_both(model, special_input(r, SHAPE))
    assert fast[y.name].shape == SHAPE


@pytest.mark.parametrize("threads", [1, 2])
def test_hybrid_conv_epilogue_equals_tflite_reference(threads):
    """Dynamic range: int8 filters, float activations. conv -> ADD -> PRELU, depthwise ->
    ADD(RELU6) and conv -> ADD(PAD of 8 channels) fold into the hybrid kernels (per block, per
    row) and equal TFLite's reference kernels bit for bit, on one thread and on two (split by
    rows or by weight panels)."""
    pytest.importorskip("ai_edge_litert")
    from tflite_ref import run_tflite

    from qengine.quantizer import quantize

    r = rng("hybrid-epilogue", threads)
    shape = (1, 12, 12, 128)  # filters of 1024 elements or more get int8
    b = GraphBuilder()
    y = three_blocks(b, r, b.input("x", shape), k=1)
    model = quantize(b.build([y]), mode="dynamic", quiet=True)
    convs = [op for op in model.main.operators if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [op.inputs[1].dtype for op in convs] == ["int8", "int8", "int8"]
    assert fused_count(model) == 5
    inputs = [special_input(r, shape) / 8]  # (not every value NaN after three convs)
    want = run_tflite(model.to_bytes(), inputs, "ref")[y.name]
    interpreter = qengine.Interpreter(model, num_threads=threads)
    got, kept = interpreter.run(inputs), interpreter.run(inputs, keep=True)
    assert ("test_fusion", "ADD of two NaNs") in DEVIATIONS
    nan = np.isnan(want)
    assert nan.any() and not nan.all()
    for value in (got[y.name], kept[y.name]):
        np.testing.assert_array_equal(np.isnan(value), nan)
        np.testing.assert_array_equal(value[~nan].view(np.int32), want[~nan].view(np.int32))


def test_profile_names_what_each_fused_op_folded(capsys, tmp_path):
    """`qengine run --profile`: a conv with a folded PAD, ADD and PRELU is one row named after
    all of them (its time includes theirs); the shares add up to the whole."""
    from qengine.cli import main

    r = rng("profile")
    b = GraphBuilder()
    narrow, wide = (1, 8, 8, 8), (1, 8, 8, 16)
    x = b.input("x", narrow)
    skip = pad(b, x, [[0, 0], [0, 0], [0, 0], [0, 8]])
    skip.shape = wide
    y = add(b, conv(b, r, "CONV_2D", x, 8, 16, padding=SAME, out_shape=wide), skip, shape=wide)
    y = prelu(b, r, y, (16,), shape=wide)
    y = b.op("MAX_POOL_2D", [y], (1, 4, 4, 16),
             options=options("Pool2DOptions", padding=VALID, strideH=2, strideW=2,
                             filterHeight=2, filterWidth=2))
    path = tmp_path / "block.tflite"
    path.write_bytes(b.build([y]).to_bytes())
    assert main(["run", str(path), "--profile", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: float(line.split()[-1].rstrip("%"))
            for line in out.splitlines() if line.split() and line.split()[-1].endswith("%")}
    assert set(rows) == {"CONV_2D+PAD+ADD+PRELU", "MAX_POOL_2D"}
    assert abs(sum(rows.values()) - 100) < 0.5


def test_hybrid_depthwise_with_a_multiplier_folds_as_one_pass():
    """A dynamic-range depthwise of depth multiplier 2 has no fused kernel: its folded ADD and
    PRELU run as one pass over its output, the same values as the graph as written."""
    from qengine.quantizer import quantize

    r = rng("hybrid-multiplier")
    b = GraphBuilder()
    narrow, wide = (1, 10, 10, 64), (1, 10, 10, 128)
    x = b.input("x", narrow)
    skip = b.input("skip", wide)
    y = conv(b, r, "DEPTHWISE_CONV_2D", x, 64, 128, padding=SAME, out_shape=wide,
             multiplier=2)
    y = prelu(b, r, add(b, y, skip, "RELU6", shape=wide), (128,), shape=wide)
    model = quantize(b.build([y]), mode="dynamic", quiet=True)
    assert model.main.operators[0].inputs[1].dtype == "int8"
    assert fused_count(model) == 2
    inputs = [special_input(r, narrow) / 8, special_input(r, wide)]
    interpreter = qengine.Interpreter(model)
    fast, kept = interpreter.run(inputs), interpreter.run(inputs, keep=True)
    np.testing.assert_array_equal(fast[y.name], kept[y.name])


@pytest.mark.parametrize("threads", [1, 2])
def test_activation_folds_into_a_hybrid_conv(threads):
    """Dynamic range: RELU after a hybrid conv, RELU6 after a hybrid depthwise and
    RELU_N1_TO_1 after a depthwise of multiplier 2 (no fused kernel: two steps) become their
    fused activations, equal to the graph as written and to TFLite's reference kernels."""
    from qengine.quantizer import quantize

    r = rng("hybrid-activation", threads)
    shape, wide = (1, 10, 10, 128), (1, 10, 10, 256)  # filters of 1024 elements or more: int8
    b = GraphBuilder()
    y = b.op("RELU", [conv(b, r, "CONV_2D", b.input("x", shape), 128, 128, k=1,
                           out_shape=shape)], shape)
    y = b.op("RELU6", [conv(b, r, "DEPTHWISE_CONV_2D", y, 128, 128, padding=SAME,
                            out_shape=shape)], shape)
    y = b.op("RELU_N1_TO_1", [conv(b, r, "DEPTHWISE_CONV_2D", y, 128, 256, padding=SAME,
                                   out_shape=wide, multiplier=2)], wide)
    model = quantize(b.build([y]), mode="dynamic", quiet=True)
    convs = [op for op in model.main.operators if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [op.inputs[1].dtype for op in convs] == ["int8"] * 3
    fused, _ = fuse(model.main)
    assert [op.options.fusedActivationFunction for op in fused.operators] == [
        ACTIVATIONS[name] for name in ("RELU", "RELU6", "RELU_N1_TO_1")]
    inputs = [special_input(r, shape) / 8]
    interpreter = qengine.Interpreter(model, num_threads=threads)
    got, kept = interpreter.run(inputs), interpreter.run(inputs, keep=True)
    values = got[y.name]
    assert (values == -1).any() and (values == 1).any() and (abs(values) < 1).any()  # clamped
    np.testing.assert_array_equal(values.view(np.int32), kept[y.name].view(np.int32))
    pytest.importorskip("ai_edge_litert")
    from tflite_ref import run_tflite

    want = run_tflite(model.to_bytes(), inputs, "ref")[y.name]
    np.testing.assert_array_equal(got[y.name].view(np.int32), want.view(np.int32))


QUANTIZED_PADS = [  # amounts, kernel size, stride
    ([[0, 0], [1, 1], [1, 1], [0, 0]], 3, 1),
    ([[0, 0], [0, 2], [1, 0], [0, 0]], 3, 2),
    ([[0, 0], [3, 0], [0, 1], [0, 0]], 3, 1),  # output row 0's window wholly in the padding
    ([[0, 0], [2, 1], [1, 2], [0, 0]], 1, 1),  # so is every border pixel's of a 1x1 conv
]


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
@pytest.mark.parametrize("kind", ["CONV_2D", "DEPTHWISE_CONV_2D"])
@pytest.mark.parametrize("threads", [1, 2])
def test_pad_folds_into_a_quantized_conv(mode, kind, threads, monkeypatch):
    """A quantized PAD writes its zero point, a quantized conv adds nothing for a tap in its
    padding: each PAD before a VALID conv folds, and the fused run equals the graph as written
    and TFLite's reference kernels exactly (2 threads: every conv split)."""
    pytest.importorskip("ai_edge_litert")
    from qengine.kernels import threads as pool
    from tflite_ref import run_tflite

    from qengine.quantizer import quantize

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 1)
    r = rng("quantized-pad", mode, kind)
    shape = (1, 17, 14, 16)
    b = GraphBuilder()
    x = b.input("x", shape)
    outs = [conv(b, r, kind, pad(b, x, amounts), 16, 16, k=k, stride=stride)
            for amounts, k, stride in QUANTIZED_PADS]
    outs.append(conv(b, r, kind, b.subgraph.operators[-2].outputs[0], 16, 16, k=3, stride=2))
    calibration = r.standard_normal((4, *shape)).astype(np.float32)
    model = quantize(b.build(outs), mode=mode, calibration=calibration, quiet=True)
    assert [op.type for op in model.main.operators].count("PAD") == len(QUANTIZED_PADS)
    assert fused_count(model) == len(QUANTIZED_PADS)
    t = model.main.inputs[0]
    info = np.iinfo(t.dtype)
    q = r.integers(info.min, info.max + 1, shape).astype(t.dtype)
    q.reshape(-1)[::7] = t.quantization.zero_point[0]  # the padding's own value, inside too
    want = run_tflite(model.to_bytes(), [q], "ref")
    interpreter = qengine.Interpreter(model, num_threads=threads)
    got, kept = interpreter.run([q]), interpreter.run([q], keep=True)
    for out in model.main.outputs:
        np.testing.assert_array_equal(got[out.name], want[out.name], err_msg=out.name)
        np.testing.assert_array_equal(kept[out.name], want[out.name], err_msg=out.name)


def test_quantized_pad_that_must_not_fold():
    """A PAD whose output has another scale or zero point than its input (TFLite refuses
    it; a file might carry it) stays."""
    r = rng("quantized-pad-not")
    b = GraphBuilder()
    x = b.input("x", (1, 6, 6, 8), "int8", Quantization.per_tensor(0.1, 3))
    padded = b.op("PAD", [x, b.const("p", np.array([[0, 0], [1, 1], [1, 1], [0, 0]],
                                                       np.int32))],
                  out_quantization=Quantization.per_tensor(0.1, 4))
    w = b.const("w", r.integers(-127, 128, (8, 3, 3, 8)).astype(np.int8), "int8",
                Quantization.per_tensor(0.02))
    bias = b.const("b", np.zeros(8, np.int32), "int32", Quantization.per_tensor(0.002))
    y = b.op("CONV_2D", [padded, w, bias], options=conv_opts("CONV_2D"),
             out_quantization=Quantization.per_tensor(0.2, 0))
    assert fused_count(b.build([y])) == 0


def _hybrid_pad_model(per_channel: bool):
    """x -> PAD -> {3x3 CONV_2D -> ADD(skip), 3x3/2 DEPTHWISE} and x -> PAD(2, 0, 0, 3) ->
    1x1 CONV_2D, dynamic range (int8 filters, float activations)."""
    from qengine.quantizer import quantize

    r = rng("hybrid-pad", per_channel)
    shape = (1, 12, 11, 128)  # filters of 1024 elements or more get int8
    b = GraphBuilder()
    x = b.input("x", shape)
    padded = pad(b, x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    y = add(b, conv(b, r, "CONV_2D", padded, 128, 128, out_shape=shape), b.input("skip", shape),
            shape=shape)
    dw = conv(b, r, "DEPTHWISE_CONV_2D", padded, 128, 128, stride=2)
    uneven = conv(b, r, "CONV_2D", pad(b, x, [[0, 0], [2, 0], [0, 3], [0, 0]]), 128, 16, k=1)
    model = quantize(b.build([y, dw, uneven]), mode="dynamic", per_channel=per_channel,
                     quiet=True)
    convs = [op for op in model.main.operators if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [op.inputs[1].dtype for op in convs] == ["int8"] * 3
    return model, shape


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_pad_folds_into_hybrid_convs(per_channel, threads):
    """Dynamic range: a PAD feeding hybrid convs folds into them (its zeros leave the image's
    range alone and add (zp - zp) * w = 0), TFLite's values bit for bit on images without a
    NaN; an image holding one (whose range TFLite scans in memory order, zeros included) runs
    padded, as written. Per-channel filters quantize asymmetrically, one scale symmetrically
    (CONV_2D; the depthwise is always per channel)."""
    pytest.importorskip("ai_edge_litert")
    from tflite_ref import run_tflite

    model, shape = _hybrid_pad_model(per_channel)
    assert fused_count(model) == 3  # the two PADs and the ADD
    r = rng("hybrid-pad-inputs", per_channel, threads)
    plain = r.standard_normal(shape).astype(np.float32) * 3
    positive = np.abs(plain) + 0.5  # a range the zeros would widen, were they counted
    with_nan = plain.copy()
    with_nan[0, 0, 0, 0] = with_nan[0, 5, 7, 3] = np.nan  # NaN first: the scan's min for good
    with_nan[0, 11, 10, -3:] = np.nan  # and last: its max (Neon's lanes, in fours)
    skip = r.standard_normal(shape).astype(np.float32)
    interpreter = qengine.Interpreter(model, num_threads=threads)
    for x in (plain, positive, with_nan):
        want = run_tflite(model.to_bytes(), [x, skip], "ref")
        got = interpreter.run([x, skip])
        for out in model.main.outputs:
            np.testing.assert_array_equal(got[out.name].view(np.int32),
                                          want[out.name].view(np.int32), err_msg=out.name)


def _hard_swish_blocks(b, r, x, channels):
    """MobileNetV3's activations: conv -> HARD_SWISH, depthwise (of stride 2) -> HARD_SWISH,
    a 1x1 conv -> ADD(RELU6) -> PRELU -> HARD_SWISH, and a depthwise read by a HARD_SWISH
    and by the graph (which must not fold). Three fold away, with the ADD and PRELU."""
    shape = tuple(x.shape)
    y = b.op("HARD_SWISH", [conv(b, r, "CONV_2D", x, channels, channels, padding=SAME,
                                 out_shape=shape)], shape)
    half = (1, (shape[1] + 1) // 2, (shape[2] + 1) // 2, channels)
    y = b.op("HARD_SWISH", [conv(b, r, "DEPTHWISE_CONV_2D", y, channels, channels,
                                 padding=SAME, stride=2, out_shape=half)], half)
    z = add(b, conv(b, r, "CONV_2D", y, channels, channels, k=1, out_shape=half), y, "RELU6",
            shape=half)
    z = b.op("HARD_SWISH", [prelu(b, r, z, (1, 1, channels), shape=half)], half)
    seen = conv(b, r, "DEPTHWISE_CONV_2D", z, channels, channels, padding=SAME, out_shape=half)
    return [b.op("HARD_SWISH", [seen], half), seen]


@pytest.mark.parametrize("threads", [1, 2])
def test_hard_swish_folds_into_its_conv(threads):
    """Float: the folded HARD_SWISH runs on each tile after the conv's ADD and PRELU; the same
    values as the graph as written and as TFLite's reference kernels, bit for bit."""
    pytest.importorskip("ai_edge_litert")
    from tflite_ref import run_tflite

    r = rng("hard-swish", threads)
    b = GraphBuilder()
    x = b.input("x", (1, 13, 12, 24))
    model = b.build(_hard_swish_blocks(b, r, x, 24))
    assert fused_count(model) == 5  # three HARD_SWISH, the ADD and the PRELU
    fused, _ = fuse(model.main)
    assert [folded_ops(op) for op in fused.operators] == [
        ["HARD_SWISH"], ["HARD_SWISH"], ["ADD", "PRELU", "HARD_SWISH"], [], []]  # (read twice)
    interpreter = qengine.Interpreter(model, num_threads=threads)
    assert ("test_fusion", "ADD of two NaNs") in DEVIATIONS  # (NaNs compare as NaN)
    plain = r.standard_normal((1, 13, 12, 24)).astype(np.float32) * 3
    corner = plain.copy()
    corner[0, 0, 0, :3] = np.inf, -np.inf, np.nan  # NaNs around one corner, not everywhere
    for x in (plain, corner):
        got, kept = interpreter.run([x]), interpreter.run([x], keep=True)
        want = run_tflite(model.to_bytes(), [x], "ref")
        for out in model.main.outputs:
            nan = np.isnan(want[out.name])
            assert not nan.all()
            for value in (got[out.name], kept[out.name]):
                np.testing.assert_array_equal(np.isnan(value), nan, err_msg=out.name)
                np.testing.assert_array_equal(value[~nan].view(np.int32),
                                              want[out.name][~nan].view(np.int32), out.name)


def test_hard_swish_folds_into_a_hybrid_conv():
    """Dynamic range: HARD_SWISH after hybrid convs folds the same way, TFLite's values bit for
    bit (the first conv's input holds no NaN: one would make every value NaN)."""
    pytest.importorskip("ai_edge_litert")
    from tflite_ref import run_tflite

    from qengine.quantizer import quantize

    r = rng("hard-swish-hybrid")
    b = GraphBuilder()
    x = b.input("x", (1, 10, 9, 128))  # filters of 1024 elements or more get int8
    model = quantize(b.build(_hard_swish_blocks(b, r, x, 128)), mode="dynamic", quiet=True)
    convs = [op for op in model.main.operators if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [op.inputs[1].dtype for op in convs] == ["int8"] * 4
    assert fused_count(model) == 5
    inputs = [r.standard_normal((1, 10, 9, 128)).astype(np.float32) * 3]
    got = qengine.Interpreter(model).run(inputs)
    want = run_tflite(model.to_bytes(), inputs, "ref")
    for out in model.main.outputs:
        np.testing.assert_array_equal(got[out.name].view(np.int32),
                                      want[out.name].view(np.int32), err_msg=out.name)


def _int8_widening_adds(b, r, shape, wide_channels):
    """BlazeFace's widening blocks, int8: ADD(y, PAD(x, zero-point channels)) with the PAD as
    either operand, then nothing, RELU (a composed table), a per-channel PRELU (chained in
    the same pass) or a scalar one (a second pass); a PAD read twice stays."""
    wide = (*shape[:3], wide_channels)
    amounts = np.array([[0, 0], [0, 0], [0, 0], [0, wide_channels - shape[3]]], np.int32)
    outs = []
    for position, after, alpha in [(1, None, None), (0, None, None), (1, "RELU", None),
                                   (0, "PRELU", (1, 1, wide_channels)), (1, "PRELU", ())]:
        x = b.input(f"x{len(b.subgraph.operators)}", shape, "int8", q8(0.05, 3))
        y = b.input(f"y{len(b.subgraph.operators)}", wide, "int8", q8(0.07, -9))
        padded = b.op("PAD", [x, b.const(f"p{len(b.subgraph.operators)}", amounts)], wide,
                      "int8", out_quantization=q8(0.05, 3))
        pair = [y, padded] if position == 1 else [padded, y]
        z = b.op("ADD", pair, wide, "int8", options=options("AddOptions"),
                 out_quantization=q8(0.09, -4))
        outs.append(z if after is None else int8_lookup(b, r, after, z, alpha))
    x = b.input("twice", shape, "int8", q8(0.05, 3))
    padded = b.op("PAD", [x, b.const("p_twice", amounts)], wide, "int8",
                  out_quantization=q8(0.05, 3))
    outs += [b.op("ADD", [b.input("y_twice", wide, "int8", q8(0.07, -9)), padded], wide, "int8",
                  options=options("AddOptions"), out_quantization=q8(0.09, -4)), padded]
    return outs


@pytest.mark.parametrize("threads", [1, 2])
def test_int8_channel_pad_folds_into_the_add(threads, monkeypatch):
    """int8 ADD(y, PAD(x, n channels)): the ADD reads x and takes the PAD's zero point for
    the n channels; alone, with a RELU composed into its table, a PRELU chained into its pass
    or one after it, against TFLite's reference kernels and the graph as written, exactly
    (2 threads: every lookup split)."""
    pytest.importorskip("ai_edge_litert")
    from qengine.kernels import threads as pool
    from tflite_ref import run_tflite

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 1)
    r = rng("int8-channel-pad", threads)
    b = GraphBuilder()
    outs = _int8_widening_adds(b, r, (1, 7, 5, 20), 36)
    model = b.build(outs)
    fused, _ = fuse(model.main)
    assert [folded_ops(op) for op in fused.operators if op.type == "ADD"] == [
        ["PAD"], ["PAD"], ["PAD", "RELU"], ["PAD", "PRELU"], ["PAD", "PRELU"], []]
    inputs = [r.integers(-128, 128, t.shape).astype(np.int8) for t in model.main.inputs]
    want = run_tflite(model.to_bytes(), inputs, "ref")
    for arithmetic in ("ref", "xnnpack"):  # XNNPACK's ADD: the operand padded at run time
        interpreter = qengine.Interpreter(model, num_threads=threads, arithmetic=arithmetic)
        got, kept = interpreter.run(inputs), interpreter.run(inputs, keep=True)
        for out in outs:
            np.testing.assert_array_equal(got[out.name], kept[out.name], err_msg=out.name)
            if arithmetic == "ref":
                np.testing.assert_array_equal(got[out.name], want[out.name], err_msg=out.name)
