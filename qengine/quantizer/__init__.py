"""`qengine.quantize(model, mode=...)`: the three TFLite modes and their research variants.

    int8      full-integer: calibrated activations, int8 weights, int32 biases
    int16x8   full-integer 16x8: int16 symmetric activations, int8 weights, int64 biases
    dynamic   dynamic range: int8 weights, float activations quantized on the fly at run time
    weight-only  int8/int4/int2 weights expanded to float32 by DEQUANTIZE; float compute
    float16   float16 weights upcast to float32 once, at load

`weight_bits` (2-8) and `block_size` choose the weight format of the dynamic and weight-only
modes (INT4/INT2 tensors below 8 bits; blockwise float16 scales for FULLY_CONNECTED); the
full-integer modes take them from the recipe. `PRESETS` maps ai-edge-quantizer's recipe names.

The input model is never modified: the pass works on a copy.
"""

from __future__ import annotations

import sys

from ..errors import QuantizationError
from ..flatbuffer_io import load
from ..ir import Model
from .scheme import Override, Recipe, Scheme  # noqa: F401  (public: qengine.quantizer.Scheme)

MODES = ("int8", "int16x8", "dynamic", "weight-only", "float16")
ACTIVATIONS = {"int8": "int8", "int16x8": "int16"}  # the full-integer modes' activation dtype


def quantize(model, mode: str | None = None, calibration=None, *,
             inference_type: str | None = None, per_channel: bool = True, strict: bool = False,
             observer: str | None = None, keep_float=(), asymmetric_inputs: bool = True,
             quiet: bool = False, recipe: Recipe | None = None, weight_bits: int = 8,
             block_size: int = 0, min_weight_elements: int | None = None,
             weight_clipping: str = "minmax", statistics: dict | None = None,
             weight_rounding: str = "nearest") -> Model:
    """Return a quantized copy of `model` (a Model, a path or .tflite bytes).

    `inference_type` is the interface of the full-integer modes: by default the activation
    type (int8, or int16 for int16x8); float32 keeps float inputs and outputs.
    `recipe` (full-integer modes) chooses a Scheme per op; it replaces `per_channel` and
    `observer`, and its activation type sets the mode. A recipe with research schemes gives a
    model qengine runs but refuses to write (see scheme.py).
    """
    mode = _mode(mode, recipe, per_channel, observer)
    _check_weight_format(mode, weight_bits, block_size, recipe)
    for name, value, default in (("weight_clipping", weight_clipping, "minmax"),
                                 ("weight_rounding", weight_rounding, "nearest")):
        if value != default and (recipe is not None or mode == "float16"):
            raise QuantizationError(f"{name} does not apply here: " + (
                "the recipe sets it per op" if recipe else "float16 mode"))
    source = model if isinstance(model, Model) else load(model)
    before = len(source.to_bytes())
    work = load(source.to_bytes())  # a deep copy the passes may edit freely
    if mode in ACTIVATIONS:
        from .int8 import Int8Options

        factory = None if observer is None or isinstance(observer, str) else observer
        recipe = recipe or Recipe(Scheme(
            activations=ACTIVATIONS[mode], calibrator="minmax" if factory else observer or "minmax",
            granularity="blockwise" if block_size else
            "per_channel" if per_channel else "per_tensor",
            weight_bits=weight_bits, block_size=block_size, weight_clipping=weight_clipping,
            weight_rounding=weight_rounding))
        options = Int8Options(inference_type or ACTIVATIONS[mode], strict, frozenset(keep_float),
                              recipe)
        result = _full_integer(work, calibration, options, quiet, factory, statistics)
    elif mode in ("dynamic", "weight-only", "float16"):
        hessians = _gptq_hessians(work, calibration, weight_rounding, mode)
        if calibration is not None and hessians is None and not quiet:
            print(f"note: {mode} quantization needs no calibration data; ignoring it",
                  file=sys.stderr)
        from . import dynamic

        if mode == "dynamic":
            result = dynamic.quantize_dynamic(work, per_channel, asymmetric_inputs,
                                              weight_bits, block_size, min_weight_elements,
                                              weight_clipping, hessians)
        elif mode == "weight-only":
            result = dynamic.quantize_weight_only(work, weight_bits, per_channel, block_size,
                                                  weight_clipping, hessians)
        else:
            result = dynamic.quantize_float16(work)
    else:
        raise QuantizationError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    if not quiet:
        _report_size(mode, before, result)
    return result


WEIGHT_ROUNDINGS = ("nearest", "gptq")


