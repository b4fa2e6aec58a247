"""Float FULLY_CONNECTED against TFLite's reference kernel: input ranks 1-4, keepNumDims,
optional bias, constant and computed weights, fused activations, and malformed models."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import check_against_tflite, rng
from tflite_ref import run_tflite

import qengine
from qengine.builder import ACTIVATIONS, GraphBuilder, options
from qengine.errors import InvalidModelError, UnsupportedOpError
from qengine.ir import Quantization

# FULLY_CONNECTED matches TFLite within the default tolerance (1e-5 of the output range);
# with constant weights bit for bit (test_constant_weights_are_bit_exact).


def normal(r, shape):
    return (r.normal(size=shape) * 2).astype(np.float32)


def fc_model(x_shape, weights, bias=None, keep_num_dims=False, activation="NONE",
             const_weights=True, **extra):
    b = GraphBuilder()
    x = b.input("x", x_shape)
    w = b.const("w", weights) if const_weights else b.input("w", weights.shape)
    inputs = [x, w] if bias is False else [x, w, None if bias is None else b.const("b", bias)]
    opts = options("FullyConnectedOptions", keepNumDims=keep_num_dims,
                   fusedActivationFunction=ACTIVATIONS[activation], **extra)
    out = b.op("FULLY_CONNECTED", inputs, None, "float32", options=opts,
               version=5 if keep_num_dims else 1)
    return b.build(outputs=[out])


@pytest.mark.tf
@pytest.mark.parametrize("x_shape", [(6,), (3, 6), (2, 3, 6), (2, 2, 3, 6), (4, 3), (2, 3, 4)])
@pytest.mark.parametrize("units", [1, 5])
@pytest.mark.parametrize("keep_num_dims", [False, True])
@pytest.mark.parametrize("bias", [None, False, True])  # omitted (-1), absent, present
def test_fully_connected(x_shape, units, keep_num_dims, bias):
    depth = 6
    if keep_num_dims and x_shape[-1] != depth:
        pytest.skip("keepNumDims needs the last dim to be the depth")
    r = rng(x_shape, units, keep_num_dims, bias)
    weights = normal(r, (units, depth))
    b = normal(r, (units,)) if bias else bias
    check_against_tflite(fc_model(x_shape, weights, b, keep_num_dims), [normal(r, x_shape)])


@pytest.mark.tf
@pytest.mark.parametrize("rows, depth, units", [(1, 1024, 40), (8, 512, 33), (3, 7, 5),
                                                (37, 96, 96), (2, 300, 1)])
@pytest.mark.parametrize("threads", [1, 2])
def test_constant_weights_are_bit_exact(rows, depth, units, threads, monkeypatch):
    """Constant weights: each sum from 0.0 over the depth in order, every product rounded, then
    + bias and the clamp, as reference_ops::FullyConnected (the float conv GEMM as a 1x1 conv;
    BLAS's blocked, fused sums differ in the last bits); inputs with inf and NaN, 2 threads
    split."""
    from qengine.kernels import threads as pool

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 1)
    r = rng("exact", rows, depth, units)
    model = fc_model((rows, depth), normal(r, (units, depth)), normal(r, (units,)),
                     activation="RELU6" if units == 5 else "NONE")
    x = normal(r, (rows, depth)) * 10
    if rows > 1:  # (a row of NaN and inf outputs; the others must still match)
        x[0, :3] = np.inf, -np.inf, np.nan
    want = run_tflite(model.to_bytes(), [x], "ref")
    got = qengine.Interpreter(model, num_threads=threads).run([x])
    for name, value in want.items():
        nan = np.isnan(value)
        assert not nan.all()
        np.testing.assert_array_equal(np.isnan(got[name]), nan)
        np.testing.assert_array_equal(got[name][~nan].view(np.int32), value[~nan].view(np.int32))


@pytest.mark.tf
@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU_N1_TO_1", "RELU6"])
def test_fully_connected_fused_activation(activation):
    r = rng("activation", activation)
    model = fc_model((4, 8), normal(r, (7, 8)), normal(r, (7,)), activation=activation)
    check_against_tflite(model, [normal(r, (4, 8))])


@pytest.mark.tf
def test_fully_connected_computed_weights():
    r = rng("computed")
    w = normal(r, (5, 8))
    model = fc_model((3, 8), w, normal(r, (5,)), const_weights=False)
    check_against_tflite(model, [normal(r, (3, 8)), w])


@pytest.mark.tf
def test_fully_connected_large():
    r = rng("large")
    model = fc_model((2, 7, 96), normal(r, (130, 96)), normal(r, (130,)), keep_num_dims=True)
    check_against_tflite(model, [normal(r, (2, 7, 96))])


def expect(error, model):
    with pytest.raises(error):
        qengine.Interpreter(model.to_bytes())


def test_fully_connected_rejects_inputs_that_do_not_split_into_rows():
    expect(InvalidModelError, fc_model((2, 7), np.ones((3, 4), np.float32)))


def test_fully_connected_rejects_keep_num_dims_with_other_last_dim():
    expect(InvalidModelError, fc_model((2, 4, 2), np.ones((3, 4), np.float32), keep_num_dims=True))


def test_fully_connected_rejects_bad_bias_and_activation():
    expect(InvalidModelError, fc_model((2, 4), np.ones((3, 4), np.float32),
                                       np.ones(2, np.float32)))
    expect(InvalidModelError, fc_model((2, 4), np.ones((3, 4), np.float32), activation="TANH"))
    expect(InvalidModelError, fc_model((2, 4), np.ones((3, 4, 1), np.float32)))


def test_fully_connected_shuffled_weights_are_unsupported():
    expect(UnsupportedOpError, fc_model((2, 4), np.ones((3, 4), np.float32), weightsFormat=1))


@pytest.mark.tf
def test_fully_connected_hybrid_goes_to_the_quantized_path():
    # float32 input with int8 weights (dynamic-range model): fully_connected_int's hybrid kernel
    r = rng("hybrid")
    b = GraphBuilder()
    x = b.input("x", (3, 8))
    q = Quantization(np.array([0.02], np.float32), np.array([0], np.int64))
    w = b.const("w", r.integers(-127, 128, size=(4, 8)).astype(np.int8), "int8", quantization=q)
    out = b.op("FULLY_CONNECTED", [x, w, b.const("b", normal(r, (4,)))], (3, 4), "float32",
               options=options("FullyConnectedOptions"))
    check_against_tflite(b.build(outputs=[out]), [normal(r, (3, 8))])
