"""Single ops with int4/int2/uint4 and blockwise constants against TFLite, bit for bit.

Oracle: BUILTIN_REF, except the blockwise int4 FULLY_CONNECTED, which only TFLite's optimized
kernels implement (BUILTIN_WITHOUT_DEFAULT_DELEGATES; without a fused activation, which that
kernel skips — see test_lowbit_tflite.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import rng
from tflite_ref import run_tflite

import qengine
from qengine.builder import SAME, GraphBuilder, options
from qengine.errors import InvalidModelError
from qengine.ir import BlockDetails, Quantization
from qengine.lowbit import RANGES

pytestmark = pytest.mark.tf

LOW_BIT = ["int4", "int2"]


def values(r, dtype, shape, symmetric=True):
    low, high = RANGES.get(dtype, (-128, 127))
    return r.integers(low + (symmetric and dtype != "uint4"), high + 1, shape).astype(
        np.uint8 if dtype == "uint4" else np.int8)


def per_channel(r, n, axis=0):
    return Quantization(r.uniform(1e-3, 5e-2, n).astype(np.float32), np.zeros(n, np.int64), axis)


def blockwise(b, r, rows, depth, block):
    scales = b.const("scales", r.uniform(0.01, 0.1, (rows, depth // block)).astype(np.float16))
    return Quantization(np.zeros(0), np.zeros(0), details=BlockDetails(scales, None, block))


def assert_same_bits(model, inputs, resolver="ref"):
    data = model.to_bytes()
    want = run_tflite(data, inputs, resolver=resolver)
    got = qengine.Interpreter(data).run(inputs)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# -- FULLY_CONNECTED ---------------------------------------------------------------------------


def fc_model(r, w_dtype, x_dtype, units=6, depth=40, batch=3, per_tensor=False, asymmetric=False,
             act=0):
    b = GraphBuilder()
    act_q = {"int8": Quantization.per_tensor(0.05, 3), "int16": Quantization.per_tensor(0.01)}
    out_q = {"int8": Quantization.per_tensor(0.3, -5), "int16": Quantization.per_tensor(0.05)}
    x = b.input("x", (batch, depth), x_dtype, act_q.get(x_dtype))
    wq = Quantization.per_tensor(0.03) if per_tensor else per_channel(r, units)
    w = b.const("w", values(r, w_dtype, (units, depth)), w_dtype, wq)
    inputs = [x, w]
    if x_dtype == "float32":
        inputs.append(b.const("b", r.standard_normal(units).astype(np.float32)))
    else:
        bias_dtype = "int64" if x_dtype == "int16" else "int32"
        scale = np.broadcast_to(wq.scale, (units,)).astype(np.float64) * act_q[x_dtype].scale[0]
        inputs.append(b.const("b", r.integers(-500, 500, units).astype(bias_dtype), bias_dtype,
                              Quantization(scale, np.zeros(units, np.int64))))
    opts = options("FullyConnectedOptions", fusedActivationFunction=act,
                   asymmetricQuantizeInputs=asymmetric)
    y = b.op("FULLY_CONNECTED", inputs, out_shape=(batch, units),
             out_dtype="float32" if x_dtype == "float32" else x_dtype,
             out_quantization=out_q.get(x_dtype), options=opts)
    return b.build([y])


def fc_input(r, x_dtype, shape):
    if x_dtype == "float32":
        return (r.standard_normal(shape) * 2).astype(np.float32)
    info = np.iinfo(x_dtype)
    return r.integers(info.min, info.max + 1, shape).astype(x_dtype)


@pytest.mark.parametrize("w_dtype", LOW_BIT)
@pytest.mark.parametrize("x_dtype", ["int8", "int16", "float32"])
@pytest.mark.parametrize("per_tensor", [False, True], ids=["per_channel", "per_tensor"])
def test_fully_connected_low_bit_filters(w_dtype, x_dtype, per_tensor):
    r = rng("fc", w_dtype, x_dtype, per_tensor)
    model = fc_model(r, w_dtype, x_dtype, per_tensor=per_tensor, act=1)
    assert_same_bits(model, fc_input(r, x_dtype, (3, 40)))


@pytest.mark.parametrize("w_dtype", LOW_BIT)
def test_hybrid_fully_connected_asymmetric_inputs(w_dtype):
    r = rng("fc-asym", w_dtype)
    model = fc_model(r, w_dtype, "float32", asymmetric=True, depth=33)  # odd: packing tail
    assert_same_bits(model, fc_input(r, "float32", (3, 33)) + 0.7)


@pytest.mark.parametrize("shape", [(8, 64, 32, 3), (16, 128, 64, 1), (4, 32, 16, 2)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_blockwise_fully_connected_is_tflites_optimized_kernel(shape, with_bias):
    units, depth, block, batch = shape
    r = rng("fc-block", shape, with_bias)
    b = GraphBuilder()
    x = b.input("x", (batch, depth))
    w = b.const("w", values(r, "int4", (units, depth), symmetric=False), "int4",
                blockwise(b, r, units, depth, block))
    bias = b.const("b", r.standard_normal(units).astype(np.float32)) if with_bias else None
    y = b.op("FULLY_CONNECTED", [x, w, bias], out_shape=(batch, units),
             options=options("FullyConnectedOptions"))
    inputs = (r.standard_normal((batch, depth)) * 3 + 0.5).astype(np.float32)
    assert_same_bits(b.build([y]), inputs, resolver="nodelegate")


def test_blockwise_fully_connected_refuses_shapes_tflite_ignores_the_scales_for():
    r = rng("fc-block-small")
    b = GraphBuilder()
    x = b.input("x", (1, 16))
    w = b.const("w", values(r, "int4", (8, 16)), "int4", blockwise(b, r, 8, 16, 8))
    y = b.op("FULLY_CONNECTED", [x, w, None], out_shape=(1, 8),
             options=options("FullyConnectedOptions"))
    with pytest.raises(qengine.UnsupportedOpError, match="depth >= 32"):
        qengine.Interpreter(b.build([y]))


# -- CONV_2D, DEPTHWISE_CONV_2D ----------------------------------------------------------------


def conv_model(r, x_dtype, depthwise=False, per_tensor=False):
    b = GraphBuilder()
    in_q = {"int8": Quantization.per_tensor(0.05, 2), "int16": Quantization.per_tensor(0.01)}
    out_q = {"int8": Quantization.per_tensor(0.4, -3), "int16": Quantization.per_tensor(0.08)}
    x = b.input("x", (1, 7, 7, 4), x_dtype, in_q.get(x_dtype))
    out_c = 8 if depthwise else 5
    w_shape = (1, 3, 3, out_c) if depthwise else (out_c, 3, 3, 4)
    wq = Quantization.per_tensor(0.03) if per_tensor else per_channel(r, out_c,
                                                                      3 if depthwise else 0)
    w = b.const("w", values(r, "int4", w_shape), "int4", wq)
    if x_dtype == "float32":
        bias = b.const("b", r.standard_normal(out_c).astype(np.float32))
    else:
        bias_dtype = "int64" if x_dtype == "int16" else "int32"
        scale = np.broadcast_to(wq.scale, (out_c,)).astype(np.float64) * in_q[x_dtype].scale[0]
        bias = b.const("b", r.integers(-300, 300, out_c).astype(bias_dtype), bias_dtype,
                       Quantization(scale, np.zeros(out_c, np.int64)))
    common = {"padding": SAME, "strideH": 1, "strideW": 2, "fusedActivationFunction": 1}
    name = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    opts = options("DepthwiseConv2DOptions", depthMultiplier=2, **common) if depthwise \
        else options("Conv2DOptions", **common)
    y = b.op(name, [x, w, bias], out_shape=(1, 7, 4, out_c),
             out_dtype="float32" if x_dtype == "float32" else x_dtype,
             out_quantization=out_q.get(x_dtype), options=opts)
    return b.build([y])


@pytest.mark.parametrize("x_dtype", ["int8", "int16", "float32"])
@pytest.mark.parametrize("per_tensor", [False, True], ids=["per_channel", "per_tensor"])
def test_conv_2d_int4_filters(x_dtype, per_tensor):
    r = rng("conv4", x_dtype, per_tensor)
    assert_same_bits(conv_model(r, x_dtype, per_tensor=per_tensor),
                     fc_input(r, x_dtype, (1, 7, 7, 4)))


def test_depthwise_conv_2d_int4_filters():
    r = rng("dw4")
    assert_same_bits(conv_model(r, "int8", depthwise=True), fc_input(r, "int8", (1, 7, 7, 4)))


@pytest.mark.parametrize("x_dtype,kind", [("float32", "hybrid"), ("int16", "int16")])
def test_depthwise_with_int4_filter_refused_where_tflite_has_no_kernel(x_dtype, kind):
    """TFLite's hybrid depthwise is int8-only; its int16 one reads the packed bytes as int8."""
    r = rng("dw4-refused", x_dtype)
    with pytest.raises(InvalidModelError, match=f"no int4 kernel for {kind} DEPTHWISE_CONV_2D"):
        qengine.Interpreter(conv_model(r, x_dtype, depthwise=True))