def _gptq_hessians(model: Model, calibration, rounding: str, mode: str) -> dict | None:
    """GPTQ's per-op H for the dynamic and weight-only modes (None: round to nearest)."""
    if rounding not in WEIGHT_ROUNDINGS:
        raise QuantizationError(f"weight_rounding must be one of {', '.join(WEIGHT_ROUNDINGS)}, "
                                f"not {rounding!r}")
    if rounding == "nearest":
        return None
    if mode == "float16":
        raise QuantizationError("weight_rounding 'gptq' does not apply to float16 mode")
    if calibration is None:
        raise QuantizationError("GPTQ needs calibration data (representative inputs): pass "
                                "calibration=... or --calibration DATA")
    from .gptq import GPTQ_OPS, layer_hessians

    ops = [op for op in model.main.operators if op.type in GPTQ_OPS and len(op.inputs) > 1
           and op.inputs[1] is not None and op.inputs[1].is_constant
           and op.inputs[1].dtype == "float32" and op.inputs[0].dtype == "float32"]
    return layer_hessians(model, calibration, ops)


def _check_weight_format(mode: str, weight_bits: int, block_size: int,
                         recipe: Recipe | None) -> None:
    if (weight_bits != 8 or block_size) and (recipe is not None or mode == "float16"):
        where = "the recipe sets them per op" if recipe is not None else "float16 mode"
        raise QuantizationError(f"weight_bits/block_size do not apply here: {where}")
    if not isinstance(weight_bits, int) or not 2 <= weight_bits <= 8:
        raise QuantizationError(f"weight_bits must be an integer from 2 to 8, got "
                                f"{weight_bits!r}")
    if not isinstance(block_size, int) or block_size < 0:
        raise QuantizationError(f"block_size must be a positive integer, got {block_size!r}")


# ai-edge-quantizer's named recipes (ai_edge_quantizer.recipe) -> qengine's arguments
PRESETS = {
    # the peer's dynamic recipes quantize every filter, however small
    "dynamic_wi8_afp32": {"mode": "dynamic", "weight_bits": 8, "min_weight_elements": 0},
    "dynamic_wi4_afp32": {"mode": "dynamic", "weight_bits": 4, "min_weight_elements": 0},
    **{f"dynamic_wi{b}c_afp32": {"mode": "dynamic", "weight_bits": b, "min_weight_elements": 0}
       for b in (8, 4, 2)},
    **{f"dynamic_wi{b}b{n}_afp32": {"mode": "dynamic", "weight_bits": b, "block_size": n, "min_weight_elements": 0}
       for b in (8, 4, 2) for n in (32, 64)},
    "weight_only_wi8_afp32": {"mode": "weight-only", "weight_bits": 8},
    "weight_only_wi4_afp32": {"mode": "weight-only", "weight_bits": 4},
    "static_wi8_ai8": {"mode": "int8"},
    "static_wi8_ai16": {"mode": "int16x8"},
}


