"""Int8 and hybrid CONV_2D / DEPTHWISE_CONV_2D against TFLite, plus NumPy twins of the
hybrid accumulator kernels.

Int8: exact equality with BUILTIN_REF. Hybrid (float input, int8 filter): bitwise equality with
BUILTIN_REF; with the optimized kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES) bitwise for the
per-tensor CONV_2D (one implementation serves both), a float tolerance otherwise (tests/deviations.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import check_against_tflite, non_finite_rows, rng
from qengine.kernels import hybrid
from tflite_ref import run_tflite

import qengine
from qengine.builder import ACTIVATIONS, SAME, VALID, GraphBuilder, options
from qengine.errors import InvalidModelError, UnsupportedOpError
from qengine.ir import Quantization
from qengine.quantizer import quantize

ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


def int8(r, shape, low=-128):
    return r.integers(low, 128, shape).astype(np.int8)


def per_channel(r, n, axis, low=1e-3, high=5e-2):
    return Quantization(r.uniform(low, high, n).astype(np.float32), np.zeros(n, np.int64), axis)


def assert_same_bits(model, inputs, resolver="ref", rel=None):
    """Bitwise equality with TFLite (or a float tolerance when rel is given)."""
    data = model.to_bytes()
    want = run_tflite(data, inputs, resolver=resolver)
    got = qengine.Interpreter(data).run(inputs)
    for name, value in want.items():
        if rel is None:
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        else:
            bound = rel * max(float(np.ptp(value)), 1e-2)
            assert np.abs(got[name].astype(np.float64) - value).max() <= bound


def conv_options(padding, stride, dil, act) -> dict:
    return {"padding": padding, "strideH": stride[0], "strideW": stride[1],
            "dilationHFactor": dil[0], "dilationWFactor": dil[1],
            "fusedActivationFunction": ACTIVATIONS[act]}


# -- int8 --------------------------------------------------------------------------------------


def int8_conv_model(r, x_shape, w_shape, *, depthwise=False, stride=(1, 1), dil=(1, 1),
                    padding=SAME, act="NONE", per_tensor=False, in_q=(0.05, 3),
                    out_q=(0.2, -7), bias=True, multiplier=1):
    b = GraphBuilder()
    x = b.input("x", x_shape, "int8", Quantization.per_tensor(*in_q))
    out_c = w_shape[3] if depthwise else w_shape[0]
    wq = Quantization.per_tensor(0.02) if per_tensor else per_channel(r, out_c, 3 if depthwise
                                                                     else 0)
    w = b.const("w", int8(r, w_shape, -127), "int8", wq)
    inputs = [x, w]
    if bias:
        scales = np.broadcast_to(wq.scale, (out_c,)).astype(np.float64) * in_q[0]
        inputs.append(b.const("b", r.integers(-3000, 3000, out_c).astype(np.int32), "int32",
                              Quantization(scales, np.zeros(out_c, np.int64), 0)))
    common = conv_options(padding, stride, dil, act)
    if depthwise:
        opts = options("DepthwiseConv2DOptions", depthMultiplier=multiplier, **common)
        y = b.op("DEPTHWISE_CONV_2D", inputs, options=opts, version=3,
                 out_quantization=Quantization.per_tensor(*out_q))
    else:
        y = b.op("CONV_2D", inputs, options=options("Conv2DOptions", **common), version=6,
                 out_quantization=Quantization.per_tensor(*out_q))
    return b.build([y])


CONV_CASES = [  # x shape, w shape, stride, dilation, padding
    ((2, 9, 8, 3), (5, 3, 3, 3), (1, 1), (1, 1), SAME),
    ((1, 10, 7, 4), (6, 3, 2, 4), (2, 3), (1, 1), VALID),
    ((1, 11, 11, 2), (3, 3, 3, 2), (1, 2), (2, 3), SAME),
    ((2, 6, 6, 8), (4, 1, 1, 8), (1, 1), (1, 1), VALID),
    ((1, 7, 9, 6), (6, 3, 3, 2), (2, 2), (1, 1), SAME),  # grouped: 3 groups
]


@pytest.mark.tf
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("per_tensor", [False, True])
def test_conv_int8(case, act, per_tensor):
    x_shape, w_shape, stride, dil, padding = CONV_CASES[case]
    r = rng("conv", case, act, per_tensor)
    model = int8_conv_model(r, x_shape, w_shape, stride=stride, dil=dil, padding=padding,
                            act=act, per_tensor=per_tensor)
    for _ in range(2):
        check_against_tflite(model, [int8(r, x_shape)])


@pytest.mark.tf
@pytest.mark.parametrize("in_q,out_q", [
    ((0.5, -128), (0.001, 127)),  # multipliers far above 1
    ((1e-4, 127), (30.0, -128)),  # tiny multipliers
    ((0.05, 0), (0.05, 0)),
])
def test_conv_int8_extreme_params(in_q, out_q):
    r = rng("conv-extreme", in_q, out_q)
    for depthwise in (False, True):
        w_shape = (1, 3, 3, 6) if depthwise else (6, 3, 3, 3)
        model = int8_conv_model(r, (1, 8, 8, 3), w_shape, depthwise=depthwise, in_q=in_q,
                                out_q=out_q, act="RELU6", multiplier=2)
        check_against_tflite(model, [int8(r, (1, 8, 8, 3))])


DW_CASES = [  # x shape, kernel, multiplier, stride, dilation, padding
    ((2, 8, 9, 3), (3, 3), 1, (1, 1), (1, 1), SAME),
    ((1, 9, 9, 2), (3, 2), 3, (2, 1), (1, 1), VALID),
    ((1, 12, 10, 4), (3, 3), 2, (1, 2), (2, 2), SAME),
]


@pytest.mark.tf
@pytest.mark.parametrize("case", range(len(DW_CASES)))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("per_tensor,bias", [(False, True), (True, True), (False, False)])
def test_depthwise_int8(case, act, per_tensor, bias):
    x_shape, (kh, kw), mult, stride, dil, padding = DW_CASES[case]
    r = rng("dw", case, act, per_tensor, bias)
    model = int8_conv_model(r, x_shape, (1, kh, kw, x_shape[3] * mult), depthwise=True,
                            stride=stride, dil=dil, padding=padding, act=act,
                            per_tensor=per_tensor, bias=bias, multiplier=mult)
    check_against_tflite(model, [int8(r, x_shape)])


def float_conv_model(r, depthwise=False, channels=8):
    b = GraphBuilder()
    x = b.input("x", (1, 10, 10, channels))
    if depthwise:
        w = b.const("w", r.normal(size=(1, 3, 3, channels)).astype(np.float32))
        opts = options("DepthwiseConv2DOptions", padding=SAME, strideH=1, strideW=1,
                       depthMultiplier=1, fusedActivationFunction=ACTIVATIONS["RELU6"])
        y = b.op("DEPTHWISE_CONV_2D", [x, w, b.const("b", r.normal(size=channels).astype(
            np.float32))], options=opts)
    else:
        w = b.const("w", r.normal(size=(16, 3, 3, channels)).astype(np.float32) * 0.3)
        opts = options("Conv2DOptions", padding=SAME, strideH=2, strideW=2,
                       fusedActivationFunction=ACTIVATIONS["RELU"])
        y = b.op("CONV_2D", [x, w, b.const("b", r.normal(size=16).astype(np.float32))],
                 options=opts)
    return b.build([y])


@pytest.mark.tf
@pytest.mark.parametrize("depthwise", [False, True])
def test_quantized_by_qengine(depthwise):
    r = rng("q", depthwise)
    calibration = r.normal(size=(8, 1, 10, 10, 8)).astype(np.float32)
    model = quantize(float_conv_model(r, depthwise), mode="int8", calibration=calibration,
                     quiet=True)
    for _ in range(3):
        check_against_tflite(model, [int8(r, (1, 10, 10, 8))])


def test_conv_int8_without_bias_is_refused():
    model = int8_conv_model(rng("nobias"), (1, 5, 5, 2), (3, 3, 3, 2), bias=False)
    with pytest.raises(InvalidModelError, match="bias"):
        qengine.Interpreter(model.to_bytes())


def test_bad_filter_quantization_is_refused():
    r = rng("badq")
    model = int8_conv_model(r, (1, 5, 5, 2), (3, 3, 3, 2))
    op = model.subgraphs[0].operators[0]
    op.inputs[1].quantization = per_channel(r, 2, 0)  # 2 scales for 3 output channels
    with pytest.raises(InvalidModelError, match="scales"):
        qengine.Interpreter(model.to_bytes())
    op.inputs[1].quantization = Quantization.per_tensor(0.1, 3)  # conv filters are symmetric
    with pytest.raises(InvalidModelError, match="zero point"):
        qengine.Interpreter(model.to_bytes())


# -- hybrid ------------------------------------------------------------------------------------


def hybrid_model(r, x_shape, w, scales, *, depthwise=False, bias=True, stride=(1, 1),
                 dil=(1, 1), padding=SAME, act="NONE", multiplier=1):
    b = GraphBuilder()
    x = b.input("x", x_shape)
    out_c = w.shape[3] if depthwise else w.shape[0]
    axis = 3 if depthwise else 0
    wq = Quantization(np.asarray(scales, np.float32), np.zeros(len(scales), np.int64),
                      axis if len(scales) > 1 else 0)
    inputs = [x, b.const("w", w, "int8", wq)]
    if bias:
        inputs.append(b.const("b", r.normal(size=out_c).astype(np.float32)))
    common = conv_options(padding, stride, dil, act)
    if depthwise:
        y = b.op("DEPTHWISE_CONV_2D", inputs, version=6, options=options(
            "DepthwiseConv2DOptions", depthMultiplier=multiplier, **common))
    else:
        y = b.op("CONV_2D", inputs, options=options("Conv2DOptions", **common),
                 version=5 if len(scales) > 1 else 2)
    return b.build([y])


def float_input(r, shape):
    """Random activations with an offset, so asymmetric zero points are not all 0."""
    return (r.normal(size=shape) * 2 + r.normal()).astype(np.float32)


@pytest.mark.tf
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("scales", ["per-tensor", "equal", "per-channel"])
@pytest.mark.parametrize("act", ["NONE", "RELU6"])
def test_hybrid_conv(case, scales, act):
    x_shape, w_shape, stride, dil, padding = CONV_CASES[case]
    grouped = x_shape[3] != w_shape[3]
    if grouped and scales != "per-channel":
        pytest.skip("TFLite runs grouped hybrid conv only with differing scales")
    r = rng("hconv", case, scales, act)
    out_c = w_shape[0]
    s = {"per-tensor": [0.013], "equal": [0.013] * out_c,
         "per-channel": r.uniform(1e-3, 5e-2, out_c)}[scales]
    model = hybrid_model(r, x_shape, int8(r, w_shape, -127), s, stride=stride, dil=dil,
                         padding=padding, act=act)
    x = float_input(r, x_shape)
    assert_same_bits(model, [x])
    exact_optimized = scales != "per-channel"
    assert_same_bits(model, [x], "nodelegate", rel=None if exact_optimized else 1e-5)


@pytest.mark.tf
@pytest.mark.parametrize("case", range(len(DW_CASES)))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ["NONE", "RELU"])
def test_hybrid_depthwise(case, bias, act):
    x_shape, (kh, kw), mult, stride, dil, padding = DW_CASES[case]
    r = rng("hdw", case, bias, act)
    out_c = x_shape[3] * mult
    model = hybrid_model(r, x_shape, int8(r, (1, kh, kw, out_c), -127),
                         r.uniform(1e-3, 5e-2, out_c), depthwise=True, bias=bias,
                         stride=stride, dil=dil, padding=padding, act=act, multiplier=mult)
    x = float_input(r, x_shape)
    assert_same_bits(model, [x])
    if bias:  # the optimized hybrid depthwise kernel crashes without a bias
        assert_same_bits(model, [x], "nodelegate", rel=1e-5)


@pytest.mark.tf
def test_hybrid_special_inputs():
    """All-zero images (sf = 1), constant images and one huge value."""
    r = rng("hspecial")
    x = float_input(r, (4, 6, 6, 4))
    x[0] = 0
    x[1] = 2.5
    x[2, 3, 3, 1] = 1e6
    for s in ([0.02], r.uniform(1e-3, 5e-2, 5)):
        model = hybrid_model(r, x.shape, int8(r, (5, 3, 3, 4), -127), s)
        assert_same_bits(model, [x])
    model = hybrid_model(r, x.shape, int8(r, (1, 3, 3, 4), -127), r.uniform(1e-3, 5e-2, 4),
                         depthwise=True)
    assert_same_bits(model, [x])


@pytest.mark.tf
@pytest.mark.parametrize("kind", ["per-tensor", "per-channel", "depthwise"])
@pytest.mark.parametrize("act", ["NONE", "RELU6"])
@pytest.mark.parametrize("threads", [1, 2])
def test_hybrid_non_finite_images(kind, act, threads, monkeypatch):
    """Images holding NaN, ±inf, hidden extremes or only denormals (op_harness.non_finite_rows,
    5x5x3 = 75 values: 16-lane vectors, the rest of the blocks of 8, a tail of 3), bit for bit
    with TFLite, NaN payloads and -0.0 included. One thread runs the one-call serial kernels
    (`quantize_image_compiled`); two, `quantize_images` split between threads (uint8 q + 128
    into the VNNI tiles on a VNNI host)."""
    from qengine.kernels import threads as pool

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 0)
    r = rng("hnonfinite", kind, act)
    x = non_finite_rows(r, 75).reshape(-1, 5, 5, 3)
    if kind == "depthwise":
        model = hybrid_model(r, x.shape, int8(r, (1, 3, 3, 3), -127), r.uniform(1e-3, 5e-2, 3),
                             depthwise=True, act=act)
    else:
        scales = [0.02] if kind == "per-tensor" else r.uniform(1e-3, 5e-2, 4)
        model = hybrid_model(r, x.shape, int8(r, (4, 3, 3, 3), -127), scales, act=act)
    data = model.to_bytes()
    want = run_tflite(data, [x])
    got = qengine.Interpreter(data, num_threads=threads).run([x])
    for name, value in want.items():
        assert np.isnan(value).any()  # CalculateActivationRange: ±inf become ±FLT_MAX
        np.testing.assert_array_equal(got[name].view(np.int32), value.view(np.int32))


@pytest.mark.tf
@pytest.mark.parametrize("depthwise", [False, True])
def test_hybrid_from_dynamic_quantization(depthwise):
    r = rng("dyn", depthwise)
    channels = 128 if depthwise else 8  # the converter keeps filters under 1024 elements float
    model = quantize(float_conv_model(r, depthwise, channels), mode="dynamic", quiet=True)
    assert model.subgraphs[0].operators[0].inputs[1].dtype == "int8"
    for _ in range(2):
        assert_same_bits(model, [float_input(r, (1, 10, 10, channels))])


def test_hybrid_refusals():
    r = rng("hrefuse")
    no_bias = hybrid_model(r, (1, 5, 5, 2), int8(r, (3, 3, 3, 2)), [0.1], bias=False)
    with pytest.raises(InvalidModelError, match="bias"):
        qengine.Interpreter(no_bias.to_bytes())
    grouped = hybrid_model(r, (1, 5, 5, 4), int8(r, (4, 3, 3, 2)), [0.1])
    with pytest.raises(UnsupportedOpError, match="grouped"):
        qengine.Interpreter(grouped.to_bytes())
    per_tensor_dw = hybrid_model(r, (1, 5, 5, 2), int8(r, (1, 3, 3, 2)), [0.1], depthwise=True)
    with pytest.raises(UnsupportedOpError, match="per-channel"):
        qengine.Interpreter(per_tensor_dw.to_bytes())
    wrong_multiplier = hybrid_model(r, (1, 5, 5, 2), int8(r, (1, 3, 3, 4)), [0.1] * 4,
                                    depthwise=True, multiplier=1)
    with pytest.raises(UnsupportedOpError, match="depth_multiplier"):
        qengine.Interpreter(wrong_multiplier.to_bytes())


# -- NumPy twins of the hybrid accumulator kernels ---------------------------------------------


def naive_conv_acc(q, w, offsets, stride, dil, pad, out_hw):
    n, h, wd, cin = q.shape
    out_c, kh, kw, cig = w.shape
    per_group = out_c // (cin // cig)
    centered = q.astype(np.int64) - offsets[:, None, None, None]
    out = np.zeros((n, *out_hw, out_c), np.int64)
    for oy, ox, ky, kx in np.ndindex(*out_hw, kh, kw):
        iy, ix = oy * stride[0] - pad[0] + ky * dil[0], ox * stride[1] - pad[1] + kx * dil[1]
        if 0 <= iy < h and 0 <= ix < wd:
            for oc in range(out_c):
                g = oc // per_group
                out[:, oy, ox, oc] += centered[:, iy, ix, g * cig:(g + 1) * cig] @ \
                    w[oc, ky, kx].astype(np.int64)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_conv_accumulators_twin(seed):
    r = np.random.default_rng(seed)
    groups = 1 + seed % 2
    q = int8(r, (2, 7, 6, 2 * groups))
    w = int8(r, (2 * groups, 3, 2, 2))
    offsets = r.integers(-128, 128, 2).astype(np.int32)
    stride, dil, pad, out_hw = (1 + seed % 2, 1), (1, 1 + seed // 2), (1, 0), (5, 4)
    got = hybrid.conv_accumulators(q, w, offsets, *stride, *dil, *pad, *out_hw)
    np.testing.assert_array_equal(got, naive_conv_acc(q, w, offsets, stride, dil, pad, out_hw))


@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise_accumulators_twin(multiplier):
    r = np.random.default_rng(multiplier)
    q = int8(r, (2, 6, 7, 3))
    w = int8(r, (1, 3, 3, 3 * multiplier))
    offsets = r.integers(-128, 128, 2).astype(np.int32)
    got = hybrid.depthwise_accumulators(q, w, offsets, 2, 1, 1, 2, 1, 2, 3, 7, multiplier)
    # a depthwise conv is a grouped conv with one input channel per group
    w_grouped = w[0].transpose(2, 0, 1)[..., None]  # [Co, KH, KW, 1]
    want = naive_conv_acc(np.repeat(q, multiplier, axis=3), w_grouped, offsets, (2, 1), (1, 2),
                          (1, 2), (3, 7))
    np.testing.assert_array_equal(got, want)
