"""16x8 ops beyond the first set (issue #7): TRANSPOSE_CONV, BATCH_MATMUL, RELU, RELU6,
LEAKY_RELU, PRELU, PADV2, MIRROR_PAD, TILE, BROADCAST_TO, ABS, EXP, LOG, RSQRT and GELU,
against TFLite's BUILTIN_REF bit for bit.

(a) single-op float models quantized by qengine to 16x8, run on seeded random int16 inputs
over the full range, over grids of the ops' options; (b) the same ops in 16x8 models made by
TensorFlow's own converter (EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8);
(c) int16 models built by hand for parameters the quantizer does not produce.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import check_against_tflite
from test_int16x8 import ACTS, check_quantized, int16_values, rng, single, weights
from tflite_ref import convert_tf_function, run_tflite

import qengine
from qengine.builder import SAME, VALID, GraphBuilder, options
from qengine.errors import UnsupportedOpError
from qengine.ir import Quantization

pytestmark = pytest.mark.tf


def _op(model, op_type):
    return next(op for op in model.main.operators if op.type == op_type)


# -- TRANSPOSE_CONV ------------------------------------------------------------------------------


@pytest.mark.parametrize("padding, stride, kernel, bias, act", [
    (SAME, (2, 2), (3, 3), True, "NONE"), (VALID, (2, 2), (3, 3), True, "NONE"),
    (SAME, (1, 1), (2, 3), False, "NONE"), (VALID, (1, 2), (3, 2), True, "NONE"),
    (SAME, (3, 2), (4, 4), True, "RELU"), (SAME, (2, 2), (3, 3), False, "RELU6")])
def test_transpose_conv(padding, stride, kernel, bias, act):
    key = ("tconv", padding, stride, kernel, bias, act)
    r = rng(*key)
    in_shape, in_c, out_c = (2, 4, 5, 3), 3, 4
    grow = (lambda n, s, k: n * s) if padding == SAME else (lambda n, s, k: (n - 1) * s + k)
    out_shape = (2, grow(4, stride[0], kernel[0]), grow(5, stride[1], kernel[1]), out_c)
    opts = options("TransposeConvOptions", padding=padding, strideH=stride[0],
                   strideW=stride[1], fusedActivationFunction=ACTS[act])
    consts = [("w", weights(r, (out_c,) + kernel + (in_c,)))]
    consts += [("b", r.normal(size=out_c).astype(np.float32))] if bias else []

    def build():
        b = GraphBuilder()
        x = b.input("x", in_shape)
        shape = b.const("output_shape", np.array(out_shape, np.int32))
        cs = [b.const(name, value) for name, value in consts]
        y = b.op("TRANSPOSE_CONV", [shape, cs[0], x] + cs[1:], out_shape, options=opts,
                 version=4 if act != "NONE" else 3)
        return b.build([y])

    q = check_quantized(build, [in_shape], key)
    op = _op(q, "TRANSPOSE_CONV")
    assert op.inputs[1].dtype == "int8" and op.outputs[0].dtype == "int16"
    assert not bias or op.inputs[3].dtype == "int64"


def test_transpose_conv_per_tensor_filter_built_by_hand():
    """One filter scale for every output channel, a tiny output scale that saturates."""
    r = rng("tconv by hand")
    b = GraphBuilder()
    x = b.input("x", (1, 3, 3, 2), "int16", Quantization.per_tensor(0.002, 0))
    w = b.const("w", r.integers(-127, 128, (3, 3, 3, 2)).astype(np.int8),
                quantization=Quantization.per_tensor(0.01, 0))
    bias = b.const("b", r.integers(-10**6, 10**6, 3).astype(np.int64),
                   quantization=Quantization.per_tensor(2e-5, 0))
    y = b.op("TRANSPOSE_CONV", [b.const("s", np.array([1, 6, 6, 3], np.int32)), w, x, bias],
             (1, 6, 6, 3), "int16", options=options("TransposeConvOptions", padding=SAME,
                                                    strideH=2, strideW=2),
             version=3, out_quantization=Quantization.per_tensor(0.003, 0))
    check_against_tflite(b.build([y]), [int16_values(r, (1, 3, 3, 2))])


def test_transpose_conv_int32_bias_refused():
    """BUILTIN_REF reads an int16 TRANSPOSE_CONV's bias as int64 even when it is int32, which
    gives garbage; qengine refuses the model at prepare time instead."""
    b = GraphBuilder()
    x = b.input("x", (1, 2, 2, 1), "int16", Quantization.per_tensor(0.01, 0))
    w = b.const("w", np.ones((1, 2, 2, 1), np.int8), quantization=Quantization.per_tensor(0.1, 0))
    bias = b.const("b", np.zeros(1, np.int32), quantization=Quantization.per_tensor(0.001, 0))
    y = b.op("TRANSPOSE_CONV", [b.const("s", np.array([1, 4, 4, 1], np.int32)), w, x, bias],
             (1, 4, 4, 1), "int16", options=options("TransposeConvOptions", padding=SAME,
                                                    strideH=2, strideW=2),
             version=3, out_quantization=Quantization.per_tensor(0.01, 0))
    with pytest.raises(UnsupportedOpError, match="int64"):
        qengine.Interpreter(b.build([y]))


# -- BATCH_MATMUL --------------------------------------------------------------------------------


@pytest.mark.parametrize("lhs, rhs, adj_x, adj_y", [
    ((2, 3, 6), (2, 6, 5), False, False), ((2, 6, 3), (6, 5), True, False),
    ((3, 6), (2, 4, 5, 6), False, True), ((1, 2, 6, 3), (3, 1, 4, 6), True, True)])
def test_batch_matmul(lhs, rhs, adj_x, adj_y):
    key = ("bmm", lhs, rhs, adj_x, adj_y)
    a = np.zeros(lhs)
    b_ = np.zeros(rhs)
    a = np.swapaxes(a, -1, -2) if adj_x else a
    b_ = np.swapaxes(b_, -1, -2) if adj_y else b_
    out = np.matmul(a, b_).shape
    opts = options("BatchMatMulOptions", adjX=adj_x, adjY=adj_y)
    q = check_quantized(single("BATCH_MATMUL", [lhs, rhs], out, options=opts), [lhs, rhs], key)
    assert {t.dtype for t in _op(q, "BATCH_MATMUL").inputs} == {"int16"}


def test_batch_matmul_constant_rhs():
    """A constant RHS becomes an int16 symmetric constant, as in the converter's models."""
    r = rng("bmm const")
    build = single("BATCH_MATMUL", [(2, 3, 8)], (2, 3, 5),
                   options=options("BatchMatMulOptions"),
                   consts=[("rhs", r.normal(size=(8, 5)).astype(np.float32))])
    q = check_quantized(build, [(2, 3, 8)], ("bmm const",))
    rhs = _op(q, "BATCH_MATMUL").inputs[1]
    assert rhs.dtype == "int16" and rhs.is_constant


