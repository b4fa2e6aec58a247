"""`qengine quantize`: the CLI face of `qengine.quantize`, plus reading calibration data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .errors import InputError, NothingToQuantize, QEngineError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def add_quantize(commands) -> None:
    p = commands.add_parser("quantize", help="quantize a float model (int8, int16x8, dynamic, "
                                             "weight-only, float16)")
    p.add_argument("model", help=".tflite file, or a Keras model (.keras/.h5/SavedModel dir) "
                                 "with the tf extra installed")
    p.add_argument("--mode", choices=("int8", "int16x8", "dynamic", "weight-only", "float16"),
                   help="default int8 (int16x8 if --recipe says int16 activations); int16x8: "
                        "int16 activations with int8 weights (TFLite's 16x8 scheme); "
                        "weight-only: low-bit weights expanded to float by DEQUANTIZE")
    p.add_argument("--weight-bits", type=int, default=8, metavar="N",
                   help="2-8 (default 8): weights stored as TFLite's int4 (3-4 bits) or int2 "
                        "(2 bits) tensors below 5 bits")
    p.add_argument("--block-size", type=int, default=0, metavar="N",
                   help="one float16 scale per N weights along the input channels "
                        "(FULLY_CONNECTED, int4: TFLite's blockwise kernel)")
    p.add_argument("--weight-clipping", choices=("minmax", "mse"), default="minmax",
                   help="weight scales from max|w| (default), or the clipping bound with the "
                        "least squared weight error per channel/block (recipes: the scheme's "
                        "weight_clipping field)")
    p.add_argument("--weight-rounding", choices=("nearest", "gptq"), default="nearest",
                   help="dynamic/weight-only modes: gptq rounds FULLY_CONNECTED and CONV_2D "
                        "weights with second-order error feedback from --calibration DATA")
    p.add_argument("--min-weight-elements", type=int, metavar="N",
                   help="dynamic mode: leave filters of fewer values in float (default: 1024 "
                        "for 8-bit weights, as TensorFlow's converter; 0 otherwise)")
    p.add_argument("--preset", metavar="NAME",
                   help="an ai-edge-quantizer recipe name (dynamic_wi4_afp32, "
                        "dynamic_wi4b32_afp32, weight_only_wi8_afp32, static_wi8_ai8, ...): "
                        "sets --mode, --weight-bits and --block-size")
    p.add_argument("--calibration", metavar="DATA",
                   help="int8/int16x8: .npy (samples on axis 0), .npz keyed by input name, or "
                        "a directory of them")
    p.add_argument("--calibration-key", metavar="KEY",
                   help="use only this array of the --calibration .npz (e.g. 'calibration' "
                        "in examples/digits_data.npz)")
    p.add_argument("--inference-type", choices=("int8", "uint8", "int16", "float32"),
                   help="int8/int16x8 modes: the model's input/output type (default: the "
                        "activation type, int8 or int16)")
    p.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor")
    p.add_argument("--strict", action="store_true",
                   help="int8/int16x8 modes: fail if any op would stay float "
                        "(TFLITE_BUILTINS_INT8)")
    p.add_argument("--symmetric-inputs", action="store_true",
                   help="dynamic mode: quantize FULLY_CONNECTED inputs symmetrically")
    p.add_argument("--keep-float", action="append", default=[], metavar="PATTERN",
                   help="int8/int16x8 modes: leave ops in float whose type or output tensor "
                        "name matches (exact or glob, e.g. 'model/head/*'; repeatable)")
    p.add_argument("--auto-keep-float", type=int, default=0, metavar="N",
                   help="int8/int16x8 modes: also keep the N ops with the worst own error "
                        "(measured on the calibration data) in float; prints output SQNR "
                        "before and after")
    p.add_argument("--calibrator",
                   choices=("minmax", "moving_average", "percentile", "mse", "entropy"),
                   help="how activation ranges are chosen from the calibration data "
                        "(default minmax: TFLite converter semantics)")
    p.add_argument("--recipe", metavar="FILE.json",
                   help="int8/int16x8 modes: per-op schemes and calibrators (see README, "
                        "'Schemes and recipes'); replaces --per-tensor and --calibrator")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", required=True, help="where to write the .tflite")
    p.set_defaults(handler=cmd_quantize)


COMMANDS = [add_quantize]


def cmd_quantize(args) -> int:
    from .quantizer import quantize

    apply_preset(args)
    model = read_model(args.model)
    recipe = read_recipe(args)
    args.mode = args.mode or ("int16x8" if recipe and recipe.activations == "int16" else "int8")
    calibration = None
    if args.calibration:
        if args.mode not in ("int8", "int16x8") and args.weight_rounding != "gptq":
            print(f"note: --mode {args.mode} needs no calibration data; ignoring "
                  f"{args.calibration}", file=sys.stderr)
        else:
            calibration = pick_array(load_calibration(args.calibration), args.calibration_key,
                                     args.calibration)
    if args.auto_keep_float:
        return auto_keep_float(args, model, calibration, recipe)
    try:
        result = quantize(model, args.mode, calibration, inference_type=args.inference_type,
                          per_channel=not args.per_tensor, strict=args.strict,
                          keep_float=tuple(args.keep_float),
                          asymmetric_inputs=not args.symmetric_inputs, observer=args.calibrator,
                          quiet=args.quiet, recipe=recipe, weight_bits=args.weight_bits,
                          block_size=args.block_size,
                          min_weight_elements=args.min_weight_elements,
                          weight_clipping=args.weight_clipping,
                          weight_rounding=args.weight_rounding)
    except NothingToQuantize as e:
        print(f"{e}; nothing written", file=sys.stderr)
        return 1
    result.save(args.output)
    print(f"wrote {args.output}")
    return 0


def apply_preset(args) -> None:
    """--preset NAME fills --mode/--weight-bits/--block-size; given flags must agree with it."""
    if not args.preset:
        return
    from .quantizer import preset

    chosen = preset(args.preset)
    for key, value in chosen.items():
        given = getattr(args, key)
        default = {"mode": None, "weight_bits": 8, "block_size": 0,
                   "min_weight_elements": None}[key]
        if given not in (default, value):
            flag = "--" + key.replace("_", "-")
            raise InputError(f"--preset {args.preset} sets {flag} {value}, not {given}")
        setattr(args, key, value)


def pick_array(data, key: str | None, path: str):
    """One array out of an .npz's dict when --calibration-key names it."""
    if key is None:
        return data
    if not isinstance(data, dict):
        raise InputError(f"--calibration-key {key!r} needs an .npz; {path} holds one array")
    if key not in data:
        raise InputError(f"{path} has no array {key!r}; it has {', '.join(data)}")
    return data[key]


