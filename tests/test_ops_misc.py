"""DILATE, HASHTABLE_LOOKUP and FAKE_QUANT against TFLite's reference kernels; CALL (which
TFLite's builtin resolver does not register) against the same graph inlined."""

import numpy as np
import pytest
from op_harness import In, check, rand, single_op

import qengine
from qengine.builder import GraphBuilder, options
from qengine.errors import UnsupportedOpError
from qengine.ir import Model, verify


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["float32", "int8", "int32", "int64", "bool"])
@pytest.mark.parametrize("steps", [[1, 1], [2, 3], [1, 4]])
def test_dilate(dtype, steps):
    x = rand((3, 4), dtype, seed=1)
    check("DILATE", [In(x), np.array(steps, np.int32), In(rand((), dtype, seed=2))])


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["float32", "uint8", "int32"])
def test_hashtable_lookup(dtype):
    keys = np.array([-3, 0, 4, 7, 20], np.int32)
    lookup = np.array([4, 5, -3, 20, 21, -9], np.int32)  # half of them miss
    model, feeds = single_op("HASHTABLE_LOOKUP", [In(lookup), keys, In(rand((5, 3), dtype))],
                             n_outputs=2)
    model.main.outputs[0].dtype, model.main.outputs[1].dtype = dtype, "uint8"
    from op_harness import check_against_tflite

    check_against_tflite(model, feeds)


@pytest.mark.tf
@pytest.mark.parametrize("low,high,bits", [(-1.0, 1.0, 8), (-0.3, 2.7, 8), (0.0, 6.0, 4),
                                           (-5.0, 0.0, 16), (-1.7, 0.9, 2)])
def test_fake_quant(low, high, bits):
    x = rand((6, 50), seed=3) * 2
    check("FAKE_QUANT", [In(x)], options("FakeQuantOptions", min=low, max=high, numBits=bits))


def test_fake_quant_narrow_range_is_refused_as_tflite_does():
    model, _ = single_op("FAKE_QUANT", [In(rand((4,)))],
                         options("FakeQuantOptions", min=-1.0, max=1.0, numBits=8,
                                 narrowRange=True))
    with pytest.raises(UnsupportedOpError, match="narrow_range"):
        qengine.Interpreter(model)


def test_call_runs_the_subgraph():
    """main: y = CALL(x, x) with subgraph 1 computing a * b + a."""
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    y = b.op("CALL", [x, x], (2, 3), options=options("CallOptions", subgraph=1))
    b.subgraph.outputs = [y]
    sub = GraphBuilder("body")
    p, q = sub.input("p", (2, 3)), sub.input("q", (2, 3))
    product = sub.op("MUL", [p, q], (2, 3), options=options("MulOptions"))
    sub.subgraph.outputs = [sub.op("ADD", [product, p], (2, 3), options=options("AddOptions"))]
    model = Model(subgraphs=[b.subgraph, sub.subgraph], description="test")
    verify(model)
    value = rand((2, 3), seed=4)
    np.testing.assert_array_equal(qengine.Interpreter(model).run(value)["call_out"],
                                  value * value + value)
