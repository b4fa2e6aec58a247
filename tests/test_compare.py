"""qengine.compare and `qengine compare`: every number checked against a direct NumPy
computation on the same tensors, taken from the Interpreter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from naive.int8_conv import _patches, same_padding, valid_padding

import qengine
from qengine.builder import SAME, VALID, GraphBuilder, options
from qengine.cli import main
from qengine.compare import auto_keep_float, compare

EXAMPLES = Path(__file__).parents[1] / "examples"
MODEL = str(EXAMPLES / "digits.tflite")
DATA = np.load(EXAMPLES / "digits_data.npz")
CONV_OUT = "sequential_1/conv2d_1/Relu;sequential_1/conv2d_1/BiasAdd;" \
           "sequential_1/conv2d_1/convolution;sequential_1/conv2d_1/Squeeze1"
CONV_IN = "sequential_1/reshape_1/Reshape"
LOGITS = "StatefulPartitionedCall_1:0"


@pytest.fixture(scope="module")
def digits_int8():
    return qengine.quantize(MODEL, "int8", DATA["calibration"][:64], quiet=True)


@pytest.fixture(scope="module")
def digits_report(digits_int8):
    return compare(MODEL, digits_int8, DATA["test_images"][:32])


# -- direct computations ------------------------------------------------------------------------


def quantize_like(t, x):
    """TFLite's reference QUANTIZE: round half away from zero of x / scale (float32), + zp."""
    v = np.asarray(x, np.float32) / np.float32(t.scale)
    rounded = np.trunc(v) + np.where(np.abs(v - np.trunc(v)) >= 0.5, np.sign(v), 0)
    info = np.iinfo(np.dtype(t.dtype))
    return np.clip(rounded + t.zero_point, info.min, info.max).astype(t.dtype)


def dequantize_like(t, q):
    return np.float64(t.scale) * (q.astype(np.int64) - t.zero_point)


def direct_metrics(f, q):
    f, q = f.astype(np.float64).ravel(), q.astype(np.float64).ravel()
    err = q - f
    return {"sqnr_db": 10 * np.log10(np.sum(f * f) / np.sum(err * err)),
            "rmse": np.sqrt(np.mean(err * err)),
            "cosine": np.sum(f * q) / np.sqrt(np.sum(f * f) * np.sum(q * q)),
            "max_error": np.abs(err).max()}


