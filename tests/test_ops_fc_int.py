"""Int8 and hybrid FULLY_CONNECTED against TFLite, plus twins of the hybrid quantizers.

Int8: exact equality with BUILTIN_REF. Hybrid: bitwise equality with BUILTIN_REF and with the
optimized kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES); both run the same tensor_utils code.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import check_against_tflite, non_finite_rows, rng
from qengine.kernels import hybrid
from tflite_ref import run_tflite

import qengine
from qengine.builder import ACTIVATIONS, GraphBuilder, options
from qengine.errors import InvalidModelError
from qengine.ir import Quantization
from qengine.quantizer import quantize

ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


def int8(r, shape, low=-128):
    return r.integers(low, 128, shape).astype(np.int8)


def weight_quantization(r, units, per_channel, zero_point=0):
    if per_channel:
        return Quantization(r.uniform(1e-3, 5e-2, units).astype(np.float32),
                            np.zeros(units, np.int64), 0)
    return Quantization.per_tensor(0.0123, zero_point)


def fc_model(x_shape, x_dtype, w, wq, bias, *, act="NONE", keep=False, asymmetric=False,
             in_q=None, out_q=None, version=4):
    b = GraphBuilder()
    x = b.input("x", x_shape, x_dtype, in_q)
    inputs = [x, b.const("w", w, "int8", wq)]
    if bias is not None:
        inputs.append(bias(b))
    opts = options("FullyConnectedOptions", fusedActivationFunction=ACTIVATIONS[act],
                   keepNumDims=keep, asymmetricQuantizeInputs=asymmetric)
    y = b.op("FULLY_CONNECTED", inputs, options=opts, version=version,
             out_dtype=x_dtype, out_quantization=out_q)
    return b.build([y])


def assert_same_bits(model, inputs, resolver="ref"):
    data = model.to_bytes()
    want = run_tflite(data, inputs, resolver=resolver)
    got = qengine.Interpreter(data).run(inputs)
    for name, value in want.items():
        assert got[name].shape == value.shape
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# -- int8 --------------------------------------------------------------------------------------

SHAPES = [((3, 20), 7), ((2, 3, 16), 5), ((1, 1, 2, 33), 9), ((40,), 4)]


def int8_bias(r, units, in_scale, wq):
    scales = np.broadcast_to(wq.scale, (units,)).astype(np.float64) * in_scale
    q = Quantization(scales, np.zeros(units, np.int64), 0) if wq.scale.size > 1 else \
        Quantization.per_tensor(float(scales[0]))
    return lambda b: b.const("b", r.integers(-5000, 5000, units).astype(np.int32), "int32", q)


@pytest.mark.tf
@pytest.mark.parametrize("shape", range(len(SHAPES)))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_fc_int8(shape, act, per_channel, bias):
    x_shape, units = SHAPES[shape]
    keep = len(x_shape) > 2 and shape % 2 == 1
    r = rng("fc", shape, act, per_channel, bias)
    in_q = Quantization.per_tensor(0.04, int(r.integers(-20, 20)))
    wq = weight_quantization(r, units, per_channel, zero_point=0 if per_channel else 3)
    model = fc_model(x_shape, "int8", int8(r, (units, x_shape[-1]), -127), wq,
                     int8_bias(r, units, 0.04, wq) if bias else None, act=act, keep=keep,
                     in_q=in_q, out_q=Quantization.per_tensor(0.3, -5))
    for _ in range(2):
        check_against_tflite(model, [int8(r, x_shape)])


@pytest.mark.tf
@pytest.mark.parametrize("in_q,out_q", [
    ((0.5, -128), (0.001, 127)),  # effective scales far above 1
    ((1e-4, 127), (30.0, -128)),
])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fc_int8_extreme_params(in_q, out_q, per_channel):
    r = rng("fc-extreme", in_q, per_channel)
    wq = weight_quantization(r, 6, per_channel)
    model = fc_model((4, 24), "int8", int8(r, (6, 24), -127), wq,
                     int8_bias(r, 6, in_q[0], wq), in_q=Quantization.per_tensor(*in_q),
                     out_q=Quantization.per_tensor(*out_q))
    check_against_tflite(model, [int8(r, (4, 24))])


@pytest.mark.tf
def test_fc_quantized_by_qengine():
    r = rng("fc-q")
    b = GraphBuilder()
    x = b.input("x", (2, 30))
    w = b.const("w", r.normal(size=(12, 30)).astype(np.float32))
    bias = b.const("b", r.normal(size=12).astype(np.float32))
    y = b.op("FULLY_CONNECTED", [x, w, bias], options=options(
        "FullyConnectedOptions", fusedActivationFunction=ACTIVATIONS["RELU"]))
    model = quantize(b.build([y]), mode="int8", calibration=r.normal(size=(16, 2, 30)).astype(
        np.float32), quiet=True)
    for _ in range(3):
        check_against_tflite(model, [int8(r, (2, 30))])


def test_fc_int8_bias_scale_tolerance():
    """Per-tensor weights: TFLite refuses a bias scale far from s_in * s_w."""
    r = rng("fc-biasscale")
    wrong = lambda b: b.const("b", np.zeros(4, np.int32), "int32",
                              Quantization.per_tensor(0.5))
    model = fc_model((2, 8), "int8", int8(r, (4, 8)), Quantization.per_tensor(0.01), wrong,
                     in_q=Quantization.per_tensor(0.1), out_q=Quantization.per_tensor(0.1))
    with pytest.raises(InvalidModelError, match="bias scale"):
        qengine.Interpreter(model.to_bytes())


def test_fc_bad_shapes_are_refused():
    r = rng("fc-bad")
    q = Quantization.per_tensor(0.1)
    model = fc_model((2, 9), "int8", int8(r, (4, 8)), q, None, in_q=q, out_q=q)
    with pytest.raises(InvalidModelError):
        qengine.Interpreter(model.to_bytes())
    along_depth = Quantization(np.full(8, 0.1, np.float32), np.zeros(8, np.int64), 1)
    model = fc_model((2, 8), "int8", int8(r, (4, 8)), along_depth, None, in_q=q, out_q=q)
    with pytest.raises(InvalidModelError, match="axis"):
        qengine.Interpreter(model.to_bytes())


# -- hybrid ------------------------------------------------------------------------------------


def float_bias(r, units):
    return lambda b: b.const("b", r.normal(size=units).astype(np.float32))


def float_input(r, shape):
    return (r.normal(size=shape) * 3 + r.normal()).astype(np.float32)


HYBRID_SHAPES = [((3, 37), 10), ((4, 300), 16), ((2, 3, 8), 5), ((1, 64), 12)]


@pytest.mark.tf
@pytest.mark.parametrize("shape", range(len(HYBRID_SHAPES)))
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6"])
@pytest.mark.parametrize("path", ["small", "packed"])
def test_hybrid_fc(shape, per_channel, asymmetric, act, path, monkeypatch):
    """Both fast paths: these layers run as one small kernel (hybrid.SMALL_FC_MACS), and, with
    that limit at 0, through the packed GEMM and its epilogue."""
    if path == "packed":
        monkeypatch.setattr(hybrid, "SMALL_FC_MACS", 0)
    x_shape, units = HYBRID_SHAPES[shape]
    r = rng("hfc", shape, per_channel, asymmetric, act)
    model = fc_model(x_shape, "float32", int8(r, (units, x_shape[-1]), -127),
                     weight_quantization(r, units, per_channel),
                     float_bias(r, units) if shape != 2 else None, act=act, keep=shape == 2,
                     asymmetric=asymmetric, version=12 if per_channel else 9)
    x = float_input(r, x_shape)
    for resolver in ("ref", "nodelegate"):
        assert_same_bits(model, [x], resolver)


@pytest.mark.tf
@pytest.mark.parametrize("asymmetric", [False, True])
def test_hybrid_fc_special_rows(asymmetric):
    """Zero rows (sf = 1), all-positive and all-negative rows, a constant row, a huge value."""
    r = rng("hfc-special", asymmetric)
    x = float_input(r, (6, 40))
    x[0] = 0
    x[1] = np.abs(x[1])
    x[2] = -np.abs(x[2])
    x[3] = 1.75
    x[4, 7] = 3e7
    model = fc_model(x.shape, "float32", int8(r, (8, 40), -127), weight_quantization(r, 8, True),
                     float_bias(r, 8), asymmetric=asymmetric, version=12)
    assert_same_bits(model, [x])
    zeros = np.zeros_like(x)  # TFLite's all-zero shortcut: bias then activation
    assert_same_bits(model, [zeros])


@pytest.mark.tf
@pytest.mark.parametrize("depth", [13, 75])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("path", ["small", "packed"])
def test_hybrid_fc_non_finite_rows(depth, per_channel, asymmetric, act, path, monkeypatch):
    """Rows holding NaN, ±inf, hidden extremes or only denormals (op_harness.non_finite_rows),
    bit for bit with TFLite (NaN payloads and -0.0 included) and with its optimized kernels:
    the quantizers' min/max, conversions and zero points, and ApplyActivationToVector (NONE
    keeps ±inf; the ReLUs turn NaN into their low bound). Both fast paths (test_hybrid_fc)."""
    if path == "packed":
        monkeypatch.setattr(hybrid, "SMALL_FC_MACS", 0)
    r = rng("hfc-nonfinite", depth, per_channel, asymmetric, act)
    x = non_finite_rows(r, depth)
    units = 6
    model = fc_model(x.shape, "float32", int8(r, (units, depth), -127),
                     weight_quantization(r, units, per_channel), float_bias(r, units), act=act,
                     asymmetric=asymmetric, version=12 if per_channel else 9)
    data = model.to_bytes()
    got = qengine.Interpreter(data).run([x])
    for resolver in ("ref", "nodelegate"):
        for name, value in run_tflite(data, [x], resolver=resolver).items():
            assert np.isnan(value).any() == (act == "NONE")
            np.testing.assert_array_equal(got[name].view(np.int32), value.view(np.int32))


@pytest.mark.tf
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("asymmetric", [False, True])
def test_hybrid_from_dynamic_quantization(per_channel, asymmetric):
    r = rng("fc-dyn", per_channel, asymmetric)
    b = GraphBuilder()
    x = b.input("x", (3, 64))
    w = b.const("w", r.normal(size=(32, 64)).astype(np.float32))
    bias = b.const("b", r.normal(size=32).astype(np.float32))
    y = b.op("FULLY_CONNECTED", [x, w, bias], options=options(
        "FullyConnectedOptions", fusedActivationFunction=ACTIVATIONS["RELU6"]))
    model = quantize(b.build([y]), mode="dynamic", per_channel=per_channel,
                     asymmetric_inputs=asymmetric, quiet=True)
    assert model.subgraphs[0].operators[0].inputs[1].dtype == "int8"
    for _ in range(2):
        x = float_input(r, (3, 64))
        assert_same_bits(model, [x])
        assert_same_bits(model, [x], "nodelegate")


# -- twins of the hybrid quantizers and row sums -----------------------------------------------


def roundf(v: float) -> int:
    """C's roundf on a float32 value: ties away from zero."""
    t = int(v)  # truncates
    return t + (1 if v - t >= 0.5 else -1 if t - v >= 0.5 else 0)