@pytest.mark.parametrize("scales", [(0.01, 0.02, 0.5), (1e-3, 2e-3, 1e-4), (0.3, 0.2, 3e-3)])
def test_batch_matmul_built_by_hand(scales):
    """Multipliers above and below 1, saturating outputs."""
    r = rng("bmm by hand", scales)
    s_l, s_r, s_out = scales
    b = GraphBuilder()
    x = b.input("x", (2, 4, 9), "int16", Quantization.per_tensor(s_l, 0))
    y = b.input("y", (2, 9, 3), "int16", Quantization.per_tensor(s_r, 0))
    z = b.op("BATCH_MATMUL", [x, y], (2, 4, 3), "int16", options=options("BatchMatMulOptions"),
             version=3, out_quantization=Quantization.per_tensor(s_out, 0))
    check_against_tflite(b.build([z]), [int16_values(r, (2, 4, 9)), int16_values(r, (2, 9, 3))])


# -- RELU, RELU6, LEAKY_RELU ---------------------------------------------------------------------


@pytest.mark.parametrize("op, spread", [("RELU", 3.0), ("RELU", 0.2), ("RELU6", 3.0),
                                        ("RELU6", 20.0), ("RELU6", 0.5)])
def test_relu(op, spread):
    q = check_quantized(single(op, [(4, 50)], (4, 50)), [(4, 50)], ("relu", op, spread),
                        spread=spread)
    assert _op(q, op).opcode.version == 3


