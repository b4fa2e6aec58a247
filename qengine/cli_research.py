"""`qengine sweep`, `qengine eval` and `qengine search`: the CLI faces of qengine.research."""

from __future__ import annotations

import sys
from pathlib import Path

from .cli_common import positive
from .errors import InputError


def _add_engine(p) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: a process pool on this machine (default); ray: a local Ray "
                        "instance, or the cluster at --address (needs qengine[ray])")
    p.add_argument("--address", metavar="ADDR", help="--engine ray: join this Ray cluster "
                                                     "(HOST:PORT, ray://HOST:PORT or auto)")
    p.add_argument("--workers", type=positive, help="parallel workers (default: one per core)")


def _add_data(p, labels_help: str) -> None:
    p.add_argument("--calibration", metavar="CAL", help=".npy, .npz or a directory of them")
    p.add_argument("--calibration-key", metavar="KEY", help="one array of the --calibration .npz")
    p.add_argument("--data", required=True, metavar="DATA",
                   help="inputs the configurations are measured on (.npy, .npz or a directory)")
    p.add_argument("--data-key", metavar="KEY", help="one array of the --data .npz")
    p.add_argument("--labels", metavar="LABELS", help=labels_help)


def add_sweep(commands) -> None:
    p = commands.add_parser("sweep", help="quantize in every configuration of a grid and "
                                          "measure size, SQNR, accuracy and TFLite loading")
    p.add_argument("model")
    _add_data(p, "class labels for the --data samples (.npy, or KEY of the --data .npz)")
    p.add_argument("--grid", required=True, metavar="GRID.json",
                   help="keys -> lists of values (mode, Scheme fields, ptq, recipe, "
                        "inference_type), or a list of configurations")
    p.add_argument("-o", "--out-dir", default="sweep", metavar="DIR",
                   help="written models and finished rows (reused by a rerun; default ./sweep)")
    p.add_argument("--json", metavar="OUT", help="write the rows as a JSON list")
    p.add_argument("--csv", metavar="OUT", help="write the rows as CSV")
    p.add_argument("--plot", metavar="OUT.png", help="plot bytes vs SQNR with the Pareto front")
    _add_engine(p)
    p.set_defaults(handler=cmd_sweep)


def add_eval(commands) -> None:
    p = commands.add_parser("eval", help="accuracy, and agreement and SQNR against a reference "
                                         "model, over a dataset of shards streamed in chunks")
    p.add_argument("model")
    p.add_argument("--data", required=True, metavar="DIR|FILE",
                   help="a .npy/.npz file or a directory of them (shards, read in name order)")
    p.add_argument("--data-key", metavar="KEY", help="the input array of each .npz shard "
                                                     "(single-input models)")
    p.add_argument("--labels", metavar="LABELS",
                   help="class indices: a .npy for every sample in shard order, or KEY of an "
                        "array in each .npz shard")
    p.add_argument("--reference", metavar="FLOAT.tflite",
                   help="compare outputs with this model's (agreement, SQNR, cosine)")
    p.add_argument("--chunk", type=positive, default=256,
                   help="samples in memory at a time (default 256)")
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_engine(p)
    p.set_defaults(handler=cmd_eval)


def add_search(commands) -> None:
    p = commands.add_parser("search", help="the smallest per-op mixed-precision model that "
                                           "meets an SQNR or accuracy target")
    p.add_argument("model")
    _add_data(p, "class labels for --target-accuracy (.npy, or KEY of the --data .npz)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-sqnr", type=float, metavar="DB",
                        help="worst-output SQNR against the float model on --data")
    target.add_argument("--target-accuracy", type=float, metavar="A",
                        help="top-1 accuracy on --data with --labels (0..1)")
    p.add_argument("--max-bytes", type=positive, metavar="N", help="largest acceptable file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.tflite")
    p.add_argument("--recipe-out", metavar="R.json",
                   help="write the recipe that reproduces OUT through quantize --recipe")
    p.set_defaults(handler=cmd_search)


