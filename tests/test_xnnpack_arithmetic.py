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
from tflite_ref import make_interpreter, run_tflite

import qengine
from qengine.builder import ACTIVATIONS, SAME, VALID, GraphBuilder, options
from qengine.ir import Quantization

pytestmark = pytest.mark.tf

ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


def rng(*key):
    return np.random.default_rng(abs(hash(key)) % 2**32)


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
