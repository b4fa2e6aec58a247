"""Quantized NN ops (qengine.ops.nn_int) against TFLite's reference kernels, bit for bit:
int8 pools, SOFTMAX, RESIZE_BILINEAR (int8, int16), BATCH_MATMUL and TRANSPOSE_CONV, on
hand-built models with extreme parameters and on models quantized by qengine."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import check_against_tflite, rng

import qengine
from qengine.builder import ACTIVATIONS, SAME, VALID, GraphBuilder, options
from qengine.errors import InvalidModelError, UnsupportedOpError
from qengine.ir import Quantization


def q(scale, zero_point=0):
    return Quantization.per_tensor(scale, zero_point)


def random_q(r):
    return q(float(np.exp(r.uniform(np.log(1e-3), np.log(0.5)))), int(r.integers(-128, 128)))


def int8s(r, shape):
    return r.integers(-128, 128, size=shape).astype(np.int8)


def check(model, inputs):
    check_against_tflite(model, inputs)


def refused(model):
    with pytest.raises((InvalidModelError, UnsupportedOpError)) as info:
        qengine.Interpreter(model.to_bytes())
    return info.type


# -- pooling ----------------------------------------------------------------------------------

POOLS = [  # (input shape, filter h, w, stride h, w, padding)
    ((1, 8, 8, 3), 2, 2, 2, 2, VALID), ((2, 7, 9, 5), 3, 3, 2, 2, SAME),
    ((1, 5, 6, 4), 3, 2, 1, 1, SAME), ((1, 10, 4, 2), 4, 1, 3, 1, SAME),
    ((3, 6, 6, 1), 6, 6, 1, 1, VALID), ((1, 9, 9, 8), 5, 5, 3, 2, SAME)]


@pytest.mark.tf
@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
def test_pools(op, activation):
    for i, (shape, fh, fw, sh, sw, padding) in enumerate(POOLS):
        r = rng(op, activation, i)
        in_q = random_q(r)
        out_q = in_q if i % 2 else random_q(r)  # TFLite clamps with the output's parameters
        b = GraphBuilder()
        x = b.input("x", shape, "int8", in_q)
        opts = options("Pool2DOptions", padding=padding, strideH=sh, strideW=sw, filterHeight=fh,
                       filterWidth=fw, fusedActivationFunction=ACTIVATIONS[activation])
        out = b.op(op, [x], None, "int8", options=opts, out_quantization=out_q, version=2)
        check(b.build(outputs=[out]), [int8s(r, shape)])


# -- softmax ----------------------------------------------------------------------------------


def softmax_model(shape, in_q, beta=1.0, out_q=None):
    b = GraphBuilder()
    x = b.input("x", shape, "int8", in_q)
    out = b.op("SOFTMAX", [x], shape, "int8", options=options("SoftmaxOptions", beta=beta),
               out_quantization=out_q or q(1 / 256, -128), version=2)
    return b.build(outputs=[out])


@pytest.mark.tf
@pytest.mark.parametrize("shape", [(10,), (3, 17), (2, 3, 256), (1, 2, 2, 2, 5)])
@pytest.mark.parametrize("scale", [1e-6, 0.003, 0.0625, 0.3, 4.0])
@pytest.mark.parametrize("beta", [1.0, 0.25, 3.5])
def test_softmax(shape, scale, beta):
    r = rng("softmax", shape, scale, beta)
    model = softmax_model(shape, q(scale, int(r.integers(-128, 128))), beta)
    x = int8s(r, shape)
    x.reshape(-1, shape[-1])[0] = 5  # a row of equal values
    check(model, [x])


def test_softmax_refusals():
    # output parameters other than (1/256, -128)
    assert refused(softmax_model((4,), q(0.1), out_q=q(1 / 256, 0))) is UnsupportedOpError
    assert refused(softmax_model((4,), q(0.1), out_q=q(1 / 128, -128))) is UnsupportedOpError
    # beta * scale * 2^26 <= 1: TFLite's reference kernel aborts in PreprocessSoftmaxScaling,
    # its default interpreter runs the optimized kernel; so does qengine, with a note (issue
    # #12 item 6; equality with TFLite in tests/test_softmax_fallback.py)
    for model in (softmax_model((4,), q(1e-9)), softmax_model((4,), q(0.1), beta=0.0)):
        interpreter = qengine.Interpreter(model)
        assert len(interpreter.notes) == 1 and "SOFTMAX" in interpreter.notes[0]


# -- resize bilinear --------------------------------------------------------------------------

RESIZES = [((1, 4, 4, 3), (8, 8)), ((2, 5, 3, 2), (3, 7)), ((1, 3, 3, 1), (1, 1)),
           ((1, 6, 8, 4), (4, 5)), ((1, 1, 1, 2), (3, 2))]


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["int8", "int16"])
@pytest.mark.parametrize("corners", [(False, False), (True, False), (False, True)])
def test_resize_bilinear(dtype, corners):
    for i, (shape, size) in enumerate(RESIZES):
        r = rng("resize", dtype, corners, i)
        b = GraphBuilder()
        quant = q(0.05, 0) if dtype == "int16" else random_q(r)
        x = b.input("x", shape, dtype, quant)
        s = b.const("size", np.array(size, np.int32))
        opts = options("ResizeBilinearOptions", alignCorners=corners[0],
                       halfPixelCenters=corners[1])
        out = b.op("RESIZE_BILINEAR", [x, s], (shape[0], *size, shape[3]), dtype, options=opts,
                   out_quantization=quant, version=3 if corners[1] else 2)
        info = np.iinfo(dtype)
        check(b.build(outputs=[out]),
              [r.integers(info.min, info.max + 1, size=shape).astype(dtype)])


# -- batch matmul -----------------------------------------------------------------------------

MATMULS = [((3, 4), (4, 5), False, False), ((2, 3, 4), (2, 4, 5), False, False),
           ((2, 4, 3), (5, 4), True, True), ((1, 3, 2, 8), (2, 1, 8, 6), False, False),
           ((2, 1, 1, 5, 3), (3, 6, 3), False, True), ((4, 7), (2, 4, 7), True, False)]


def matmul_model(a_shape, b_shape, adj_x, adj_y, quants, out_shape):
    b = GraphBuilder()
    x = b.input("x", a_shape, "int8", quants[0])
    y = b.input("y", b_shape, "int8", quants[1])
    out = b.op("BATCH_MATMUL", [x, y], out_shape, "int8", out_quantization=quants[2],
               options=options("BatchMatMulOptions", adjX=adj_x, adjY=adj_y), version=2)
    return b.build(outputs=[out])


@pytest.mark.tf
@pytest.mark.parametrize("case", range(len(MATMULS)))
@pytest.mark.parametrize("seed", range(3))
def test_batch_matmul(case, seed):
    a_shape, b_shape, adj_x, adj_y = MATMULS[case]
    r = rng("matmul", case, seed)
    m = a_shape[-1] if adj_x else a_shape[-2]
    n = b_shape[-2] if adj_y else b_shape[-1]
    out_shape = np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) + (m, n)
    quants = [random_q(r), random_q(r), q(float(r.uniform(0.001, 2.0)), int(r.integers(-128, 128)))]
    model = matmul_model(a_shape, b_shape, adj_x, adj_y, quants, out_shape)
    check(model, [int8s(r, a_shape), int8s(r, b_shape)])


@pytest.mark.tf
def test_batch_matmul_extreme_params():
    shape = (2, 16, 16)
    for quants in [(q(0.5, -128), q(0.5, 127), q(1e-3, 0)),  # saturating, multiplier > 1
                   (q(1 / 64, 0), q(1 / 32, 0), q(1 / 4, -1)),  # exact ties
                   (q(1e-4, 5), q(2e-4, -5), q(3.0, 127))]:  # tiny multiplier
        model = matmul_model(shape, shape, False, False, quants, shape)
        r = rng("matmul extreme", repr(quants))
        check(model, [int8s(r, shape), int8s(r, shape)])


def test_batch_matmul_hybrid_is_unsupported():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    y = b.const("y", np.ones((3, 4), np.int8), quantization=q(0.1))
    out = b.op("BATCH_MATMUL", [x, y], (2, 4), "float32")
    assert refused(b.build(outputs=[out])) is UnsupportedOpError


# -- transpose conv ---------------------------------------------------------------------------

TRANSPOSE_CONVS = [  # (input shape, filter (O, KH, KW), stride, padding, output h, w)
    ((1, 4, 4, 3), (5, 3, 3), (2, 2), SAME, 8, 8), ((2, 3, 5, 2), (4, 2, 3), (1, 2), VALID, 4, 11),
    ((1, 5, 5, 4), (3, 4, 4), (3, 3), SAME, 15, 15), ((1, 2, 3, 1), (2, 1, 1), (1, 1), VALID, 2, 3),
    ((1, 3, 3, 6), (8, 3, 3), (2, 1), SAME, 5, 3)]


def transpose_conv_model(r, case, per_channel, bias, activation="NONE", in_q=None, out_q=None):
    shape, (o, kh, kw), (sh, sw), padding, oh, ow = TRANSPOSE_CONVS[case]
    in_q = in_q or random_q(r)
    if per_channel:
        scales = np.exp(r.uniform(np.log(1e-3), np.log(0.05), size=o)).astype(np.float32)
        w_q = Quantization(scales, np.zeros(o, np.int64), 0)
    else:
        scales = np.float32([r.uniform(1e-3, 0.05)])
        w_q = q(float(scales[0]))
    b = GraphBuilder()
    out_shape = b.const("output_shape", np.array([shape[0], oh, ow, o], np.int32))
    w = b.const("w", r.integers(-127, 128, size=(o, kh, kw, shape[3])).astype(np.int8),
                quantization=w_q)
    x = b.input("x", shape, "int8", in_q)
    inputs = [out_shape, w, x]
    if bias:
        bias_scale = float(in_q.scale[0]) * scales.astype(np.float64)
        inputs.append(b.const("bias", r.integers(-3000, 3000, size=o).astype(np.int32),
                              quantization=Quantization(bias_scale, np.zeros(scales.size,
                                                                             np.int64), 0)))
    opts = options("TransposeConvOptions", padding=padding, strideH=sh, strideW=sw,
                   fusedActivationFunction=ACTIVATIONS[activation])
    out = b.op("TRANSPOSE_CONV", inputs, (shape[0], oh, ow, o), "int8", options=opts,
               out_quantization=out_q or random_q(r), version=3)
    return b.build(outputs=[out]), shape


@pytest.mark.tf
@pytest.mark.parametrize("case", range(len(TRANSPOSE_CONVS)))
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_transpose_conv(case, per_channel, bias):
    r = rng("transpose", case, per_channel, bias)
    model, shape = transpose_conv_model(r, case, per_channel, bias)
    check(model, [int8s(r, shape)])


@pytest.mark.tf
@pytest.mark.parametrize("activation", ["RELU", "RELU6", "RELU_N1_TO_1"])
def test_transpose_conv_fused_activation(activation):
    r = rng("transpose act", activation)
    model, shape = transpose_conv_model(r, 0, True, True, activation, q(0.05, 3), q(0.02, -10))
    check(model, [int8s(r, shape)])


@pytest.mark.tf
def test_transpose_conv_extreme_params():
    r = rng("transpose extreme")
    for in_q, out_q in [(q(0.5, -128), q(1e-3, 127)), (q(1e-3, 127), q(5.0, -128))]:
        model, shape = transpose_conv_model(r, 2, True, True, "NONE", in_q, out_q)
        check(model, [int8s(r, shape)])


def test_transpose_conv_scale_count_must_fit():
    r = rng("transpose bad")
    model, _ = transpose_conv_model(r, 0, True, False)
    w = next(t for t in model.subgraphs[0].tensors if t.name == "w")
    w.quantization = Quantization(np.full(3, 0.01, np.float32), np.zeros(3, np.int64), 0)
    assert refused(model) is InvalidModelError


# -- models quantized by qengine ---------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX", "L2_NORMALIZATION",
                                "RESIZE_BILINEAR",
                                "BATCH_MATMUL", "TRANSPOSE_CONV"])
def test_models_quantized_by_qengine(op):
    shape = (1, 6, 6, 4)
    r = rng("quantized", op)
    b = GraphBuilder()
    x = b.input("x", shape)
    if op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        opts = options("Pool2DOptions", padding=SAME, strideH=2, strideW=2, filterHeight=3,
                       filterWidth=3)
        out = b.op(op, [x], (1, 3, 3, 4), options=opts)
    elif op == "SOFTMAX":
        out = b.op(op, [x], shape, options=options("SoftmaxOptions", beta=1.0))
    elif op == "L2_NORMALIZATION":
        out = b.op(op, [x], shape, options=options("L2NormOptions"))
    elif op == "RESIZE_BILINEAR":
        out = b.op(op, [x, b.const("size", np.array([9, 5], np.int32))], (1, 9, 5, 4),
                   options=options("ResizeBilinearOptions"))
    elif op == "BATCH_MATMUL":
        y = b.const("y", r.normal(size=(4, 7)).astype(np.float32))
        out = b.op(op, [x, y], (1, 6, 6, 7), options=options("BatchMatMulOptions"))
    else:
        w = b.const("w", r.normal(size=(3, 3, 3, 4)).astype(np.float32))
        bias = b.const("bias", r.normal(size=3).astype(np.float32))
        out = b.op(op, [b.const("output_shape", np.array([1, 12, 12, 3], np.int32)), w, x, bias],
                   (1, 12, 12, 3), "float32",
                   options=options("TransposeConvOptions", padding=SAME, strideH=2, strideW=2))
    model = qengine.quantize(b.build(outputs=[out]), mode="int8",
                             calibration=r.normal(size=(16, *shape)).astype(np.float32) * 2,
                             quiet=True)
    for _ in range(3):
        check(model, [int8s(r, shape)])


# -- L2 normalization -------------------------------------------------------------------------


def l2_model(shape, in_q, out_q=None):
    b = GraphBuilder()
    x = b.input("x", shape, "int8", in_q)
    out = b.op("L2_NORMALIZATION", [x], shape, "int8", out_quantization=out_q or q(1 / 128, 0),
               options=options("L2NormOptions"), version=2)
    return b.build(outputs=[out])


@pytest.mark.tf
@pytest.mark.parametrize("shape", [(5,), (3, 64), (2, 3, 4, 17), (4, 1000)])
@pytest.mark.parametrize("zero_point", [-128, -7, 0, 127])
def test_l2_normalization(shape, zero_point):
    r = rng("l2", shape, zero_point)
    x = int8s(r, shape)
    rows = x.reshape(-1, shape[-1])
    rows[0] = zero_point  # an all-zero row (sum 0)
    if rows.shape[0] > 2:
        rows[1] = zero_point
        rows[1, 0] = zero_point + (1 if zero_point < 127 else -1)  # sum 1
        rows[2] = -128 if zero_point > 0 else 127  # the largest sums
    check(l2_model(shape, q(0.05, zero_point)), [x])


def test_l2_normalization_refusals():
    assert refused(l2_model((4,), q(0.1), q(1 / 256, 0))) is UnsupportedOpError
    assert refused(l2_model((4,), q(0.1), q(1 / 128, 3))) is UnsupportedOpError
    assert refused(l2_model((1, 1, 1, 2, 4), q(0.1))) is UnsupportedOpError