# -- EMBEDDING_LOOKUP, DEQUANTIZE --------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int8", *LOW_BIT])
@pytest.mark.parametrize("out_dtype", ["float32", "float16"])
@pytest.mark.parametrize("row", [12, 7], ids=["even_rows", "odd_rows"])
@pytest.mark.parametrize("per_tensor", [False, True], ids=["per_row", "per_tensor"])
def test_embedding_lookup_quantized_rows(dtype, out_dtype, row, per_tensor):
    """Odd row lengths start mid-byte: TFLite reads from the byte's first value (reproduced)."""
    r = rng("lookup", dtype, out_dtype, row, per_tensor)
    b = GraphBuilder()
    ids = b.input("ids", (5,), "int32")
    q = Quantization.per_tensor(0.04) if per_tensor else per_channel(r, 9)
    table = b.const("table", values(r, dtype, (9, row)), dtype, q)
    y = b.op("EMBEDDING_LOOKUP", [ids, table], out_shape=(5, row), out_dtype=out_dtype)
    assert_same_bits(b.build([y]), np.array([3, 0, 8, 3, 5], np.int32))


@pytest.mark.parametrize("dtype", LOW_BIT)
@pytest.mark.parametrize("out_dtype", ["float32", "float16"])
def test_embedding_lookup_blockwise(dtype, out_dtype):
    r = rng("lookup-block", dtype, out_dtype)
    b = GraphBuilder()
    ids = b.input("ids", (4,), "int32")
    table = b.const("table", values(r, dtype, (6, 32), symmetric=False), dtype,
                    blockwise(b, r, 6, 32, 8))
    y = b.op("EMBEDDING_LOOKUP", [ids, table], out_shape=(4, 32), out_dtype=out_dtype)
    assert_same_bits(b.build([y]), np.array([5, 0, 2, 5], np.int32))