@pytest.mark.parametrize("alpha, spread", [(0.2, 3.0), (0.01, 1.0), (-0.5, 2.0), (1.7, 4.0)])
def test_leaky_relu(alpha, spread):
    build = single("LEAKY_RELU", [(4, 50)], (4, 50),
                   options=options("LeakyReluOptions", alpha=alpha))
    check_quantized(build, [(4, 50)], ("leaky", alpha, spread), spread=spread)


ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16).reshape(4, -1)


@pytest.mark.parametrize("op", ["RELU", "RELU6", "LEAKY_RELU"])
@pytest.mark.parametrize("s_in, s_out", [(1e-3, 1e-3), (2e-3, 3e-4), (4e-4, 7e-3),
                                         (2.0 ** -12, 2.0 ** -13)])
def test_relu_family_every_input_built_by_hand(op, s_in, s_out):
    b = GraphBuilder()
    x = b.input("x", ALL_INT16.shape, "int16", Quantization.per_tensor(s_in, 0))
    opts = options("LeakyReluOptions", alpha=0.3) if op == "LEAKY_RELU" else None
    y = b.op(op, [x], ALL_INT16.shape, "int16", options=opts,
             version=2 if op == "LEAKY_RELU" else 3,
             out_quantization=Quantization.per_tensor(s_out, 0))
    check_against_tflite(b.build([y]), [ALL_INT16])


def test_relu_n1_to_1_stays_float():
    """TFLite has no int16 RELU_N1_TO_1 kernel: the 16x8 pass leaves it float, and an int16
    one is refused at prepare time."""
    q = qengine.quantize(single("RELU_N1_TO_1", [(2, 8)], (2, 8))(), "int16x8",
                         np.ones((4, 2, 8), np.float32), quiet=True)
    assert _op(q, "RELU_N1_TO_1").outputs[0].dtype == "float32"
    b = GraphBuilder()
    x = b.input("x", (2, 8), "int16", Quantization.per_tensor(0.01, 0))
    y = b.op("RELU_N1_TO_1", [x], (2, 8), "int16",
             out_quantization=Quantization.per_tensor(0.01, 0))
    with pytest.raises(UnsupportedOpError):
        qengine.Interpreter(b.build([y]))


# -- PADV2, MIRROR_PAD ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1.5, -2.25, 0.0, 1e4])
def test_padv2(value):
    pads = np.array([[0, 1], [2, 0], [1, 3]], np.int32)
    build = single("PADV2", [(2, 3, 4)], (3, 5, 8),
                   consts=[("pads", pads), ("value", np.array([value], np.float32))])
    q = check_quantized(build, [(2, 3, 4)], ("padv2", value))
    op = _op(q, "PADV2")
    assert op.inputs[2].dtype == "int16" and op.opcode.version == 3
    assert op.inputs[2].quantization.scale[0] == op.inputs[0].quantization.scale[0]


@pytest.mark.parametrize("mode", [0, 1])
def test_mirror_pad(mode):
    pads = np.array([[1, 1], [0, 2]], np.int32)
    build = single("MIRROR_PAD", [(3, 4)], (5, 6), consts=[("pads", pads)],
                   options=options("MirrorPadOptions", mode=mode))
    check_quantized(build, [(3, 4)], ("mirror", mode))


# -- the converter's own 16x8 models -------------------------------------------------------------


