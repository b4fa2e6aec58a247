"""`arithmetic="xnnpack"` against TFLite's default interpreter (resolver "auto": the XNNPACK
delegate), exact equality on int8 outputs.

Every single-op test first checks that the delegate really took the op (a DELEGATE node in the
interpreter's execution plan): an op the delegate declines runs TFLite's optimized built-in
kernel instead, and the comparison would then test something else. The builder models give
every output tensor its shape, because the delegate declines ops whose output shape is unknown.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import rng
from qengine.kernels import softmax as softmax_kernels
from qengine.kernels import xnnpack as xnnpack_kernels
from tflite_ref import make_interpreter, run_tflite

import qengine
from qengine.builder import ACTIVATIONS, SAME, VALID, GraphBuilder, options
from qengine.errors import UnsupportedOpError
from qengine.ir import Quantization

pytestmark = pytest.mark.tf

ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


def int8(r, shape, low=-128):
    return r.integers(low, 128, shape).astype(np.int8)


def delegated_ops(data: bytes) -> int:
    """How many DELEGATE nodes TFLite's default interpreter runs for the model."""
    interpreter = make_interpreter(data, "auto")
    interpreter.allocate_tensors()
    return sum(d["op_name"] == "DELEGATE" for d in interpreter._get_ops_details())


def with_output_shapes(model, inputs):
    """Give every op output its shape (qengine infers them): XNNPACK needs static shapes."""
    values = qengine.Interpreter(model).run(inputs, keep=True)
    for op in model.main.operators:
        for t in op.outputs:
            t.shape = tuple(values[t.name].shape)
    return model


def check_xnnpack(model, inputs, delegated=True) -> dict:
    """qengine(arithmetic="xnnpack") == TFLite default, exactly; returns TFLite's outputs."""
    model = with_output_shapes(model, inputs)
    data = model.to_bytes()
    assert (delegated_ops(data) > 0) == delegated, "the XNNPACK delegate did not take the op"
    want = run_tflite(data, inputs, "auto")
    got = qengine.Interpreter(data, arithmetic="xnnpack").run(inputs)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    return want


def per_channel(r, n, axis, low=1e-3, high=5e-2):
    return Quantization(r.uniform(low, high, n).astype(np.float32), np.zeros(n, np.int64), axis)


def bias_const(b, r, in_scale, wq, out_c, magnitude=3000):
    """An int32 bias quantized like the filter: per tensor or per channel (XNNPACK refuses a
    per-channel bias next to a per-tensor filter, and the whole interpreter then fails)."""
    scales = wq.scale.astype(np.float64) * in_scale
    return b.const("b", r.integers(-magnitude, magnitude, out_c).astype(np.int32), "int32",
                   Quantization(scales, np.zeros(scales.size, np.int64), 0))


def conv_options(padding, stride, dil, act) -> dict:
    return {"padding": padding, "strideH": stride[0], "strideW": stride[1],
            "dilationHFactor": dil[0], "dilationWFactor": dil[1],
            "fusedActivationFunction": ACTIVATIONS[act]}


