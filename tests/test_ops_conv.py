"""Float CONV_2D and DEPTHWISE_CONV_2D against TFLite, over strides, paddings, dilations,
groups, depth multipliers, fused activations and batch sizes. Tolerance: 1e-5 of the output's
range (float32 summation order differs)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from op_harness import check_against_tflite, model_bytes
from tflite_ref import run_tflite

import qengine
from qengine.builder import SAME, VALID, GraphBuilder, options

pytestmark = pytest.mark.tf
RNG_SEED = 1234


def conv_model(kind, x_shape, w_shape, padding, stride, dilation, activation, bias=True,
               version=1):
    rng = np.random.default_rng(RNG_SEED)
    b = GraphBuilder()
    x = b.input("x", x_shape)
    w = b.const("w", rng.standard_normal(w_shape).astype(np.float32))
    out_c = w_shape[0] if kind == "CONV_2D" else w_shape[3]
    inputs = [x, w] + ([b.const("b", rng.standard_normal(out_c).astype(np.float32))] if bias
                       else [])  # TFLite wants a missing bias left out, not marked -1
    fields = dict(padding=padding, strideW=stride[1], strideH=stride[0],
                  dilationWFactor=dilation[1], dilationHFactor=dilation[0],
                  fusedActivationFunction=activation)
    if kind == "DEPTHWISE_CONV_2D":
        fields["depthMultiplier"] = out_c // x_shape[3]
        opts = options("DepthwiseConv2DOptions", **fields)
    else:
        opts = options("Conv2DOptions", **fields)
    y = b.op(kind, inputs, None, "float32", options=opts, version=version)
    return b.build([y])


GRID = list(itertools.product([SAME, VALID], [(1, 1), (2, 2), (2, 1)], [(1, 1), (2, 2)],
                              [0, 1, 3]))


@pytest.mark.parametrize("padding, stride, dilation, activation", GRID)
def test_conv_2d(padding, stride, dilation, activation):
    model = conv_model("CONV_2D", (2, 11, 9, 6), (5, 3, 3, 6), padding, stride, dilation,
                       activation)
    x = np.random.default_rng(0).standard_normal((2, 11, 9, 6)).astype(np.float32)
    check_against_tflite(model, x)


@pytest.mark.parametrize("shape, w_shape", [((1, 8, 8, 16), (32, 1, 1, 16)),
                                            ((3, 5, 7, 4), (4, 1, 1, 4)),
                                            ((1, 15, 15, 3), (8, 5, 5, 3))])
def test_conv_pointwise_and_large_kernels(shape, w_shape):
    model = conv_model("CONV_2D", shape, w_shape, SAME, (1, 1), (1, 1), 0)
    check_against_tflite(model, np.random.default_rng(1).standard_normal(shape, np.float32))


@pytest.mark.parametrize("groups", [2, 3])
def test_grouped_conv(groups):
    model = conv_model("CONV_2D", (1, 9, 9, 6), (6, 3, 3, 6 // groups), SAME, (1, 1), (1, 1), 1,
                       version=6)
    check_against_tflite(model, np.random.default_rng(2).standard_normal((1, 9, 9, 6),
                                                                          np.float32))


def test_conv_without_bias_is_refused_like_tflite():
    model = conv_model("CONV_2D", (1, 6, 6, 2), (3, 3, 3, 2), VALID, (1, 1), (1, 1), 0,
                       bias=False)
    with pytest.raises(qengine.InvalidModelError, match="requires one"):
        qengine.Interpreter(model)


@pytest.mark.parametrize("padding, stride, dilation, activation", GRID)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise(padding, stride, dilation, activation, multiplier):
    model = conv_model("DEPTHWISE_CONV_2D", (2, 10, 9, 4), (1, 3, 3, 4 * multiplier), padding,
                       stride, dilation, activation, version=2 if dilation != (1, 1) else 1)
    x = np.random.default_rng(4).standard_normal((2, 10, 9, 4)).astype(np.float32)
    check_against_tflite(model, x)


def test_depthwise_without_bias_and_large_kernel():
    model = conv_model("DEPTHWISE_CONV_2D", (1, 12, 12, 8), (1, 5, 5, 8), SAME, (2, 2), (1, 1),
                       0, bias=False)
    check_against_tflite(model, np.random.default_rng(5).standard_normal((1, 12, 12, 8),
                                                                          np.float32))


@pytest.mark.parametrize("w_shape, message", [
    ((5, 3, 3, 4), "do not split into groups"),   # 6 input channels, filters of 4
    ((5, 0, 3, 6), "is empty"),
])
def test_bad_conv_models_are_refused_at_prepare(w_shape, message):
    b = GraphBuilder()
    x = b.input("x", (1, 4, 4, 6))
    w = b.const("w", np.ones(w_shape, np.float32))
    bias = b.const("b", np.zeros(w_shape[0], np.float32))
    y = b.op("CONV_2D", [x, w, bias], None, "float32",
             options=options("Conv2DOptions", padding=VALID, strideW=1, strideH=1))
    with pytest.raises(qengine.InvalidModelError):
        qengine.Interpreter(b.build([y]))


def test_zero_stride_is_refused():
    b = GraphBuilder()
    x = b.input("x", (1, 4, 4, 2))
    w = b.const("w", np.ones((1, 3, 3, 2), np.float32))
    y = b.op("DEPTHWISE_CONV_2D", [x, w, None], None, "float32",
             options=options("DepthwiseConv2DOptions", padding=SAME, strideW=0, strideH=1))
    with pytest.raises(qengine.InvalidModelError, match="stride"):
        qengine.Interpreter(b.build([y]))


@pytest.mark.parametrize("kind, x_shape, w_shape", [
    ("CONV_2D", (2, 11, 9, 6), (5, 3, 3, 6)),
    ("CONV_2D", (1, 13, 17, 19), (37, 3, 5, 19)),
    ("CONV_2D", (1, 13, 17, 8), (1, 3, 3, 8)),
    ("CONV_2D", (1, 5, 131, 8), (1, 3, 3, 8)),  # rows of 128+ pixels: 8-vector row tiles
    ("CONV_2D", (1, 11, 40, 3), (24, 5, 5, 3)),  # a first layer: 24-channel row tiles
    ("CONV_2D", (1, 9, 36, 3), (32, 3, 3, 3)),  # a first layer: 2 groups of 16 channels
    ("DEPTHWISE_CONV_2D", (2, 11, 9, 12), (1, 3, 3, 12)),
    ("DEPTHWISE_CONV_2D", (1, 14, 15, 21), (1, 5, 5, 21)),
    ("DEPTHWISE_CONV_2D", (1, 9, 8, 5), (1, 3, 3, 15)),  # depth multiplier 3
    ("DEPTHWISE_CONV_2D", (1, 7, 6, 3), (1, 3, 3, 3)),  # padded to 8 channels
])
def test_float_conv_is_bit_identical_to_reference_kernels(kind, x_shape, w_shape):
    """kernels/float_gemm.py sums in reference_ops' order with float32 products (no FMA, as
    the ai-edge-litert wheel is built), so outputs equal TFLite's reference kernels exactly."""
    x = np.random.default_rng(3).standard_normal(x_shape).astype(np.float32)
    for padding, stride, dilation, activation in GRID:
        data = model_bytes(conv_model(kind, x_shape, w_shape, padding, stride, dilation,
                                      activation))
        want = run_tflite(data, {"x": x})
        got = qengine.Interpreter(data).run({"x": x})
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], f"{padding} {stride} "
                                                                 f"{dilation} {activation}")


