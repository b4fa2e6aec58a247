"""SKIP_GRAM against TFLite's kernel, over sentences with odd spacing and an option grid."""

import numpy as np
import pytest
from tflite_ref import make_interpreter

import qengine
from qengine.builder import GraphBuilder, options

pytestmark = pytest.mark.tf

SENTENCES = [b"the quick brown fox jumps over the lazy dog", b"  two\tleading  spaces ",
             b"one", b"", b"a b c d e f"]


@pytest.mark.parametrize("size,skip,all_sizes", [(1, 0, False), (2, 0, False), (2, 2, False),
                                                 (3, 1, True), (3, 4, False), (4, 1, True)])
def test_skip_gram(size, skip, all_sizes):
    b = GraphBuilder()
    x = b.input("x", (1,), "string")
    y = b.op("SKIP_GRAM", [x], (0,), "string", options=options(
        "SkipGramOptions", ngramSize=size, maxSkipSize=skip, includeAllNgrams=all_sizes))
    data = b.build([y]).to_bytes()
    interpreter = qengine.Interpreter(data)
    for sentence in SENTENCES:
        tfl = make_interpreter(data)
        tfl.allocate_tensors()
        value = np.array([sentence], object)
        tfl.set_tensor(tfl.get_input_details()[0]["index"], value)
        tfl.invoke()
        out = tfl.get_output_details()[0]
        try:
            want = tfl.get_tensor(out["index"]).tolist()
        except ValueError:  # TFLite's Python API cannot read an empty string tensor
            want = []
        assert interpreter.run(value)[out["name"]].tolist() == want, sentence
