"""`qengine compare FLOAT QUANT --data DATA`: per-tensor error attribution (see compare.py)."""

from __future__ import annotations

from pathlib import Path

from .cli_common import positive
from .errors import InputError


def add_compare(commands) -> None:
    p = commands.add_parser(
        "compare", help="per-tensor error of a quantized model against its float original: "
                        "accumulated vs own error, saturation, accumulator headroom")
    p.add_argument("float_model", metavar="FLOAT", help="the float .tflite")
    p.add_argument("quant_model", metavar="QUANT", nargs="?",
                   help="a quantized version of it; or leave it out and give --recipe to "
                        "quantize in memory (how research schemes that cannot be written to "
                        ".tflite are evaluated)")
    p.add_argument("--recipe", metavar="FILE.json",
                   help="quantize FLOAT with this recipe instead of reading QUANT")
    p.add_argument("--calibration", metavar="CAL",
                   help="with --recipe: calibration data (default: the --data samples)")
    p.add_argument("--calibration-key", metavar="KEY",
                   help="use only this array of the --calibration .npz")
    p.add_argument("--data", required=True, metavar="DATA",
                   help=".npy (samples on axis 0), .npz keyed by input name, or a directory "
                        "of them")
    p.add_argument("--data-key", metavar="KEY",
                   help="use only this array of the .npz (single-input models)")
    p.add_argument("--limit", type=positive, help="use the first N samples")
    p.add_argument("--top", type=positive, default=30,
                   help="rows of the table (default 30; --json has them all)")
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="plot per-layer SQNR (needs matplotlib)")
    p.add_argument("--model-explorer", metavar="OUT.json",
                   help="write own SQNR (OUT.json), accumulated SQNR (OUT_accumulated.json) "
                        "and saturation (OUT_saturation.json) as Model Explorer node data for "
                        "QUANT (see qengine explore)")
    p.set_defaults(handler=cmd_compare)


COMMANDS = [add_compare]


def cmd_compare(args) -> int:
    from .cli_quantize import read_model
    from .compare import compare

    float_model = read_model(args.float_model)
    data = read_data(args.data, args.data_key, float_model)
    quant_model = quantized(args, float_model, data)
    report = compare(float_model, quant_model, data, limit=args.limit)
    print(report.format_text(args.top))
    if args.json:
        Path(args.json).write_text(report.to_json() + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")
    if args.model_explorer:
        from .research import model_explorer

        written = model_explorer.write(report, quant_model, args.model_explorer)
        print(f"wrote {', '.join(map(str, written))}")
    return 0


def quantized(args, float_model, data):
    """QUANT read from its file, or FLOAT quantized in memory with --recipe."""
    from .cli_quantize import read_model

    if (args.quant_model is None) == (args.recipe is None):
        raise InputError("give either QUANT (a quantized .tflite) or --recipe FILE.json, "
                         "not both or neither")
    if args.quant_model is not None:
        if args.calibration:
            raise InputError("--calibration is only used with --recipe")
        return read_model(args.quant_model)
    from .quantizer import quantize
    from .quantizer.scheme import Recipe

    calibration = read_data(args.calibration, args.calibration_key, float_model,
                            "--calibration-key") if args.calibration else data
    return quantize(float_model, calibration=calibration, recipe=Recipe.load(args.recipe))


def read_data(path: str, key: str | None, model, flag: str = "--data-key"):
    """Calibration-style data; an .npz whose keys are not input names needs --data-key."""
    from .cli_quantize import load_calibration

    data = load_calibration(path)
    if not isinstance(data, dict):
        if key:
            raise InputError(f"{flag} {key!r} needs an .npz; {path} holds one array")
        return data
    if key:
        if key not in data:
            raise InputError(f"{path} has no array {key!r}; it has {', '.join(data)}")
        return data[key]
    names = {t.name for t in model.main.inputs} | {
        name for sig in model.signatures for name in sig.inputs}
    if not set(data) & names:
        raise InputError(f"{path}: keys {', '.join(data)} are not input names "
                         f"({', '.join(sorted(names))}); pick one array with {flag}")
    return data