def neon_round(v: np.float32) -> int:
    return int(np.float32(v + np.copysign(np.float32(0.5), v)))  # float32 add, then truncate


def symmetric_twin(row: np.ndarray):
    """NeonSymmetricQuantizeFloats, one element at a time."""
    top = max(abs(row.min()), abs(row.max()))
    if top == 0:
        return np.zeros(row.size, np.int8), np.float32(1)
    inv = np.float32(127) / top
    block = row.size & ~7
    q = [neon_round(v * inv) if i < block else roundf(float(v * inv)) for i, v in enumerate(row)]
    return np.clip(q, -127, 127).astype(np.int8), np.float32(top / np.float32(127))


def asymmetric_twin(row: np.ndarray):
    """NeonAsymmetricQuantizeFloats, one element at a time with Python floats as doubles."""
    rmin, rmax = min(np.float32(0), row.min()), max(np.float32(0), row.max())
    if rmin == rmax:
        return np.zeros(row.size, np.int8), np.float32(1), 0
    scale = float(np.float32(rmax - rmin)) / 255.0
    from_min, from_max = -128 - float(rmin) / scale, 127 - float(rmax) / scale
    zp_real = from_min if 128 + abs(float(rmin) / scale) < 127 + abs(float(rmax) / scale) \
        else from_max
    zp = -128 if zp_real <= -128 else 127 if zp_real >= 127 else roundf(zp_real)
    sf = np.float32(scale)
    inv = np.float32(1.0 / float(sf))
    block = row.size & ~7
    q = [(neon_round(v * inv) if i < block else roundf(float(v * inv))) + zp
         for i, v in enumerate(row)]
    return np.clip(q, -128, 127).astype(np.int8), sf, zp


