"""Schemes and recipes: JSON round trips, research weight formats against NumPy twins, exact
simulation (TFLite's reference kernels run the int8-expressible research schemes identically),
refusal at export, per-tensor calibrators, and the CLI."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import qengine
from qengine.calibrate import calibrate, choose_qparams
from qengine.cli import main
from qengine.errors import ExportError, InputError, QuantizationError
from qengine.observers import PercentileObserver
from qengine.quantizer.scheme import Override, Recipe, Scheme

EXAMPLES = Path(__file__).parents[1] / "examples"
DIGITS = EXAMPLES / "digits.tflite"
DATA = np.load(EXAMPLES / "digits_data.npz")
CALIBRATION = DATA["calibration"][:48]
TEST_X, TEST_Y = DATA["test_images"][:300], DATA["test_labels"][:300]


def ops_by_type(model):
    return {op.type: op for op in model.main.operators}


def quantized_images(interpreter, images):
    x = interpreter.inputs[0]
    return np.clip(np.round(images / x.scale) + x.zero_point, -128, 127).astype(np.int8)


def accuracy(model, images=TEST_X, labels=TEST_Y) -> float:
    interpreter = qengine.Interpreter(model)
    y = interpreter.outputs[0]
    return float(np.mean(interpreter.run(quantized_images(interpreter, images))[y.name]
                         .argmax(1) == labels))


# -- NumPy twins ------------------------------------------------------------------------------


def round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def twin_symmetric(w, axis, bits, narrow, pow2, per_tensor=False):
    """int values and scales of symmetric weights, written out slice by slice."""
    qmax = 2 ** (bits - 1) - 1
    qmin = -qmax if narrow else -qmax - 1
    moved = np.moveaxis(np.asarray(w, np.float64), axis, 0)
    slices = [moved] if per_tensor else list(moved)
    scales = []
    for s in slices:
        m = float(np.abs(s).max())
        scale = m / qmax if m > 0 else 1.0
        if pow2:
            scale = 2.0 ** math.ceil(math.log2(scale))
        scales.append(np.float32(scale))
    q = np.empty_like(moved)
    for c in range(moved.shape[0]):
        scale = float(scales[0] if per_tensor else scales[c])
        q[c] = np.clip(round_half_away(moved[c] / scale), qmin, qmax)
    return np.moveaxis(q, 0, axis), np.array(scales, np.float32)


def twin_fake_blocks(w, bits, block, symmetric):
    """dequantize(quantize(w)) with one scale (and zero point) per block of the last axis."""
    qmax = 2 ** (bits - 1) - 1
    rows = np.asarray(w, np.float64).reshape(-1, w.shape[-1])
    out = np.empty_like(rows)
    for r in range(rows.shape[0]):
        for start in range(0, rows.shape[1], block):
            v = rows[r, start:start + block]
            if symmetric:
                m = float(np.abs(v).max())
                scale, zero, lo, hi = (m / qmax if m > 0 else 1.0), 0, -qmax, qmax
            else:
                lo, hi = -qmax - 1, qmax
                s32, zero = choose_qparams(v.min(), v.max(), qrange=(lo, hi))
                scale = float(s32)
            scale = float(np.float32(scale))
            q = np.clip(round_half_away(v / scale) + zero, lo, hi)
            out[r, start:start + block] = (q - zero) * scale
    return out.reshape(w.shape).astype(np.float32)


# -- Scheme and Recipe values -----------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    (dict(weight_bits=9), "weight_bits"), (dict(weight_bits=1), "weight_bits"),
    (dict(granularity="blockwise"), "block_size"), (dict(block_size=32), "only meaningful"),
    (dict(granularity="per_row"), "granularity"), (dict(calibrator="kl"), "calibrator"),
    (dict(activations="int4"), "activations"),
])
def test_bad_schemes_are_refused_with_the_field_named(fields, message):
    with pytest.raises(InputError, match=message):
        Scheme(**fields)


def test_schemes_are_frozen_and_hashable():
    scheme = Scheme(weight_bits=4, calibrator="percentile",
                    calibrator_options={"percentile": 99.9})
    with pytest.raises(AttributeError):
        scheme.weight_bits = 8
    assert scheme == Scheme(weight_bits=4, calibrator="percentile",
                           calibrator_options=(("percentile", 99.9),))
    assert len({scheme, replace(scheme)}) == 1
    with pytest.raises(InputError, match="minmax"):
        Scheme(calibrator_options={"percentile": 99.9})  # min/max takes no percentile


def test_export_problem_only_for_schemes_outside_the_tflite_spec():
    assert Scheme().export_problem() is None
    assert Scheme(granularity="per_tensor", power_of_two=True).export_problem() is None
    assert Scheme(activations="int16").export_problem() is None
    for scheme, word in [(Scheme(weight_bits=4), "int4"), (Scheme(narrow_range=False), "-128"),
                         (Scheme(symmetric=False), "zero point"),
                         (Scheme(granularity="blockwise", block_size=16), "block")]:
        assert word in scheme.export_problem()


def full_recipe():
    default = Scheme(calibrator="percentile", calibrator_options={"percentile": 99.9})
    return Recipe(default, (
        Override("CONV_2D", replace(default, weight_bits=4, narrow_range=False)),
        Override("*dense*", None),
        Override("FULLY_CONNECTED", Scheme(granularity="blockwise", block_size=8,
                                           symmetric=False, power_of_two=True))))


def test_recipe_round_trips_through_json(tmp_path):
    recipe = full_recipe()
    assert Recipe.from_json(recipe.to_json()) == recipe
    path = tmp_path / "r.json"
    recipe.save(path)
    assert Recipe.load(path) == recipe
    # overrides are written as changes to the default, so a hand-edited file stays short
    data = json.loads(recipe.to_json())
    assert data["overrides"][0] == {"match": "CONV_2D", "weight_bits": 4, "narrow_range": False}
    assert data["overrides"][1] == {"match": "*dense*", "float": True}


def test_hand_written_recipe_and_last_match_wins():
    recipe = Recipe.from_json(json.dumps({
        "default": {"weight_bits": 6},
        "overrides": [{"match": "CONV_2D", "weight_bits": 4},
                      {"match": "conv_out*", "float": True}]}))
    assert recipe.scheme_for(["CONV_2D", "conv_out_1"]) is None
    assert recipe.scheme_for(["CONV_2D", "x"]).weight_bits == 4
    assert recipe.scheme_for(["ADD", "y"]) == Scheme(weight_bits=6)


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"), ("[]", "JSON object"),
    ('{"default": {"bits": 4}}', "unknown field 'bits'"),
    ('{"defaults": {}}', "unknown field 'defaults'"),
    ('{"default": {"weight_bits": "4"}}', "integer"),
    ('{"default": {"weight_bits": true}}', "integer"),
    ('{"default": {"symmetric": 1}}', "true or false"),
    ('{"overrides": [{"weight_bits": 4}]}', "match"),
    ('{"overrides": {"match": "x"}}', "list"),
    ('{"overrides": [{"match": "x", "float": true, "weight_bits": 4}]}', "no scheme fields"),
    ('{"overrides": [{"match": "x", "activations": "int16"}]}', "one activation type"),
    ('{"default": {"granularity": "blockwise", "block_size": 0}}', "block_size"),
    ('{"default": {"calibrator": "percentile", "calibrator_options": {"percentile": 200}}}',
     "percentile must be in"),
    ('{"default": {"calibrator": "mse", "calibrator_options": {"bins": 3}}}', "bins"),
])
def test_bad_recipes_get_one_precise_error(text, message):
    with pytest.raises(InputError, match=message):
        Recipe.from_json(text)


# -- weight formats against the twins ---------------------------------------------------------


@pytest.mark.parametrize("bits, narrow, pow2, per_tensor", [
    (8, True, False, False), (4, True, False, False), (4, False, False, False),
    (2, True, False, False), (3, False, True, False), (8, True, True, True), (5, True, False, True),
])
@pytest.mark.parametrize("axis", [0, 3])
def test_integer_weights_match_the_twin(bits, narrow, pow2, per_tensor, axis):
    from qengine.quantizer.weights import scheme_weights

    w = np.random.default_rng(bits * 10 + axis).normal(size=(6, 3, 3, 5)).astype(np.float32)
    w[1 if axis == 0 else (..., 1)] = 0.0  # an all-zero channel gets scale 1
    scheme = Scheme(weight_bits=bits, narrow_range=narrow, power_of_two=pow2,
                    granularity="per_tensor" if per_tensor else "per_channel")
    q, quant = scheme_weights(w, axis, scheme)
    want_q, want_scales = twin_symmetric(w, axis, bits, narrow, pow2, per_tensor)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(quant.scale, want_scales)
    assert not quant.zero_point.any()


@pytest.mark.parametrize("bits, block, symmetric", [(4, 4, True), (4, 3, False), (2, 8, True),
                                                    (8, 5, False)])
def test_blockwise_fake_quant_matches_the_twin(bits, block, symmetric):
    from qengine.quantizer.weights import fake_quantized_weights

    w = np.random.default_rng(bits + block).normal(size=(4, 2, 2, 10)).astype(np.float32) + 0.3
    scheme = Scheme(weight_bits=bits, granularity="blockwise", block_size=block,
                    symmetric=symmetric)
    got = fake_quantized_weights(w, 0, scheme)
    np.testing.assert_allclose(got, twin_fake_blocks(w, bits, block, symmetric), rtol=1e-6,
                               atol=0)  # float32 rounding of scale * (q - zp) only
    levels = max(len(np.unique(row)) for row in got.reshape(-1, 10)[:, :block])
    assert levels <= 2 ** bits


def test_asymmetric_per_channel_fake_quant_has_a_zero_point_per_channel():
    from qengine.quantizer.weights import fake_quantized_weights

    w = np.random.default_rng(3).uniform(0.5, 2.0, size=(3, 16)).astype(np.float32)
    w[2] -= 2.5  # all negative
    got = fake_quantized_weights(w, 0, Scheme(weight_bits=4, symmetric=False))
    for row, fake in zip(w, got):
        want = twin_fake_blocks(row[None], 4, 16, symmetric=False)[0]
        np.testing.assert_allclose(fake, want, rtol=1e-6, atol=0)
        assert len(np.unique(fake)) <= 16


# -- the pass with schemes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def int4_model():
    """int4 weights TFLite stores as INT4 tensors (issue #12: these export now)."""
    recipe = Recipe(Scheme(weight_bits=4))
    return qengine.quantize(DIGITS, calibration=CALIBRATION, recipe=recipe, quiet=True)


@pytest.fixture(scope="module")
def int6_model():
    """6-bit weights would sit in int8 bytes claiming the int8 scheme: a research scheme."""
    recipe = Recipe(Scheme(weight_bits=6))
    return qengine.quantize(DIGITS, calibration=CALIBRATION, recipe=recipe, quiet=True)


def test_int4_weights_stay_in_range_and_are_tflite_int4_tensors(int4_model):
    for op in int4_model.main.operators:
        if op.type in ("CONV_2D", "FULLY_CONNECTED"):
            w = op.inputs[1]
            assert w.dtype == "int4" and w.data.min() >= -7 and np.abs(w.data).max() == 7
    assert not int4_model.simulated
    assert qengine.load(int4_model.to_bytes()).main.tensor(w.name).dtype == "int4"


def test_int6_weights_stay_in_range_and_mark_the_model(int6_model):
    for op in int6_model.main.operators:
        if op.type in ("CONV_2D", "FULLY_CONNECTED"):
            w = op.inputs[1]
            assert w.dtype == "int8" and w.data.min() >= -31 and np.abs(w.data).max() == 31
    assert len(int6_model.simulated) == 2
    assert all("int6" in why for why in int6_model.simulated.values())


def test_research_models_refuse_to_be_written(int6_model, tmp_path):
    with pytest.raises(ExportError, match="research scheme.*int6"):
        int6_model.to_bytes()
    target = tmp_path / "out.tflite"
    with pytest.raises(ExportError):
        int6_model.save(target)
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left


def exportable_copy(model):
    """The same graph with the research marker removed: only tests write it, to let TFLite's
    reference kernels check that the simulation is TFLite's own integer arithmetic."""
    clone = copy.copy(model)
    clone.simulated = {}
    return clone.to_bytes()


@pytest.mark.tf
@pytest.mark.parametrize("scheme", [Scheme(weight_bits=4), Scheme(weight_bits=2),
                                    Scheme(weight_bits=8, narrow_range=False),
                                    Scheme(weight_bits=3, power_of_two=True,
                                           granularity="per_tensor")],
                         ids=["int4", "int2", "full_range", "int3_pow2_per_tensor"])
def test_integer_research_schemes_are_tflite_reference_arithmetic(scheme):
    """int-expressible schemes run on the int8 kernels: TFLite REF computes the same bytes."""
    from tflite_ref import run_tflite

    model = qengine.quantize(DIGITS, calibration=CALIBRATION, recipe=Recipe(scheme),
                             quiet=True)
    interpreter = qengine.Interpreter(model)
    images = quantized_images(interpreter, TEST_X[:64])
    got = interpreter.run(images)
    want = run_tflite(exportable_copy(model), images)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_power_of_two_scales_everywhere_and_exportable():
    model = qengine.quantize(DIGITS, calibration=CALIBRATION,
                             recipe=Recipe(Scheme(power_of_two=True)), quiet=True)
    assert not model.simulated
    data = model.to_bytes()  # within the spec: writes
    for t in qengine.load(data).main.all_tensors():
        q = t.quantization
        if q is not None and q.scale.size and t.dtype in ("int8", "int32"):
            exponents = np.log2(q.scale.astype(np.float64))
            np.testing.assert_array_equal(exponents, np.round(exponents), err_msg=t.name)


@pytest.mark.tf
def test_power_of_two_model_runs_identically_in_tflite():
    from tflite_ref import run_tflite

    data = qengine.quantize(DIGITS, calibration=CALIBRATION,
                            recipe=Recipe(Scheme(power_of_two=True)), quiet=True).to_bytes()
    interpreter = qengine.Interpreter(data)
    images = quantized_images(interpreter, TEST_X[:64])
    got, want = interpreter.run(images), run_tflite(data, images)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_blockwise_and_asymmetric_ops_run_in_float_on_fake_quantized_weights():
    from qengine.quantizer.weights import fake_quantized_weights

    source = qengine.load(DIGITS)
    conv_w = ops_by_type(source)["CONV_2D"].inputs[1].data
    recipe = Recipe(Scheme(), (Override("CONV_2D", Scheme(weight_bits=4, symmetric=False)),
                               Override("FULLY_CONNECTED", Scheme(granularity="blockwise",
                                                                  block_size=32))))
    model = qengine.quantize(DIGITS, calibration=CALIBRATION, recipe=recipe, quiet=True)
    by_type = ops_by_type(model)
    conv, fc = by_type["CONV_2D"], by_type["FULLY_CONNECTED"]
    assert conv.inputs[0].dtype == "float32" and conv.inputs[1].dtype == "float32"
    np.testing.assert_array_equal(conv.inputs[1].data, fake_quantized_weights(
        conv_w, 0, Scheme(weight_bits=4, symmetric=False)))
    assert fc.inputs[1].dtype == "float32"
    assert set(model.simulated) == {conv.outputs[0].name, fc.outputs[0].name}
    # activations between them are still int8 (MAX_POOL runs on integers)
    assert by_type["MAX_POOL_2D"].inputs[0].dtype == "int8"
    assert accuracy(model) > 0.9


def test_int4_digits_still_classifies(int4_model):
    assert accuracy(int4_model) > 0.9


def test_float_override_keeps_the_op_float():
    recipe = Recipe(Scheme(), (Override("FULLY_CONNECTED", None),))
    model = qengine.quantize(DIGITS, calibration=CALIBRATION, recipe=recipe, quiet=True)
    by_type = ops_by_type(model)
    assert by_type["FULLY_CONNECTED"].inputs[1].dtype == "float32"
    assert by_type["CONV_2D"].inputs[1].dtype == "int8"
    assert not model.simulated
    model.to_bytes()


def test_per_tensor_calibrator_sets_that_tensors_range():
    source = qengine.load(DIGITS)
    conv_out = ops_by_type(source)["CONV_2D"].outputs[0].name
    options = {"percentile": 99.0}
    recipe = Recipe(Scheme(), (Override(conv_out, Scheme(calibrator="percentile",
                                                         calibrator_options=options)),))
    model = qengine.quantize(DIGITS, calibration=CALIBRATION, recipe=recipe, quiet=True)
    # the reference: calibrate twice, once per calibrator, and pick the tensor's parameters
    minmax = calibrate(qengine.load(DIGITS), CALIBRATION, "minmax", quiet=True)
    percentile = calibrate(qengine.load(DIGITS), CALIBRATION,
                           lambda: PercentileObserver(percentile=99.0), quiet=True)
    got = {t.name: (np.float32(t.scale), t.zero_point) for t in model.main.all_tensors()
           if t.dtype == "int8" and not t.is_constant}
    assert got[conv_out] == choose_qparams(*percentile[conv_out].range())
    assert got[conv_out] != choose_qparams(*minmax[conv_out].range())
    # tensors with their own (REQUANT) parameters keep min/max; pooling and reshapes downstream
    # of conv_out share its parameters by the int8 spec
    fc_out = ops_by_type(source)["FULLY_CONNECTED"].outputs[0].name
    for name in (source.main.inputs[0].name, fc_out):
        assert got[name] == choose_qparams(*minmax[name].range()), name


def test_recipe_and_legacy_arguments_do_not_mix():
    recipe = Recipe(Scheme(activations="int16"))
    with pytest.raises(QuantizationError, match="int16x8"):
        qengine.quantize(DIGITS, "int8", CALIBRATION, recipe=recipe, quiet=True)
    with pytest.raises(QuantizationError, match="per_channel or observer"):
        qengine.quantize(DIGITS, calibration=CALIBRATION, recipe=Recipe(), per_channel=False,
                         quiet=True)


def test_int16_recipe_gives_the_16x8_model():
    model = qengine.quantize(DIGITS, calibration=CALIBRATION,
                             recipe=Recipe(Scheme(activations="int16")), quiet=True)
    assert model.main.inputs[0].dtype == "int16"
    assert ops_by_type(model)["CONV_2D"].inputs[1].dtype == "int8"


# -- CLI --------------------------------------------------------------------------------------


@pytest.fixture()
def calibration_file(tmp_path):
    path = tmp_path / "cal.npy"
    np.save(path, CALIBRATION)
    return path


def test_cli_quantize_with_an_exportable_recipe(tmp_path, calibration_file, capsys):
    recipe = tmp_path / "r.json"
    Recipe(Scheme(power_of_two=True), (Override("FULLY_CONNECTED", None),)).save(recipe)
    out = tmp_path / "q.tflite"
    assert main(["quantize", str(DIGITS), "--calibration", str(calibration_file), "--recipe",
                 str(recipe), "-o", str(out), "--quiet"]) == 0
    model = qengine.load(out)
    assert ops_by_type(model)["FULLY_CONNECTED"].inputs[1].dtype == "float32"


def test_cli_refuses_to_write_a_research_recipe(tmp_path, calibration_file, capsys):
    recipe = tmp_path / "r.json"
    recipe.write_text('{"default": {"weight_bits": 2}}')  # int2: no int2 CONV_2D kernel
    out = tmp_path / "q.tflite"
    code = main(["quantize", str(DIGITS), "--calibration", str(calibration_file), "--recipe",
                 str(recipe), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot write") and "int2" in err
    assert "TFLite has no kernel for CONV_2D with int8 activations reading int2" in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("extra, message", [(["--per-tensor"], "--per-tensor"),
                                            (["--calibrator", "mse"], "--calibrator"),
                                            (["--mode", "dynamic"], "dynamic")])
def test_cli_recipe_conflicts(tmp_path, calibration_file, capsys, extra, message):
    recipe = tmp_path / "r.json"
    Recipe().save(recipe)
    code = main(["quantize", str(DIGITS), "--calibration", str(calibration_file), "--recipe",
                 str(recipe), "-o", str(tmp_path / "q.tflite")] + extra)
    assert code == 2 and message in capsys.readouterr().err


def test_cli_bad_recipe_file(tmp_path, calibration_file, capsys):
    recipe = tmp_path / "r.json"
    recipe.write_text('{"default": {"weight_bits": 12}}')
    code = main(["quantize", str(DIGITS), "--calibration", str(calibration_file), "--recipe",
                 str(recipe), "-o", str(tmp_path / "q.tflite")])
    err = capsys.readouterr().err
    assert code == 2 and "r.json" in err and "weight_bits" in err
    assert main(["quantize", str(DIGITS), "--calibration", str(calibration_file), "--recipe",
                 str(tmp_path / "missing.json"), "-o", str(tmp_path / "q.tflite")]) == 2


def test_cli_compare_evaluates_a_research_recipe_in_memory(tmp_path, calibration_file, capsys):
    recipe = tmp_path / "r.json"
    Recipe(Scheme(weight_bits=4)).save(recipe)
    report = tmp_path / "report.json"
    data = tmp_path / "test.npy"
    np.save(data, TEST_X[:32])
    assert main(["compare", str(DIGITS), "--recipe", str(recipe), "--calibration",
                 str(calibration_file), "--data", str(data), "--json", str(report)]) == 0
    parsed = json.loads(report.read_text())
    assert parsed and "SQNR" in capsys.readouterr().out.upper()
    assert main(["compare", str(DIGITS), "--data", str(data)]) == 2


def test_the_readme_recipe_parses_and_applies():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("## Schemes and recipes")[1].split("```json\n")[1].split("```")[0]
    recipe = Recipe.from_json(block)
    assert recipe.scheme_for(["FULLY_CONNECTED", "x"]).granularity == "blockwise"
    assert recipe.scheme_for(["CONV_2D", "model/head/conv"]) is None
    assert recipe.default.calibrator_options == (("percentile", 99.99),)


# -- converter-made corpus models end to end --------------------------------------------------

RESEARCH = {
    "int4": Scheme(weight_bits=4),
    "int2_full_range": Scheme(weight_bits=2, narrow_range=False),
    "pow2_per_tensor": Scheme(power_of_two=True, granularity="per_tensor"),
    "int4_asymmetric": Scheme(weight_bits=4, symmetric=False),
    "int4_blockwise": Scheme(weight_bits=4, granularity="blockwise", block_size=16),
    "percentile": Scheme(calibrator="percentile", calibrator_options={"percentile": 99.9}),
    "entropy_int6": Scheme(weight_bits=6, calibrator="entropy"),
}


def output_sqnr(float_model, quant_model, x) -> float:
    f = next(iter(qengine.Interpreter(float_model).run(x).values()))
    interpreter = qengine.Interpreter(quant_model)
    spec = interpreter.inputs[0]
    q = np.clip(np.round(x / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)
    y = interpreter.outputs[0]
    out = next(iter(interpreter.run(q).values())).astype(np.float64)
    deq = (out - y.zero_point) * y.scale
    return float(10 * np.log10(np.sum(f.astype(np.float64) ** 2) / np.sum((deq - f) ** 2)))


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["mobilenet_v2", "transformer"])
@pytest.mark.parametrize("scheme_name", sorted(RESEARCH))
def test_every_scheme_runs_end_to_end_on_corpus_models(corpus, model_name, scheme_name):
    """Each scheme quantizes and runs a converter-made model; the exportable ones are checked
    byte for byte against TFLite REF, the others are refused at export; and int8 per-channel
    (TFLite's own scheme) bounds how far a coarser scheme can be above it."""
    from tflite_ref import run_tflite

    scheme = RESEARCH[scheme_name]
    float_path = corpus.path(model_name, "float")
    calibration = corpus.sample_inputs(model_name, 16, seed=0)
    x = corpus.sample_inputs(model_name, 4, seed=5)
    model = qengine.quantize(float_path, calibration=calibration, recipe=Recipe(scheme),
                             quiet=True)
    sqnr = output_sqnr(float_path, model, x)
    assert np.isfinite(sqnr)
    if not model.simulated:  # exportable: int8, or int4/int2 tensors where TFLite reads them
        data = model.to_bytes()
        interpreter = qengine.Interpreter(data)
        q = quantized_images(interpreter, x)
        got, want = interpreter.run(q), run_tflite(data, q)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    else:
        with pytest.raises(ExportError):
            model.to_bytes()
    if scheme.weight_bits < 8 and scheme.calibrator == "minmax":
        baseline = qengine.quantize(float_path, "int8", calibration, quiet=True)
        assert sqnr < output_sqnr(float_path, baseline, x) + 1.0  # fewer bits cannot be better


def test_an_override_that_matches_nothing_is_reported(capsys):
    recipe = Recipe(Scheme(), (Override("CONV2D", Scheme(weight_bits=4)),
                               Override("CONV_2D", Scheme(weight_bits=6))))
    model = qengine.quantize(DIGITS, calibration=CALIBRATION[:8], recipe=recipe)
    err = capsys.readouterr().err
    assert "'CONV2D' matches no op" in err and "'CONV_2D'" not in err
    assert np.abs(ops_by_type(model)["CONV_2D"].inputs[1].data).max() == 31


def test_cli_compare_recipe_on_the_bundled_npz(tmp_path, capsys):
    """The README's example: calibration and test data are two arrays of one .npz."""
    recipe = tmp_path / "int4.json"
    recipe.write_text('{"default": {"weight_bits": 4}}')
    data = str(EXAMPLES / "digits_data.npz")
    assert main(["compare", str(DIGITS), "--recipe", str(recipe), "--calibration", data,
                 "--calibration-key", "calibration", "--data", data, "--data-key",
                 "test_images", "--limit", "50"]) == 0
    assert "output SQNR" in capsys.readouterr().out
    assert main(["compare", str(DIGITS), "--recipe", str(recipe), "--calibration", data,
                 "--data", data, "--data-key", "test_images"]) == 2
    assert "pick one array with --calibration-key" in capsys.readouterr().err
