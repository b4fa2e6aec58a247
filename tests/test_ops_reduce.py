"""Reductions against TFLite's reference kernels: axes, negative and repeated axes, keep_dims."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import In, check, rand, single_op

import qengine
from qengine.builder import options
from qengine.ir import Quantization

# No empty axes: the IR cannot hold a zero-byte constant (Tensor.is_constant needs a buffer)
AXES = [[0], [1], [-1], [0, 2], [2, 0, -1], [1, -2], [0, 1, 2]]


def reduce_check(op, x, axes, keep, **kwargs):
    return check(op, [In(x), np.array(axes, np.int32).reshape(len(axes))],
                 options("ReducerOptions", keepDims=keep), **kwargs)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["MEAN", "SUM", "REDUCE_PROD", "REDUCE_MAX", "REDUCE_MIN"])
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("keep", [False, True])
def test_float(op, axes, keep):
    x = rand((3, 4, 5), seed=len(axes))
    if op == "REDUCE_PROD":
        x = 0.5 + np.abs(x)  # keep products in a sane range
    reduce_check(op, x, axes, keep)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"])
@pytest.mark.parametrize("shape,axes", [((7,), [0]), ((2, 3, 4, 5), [1, 2]),
                                        ((2, 3, 2, 3, 2), [0, 4, -2]), ((64, 300), [1])])
def test_float_ranks(op, shape, axes):
    reduce_check(op, rand(shape, seed=1), axes, False)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["MEAN", "SUM", "REDUCE_PROD", "REDUCE_MAX", "REDUCE_MIN"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("axes", [[0], [-1], [0, 2]])
@pytest.mark.parametrize("keep", [False, True])
def test_integers(op, dtype, axes, keep):
    x = rand((3, 4, 5), dtype, seed=2)
    if op == "REDUCE_PROD":
        x = np.clip(x, -3, 3).astype(dtype)
    reduce_check(op, x, axes, keep)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["REDUCE_MAX", "REDUCE_MIN"])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
@pytest.mark.parametrize("axes", [[1], [0, -1]])
def test_max_min_select_raw_integers(op, dtype, axes):
    # selecting needs no requantization: the output keeps the input's parameters
    x = rand((3, 4, 5), dtype, seed=3)
    q = Quantization.per_tensor(0.1, 0 if dtype == "int16" else 5)
    check(op, [In(x, q), np.array(axes, np.int32)], options("ReducerOptions", keepDims=False),
          out_quantization=q)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["REDUCE_ANY", "REDUCE_ALL"])
@pytest.mark.parametrize("axes", [[0], [-1], [0, 2], [1, 1]])
@pytest.mark.parametrize("keep", [False, True])
def test_bool(op, axes, keep):
    x = rand((3, 4, 5), "float32", seed=4) < 0.9  # mostly true, so ALL is sometimes true
    reduce_check(op, x, axes, keep)


@pytest.mark.parametrize("op", ["MEAN", "SUM", "REDUCE_MAX"])
def test_requantizing_reductions_take_the_quantized_path(op):
    q = Quantization.per_tensor(0.1, 2)
    model, _ = single_op(op, [In(rand((2, 3), "int8"), q), np.array([1], np.int32)],
                         options("ReducerOptions", keepDims=False),
                         out_quantization=Quantization.per_tensor(0.05, -1))
    try:
        qengine.Interpreter(model)
    except qengine.UnsupportedOpError as e:  # until reduce_int provides it
        assert "no quantized kernel" in str(e)


@pytest.mark.parametrize("op,x,axes", [
    ("MEAN", rand((2, 3)), [2]),
    ("SUM", rand((2, 3)), [-3]),
    ("REDUCE_ANY", rand((2, 3)), [0]),  # ANY needs bool
])
def test_bad_models_raise(op, x, axes):
    model, _ = single_op(op, [In(x), np.array(axes, np.int32)], options("ReducerOptions"))
    with pytest.raises((qengine.InvalidModelError, qengine.UnsupportedOpError)):
        qengine.Interpreter(model)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["SUM", "MEAN"])
@pytest.mark.parametrize("shape,axes", [((1, 30, 17, 2), [3]), ((2, 3, 4, 5), [1, 3]),
                                        ((3, 4, 5), [0, 2]), ((6, 2, 8), [0, 1]),
                                        ((1, 7, 7, 40), [1, 2]), ((3, 50), [1]),
                                        ((20, 3, 5), [0, 2]), ((5, 1, 300), [2, 0])])
@pytest.mark.parametrize("specials", [True, False])
def test_float_sums_are_exact(op, shape, axes, specials):
    """A float SUM or MEAN adds each output's values in TFLite's order, from 0.0, in one
    compiled loop over the input seen as [outer, reduced, inner] (reduced axes side by side,
    also across kept axes of size 1) or with the reduced axes moved first (the others): bit
    for bit, where -0.0 + -0.0 gives +0.0 and an inf or NaN propagates as in C. Without the specials (which leave few outputs finite when many
    values are summed), magnitudes over eight decades, where any other order rounds apart."""
    from op_harness import model_bytes
    from tflite_ref import run_tflite

    x = rand(shape, seed=len(axes)) * 1e3
    flat = x.reshape(-1)
    if specials:
        flat[::4], flat[1::9], flat[3::31] = -0.0, 1e-30, np.nan
        flat[5::37], flat[6::41] = np.inf, -np.inf
    else:
        flat *= np.float32(10.0) ** np.random.default_rng(7).uniform(-4, 4, flat.size)
        flat[::7] = -0.0
    model, feeds = single_op(op, [In(x), np.array(axes, np.int32)],
                             options("ReducerOptions", keepDims=False))
    want = run_tflite(model_bytes(model), feeds, "ref")
    got = qengine.Interpreter(model_bytes(model)).run(feeds)
    for name, value in want.items():
        nan = np.isnan(value)
        np.testing.assert_array_equal(np.isnan(got[name]), nan)
        np.testing.assert_array_equal(got[name][~nan].view(np.int32), value[~nan].view(np.int32))
