"""Int8 MEAN and SUM against TFLite BUILTIN_REF (exact equality).

BUILTIN_REF's int8 SUM reads its int8 data as uint8 (see qengine/ops/reduce_int.py); the
default `arithmetic="ref"` reproduces that, `arithmetic="xnnpack"` sums signed values like the
optimized kernel, whose different MBQM rounding (NEON, ties up) allows +-1 (tests/deviations.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import check_against_tflite, rng
from tflite_ref import run_tflite

import qengine
from qengine.builder import GraphBuilder, options
from qengine.errors import InvalidModelError, UnsupportedOpError
from qengine.ir import Quantization
from qengine.quantizer import quantize


def int8(r, shape):
    return r.integers(-128, 128, shape).astype(np.int8)


def reduce_model(op, shape, axes, keep, in_q=(0.05, 3), out_q=(0.04, -2)):
    b = GraphBuilder()
    x = b.input("x", shape, "int8", Quantization.per_tensor(*in_q))
    axis = b.const("axis", np.asarray(axes, np.int32))
    y = b.op(op, [x, axis], options=options("ReducerOptions", keepDims=keep), version=2,
             out_quantization=Quantization.per_tensor(*out_q))
    return b.build([y])


CASES = [  # shape, axes
    ((2, 5, 6, 3), [1, 2]),
    ((2, 5, 6, 3), [-1]),
    ((2, 5, 6, 3), [0, 2]),  # not contiguous: transposed
    ((2, 5, 6, 3), [3, 1, 1]),  # repeated, unordered
    ((7, 9), [0]),
    ((4, 3, 2, 5, 2), [0, 2, 4]),
    ((11,), [0]),
    ((3, 4, 5), []),  # no axes: every element is requantized
    ((2, 3, 4), [0, 1, 2]),
]


@pytest.mark.tf
@pytest.mark.parametrize("op", ["MEAN", "SUM"])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("keep", [False, True])
def test_reduce_int8(op, case, keep):
    shape, axes = CASES[case]
    r = rng(op, case, keep)
    model = reduce_model(op, shape, axes, keep)
    for _ in range(2):
        check_against_tflite(model, [int8(r, shape)])


@pytest.mark.tf
@pytest.mark.parametrize("op", ["MEAN", "SUM"])
@pytest.mark.parametrize("in_q,out_q", [
    ((0.5, -128), (0.002, 127)),  # multiplier >> 1, saturating
    ((1e-3, 127), (2.0, -128)),  # tiny multiplier
    ((0.1, 0), (0.1, 0)),  # equal params
    ((0.02, -50), (0.9, 10)),
])
def test_reduce_int8_params(op, in_q, out_q):
    r = rng(op, in_q, out_q)
    for shape, axes in [((1, 7, 7, 16), [1, 2]), ((3, 100), [1]), ((2, 33, 4), [0, 1])]:
        model = reduce_model(op, shape, axes, True, in_q, out_q)
        check_against_tflite(model, [int8(r, shape)])


@pytest.mark.tf
@pytest.mark.parametrize("case", [0, 2, 5, 7])
def test_sum_signed_personality(case):
    """arithmetic="xnnpack": signed sums, within 1 of TFLite's optimized kernel."""
    shape, axes = CASES[case]
    r = rng("signed", case)
    model = reduce_model("SUM", shape, axes, False, (0.01, -3), (0.5, 4))
    x = int8(r, shape)
    want = next(iter(run_tflite(model.to_bytes(), [x], resolver="nodelegate").values()))
    got = next(iter(qengine.Interpreter(model.to_bytes(), arithmetic="xnnpack").run(
        [x]).values()))
    assert got.dtype == np.int8 and got.shape == want.shape
    assert np.abs(got.astype(int) - want).max() <= 1


@pytest.mark.tf
def test_mean_quantized_by_qengine():
    r = rng("qmean")
    b = GraphBuilder()
    x = b.input("x", (2, 6, 6, 5))
    y = b.op("MEAN", [x, b.const("axis", np.array([1, 2], np.int32))],
             options=options("ReducerOptions", keepDims=False))
    model = quantize(b.build([y]), mode="int8", quiet=True,
                     calibration=r.normal(size=(8, 2, 6, 6, 5)).astype(np.float32))
    for _ in range(3):
        check_against_tflite(model, [int8(r, (2, 6, 6, 5))])


def test_bad_reductions_are_refused():
    with pytest.raises(InvalidModelError, match="axis"):
        qengine.Interpreter(reduce_model("MEAN", (2, 3), [2], False).to_bytes())
    with pytest.raises(InvalidModelError, match="axis"):
        qengine.Interpreter(reduce_model("SUM", (2, 3), [-3], True).to_bytes())
    model = reduce_model("SUM", (2, 3), [1], False)
    model.subgraphs[0].inputs[0].quantization = Quantization(
        np.array([0.1, 0.2], np.float32), np.zeros(2, np.int64), 0)
    with pytest.raises(InvalidModelError, match="per-tensor"):
        qengine.Interpreter(model.to_bytes())
    model = reduce_model("MEAN", (2, 3), [1], False)
    model.subgraphs[0].operators[0].outputs[0].dtype = "int16"
    with pytest.raises(UnsupportedOpError):
        qengine.Interpreter(model.to_bytes())
