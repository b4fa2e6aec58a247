"""16x8 quantization (int16 activations, int8 weights, int64 biases) against TFLite.

Single-op float models are quantized with qengine.quantize(mode="int16x8") and run on random
int16 inputs over the full range; int16 models built by hand reach cases the quantizer does not
produce (power-of-two ADD, per-tensor FC weights, extreme multipliers). Every output must equal
TFLite's BUILTIN_REF bit for bit. Whole models (the bundled digits model, the corpus MLP and
MobileNetV2) are compared the same way, and the quantizer's choices are compared with
TensorFlow's own 16x8 converter.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import check_against_tflite, rng
from tflite_ref import run_tflite

import qengine
from qengine.builder import SAME, VALID, GraphBuilder, options
from qengine.errors import QuantizationError, UnsupportedOpError
from qengine.ir import Quantization

ACTS = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}


def int16_values(r, shape):
    return r.integers(-32768, 32768, shape).astype(np.int16)


def calibration(r, shape, n=8, spread=3.0):
    return (r.normal(size=(n,) + tuple(shape)) * spread).astype(np.float32)


def quantize16(model, samples):
    return qengine.quantize(model, "int16x8", samples, quiet=True)


def check_quantized(build, shapes, key, seeds=2, spread=3.0):
    """Build a float model, quantize it 16x8, and compare on random int16 inputs."""
    r = rng(*key)
    model = build()
    samples = [calibration(r, s, spread=spread) for s in shapes]
    q = quantize16(model, samples[0] if len(samples) == 1 else
                   {t.name: v for t, v in zip(model.main.inputs, samples)})
    ops = {op.type for op in q.main.operators}
    assert "DEQUANTIZE" not in ops and "QUANTIZE" not in ops or len(shapes) > 1, ops
    for seed in range(seeds):
        inputs = [int16_values(rng(*key, seed), s) for s in shapes]
        check_against_tflite(q, inputs)
    return q


def single(op, in_shapes, out_shape, consts=(), **kw):
    def build():
        b = GraphBuilder()
        xs = [b.input(f"x{i}", s) for i, s in enumerate(in_shapes)]
        cs = [b.const(name, value) if value is not None else None for name, value in consts]
        y = b.op(op, xs + cs, out_shape, **kw)
        return b.build([y])
    return build


def weights(r, shape):
    return (r.normal(size=shape) * 0.3).astype(np.float32)


# -- CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED ------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("padding, stride, dil, act", [
    (SAME, (1, 1), (1, 1), "NONE"), (VALID, (2, 1), (1, 1), "RELU"),
    (SAME, (2, 2), (1, 1), "RELU6"), (SAME, (1, 1), (2, 2), "RELU_N1_TO_1"),
    (VALID, (1, 2), (1, 2), "NONE")])
def test_conv_2d(padding, stride, dil, act):
    r = rng("conv", padding, stride, dil, act)
    opts = options("Conv2DOptions", padding=padding, strideH=stride[0], strideW=stride[1],
                   dilationHFactor=dil[0], dilationWFactor=dil[1],
                   fusedActivationFunction=ACTS[act])
    build = single("CONV_2D", [(2, 9, 8, 3)], None, options=opts,
                   consts=[("w", weights(r, (5, 3, 3, 3))), ("b", r.normal(size=5).astype(
                       np.float32))])
    q = check_quantized(build, [(2, 9, 8, 3)], ("conv", padding, stride, dil, act))
    conv = next(op for op in q.main.operators if op.type == "CONV_2D")
    assert conv.inputs[2].dtype == "int64" and conv.inputs[1].dtype == "int8"
    assert conv.outputs[0].dtype == "int16" and not conv.outputs[0].quantization.zero_point[0]


@pytest.mark.tf
@pytest.mark.parametrize("multiplier, stride, act", [(1, 1, "NONE"), (2, 2, "RELU6"),
                                                     (3, 1, "RELU")])
def test_depthwise_conv_2d(multiplier, stride, act):
    r = rng("dw", multiplier, stride, act)
    opts = options("DepthwiseConv2DOptions", padding=SAME, strideH=stride, strideW=stride,
                   depthMultiplier=multiplier, fusedActivationFunction=ACTS[act])
    build = single("DEPTHWISE_CONV_2D", [(1, 7, 6, 4)], None, options=opts,
                   consts=[("w", weights(r, (1, 3, 3, 4 * multiplier))),
                           ("b", r.normal(size=4 * multiplier).astype(np.float32))])
    check_quantized(build, [(1, 7, 6, 4)], ("dw", multiplier, stride, act))


@pytest.mark.tf
@pytest.mark.parametrize("bias, keep, act", [(True, False, "NONE"), (False, False, "RELU"),
                                             (True, True, "RELU6")])
def test_fully_connected(bias, keep, act):
    r = rng("fc", bias, keep, act)
    opts = options("FullyConnectedOptions", keepNumDims=keep, fusedActivationFunction=ACTS[act])
    consts = [("w", weights(r, (6, 10)))] + ([("b", r.normal(size=6).astype(np.float32))]
                                              if bias else [])
    out = (3, 2, 6) if keep else (6, 6)
    check_quantized(single("FULLY_CONNECTED", [(3, 2, 10)], out, options=opts, consts=consts),
                    [(3, 2, 10)], ("fc", bias, keep, act))


@pytest.mark.tf
def test_fully_connected_per_tensor_weights_built_by_hand():
    r = rng("fc per tensor")
    b = GraphBuilder()
    x = b.input("x", (4, 16), "int16", Quantization.per_tensor(0.01, 0))
    w = b.const("w", r.integers(-127, 128, (8, 16)).astype(np.int8),
                quantization=Quantization.per_tensor(0.02, 0))
    bias = b.const("b", r.integers(-5000, 5000, 8).astype(np.int64),
                   quantization=Quantization.per_tensor(0.0002, 0))
    y = b.op("FULLY_CONNECTED", [x, w, bias], (4, 8), "int16",
             options=options("FullyConnectedOptions"), version=4,
             out_quantization=Quantization.per_tensor(0.5, 0))
    check_against_tflite(b.build([y]), [int16_values(r, (4, 16))])


# -- ADD, SUB, MUL -----------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("shapes, act", [([(2, 3, 4), (2, 3, 4)], "NONE"),
                                         ([(2, 3, 4), (4,)], "RELU"),
                                         ([(1, 5, 1, 3), (2, 1, 4, 1)], "RELU6")])
def test_binary(op, shapes, act):
    opts = options(op.capitalize() + "Options", fusedActivationFunction=ACTS[act])
    out = tuple(np.broadcast_shapes(*shapes))
    key = ("binary", op, str(shapes), act)

    def build():
        b = GraphBuilder()
        xs = [b.input(f"x{i}", s) for i, s in enumerate(shapes)]
        return b.build([b.op(op, xs, out, options=opts)])

    r = rng(*key)
    model = build()
    samples = {t.name: calibration(r, s, spread=1.0 + i) for i, (t, s) in
               enumerate(zip(model.main.inputs, shapes))}
    q = quantize16(model, samples)
    node = next(o for o in q.main.operators if o.type == op)
    if op != "MUL":
        assert node.options.potScaleInt16 is False
    for seed in range(2):
        check_against_tflite(q, [int16_values(rng(*key, seed), s) for s in shapes])


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ADD", "SUB"])
@pytest.mark.parametrize("exponents", [(-10, -12, -10), (-13, -9, -9), (-8, -8, -8)])
def test_power_of_two_add_sub_built_by_hand(op, exponents):
    """pot_scale_int16 (the schema default) with power-of-two scales: the shift-only kernel."""
    r = rng("pot", op, exponents)
    s1, s2, s_out = (2.0 ** e for e in exponents)
    b = GraphBuilder()
    x = b.input("x", (3, 50), "int16", Quantization.per_tensor(s1, 0))
    y = b.input("y", (3, 50), "int16", Quantization.per_tensor(s2, 0))
    z = b.op(op, [x, y], (3, 50), "int16", options=options(op.capitalize() + "Options"),
             out_quantization=Quantization.per_tensor(s_out, 0))
    check_against_tflite(b.build([z]), [int16_values(r, (3, 50)), int16_values(r, (3, 50))])


# -- pools, MEAN, SOFTMAX, data movement ---------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("padding, size, stride, act", [(VALID, 2, 2, "NONE"),
                                                        (SAME, 3, 2, "RELU"),
                                                        (SAME, 3, 1, "RELU6")])
def test_pool(op, padding, size, stride, act):
    opts = options("Pool2DOptions", padding=padding, filterHeight=size, filterWidth=size,
                   strideH=stride, strideW=stride, fusedActivationFunction=ACTS[act])
    check_quantized(single(op, [(2, 7, 8, 3)], None, options=opts), [(2, 7, 8, 3)],
                    ("pool", op, padding, size, stride, act))


@pytest.mark.tf
@pytest.mark.parametrize("axes, keep", [([1, 2], True), ([-1], False), ([0, 2], False)])
def test_mean(axes, keep):
    build = single("MEAN", [(2, 5, 6, 3)], None, options=options("ReducerOptions",
                                                                  keepDims=keep),
                   consts=[("axes", np.array(axes, np.int32))])
    check_quantized(build, [(2, 5, 6, 3)], ("mean", str(axes), keep))


@pytest.mark.tf
@pytest.mark.parametrize("shape, beta, spread", [((4, 10), 1.0, 3.0), ((2, 3, 33), 0.5, 8.0),
                                                 ((3, 7), 2.0, 0.3)])
def test_softmax(shape, beta, spread):
    build = single("SOFTMAX", [shape], shape, options=options("SoftmaxOptions", beta=beta))
    q = check_quantized(build, [shape], ("softmax", shape, beta), seeds=3, spread=spread)
    out = q.main.outputs[0].quantization
    assert out.scale[0] == np.float32(1 / 32768) and out.zero_point[0] == 0


@pytest.mark.tf
def test_data_movement_and_concatenation():
    """RESHAPE, TRANSPOSE, PAD, STRIDED_SLICE and CONCATENATION pass int16 through."""
    def build():
        b = GraphBuilder()
        x = b.input("x", (2, 4, 6))
        y = b.input("y", (2, 4, 6))
        t = b.op("TRANSPOSE", [x, b.const("perm", np.array([0, 2, 1], np.int32))], (2, 6, 4))
        p = b.op("PAD", [t, b.const("pads", np.array([[0, 0], [1, 1], [0, 2]], np.int32))],
                 (2, 8, 6))
        s = b.op("STRIDED_SLICE", [p] + [b.const(n, np.array(v, np.int32)) for n, v in
                                         [("begin", [0, 1, 0]), ("end", [2, 7, 6]),
                                          ("strides", [1, 1, 1])]], (2, 6, 6),
                 options=options("StridedSliceOptions"))
        r = b.op("RESHAPE", [y, b.const("shape", np.array([2, 6, 4], np.int32))], (2, 6, 4),
                 options=options("ReshapeOptions", newShape=[2, 6, 4]))
        c = b.op("CONCATENATION", [s, r], (2, 6, 10),
                 options=options("ConcatenationOptions", axis=-1))
        return b.build([c])

    check_quantized(build, [(2, 4, 6), (2, 4, 6)], ("movement",))


# -- the quantizer -------------------------------------------------------------------------------


def test_interface_and_strict():
    build = single("FULLY_CONNECTED", [(1, 8)], (1, 4), options=options("FullyConnectedOptions"),
                   consts=[("w", weights(rng("if"), (4, 8)))])
    samples = calibration(rng("if"), (1, 8))
    q = qengine.quantize(build(), "int16x8", samples, inference_type="float32", quiet=True)
    assert [op.type for op in q.main.operators] == ["QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE"]
    assert [op.opcode.version for op in q.main.operators] == [2, 4, 3]
    with pytest.raises(QuantizationError, match="inference_type"):
        qengine.quantize(build(), "int16x8", samples, inference_type="uint8", quiet=True)
    floor = single("FLOOR", [(1, 8)], (1, 8))
    with pytest.raises(QuantizationError, match="strict 16x8"):
        qengine.quantize(floor(), "int16x8", samples, strict=True, quiet=True)


def test_cli_int16x8(tmp_path):
    from qengine.cli import main

    np.save(tmp_path / "cal.npy", np.load(qengine_examples() / "digits_data.npz")[
        "calibration"][:10])
    out = tmp_path / "digits16.tflite"
    assert main(["quantize", str(qengine_examples() / "digits.tflite"), "--mode", "int16x8",
                 "--calibration", str(tmp_path / "cal.npy"), "--quiet", "-o", str(out)]) == 0
    model = qengine.load(out)
    assert model.main.inputs[0].dtype == "int16"


def test_unsupported_int16_requant_refused():
    """A POT ADD whose inputs both need shifting is refused like TFLite's Prepare."""
    b = GraphBuilder()
    x = b.input("x", (4,), "int16", Quantization.per_tensor(2.0 ** -10, 0))
    y = b.input("y", (4,), "int16", Quantization.per_tensor(2.0 ** -11, 0))
    z = b.op("ADD", [x, y], (4,), "int16", options=options("AddOptions"),
             out_quantization=Quantization.per_tensor(2.0 ** -8, 0))
    with pytest.raises(UnsupportedOpError):
        qengine.Interpreter(b.build([z]))


