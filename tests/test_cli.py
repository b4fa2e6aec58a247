"""The CLI as a user meets it: commands, outputs, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qengine
from qengine.cli import main
from qengine.cli_common import generated_inputs

EXAMPLES = Path(__file__).parents[1] / "examples"
MODEL = str(EXAMPLES / "digits.tflite")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "calibration.npy"
    np.save(path, np.load(EXAMPLES / "digits_data.npz")["calibration"][:32])
    return str(path)


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_inspect_text_and_json(capsys):
    code, out, _ = run_cli(capsys, "inspect", MODEL)
    assert code == 0 and "CONV_2D" in out and "serving_default" in out
    code, out, _ = run_cli(capsys, "inspect", MODEL, "--json")
    info = json.loads(out)
    assert info["inputs"][0]["shape"] == [-1, 28, 28]
    assert {op["op"] for op in info["ops"]} >= {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"}
    assert info["metadata"]["min_runtime_version"]


def test_run_with_generated_input_writes_outputs(capsys, tmp_path):
    out_path = tmp_path / "out.npz"
    code, out, err = run_cli(capsys, "run", MODEL, "--output", str(out_path), "--repeat", "2")
    assert code == 0, err
    assert "generated" in err and "latency" in out
    with np.load(out_path) as saved:
        (name,) = saved.files
        direct = qengine.Interpreter(MODEL).run(np.random.default_rng(0).random(
            (1, 28, 28), dtype=np.float32))
        np.testing.assert_array_equal(saved[name], direct[name])


def test_run_with_npy_and_npz_inputs(capsys, tmp_path):
    x = np.load(EXAMPLES / "digits_data.npz")["test_images"][:3]
    np.save(tmp_path / "x.npy", x)
    assert run_cli(capsys, "run", MODEL, "--input", str(tmp_path / "x.npy"), "--repeat", "1")[0] == 0
    np.savez(tmp_path / "x.npz", image=x)  # the signature's input name
    assert run_cli(capsys, "run", MODEL, "--input", str(tmp_path / "x.npz"), "--repeat", "1")[0] == 0


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((1, 28, 27), np.float32), "expects shape (None, 28, 28) float32"),
    (np.zeros((1, 28, 28), np.int32), "got dtype int32"),
])
def test_run_rejects_wrong_inputs(capsys, tmp_path, array, fragment):
    np.save(tmp_path / "x.npy", array)
    code, _, err = run_cli(capsys, "run", MODEL, "--input", str(tmp_path / "x.npy"))
    assert_one_line_error(code, err, fragment)


def test_run_rejects_unknown_npz_key(capsys, tmp_path):
    np.savez(tmp_path / "x.npz", nope=np.zeros((1, 28, 28), np.float32))
    code, _, err = run_cli(capsys, "run", MODEL, "--input", str(tmp_path / "x.npz"))
    assert_one_line_error(code, err, "'nope' is not an input")


def test_corrupt_model_is_one_line_error(capsys, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(Path(MODEL).read_bytes()[:5000])
    for command in ("inspect", "run"):
        code, _, err = run_cli(capsys, command, str(bad))
        assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "run", str(tmp_path / "missing.tflite"))
    assert_one_line_error(code, err, "missing.tflite")


def test_unsupported_custom_op_is_named(capsys, tmp_path):
    from qengine.builder import GraphBuilder

    b = GraphBuilder()
    x = b.input("x", (2,))
    y = b.op("Landmarks", [x], (2,), custom_code="Landmarks")
    path = tmp_path / "custom.tflite"
    b.build([y]).save(path)
    code, _, err = run_cli(capsys, "run", str(path))
    assert_one_line_error(code, err, "op 0 CUSTOM:Landmarks (output 'landmarks_out')")


@pytest.mark.parametrize("mode", ["int8", "dynamic", "float16"])
def test_quantize_modes(capsys, tmp_path, calibration, mode):
    out = tmp_path / f"{mode}.tflite"
    code, stdout, err = run_cli(capsys, "quantize", MODEL, "--mode", mode, "--calibration",
                                calibration, "-o", str(out), "--quiet")
    assert code == 0, err
    assert "wrote" in stdout and out.exists()
    if mode != "int8":
        assert "ignoring" in err  # calibration data is not needed and says so
    model = qengine.load(out)
    model.verify()
    assert len(out.read_bytes()) < len(Path(MODEL).read_bytes()) / 1.8


def test_quantize_bad_calibration_leaves_no_file(capsys, tmp_path):
    out = tmp_path / "q.tflite"
    np.save(tmp_path / "bad.npy", np.zeros((4, 28, 29), np.float32))
    code, _, err = run_cli(capsys, "quantize", MODEL, "--calibration", str(tmp_path / "bad.npy"),
                           "-o", str(out))
    assert_one_line_error(code, err, "shape")
    assert not out.exists()
    nan = np.full((2, 28, 28), np.nan, np.float32)
    np.save(tmp_path / "nan.npy", nan)
    code, _, err = run_cli(capsys, "quantize", MODEL, "--calibration", str(tmp_path / "nan.npy"),
                           "-o", str(out))
    assert_one_line_error(code, err, "NaN")
    np.save(tmp_path / "empty.npy", np.zeros((0, 28, 28), np.float32))
    code, _, err = run_cli(capsys, "quantize", MODEL, "--calibration",
                           str(tmp_path / "empty.npy"), "-o", str(out))
    assert_one_line_error(code, err, "empty")
    code, _, err = run_cli(capsys, "quantize", MODEL, "-o", str(out))
    assert_one_line_error(code, err, "calibration data")
    assert not out.exists()


def test_module_entry_point_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    result = subprocess.run([sys.executable, "-m", "qengine", "run", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.tf
def test_run_compare_passes_on_the_example(capsys):
    code, out, err = run_cli(capsys, "run", MODEL, "--compare", "--repeat", "1")
    assert code == 0, out + err
    assert "PASS" in out and "FAIL" not in out


@pytest.mark.parametrize("calibrator", ["minmax", "percentile", "mse", "entropy",
                                        "moving_average"])
def test_quantize_with_each_calibrator(capsys, tmp_path, calibration, calibrator):
    out = tmp_path / f"{calibrator}.tflite"
    code, _, err = run_cli(capsys, "quantize", MODEL, "--calibration", calibration,
                           "--calibrator", calibrator, "-o", str(out), "--quiet")
    assert code == 0, err
    qengine.load(out).verify()


@pytest.mark.tf
@pytest.mark.slow
def test_quantize_accepts_a_keras_model(capsys, tmp_path, corpus):
    keras_path = tmp_path / "mlp.keras"
    corpus.keras_model("mlp").save(keras_path)
    np.save(tmp_path / "calibration.npy", corpus.sample_inputs("mlp", 8, seed=0))
    out = tmp_path / "mlp_int8.tflite"
    code, _, err = run_cli(capsys, "quantize", str(keras_path), "--calibration",
                           str(tmp_path / "calibration.npy"), "-o", str(out), "--quiet")
    assert code == 0, err
    assert qengine.load(out).main.inputs[0].dtype == "int8"


def _int8_add_model(path):
    """One int8 ADD whose XNNPACK arithmetic differs from the reference kernels' on ~3% of
    input pairs (output shape given: the delegate only takes ops with known shapes)."""
    from qengine.builder import GraphBuilder
    from qengine.ir import Quantization

    b = GraphBuilder()
    x = b.input("a", (64, 64), "int8", Quantization.per_tensor(0.05, 3))
    y = b.input("b", (64, 64), "int8", Quantization.per_tensor(0.02, -7))
    out = b.op("ADD", [x, y], out_shape=(64, 64),
               out_quantization=Quantization.per_tensor(0.06, 2))
    b.build([out]).save(path)


@pytest.mark.tf
def test_run_xnnpack_arithmetic_compares_with_the_default_interpreter(capsys, tmp_path):
    """--arithmetic xnnpack --compare checks against TFLite's default interpreter (XNNPACK)."""
    model = tmp_path / "add.tflite"
    _int8_add_model(model)
    inputs = generated_inputs(qengine.load(model).main.inputs, 0)
    ref = qengine.Interpreter(model).run(inputs)
    xnn = qengine.Interpreter(model, arithmetic="xnnpack").run(inputs)
    assert any(np.any(ref[k] != xnn[k]) for k in ref), "the arithmetics agree on this input"
    code, out, err = run_cli(capsys, "run", str(model), "--arithmetic", "xnnpack", "--compare",
                             "--repeat", "1")
    assert code == 0, out + err
    assert "PASS" in out and "FAIL" not in out


def test_quantize_takes_one_array_of_an_npz(capsys, tmp_path):
    """The bundled example's .npz holds calibration, test images and labels."""
    data, out = str(EXAMPLES / "digits_data.npz"), tmp_path / "q.tflite"
    code, _, err = run_cli(capsys, "quantize", MODEL, "--calibration", data, "-o", str(out))
    assert_one_line_error(code, err, "not an input")
    code, _, err = run_cli(capsys, "quantize", MODEL, "--calibration", data,
                           "--calibration-key", "labels", "-o", str(out))
    assert_one_line_error(code, err, "no array 'labels'")
    assert not out.exists()
    code, _, _ = run_cli(capsys, "quantize", MODEL, "--calibration", data, "--calibration-key",
                         "calibration", "-o", str(out), "--quiet")
    assert code == 0 and qengine.load(out).main.inputs[0].dtype == "int8"
