"""`qengine.quantize(model, mode=...)`: the three TFLite modes and their research variants.

    int8      full-integer: calibrated activations, int8 weights, int32 biases
    int16x8   full-integer 16x8: int16 symmetric activations, int8 weights, int64 biases
    dynamic   dynamic range: int8 weights, float activations quantized on the fly at run time
    float16   float16 weights upcast to float32 once, at load

The input model is never modified: the pass works on a copy.
"""

from __future__ import annotations

import sys

from ..errors import QuantizationError
from ..flatbuffer_io import load
from ..ir import Model

MODES = ("int8", "int16x8", "dynamic", "float16")
ACTIVATIONS = {"int8": "int8", "int16x8": "int16"}  # the full-integer modes' activation dtype


def quantize(model, mode: str = "int8", calibration=None, *, inference_type: str | None = None,
             per_channel: bool = True, strict: bool = False, observer: str = "minmax",
             keep_float=(), asymmetric_inputs: bool = True, quiet: bool = False) -> Model:
    """Return a quantized copy of `model` (a Model, a path or .tflite bytes).

    `inference_type` is the interface of the full-integer modes: by default the activation
    type (int8, or int16 for int16x8); float32 keeps float inputs and outputs.
    """
    source = model if isinstance(model, Model) else load(model)
    before = len(source.to_bytes())
    work = load(source.to_bytes())  # a deep copy the passes may edit freely
    if mode in ACTIVATIONS:
        from .int8 import Int8Options

        options = Int8Options(inference_type or ACTIVATIONS[mode], per_channel, strict,
                              frozenset(keep_float), ACTIVATIONS[mode])
        result = _full_integer(work, calibration, options, observer, quiet)
    elif mode in ("dynamic", "float16"):
        if calibration is not None and not quiet:
            print(f"note: {mode} quantization needs no calibration data; ignoring it",
                  file=sys.stderr)
        from . import dynamic

        result = dynamic.quantize_dynamic(work, per_channel, asymmetric_inputs) \
            if mode == "dynamic" else dynamic.quantize_float16(work)
    else:
        raise QuantizationError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    if not quiet:
        after = len(result.to_bytes())
        print(f"{mode}: {before:,} bytes -> {after:,} bytes ({before / after:.2f}x smaller)",
              file=sys.stderr)  # the figure users of every quantizer ask for first
    return result


def _full_integer(model, calibration, options, observer, quiet):
    from ..calibrate import calibrate
    from .int8 import quantize_int8
    from .passes import fold_constant_weights

    if calibration is None:
        raise QuantizationError("full-integer quantization needs calibration data "
                                "(representative inputs); pass calibration=... or "
                                "--calibration DATA")
    fold_constant_weights(model)
    stats = calibrate(model, calibration, observer=observer, quiet=quiet)
    return quantize_int8(model, stats, options)