def qengine_examples():
    from pathlib import Path

    return Path(__file__).parents[1] / "examples"


# -- whole models --------------------------------------------------------------------------------


def _int16_inputs(model, floats):
    q = model.main.inputs[0].quantization
    return np.clip(np.round(floats / q.scale[0]), -32768, 32767).astype(np.int16)


@pytest.mark.tf
def test_digits_model_exact():
    data = np.load(qengine_examples() / "digits_data.npz")
    q = quantize16(qengine_examples() / "digits.tflite", data["calibration"][:100])
    x = _int16_inputs(q, data["test_images"][:16])
    for i in range(0, 16, 4):
        check_against_tflite(q, [x[i:i + 1]])
    got = np.concatenate([qengine.Interpreter(q).run([x[i:i + 1]])[q.main.outputs[0].name]
                          for i in range(16)])
    accuracy = np.mean(got.argmax(-1) == data["test_labels"][:16])
    assert accuracy >= 0.8


@pytest.mark.tf
@pytest.mark.parametrize("name", ["mlp", "mobilenet_v2"])
def test_corpus_model_exact(corpus, name):
    model = corpus.path(name, "float")
    samples = corpus.sample_inputs(name, 8, corpus.CALIBRATION_SEED)
    q = quantize16(model, samples)
    ops = {op.type for op in q.main.operators}
    assert "DEQUANTIZE" not in ops, "every op should have a 16x8 kernel"
    held_out = corpus.sample_inputs(name, 2, 1)
    for i in range(len(held_out)):
        check_against_tflite(q, [_int16_inputs(q, held_out[i:i + 1])])