def read_recipe(args):
    """The --recipe file as a Recipe, after checking the flags it replaces are absent."""
    if not args.recipe:
        return None
    from .quantizer.scheme import Recipe

    clashes = [flag for flag, given in (("--per-tensor", args.per_tensor),
                                        ("--calibrator", args.calibrator)) if given]
    if clashes:
        raise InputError(f"--recipe sets weight granularity and calibrators itself; drop "
                         f"{' and '.join(clashes)} (or put them in the recipe)")
    if args.mode in ("dynamic", "float16"):
        raise InputError(f"--recipe applies to the int8 and int16x8 modes, not {args.mode}")
    return Recipe.load(args.recipe)


def auto_keep_float(args, model, calibration, recipe=None) -> int:
    """Quantize, rank ops by own error, quantize again with the N worst kept in float."""
    from .compare import auto_keep_float as choose

    if args.auto_keep_float < 0 or args.mode not in ("int8", "int16x8") or calibration is None:
        raise InputError("--auto-keep-float N needs N >= 1, --mode int8 or int16x8 and "
                         "--calibration DATA (own errors are measured on it)")
    result = choose(model, calibration, args.auto_keep_float, mode=args.mode,
                    inference_type=args.inference_type, per_channel=not args.per_tensor,
                    strict=args.strict, keep_float=tuple(args.keep_float), quiet=args.quiet,
                    recipe=recipe)
    print(result.summary())
    result.model.save(args.output)
    print(f"wrote {args.output}")
    return 0


def read_model(path: str):
    """A .tflite file, or a Keras model converted to float TFLite by TensorFlow first."""
    from .flatbuffer_io import load

    source = Path(path)
    if source.suffix in KERAS_SUFFIXES or (source.is_dir() and
                                           (source / "saved_model.pb").exists()):
        return load(convert_keras(source))
    return load(source)


def convert_keras(path: Path) -> bytes:
    try:
        import tensorflow as tf
    except ImportError:
        raise QEngineError(f"{path} is a Keras/SavedModel model; converting it needs "
                           f"TensorFlow: pip install 'qengine[tf]'") from None
    if path.is_dir():
        converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.models.load_model(path))
    return converter.convert()


def load_calibration(path: str):
    """An array (.npy), a dict of arrays (.npz), or those of every file in a directory."""
    source = Path(path)
    if source.is_dir():
        parts = [load_calibration(str(f)) for f in sorted(source.iterdir())
                 if f.suffix in (".npy", ".npz")]
        if not parts:
            raise InputError(f"{source}: no .npy or .npz files")
        if all(isinstance(p, np.ndarray) for p in parts):
            return np.concatenate([p if p.ndim else p[None] for p in parts])
        if all(isinstance(p, dict) for p in parts):
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        raise InputError(f"{source}: mixes .npy and .npz files")
    try:
        if source.suffix == ".npy":
            return np.load(source, allow_pickle=False)
        if source.suffix == ".npz":
            with np.load(source, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
    except (ValueError, OSError) as e:
        raise InputError(f"{source}: cannot read calibration data ({e})") from None
    raise InputError(f"{source}: calibration data must be .npy, .npz or a directory of them")