def _converter_cases():
    import tensorflow as tf

    r = np.random.default_rng(7)
    filters = tf.constant(r.normal(size=(3, 3, 5, 4)).astype(np.float32) * 0.3)
    matrix = tf.constant(r.normal(size=(6, 7)).astype(np.float32))
    return {
        "transpose_conv": (lambda x: tf.nn.conv2d_transpose(x, filters, [1, 8, 8, 5], 2, "SAME"),
                           [(1, 4, 4, 4)]),
        "transpose_conv_valid": (
            lambda x: tf.nn.conv2d_transpose(x, filters, [1, 9, 9, 5], 2, "VALID"),
            [(1, 4, 4, 4)]),
        "batch_matmul": (lambda x, y: tf.matmul(x, y), [(1, 3, 6), (1, 6, 5)]),
        "batch_matmul_adjoint": (lambda x, y: tf.matmul(x, y, adjoint_b=True),
                                 [(1, 3, 6), (1, 5, 6)]),
        "batch_matmul_constant": (lambda x: tf.matmul(x, tf.broadcast_to(matrix, (1, 6, 7))),
                                  [(1, 3, 6)]),
        "relu": (tf.nn.relu, [(1, 40)]),
        "relu6": (tf.nn.relu6, [(1, 40)]),
        "leaky_relu": (lambda x: tf.nn.leaky_relu(x, 0.2), [(1, 40)]),
        "mirror_pad": (lambda x: tf.pad(x, [[0, 0], [1, 2]], mode="SYMMETRIC"), [(1, 40)]),
        "abs": (lambda x: tf.abs(x) * 0.5, [(1, 40)]),
    }


@pytest.mark.parametrize("name", ["transpose_conv", "transpose_conv_valid", "batch_matmul",
                                  "batch_matmul_adjoint", "batch_matmul_constant", "relu",
                                  "relu6", "leaky_relu", "mirror_pad", "abs"])
def test_converter_model(name):
    import tensorflow as tf

    fn, shapes = _converter_cases()[name]
    r = rng("converter", name)
    representative = [(r.normal(size=(8,) + s[1:]) * 2).astype(np.float32) for s in shapes]
    data = convert_tf_function(fn, [tf.TensorSpec(s, tf.float32) for s in shapes], "int16x8",
                               representative)
    model = qengine.load(data)
    assert {t.dtype for op in model.main.operators for t in op.outputs} == {"int16"}
    for seed in range(3):
        inputs = [int16_values(rng("converter", name, seed), s) for s in shapes]
        want = run_tflite(data, inputs)
        got = qengine.Interpreter(data).run(inputs)
        for key in want:
            assert np.array_equal(got[key], want[key]), (name, key)


# -- TILE, BROADCAST_TO --------------------------------------------------------------------------


@pytest.mark.parametrize("op, const, out", [("TILE", [2, 1, 3], (4, 3, 12)),
                                            ("BROADCAST_TO", [3, 2, 3, 4], (3, 2, 3, 4))])
def test_tile_broadcast_to(op, const, out):
    build = single(op, [(2, 3, 4)], out, consts=[("c", np.array(const, np.int32))])
    q = check_quantized(build, [(2, 3, 4)], ("tile", op))
    assert _op(q, op).outputs[0].dtype == "int16"


# -- ABS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("s_in, s_out", [(1e-3, 1e-3), (2e-3, 3e-4), (4e-4, 7e-3),
                                         (2.0 ** -12, 2.0 ** -13)])
def test_abs_every_input_built_by_hand(s_in, s_out):
    b = GraphBuilder()
    x = b.input("x", ALL_INT16.shape, "int16", Quantization.per_tensor(s_in, 0))
    y = b.op("ABS", [x], ALL_INT16.shape, "int16", version=3,
             out_quantization=Quantization.per_tensor(s_out, 0))
    check_against_tflite(b.build([y]), [ALL_INT16])


def test_abs_quantized_by_the_pass():
    build = single("ABS", [(3, 50)], (3, 50))
    q = check_quantized(build, [(3, 50)], ("abs",))
    op = _op(q, "ABS")
    assert op.outputs[0].dtype == "int16" and op.opcode.version == 3


# -- EXP, LOG, RSQRT, GELU (513-entry interpolated tables) ---------------------------------------