@pytest.mark.parametrize("activation", [0, 1, 3])
@pytest.mark.parametrize("channels", [3, 8, 24])
@pytest.mark.parametrize("threads", [1, 2])
def test_depthwise_1x1_is_exact(activation, channels, threads, monkeypatch):
    """A 1x1 depthwise (stride 1, no padding) runs as a flat per-channel multiply-add
    (float_conv.pointwise_depthwise_f32, split between threads from the smallest size here):
    bit for bit TFLite's reference kernel, whose sum starts at 0.0 (a -0.0 product becomes
    +0.0 before the bias), with zero and -0.0 weights and biases, infinities and NaN."""
    from qengine.kernels import threads as pool

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 1)
    rng = np.random.default_rng(channels)
    b = GraphBuilder()
    x = b.input("x", (2, 9, 7, channels))
    w = rng.standard_normal((1, 1, 1, channels)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    w.reshape(-1)[:3], bias[:3] = [0.0, -0.0, -1.0][:channels], [-0.0, 0.0, -0.0][:channels]
    opts = options("DepthwiseConv2DOptions", padding=SAME, strideW=1, strideH=1,
                   depthMultiplier=1, fusedActivationFunction=activation)
    y = b.op("DEPTHWISE_CONV_2D", [x, b.const("w", w), b.const("b", bias)], None, "float32",
             options=opts)
    model = b.build([y])
    values = rng.standard_normal((2, 9, 7, channels)).astype(np.float32) * 4
    flat = values.reshape(-1)
    flat[::5], flat[1::11], flat[2::13], flat[3::17] = -0.0, np.inf, -np.inf, np.nan
    want = run_tflite(model_bytes(model), [values], "ref")[y.name]
    got = qengine.Interpreter(model, num_threads=threads).run([values])[y.name]
    nan = np.isnan(want)
    assert nan.any()
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.int32), want[~nan].view(np.int32))
