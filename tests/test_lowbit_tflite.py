"""Sub-8-bit and blockwise files made by Google's quantizer (ai-edge-quantizer), against TFLite.

Oracles: TFLite's reference kernels (BUILTIN_REF) for everything they implement; its optimized
kernels without delegate for the blockwise int4 FULLY_CONNECTED, which only they implement
(the reference kernels read those filters as unquantized and return the bias).
"""

from __future__ import annotations

import numpy as np
import peer_corpus
import pytest
from op_harness import FLOAT_REL, assert_close, op_by_op
from tflite_ref import make_interpreter, quantize_inputs, run_tflite

import qengine
from qengine.errors import InvalidModelError, UnsupportedOpError
from qengine.ir import diff

pytestmark = [
    pytest.mark.tf,
    pytest.mark.skipif(not peer_corpus.available(), reason="needs ai-edge-quantizer"),
]

# The peer writes these, but TFLite has no kernel that reads them as written: its reference and
# optimized kernels take int2 blockwise filters as unquantized (FC returns the bias) and an int2
# CONV_2D filter as float32 data, reading past its buffer (garbage, different from run to run). qengine refuses them, naming the rule (see REFUSED_BECAUSE).
REFUSED = {("mlp", "dynamic_wi2b32_afp32"), ("transformer", "dynamic_wi2b32_afp32"),
           ("digits", "dynamic_wi2c_afp32")}
REFUSED_BECAUSE = {"dynamic_wi2b32_afp32": "only for a constant int4 filter",
                   "dynamic_wi2c_afp32": "no int2 kernel for hybrid CONV_2D"}
# the peer refuses these itself: digits' dense layer has depth 2028, which 32 does not divide
PEER_REFUSES = {("digits", "dynamic_wi4b32_afp32"), ("digits", "dynamic_wi2b32_afp32")}
CASES = [(m, r) for m in peer_corpus.MODELS for r in peer_corpus.RECIPES
         if (m, r) not in PEER_REFUSES]
WEIGHTED = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "EMBEDDING_LOOKUP")


def _case_id(case):
    return f"{case[0]}-{case[1]}"


def _inputs(model: str, data: bytes) -> list[np.ndarray]:
    import corpus

    return quantize_inputs(data, [corpus.sample_inputs(model, 2, seed=1)])


def _oracle(recipe: str) -> str:
    return "nodelegate" if "b32" in recipe else "ref"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_peer_file_round_trips_and_tflite_runs_the_rewrite_identically(case):
    data = peer_corpus.path(*case).read_bytes()
    model = qengine.load(data)
    written = model.to_bytes()
    assert diff(model, qengine.load(written)) == []
    if case in REFUSED:
        return  # TFLite's output reads memory past the filter (it differs from run to run)
    inputs = _inputs(case[0], data)
    want = run_tflite(data, inputs, _oracle(case[1]))
    got = run_tflite(written, inputs, _oracle(case[1]))
    for name in want:
        assert np.array_equal(got[name], want[name]), name


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_qengine_runs_peer_files_as_tflite_does(case):
    """Each op fed TFLite's own inputs: ops with quantized weights bit-exact, float ops within
    FLOAT_REL; a fused activation TFLite's blockwise kernel skips is applied to its output."""
    data = peer_corpus.path(*case).read_bytes()
    if case in REFUSED:
        with pytest.raises((InvalidModelError, UnsupportedOpError),
                           match=REFUSED_BECAUSE[case[1]]):
            qengine.Interpreter(data)
        return
    assert_runs_as_tflite(data, case[0], _oracle(case[1]))


def assert_runs_as_tflite(data: bytes, corpus_model: str, oracle: str) -> None:
    model = qengine.load(data)
    checked = 0
    for index, op, rel in op_by_op(data, _inputs(corpus_model, data), oracle):
        weights = op.inputs[1] if len(op.inputs) > 1 else op.inputs[0]
        quantized = weights is not None and weights.is_constant and weights.dtype != "float32"
        if op.type in WEIGHTED and quantized and _skips_activation(op):
            continue  # checked by test_blockwise_fc_with_activation_applies_it
        limit = 0.0 if quantized and op.type in WEIGHTED else FLOAT_REL
        assert rel <= limit, f"op {index} {op.opcode.display} differs by {rel:.3g}"
        checked += quantized
    assert checked, "no op with quantized weights was compared"
    assert any(t.dtype != "float32" for t in model.main.tensors if t.is_constant)


def _skips_activation(op) -> bool:
    q = op.inputs[1].quantization if len(op.inputs) > 1 and op.inputs[1] is not None else None
    return (op.type == "FULLY_CONNECTED" and q is not None and q.blockwise is not None
            and getattr(op.options, "fusedActivationFunction", 0) != 0)


