"""benchmarks/tflite_ops.py cuts a model into one-op models to time TFLite per op type. The cut
must be faithful, or the per-op figures time something else: each one-op model, run by TFLite's
reference kernels on the inputs it was given, must compute what qengine computes for that op in
the whole model (integers exactly, floats within FLOAT_REL), and every op that runs per
inference must be represented."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from op_harness import assert_close

import qengine
from qengine.cli_common import set_tflite_inputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tflite_ops

pytestmark = pytest.mark.tf

FLOAT_REL = 1e-5
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.tflite"


def _digits_int8(tmp_path) -> Path:
    model = qengine.load(EXAMPLE)
    rng = np.random.default_rng(0)
    calibration = [[rng.random(t.shape, dtype=np.float32) for t in model.main.inputs]
                   for _ in range(4)]
    path = tmp_path / "digits.int8.tflite"
    qengine.quantize(model, "int8", calibration, quiet=True).save(str(path))
    return path


def _data_dependent_op_types(graph) -> list[str]:
    """Types of the ops whose outputs depend on the input values (not only on constants or on
    input shapes, which qengine folds at prepare), in order."""
    dependent = {id(t) for t in graph.inputs}
    types = []
    for op in graph.operators:
        if op.type != "SHAPE" and any(t is not None and id(t) in dependent for t in op.inputs):
            dependent.update(id(t) for t in op.outputs)
            types.append(op.type)
        elif op.type == "SHAPE":
            types.append(op.type)  # runs per inference in qengine, output fixed
    return types


@pytest.mark.parametrize("variant", ["float", "int8", "transformer"])
def test_one_op_models_compute_what_the_op_computes_in_the_whole_model(variant, tmp_path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if variant == "transformer":  # tensors whose runtime shape differs from the file's
        import corpus

        path = corpus.path("transformer", "float")
    else:
        path = EXAMPLE if variant == "float" else _digits_int8(tmp_path)
    model = qengine.load(path)
    inputs = qengine.cli_common.generated_inputs(model.main.inputs, 0, quiet=True)
    whole = qengine.Interpreter(model).run(inputs, keep=True)
    cases = tflite_ops.one_op_models(path)
    assert [t for t, _, _ in cases] == _data_dependent_op_types(model.main)
    for op_type, content, feeds in cases:
        tfl = Interpreter(model_content=content,
                          experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        set_tflite_inputs(tfl, feeds, allocate=True)
        tfl.invoke()
        for d in tfl.get_output_details():
            got, want = tfl.get_tensor(d["index"]), whole[d["name"]]
            if np.issubdtype(want.dtype, np.integer):
                np.testing.assert_array_equal(got, want, err_msg=op_type)
            else:
                assert_close(f"{op_type} {d['name']}", got, want, FLOAT_REL)
