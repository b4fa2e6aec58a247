"""`qengine.quantize(model, mode=...)`: the three TFLite modes and their research variants.

    int8      full-integer: calibrated activations, int8 weights, int32 biases
    dynamic   dynamic range: int8 weights, float activations quantized on the fly at run time
    float16   float16 weights upcast to float32 once, at load

The input model is never modified: the pass works on a copy.
"""

from __future__ import annotations

import sys

from ..errors import QuantizationError
from ..flatbuffer_io import load
from ..ir import Model

MODES = ("int8", "dynamic", "float16")


def quantize(model, mode: str = "int8", calibration=None, *, inference_type: str = "int8",
             per_channel: bool = True, strict: bool = False, observer: str = "minmax",
             keep_float=(), asymmetric_inputs: bool = False, quiet: bool = False) -> Model:
    """Return a quantized copy of `model` (a Model, a path or .tflite bytes)."""
    source = model if isinstance(model, Model) else load(model)
    before = len(source.to_bytes())
    work = load(source.to_bytes())  # a deep copy the passes may edit freely
    if mode == "int8":
        result = _int8(work, calibration, inference_type, per_channel, strict, observer,
                       keep_float, quiet)
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


def _int8(model, calibration, inference_type, per_channel, strict, observer, keep_float, quiet):
    from ..calibrate import calibrate
    from .int8 import Int8Options, quantize_int8
    from .passes import fold_constant_weights

    if calibration is None:
        raise QuantizationError("int8 quantization needs calibration data (representative "
                                "inputs); pass calibration=... or --calibration DATA")
    fold_constant_weights(model)
    stats = calibrate(model, calibration, observer=observer, quiet=quiet)
    options = Int8Options(inference_type, per_channel, strict, frozenset(keep_float))
    return quantize_int8(model, stats, options)
