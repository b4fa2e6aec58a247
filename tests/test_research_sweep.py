"""`qengine sweep`: grids, shared calibration, cached rows, and rows checked against TFLite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from qengine.cli import main
from qengine.research import grid as grids
from qengine.research import sweep as sw

EXAMPLES = Path(__file__).parents[1] / "examples"
MODEL = str(EXAMPLES / "digits.tflite")
DATA = EXAMPLES / "digits_data.npz"
GRID = {"mode": ["int8", "int16x8"], "granularity": ["per_channel", "per_tensor"],
        "calibrator": ["minmax", "percentile"]}
ROW_KEYS = {"config", "bytes", "sqnr_db", "cosine", "accuracy", "agreement", "tflite_loads",
            "pareto", "path", "seconds"}


def sweep_args(tmp: Path, grid: dict | list, *extra: str) -> list[str]:
    (tmp / "grid.json").write_text(json.dumps(grid))
    return ["sweep", MODEL, "--calibration", str(DATA), "--calibration-key", "calibration",
            "--data", str(DATA), "--data-key", "test_images", "--grid", str(tmp / "grid.json"),
            "-o", str(tmp / "out"), *extra]


def one_line_error(capsys, argv, *fragments):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


# ---------------------------------------------------------------------------------------------
# grids


def test_grid_is_the_product_in_key_order():
    configs = grids.configurations(GRID)
    assert len(configs) == 8
    assert configs[0] == {"mode": "int8", "granularity": "per_channel", "calibrator": "minmax"}
    assert configs[-1] == {"mode": "int16x8", "granularity": "per_tensor",
                           "calibrator": "percentile"}


def test_uncalibrated_modes_drop_scheme_keys_and_duplicates():
    configs = grids.configurations({"mode": ["dynamic", "float16"], "weight_bits": [8, 4],
                                    "calibrator": ["minmax", "mse"], "ptq": [[], ["cle"]]})
    assert configs == [{"mode": "dynamic", "weight_bits": 8}, {"mode": "dynamic", "weight_bits": 4},
                       {"mode": "float16"}]
    plan = grids.plan_for({"mode": "weight-only", "weight_bits": 4, "granularity": "blockwise",
                           "block_size": 32})
    assert (plan.weight_bits, plan.block_size, plan.recipe) == (4, 32, None)


@pytest.mark.parametrize("grid, fragment", [
    ({"weigth_bits": [4]}, "unknown grid key 'weigth_bits'"),
    ({}, "grid is empty"),
    ([], "grid is empty"),
    ({"mode": []}, "'mode' has an empty list"),
    ({"mode": "int8"}, "must map to a list"),
    ({"weight_bits": [9]}, "weight_bits must be an integer from 2 to 8"),
    ({"ptq": [["gptq"]]}, "unknown PTQ method 'gptq'"),
    ({"recipe": [{"default": {}}], "weight_bits": [4]}, "'recipe' sets the schemes itself"),
])
def test_bad_grids_are_one_line_errors(capsys, tmp_path, grid, fragment):
    one_line_error(capsys, sweep_args(tmp_path, grid), fragment)
    assert not list((tmp_path / "out").glob("*.tflite")) if (tmp_path / "out").exists() else True


def test_labels_of_the_wrong_length_are_one_line_errors(capsys, tmp_path):
    np.save(tmp_path / "labels.npy", np.zeros(7, np.int64))
    one_line_error(capsys, sweep_args(tmp_path, {"mode": ["float16"]}, "--labels",
                                      str(tmp_path / "labels.npy")), "7 labels for 500")


# ---------------------------------------------------------------------------------------------
# shared statistics


def test_statistics_are_collected_once_per_calibrator_and_give_the_same_models(monkeypatch):
    import qengine
    from qengine import quantizer

    data = np.load(DATA)
    calibration, test = data["calibration"][:40], data["test_images"][:8]
    model = Path(MODEL).read_bytes()
    plans = [grids.plan_for(c) for c in grids.configurations(GRID)]
    calls = []
    original = quantizer.calibration_statistics
    monkeypatch.setattr(quantizer, "calibration_statistics",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    inputs = sw.prepare(model, calibration, test, None, plans)
    assert len(calls) == 2  # minmax and percentile, shared by 4 configurations each
    for plan in plans[::3]:
        shared = sw.quantized(inputs, plan).to_bytes()
        alone = qengine.quantize(model, calibration=calibration, recipe=plan.recipe, quiet=True)
        assert shared == alone.to_bytes()


def test_interrupted_sweep_keeps_finished_rows_and_resumes(monkeypatch, tmp_path, capsys):
    """Ctrl-C after the first finished row: that row stays in DIR and the rerun skips it."""
    from qengine.research import engines

    def one_then_interrupt(func, shared, items, **options):
        yield 0, func(shared, items[0])
        raise KeyboardInterrupt

    grid = {"mode": ["float16", "int8"]}
    real = engines.run_tasks
    monkeypatch.setattr(engines, "run_tasks", one_then_interrupt)
    code = main(sweep_args(tmp_path, grid, "--json", str(tmp_path / "rows.json")))
    assert code == 130
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["config"] for r in rows] == [{"mode": "float16"}]
    assert Path(rows[0]["path"]).exists()
    capsys.readouterr()
    monkeypatch.setattr(engines, "run_tasks", lambda func, shared, items, **o: real(
        func, shared, items, engine="local", workers=1))
    assert main(sweep_args(tmp_path, grid, "--json", str(tmp_path / "rows.json"))) == 0
    assert "1 already in" in capsys.readouterr().err
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["config"] for r in rows] == [{"mode": "float16"}, {"mode": "int8"}]


def test_pareto_front_is_the_undominated_rows():
    def row(size, sqnr, loads=True):
        return {"bytes": size, "sqnr_db": {"min": sqnr, "median": sqnr}, "tflite_loads": loads}

    rows = [row(100, 40.0), row(90, 30.0), row(100, 35.0), row(80, 30.0), row(50, 50.0, False),
            row(120, math.inf)]
    sw.mark_pareto(rows)
    assert [r["pareto"] for r in rows] == [True, False, False, True, False, True]


# ---------------------------------------------------------------------------------------------
# the 8-configuration sweep, checked against TFLite


@pytest.fixture(scope="module")
def digit_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    argv = sweep_args(tmp, GRID, "--labels", "test_labels", "--json", str(tmp / "rows.json"),
                      "--csv", str(tmp / "rows.csv"), "--plot", str(tmp / "pareto.png"),
                      "--workers", "2")
    assert main(argv) == 0
    return tmp, argv, json.loads((tmp / "rows.json").read_text())


def _sqnr(reference: np.ndarray, got: np.ndarray) -> float:
    f, q = reference.astype(np.float64), got.astype(np.float64)
    return 10 * math.log10(np.sum(f * f) / np.sum((q - f) ** 2))


@pytest.mark.tf
@pytest.mark.slow
def test_sweep_rows_equal_what_tflite_gives_on_the_same_data(digit_sweep):
    from tflite_ref import dequantize_outputs, quantize_inputs, run_tflite

    _, _, rows = digit_sweep
    data = np.load(DATA)
    images, labels = data["test_images"], data["test_labels"]
    reference = np.concatenate([next(iter(run_tflite(MODEL, [x[None]], "auto").values()))
                                for x in images])
    assert [r["config"] for r in rows] == grids.configurations(GRID)
    for row in rows:
        assert ROW_KEYS <= set(row) and row["error"] is None, row
        assert row["bytes"] == Path(row["path"]).stat().st_size
        outputs = []
        for x in images:
            raw = run_tflite(row["path"], quantize_inputs(row["path"], [x[None]]), "ref")
            outputs.append(next(iter(dequantize_outputs(row["path"], raw).values())))
        got = np.concatenate(outputs)
        # bit-exact quantized outputs; the float reference differs from qengine's float run by
        # float32 rounding, which moves a 40 dB SQNR by far less than 1e-3 dB
        assert row["sqnr_db"]["min"] == pytest.approx(_sqnr(reference, got), abs=1e-3)
        assert row["sqnr_db"]["median"] == row["sqnr_db"]["min"]  # one output
        assert row["accuracy"] == np.mean(got.argmax(1) == labels)
        assert row["agreement"] == np.mean(got.argmax(1) == reference.argmax(1))


@pytest.mark.tf
@pytest.mark.slow
def test_rerun_skips_finished_rows_and_csv_has_every_row(digit_sweep, capsys):
    tmp, argv, rows = digit_sweep
    capsys.readouterr()
    assert main(argv) == 0
    assert "8 already in" in capsys.readouterr().err
    assert json.loads((tmp / "rows.json").read_text()) == rows
    lines = (tmp / "rows.csv").read_text().splitlines()
    assert len(lines) == 9 and lines[0].startswith("mode,granularity,calibrator,bytes")
    assert (tmp / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_sharded_calibration_equals_one_pass():
    """700 samples on 2 workers: minmax and percentile observers merge exactly."""
    data = np.load(DATA)
    calibration = np.concatenate([data["calibration"], data["test_images"]])
    model = Path(MODEL).read_bytes()
    plans = [grids.plan_for(c) for c in grids.configurations(
        {"calibrator": ["minmax", "percentile"], "ptq": [[], ["cle"]]})]
    wanted = sw._wanted_statistics(plans, calibration)
    shards = sw._calibration_shards(calibration, 2, wanted)
    assert len(shards) == 2 and len(wanted) == 4
    inputs = sw.prepare(model, calibration, data["test_images"][:4], None, plans, workers=2)
    whole = sw.calibration_statistics_of((model, wanted), calibration)
    assert inputs.statistics.keys() == whole.keys()
    for key in whole:
        assert inputs.statistics[key] == whole[key], key
