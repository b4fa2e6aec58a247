"""`qengine sweep`, `qengine eval` and `qengine search`: the CLI faces of qengine.research."""

from __future__ import annotations

import sys
from pathlib import Path

from .cli import _positive
from .errors import InputError


def _add_engine(p) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: a process pool on this machine (default); ray: a local Ray "
                        "instance, or the cluster at --address (needs qengine[ray])")
    p.add_argument("--address", metavar="ADDR", help="--engine ray: join this Ray cluster "
                                                     "(HOST:PORT, ray://HOST:PORT or auto)")
    p.add_argument("--workers", type=_positive, help="parallel workers (default: one per core)")


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


COMMANDS = [add_sweep]


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
