"""Schemes and recipes: which quantization each op gets, as frozen values that round-trip to JSON.

A `Scheme` says how one op is quantized: the activation type, how its weights are quantized
(bits, granularity, symmetry, range, power-of-two scales) and which calibrator picks the ranges
of the tensors it produces. A `Recipe` is a default scheme plus ordered overrides matched
against op types or output-tensor names (exact or glob); the last match wins, and an override
may keep the op in float.

TFLite's int8 and 16x8 specs allow one weight format: symmetric (zero point 0), narrow range,
one scale per tensor or per output channel, stored as int8 or, for 2-4 bits, as TFLite's INT4/INT2
tensors where the op's kernel reads them (FULLY_CONNECTED int4/int2, CONV_2D and int8
DEPTHWISE_CONV_2D int4). Anything else is a research scheme. qengine simulates research schemes exactly where the integer kernels can express them
(fewer bits, full range, power-of-two scales: still int8 values with zero point 0, so the int8
kernels compute the scheme's arithmetic bit for bit) and by fake quantization where they cannot
(asymmetric or blockwise weights: the op runs in float on the dequantized weights, between
quantized activations). Such models run in qengine's Interpreter and compare; writing them to a
.tflite is refused, with `Scheme.export_problem()` as the reason.

Power-of-two scales are within the spec (a scale is any positive float32), so TFLite runs those
models unchanged and they export.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from fnmatch import fnmatchcase
from pathlib import Path

from ..errors import InputError

GRANULARITIES = ("per_channel", "per_tensor", "blockwise")
WEIGHT_CLIPPINGS = ("minmax", "mse")
WEIGHT_ROUNDINGS = ("nearest", "gptq")
ACTIVATION_TYPES = ("int8", "int16")
CALIBRATORS = ("minmax", "moving_average", "percentile", "mse", "entropy")


@dataclass(frozen=True)
class Scheme:
    activations: str = "int8"  # int8 (TFLite int8) or int16 (16x8: symmetric int16 activations)
    weight_bits: int = 8  # 2..8; below 8 the values still sit in int8 storage
    granularity: str = "per_channel"  # one scale per output channel, per tensor, or per block
    block_size: int = 0  # blockwise: values per block along the filter's input-channel axis
    symmetric: bool = True  # weights: zero point 0; False: affine weights with a zero point
    narrow_range: bool = True  # weights in [-(2^(b-1) - 1), 2^(b-1) - 1], not down to -2^(b-1)
    power_of_two: bool = False  # every scale (weights and activations) rounded up to 2^k
    weight_clipping: str = "minmax"  # weight scale from max|w|, or "mse": the MSE-optimal clip
    weight_rounding: str = "nearest"  # or "gptq" (FULLY_CONNECTED, CONV_2D; needs calibration)
    calibrator: str = "minmax"  # how activation ranges are chosen, see qengine.calibrate
    calibrator_options: tuple = ()  # (name, value) pairs, e.g. (("percentile", 99.9),)

    def __post_init__(self):
        _check_choice("activations", self.activations, ACTIVATION_TYPES)
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("calibrator", self.calibrator, CALIBRATORS)
        _check_choice("weight_clipping", self.weight_clipping, WEIGHT_CLIPPINGS)
        _check_choice("weight_rounding", self.weight_rounding, WEIGHT_ROUNDINGS)
        if not isinstance(self.weight_bits, int) or not 2 <= self.weight_bits <= 8:
            raise InputError(f"weight_bits must be an integer from 2 to 8, got "
                             f"{self.weight_bits!r}")
        if self.granularity == "blockwise" and (not isinstance(self.block_size, int)
                                                or self.block_size < 1):
            raise InputError(f"blockwise weights need block_size >= 1, got {self.block_size!r}")
        if self.granularity != "blockwise" and self.block_size:
            raise InputError(f"block_size is only meaningful with granularity 'blockwise', "
                             f"not {self.granularity!r}")
        if isinstance(self.calibrator_options, dict):  # accepted for convenience, stored frozen
            object.__setattr__(self, "calibrator_options",
                               tuple(sorted(self.calibrator_options.items())))
        if not all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                   for p in self.calibrator_options):
            raise InputError("calibrator_options must be (name, value) pairs")
        self.make_observer()  # unknown or out-of-range options fail here, not mid-calibration

    # -- what the scheme is --------------------------------------------------------------------

    @property
    def weight_range(self) -> tuple[int, int]:
        """The integer range of a weight: [-2^(b-1) (+1 if narrow), 2^(b-1) - 1]."""
        qmax = 2 ** (self.weight_bits - 1) - 1
        if not self.symmetric:
            return -qmax - 1, qmax  # affine weights use every level
        return (-qmax if self.narrow_range else -qmax - 1), qmax

    @property
    def integer_kernels(self) -> bool:
        """True when the int8 kernels compute this scheme exactly (zero-point-0 weights with
        one scale per channel or tensor); False: the op is fake-quantized in float."""
        return self.symmetric and self.granularity != "blockwise"

    def export_problem(self, stored_as: str = "int8", where: str = "",
                       allowed: tuple = ("int8",)) -> str | None:
        """Why TFLite cannot run this scheme as written (weights `stored_as` that tensor type in
        an op `where`, whose kernel reads the `allowed` filter types), or None when it can."""
        if self.granularity == "blockwise":
            return (f"blockwise weights (blocks of {self.block_size}) have one scale per block; "
                    f"TFLite's int8 kernels take one scale per output channel")
        if not self.symmetric:
            return ("asymmetric weights need a weight zero point; TFLite's int8 spec fixes "
                    "weight zero points at 0")
        if self.weight_bits <= 4 and stored_as == "int8" and self.narrow_range:
            return (f"TFLite has no kernel for {where} reading int{self.weight_bits} weights "
                    f"(its filters there: {', '.join(allowed)})")
        if self.weight_bits != 8 and (stored_as == "int8" or not self.narrow_range):
            return (f"int{self.weight_bits} weights would be stored as int8 bytes claiming the "
                    f"int8 scheme; TFLite's int8 kernels have no {self.weight_bits}-bit weight "
                    f"format, so the file would neither be smaller nor say what it is")
        if not self.narrow_range:
            return ("full-range weights use -128; TFLite's int8 spec restricts weights to "
                    "[-127, 127] and optimized kernels may rely on it")
        return None

    def make_observer(self):
        from ..calibrate import OBSERVERS

        try:
            return OBSERVERS[self.calibrator](**dict(self.calibrator_options))
        except (TypeError, ValueError) as e:
            raise InputError(f"calibrator {self.calibrator!r} with options "
                             f"{dict(self.calibrator_options)}: {e}") from None

    def describe(self) -> str:
        weights = f"int{self.weight_bits} {self.granularity.replace('_', '-')}"
        if self.granularity == "blockwise":
            weights += f"({self.block_size})"
        weights += "" if self.symmetric else " asymmetric"
        weights += "" if self.narrow_range or not self.symmetric else " full-range"
        weights += " pow2" if self.power_of_two else ""
        weights += " mse-clipped" if self.weight_clipping == "mse" else ""
        weights += " gptq" if self.weight_rounding == "gptq" else ""
        return f"{self.activations} activations, {weights} weights, {self.calibrator}"


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


# ---------------------------------------------------------------------------------------------
# recipes


@dataclass(frozen=True)
class Override:
    """Ops whose type or output-tensor name matches `match` (exact or glob) get `scheme`, or
    stay float when `scheme` is None."""

    match: str
    scheme: Scheme | None


RANGE_POLICY_NAMES = ("own", "converter_add")  # qengine.quantizer.policies.RANGE_POLICIES


@dataclass(frozen=True)
class Recipe:
    default: Scheme = field(default_factory=Scheme)
    overrides: tuple = ()  # Override, in order; the last match wins
    # how calibration ranges are adjusted before choosing parameters (policies.py): "own"
    # (each tensor its own range) or "converter_add" (TF's converter's ADD-input union rule)
    range_policy: str = "own"

    def __post_init__(self):
        _check_choice("range_policy", self.range_policy, RANGE_POLICY_NAMES)
        activations = {s.activations for s in self.schemes()}
        if len(activations) > 1:
            raise InputError("a recipe's schemes must share one activation type (TFLite has "
                             "no int8 <-> int16 requantizing kernels between them); got "
                             f"{', '.join(sorted(activations))}")

    def schemes(self) -> list[Scheme]:
        return [self.default] + [o.scheme for o in self.overrides if o.scheme is not None]

    def scheme_for(self, names) -> Scheme | None:
        """The scheme of an op known by `names` (its type and output-tensor names)."""
        chosen = self.default
        for override in self.overrides:
            if any(_matches(name, override.match) for name in names):
                chosen = override.scheme
        return chosen

    def unmatched(self, ops_names) -> list[Override]:
        """Overrides no op matches (`ops_names`: each op's type and output names): a typo such
        as CONV2D for CONV_2D would otherwise change nothing without a word."""
        ops_names = list(ops_names)
        return [o for o in self.overrides
                if not any(_matches(name, o.match) for names in ops_names for name in names)]

    @property
    def activations(self) -> str:
        return self.default.activations

    # -- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        out = {"default": _scheme_dict(self.default),
               "overrides": [{"match": o.match, "float": True} if o.scheme is None else
                             {"match": o.match, **_changes(self.default, o.scheme)}
                             for o in self.overrides]}
        if self.range_policy != "own":
            out["range_policy"] = self.range_policy
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data) -> Recipe:
        if not isinstance(data, dict):
            raise InputError("a recipe is a JSON object with 'default' and 'overrides'")
        _check_keys("recipe", data, {"default", "overrides", "range_policy"})
        default = _scheme_from(Scheme(), data.get("default", {}), "default")
        raw = data.get("overrides", [])
        if not isinstance(raw, list):
            raise InputError("recipe 'overrides' must be a list")
        return cls(default, tuple(_override_from(default, item, i) for i, item in
                                  enumerate(raw)), data.get("range_policy", "own"))

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"recipe is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path) -> Recipe:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise InputError(f"cannot read recipe {path}: {e.strerror}") from None
        try:
            return cls.from_json(text)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatchcase(name, pattern)


SCHEME_FIELDS = tuple(f.name for f in fields(Scheme))


def _scheme_dict(scheme: Scheme) -> dict:
    out = asdict(scheme)
    out["calibrator_options"] = dict(scheme.calibrator_options)
    return out


def _changes(base: Scheme, scheme: Scheme) -> dict:
    ours, theirs = _scheme_dict(scheme), _scheme_dict(base)
    return {k: v for k, v in ours.items() if theirs[k] != v}


def _scheme_from(base: Scheme, data, where: str) -> Scheme:
    if not isinstance(data, dict):
        raise InputError(f"recipe {where} must be an object of scheme fields")
    _check_keys(where, data, set(SCHEME_FIELDS))
    values = dict(data)
    if "calibrator_options" in values:
        options = values["calibrator_options"]
        if not isinstance(options, dict):
            raise InputError(f"recipe {where}: calibrator_options must be an object")
        values["calibrator_options"] = tuple(sorted(options.items()))
    for name in ("weight_bits", "block_size"):
        if name in values and (isinstance(values[name], bool)
                               or not isinstance(values[name], int)):
            raise InputError(f"recipe {where}: {name} must be an integer, got {values[name]!r}")
    for name in ("symmetric", "narrow_range", "power_of_two"):
        if name in values and not isinstance(values[name], bool):
            raise InputError(f"recipe {where}: {name} must be true or false")
    try:
        return replace(base, **values)
    except InputError as e:
        raise InputError(f"recipe {where}: {e}") from None


def _override_from(default: Scheme, item, index: int) -> Override:
    where = f"override {index}"
    if not isinstance(item, dict) or not isinstance(item.get("match"), str) or not item["match"]:
        raise InputError(f"recipe {where} needs a non-empty string 'match' (an op type or a "
                         f"tensor-name pattern)")
    rest = {k: v for k, v in item.items() if k != "match"}
    if rest.get("float") is True:
        if len(rest) > 1:
            raise InputError(f"recipe {where}: 'float': true takes no scheme fields")
        return Override(item["match"], None)
    if rest.get("float") is False:
        del rest["float"]
    return Override(item["match"], _scheme_from(default, rest, where))


def _check_keys(where: str, data: dict, allowed: set) -> None:
    unknown = sorted(set(data) - allowed - {"match", "float"} if where.startswith("override")
                     else set(data) - allowed)
    if unknown:
        raise InputError(f"recipe {where}: unknown field {unknown[0]!r}; fields are "
                         f"{', '.join(sorted(allowed))}")