def conv_model(r, x_shape, w_shape, *, depthwise=False, stride=(1, 1), dil=(1, 1),
               padding=SAME, act="NONE", per_tensor=False, in_q=(0.05, 3), out_q=(0.2, -7),
               bias=True):
    b = GraphBuilder()
    x = b.input("x", x_shape, "int8", Quantization.per_tensor(*in_q))
    out_c = w_shape[3] if depthwise else w_shape[0]
    wq = (Quantization.per_tensor(0.02) if per_tensor
          else per_channel(r, out_c, 3 if depthwise else 0))
    inputs = [x, b.const("w", int8(r, w_shape, -127), "int8", wq)]
    if bias:
        inputs.append(bias_const(b, r, in_q[0], wq, out_c))
    common = conv_options(padding, stride, dil, act)
    if depthwise:
        opts = options("DepthwiseConv2DOptions", depthMultiplier=out_c // x_shape[3], **common)
        y = b.op("DEPTHWISE_CONV_2D", inputs, options=opts, version=3,
                 out_quantization=Quantization.per_tensor(*out_q))
    else:
        y = b.op("CONV_2D", inputs, options=options("Conv2DOptions", **common), version=3,
                 out_quantization=Quantization.per_tensor(*out_q))
    return b.build([y])


# -- CONV_2D -----------------------------------------------------------------------------------

CONV_CASES = [  # x shape, w shape, stride, dilation, padding
    ((2, 9, 8, 3), (5, 3, 3, 3), (1, 1), (1, 1), SAME),
    ((1, 10, 7, 4), (6, 3, 2, 4), (2, 3), (1, 1), VALID),
    ((1, 11, 11, 2), (3, 3, 3, 2), (1, 2), (2, 3), SAME),
    ((2, 6, 6, 8), (4, 1, 1, 8), (1, 1), (1, 1), VALID),
    ((1, 9, 9, 16), (24, 3, 3, 16), (2, 2), (1, 1), SAME),
    ((1, 7, 9, 6), (6, 3, 3, 2), (2, 2), (1, 1), SAME),  # grouped: 3 groups
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("per_tensor", [False, True])
def test_conv(case, act, per_tensor):
    x_shape, w_shape, stride, dil, padding = CONV_CASES[case]
    r = rng("conv", case, act, per_tensor)
    model = conv_model(r, x_shape, w_shape, stride=stride, dil=dil, padding=padding, act=act,
                       per_tensor=per_tensor)
    for _ in range(2):
        check_xnnpack(model, [int8(r, x_shape)])


DW_CASES = [  # x shape, kernel, multiplier, stride, dilation, padding
    ((2, 8, 9, 3), (3, 3), 1, (1, 1), (1, 1), SAME),
    ((1, 9, 9, 2), (3, 2), 3, (2, 1), (1, 1), VALID),
    ((1, 12, 10, 4), (3, 3), 2, (1, 2), (2, 2), SAME),
    ((1, 10, 10, 24), (5, 5), 1, (2, 2), (1, 1), SAME),
]


@pytest.mark.parametrize("case", range(len(DW_CASES)))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("per_tensor", [False, True])
def test_depthwise(case, act, per_tensor):
    x_shape, (kh, kw), mult, stride, dil, padding = DW_CASES[case]
    r = rng("dw", case, act, per_tensor)
    model = conv_model(r, x_shape, (1, kh, kw, x_shape[3] * mult), depthwise=True,
                       stride=stride, dil=dil, padding=padding, act=act, per_tensor=per_tensor)
    for _ in range(2):
        check_xnnpack(model, [int8(r, x_shape)])


# -- float32 CONV_2D and DEPTHWISE_CONV_2D: sums from the bias by fused multiply-adds ----------

FLOAT_CONV_CASES = [  # x shape, w shape, stride, dilation, padding (one group: the float kernel)
    ((2, 9, 8, 3), (5, 3, 3, 3), (1, 1), (1, 1), SAME),
    ((1, 10, 7, 4), (6, 3, 2, 4), (2, 3), (1, 1), VALID),
    ((1, 11, 11, 2), (3, 3, 3, 2), (1, 2), (2, 3), SAME),
    ((2, 6, 6, 8), (4, 1, 1, 8), (1, 1), (1, 1), VALID),
    ((1, 9, 9, 16), (24, 3, 3, 16), (2, 2), (1, 1), SAME),
    ((1, 14, 14, 40), (72, 1, 1, 40), (1, 1), (1, 1), SAME),  # 4 panels and a tail of 8
    ((1, 33, 31, 3), (16, 3, 3, 3), (2, 2), (1, 1), SAME),  # a first layer
    ((1, 20, 20, 32), (2, 3, 3, 32), (1, 1), (1, 1), SAME),  # a narrow head
]


def float_conv_model(r, x_shape, w_shape, *, depthwise=False, stride=(1, 1), dil=(1, 1),
                     padding=SAME, act="NONE"):
    b = GraphBuilder()
    x = b.input("x", x_shape)
    out_c = w_shape[3] if depthwise else w_shape[0]
    inputs = [x, b.const("w", r.standard_normal(w_shape).astype(np.float32)),
              b.const("b", r.standard_normal(out_c).astype(np.float32))]
    common = conv_options(padding, stride, dil, act)
    if depthwise:
        opts = options("DepthwiseConv2DOptions", depthMultiplier=out_c // x_shape[3], **common)
        y = b.op("DEPTHWISE_CONV_2D", inputs, options=opts)
    else:
        y = b.op("CONV_2D", inputs, options=options("Conv2DOptions", **common))
    return b.build([y])


@pytest.mark.parametrize("case", range(len(FLOAT_CONV_CASES)))
@pytest.mark.parametrize("act", ACTS)
def test_float_conv(case, act):
    x_shape, w_shape, stride, dil, padding = FLOAT_CONV_CASES[case]
    r = rng("float conv", case, act)
    model = float_conv_model(r, x_shape, w_shape, stride=stride, dil=dil, padding=padding,
                             act=act)
    for _ in range(2):
        check_xnnpack(model, [r.standard_normal(x_shape).astype(np.float32)])


FLOAT_DW_CASES = [*DW_CASES,  # x shape, kernel, multiplier, stride, dilation, padding
                  ((1, 16, 15, 40), (3, 3), 1, (1, 1), (1, 1), SAME),
                  ((1, 13, 12, 20), (5, 5), 1, (1, 1), (1, 1), SAME),
                  ((1, 9, 9, 8), (3, 3), 1, (1, 1), (2, 2), SAME)]  # dilated


@pytest.mark.parametrize("case", range(len(FLOAT_DW_CASES)))
@pytest.mark.parametrize("act", ACTS)
def test_float_depthwise(case, act):
    x_shape, (kh, kw), mult, stride, dil, padding = FLOAT_DW_CASES[case]
    r = rng("float dw", case, act)
    model = float_conv_model(r, x_shape, (1, kh, kw, x_shape[3] * mult), depthwise=True,
                             stride=stride, dil=dil, padding=padding, act=act)
    for _ in range(2):
        check_xnnpack(model, [r.standard_normal(x_shape).astype(np.float32)])


@pytest.mark.parametrize("shape, units", [((1, 40), 24), ((3, 17), 33), ((2, 5, 64), 130)])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
def test_float_fully_connected(shape, units, act, bias):
    r = rng("float fc", shape, units, act, bias)
    b = GraphBuilder()
    x = b.input("x", shape)
    inputs = [x, b.const("w", r.standard_normal((units, shape[-1])).astype(np.float32))]
    if bias:
        inputs.append(b.const("b", r.standard_normal(units).astype(np.float32)))
    opts = options("FullyConnectedOptions", fusedActivationFunction=ACTIVATIONS[act],
                   keepNumDims=len(shape) == 3)
    model = b.build([b.op("FULLY_CONNECTED", inputs, options=opts)])
    check_xnnpack(model, [r.standard_normal(shape).astype(np.float32)])


def test_requantization_scale_of_256_is_refused():
    """XNNPACK refuses scales >= 256; the default interpreter then fails to prepare the model."""
    r = rng("scale-256")
    model = conv_model(r, (1, 5, 5, 2), (3, 3, 3, 2), per_tensor=True, in_q=(1.0, 0),
                       out_q=(5e-5, 0))  # 1.0 * 0.02 / 5e-5 = 400
    model = with_output_shapes(model, [int8(r, (1, 5, 5, 2))])
    with pytest.raises(RuntimeError, match="XNNPACK"):
        run_tflite(model.to_bytes(), [int8(r, (1, 5, 5, 2))], "auto")
    with pytest.raises(UnsupportedOpError, match="256"):
        qengine.Interpreter(model, arithmetic="xnnpack")


# -- FULLY_CONNECTED ---------------------------------------------------------------------------


def fc_model(r, x_shape, units, *, act="NONE", per_tensor=False, in_q=(0.05, 3),
             out_q=(0.2, -7), bias=True, w=None, wq=None, bias_values=None):
    depth = x_shape[-1]
    b = GraphBuilder()
    x = b.input("x", x_shape, "int8", Quantization.per_tensor(*in_q))
    if wq is None:
        wq = Quantization.per_tensor(0.02) if per_tensor else per_channel(r, units, 0)
    w = int8(r, (units, depth), -127) if w is None else w
    inputs = [x, b.const("w", w, "int8", wq)]
    if bias_values is not None:
        scales = wq.scale.astype(np.float64) * in_q[0]
        inputs.append(b.const("b", bias_values.astype(np.int32), "int32",
                              Quantization(scales, np.zeros(scales.size, np.int64), 0)))
    elif bias:
        inputs.append(bias_const(b, r, in_q[0], wq, units))
    opts = options("FullyConnectedOptions", fusedActivationFunction=ACTIVATIONS[act])
    y = b.op("FULLY_CONNECTED", inputs, options=opts, version=5,
             out_quantization=Quantization.per_tensor(*out_q))
    return b.build([y])


FC_SHAPES = [((3, 16), 8), ((1, 100), 10), ((4, 2, 33), 7), ((2, 1280), 24)]


@pytest.mark.parametrize("shape", range(len(FC_SHAPES)))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("per_tensor", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_fully_connected(shape, act, per_tensor, bias):
    x_shape, units = FC_SHAPES[shape]
    r = rng("fc", shape, act, per_tensor, bias)
    model = fc_model(r, x_shape, units, act=act, per_tensor=per_tensor, bias=bias)
    for _ in range(2):
        check_xnnpack(model, [int8(r, x_shape)])


# -- the requantization details, with inputs built to expose them ------------------------------


def sweep_rows() -> np.ndarray:
    """All 256 int8 values as a [256, 1] batch: with a weight of 1, depth 1 and input zero
    point 0, row k accumulates bias + k, so each channel sees 256 consecutive accumulators."""
    return np.arange(-128, 128).astype(np.int8).reshape(256, 1)


def sweep_model(scales_w, in_q, out_q, bias_values, act="NONE"):
    units = len(scales_w)
    wq = Quantization(np.asarray(scales_w, np.float32), np.zeros(units, np.int64), 0)
    return fc_model(None, (256, 1), units, act=act, in_q=in_q, out_q=out_q,
                    w=np.ones((units, 1), np.int8), wq=wq, bias_values=np.asarray(bias_values))


def test_ties_round_to_even():
    """scale = 0.5 * 0.25 / 0.25 = 0.5 exactly: every odd accumulator is a tie, both signs."""
    model = sweep_model([0.25, 0.25], (0.5, 0), (0.25, 1), [-41, 40])
    want = check_xnnpack(model, [sweep_rows()])
    acc = np.stack([np.arange(-128, 128) - 41, np.arange(-128, 128) + 40], axis=1)
    away = np.clip(np.sign(acc) * np.floor(np.abs(acc) * 0.5 + 0.5) + 1, -128, 127)
    assert np.any(next(iter(want.values())) != away), "no tie distinguishes the roundings"


def requantization_scale(in_scale, s_w, out_scale) -> np.float32:
    """XNNPACK's scale, float32 throughout (the fact test_scale_is_computed_in_float32 checks)."""
    return np.float32(np.float32(np.float32(in_scale) * np.float32(s_w)) / np.float32(out_scale))


def _straddling_accumulator(fp32_scale, f64_scale, low=2**18, high=2**21):
    """An accumulator whose product with the two candidate scales rounds differently."""
    acc = np.arange(low, high, dtype=np.int64)
    a = np.rint(acc.astype(np.float32) * np.float32(fp32_scale))
    b = np.rint(acc.astype(np.float32) * np.float32(f64_scale))
    hits = np.flatnonzero((a != b) & (np.abs(a) < 100))
    return int(acc[hits[0]]) if hits.size else None


def test_scale_is_computed_in_float32():
    """XNNPACK computes (s_in * s_w) / s_out in float32, not in double: channels whose two
    candidate scales differ by an ulp get an accumulator where that flips the rounding."""
    r = rng("scale-precision")
    in_scale, out_scale = np.float32(0.0123), np.float32(0.7)
    scales, biases = [], []
    while len(scales) < 6:
        s_w = np.float32(r.uniform(1e-4, 1e-3))
        fp32 = requantization_scale(in_scale, s_w, out_scale)
        f64 = np.float32(np.float64(in_scale) * np.float64(s_w) / np.float64(out_scale))
        acc = _straddling_accumulator(fp32, f64) if fp32 != f64 else None
        if acc is not None:
            scales.append(s_w)
            biases.append(acc)
    model = sweep_model(scales, (float(in_scale), 0), (float(out_scale), 0), biases)
    check_xnnpack(model, [sweep_rows()])


def _float32_rounding_matters(scale, low, count=2**20):
    """An accumulator in [low, low + count) where rounding it to float32 before the (float32)
    scale changes the result, compared with scaling the exact value."""
    acc = np.arange(low, low + count, dtype=np.int64)
    via_float32 = np.rint(acc.astype(np.float32) * np.float32(scale))
    exact = np.rint((acc.astype(np.float64) * np.float64(scale)).astype(np.float32))
    return int(acc[np.flatnonzero(via_float32 != exact)[0]])


@pytest.mark.parametrize("sign", [1, -1])
def test_large_accumulators_are_rounded_to_float32(sign):
    """Accumulators above 2^24 lose their low bits in float32(acc) before the scale applies."""
    in_q, out_q, s_w = (0.1, 0), (0.6, 0), 1e-5  # scale ~1.7e-6: |out| ~ 111 near 2^26
    scale = requantization_scale(in_q[0], s_w, out_q[0])
    bias = _float32_rounding_matters(scale, 2**26 if sign > 0 else -(2**26) - 2**20)
    model = sweep_model([s_w], in_q, out_q, [bias])
    check_xnnpack(model, [sweep_rows()])


@pytest.mark.parametrize("out_zp", [-3, 0, 1, 2])
@pytest.mark.parametrize("act", ["RELU6", "RELU_N1_TO_1"])
def test_activation_bound_ties(out_zp, act):
    """Output scale 4: 6 / 4 = 1.5 is a tie in the RELU6 bound; scale 2 for RELU_N1_TO_1."""
    out_scale = 4.0 if act == "RELU6" else 2.0
    model = sweep_model([0.25, 0.5], (0.5, 0), (out_scale, out_zp), [0, 3], act=act)
    check_xnnpack(model, [sweep_rows()])


@pytest.mark.parametrize("in_q,out_q", [
    ((0.5, -128), (0.01, 127)),  # requantization scales far above 1
    ((1e-4, 127), (30.0, -128)),  # tiny requantization scales
    ((0.05, 0), (0.05, 0)),
])
def test_extreme_params(in_q, out_q):
    r = rng("extreme", in_q, out_q)
    for depthwise in (False, True):
        w_shape = (1, 3, 3, 6) if depthwise else (6, 3, 3, 3)
        model = conv_model(r, (1, 8, 8, 3), w_shape, depthwise=depthwise, in_q=in_q,
                           out_q=out_q, act="RELU6")
        check_xnnpack(model, [int8(r, (1, 8, 8, 3))])


# -- MEAN --------------------------------------------------------------------------------------


def mean_model(shape, axes, keep, in_q=(0.05, 3), out_q=(0.04, -2)):
    b = GraphBuilder()
    x = b.input("x", shape, "int8", Quantization.per_tensor(*in_q))
    y = b.op("MEAN", [x, b.const("axis", np.array(axes, np.int32))],
             options=options("ReducerOptions", keepDims=keep),
             out_quantization=Quantization.per_tensor(*out_q))
    return b.build([y])


MEAN_CASES = [  # shape, axes
    ((2, 5, 5, 8), [1, 2]), ((1, 3, 3, 64), [1, 2]), ((2, 5, 5, 8), [1]), ((2, 5, 5, 8), [3]),
    ((2, 5, 5, 8), [2, 3]), ((3, 4, 10), [1]), ((3, 4, 10), [2]), ((4, 10), [1]),
    ((2, 5, 5, 8), [0, 1, 2]), ((1, 12, 12, 16), [1, 2]),
]


@pytest.mark.parametrize("case", range(len(MEAN_CASES)))
@pytest.mark.parametrize("keep", [True, False])
def test_mean(case, keep):
    shape, axes = MEAN_CASES[case]
    r = rng("mean", case, keep)
    params = [((0.05, 3), (0.04, -2)), ((0.1, -128), (0.01, 127)), ((0.02, 0), (0.02, 0))]
    for in_q, out_q in params:
        check_xnnpack(mean_model(shape, axes, keep, in_q, out_q), [int8(r, shape)])


def _mean_twin(sums, n, in_q, out_q, divide=False, bias_from_ratio=False):
    """XNNPACK's MEAN on sums of n values, and (flags) formulas it does not use:
    scale = ratio * float32(1 / n) (or ratio / n); bias = zp_out - float32(n * zp_in) * scale
    (or zp_out - zp_in * ratio); out = rint(float32(sum) * scale + bias), float32 steps."""
    f32 = np.float32
    ratio = f32(f32(in_q[0]) / f32(out_q[0]))
    scale = ratio / f32(n) if divide else ratio * f32(f32(1) / f32(n))
    bias = (f32(out_q[1]) - f32(in_q[1]) * ratio if bias_from_ratio
            else f32(out_q[1]) - f32(n * in_q[1]) * scale)
    return np.rint(sums.astype(np.float32) * scale + bias)


def rows_with_sums(sums: np.ndarray, n: int) -> np.ndarray:
    """[len(sums), n] int8 rows whose sums are the targets (values spread evenly)."""
    base = np.floor_divide(sums, n)
    rows = np.repeat(base[:, None], n, axis=1) + (np.arange(n) < (sums - base * n)[:, None])
    return rows.astype(np.int8)


@pytest.mark.parametrize("n", [7, 9, 13])
def test_mean_formula(n):
    """MEAN over n values, with sums chosen where the formula details change the result:
    dividing by n instead of multiplying by 1/n, folding the zero points differently, or
    subtracting the input zero point before converting to float."""
    r = rng("mean-formula", n)
    sums = np.arange(-128 * n, 127 * n + 1)
    found = 0
    for _ in range(400):
        in_q = (float(r.uniform(0.01, 0.2)), int(r.integers(-128, 128)))
        out_q = (float(r.uniform(0.002, 0.05)), int(r.integers(-128, 128)))
        ours = _mean_twin(sums, n, in_q, out_q)
        ratio_n = np.float32(np.float32(in_q[0]) / np.float32(out_q[0])) * np.float32(1 / n)
        others = [_mean_twin(sums, n, in_q, out_q, divide=True),
                  _mean_twin(sums, n, in_q, out_q, bias_from_ratio=True),
                  np.rint((sums - n * in_q[1]).astype(np.float32) * ratio_n) + out_q[1]]
        telling = sums[np.any([o != ours for o in others], axis=0) & (np.abs(ours) < 127)]
        if telling.size == 0:
            continue
        found += telling.size
        x = rows_with_sums(np.resize(telling, 16), n).T.reshape(1, n, 1, 16)
        check_xnnpack(mean_model((1, n, 1, 16), [1, 2], True, in_q, out_q), [x])
    assert found > 0, "no input separates the formulas"


# -- ADD, SUB, MUL -----------------------------------------------------------------------------


def binary_model(op, shape_a, shape_b, q_a, q_b, q_out, act="NONE"):
    b = GraphBuilder()
    x = b.input("a", shape_a, "int8", Quantization.per_tensor(*q_a))
    y = b.input("b", shape_b, "int8", Quantization.per_tensor(*q_b))
    kind = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}[op]
    out = b.op(op, [x, y], options=options(kind, fusedActivationFunction=ACTIVATIONS[act]),
               out_quantization=Quantization.per_tensor(*q_out))
    return b.build([out])


def all_pairs():
    """Every (a, b) pair of int8 values once: [256, 256] each."""
    values = np.arange(-128, 128).astype(np.int8)
    return [np.repeat(values, 256).reshape(256, 256), np.tile(values, 256).reshape(256, 256)]


BINARY_PARAMS = [  # (q_a, q_b, q_out)
    ((0.05, 3), (0.02, -7), (0.06, 2)),
    ((0.1, -128), (0.1, 127), (0.3, 0)),
    ((0.013, 10), (0.4, -3), (0.5, -20)),
    ((0.02, 0), (0.02, 0), (0.01, 5)),
    ((1 / 128, 1), (1 / 64, -1), (1 / 32, 3)),  # power-of-two ratios: exact ties
]


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("params", range(len(BINARY_PARAMS)))
@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6"])
def test_binary_all_pairs(op, params, act):
    """All 65536 input pairs: the whole table of the op for these parameters."""
    model = binary_model(op, (256, 256), (256, 256), *BINARY_PARAMS[params], act=act)
    check_xnnpack(model, all_pairs())


@pytest.mark.parametrize("op", ["ADD", "MUL"])
def test_binary_random_scales(op):
    r = rng("binary", op)
    for _ in range(30):
        q = [(float(r.uniform(0.005, 0.5)), int(r.integers(-128, 128))) for _ in range(3)]
        check_xnnpack(binary_model(op, (256, 256), (256, 256), *q), all_pairs())


@pytest.mark.parametrize("op", ["ADD", "MUL"])
def test_binary_broadcast(op):
    r = rng("broadcast", op)
    model = binary_model(op, (2, 5, 5, 8), (1, 1, 1, 8), (0.05, 3), (0.02, -7), (0.06, 2))
    check_xnnpack(model, [int8(r, (2, 5, 5, 8)), int8(r, (1, 1, 1, 8))])


@pytest.mark.parametrize("op,params", [
    ("ADD", ((1e-4, 3), (0.02, -7), (1.0, 2))),  # s_a / s_out < 2^-10
    ("MUL", ((1e-3, 3), (1e-3, -7), (1.0, 2))),  # s_a * s_b / s_out < 2^-16
])
def test_binary_scales_xnnpack_refuses(op, params):
    """Outside XNNPACK's ratio ranges the delegate leaves the op to TFLite's built-in kernel,
    and qengine falls back to the reference arithmetic, which that kernel shares."""
    check_xnnpack(binary_model(op, (256, 256), (256, 256), *params), all_pairs(),
                  delegated=False)


# -- whole models ------------------------------------------------------------------------------

CORPUS_MODELS = [
    "digits", "mlp", "transformer",
    pytest.param("mobilenet_v2", marks=pytest.mark.slow),
    pytest.param("mobilenet_v3_small", marks=pytest.mark.slow),
    pytest.param("efficientnet_b0", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", CORPUS_MODELS)
def test_qengine_quantized_corpus_model(corpus, name):
    """qengine's int8 model of a corpus network equals the default interpreter's output exactly.
    The transformer's float islands (GELU, RSQRT between DEQUANTIZE and QUANTIZE) run in float
    on both sides; its int8 output still matched in every run."""
    from tflite_ref import quantize_inputs

    model = qengine.quantize(corpus.path(name, "float"), "int8",
                             corpus.sample_inputs(name, 16, seed=0), quiet=True).to_bytes()
    x = quantize_inputs(model, corpus.sample_inputs(name, 4, seed=4))
    want = run_tflite(model, x, "auto")
    got = qengine.Interpreter(model, arithmetic="xnnpack").run(x)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.parametrize("name", CORPUS_MODELS)
def test_converter_int8_corpus_model(corpus, name):
    """The converter's int8 model of a corpus network (the transformer's int8 SOFTMAX runs
    TFLite's optimized kernel) equals the default interpreter's output exactly."""
    from tflite_ref import quantize_inputs

    path = corpus.path(name, "int8")
    x = quantize_inputs(path, corpus.sample_inputs(name, 4, seed=4))
    want = run_tflite(path, x, "auto")
    got = qengine.Interpreter(path, arithmetic="xnnpack").run(x)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


# -- LEAKY_RELU --------------------------------------------------------------------------------


def unary_model(op, shape, in_q, out_q, opts=None):
    b = GraphBuilder()
    x = b.input("x", shape, "int8", Quantization.per_tensor(*in_q))
    y = b.op(op, [x], options=opts, out_quantization=Quantization.per_tensor(*out_q))
    return b.build([y])


def every_int8():
    return np.arange(-128, 128).astype(np.int8).reshape(1, 256)


@pytest.mark.parametrize("alpha", [0.1, 0.2, -0.3, 1.7, 0.01])
@pytest.mark.parametrize("in_q,out_q", [((0.05, 3), (0.04, 0)), ((1 / 16, -5), (1 / 32, 7)),
                                        ((0.1, -128), (0.02, 127)), ((0.013, 0), (0.05, -9))])
def test_leaky_relu(alpha, in_q, out_q):
    """All 256 inputs. 1/16 -> 1/32 makes 256 * ratio * alpha land on exact ties."""
    opts = options("LeakyReluOptions", alpha=alpha)
    delegated = xnnpack_kernels.leaky_relu_table(*in_q, *out_q, alpha) is not None
    check_xnnpack(unary_model("LEAKY_RELU", (1, 256), in_q, out_q, opts), [every_int8()],
                  delegated=delegated)


# -- ELU ---------------------------------------------------------------------------------------

ELU_PARAMS = [  # (in_q, out_q); the first three separate the candidate formulas (see below)
    ((0.013, 0), (0.05, -9)), ((0.05, 3), (0.04, 0)), ((0.03, 10), (0.06, -77)),
    ((1 / 16, -5), (1 / 32, 7)), ((0.1, -128), (0.02, 127)), ((0.03, -76), (0.1, -61)),
    ((0.01, -3), (0.03, 101)), ((0.2, 127), (0.005, -128)), ((0.002, -100), (0.3, 50)),
]


def _elu_alternatives(in_q, out_q):
    """Tables XNNPACK does not compute: rint before adding zp_out, division by s_out, and
    y * (1 / s_out) + zp_out as one fused multiply-add."""
    from qengine.ops.activations_int import _elu_f32

    f32 = np.float32
    ys = np.array([_elu_f32(f32(f32(k - in_q[1]) * f32(in_q[0]))) for k in range(-128, 128)])
    inv = f32(f32(1) / f32(out_q[0]))
    exact = ys.astype(np.float64) * np.float64(inv) + out_q[1]  # one rounding: the FMA
    return [np.rint(ys * inv) + out_q[1], np.rint(ys / f32(out_q[0]) + f32(out_q[1])),
            np.rint(exact.astype(np.float32))]


def test_elu_every_input():
    """All 256 inputs for each scale pair: XNNPACK's float table (kernels/xnnpack.float_lut)."""
    told = np.zeros(3, bool)
    for in_q, out_q in ELU_PARAMS:
        want = check_xnnpack(unary_model("ELU", (1, 256), in_q, out_q), [every_int8()])
        want = next(iter(want.values())).ravel()
        told |= [np.any(np.clip(alt, -128, 127) != want)
                 for alt in _elu_alternatives(in_q, out_q)]
    assert told.all(), "some alternative formula agrees with TFLite on every case"


# -- RESIZE_BILINEAR ---------------------------------------------------------------------------

RESIZE_FLAGS = [(False, False), (True, False), (False, True)]  # the combinations TFLite allows
RESIZE_CASES = [  # input shape, output size
    ((1, 4, 5, 3), (7, 9)), ((1, 5, 5, 2), (10, 10)), ((2, 7, 3, 4), (3, 8)),
    ((1, 3, 4, 2), (11, 13)), ((1, 6, 6, 1), (4, 5)), ((1, 1, 3, 2), (1, 7)),
    ((1, 8, 8, 16), (16, 16)), ((1, 9, 5, 3), (2, 1)),
]


def resize_model(shape, size, align_corners, half_pixel, q=(0.05, 3)):
    b = GraphBuilder()
    x = b.input("x", shape, "int8", Quantization.per_tensor(*q))
    opts = options("ResizeBilinearOptions", alignCorners=align_corners,
                   halfPixelCenters=half_pixel)
    y = b.op("RESIZE_BILINEAR", [x, b.const("size", np.array(size, np.int32))], options=opts,
             out_quantization=Quantization.per_tensor(*q))
    return b.build([y])


@pytest.mark.parametrize("case", range(len(RESIZE_CASES)))
@pytest.mark.parametrize("flags", RESIZE_FLAGS)
def test_resize_bilinear(case, flags):
    shape, size = RESIZE_CASES[case]
    r = rng("resize", case, flags)
    for _ in range(2):
        check_xnnpack(resize_model(shape, size, *flags), [int8(r, shape)])


@pytest.mark.parametrize("case", range(len(RESIZE_CASES)))
@pytest.mark.parametrize("flags", RESIZE_FLAGS)
def test_float_resize_bilinear(case, flags):
    """XNNPACK's f32 ibilinear: one rounding per operation (a fused multiply-add would differ
    with half pixel centers)."""
    shape, size = RESIZE_CASES[case]
    r = rng("float resize", case, flags)
    b = GraphBuilder()
    x = b.input("x", shape)
    opts = options("ResizeBilinearOptions", alignCorners=flags[0], halfPixelCenters=flags[1])
    model = b.build([b.op("RESIZE_BILINEAR", [x, b.const("size", np.array(size, np.int32))],
                          options=opts)])
    for _ in range(2):
        check_xnnpack(model, [r.standard_normal(shape).astype(np.float32) * 100])


def test_float_resize_bilinear_two_threads():
    """Output rows split between two threads (25600 values: over the split bar)."""
    r = rng("float resize 2T")
    b = GraphBuilder()
    x = b.input("x", (1, 20, 20, 16))
    opts = options("ResizeBilinearOptions", halfPixelCenters=True)
    model = b.build([b.op("RESIZE_BILINEAR", [x, b.const("size", np.array([40, 40], np.int32))],
                          options=opts)])
    inputs = [r.standard_normal((1, 20, 20, 16)).astype(np.float32)]
    want = check_xnnpack(model, inputs)
    got = qengine.Interpreter(model, arithmetic="xnnpack", num_threads=2).run(inputs)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def _resize_twin(x, size, flags, bits=11, weight_round=np.rint, ties_up=True):
    """kernels/xnnpack.resize_bilinear_q11 and the alternatives it rejects (other weight
    precisions, weights rounded half away from zero, output rounded half away from zero)."""
    def axis(n_in, n_out):  # float32 positions, vectorized
        f32 = np.float32
        adjust = 1 if flags[0] and n_out > 1 else 0
        scale = f32(n_in - adjust) / f32(n_out - adjust)
        pos = np.arange(n_out, dtype=np.float32) * scale
        if flags[1]:
            pos = np.clip(pos + (f32(0.5) * scale - f32(0.5)), 0, n_in - 1).astype(np.float32)
        first = np.floor(pos)
        weight = weight_round((pos - first) * f32(2**bits)).astype(np.int64)
        first = first.astype(np.int64)
        return np.stack([first, np.minimum(first + 1, n_in - 1), weight], axis=1)
    ys, xs = axis(x.shape[1], size[0]), axis(x.shape[2], size[1])
    v = x.astype(np.int64)
    t, bo, b = ys[:, 0], ys[:, 1], ys[:, 2][None, :, None, None]
    left, right, a = xs[:, 0], xs[:, 1], xs[:, 2][None, None, :, None]
    top = (v[:, t][:, :, left] << bits) + (v[:, t][:, :, right] - v[:, t][:, :, left]) * a
    bottom = (v[:, bo][:, :, left] << bits) + (v[:, bo][:, :, right] - v[:, bo][:, :, left]) * a
    acc = (top << bits) + (bottom - top) * b
    half = 1 << (2 * bits - 1)
    out = ((acc + half) >> (2 * bits) if ties_up
           else np.sign(acc) * ((np.abs(acc) + half) >> (2 * bits)))
    return np.clip(out, -128, 127)


def test_resize_bilinear_details():
    """Inputs where the details matter: 3 -> 4096 wide makes every odd weight a Q11 tie
    (legacy mode), and the rounding of the output and the weight precision show on random
    images; each alternative twin must disagree with TFLite somewhere, ours nowhere."""
    r = rng("resize-details")
    alternatives = {"Q10 weights": {"bits": 10},
                    "weights half away": {"weight_round": lambda w: np.floor(w + 0.5)},
                    "output half away": {"ties_up": False}}
    told = dict.fromkeys(alternatives, False)
    cases = [((1, 2, 3, 1), (2, 4096), RESIZE_FLAGS[0])] + [
        (shape, size, flags) for shape, size in RESIZE_CASES[:4] for flags in RESIZE_FLAGS]
    for shape, size, flags in cases:
        x = int8(r, shape)
        want = next(iter(check_xnnpack(resize_model(shape, size, *flags), [x]).values()))
        np.testing.assert_array_equal(_resize_twin(x, size, flags), want)
        for name, alt in alternatives.items():
            told[name] |= bool(np.any(_resize_twin(x, size, flags, **alt) != want))
    assert all(told.values()), told


# -- SOFTMAX (declined by the delegate: TFLite's optimized kernel) -----------------------------


def softmax_model(shape, s_in, beta=1.0, zp_in=0):
    b = GraphBuilder()
    x = b.input("x", shape, "int8", Quantization.per_tensor(s_in, zp_in))
    y = b.op("SOFTMAX", [x], options=options("SoftmaxOptions", beta=beta),
             out_quantization=Quantization.per_tensor(1 / 256, -128))
    return b.build([y])


def _softmax_twin(rows, s_in, beta, rounding="half away"):
    """The optimized kernel in NumPy: a float32 table of expf(-(s_in * beta) * (max - x)),
    summed in order in float32, times float32(1 / (sum / 256)), rounded, minus 128."""
    f32 = np.float32
    table = softmax_kernels.softmax_exp_table(s_in, beta)
    e = table[rows.max(axis=1, keepdims=True).astype(np.int64) - rows]
    total = np.zeros(len(rows), np.float32)
    for j in range(rows.shape[1]):
        total = (total + e[:, j]).astype(np.float32)
    inv = (f32(1) / (total * f32(1 / 256)).astype(np.float32)).astype(np.float32)
    p = (e * inv[:, None]).astype(np.float32).astype(np.float64)
    q = np.floor(p + 0.5) if rounding == "half away" else np.rint(p)
    return np.clip(q - 128, -128, 127)


def _check_softmax(s_in, beta, depth) -> tuple[bool, bool]:
    """Rows where the float-table kernel differs from the reference fixed-point kernel or from
    rounding ties to even (found with the twins), plus random rows, in one batch. Returns
    whether each alternative disagreed with TFLite."""
    r = rng("softmax", s_in, beta, depth)
    rows = int8(r, (40000, depth))
    ours = _softmax_twin(rows, s_in, beta)
    params = softmax_kernels.softmax_params(s_in, beta)
    reference = softmax_kernels.softmax_int8(rows, *params)
    ties_even = _softmax_twin(rows, s_in, beta, rounding="even")
    # up to 32 rows telling each alternative apart (ties are rare), plus 64 random rows
    x = np.concatenate([rows[np.any(ours != reference, axis=1)][:32],
                        rows[np.any(ours != ties_even, axis=1)][:32], rows[:64]])
    want = check_xnnpack(softmax_model(x.shape, s_in, beta), [x], delegated=False)
    want = next(iter(want.values()))
    np.testing.assert_array_equal(_softmax_twin(x, s_in, beta), want)
    return (bool(np.any(softmax_kernels.softmax_int8(x, *params) != want)),
            bool(np.any(_softmax_twin(x, s_in, beta, rounding="even") != want)))


SOFTMAX_CASES = [(0.1, 1.0, 4), (1 / 16, 1.0, 5), (0.02, 1.0, 30), (0.3, 0.7, 3), (0.05, 2.0, 10)]


def test_softmax_optimized_kernel():
    told = np.array([_check_softmax(*case) for case in SOFTMAX_CASES])
    assert told[:, 0].any(), "the reference kernel never disagreed: the rows tell nothing"


def test_softmax_rounds_ties_half_away():
    """512 equal logits: every probability is 1/512, i.e. 0.5 of an output step (scale 1/256),
    an exact tie (random rows almost never make one): half away gives 1, ties to even 0."""
    x = np.stack([np.full(512, v, np.int8) for v in (-128, -3, 0, 77, 127)])
    want = check_xnnpack(softmax_model(x.shape, 0.1, 1.0), [x], delegated=False)
    want = next(iter(want.values()))
    np.testing.assert_array_equal(_softmax_twin(x, 0.1, 1.0), want)
    assert np.any(_softmax_twin(x, 0.1, 1.0, rounding="even") != want)


def test_softmax_small_input_scale():
    """s_in * beta * 2^26 <= 1: TFLite's reference kernel aborts, the optimized kernel runs."""
    r = rng("softmax-small")
    model = softmax_model((4, 10), 1e-9)
    for t in model.main.operators[0].outputs:
        t.shape = (4, 10)
    data = model.to_bytes()
    x = int8(r, (4, 10))
    want = run_tflite(data, [x], "auto")
    got = qengine.Interpreter(data, arithmetic="xnnpack").run([x])
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


# -- LOGISTIC, TANH: the delegate's tables equal TFLite's LUTPopulate ones ----------------------


@pytest.mark.parametrize("op,out_q", [("LOGISTIC", (1 / 256, -128)), ("TANH", (1 / 128, 0))])
def test_logistic_tanh_every_input(op, out_q):
    """All 256 inputs at 20 input scales: the delegate takes both ops and its tables agree with
    the reference ones qengine builds (no XNNPACK-specific arithmetic needed)."""
    r = rng("logistic-tanh", op)
    for _ in range(20):
        in_q = (float(r.uniform(0.001, 0.2)), int(r.integers(-128, 128)))
        check_xnnpack(unary_model(op, (1, 256), in_q, out_q), [every_int8()])
