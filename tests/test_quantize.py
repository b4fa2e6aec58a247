"""Quantization modes end to end: parameters, graph structure, TFLite agreement, accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import qengine
from qengine.calibrate import MinMaxObserver, choose_qparams
from qengine.errors import InputError, QuantizationError

EXAMPLES = Path(__file__).parents[1] / "examples"
DIGITS = EXAMPLES / "digits.tflite"
DATA = np.load(EXAMPLES / "digits_data.npz")
CALIBRATION = DATA["calibration"]
TEST_X, TEST_Y = DATA["test_images"], DATA["test_labels"]


# -- choose_qparams ---------------------------------------------------------------------------


@pytest.mark.parametrize("rmin, rmax", [(-1.0, 1.0), (0.0, 6.0), (-3.2, 0.7), (0.25, 9.0),
                                        (-5.0, -1.0), (-1e-6, 3e-6), (-200.0, 1e-3)])
def test_asymmetric_qparams_cover_the_range_and_zero(rmin, rmax):
    scale, zp = choose_qparams(rmin, rmax, "int8")
    assert isinstance(zp, int) and -128 <= zp <= 127  # so 0.0 is exactly q = zp
    lo, hi = min(rmin, 0.0), max(rmax, 0.0)
    assert scale == np.float32((hi - lo) / 255)
    # the representable range covers [lo, hi] up to the nudge of the zero point (< 1 step)
    assert scale * (-128 - zp) <= lo + scale and scale * (127 - zp) >= hi - scale


def test_qparams_edge_cases():
    assert choose_qparams(0.0, 0.0) == (np.float32(1.0), 0)  # an all-zero tensor
    assert choose_qparams(0.0, 1.0)[1] == -128  # a ReLU output uses the whole range
    assert choose_qparams(-1.0, 0.0)[1] == 127
    scale, zp = choose_qparams(-2.0, 1.0, symmetric=True)
    assert zp == 0 and scale == np.float32(2.0 / 127)
    scale, zp = choose_qparams(-1.0, 1.0, "int16", symmetric=True)
    assert zp == 0 and scale == np.float32(1.0 / 32767)
    with pytest.raises(InputError):
        choose_qparams(float("nan"), 1.0)


def test_observer_merge_equals_one_pass():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=100) * (i + 1) for i in range(4)]
    whole, a, b = MinMaxObserver(), MinMaxObserver(), MinMaxObserver()
    for p in parts:
        whole.update(p)
    for p in parts[:2]:
        a.update(p)
    for p in parts[2:]:
        b.update(p)
    assert a.merge(b) == whole


# -- the int8 pass ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_int8():
    return qengine.quantize(DIGITS, "int8", CALIBRATION[:100], quiet=True)


def test_int8_structure_follows_the_spec(digits_int8):
    digits_int8.verify()
    main = digits_int8.main
    assert main.inputs[0].dtype == "int8" and main.outputs[0].dtype == "int8"
    by_type = {op.type: op for op in main.operators}
    conv, fc = by_type["CONV_2D"], by_type["FULLY_CONNECTED"]
    assert (conv.opcode.version, fc.opcode.version) == (3, 4)
    w = conv.inputs[1]
    assert w.dtype == "int8" and w.quantization.axis == 0
    assert w.quantization.scale.size == w.shape[0] and not w.quantization.zero_point.any()
    assert np.abs(w.data).max() == 127 and w.data.min() >= -127  # narrow, symmetric
    bias = conv.inputs[2]
    assert bias.dtype == "int32"
    np.testing.assert_allclose(bias.quantization.scale, conv.inputs[0].scale * w.quantization.scale,
                               rtol=1e-6)
    pool = by_type["MAX_POOL_2D"]
    assert pool.outputs[0].scale == pool.inputs[0].scale
    assert pool.outputs[0].zero_point == pool.inputs[0].zero_point


def test_int8_float_interface_adds_quantize_and_dequantize():
    model = qengine.quantize(DIGITS, "int8", CALIBRATION[:32], inference_type="float32",
                             quiet=True)
    main = model.main
    assert main.inputs[0].dtype == "float32" and main.outputs[0].dtype == "float32"
    assert main.operators[0].type == "QUANTIZE" or any(op.type == "QUANTIZE"
                                                       for op in main.operators[:5])
    assert main.operators[-1].type == "DEQUANTIZE"
    assert main.outputs[0].name == qengine.load(DIGITS).main.outputs[0].name


def test_int8_uint8_interface():
    model = qengine.quantize(DIGITS, "int8", CALIBRATION[:32], inference_type="uint8",
                             quiet=True)
    assert model.main.inputs[0].dtype == "uint8" and model.main.outputs[0].dtype == "uint8"
    model.verify()


def test_strict_mode_lists_float_ops():
    from qengine.builder import GraphBuilder

    b = GraphBuilder()
    x = b.input("x", (1, 8))
    y = b.op("SIN", [x], (1, 8))
    z = b.op("RELU", [y], (1, 8))
    model = b.build([z])
    data = np.random.default_rng(0).normal(size=(8, 1, 8)).astype(np.float32)
    with pytest.raises(QuantizationError, match="op 0 SIN"):
        qengine.quantize(model, "int8", data, strict=True, quiet=True)
    relaxed = qengine.quantize(model, "int8", data, quiet=True)  # SIN stays float
    types = [op.type for op in relaxed.main.operators]
    assert types == ["DEQUANTIZE", "SIN", "QUANTIZE", "RELU"]


def test_calibration_errors_name_the_input():
    with pytest.raises(InputError, match="serving_default_image"):
        qengine.quantize(DIGITS, "int8", np.zeros((3, 28, 30), np.float32), quiet=True)
    with pytest.raises(InputError, match="not an input"):
        qengine.quantize(DIGITS, "int8", {"wrong": CALIBRATION[:2]}, quiet=True)
    with pytest.raises(InputError, match="NaN"):
        qengine.quantize(DIGITS, "int8", np.full((2, 28, 28), np.inf, np.float32), quiet=True)
    with pytest.raises(InputError, match="empty"):
        qengine.quantize(DIGITS, "int8", CALIBRATION[:0], quiet=True)


def test_unreached_tensor_is_named():
    from qengine.quantizer.int8 import Int8Options, quantize_int8

    with pytest.raises(QuantizationError, match="never reached"):
        quantize_int8(qengine.load(DIGITS), {}, Int8Options())


def accuracy(model, images, labels) -> float:
    interpreter = qengine.Interpreter(model)
    x, y = interpreter.inputs[0], interpreter.outputs[0]
    if x.dtype == "int8":
        images = np.clip(np.round(images / x.scale) + x.zero_point, -128, 127).astype(np.int8)
    out = interpreter.run(images)[y.name]
    return float(np.mean(out.argmax(1) == labels))


def test_digits_accuracy_of_every_mode(digits_int8):
    """int8 within 0.5 points of float; dynamic and float16 within 0.2 (500 real images)."""
    float_acc = accuracy(DIGITS, TEST_X, TEST_Y)
    assert float_acc > 0.9
    assert abs(accuracy(digits_int8, TEST_X, TEST_Y) - float_acc) <= 0.005
    for mode in ("dynamic", "float16"):
        model = qengine.quantize(DIGITS, mode, quiet=True)
        assert abs(accuracy(model, TEST_X, TEST_Y) - float_acc) <= 0.002, mode


# -- against TensorFlow's converter and interpreter -------------------------------------------


@pytest.mark.tf
def test_digits_int8_matches_tflite_reference_exactly(digits_int8):
    from tflite_ref import run_tflite

    data = digits_int8.to_bytes()
    interpreter = qengine.Interpreter(data)
    x = interpreter.inputs[0]
    images = np.clip(np.round(TEST_X[:64] / x.scale) + x.zero_point, -128, 127).astype(np.int8)
    want = run_tflite(data, images)
    got = interpreter.run(images)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.tf
@pytest.mark.slow
def test_digits_int8_not_worse_than_tensorflow_converter(corpus):
    from tflite_ref import convert_keras, run_tflite

    keras_model = corpus.keras_model("digits")
    samples = CALIBRATION[:100]
    tf_int8 = convert_keras(keras_model, "int8", representative=samples)
    ours = qengine.quantize(DIGITS, "int8", samples, quiet=True)

    def acc(model_bytes):
        interp = qengine.Interpreter(model_bytes)
        x, y = interp.inputs[0], interp.outputs[0]
        images = np.clip(np.round(TEST_X / x.scale) + x.zero_point, -128, 127).astype(np.int8)
        return float(np.mean(run_tflite(model_bytes, images)[y.name].argmax(1) == TEST_Y))

    assert acc(ours.to_bytes()) >= acc(tf_int8)


@pytest.mark.tf
@pytest.mark.parametrize("mode", ["dynamic", "float16"])
def test_calibration_free_modes_agree_with_tflite(mode):
    from op_harness import check_against_tflite

    model = qengine.quantize(DIGITS, mode, quiet=True)
    check_against_tflite(model, TEST_X[:50], resolver="ref")


@pytest.mark.tf
@pytest.mark.parametrize("value", [1.5, -2.25, 0.0, 1e4])
def test_int8_padv2_pad_value_takes_the_input_parameters(value):
    """pad.cc refuses a pad value quantized with its own parameters; the pass requantizes it
    on the input's grid (clamped), and TFLite's reference kernel agrees byte for byte."""
    from tflite_ref import run_tflite

    from qengine.builder import GraphBuilder

    b = GraphBuilder()
    x = b.input("x", (2, 3, 4))
    pads = b.const("pads", np.array([[0, 1], [2, 0], [1, 3]], np.int32))
    y = b.op("PADV2", [x, pads, b.const("value", np.array([value], np.float32))], (3, 5, 8))
    rng = np.random.default_rng(0)
    model = qengine.quantize(b.build([y]), "int8",
                             rng.normal(size=(16, 2, 3, 4)).astype(np.float32), quiet=True)
    pad = next(op for op in model.main.operators if op.type == "PADV2")
    assert pad.inputs[2].dtype == "int8"
    assert pad.inputs[2].quantization.scale[0] == pad.inputs[0].quantization.scale[0]
    data = model.to_bytes()
    q = rng.integers(-128, 128, size=(2, 3, 4)).astype(np.int8)
    np.testing.assert_array_equal(qengine.Interpreter(data).run(q)[model.main.outputs[0].name],
                                  run_tflite(data, q)[model.main.outputs[0].name])


UNARY_INT8 = {"GELU": (-4.0, 4.0), "EXP": (-3.0, 1.0), "LOG": (0.05, 6.0),
              "RSQRT": (0.05, 4.0), "ABS": (-3.0, 2.0)}
COMPARISONS = ["EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL"]


def _uniform(shape, low, high, seed):
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


@pytest.mark.tf
@pytest.mark.parametrize("op_type", sorted(UNARY_INT8))
def test_int8_unary_ops_quantized_and_exact_against_tflite(op_type):
    """The pass quantizes the ops the runtime has int8 kernels for; TFLite REF agrees."""
    from op_harness import check_against_tflite

    from qengine.builder import GraphBuilder

    low, high = UNARY_INT8[op_type]
    b = GraphBuilder()
    y = b.op(op_type, [b.input("x", (4, 64))], (4, 64))
    model = qengine.quantize(b.build([y]), "int8", _uniform((32, 4, 64), low, high, 1),
                             quiet=True)
    assert [op.type for op in model.main.operators] == [op_type]
    q = np.random.default_rng(2).integers(-128, 128, size=(4, 64)).astype(np.int8)
    check_against_tflite(model, [q])


@pytest.mark.tf
@pytest.mark.parametrize("op_type", COMPARISONS)
def test_int8_comparisons_read_int8_and_write_bools(op_type):
    from op_harness import check_against_tflite

    from qengine.builder import GraphBuilder

    b = GraphBuilder()
    x, z = b.input("x", (3, 40)), b.input("z", (3, 40))
    y = b.op(op_type, [x, z], (3, 40), "bool")
    data = {"x": _uniform((16, 3, 40), -2, 2, 3), "z": _uniform((16, 3, 40), -1, 3, 4)}
    model = qengine.quantize(b.build([y]), "int8", data, quiet=True)
    op = model.main.operators[-1]
    assert op.type == op_type and op.inputs[0].dtype == op.inputs[1].dtype == "int8"
    r = np.random.default_rng(5)
    check_against_tflite(model, [r.integers(-128, 128, size=(3, 40)).astype(np.int8)
                                 for _ in range(2)])


@pytest.mark.tf
def test_int8_comparison_with_a_zero_constant_or_a_wide_range_stays_float():
    """An all-zero constant (scale 1) or a range over 255 wide has no int8 comparison kernel."""
    from op_harness import check_against_tflite

    from qengine.builder import GraphBuilder

    b = GraphBuilder()
    x, w = b.input("x", (3, 40)), b.input("w", (3, 40))
    narrow = b.op("GREATER", [x, b.const("zero", np.zeros(1, np.float32))], (3, 40), "bool")
    wide = b.op("LESS", [w, x], (3, 40), "bool")
    data = {"x": _uniform((16, 3, 40), -2, 2, 3), "w": _uniform((16, 3, 40), -500, 500, 4)}
    model = qengine.quantize(b.build([narrow, wide]), "int8", data, inference_type="float32",
                             quiet=True)
    by_type = {op.type: op for op in model.main.operators}
    assert by_type["GREATER"].inputs[0].dtype == "float32"
    assert by_type["LESS"].inputs[0].dtype == "float32"
    check_against_tflite(model, [_uniform((3, 40), -2, 2, 7), _uniform((3, 40), -500, 500, 8)])


# -- the pass's stages: parameters, range policies, the inserted-tensor map ------------------


def _residual_model():
    """x -> MUL(x, 3) -> ADD(., x): the MUL output is read only by the ADD and its scale is
    free (MUL requantizes), which is where TF's converter widens the range."""
    from qengine.builder import GraphBuilder

    b = GraphBuilder()
    x = b.input("x", (1, 16))
    scaled = b.op("MUL", [x, b.const("three", np.full((1, 16), 3.0, np.float32))], (1, 16))
    y = b.op("ADD", [scaled, x], (1, 16))
    return b.build([y]), scaled.name, y.name


