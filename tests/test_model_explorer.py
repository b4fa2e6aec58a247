"""compare's Model Explorer overlay: keyed as Model Explorer's TFLite adapter names nodes, and
shown on the graph by Model Explorer itself in headless Chromium."""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import qengine
from qengine.cli import main

EXAMPLES = Path(__file__).parents[1] / "examples"
MODEL = str(EXAMPLES / "digits.tflite")
DATA = str(EXAMPLES / "digits_data.npz")


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    """An int8 digit model and the three node data files `compare --model-explorer` writes."""
    tmp = tmp_path_factory.mktemp("explorer")
    calibration = np.load(DATA)["calibration"][:32]
    qengine.quantize(MODEL, calibration=calibration, quiet=True).save(tmp / "int8.tflite")
    assert main(["compare", MODEL, str(tmp / "int8.tflite"), "--data", DATA, "--data-key",
                 "test_images", "--limit", "40", "--json", str(tmp / "report.json"),
                 "--model-explorer", str(tmp / "me.json")]) == 0
    files = [tmp / "me.json", tmp / "me_accumulated.json", tmp / "me_saturation.json"]
    return tmp / "int8.tflite", files, json.loads((tmp / "report.json").read_text())


def expected_own_sqnr(report: dict) -> dict[str, float]:
    """Node key -> own SQNR rounded to 2 decimals, the worst of an op's outputs, from the
    compare report (infinite values have no entry)."""
    values = defaultdict(list)
    for t in report["tensors"]:
        own = t["own"]["sqnr_db"] if t["own"] else "inf"
        if own in ("inf", "-inf"):
            continue
        values[t["name"] if t["op_index"] is None else str(t["op_index"])].append(own)
    return {k: round(min(v), 2) for k, v in values.items()}


def test_node_data_holds_compares_own_error_per_node(overlay):
    _, files, report = overlay
    data = json.loads(files[0].read_text())
    assert list(data) == ["main"]
    results = {k: v["value"] for k, v in data["main"]["results"].items()}
    assert results == expected_own_sqnr(report)
    assert data["main"]["name"] == "own SQNR (dB)"
    for path, name in zip(files[1:], ("accumulated SQNR (dB)", "saturation (%)")):
        assert json.loads(path.read_text())["main"]["name"] == name


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_model_explorer_adapter") is None,
                    reason="needs ai-edge-model-explorer (pip install 'qengine[explorer]')")
def test_node_keys_are_the_tflite_adapters_node_ids(overlay):
    import ai_edge_model_explorer_adapter as adapter

    model_path, files, _ = overlay
    graphs = json.loads(adapter.ConvertFlatbufferDirectlyToJson(adapter.VisualizeConfig(),
                                                                str(model_path)))
    graph = graphs[0]["subgraphs"][0]
    nodes = {n["id"]: n for n in graph["nodes"]}
    tensor_names = {a["value"] for n in graph["nodes"] for m in n.get("outputsMetadata", [])
                    for a in m.get("attrs", []) if a["key"] == "tensor_name"}
    ops = qengine.load(model_path).main.operators
    data = json.loads(files[0].read_text())
    assert list(data) == [graph["id"]]
    for key in data[graph["id"]]["results"]:
        if key.isdigit():  # an op: the adapter's node of that index is that op
            assert nodes[key]["label"] == ops[int(key)].type.lower()
        else:  # a graph input, keyed by its tensor name
            assert key in tensor_names


@pytest.mark.slow
def test_model_explorer_shows_the_values_on_the_graph(overlay):
    import explorer_browser

    reason = explorer_browser.missing()
    if reason:
        pytest.skip(reason)
    model_path, files, report = overlay
    with explorer_browser.server(model_path, files) as url:
        table = explorer_browser.node_table(url)
    column = next(i for i, h in enumerate(table["header"]) if "own SQNR (dB)" in h)
    shown = defaultdict(list)  # node label -> own SQNR values shown, for the op nodes
    for row in table["rows"]:
        if row[column] != "-":
            shown[row[1]].append(float(row[column]))
    want = defaultdict(list)
    ops = qengine.load(model_path).main.operators
    for key, value in expected_own_sqnr(report).items():
        want[ops[int(key)].type.lower() if key.isdigit() else "GraphInputs"].append(value)
    assert {k: sorted(v) for k, v in shown.items()} == {k: sorted(v) for k, v in want.items()}
