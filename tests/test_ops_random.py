"""RANDOM_UNIFORM, RANDOM_STANDARD_NORMAL and MULTINOMIAL with fixed seeds against TFLite's
reference kernels over several invokes: the same Philox stream, call after call."""

import numpy as np
import pytest
from op_harness import In, assert_close, single_op
from tflite_ref import make_interpreter

import qengine
from qengine.builder import options


def _invokes(model, feeds, calls=3):
    """TFLite's outputs over `calls` invokes of one interpreter, and qengine's."""
    data = model.to_bytes()
    tfl = make_interpreter(data)
    tfl.allocate_tensors()
    for d, x in zip(tfl.get_input_details(), feeds):
        tfl.set_tensor(d["index"], x)
    (out,) = tfl.get_output_details()
    interpreter = qengine.Interpreter(data)
    pairs = []
    for _ in range(calls):
        tfl.invoke()
        pairs.append((interpreter.run(feeds)[out["name"]], tfl.get_tensor(out["index"])))
    return pairs, interpreter


@pytest.mark.tf
@pytest.mark.parametrize("shape", [(7,), (2, 3, 5), (4, 4)])
@pytest.mark.parametrize("seeds", [(1, 2), (123456789, 0), (0, 77)])
def test_random_uniform_is_tflites_stream(shape, seeds):
    model, feeds = single_op("RANDOM_UNIFORM", [np.array(shape, np.int32)],
                             options("RandomOptions", seed=seeds[0], seed2=seeds[1]),
                             out_dtype="float32")
    pairs, interpreter = _invokes(model, feeds)
    for got, want in pairs:
        np.testing.assert_array_equal(got, want)  # exact: bits of the Philox output
    assert not np.array_equal(pairs[0][0], pairs[1][0])  # the stream moves on
    interpreter.reset_variables()
    np.testing.assert_array_equal(interpreter.run(feeds)["random_uniform_out"], pairs[0][1])


@pytest.mark.tf
@pytest.mark.parametrize("shape", [(8,), (3, 5)])
@pytest.mark.parametrize("seeds", [(1, 2), (99, 5)])
def test_random_standard_normal(shape, seeds):
    model, feeds = single_op("RANDOM_STANDARD_NORMAL", [np.array(shape, np.int32)],
                             options("RandomOptions", seed=seeds[0], seed2=seeds[1]),
                             out_dtype="float32")
    for i, (got, want) in enumerate(_invokes(model, feeds)[0]):
        assert_close(f"call {i}", got, want)


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["int64", "int32"])
@pytest.mark.parametrize("samples", [1, 6, 9])
def test_multinomial(dtype, samples):
    logits = np.array([[0.0, 1.0, -1.0, 2.0], [5.0, -np.inf, 0.5, 0.5],
                       [0.1, 0.2, 0.3, 0.4]], np.float32)
    model, feeds = single_op("MULTINOMIAL", [In(logits), np.array(samples, np.int32)],
                             options("RandomOptions", seed=7, seed2=11), out_dtype=dtype)
    for got, want in _invokes(model, feeds)[0]:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_an_output_shape_beyond_the_element_limit_is_an_error_not_an_allocation():
    from qengine.errors import QEngineError

    model, _ = single_op("RANDOM_UNIFORM", [In(np.array([1, 1], np.int32))],
                         options("RandomOptions", seed=1, seed2=2), out_dtype="float32")
    with pytest.raises(QEngineError, match="more than"):
        qengine.Interpreter(model).run(np.array([100000, 100000], np.int32))
    model, _ = single_op("SPARSE_TO_DENSE", [In(np.array([[0, 0]], np.int32)),
                                             In(np.array([2, 2], np.int32)),
                                             In(np.array([1.0], np.float32)),
                                             In(np.array(0.0, np.float32))])
    with pytest.raises(QEngineError, match="more than"):
        qengine.Interpreter(model).run([np.array([[0, 0]], np.int32),
                                        np.array([1 << 20, 1 << 20], np.int32),
                                        np.array([1.0], np.float32), np.array(0.0, np.float32)])