def test_range_policies_choose_params():
    from qengine.calibrate import calibrate
    from qengine.qparams import choose_qparams
    from qengine.quantizer.int8 import choose_params
    from qengine.quantizer.scheme import Recipe

    model, scaled, added = _residual_model()
    data = np.random.default_rng(3).uniform(-1, 1, (32, 1, 16)).astype(np.float32)
    stats = calibrate(model, data, quiet=True)
    own = choose_params(model, stats, Recipe()).tensors
    converter = choose_params(model, stats, Recipe(range_policy="converter_add")).tensors
    (lo, hi), (out_lo, out_hi) = stats[scaled].range(), stats[added].range()
    scale, zero_point = choose_qparams(lo, hi)
    assert own[scaled] == (float(scale), zero_point)
    want = choose_qparams(min(lo, out_lo), max(hi, out_hi))
    assert converter[scaled] == (float(want[0]), want[1]) != own[scaled]
    assert {k: v for k, v in converter.items() if k != scaled} == \
        {k: v for k, v in own.items() if k != scaled}
    recipe = Recipe(range_policy="converter_add")
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert "range_policy" not in Recipe().to_dict()  # default recipes' JSON is unchanged


def test_inserted_tensors_map_to_their_sources():
    """Every tensor the pass inserts names the float tensor it stands for, in memory and in
    the written file (no name-suffix conventions)."""
    model, _, _ = _residual_model()
    data = np.random.default_rng(4).uniform(-1, 1, (8, 1, 16)).astype(np.float32)
    q = qengine.quantize(model, "int8", data, inference_type="float32", quiet=True)
    float_names = {t.name for t in model.main.all_tensors()}
    assert q.sources and set(q.sources.values()) <= float_names
    assert set(q.sources) <= {t.name for t in q.main.all_tensors()} - float_names
    reloaded = qengine.load(q.to_bytes())
    assert reloaded.sources == q.sources
    assert "qengine_sources" not in reloaded.metadata  # the map is a field, not user metadata