def assert_metrics(metrics, expected):
    for key, value in expected.items():
        assert getattr(metrics, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key


def tensor_of(model, name):
    return next(t for t in model.main.all_tensors() if t.name == name)


# -- accumulated and own error ------------------------------------------------------------------


def test_accumulated_error_of_every_tensor_matches_numpy(digits_int8, digits_report):
    x = DATA["test_images"][:32]
    f = qengine.Interpreter(MODEL).run(x, keep=True)
    q_input = quantize_like(digits_int8.main.inputs[0], x)
    q = qengine.Interpreter(digits_int8).run(q_input, keep=True)
    assert {t.name for t in digits_report.tensors} == {
        "serving_default_image:0", CONV_IN, CONV_OUT, "sequential_1/max_pooling2d_1/MaxPool2d",
        "sequential_1/flatten_1/Reshape", LOGITS}
    for entry in digits_report.tensors:
        t = tensor_of(digits_int8, entry.name)
        assert_metrics(entry.accumulated, direct_metrics(f[t.name], dequantize_like(t, q[t.name])))
    logits = digits_report.tensor(LOGITS)
    assert digits_report.output_sqnr_db == logits.accumulated.sqnr_db
    t = tensor_of(digits_int8, LOGITS)
    at_limit = np.count_nonzero(q[LOGITS] == 127) + (
        np.count_nonzero(q[LOGITS] == -128) if t.zero_point != -128 else 0)
    assert logits.saturation == at_limit / q[LOGITS].size


def test_own_error_of_the_conv_is_the_op_alone_on_float_exact_inputs(digits_int8, digits_report):
    x = DATA["test_images"][:32]
    f = qengine.Interpreter(MODEL).run(x, keep=True)
    quant = qengine.Interpreter(digits_int8)
    index = next(i for i, op in enumerate(digits_int8.main.operators) if op.type == "CONV_2D")
    x_exact = quantize_like(tensor_of(digits_int8, CONV_IN), f[CONV_IN])
    (out,) = quant.run_op(index, {CONV_IN: x_exact})
    own = digits_report.tensor(CONV_OUT).own
    assert_metrics(own, direct_metrics(f[CONV_OUT], dequantize_like(
        tensor_of(digits_int8, CONV_OUT), out)))
    # the op alone is never worse than the op plus everything upstream, here or downstream
    logits = digits_report.tensor(LOGITS)
    assert logits.own.sqnr_db >= logits.accumulated.sqnr_db - 1e-9


def test_headroom_of_the_dense_layer_matches_numpy(digits_int8, digits_report):
    fc = next(op for op in digits_int8.main.operators if op.type == "FULLY_CONNECTED")
    x = quantize_like(digits_int8.main.inputs[0], DATA["test_images"][:32])
    q = qengine.Interpreter(digits_int8).run(x, keep=True)[fc.inputs[0].name]
    w, b = fc.inputs[1].data.astype(np.int64), fc.inputs[2].data.astype(np.int64)
    acc = (q.reshape(32, -1).astype(np.int64) - fc.inputs[0].zero_point) @ w.T + b
    (entry,) = [h for h in digits_report.headroom if h.op == "FULLY_CONNECTED"]
    assert entry.max_accumulator == np.abs(acc).max()
    assert entry.accumulator_fraction == np.abs(acc).max() / 2 ** 31
    assert entry.max_bias == np.abs(b).max() and entry.bias_fraction == np.abs(b).max() / 2 ** 31


# -- a deliberately bad layer -------------------------------------------------------------------


def outlier_model():
    """conv1 (channel 3 dead: ReLU of -1) -> conv2 -> depthwise. conv2 has one huge weight on
    the dead channel: with one scale per tensor every other weight of conv2 rounds to ~0."""
    rng = np.random.default_rng(7)
    b = GraphBuilder()
    x = b.input("x", (1, 8, 8, 3), dynamic_batch=True)
    w1 = rng.normal(0, 0.4, (4, 3, 3, 3)).astype(np.float32)
    w1[3] = 0
    conv = options("Conv2DOptions", padding=SAME, strideW=1, strideH=1,
                   fusedActivationFunction=1)
    h1 = b.op("CONV_2D", [x, b.const("w1", w1), b.const("b1", np.array([0.1, 0, 0.1, -1],
                                                                      np.float32))],
              (1, 8, 8, 4), options=conv)
    w2 = rng.normal(0, 0.3, (4, 3, 3, 4)).astype(np.float32)
    w2[0, 1, 1, 3] = 60.0
    h2 = b.op("CONV_2D", [h1, b.const("w2", w2), b.const("b2", np.zeros(4, np.float32))],
              (1, 8, 8, 4), options=options("Conv2DOptions", padding=SAME, strideW=1,
                                            strideH=1))
    w3 = rng.normal(0, 0.5, (1, 3, 3, 8)).astype(np.float32)
    out = b.op("DEPTHWISE_CONV_2D", [h2, b.const("w3", w3), b.const("b3", np.full(
        8, 0.05, np.float32))], (1, 6, 6, 8), options=options(
        "DepthwiseConv2DOptions", padding=VALID, strideW=1, strideH=1, depthMultiplier=2))
    h1.name, h2.name, out.name = "conv1", "conv2", "depthwise"
    return b.build([out])


@pytest.fixture(scope="module")
def outlier():
    model = outlier_model()
    data = np.random.default_rng(1).random((40, 8, 8, 3), dtype=np.float32)
    quant = qengine.quantize(model, "int8", data, per_channel=False, quiet=True)
    return model, quant, data, compare(model, quant, data)


def test_the_layer_with_an_outlier_weight_ranks_first_by_own_error(outlier):
    _, _, _, report = outlier
    ranked = [t.name for t in report.ranked()]
    assert ranked[0] == "conv2", report.format_text()
    conv2, depthwise = report.tensor("conv2"), report.tensor("depthwise")
    assert conv2.own.sqnr_db < 10 < depthwise.own.sqnr_db
    assert depthwise.accumulated.sqnr_db < 10  # it inherits conv2's error, adds little
    assert report.to_dict()["ranking"] == ranked


def naive_accumulator(op, q):
    """int64 sum w * (x - zp) + bias with the twin's own patch gathering."""
    x, w = op.inputs[0], op.inputs[1].data.astype(np.int64)
    xs = q[x.name].astype(np.int64) - x.zero_point
    o = op.options
    pad_rule = same_padding if o.padding == SAME else valid_padding
    (oh, pt), (ow, pl) = (pad_rule(xs.shape[i], w.shape[i], 1, 1) for i in (1, 2))
    if op.type == "DEPTHWISE_CONV_2D":
        xs = np.repeat(xs, w.shape[3] // xs.shape[3], axis=-1)
        p = _patches(xs, w.shape[1], w.shape[2], (1, 1), (1, 1), (pt, pl), (oh, ow))
        acc = np.einsum("nyhxwc,hwc->nyxc", p, w[0])
    else:
        p = _patches(xs, w.shape[1], w.shape[2], (1, 1), (1, 1), (pt, pl), (oh, ow))
        acc = np.einsum("nyhxwc,ohwc->nyxo", p, w)
    return acc + op.inputs[2].data.astype(np.int64)


def test_conv_and_depthwise_headroom_match_an_int64_twin(outlier):
    _, quant, data, report = outlier
    q = qengine.Interpreter(quant).run(quantize_like(quant.main.inputs[0], data), keep=True)
    audited = {h.output: h for h in report.headroom}
    assert set(audited) == {"conv1", "conv2", "depthwise"}
    for op in quant.main.operators:
        if op.outputs[0].name in audited:
            acc = naive_accumulator(op, q)
            assert audited[op.outputs[0].name].max_accumulator == np.abs(acc).max(), op.type


# -- selective quantization ---------------------------------------------------------------------


def test_keep_float_takes_glob_patterns_and_float_ops_have_no_own_error():
    quant = qengine.quantize(MODEL, "int8", DATA["calibration"][:32], quiet=True,
                             keep_float=("sequential_1/conv2d_1/*",))
    conv = next(op for op in quant.main.operators if op.type == "CONV_2D")
    assert conv.inputs[0].dtype == "float32" and conv.inputs[1].dtype == "float32"
    report = compare(MODEL, quant, DATA["test_images"][:16])
    entry = report.tensor(CONV_OUT)
    assert not entry.quantized and entry.own.sqnr_db == math.inf
    assert entry.accumulated.sqnr_db < math.inf  # its input was still quantized upstream


def test_auto_keep_float_does_not_worsen_the_output():
    result = auto_keep_float(MODEL, DATA["calibration"][:32], 1, quiet=True)
    assert result.kept == [LOGITS] == [result.before.ranked()[0].name]  # the dense layer
    assert result.after.output_sqnr_db >= result.before.output_sqnr_db
    assert not result.after.tensor(result.kept[0]).quantized


# -- errors -------------------------------------------------------------------------------------


def test_models_that_do_not_belong_together_are_refused(outlier):
    model = outlier[0]
    with pytest.raises(qengine.InputError, match="quantized version"):
        compare(MODEL, model, DATA["test_images"][:2])


def test_data_of_the_wrong_shape_is_refused(digits_int8):
    with pytest.raises(qengine.InputError, match="shape"):
        compare(MODEL, digits_int8, np.zeros((4, 5, 5), np.float32))


# -- CLI ----------------------------------------------------------------------------------------


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def digits_int8_file(tmp_path_factory, digits_int8):
    path = tmp_path_factory.mktemp("compare") / "digits_int8.tflite"
    digits_int8.save(path)
    return path


def test_cli_prints_the_ranking_and_writes_json(capsys, tmp_path, digits_int8_file,
                                                digits_report):
    out_json = tmp_path / "report.json"
    code, out, err = run_cli(capsys, "compare", MODEL, digits_int8_file, "--data",
                             EXAMPLES / "digits_data.npz", "--data-key", "test_images",
                             "--limit", 32, "--json", out_json)
    assert code == 0, err
    rows = [line for line in out.splitlines() if "dB" in line and "output SQNR" not in line]
    assert rows[0].startswith(LOGITS)  # the worst own error, as in the Python report
    assert "accumulator headroom" in out and "output SQNR" in out
    saved = json.loads(out_json.read_text())
    assert saved["samples"] == 32 and saved["ranking"] == [t.name for t in digits_report.ranked()]
    assert saved["output_sqnr_db"] == pytest.approx(digits_report.output_sqnr_db)


def test_cli_plot_writes_a_png(capsys, tmp_path, digits_int8_file):
    pytest.importorskip("matplotlib")
    data, png = tmp_path / "x.npy", tmp_path / "sqnr.png"
    np.save(data, DATA["test_images"][:8])
    code, _, err = run_cli(capsys, "compare", MODEL, digits_int8_file, "--data", data,
                           "--plot", png)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_data_is_one_line_error(capsys, tmp_path, digits_int8_file):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 5, 5), np.float32))
    code, _, err = run_cli(capsys, "compare", MODEL, digits_int8_file, "--data", bad)
    assert_one_line_error(code, err, "shape")
    code, _, err = run_cli(capsys, "compare", MODEL, digits_int8_file, "--data",
                           EXAMPLES / "digits_data.npz")
    assert_one_line_error(code, err, "--data-key")


def test_cli_quantize_auto_keep_float(capsys, tmp_path):
    data, out = tmp_path / "cal.npy", tmp_path / "kept.tflite"
    np.save(data, DATA["calibration"][:32])
    code, stdout, err = run_cli(capsys, "quantize", MODEL, "--calibration", data,
                                "--auto-keep-float", 1, "-o", out, "--quiet")
    assert code == 0, err
    assert "auto-keep-float: kept" in stdout and "output SQNR" in stdout
    before, after = (float(v.split()[0]) for v in stdout.split("output SQNR ")[1].split(" -> "))
    assert after >= before
    assert any(op.inputs[0].dtype == "float32" and op.type != "DEQUANTIZE"
               for op in qengine.load(out).main.operators if op.inputs)