@pytest.mark.parametrize("dtype", ["int4", "int2", "uint4"])
@pytest.mark.parametrize("per_channel_q", [False, True], ids=["per_tensor", "per_channel"])
def test_dequantize_low_bit(dtype, per_channel_q):
    r = rng("deq", dtype, per_channel_q)
    b = GraphBuilder()
    x = b.input("x", (5, 3))
    zp = 8 if dtype == "uint4" else 0
    q = Quantization(r.uniform(0.01, 0.1, 5).astype(np.float32), np.full(5, zp), 0) \
        if per_channel_q else Quantization.per_tensor(0.07, zp)
    w = b.const("w", values(r, dtype, (5, 3), symmetric=False), dtype, q)
    wf = b.op("DEQUANTIZE", [w], out_shape=(5, 3), out_dtype="float32")
    y = b.op("ADD", [x, wf], out_shape=(5, 3), options=options("AddOptions"))
    assert_same_bits(b.build([y]), np.zeros((5, 3), np.float32))  # x + 0 is the weights


# -- hybrid TRANSPOSE_CONV ---------------------------------------------------------------------


@pytest.mark.parametrize("per_tensor", [False, True], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("stride,padding", [((2, 2), SAME), ((1, 2), 1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_hybrid_transpose_conv(per_tensor, stride, padding, with_bias):
    """Float input, int8 filter: TFLite's EvalHybrid, bit for bit."""
    r = rng("tconv-hybrid", per_tensor, stride, padding, with_bias)
    b = GraphBuilder()
    in_h, in_w, k = 4, 5, 3
    out_h = in_h * stride[0] if padding == SAME else (in_h - 1) * stride[0] + k
    out_w = in_w * stride[1] if padding == SAME else (in_w - 1) * stride[1] + k
    shape = b.const("shape", np.array([2, out_h, out_w, 6], np.int32))
    q = Quantization.per_tensor(0.02) if per_tensor else per_channel(r, 6)
    w = b.const("w", values(r, "int8", (6, k, k, 3)), "int8", q)
    x = b.input("x", (2, in_h, in_w, 3))
    inputs = [shape, w, x]
    if with_bias:
        inputs.append(b.const("b", r.standard_normal(6).astype(np.float32)))
    y = b.op("TRANSPOSE_CONV", inputs, out_shape=(2, out_h, out_w, 6), out_dtype="float32",
             options=options("TransposeConvOptions", padding=padding, strideH=stride[0],
                             strideW=stride[1], fusedActivationFunction=1))
    assert_same_bits(b.build([y]), (r.standard_normal((2, in_h, in_w, 3)) + 0.3).astype(
        np.float32))