@pytest.mark.tf
def test_parameters_match_tensorflows_converter():
    """TF's 16x8 converter and qengine agree on the parameter scheme of a small Keras model:
    int16 symmetric activations, int8 per-channel weights, int64 conv biases, fixed softmax."""
    import tensorflow as tf

    keras = tf.keras
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Softmax()(keras.layers.Dense(5)(h))
    net = keras.Model(inp, out)
    samples = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int16
    theirs = qengine.load(converter.convert())
    float_model = qengine.load(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    ours = quantize16(float_model, samples)

    def scheme(model):
        rows = {}
        for op in model.main.operators:
            tensors = [t for t in op.inputs + op.outputs if t is not None and t.quantization]
            rows[op.type] = sorted({(t.dtype, int(np.any(t.quantization.zero_point)),
                                     t.quantization.scale.size > 1) for t in tensors})
        return rows

    mine, reference = scheme(ours), scheme(theirs)
    for op in ("CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "MEAN"):
        assert mine[op] == reference[op], op
    for model in (ours, theirs):
        soft = next(op for op in model.main.operators if op.type == "SOFTMAX")
        assert soft.outputs[0].quantization.scale[0] == np.float32(1 / 32768)
    x = _int16_inputs(ours, samples[:1])
    assert np.array_equal(run_tflite(ours.to_bytes(), [x])[ours.main.outputs[0].name],
                          qengine.Interpreter(ours).run([x])[ours.main.outputs[0].name])


# -- LOGISTIC, TANH: every int16 input value ---------------------------------------------------

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16).reshape(1, -1)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
@pytest.mark.parametrize("in_scale", [2.0 ** -12, 2.0 ** -11, 2.0 ** -9, 3e-4, 1.7e-3, 4e-5])
def test_logistic_tanh_every_input(op, in_scale):
    b = GraphBuilder()
    x = b.input("x", ALL_INT16.shape, "int16", Quantization.per_tensor(in_scale, 0))
    y = b.op(op, [x], ALL_INT16.shape, "int16",
             out_quantization=Quantization.per_tensor(2.0 ** -15, 0))
    check_against_tflite(b.build([y]), [ALL_INT16])


@pytest.mark.tf
@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_logistic_tanh_quantized(op):
    q = check_quantized(single(op, [(3, 40)], (3, 40)), [(3, 40)], ("act", op))
    out = q.main.outputs[0].quantization
    assert out.scale[0] == np.float32(2.0 ** -15) and out.zero_point[0] == 0


# -- data movement and selection ops the 16x8 pass quantizes -------------------------------------

I32 = np.int32
MOVEMENT = {
    "MAXIMUM": ([(2, 3, 4), (4,)], [], (2, 3, 4), None),
    "MINIMUM": ([(2, 3, 4), (2, 3, 4)], [], (2, 3, 4), None),
    "REDUCE_MAX": ([(2, 3, 4)], [("a", [1])], (2, 4), ("ReducerOptions", {})),
    "REDUCE_MIN": ([(2, 3, 4)], [("a", [2])], (2, 3), ("ReducerOptions", {})),
    "RESIZE_BILINEAR": ([(1, 4, 5, 2)], [("s", [7, 9])], (1, 7, 9, 2),
                        ("ResizeBilinearOptions", {"halfPixelCenters": True})),
    "RESIZE_NEAREST_NEIGHBOR": ([(1, 4, 5, 2)], [("s", [7, 9])], (1, 7, 9, 2),
                                ("ResizeNearestNeighborOptions", {})),
    "SLICE": ([(3, 4, 5)], [("b", [1, 0, 2]), ("s", [2, 3, -1])], (2, 3, 3), None),
    "GATHER": ([(5, 4)], [("i", [4, 0, 2])], (3, 4), ("GatherOptions", {"axis": 0})),
    "SQUEEZE": ([(2, 1, 3)], [], (2, 3), ("SqueezeOptions", {"squeezeDims": [1]})),
    "EXPAND_DIMS": ([(2, 3)], [("a", [1])], (2, 1, 3), None),
    "SPACE_TO_BATCH_ND": ([(1, 4, 4, 2)], [("b", [2, 2]), ("p", [[0, 0], [0, 0]])],
                          (4, 2, 2, 2), None),
    "BATCH_TO_SPACE_ND": ([(4, 2, 2, 2)], [("b", [2, 2]), ("c", [[0, 0], [0, 0]])],
                          (1, 4, 4, 2), None),
    "PACK": ([(2, 3), (2, 3)], [], (2, 2, 3), ("PackOptions", {"valuesCount": 2, "axis": 1})),
}


@pytest.mark.tf
@pytest.mark.parametrize("op", sorted(MOVEMENT))
def test_data_movement_ops(op):
    shapes, consts, out, opts = MOVEMENT[op]

    def build():
        b = GraphBuilder()
        xs = [b.input(f"x{i}", s) for i, s in enumerate(shapes)]
        cs = [b.const(name, np.array(v, I32)) for name, v in consts]
        kind = options(opts[0], **opts[1]) if opts else None
        return b.build([b.op(op, xs + cs, out, options=kind)])

    check_quantized(build, shapes, ("movement", op), seeds=1)