NON_NEGATIVE_INT16 = np.arange(0, 32768, dtype=np.int16).reshape(4, -1)
LUT_OPS = {"EXP": None, "LOG": None, "RSQRT": None,
           "GELU": options("GeluOptions", approximate=False),
           "GELU_APPROXIMATE": options("GeluOptions", approximate=True)}


# (0.01, 1e-3) and (0.05, 0.3): expf overflows inside the input range, so EXP's table holds
# saturated, NaN-derived and wrapping anchors (LUTLookup's int16 slope wraps)
@pytest.mark.parametrize("name", list(LUT_OPS))
@pytest.mark.parametrize("s_in, s_out", [(1e-4, 1e-3), (3e-4, 2e-4), (2.0 ** -12, 2.0 ** -11),
                                         (0.01, 1e-3), (0.05, 0.3)])
def test_lut_ops_every_input_built_by_hand(name, s_in, s_out):
    op = name.split("_")[0]
    values = NON_NEGATIVE_INT16 if op == "RSQRT" else ALL_INT16  # RSQRT refuses negatives
    b = GraphBuilder()
    x = b.input("x", values.shape, "int16", Quantization.per_tensor(s_in, 0))
    y = b.op(op, [x], values.shape, "int16", options=LUT_OPS[name], version=2,
             out_quantization=Quantization.per_tensor(s_out, 0))
    check_against_tflite(b.build([y]), [values])


@pytest.mark.parametrize("name, spread", [("EXP", 1.0), ("EXP", 4.0), ("LOG", 2.0),
                                          ("GELU", 3.0), ("GELU_APPROXIMATE", 3.0)])
def test_lut_ops_quantized_by_the_pass(name, spread):
    op = name.split("_")[0]
    build = single(op, [(3, 50)], (3, 50), options=LUT_OPS[name])
    q = check_quantized(build, [(3, 50)], ("lut", name, spread), spread=spread)
    assert _op(q, op).outputs[0].dtype == "int16" and _op(q, op).opcode.version == 2


def test_rsqrt_quantized_by_the_pass():
    """RSQRT of a positive input (x^2 + 0.5 computed in float), on non-negative int16 values."""
    def build():
        b = GraphBuilder()
        x = b.input("x", (3, 50))
        y = b.op("RSQRT", [x], (3, 50))
        return b.build([y])

    r = rng("rsqrt pass")
    samples = (np.abs(r.normal(size=(8, 3, 50))) * 3 + 0.01).astype(np.float32)
    q = qengine.quantize(build(), "int16x8", samples, quiet=True)
    assert _op(q, "RSQRT").inputs[0].dtype == "int16"
    for seed in range(2):
        check_against_tflite(q, [rng("rsqrt pass", seed).integers(0, 32768, (3, 50))
                                 .astype(np.int16)])


def test_rsqrt_negative_input_refused():
    b = GraphBuilder()
    x = b.input("x", (1, 4), "int16", Quantization.per_tensor(1e-3, 0))
    y = b.op("RSQRT", [x], (1, 4), "int16", version=2,
             out_quantization=Quantization.per_tensor(1e-3, 0))
    with pytest.raises(qengine.errors.InputError, match="negative"):
        qengine.Interpreter(b.build([y])).run([np.array([[5, 0, -1, 7]], np.int16)])


# -- PRELU -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha_shape", [(3, 1), (3, 50), (1,)])
def test_prelu_quantized_by_the_pass(alpha_shape):
    r = rng("prelu", alpha_shape)
    alpha = (r.normal(size=alpha_shape) * 0.4).astype(np.float32)
    build = single("PRELU", [(2, 3, 50)], (2, 3, 50), consts=[("alpha", alpha)])
    q = check_quantized(build, [(2, 3, 50)], ("prelu", alpha_shape))
    op = _op(q, "PRELU")
    assert op.inputs[1].dtype == "int8" and op.outputs[0].dtype == "int16"