def add_explore(commands) -> None:
    p = commands.add_parser("explore", help="open QUANT in Model Explorer with compare's "
                                            "per-op error on the graph")
    p.add_argument("float_model", metavar="FLOAT")
    p.add_argument("quant_model", metavar="QUANT")
    p.add_argument("--data", required=True, metavar="DATA", help=".npy, .npz or a directory")
    p.add_argument("--data-key", metavar="KEY", help="one array of the --data .npz")
    p.add_argument("--limit", type=positive, help="use the first N samples")
    p.add_argument("--node-data", metavar="OUT.json", default="model_explorer.json",
                   help="where the node data is written (default ./model_explorer.json and "
                        "two files beside it)")
    p.add_argument("--port", type=positive, default=8080)
    p.add_argument("--no-browser", action="store_true", help="only start the server")
    p.set_defaults(handler=cmd_explore)


COMMANDS = [add_sweep, add_eval, add_search, add_explore]


def cmd_explore(args) -> int:
    from .cli_quantize import read_model
    from .compare import compare
    from .research import model_explorer

    float_model = read_model(args.float_model)
    quant_model = read_model(args.quant_model)
    data = read_data(args.data, args.data_key, float_model)
    report = compare(float_model, quant_model, data, limit=args.limit)
    written = model_explorer.write(report, quant_model, args.node_data)
    print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    model_explorer.serve(args.quant_model, written, port=args.port,
                         open_browser=not args.no_browser)
    return 0


def cmd_search(args) -> int:
    from .research.search import Target, search

    if args.target_accuracy is not None and not args.labels:
        raise InputError("--target-accuracy needs --labels (accuracy is measured on them)")
    if not args.calibration:
        raise InputError("search needs --calibration DATA (representative inputs)")
    model = model_bytes(args.model)
    float_model = _load(model)
    target = Target(args.target_sqnr, args.target_accuracy)
    result = search(model, read_calibration(args, float_model),
                    read_data(args.data, args.data_key, float_model), target,
                    labels=read_labels(args.labels, args.data), max_bytes=args.max_bytes,
                    log=lambda text: print(text, file=sys.stderr))
    limit = "" if args.max_bytes is None else f" within {args.max_bytes:,} bytes"
    if result.best is None:
        closest = result.closest
        near = "nothing exportable" if closest is None else (
            f"{target.describe(closest.quality)} at {closest.bytes:,} bytes")
        if closest is not None and args.max_bytes and closest.bytes > args.max_bytes:
            near += " (the smallest model tried; none fits the size limit)"
        print(f"target not reachable{limit}: {result.tried} models tried; closest: {near}")
        return 1
    from .flatbuffer_io import atomic_write

    best = result.best
    atomic_write(Path(args.output), best.data)
    print(f"wrote {args.output}: {target.describe(best.quality)} at {best.bytes:,} bytes "
          f"({best.bytes / result.float_bytes:.2f}x the float model); {result.tried} models "
          f"tried")
    if args.recipe_out:
        best.recipe.save(args.recipe_out)
        print(f"wrote {args.recipe_out} (qengine quantize MODEL --calibration CAL --recipe "
              f"{args.recipe_out} -o OUT reproduces it)")
    return 0


def cmd_sweep(args) -> int:
    from .research import sweep as sw
    from .research.grid import load_grid

    configs = load_grid(args.grid)
    model = model_bytes(args.model)
    float_model = _load(model)
    data = read_data(args.data, args.data_key, float_model)
    labels = read_labels(args.labels, args.data)
    calibration = read_calibration(args, float_model)
    result = sw.sweep(model, calibration, data, configs, args.out_dir, labels=labels,
                      engine=args.engine, workers=args.workers, address=args.address,
                      log=lambda text: print(text, file=sys.stderr))
    write_outputs(args, result.rows)
    sw.print_table(result.rows)
    if result.interrupted:
        print(f"interrupted: {len(result.rows)} finished rows kept in {args.out_dir}; run the "
              f"same command again to continue", file=sys.stderr)
        return 130
    return 0