@pytest.mark.parametrize("seed", range(6))
def test_quantizer_twins(seed):
    r = np.random.default_rng(seed)
    rows = (r.normal(size=(5, 8 * seed + 3)) * 10 ** r.uniform(-3, 3)).astype(np.float32)
    rows[0] = 0
    rows[1] = np.abs(rows[1])
    q, sf = hybrid.quantize_symmetric(rows)
    qa, sfa, zpa = hybrid.quantize_asymmetric(rows)
    for i, row in enumerate(rows):
        want_q, want_sf = symmetric_twin(row)
        np.testing.assert_array_equal(q[i], want_q)
        assert sf[i] == want_sf
        want_q, want_sf, want_zp = asymmetric_twin(row)
        np.testing.assert_array_equal(qa[i], want_q)
        assert (sfa[i], zpa[i]) == (want_sf, want_zp)


def test_neon_rounding_corner():
    """0.5 - 2^-25 rounds to 1 in the Neon blocks (float32 sum) but to 0 in the tail."""
    v = np.float32(0.5) - np.float32(2.0 ** -25)
    assert neon_round(v) == 1 and roundf(float(v)) == 0
    row = np.full(9, v, np.float32)
    row[0] = 127  # inv = 1, so x * inv = x
    q, _ = hybrid.quantize_symmetric(row[None])
    assert q[0, 1] == 1 and q[0, 8] == 0