def preset(name: str) -> dict:
    """quantize() arguments for one of ai-edge-quantizer's recipe names."""
    if name not in PRESETS:
        raise QuantizationError(f"unknown preset {name!r}; presets (ai-edge-quantizer's recipe "
                                f"names): {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def _mode(mode: str | None, recipe: Recipe | None, per_channel: bool, observer) -> str:
    """The mode, checked against a recipe (whose activation type implies it)."""
    if recipe is None:
        return mode or "int8"
    implied = {v: k for k, v in ACTIVATIONS.items()}[recipe.activations]
    if mode not in (None, implied):
        raise QuantizationError(f"the recipe's activations are {recipe.activations}, which is "
                                f"mode {implied}, not {mode!r}")
    if not per_channel or observer is not None:
        raise QuantizationError("a recipe sets weight granularity and calibrators itself; do "
                                "not pass per_channel or observer with it")
    return implied


def _report_size(mode: str, before: int, result: Model) -> None:
    if result.simulated:  # the figure users of every quantizer ask for first cannot exist yet
        print(f"{mode}: research scheme on {len(result.simulated)} op(s); simulated in qengine, "
              f"not exportable to .tflite", file=sys.stderr)
        return
    after = len(result.to_bytes())
    print(f"{mode}: {before:,} bytes -> {after:,} bytes ({before / after:.2f}x smaller)",
          file=sys.stderr)


def _full_integer(model, calibration, options, quiet, factory=None, statistics=None):
    """Calibrate (with `factory` observers if given, else the recipe's per tensor) unless
    `statistics` are given, then rewrite."""
    from ..calibrate import calibrate
    from .control_flow import quantizes_bodies
    from .int8 import quantize_int8
    from .passes import fold_constant_weights, fuse_activations
    from .variables import check_subgraphs, float_subgraph_ops

    if statistics is not None:
        fold_constant_weights(model)
        fuse_activations(model, options.keep_float)
        options = _float_bodies_if_unreached(model, statistics, options, quiet)
        options.hessians = _recipe_hessians(model, calibration, options.recipe)
        return quantize_int8(model, statistics, options)
    if calibration is None:
        raise QuantizationError("full-integer quantization needs calibration data "
                                "(representative inputs); pass calibration=... or "
                                "--calibration DATA")
    check_subgraphs(model)  # refuse what cannot be quantized before calibrating
    fold_constant_weights(model)
    fuse_activations(model, options.keep_float)
    if not quiet:
        _warn_unmatched(model, options.recipe)
        kept = 0 if quantizes_bodies(model, options.keep_float) else float_subgraph_ops(model)
        if kept:  # a model with CALL, or keep_float naming WHILE/IF: the bodies stay float
            print(f"note: the {kept} op(s) inside control-flow subgraphs (WHILE/IF bodies) "
                  f"stay float; the main graph's ops around them are quantized",
                  file=sys.stderr)
    by_tensor = None if factory else _observers_by_tensor(model, options.recipe)
    stats = calibrate(model, calibration, factory or "minmax", quiet=quiet,
                      observer_for=by_tensor)
    options = _float_bodies_if_unreached(model, stats, options, quiet)
    options.hessians = _recipe_hessians(model, calibration, options.recipe)
    return quantize_int8(model, stats, options)


def _float_bodies_if_unreached(model: Model, stats: dict, options, quiet: bool):
    """Options that keep the WHILE/IF bodies float when calibration never ran some of their
    ops (a branch no sample took), instead of failing for want of their ranges."""
    import dataclasses

    from .control_flow import OPS, quantizes_bodies, unreached_ops

    if not quantizes_bodies(model, options.keep_float):
        return options
    unreached = unreached_ops(model, stats)
    if not unreached:
        return options
    if not quiet:
        print(f"note: calibration never ran {unreached} op(s) inside WHILE/IF bodies (a branch "
              f"no sample took), so the bodies stay float; the main graph's ops around them "
              f"are quantized. Calibration data that takes every branch quantizes them too.",
              file=sys.stderr)
    return dataclasses.replace(options, keep_float=options.keep_float | set(OPS))


def _recipe_hessians(model: Model, calibration, recipe: Recipe) -> dict | None:
    """GPTQ's H for the ops whose scheme asks for GPTQ rounding (None when none does)."""
    from .gptq import GPTQ_OPS, layer_hessians
    from .int8 import op_names

    ops = [op for op in model.main.operators if op.type in GPTQ_OPS
           and (recipe.scheme_for(op_names(op)) or Scheme()).weight_rounding == "gptq"
           and len(op.inputs) > 1 and op.inputs[1] is not None and op.inputs[1].is_constant
           and op.inputs[1].dtype == "float32"]
    if ops and calibration is None:
        raise QuantizationError("GPTQ rounding needs calibration data (representative inputs)")
    return layer_hessians(model, calibration, ops) if ops else None


def calibration_statistics(model, calibration, recipe: Recipe | None = None, *,
                           quiet: bool = True) -> dict:
    """The observers `quantize(model, ..., recipe=recipe)` would collect, for its `statistics`
    argument: every tensor gets the calibrator of the scheme of the op that writes it."""
    from ..calibrate import calibrate
    from .passes import fold_constant_weights

    work = load((model if isinstance(model, Model) else load(model)).to_bytes())
    fold_constant_weights(work)
    return calibrate(work, calibration, quiet=quiet,
                     observer_for=_observers_by_tensor(work, recipe or Recipe()))


def _warn_unmatched(model: Model, recipe: Recipe) -> None:
    from .int8 import op_names

    for override in recipe.unmatched(op_names(op) for op in model.main.operators):
        print(f"warning: recipe override {override.match!r} matches no op type or output "
              f"tensor name of this model; it has no effect", file=sys.stderr)


def _observers_by_tensor(model: Model, recipe: Recipe):
    """A new observer for a tensor: the calibrator of the scheme of the op that writes it (the
    default scheme for graph inputs and ops kept in float)."""
    from .int8 import op_names

    chosen = {}
    for op in model.main.operators:
        scheme = recipe.scheme_for(op_names(op)) or recipe.default
        for t in op.outputs:
            if t is not None:
                chosen[t.name] = scheme
    default = recipe.default
    return lambda name: chosen.get(name, default).make_observer()
