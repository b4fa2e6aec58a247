"""`qengine sweep`: quantize a model in every configuration of a grid and measure each one.

Calibration statistics are collected once per calibrator (per `Plan.statistics_key`), by the
parent or, for a large calibration set, by the workers on slices whose observers are merged,
and shipped with the model bytes and the data to the workers, which only quantize
(`qengine.quantize(..., statistics=...)`), apply PTQ methods and measure. Each finished row is
written to DIR at once (the model to DIR/<key>.tflite, then the row to DIR/rows/<key>.json,
both by atomic rename), keyed by a hash of the model bytes, the calibration data, the data,
the labels and the configuration: a rerun of the same command skips every finished row, and an
interrupted sweep loses only the rows in flight.

A row: config, bytes (of the written file; null when the scheme cannot be written), sqnr_db
{min, median} over the outputs, cosine (the worst output's), accuracy and agreement (top-1,
null without labels), tflite_loads (TFLite's interpreter loads and runs the file; null when
ai-edge-litert is not installed), tflite_note (why not), pareto, path, seconds and error (why
the configuration could not be quantized, or null).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..compare import finite
from ..errors import QEngineError
from ..flatbuffer_io import atomic_write
from .grid import Plan, canonical, plan_for
from .metrics import OutputQuality, real_outputs

CACHE_VERSION = 1  # bump when a row's meaning changes, so old caches are not reused
BATCH = 32


@dataclass
class SweepInputs:
    """Everything a worker needs, shipped once per worker."""

    model: bytes  # the float .tflite
    calibration: object  # as qengine.quantize takes it
    batches: list  # the data, as lists of input arrays (stacked where the batch is dynamic)
    labels: list | None  # per batch
    reference: list  # the float model's outputs per batch
    statistics: dict  # Plan.statistics_key() -> observers


def prepare(model: bytes, calibration, data, labels, plans: list[Plan], *,
            engine: str = "local", workers: int | None = None,
            address: str | None = None) -> SweepInputs:
    """Run the float model on the data once, and calibrate once per statistics key (sharded
    over the engine's workers when the calibration set is large, see `_statistics`)."""
    from ..calibrate import iterate_samples, stack_batches
    from ..flatbuffer_io import load
    from ..runtime import Interpreter

    float_model = load(model)
    samples = list(iterate_samples(float_model, data))
    if not samples:
        raise QEngineError("the --data set is empty")
    batches = list(stack_batches(float_model, samples, BATCH))
    interpreter = Interpreter(float_model)
    reference = [real_outputs(interpreter, batch) for batch in batches]
    wanted = _wanted_statistics(plans, calibration)
    shards = _calibration_shards(calibration, workers, wanted)
    if shards:
        from .engines import run_tasks

        parts = dict(run_tasks(calibration_statistics_of, (model, wanted), shards,
                               engine=engine, workers=workers, address=address))
        statistics = merge_statistics([parts[i] for i in range(len(shards))])
    else:
        statistics = calibration_statistics_of((model, wanted), calibration)
    return SweepInputs(model, calibration, batches, _split(labels, batches, len(samples)),
                       reference, statistics)


SHARDED_CALIBRATION = 512  # samples from which calibration is spread over the workers
EXACT_MERGE = ("minmax", "percentile", "mse", "entropy")  # moving_average's merge approximates


def _wanted_statistics(plans: list[Plan], calibration) -> dict[str, Plan]:
    wanted = {}
    for plan in plans:
        if plan.calibrated:
            if calibration is None:
                raise QEngineError(f"mode {plan.mode} needs --calibration DATA")
            wanted.setdefault(plan.statistics_key(), plan)
    return wanted


def _calibration_shards(calibration, workers: int | None, wanted: dict) -> list | None:
    """Contiguous slices of a large calibration set, one per worker, when every calibrator
    merges exactly (so the statistics equal one pass over the whole set); else None."""
    from .engines import cores

    count = _sample_count(calibration)
    workers = workers or cores()
    exact = all(s.calibrator in EXACT_MERGE for plan in wanted.values()
                for s in plan.recipe.schemes())
    if not wanted or workers < 2 or count is None or count < SHARDED_CALIBRATION or not exact:
        return None
    bounds = np.linspace(0, count, workers + 1).astype(int)
    return [_rows(calibration, a, b) for a, b in itertools.pairwise(bounds)]


def _sample_count(data) -> int | None:
    if isinstance(data, np.ndarray):
        return data.shape[0]
    if isinstance(data, dict) and data:
        return next(iter(data.values())).shape[0]
    return None


def _rows(data, start: int, stop: int):
    if isinstance(data, dict):
        return {k: v[start:stop] for k, v in data.items()}
    return data[start:stop]


def calibration_statistics_of(shared: tuple, calibration) -> dict:
    """Statistics key -> observers on `calibration` for every wanted plan (runs in a worker
    when sharded)."""
    from ..flatbuffer_io import load
    from ..quantizer import calibration_statistics
    from ..quantizer.ptq import equalize

    model, wanted = shared
    float_model = load(model)
    return {key: calibration_statistics(equalize(float_model) if "cle" in plan.ptq
                                        else float_model, calibration, plan.recipe)
            for key, plan in wanted.items()}


def merge_statistics(parts: list[dict]) -> dict:
    """Per statistics key and tensor, the shards' observers merged in shard order."""
    merged = {}
    for key in parts[0]:
        observers = dict(parts[0][key])
        for part in parts[1:]:
            for name, observer in part[key].items():
                observers[name] = observers[name].merge(observer) if name in observers \
                    else observer
        merged[key] = observers
    return merged


def _split(labels, batches: list, count: int) -> list | None:
    if labels is None:
        return None
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != count:
        raise QEngineError(f"{labels.shape[0]} labels for {count} data samples")
    sizes = np.cumsum([b[0].shape[0] for b in batches])[:-1]
    return np.split(labels, sizes)


# ---------------------------------------------------------------------------------------------
# one configuration (runs in a worker)


@dataclass
class Outcome:
    row: dict
    model: bytes | None  # the file to write, or None


def evaluate(inputs: SweepInputs, config: dict) -> Outcome:
    start = time.perf_counter()
    row = {"config": config, "bytes": None, "sqnr_db": None, "cosine": None,
           "accuracy": None, "agreement": None, "tflite_loads": None, "tflite_note": None,
           "pareto": False, "path": None, "seconds": None, "error": None}
    model_bytes = None
    try:
        model = quantized(inputs, plan_for(config))
        model_bytes, row["tflite_loads"], row["tflite_note"] = _export(model, inputs.batches[0])
        row["bytes"] = None if model_bytes is None else len(model_bytes)
        row |= _quality(model, inputs)
    except QEngineError as e:
        row["error"] = f"{type(e).__name__}: {e}"
    row["seconds"] = round(time.perf_counter() - start, 3)
    return Outcome(row, model_bytes)


def quantized(inputs: SweepInputs, plan: Plan):
    from ..flatbuffer_io import load
    from ..quantizer import quantize
    from ..quantizer.ptq import adaround, bias_correction, equalize

    source = load(inputs.model)
    if not plan.calibrated:
        return quantize(source, plan.mode, per_channel=plan.per_channel, quiet=True,
                        weight_bits=plan.weight_bits, block_size=plan.block_size)
    if "cle" in plan.ptq:
        source = equalize(source)
    model = quantize(source, recipe=plan.recipe, inference_type=plan.inference_type,
                     quiet=True, statistics=inputs.statistics[plan.statistics_key()])
    if "adaround" in plan.ptq:
        model = adaround(source, model, inputs.calibration)
    if "bias_correction" in plan.ptq:
        model = bias_correction(source, model, inputs.calibration)
    return model


def _export(model, batch: list) -> tuple[bytes | None, bool | None, str | None]:
    """The file's bytes (None if the scheme cannot be written) and whether TFLite runs it."""
    from ..errors import ExportError

    try:
        data = model.to_bytes()
    except ExportError as e:
        return None, False, f"not exportable: {e}"
    loads, note = tflite_runs(data, model, batch)
    return data, loads, note


def tflite_runs(data: bytes, model, batch: list) -> tuple[bool | None, str | None]:
    """Whether TFLite's default interpreter (ai-edge-litert: XNNPACK, then builtin kernels)
    loads the file and runs one batch of the data; None when ai-edge-litert is not installed.
    When the default interpreter fails, the note says whether the builtin kernels alone run it.
    """
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:
        return None, "ai-edge-litert not installed: not checked"
    from ..compare import quantize_input

    arrays = [quantize_input(t, x) for t, x in zip(model.main.inputs, batch)]
    problem = _tflite_problem(data, arrays, OpResolverType.AUTO)
    if problem is None:
        return True, None
    builtin = _tflite_problem(data, arrays, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    also = "its builtin kernels (no delegate) run it" if builtin is None else \
        f"nor do its builtin kernels: {builtin}"
    return False, f"TFLite's default interpreter fails: {problem}; {also}"


def _tflite_problem(data: bytes, arrays: list, resolver) -> str | None:
    from ai_edge_litert.interpreter import Interpreter

    from ..cli_common import set_tflite_inputs

    try:
        tfl = Interpreter(model_content=data, num_threads=1,
                          experimental_op_resolver_type=resolver)
        set_tflite_inputs(tfl, arrays, allocate=True)
        tfl.invoke()
    except (RuntimeError, ValueError) as e:
        return " ".join(str(e).split())
    return None


def _quality(model, inputs: SweepInputs) -> dict:
    from ..runtime import Interpreter

    interpreter = Interpreter(model)
    quality = OutputQuality()
    for i, batch in enumerate(inputs.batches):
        quality.add(real_outputs(interpreter, batch), inputs.reference[i],
                    None if inputs.labels is None else inputs.labels[i])
    labelled = inputs.labels is not None
    return {"sqnr_db": quality.sqnr_db(), "cosine": quality.cosine(),
            "accuracy": quality.accuracy(), "agreement": quality.agreement() if labelled else None}


# ---------------------------------------------------------------------------------------------
# the sweep


@dataclass
class SweepResult:
    rows: list[dict]  # in grid order; finished rows only when interrupted
    interrupted: bool
    skipped: int  # rows taken from DIR


def sweep(model: bytes, calibration, data, configs: list[dict], out_dir, *, labels=None,
          engine: str = "local", workers: int | None = None, address: str | None = None,
          log=None) -> SweepResult:
    """Every configuration's row, computing only those DIR does not hold yet."""
    from .engines import run_tasks

    _check_labels(labels, data)
    out_dir = Path(out_dir)
    (out_dir / "rows").mkdir(parents=True, exist_ok=True)
    base = _digest(model, calibration, data, labels)
    keys = [row_key(base, config) for config in configs]
    rows = {i: row for i, key in enumerate(keys) if (row := cached_row(out_dir, key))}
    todo = [i for i in range(len(configs)) if i not in rows]
    say = log or (lambda text: None)
    say(f"{len(configs)} configurations: {len(rows)} already in {out_dir}, {len(todo)} to run")
    interrupted = False
    if todo:
        inputs = prepare(model, calibration, data, labels, [plan_for(configs[i]) for i in todo],
                         engine=engine, workers=workers, address=address)
        tasks = run_tasks(evaluate, inputs, [configs[i] for i in todo], engine=engine,
                          workers=workers, address=address)
        try:
            for n, (j, outcome) in enumerate(tasks, 1):
                i = todo[j]
                rows[i] = store(out_dir, keys[i], outcome)
                say(f"[{n}/{len(todo)}] {describe(rows[i])}")
        except KeyboardInterrupt:
            interrupted = True
        finally:
            tasks.close()
    ordered = [rows[i] for i in sorted(rows)]
    mark_pareto(ordered)
    return SweepResult(ordered, interrupted, len(configs) - len(todo))


def _check_labels(labels, data) -> None:
    """Before any work: one label per sample (of an array, or of a dict's arrays)."""
    if labels is None:
        return
    first = data if isinstance(data, np.ndarray) else next(iter(data.values()), None)
    count = None if first is None else np.asarray(first).shape[0]
    if count is not None and np.asarray(labels).reshape(-1).shape[0] != count:
        raise QEngineError(f"{np.asarray(labels).size} labels for {count} data samples")


def row_key(base: str, config: dict) -> str:
    return hashlib.sha256(f"{base}:{canonical(config)}".encode()).hexdigest()[:20]


def _digest(*parts) -> str:
    h = hashlib.sha256(f"qengine-sweep-{CACHE_VERSION}".encode())
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


def _feed(h, value) -> None:
    if value is None:
        h.update(b"none")
    elif isinstance(value, (bytes, bytearray)):
        h.update(b"bytes%d" % len(value))
        h.update(value)
    elif isinstance(value, dict):
        for key in sorted(value):
            h.update(f"key:{key}".encode())
            _feed(h, value[key])
    else:
        array = np.ascontiguousarray(value)
        h.update(f"array:{array.dtype.str}:{array.shape}".encode())
        h.update(array.tobytes())


def cached_row(out_dir: Path, key: str) -> dict | None:
    """A finished row, if its JSON (and the file it names) are both there."""
    try:
        row = json.loads((out_dir / "rows" / f"{key}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if row.get("path") and not Path(row["path"]).exists():
        return None
    return _from_json(row)


def store(out_dir: Path, key: str, outcome: Outcome) -> dict:
    row = dict(outcome.row)
    if outcome.model is not None:
        path = out_dir / f"{key}.tflite"
        atomic_write(path, outcome.model)
        row["path"] = str(path)
    atomic_write(out_dir / "rows" / f"{key}.json", json.dumps(finite(row)).encode())
    return row


def _from_json(value):
    """Undo `finite`: the strings "inf"/"-inf" where SQNRs are stored become floats."""
    sqnr = value.get("sqnr_db")
    if isinstance(sqnr, dict):
        value["sqnr_db"] = {k: float(v) for k, v in sqnr.items()}
    return value


# ---------------------------------------------------------------------------------------------
# Pareto front, tables, plot


def mark_pareto(rows: list[dict]) -> None:
    """A written model TFLite runs (or that was not checked) is on the front when no other is
    at most as large with at least the same worst-output SQNR, and strictly better in one."""
    points = [(r["bytes"], r["sqnr_db"]["min"]) for r in rows if _measurable(r)]
    for row in rows:
        row["pareto"] = _measurable(row) and not any(
            b <= row["bytes"] and s >= row["sqnr_db"]["min"] and
            (b < row["bytes"] or s > row["sqnr_db"]["min"]) for b, s in points)


def _measurable(row: dict) -> bool:
    return row["bytes"] is not None and row["sqnr_db"] is not None and \
        row["tflite_loads"] is not False and not math.isnan(row["sqnr_db"]["min"])


def describe(row: dict) -> str:
    config = ", ".join(f"{k}={json.dumps(v)}" for k, v in row["config"].items()) or "defaults"
    if row["error"]:
        return f"{config}: {row['error']}"
    size = "not exportable" if row["bytes"] is None else f"{row['bytes']:,} B"
    sqnr = row["sqnr_db"]
    text = f"{config}: {size}, SQNR min {sqnr['min']:.2f} dB"
    if row["accuracy"] is not None:
        text += f", accuracy {row['accuracy']:.4f}"
    return text + ("" if row["tflite_loads"] is not False else f" ({row['tflite_note']})")


def to_json(rows: list[dict]) -> str:
    return json.dumps(finite(rows), indent=2)


CSV_FIELDS = ("bytes", "sqnr_min_db", "sqnr_median_db", "cosine", "accuracy", "agreement",
              "tflite_loads", "pareto", "path", "seconds", "error")


def to_csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row["config"]))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(keys + list(CSV_FIELDS))
    for row in rows:
        sqnr = row["sqnr_db"] or {}
        flat = dict(row, sqnr_min_db=sqnr.get("min"), sqnr_median_db=sqnr.get("median"))
        writer.writerow([_cell(row["config"].get(k, "")) for k in keys] +
                        [_cell(flat[k]) for k in CSV_FIELDS])
    return out.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(finite(value))


def plot(rows: list[dict], path) -> None:
    """Size against worst-output SQNR, the Pareto front joined (needs matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise QEngineError("plotting needs matplotlib: pip install 'qengine[plot]'") from None
    shown = [r for r in rows if _measurable(r)]
    finite_sqnr = [r["sqnr_db"]["min"] for r in shown if math.isfinite(r["sqnr_db"]["min"])]
    ceiling = max(finite_sqnr, default=0.0) + 10  # where "no error at all" (inf dB) is drawn
    sqnr = [min(r["sqnr_db"]["min"], ceiling) for r in shown]
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter([r["bytes"] for r in shown], sqnr, color="grey", label="configuration")
    front = sorted((r["bytes"], s) for r, s in zip(shown, sqnr) if r["pareto"])
    ax.plot([b for b, _ in front], [s for _, s in front], "o-", color="tab:red",
            label="Pareto front")
    ax.set_xlabel("file bytes")
    ax.set_ylabel("worst output SQNR (dB)")
    ax.set_title(f"{len(shown)} written configurations")
    ax.legend()
    fig.savefig(Path(path), dpi=100)


def print_table(rows: list[dict], file=sys.stdout) -> None:
    print(f"{'':2}{'bytes':>10}{'SQNR min':>10}{'median':>9}{'accuracy':>10}{'TFLite':>8}  "
          f"config", file=file)
    for row in rows:
        sqnr = row["sqnr_db"] or {}
        cells = [_num(row["bytes"], "{:,}"), _num(sqnr.get("min"), "{:.2f}"),
                 _num(sqnr.get("median"), "{:.2f}"), _num(row["accuracy"], "{:.4f}"),
                 {True: "yes", False: "no", None: "-"}[row["tflite_loads"]]]
        config = canonical(row["config"]) + (f"  error: {row['error']}" if row["error"] else "")
        print(f"{'*' if row['pareto'] else ' ':2}{cells[0]:>10}{cells[1]:>10}{cells[2]:>9}"
              f"{cells[3]:>10}{cells[4]:>8}  {config}", file=file)
    print("* on the Pareto front (file bytes vs worst-output SQNR)", file=file)


def _num(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
