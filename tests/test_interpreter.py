"""The Interpreter's public API: input forms, keep=True, signatures, custom kernels, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import qengine
from qengine.builder import GraphBuilder
from qengine.runtime import Prepared, register_op

MODEL = Path(__file__).parents[1] / "examples" / "digits.tflite"
X = np.load(MODEL.parent / "digits_data.npz")["test_images"][:4]


@pytest.fixture(scope="module")
def interpreter():
    return qengine.Interpreter(MODEL)


def test_input_forms_agree(interpreter):
    name = interpreter.inputs[0].name
    by_array = interpreter.run(X)
    for other in (interpreter.run([X]), interpreter.run({name: X}),
                  interpreter.run({"image": X})):  # tensor name and signature name
        for key in by_array:
            np.testing.assert_array_equal(other[key], by_array[key])


def test_keep_returns_every_intermediate(interpreter):
    everything = interpreter.run(X, keep=True)
    model = interpreter.model
    computed = {t.name for op in model.main.operators for t in op.outputs}
    assert computed <= set(everything)
    assert everything[interpreter.outputs[0].name].shape == (4, 10)


def test_an_output_that_later_ops_read_survives_tensor_freeing():
    """Tensors are dropped after their last reader, but never a graph output."""
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    y = b.op("RELU", [x], (2, 3))
    z = b.op("ADD", [y, x], (2, 3))
    w = b.op("MUL", [z, z], (2, 3))
    interpreter = qengine.Interpreter(b.build([y, w]))
    data = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    out = interpreter.run(data)
    relu = np.maximum(data, 0)
    np.testing.assert_array_equal(out[y.name], relu)
    np.testing.assert_array_equal(out[w.name], (relu + data) ** 2)
    everything = interpreter.run(data, keep=True)
    np.testing.assert_array_equal(everything[z.name], relu + data)


def test_signature_runner_uses_signature_names(interpreter):
    runner = interpreter.signature_runner("serving_default")
    out = runner(image=X)
    np.testing.assert_array_equal(out["output_0"], interpreter.run(X)[interpreter.outputs[0].name])
    with pytest.raises(qengine.InputError, match="no input 'nope'"):
        runner(nope=X)


def test_batch_size_changes_reprepare(interpreter):
    one = interpreter.run(X[:1])
    four = interpreter.run(X)
    key = interpreter.outputs[0].name
    np.testing.assert_allclose(four[key][:1], one[key], rtol=1e-5, atol=1e-6)


def test_wrong_inputs_are_input_errors(interpreter):
    with pytest.raises(qengine.InputError, match=r"expects shape \(None, 28, 28\) float32"):
        interpreter.run(np.zeros((1, 27, 28), np.float32))
    with pytest.raises(qengine.InputError, match="has 1 inputs"):
        interpreter.run([X, X])
    with pytest.raises(qengine.InputError, match="no input named"):
        interpreter.run({"wrong": X})


def custom_model():
    b = GraphBuilder()
    x = b.input("x", (3,))
    y = b.op("TimesTwoPlus", [x], (3,), custom_code="TimesTwoPlus", custom_options=b"\x05")
    return b.build([y])


def test_unknown_custom_op_is_refused_before_running():
    with pytest.raises(qengine.UnsupportedOpError, match="op 0 CUSTOM:TimesTwoPlus"):
        qengine.Interpreter(custom_model())


def test_register_op_supplies_a_custom_kernel():
    def prepare(ctx):
        offset = ctx.op.custom_options[0]  # the op's own options, as bytes
        return Prepared(lambda x: x * 2 + offset, [ctx.output_spec(0, ctx.inputs[0].shape)])

    register_op("TimesTwoPlus", prepare)
    out = qengine.Interpreter(custom_model()).run(np.array([1, 2, 3], np.float32))
    np.testing.assert_array_equal(next(iter(out.values())), [7, 9, 11])


def test_run_op_runs_one_op_on_given_inputs(interpreter):
    values = interpreter.run(X, keep=True)
    model = interpreter.model
    index = next(i for i, op in enumerate(model.main.operators) if op.type == "CONV_2D")
    op = model.main.operators[index]
    (out,) = interpreter.run_op(index, {op.inputs[0].name: values[op.inputs[0].name]})
    np.testing.assert_array_equal(out, values[op.outputs[0].name])


@pytest.mark.parametrize("keep", [False, True])
def test_a_kernel_output_of_another_shape_than_prepared_is_refused(keep):
    """A kernel (here a custom one) returning a shape its prepare did not announce stops the
    run, in the tables of a plan prepared ahead (keep=False) as in the general loop."""
    b = GraphBuilder()
    x = b.input("x", (3,))
    y = b.op("GrowsByOne", [x], (3,), custom_code="GrowsByOne")
    register_op("GrowsByOne", lambda ctx: Prepared(lambda v: np.append(v, 0),
                                                   [ctx.output_spec(0, ctx.inputs[0].shape)]))
    interpreter = qengine.Interpreter(b.build([b.op("RELU", [y], (3,))]))
    with pytest.raises(RuntimeError, match=r"kernel produced shape \(4,\), prepare said \(3,\)"):
        interpreter.run(np.ones(3, np.float32), keep=keep)
