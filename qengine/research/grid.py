"""Sweep grids: JSON -> configurations -> quantization plans.

A grid is a JSON object mapping keys to lists of values; the sweep is their product, in the
order the keys are written. Keys: `mode` (int8, int16x8, dynamic, float16), `inference_type`,
`ptq` (lists of post-training methods: cle, bias_correction, adaround), `recipe` (whole
recipes, as `quantize --recipe` reads them) and every `Scheme` field except `activations`,
which `mode` sets. A JSON list of objects is taken as explicit configurations instead.

dynamic, weight-only and float16 have no calibration, schemes or PTQ methods: in their
configurations only `mode` is kept, with `granularity`, `weight_bits` and `block_size` for
dynamic and weight-only (qengine.quantize's weight format for those modes), and
configurations that become equal are run once.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..quantizer import ACTIVATIONS, MODES
from ..quantizer.scheme import SCHEME_FIELDS, Recipe, Scheme

PTQ_METHODS = ("cle", "bias_correction", "adaround")  # no GPTQ in qengine yet
SCHEME_KEYS = tuple(f for f in SCHEME_FIELDS if f != "activations")
GRID_KEYS = ("mode", "inference_type", "ptq", "recipe") + SCHEME_KEYS
_WEIGHTS = ("mode", "granularity", "weight_bits", "block_size")
UNCALIBRATED_KEYS = {"dynamic": _WEIGHTS, "weight-only": _WEIGHTS, "float16": ("mode",)}


@dataclass(frozen=True)
class Plan:
    """How one configuration is quantized."""

    mode: str
    recipe: Recipe | None  # full-integer modes
    per_channel: bool = True  # dynamic and weight-only modes: their weight format
    ptq: tuple = ()
    inference_type: str | None = None
    weight_bits: int = 8
    block_size: int = 0

    @property
    def calibrated(self) -> bool:
        return self.mode in ACTIVATIONS

    def statistics_key(self) -> str:
        """Configurations with equal keys share calibration statistics: the calibrator of
        every scheme and where it applies, and whether CLE changed the float weights first."""
        if not self.calibrated:
            return ""
        schemes = [("*", self.recipe.default)] + [(o.match, o.scheme)
                                                  for o in self.recipe.overrides]
        calibrators = [(m, None if s is None else [s.calibrator, list(s.calibrator_options)])
                       for m, s in schemes]
        return json.dumps([calibrators, "cle" in self.ptq])


def load_grid(path) -> list[dict]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError(f"cannot read grid {path}: {e.strerror}") from None
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: grid is not valid JSON: {e}") from None
    try:
        return configurations(grid)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def configurations(grid) -> list[dict]:
    """The configurations of a grid (product of its lists) or of an explicit list, checked and
    with duplicates removed."""
    if isinstance(grid, list):
        raw = [_explicit(item, i) for i, item in enumerate(grid)]
    elif isinstance(grid, dict):
        raw = _product(grid)
    else:
        raise InputError("a grid is a JSON object of lists (their product is the sweep) or a "
                         "list of configuration objects")
    if not raw:
        raise InputError("the grid is empty: it has no configurations")
    unique = {}
    for config in raw:
        config = applicable(config)
        plan_for(config)  # bad values fail now, before any work
        unique.setdefault(canonical(config), config)
    return list(unique.values())


def _product(grid: dict) -> list[dict]:
    if not grid:
        return []
    for key, values in grid.items():
        _check_key(key)
        if not isinstance(values, list):
            raise InputError(f"grid key {key!r} must map to a list of values, got "
                             f"{json.dumps(values)}")
        if not values:
            raise InputError(f"grid key {key!r} has an empty list of values")
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _explicit(item, index: int) -> dict:
    if not isinstance(item, dict):
        raise InputError(f"configuration {index} must be an object of grid keys")
    for key in item:
        _check_key(key)
    return dict(item)


def _check_key(key: str) -> None:
    if key not in GRID_KEYS:
        raise InputError(f"unknown grid key {key!r}; keys are {', '.join(GRID_KEYS)}")


def applicable(config: dict) -> dict:
    """The configuration without the keys its mode ignores."""
    mode = config.get("mode")
    keep = UNCALIBRATED_KEYS.get(mode)
    return config if keep is None else {k: v for k, v in config.items() if k in keep}


def canonical(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def plan_for(config: dict) -> Plan:
    """The quantization a configuration asks for (errors name the offending value)."""
    try:
        return _plan(config)
    except InputError as e:
        raise InputError(f"configuration {canonical(config)}: {e}") from None


def _plan(config: dict) -> Plan:
    ptq = _ptq(config.get("ptq", []))
    recipe = _recipe(config)
    mode = config.get("mode") or (_implied_mode(recipe) if recipe else "int8")
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    inference_type = config.get("inference_type")
    if mode not in ACTIVATIONS:
        return _uncalibrated(mode, config)
    if recipe is None:
        fields = {k: v for k, v in config.items() if k in SCHEME_KEYS}
        recipe = Recipe(_scheme(ACTIVATIONS[mode], fields))
    elif _implied_mode(recipe) != mode:
        raise InputError(f"the recipe's activations ({recipe.activations}) do not match mode "
                         f"{mode!r}")
    return Plan(mode, recipe, True, ptq, inference_type)


def _uncalibrated(mode: str, config: dict) -> Plan:
    granularity = config.get("granularity", "per_channel")
    block_size = config.get("block_size", 0)
    if granularity not in ("per_channel", "per_tensor", "blockwise") or \
            (granularity == "blockwise") != bool(block_size):
        raise InputError(f"{mode} weights are per_channel, per_tensor or blockwise with a "
                         f"block_size; got granularity {granularity!r}, block_size {block_size}")
    return Plan(mode, None, granularity != "per_tensor",
                weight_bits=config.get("weight_bits", 8), block_size=block_size)


def _scheme(activations: str, fields: dict) -> Scheme:
    if "calibrator_options" in fields and not isinstance(fields["calibrator_options"], dict):
        raise InputError("calibrator_options values must be objects, e.g. {\"percentile\": 99.9}")
    try:
        return Scheme(activations=activations, **fields)
    except TypeError as e:
        raise InputError(str(e)) from None


def _recipe(config: dict) -> Recipe | None:
    if "recipe" not in config:
        return None
    clashes = [k for k in config if k in SCHEME_KEYS]
    if clashes:
        raise InputError(f"'recipe' sets the schemes itself; drop {', '.join(clashes)} or put "
                         f"them in the recipe")
    return Recipe.from_dict(config["recipe"])


def _implied_mode(recipe: Recipe) -> str:
    return {v: k for k, v in ACTIVATIONS.items()}[recipe.activations]


def _ptq(value) -> tuple:
    methods = [value] if isinstance(value, str) else value
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise InputError(f"ptq must be a list of method names, got {json.dumps(value)}")
    unknown = [m for m in methods if m not in PTQ_METHODS]
    if unknown:
        raise InputError(f"unknown PTQ method {unknown[0]!r}; methods are "
                         f"{', '.join(PTQ_METHODS)}")
    return tuple(methods)