def write_outputs(args, rows: list[dict]) -> None:
    from .research import sweep as sw

    if args.json:
        Path(args.json).write_text(sw.to_json(rows) + "\n")
    if args.csv:
        Path(args.csv).write_text(sw.to_csv(rows))
    if args.plot:
        sw.plot(rows, args.plot)


def cmd_eval(args) -> int:
    import json

    from .compare import finite
    from .research import evaluate as ev

    model = model_bytes(args.model)
    reference = model_bytes(args.reference) if args.reference else None
    shards = ev.find_shards(args.data, args.data_key)
    in_shards = _labels_in_shards(args.labels, shards)
    _check_label_count(args.labels, in_shards, sum(s.count for s in shards))
    setup = ev.EvalSetup(model, reference, args.data_key, args.labels, in_shards, args.chunk)
    quality = ev.evaluate(setup, shards, engine=args.engine, workers=args.workers,
                          address=args.address, quiet=args.quiet)
    figures = ev.summary(quality)
    print(format_figures(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(finite(figures), indent=2) + "\n")
    return 0


def _labels_in_shards(labels: str | None, shards) -> bool:
    if labels is None or (labels.endswith(".npy") and Path(labels).exists()):
        return False
    if not all(s.path.endswith(".npz") for s in shards):
        raise InputError(f"--labels {labels!r}: no such .npy file (an array name needs .npz "
                         f"shards)")
    import numpy as np

    for shard in shards:
        with np.load(shard.path) as z:
            if labels not in z.files:
                raise InputError(f"--labels {labels!r}: shard {Path(shard.path).name} has no "
                                 f"such array")
    return True


def _check_label_count(labels: str | None, in_shards: bool, samples: int) -> None:
    if labels is None or in_shards:
        return
    import numpy as np

    count = np.load(labels, mmap_mode="r").shape[0]
    if count != samples:
        raise InputError(f"--labels {labels}: {count} labels for {samples} samples")


def format_figures(figures: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{v:.2%}"

    sqnr = figures["sqnr_db"]
    lines = [f"samples    {figures['samples']:,}",
             f"top-1      {pct(figures['top1'])}", f"top-5      {pct(figures['top5'])}",
             f"agreement  {pct(figures['agreement'])}"]
    if sqnr is not None:
        lines.append(f"SQNR       min {sqnr['min']:.2f} dB, median {sqnr['median']:.2f} dB "
                     f"over outputs; cosine {figures['cosine']:.6f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# reading models and data


def model_bytes(path: str) -> bytes:
    """The float model's bytes: the .tflite file as is, or a converted Keras model."""
    from .cli_quantize import KERAS_SUFFIXES, read_model

    source = Path(path)
    if source.suffix in KERAS_SUFFIXES or source.is_dir():
        return read_model(path).to_bytes()
    data = source.read_bytes()
    _load(data)  # a malformed file fails here, with the reader's message
    return data


def _load(data: bytes):
    from .flatbuffer_io import load

    return load(data)


def read_data(path: str, key: str | None, model):
    from .cli_compare import read_data as read

    return read(path, key, model)


def read_calibration(args, model):
    if not args.calibration:
        return None
    return read_data(args.calibration, args.calibration_key, model)


def read_labels(path: str | None, data_path: str):
    """A .npy of labels, or the name of an array in the --data .npz."""
    if path is None:
        return None
    import numpy as np

    from .cli_quantize import load_calibration

    if not path.endswith(".npy") and not Path(path).exists():
        data = load_calibration(data_path)
        if not isinstance(data, dict) or path not in data:
            raise InputError(f"--labels {path!r}: no such file, nor an array of {data_path}")
        return data[path]
    labels = load_calibration(path)
    if not isinstance(labels, np.ndarray):
        raise InputError(f"--labels {path}: expected one array of class indices (.npy)")
    return labels