def test_blockwise_fc_with_activation_applies_it():
    """TFLite's EvalBlockwise4Bit leaves out the fused RELU; qengine's output is TFLite's with
    the RELU applied, exactly (the MLP's first layer)."""
    data = peer_corpus.path("mlp", "dynamic_wi4b32_afp32").read_bytes()
    model = qengine.load(data)
    op = model.main.operators[0]
    assert _skips_activation(op)
    x = _inputs("mlp", data)[0][:1]  # the file's batch size
    tfl = make_interpreter(data, "nodelegate", preserve_all=True)
    tfl.allocate_tensors()
    tfl.set_tensor(tfl.get_input_details()[0]["index"], x)
    tfl.invoke()
    want = tfl.get_tensor(model.main.tensors.index(op.outputs[0]))
    (got,) = qengine.Interpreter(model).run_op(0, {op.inputs[0].name: x})
    assert want.min() < 0  # TFLite's output really lacks the RELU
    assert np.array_equal(got, np.maximum(want, 0))


@pytest.mark.parametrize("case", [c for c in CASES if c not in REFUSED and "b32" not in c[1]],
                         ids=_case_id)
def test_peer_files_end_to_end(case):
    """Whole files against BUILTIN_REF: integer outputs equal, float outputs within 1e-4 of the
    range (hybrid inputs are re-quantized on the fly, so an upstream float rounding difference
    may flip one int8 value; op by op they are exact, above)."""
    data = peer_corpus.path(*case).read_bytes()
    inputs = _inputs(case[0], data)
    want = run_tflite(data, inputs, "ref")
    got = qengine.Interpreter(data).run(inputs)
    for name in want:
        assert_close(name, np.asarray(got[name]), want[name], rel=1e-4)


@pytest.mark.parametrize("model", peer_corpus.MODELS)
def test_tflite_runs_the_peer_recipes_as_documented(model):
    """The table in peer_corpus's docstring: every file runs under BUILTIN_REF and the optimized
    kernels; the default (XNNPACK) interpreter refuses int2 blockwise filters only."""
    for recipe in peer_corpus.RECIPES:
        if (model, recipe) in PEER_REFUSES:
            continue
        data = peer_corpus.path(model, recipe).read_bytes()
        inputs = _inputs(model, data)
        for resolver in ("ref", "nodelegate"):
            run_tflite(data, inputs, resolver)
        if recipe == "dynamic_wi2b32_afp32":
            with pytest.raises(RuntimeError, match="blockwise"):
                run_tflite(data, inputs, "auto")
        else:
            run_tflite(data, inputs, "auto")


# -- qengine's own low-bit files ---------------------------------------------------------------

# presets TFLite has kernels for on each model (digits: an int2 or blockwise CONV_2D is refused)
OWN_CASES = [(m, r) for m in peer_corpus.MODELS for r in peer_corpus.RECIPES
             if not r.startswith("static") and (m, r) not in PEER_REFUSES
             and (m, r) not in REFUSED]
SIZE_MARGIN = 1.05  # the bound: no larger than the peer's file + 5 %


@pytest.mark.parametrize("case", OWN_CASES, ids=_case_id)
def test_qengine_presets_write_files_tflite_runs_no_larger_than_the_peers(case, tmp_path):
    import corpus

    from qengine.cli import main

    out = tmp_path / "q.tflite"
    assert main(["quantize", str(corpus.path(case[0], "float")), "--preset", case[1], "-o",
                 str(out), "--quiet"]) == 0
    data = out.read_bytes()
    assert len(data) <= SIZE_MARGIN * peer_corpus.path(*case).stat().st_size
    assert_runs_as_tflite(data, case[0], _oracle(case[1]))


@pytest.mark.parametrize("preset,message", [
    ("dynamic_wi2c_afp32", ("TFLite has no hybrid CONV_2D kernel for int2 filters (it takes "
                            "int8, int4)")),
    ("dynamic_wi4b32_afp32", "TFLite runs blockwise weights only in FULLY_CONNECTED"),
])
def test_presets_tflite_has_no_kernel_for_are_refused_in_one_line(preset, message, tmp_path,
                                                                   capsys):
    import corpus

    from qengine.cli import main

    out = tmp_path / "q.tflite"
    code = main(["quantize", str(corpus.path("digits", "float")), "--preset", preset, "-o",
                 str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: CONV_2D ") and message in err
    assert err.count("\n") == 1 and not out.exists()


def test_int8_mode_int4_gptq_digits_exports_runs_exactly_and_beats_nearest():
    """Full-integer int8 with int4 weights (INT4 tensors): GPTQ rounding raises the output
    SQNR on the digit classifier and TFLite's reference kernels return qengine's bytes."""
    import corpus

    from qengine.quantizer.scheme import Recipe, Scheme

    path = corpus.path("digits", "float")
    calibration = corpus.sample_inputs("digits", 32, corpus.CALIBRATION_SEED)
    x = corpus.sample_inputs("digits", 64, seed=3)
    (key, reference), = qengine.Interpreter(path).run(x).items()
    sqnr = {}
    for rounding in ("nearest", "gptq"):
        model = qengine.quantize(path, calibration=calibration, quiet=True,
                                 inference_type="float32",
                                 recipe=Recipe(Scheme(weight_bits=4, weight_rounding=rounding)))
        data = model.to_bytes()
        got = qengine.Interpreter(data).run(x)[key]
        np.testing.assert_array_equal(got, run_tflite(data, [x], "ref")[key])
        sqnr[rounding] = 10 * np.log10(np.sum(reference ** 2) / np.sum((got - reference) ** 2))
    assert sqnr["gptq"] > sqnr["nearest"] + 3, sqnr
