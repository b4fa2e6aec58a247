"""QUANTIZE between integer types (qengine.ops.quantization_int.requantize) against TFLite's
reference kernel, bit for bit."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import check_against_tflite, rng

import qengine
from qengine.builder import GraphBuilder
from qengine.errors import UnsupportedOpError
from qengine.ir import Quantization

RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def q(scale, zero_point=0):
    return Quantization.per_tensor(scale, zero_point)


def requantize_model(shape, in_dtype, in_q, out_dtype, out_q):
    b = GraphBuilder()
    x = b.input("x", shape, in_dtype, in_q)
    out = b.op("QUANTIZE", [x], shape, out_dtype, out_quantization=out_q,
               version=2 if out_dtype == "int16" else 1)
    return b.build(outputs=[out])


def every_value(dtype, shape=None):
    low, high = RANGES[dtype]
    values = np.arange(low, high + 1).astype(dtype)
    return values if shape is None else np.resize(values, shape)


CASES = [  # (input dtype, input q, output dtype, output q)
    ("int8", q(0.05, 3), "int8", q(0.1, -20)),
    ("int8", q(0.05, -128), "int8", q(0.013, 127)),  # multiplier > 1
    ("int8", q(0.5, 0), "int8", q(0.5, 0)),  # identity
    ("int8", q(1 / 64, 1), "int8", q(1 / 16, -2)),  # exact ties
    ("int8", q(1e-5, 0), "int8", q(1.0, 0)),  # tiny multiplier
    ("int8", q(0.02, -5), "uint8", q(0.02, 123)),  # zero points 128 apart: the xor fast path
    ("int8", q(0.02, -5), "uint8", q(0.07, 200)),
    ("uint8", q(0.02, 128), "int8", q(0.02, 0)),
    ("uint8", q(0.3, 10), "int8", q(0.01, -100)),
    ("uint8", q(0.3, 10), "uint8", q(0.2, 250)),
    ("int16", q(1e-3, 0), "int8", q(0.05, 4)),
    ("int16", q(1e-3, 0), "int16", q(3e-3, 0)),
    ("int16", q(2e-3, 0), "int16", q(1e-4, 0)),  # saturates
]


@pytest.mark.tf
@pytest.mark.parametrize("case", range(len(CASES)))
def test_requantize_every_input_value(case):
    in_dtype, in_q, out_dtype, out_q = CASES[case]
    x = every_value(in_dtype)
    check_against_tflite(requantize_model(x.shape, in_dtype, in_q, out_dtype, out_q), [x])


@pytest.mark.tf
@pytest.mark.parametrize("seed", range(4))
def test_requantize_random_params(seed):
    r = rng("requantize", seed)
    for in_dtype, out_dtype in [("int8", "int8"), ("int8", "uint8"), ("uint8", "int8")]:
        in_q = q(float(np.exp(r.uniform(-8, 0))), int(r.integers(*RANGES[in_dtype])))
        out_q = q(float(np.exp(r.uniform(-8, 0))), int(r.integers(*RANGES[out_dtype])))
        x = every_value(in_dtype, (2, 4, 32))
        check_against_tflite(requantize_model(x.shape, in_dtype, in_q, out_dtype, out_q), [x])


@pytest.mark.parametrize("pair", [("int8", "int16"), ("uint8", "int16"), ("int16", "uint8")])
def test_unsupported_type_pairs(pair):
    model = requantize_model((4,), pair[0], q(0.1), pair[1], q(0.1))
    with pytest.raises(UnsupportedOpError):
        qengine.Interpreter(model.to_bytes())


def test_per_channel_requantize_is_unsupported():
    per_channel = Quantization(np.array([0.1, 0.2], np.float32), np.zeros(2, np.int64), 0)
    model = requantize_model((2, 3), "int8", q(0.1), "int8", per_channel)
    with pytest.raises(UnsupportedOpError):
        qengine.Interpreter(model.to_bytes())


# -- float -> int QUANTIZE (reference AffineQuantize) -------------------------------------------

SPECIAL_FLOATS = np.array([np.nan, -np.nan, np.inf, -np.inf, 1e10, -1e10, 2.1e9, -2.1e9, 0.0,
                           -0.0, 0.25, 0.4999999702, 0.5, -0.5, 0.75, 1.25, -1.25, 63.5, -64.5,
                           16383.5, -16384.5, 1e5, -1e5], np.float32)


def _float_quantize_model(dtype, scale, zero_point):
    q = Quantization(scale=np.float32([scale]), zero_point=np.int64([zero_point]))
    b = GraphBuilder()
    x = b.input("x", SPECIAL_FLOATS.shape, "float32")
    return b.build(outputs=[b.op("QUANTIZE", [x], SPECIAL_FLOATS.shape, dtype,
                                 out_quantization=q)])


@pytest.mark.tf
@pytest.mark.parametrize(("dtype", "scale", "zero_point"), [
    ("int8", 0.5, 3), ("int8", 1.0, -5), ("int8", 0.25, -128), ("uint8", 0.5, 3),
    ("uint8", 1.0, 255), ("int16", 0.5, 0), ("int16", 3.0517578125e-05, 0)])
def test_float_quantize_specials_match_tflite(dtype, scale, zero_point):
    """Outside int32 (and NaN) TFLite's static_cast gives INT32_MIN, and a negative zero
    point wraps that sum to the top: NaN/±inf become qmin, or qmax when zero_point < 0."""
    check_against_tflite(_float_quantize_model(dtype, scale, zero_point), [SPECIAL_FLOATS])


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_affine_quantize_kernel_equals_qparams_in_range(dtype):
    """The kernel against qparams.quantize (the formula's one NumPy form), bit for bit, on
    values whose quotient fits int32 (where the two agree by definition), halves included."""
    from qengine.kernels.quantize import affine_quantize

    from qengine.qparams import int_range, quantize

    r = rng("affine", dtype)
    qmin, qmax = int_range(dtype)
    for scale, zero_point in [(0.5, 3), (0.037, -7), (1e-3, 0), (7.5, qmin)]:
        x = np.concatenate([r.uniform(-300, 300, 5000), (r.integers(-600, 600, 2000) + 0.5)
                            * scale]).astype(np.float32)
        want = quantize(x, np.float32(scale), zero_point, dtype)
        got = affine_quantize(x, np.float32(scale), zero_point, qmin, qmax,
                              np.empty(x.size, dtype))
        assert np.array_equal(got, want), (scale, zero_point)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32"])
def test_affine_dequantize_kernel_equals_qparams(dtype):
    """DEQUANTIZE's kernel against qparams.dequantize (float64 product, one rounding), bit for
    bit, over the type's extremes and random values."""
    from qengine.kernels.quantize import affine_dequantize

    from qengine.qparams import dequantize

    info = np.iinfo(dtype)
    r = rng("dequantize", dtype)
    x = np.concatenate([[info.min, info.max, 0, -1 if info.min else 1],
                        r.integers(info.min, info.max, 5000, endpoint=True)]).astype(dtype)
    for scale, zero_point in [(0.5, 3), (0.0370013, -7), (3.0517578125e-05, 0), (7.5, -128)]:
        want = dequantize(x, np.float32(scale), zero_point)
        got = affine_dequantize(x, float(np.float32(scale)), zero_point,
                                np.empty(x.size, np.float32))
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (scale, zero_point)
