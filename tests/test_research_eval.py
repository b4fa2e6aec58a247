"""`qengine eval`: streamed shards give the figures TFLite gives on the whole set at once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from qengine.cli import main

EXAMPLES = Path(__file__).parents[1] / "examples"
MODEL = str(EXAMPLES / "digits.tflite")
COUNT = 120


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """An int8 digit model and 120 test images as 3 .npy shards, one .npz and a labels file."""
    tmp = tmp_path_factory.mktemp("eval")
    data = np.load(EXAMPLES / "digits_data.npz")
    images, labels = data["test_images"][:COUNT], data["test_labels"][:COUNT]
    assert main(["quantize", MODEL, "--calibration", str(EXAMPLES / "digits_data.npz"),
                 "--calibration-key", "calibration", "-o", str(tmp / "int8.tflite")]) == 0
    (tmp / "shards").mkdir()
    for i, part in enumerate(np.array_split(images, 3)):
        np.save(tmp / "shards" / f"part{i}.npy", part)
    np.save(tmp / "labels.npy", labels)
    np.savez(tmp / "all.npz", images=images, labels=labels)
    return tmp, images, labels


def run_eval(capsys, tmp, *argv) -> dict:
    out = tmp / f"figures{len(list(tmp.glob('figures*')))}.json"
    assert main(["eval", str(tmp / "int8.tflite"), "--reference", MODEL, "--quiet",
                 "--json", str(out), *argv]) == 0
    capsys.readouterr()
    return json.loads(out.read_text())


def test_shards_in_chunks_equal_one_file_at_once(capsys, dataset):
    tmp, _, _ = dataset
    whole = run_eval(capsys, tmp, "--data", str(tmp / "all.npz"), "--data-key", "images",
                     "--labels", "labels", "--chunk", "1000")
    streamed = run_eval(capsys, tmp, "--data", str(tmp / "shards"), "--labels",
                        str(tmp / "labels.npy"), "--chunk", "7", "--workers", "1")
    assert whole["samples"] == streamed["samples"] == COUNT
    for key in ("top1", "top5", "agreement"):
        assert whole[key] == streamed[key]
    # the int8 outputs are exact whatever the batch; the float reference's matmuls round
    # differently for a batch of 7 and one of 120 (float32), which moves SQNR by ~1e-5 dB
    assert streamed["sqnr_db"]["min"] == pytest.approx(whole["sqnr_db"]["min"], abs=1e-3)


@pytest.mark.slow
def test_shards_on_two_workers_equal_one_worker(capsys, dataset):
    tmp, _, _ = dataset
    args = ["--data", str(tmp / "shards"), "--labels", str(tmp / "labels.npy")]
    one = run_eval(capsys, tmp, *args, "--workers", "1")
    two = run_eval(capsys, tmp, *args, "--workers", "2")
    assert one == two  # merged in shard order, so even the float sums are equal


@pytest.mark.tf
def test_eval_figures_equal_tflite_on_the_same_data(capsys, dataset):
    from tflite_ref import dequantize_outputs, quantize_inputs, run_tflite

    tmp, images, labels = dataset
    figures = run_eval(capsys, tmp, "--data", str(tmp / "shards"), "--labels",
                       str(tmp / "labels.npy"))
    quant = str(tmp / "int8.tflite")
    got = np.concatenate([next(iter(dequantize_outputs(quant, run_tflite(
        quant, quantize_inputs(quant, [x[None]]), "ref")).values())) for x in images])
    want = np.concatenate([next(iter(run_tflite(MODEL, [x[None]], "auto").values()))
                           for x in images])
    assert figures["top1"] == np.mean(got.argmax(1) == labels)
    assert figures["agreement"] == np.mean(got.argmax(1) == want.argmax(1))
    top5 = np.argsort(-got, axis=1)[:, :5]
    assert figures["top5"] == np.mean((top5 == labels[:, None]).any(1))
    f, q = want.astype(np.float64), got.astype(np.float64)
    sqnr = 10 * math.log10(np.sum(f * f) / np.sum((q - f) ** 2))
    assert figures["sqnr_db"]["min"] == pytest.approx(sqnr, abs=1e-3)  # float reference: 1e-6


def one_line_error(capsys, argv, *fragments):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_mismatched_shard_shapes_are_one_line_errors(capsys, dataset, tmp_path):
    _, images, _ = dataset
    np.save(tmp_path / "a.npy", images[:4])
    np.save(tmp_path / "b.npy", images[:4, :20])
    one_line_error(capsys, ["eval", MODEL, "--data", str(tmp_path)],
                   "shard b.npy: samples of shape (20, 28)", "a.npy has (28, 28)")


def test_wrong_label_count_and_missing_key_are_one_line_errors(capsys, dataset):
    tmp, _, _ = dataset
    one_line_error(capsys, ["eval", MODEL, "--data", str(tmp / "all.npz"), "--data-key",
                            "pixels"], "has no array 'pixels'")
    np.save(tmp / "short.npy", np.zeros(5, np.int64))
    one_line_error(capsys, ["eval", MODEL, "--data", str(tmp / "shards"), "--labels",
                            str(tmp / "short.npy")], "5 labels for 120 samples")
