"""compare's per-tensor error as node data for Google's Model Explorer (ai-edge-model-explorer).

Model Explorer overlays "node data" on a graph: a JSON object {graph id: {"results": {node key:
{"value": number}}, "gradient": [...]}}, one value per node and one metric per file. Its TFLite
adapter (builtin_tflite_flatbuffer) calls the main graph by the subgraph's name (when empty: the
key of the signature that runs it, else "main") and an op node by its index in the subgraph;
a result may also be keyed by an output tensor name, which is how graph inputs are keyed.

Three files come from one comparison (OUT.json and two beside it):

    OUT.json                own SQNR (dB): the op alone on float-exact inputs
    OUT_accumulated.json    accumulated SQNR (dB): end to end
    OUT_saturation.json     saturation (%): values at the ends of the integer range

Values are rounded to 2 decimals (SQNR) or 3 (saturation %). An op with several compared
outputs shows the worst one. Exact tensors (SQNR inf dB) have no value, as JSON has no
infinity: an op without a value adds no error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..compare import CompareReport, TensorError

# low SQNR is bad (red), high is good (green); for saturation the other way round
GOOD_HIGH = [{"stop": 0, "bgColor": "#e53935"}, {"stop": 0.5, "bgColor": "#fdd835"},
             {"stop": 1, "bgColor": "#43a047"}]
GOOD_LOW = [dict(item, stop=1 - item["stop"]) for item in reversed(GOOD_HIGH)]

METRICS = {  # file suffix -> (name shown in Model Explorer, value of a tensor, worst of several)
    "": ("own SQNR (dB)", lambda t: _rounded(t.own_sqnr, 2), min, GOOD_HIGH),
    "_accumulated": ("accumulated SQNR (dB)", lambda t: _rounded(t.accumulated.sqnr_db, 2), min,
                     GOOD_HIGH),
    "_saturation": ("saturation (%)", lambda t: _rounded(t.saturation, 3, 100), max, GOOD_LOW),
}


def _rounded(value: float | None, digits: int, factor: float = 1.0) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value * factor, digits)


def graph_id(model) -> str:
    """The id Model Explorer's TFLite adapter gives the main graph."""
    if model.main.name:
        return model.main.name
    signature = next((s for s in model.signatures if s.subgraph is model.main), None)
    return signature.key if signature else "main"


def node_data(report: CompareReport, model, suffix: str = "") -> dict:
    name, value_of, worst, gradient = METRICS[suffix]
    results: dict = {}
    for t in report.tensors:
        value = value_of(t)
        if value is None:
            continue
        key = _node_key(t)
        results[key] = {"value": value if key not in results else
                        worst(value, results[key]["value"])}
    return {graph_id(model): {"name": name, "results": results, "gradient": gradient}}


def _node_key(t: TensorError) -> str:
    return t.name if t.op_index is None else str(t.op_index)


def paths(out) -> list[Path]:
    out = Path(out)
    return [out.with_name(out.stem + suffix + out.suffix) for suffix in METRICS]


def write(report: CompareReport, model, out) -> list[Path]:
    """OUT.json and the two files beside it; returns their paths."""
    written = []
    for suffix, path in zip(METRICS, paths(out)):
        path.write_text(json.dumps(node_data(report, model, suffix), indent=1) + "\n")
        written.append(path)
    return written


def serve(model_path, node_data_paths, *, port: int = 8080, open_browser: bool = True) -> None:
    """Start Model Explorer's local server on the quantized model with the overlays."""
    try:
        import model_explorer
    except ImportError:
        from ..errors import QEngineError

        raise QEngineError("explore needs Model Explorer: pip install "
                           "'qengine[model-explorer]'") from None
    config = model_explorer.config().add_model_from_path(str(Path(model_path).resolve()))
    for path in reversed(node_data_paths):  # the last one added is shown: own SQNR
        config.add_node_data_from_path(str(Path(path).resolve()))
    model_explorer.visualize_from_config(config, port=port, no_open_in_browser=not open_browser)
