"""SOFTMAX whose input scale TFLite's reference kernel aborts on (beta * s_in * 2^26 <= 1) runs
as TFLite's default interpreter runs it (the optimized kernel's float table), with one note."""

from __future__ import annotations

import numpy as np
import pytest
from op_harness import rng
from tflite_ref import run_tflite

import qengine
from qengine.builder import GraphBuilder, options
from qengine.ir import Quantization

pytestmark = pytest.mark.tf


def softmax_model(s_in: float):
    b = GraphBuilder()
    x = b.input("x", (4, 10), "int8", Quantization.per_tensor(s_in, 3))
    y = b.op("SOFTMAX", [x], options=options("SoftmaxOptions", beta=1.0),
             out_quantization=Quantization.per_tensor(1 / 256, -128))
    return b.build([y])


@pytest.mark.parametrize("s_in", [1e-9, 1e-8, 2.0 ** -27])
def test_degenerate_softmax_runs_as_the_default_interpreter_with_one_note(s_in, capsys):
    data = softmax_model(s_in).to_bytes()
    x = rng("softmax-degenerate", s_in).integers(-128, 128, (4, 10)).astype(np.int8)
    want = run_tflite(data, [x], "auto")
    interpreter = qengine.Interpreter(data)
    got = interpreter.run(x)
    interpreter.run(x)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "SOFTMAX" in err and "optimized kernel" in err
    assert interpreter.notes == [err.strip()]