def test_row_sums_wrap_like_int16_lanes():
    w = np.full((2, 2 * 16 * 130 + 11), 127, np.int8)
    w[1] = -3
    lane = ((2 * 127 * 260 + 127 + 2**15) % 2**16) - 2**15  # one lane's wrapped int16 sum
    want0 = 8 * lane + 3 * 127
    np.testing.assert_array_equal(hybrid.row_sums_sse(w), [want0, -3 * w.shape[1]])
    small = np.random.default_rng(0).integers(-127, 128, (5, 77)).astype(np.int8)
    np.testing.assert_array_equal(hybrid.row_sums_sse(small), small.sum(axis=1))


@pytest.mark.tf
def test_hybrid_fc_row_sum_wrap_matches_tflite():
    """Rows long enough for TFLite's 16-bit row-sum lanes to wrap (asymmetric inputs)."""
    r = rng("wrap")
    w = np.full((4, 4171), 127, np.int8)
    w[1] = -127
    w[2, ::2] = 100
    assert not np.array_equal(hybrid.row_sums_sse(w), w.astype(np.int64).sum(axis=1))
    model = fc_model((2, 4171), "float32", w, Quantization.per_tensor(0.01), None,
                     asymmetric=True, version=9)
    x = float_input(r, (2, 4171)) + 2
    assert np.all(hybrid.quantize_asymmetric(x)[2] != 0)
    assert_same_bits(model, [x])