@pytest.mark.parametrize("scales", [(1e-3, 1e-2, 2e-3), (3e-4, 2e-2, 1e-4), (1e-2, 1e-3, 1e-2)])
def test_prelu_built_by_hand(scales):
    s_in, s_alpha, s_out = scales
    r = rng("prelu by hand", scales)
    b = GraphBuilder()
    x = b.input("x", (4, 3, 50), "int16", Quantization.per_tensor(s_in, 0))
    alpha = b.const("alpha", r.integers(-128, 128, (3, 1)).astype(np.int8),
                    quantization=Quantization.per_tensor(s_alpha, 5))
    y = b.op("PRELU", [x, alpha], (4, 3, 50), "int16",
             out_quantization=Quantization.per_tensor(s_out, 0))
    check_against_tflite(b.build([y]), [int16_values(r, (4, 3, 50))])


def test_prelu_int16_alpha_refused():
    """TFLite's int16 PRELU reads alpha as int8 bytes even when it is int16 (garbage), so
    qengine refuses an int16 alpha at prepare time."""
    b = GraphBuilder()
    x = b.input("x", (1, 4), "int16", Quantization.per_tensor(1e-3, 0))
    alpha = b.const("alpha", np.full((1, 4), 300, np.int16),
                    quantization=Quantization.per_tensor(1e-3, 0))
    y = b.op("PRELU", [x, alpha], (1, 4), "int16",
             out_quantization=Quantization.per_tensor(1e-3, 0))
    with pytest.raises(UnsupportedOpError, match="int8"):
        qengine.Interpreter(b.build([y]))


# -- SUM stays float ---------------------------------------------------------------------------


def test_sum_stays_float():
    """BUILTIN_REF's int16 SUM reads the input bytes as uint8 and leaves output bytes
    uninitialised (see INT16_VERSIONS), so the 16x8 pass keeps SUM in float."""
    build = single("SUM", [(2, 4, 5)], (2, 5), consts=[("axes", np.array([1], np.int32))],
                   options=options("ReducerOptions", keepDims=False))
    q = qengine.quantize(build(), "int16x8", np.ones((4, 2, 4, 5), np.float32), quiet=True)
    assert _op(q, "SUM").outputs[0].dtype == "float32"


# -- the converter's own 16x8 models for these ops -----------------------------------------------


def _lut_converter_cases():
    import tensorflow as tf

    return {
        "gelu": lambda x: tf.nn.gelu(x, approximate=False),
        "gelu_approximate": lambda x: tf.nn.gelu(x, approximate=True),
        "exp": lambda x: tf.exp(x * 0.5),
        "log": lambda x: tf.math.log(tf.abs(x) + 0.1),
    }


@pytest.mark.parametrize("name", ["gelu", "gelu_approximate", "exp", "log"])
def test_lut_converter_model(name):
    import tensorflow as tf

    fn = _lut_converter_cases()[name]
    r = rng("lut converter", name)
    representative = [(r.normal(size=(8, 40)) * 2).astype(np.float32)]
    data = convert_tf_function(fn, [tf.TensorSpec((1, 40), tf.float32)], "int16x8",
                               representative)
    model = qengine.load(data)
    assert {t.dtype for op in model.main.operators for t in op.outputs} == {"int16"}
    for seed in range(3):
        inputs = [int16_values(rng("lut converter", name, seed), (1, 40))]
        want = run_tflite(data, inputs)
        got = qengine.Interpreter(data).run(inputs)
        for key in want:
            assert np.array_equal(got[key], want[key]), (name, key)


def test_rsqrt_converter_model():
    """rsqrt(|x| + 0.1): the converter's ABS -> ADD -> RSQRT chain; ADD's output is
    non-negative, so RSQRT's input is too."""
    import tensorflow as tf

    r = rng("rsqrt converter")
    representative = [(r.normal(size=(8, 40)) * 2).astype(np.float32)]
    data = convert_tf_function(lambda x: tf.math.rsqrt(tf.abs(x) + 0.1),
                               [tf.TensorSpec((1, 40), tf.float32)], "int16x8", representative)
    for seed in range(3):
        inputs = [int16_values(rng("rsqrt converter", seed), (1, 40))]
        want = run_tflite(data, inputs)
        got = qengine.Interpreter(data).run(inputs)
        for key in want:
            assert np.array_equal(got[key], want[key]), key
