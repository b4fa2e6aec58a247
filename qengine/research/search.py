"""`qengine search`: the smallest per-op mixed-precision model that meets a quality target.

Per op the levels run from cheapest to most precise. A recipe has one activation type, so
there are two families, each searched on its own:

    int8 activations:  int2 weights, int4 weights (each only for the ops whose such weights
                       export: TFLite has a kernel for them), int8 weights, float
    int16 activations: int2/int4 weights (likewise: e.g. int4 CONV_2D, not DEPTHWISE_CONV_2D),
                       int8 weights (16x8), float

A float op whose weights were float16 in the source keeps them float16 behind DEQUANTIZE (the
quantizer does so for every float16-exact constant), so moving an op to float costs 2 bytes per
weight, not 4.

Ops without weights have two levels: quantized and float. Greedy, guided by attribution: start
with every op at its cheapest level; measure the model end to end on DATA (worst-output SQNR,
or top-1 accuracy with labels); while it misses the target, rank ops by their own error
(`qengine.compare`: each op alone on float-exact inputs) and move the worst `step` ops not
yet float one level up. Moving up never makes a model smaller, so a climb stops as soon as its
model is larger than `max_bytes` or than a model that already met the target (the 16x8 family,
whose first model often meets it, is searched first). Every model on the way is a candidate;
the answer is the smallest exportable candidate TFLite runs that meets the target and
`max_bytes`. All models share one set of calibration statistics.
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass

from ..errors import ExportError, InputError, QEngineError
from ..quantizer.scheme import Override, Recipe, Scheme
from .metrics import OutputQuality, real_outputs

FLOAT = "float"


@dataclass(frozen=True)
class Target:
    sqnr_db: float | None = None
    accuracy: float | None = None

    def met(self, quality: float) -> bool:
        goal = self.sqnr_db if self.sqnr_db is not None else self.accuracy
        return quality >= goal

    def describe(self, value: float) -> str:
        return f"SQNR {value:.2f} dB" if self.sqnr_db is not None else f"accuracy {value:.4f}"


@dataclass
class Candidate:
    recipe: Recipe
    quality: float  # worst-output SQNR (dB) or accuracy
    bytes: int | None  # None: does not export
    model: object  # the quantized Model
    data: bytes | None  # its file
    tflite_runs: bool | None = None


@dataclass
class SearchResult:
    best: Candidate | None  # meets the target and the size limit
    closest: Candidate | None  # when none met it: the best quality within the size limit, or
    # the smallest exportable model when none fits
    tried: int
    float_bytes: int


class Search:
    def __init__(self, model: bytes, calibration, data, target: Target, *, labels=None,
                 max_bytes: int | None = None, max_steps: int = 200, log=None):
        from ..calibrate import iterate_samples, stack_batches
        from ..flatbuffer_io import load
        from ..quantizer import calibration_statistics
        from ..runtime import Interpreter

        if target.accuracy is not None and labels is None:
            raise InputError("--target-accuracy needs --labels (accuracy is measured on them)")
        self.float_bytes, self.model = model, load(model)
        self.target, self.max_bytes, self.max_steps = target, max_bytes, max_steps
        self.data, self.labels = data, labels
        self.log = log or (lambda text: None)
        samples = list(iterate_samples(self.model, data))
        if not samples:
            raise InputError("the --data set is empty")
        self.batches = list(stack_batches(self.model, samples, 32))
        self.reference = [real_outputs(Interpreter(self.model), b) for b in self.batches]
        self.label_batches = _split(labels, self.batches)
        self.calibration = calibration
        self.statistics = calibration_statistics(self.model, calibration, Recipe())
        self.ops = _ops(self.model)

    # -- levels and recipes --------------------------------------------------------------------

    def families(self) -> list[tuple[str, dict[str, list]]]:
        """Per activation type, each op's levels (cheapest first): int2/int4 weights only for
        the ops whose low-bit weights export (e.g. 16x8 has int4 CONV_2D, not DEPTHWISE)."""
        return [(activations, self._levels(activations)) for activations in ("int16", "int8")]

    def _levels(self, activations: str) -> dict[str, list]:
        refused = {b: self._refused(Recipe(Scheme(activations=activations, weight_bits=b)))
                   for b in (2, 4)}
        return {name: [b for b in (2, 4) if weighted and name not in refused[b]] + [8, FLOAT]
                for name, weighted in self.ops.items()}

    def _refused(self, recipe: Recipe) -> set[str] | frozenset:
        """The ops TFLite has no kernel for under `recipe` (all of them if it fails else)."""
        from ..quantizer import quantize

        try:
            return set(quantize(self.model, recipe=recipe, quiet=True,
                                statistics=self.statistics).simulated)
        except QEngineError:
            return frozenset(self.ops)

    def recipe(self, activations: str, at: dict) -> Recipe:
        """Default: int8 weights; one override per op elsewhere (float, or low-bit weights)."""
        overrides = []
        for name, level in at.items():
            if level == FLOAT:
                overrides.append(Override(glob.escape(name), None))
            elif level != 8:
                overrides.append(Override(glob.escape(name), Scheme(activations=activations,
                                                                    weight_bits=level)))
        return Recipe(Scheme(activations=activations), tuple(overrides))

    # -- measuring -----------------------------------------------------------------------------

    def _candidate(self, recipe: Recipe, measure: bool = True) -> Candidate:
        from ..quantizer import quantize

        model = quantize(self.model, recipe=recipe, quiet=True, statistics=self.statistics)
        try:
            data = model.to_bytes()
        except ExportError:
            if not measure:
                raise
            data = None
        quality = self._quality(model) if measure else math.nan
        return Candidate(recipe, quality, None if data is None else len(data), model, data)

    def _quality(self, model) -> float:
        from ..runtime import Interpreter

        interpreter = Interpreter(model)
        quality = OutputQuality()
        for i, batch in enumerate(self.batches):
            labels = None if self.label_batches is None else self.label_batches[i]
            quality.add(real_outputs(interpreter, batch), self.reference[i], labels)
        return quality.sqnr_db()["min"] if self.target.sqnr_db is not None \
            else quality.accuracy()

    # -- the search ----------------------------------------------------------------------------

    def run(self) -> SearchResult:
        candidates = []
        for activations, levels in self.families():
            met = [c.bytes for c in candidates if c.bytes is not None and
                   self.target.met(c.quality) and self._fits(c)]
            bound = min(met + ([self.max_bytes] if self.max_bytes else []), default=None)
            candidates += self._climb(activations, levels, bound)
        usable = [c for c in candidates if c.bytes is not None and self._fits(c)]
        met = sorted((c for c in usable if self.target.met(c.quality)), key=lambda c: c.bytes)
        best = next((c for c in met if _runs_in_tflite(c, self.batches[0])), None)
        exportable = [c for c in candidates if c.bytes is not None]
        closest = None if best else (max(usable, key=lambda c: c.quality) if usable else
                                     min(exportable, key=lambda c: c.bytes, default=None))
        return SearchResult(best, closest, len(candidates), len(self.float_bytes))

    def _fits(self, c: Candidate) -> bool:
        return self.max_bytes is None or c.bytes <= self.max_bytes

    def _climb(self, activations: str, levels: dict, bound: int | None) -> list[Candidate]:
        from ..compare import compare

        at = {name: options[0] for name, options in levels.items()}
        step = max(1, len(self.ops) // 16)
        seen = []
        for _ in range(self.max_steps):
            candidate = self._candidate(self.recipe(activations, at))
            seen.append(candidate)
            self.log(f"{activations} activations, {_summary(at)}: "
                     f"{self.target.describe(candidate.quality)}, "
                     f"{'not exportable' if candidate.bytes is None else f'{candidate.bytes:,} B'}")
            if self.target.met(candidate.quality) and candidate.bytes is not None:
                break
            if bound is not None and candidate.bytes is not None and candidate.bytes > bound:
                break  # moving further up only grows it
            worst = self._worst(compare(self.model, candidate.model, self.data), at, step)
            if not worst:
                break
            for name in worst:
                at[name] = _next(levels[name], at[name])
        return seen

    def _worst(self, report, at: dict, count: int) -> list[str]:
        """The float-model names of the `count` ops with the worst own SQNR that can still
        move up (own error 0 means moving the op cannot help)."""
        picked = []
        for t in report.ranked():
            name = t.reference
            if len(picked) == count:
                break
            if name in at and at[name] != FLOAT and name not in picked and t.quantized \
                    and t.op_index is not None and math.isfinite(t.own_sqnr):
                picked.append(name)
        return picked


def _next(levels: list, level):
    return levels[levels.index(level) + 1]


def _summary(at: dict) -> str:
    counts: dict = {}
    for level in at.values():
        key = "float" if level == FLOAT else f"w{level}"
        counts[key] = counts.get(key, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))


def _ops(model) -> dict[str, bool]:
    """Output name of every op of the folded float graph -> whether it has float weights (a
    constant of 2 or more dimensions; PAD's int32 paddings are not weights)."""
    from ..flatbuffer_io import load
    from ..quantizer.passes import fold_constant_weights

    work = load(model.to_bytes())
    fold_constant_weights(work)
    ops = {}
    for op in work.main.operators:
        if op.outputs and op.outputs[0] is not None:
            ops[op.outputs[0].name] = any(t is not None and t.is_constant and len(t.shape) >= 2
                                          and t.dtype == "float32" for t in op.inputs)
    return ops


def _split(labels, batches: list):
    if labels is None:
        return None
    import numpy as np

    labels = np.asarray(labels).reshape(-1)
    count = sum(b[0].shape[0] for b in batches)
    if labels.shape[0] != count:
        raise InputError(f"{labels.shape[0]} labels for {count} data samples")
    return np.split(labels, np.cumsum([b[0].shape[0] for b in batches])[:-1])


def _runs_in_tflite(candidate: Candidate, batch) -> bool:
    from .sweep import tflite_runs

    candidate.tflite_runs, _ = tflite_runs(candidate.data, candidate.model, batch)
    return candidate.tflite_runs is not False


def search(model: bytes, calibration, data, target: Target, **options) -> SearchResult:
    if calibration is None:
        raise QEngineError("search needs --calibration DATA")
    return Search(model, calibration, data, target, **options).run()
