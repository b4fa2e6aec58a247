"""Error attribution: where a quantized model loses accuracy, tensor by tensor.

For every tensor present in both models (matched by name; the quantized model's integer
tensors are dequantized, real = scale * (q - zero_point)), with f the float model's value:

    err        = q_deq - f
    SQNR_dB    = 10 * log10(sum f^2 / sum err^2)       (inf when err is exactly 0)
    RMSE       = sqrt(sum err^2 / n)
    cosine     = sum f*q_deq / sqrt(sum f^2 * sum q_deq^2)
    max error  = max |err|
    saturation = fraction of integer values at qmin or qmax of their dtype. An end that
                 encodes real 0 (qmin when zero_point == qmin, as after a ReLU) is the floor
                 of the range, not clipping, and is not counted: otherwise every ReLU output
                 would look half saturated.

Two errors per tensor:

- accumulated: both models run end to end on the same data; everything upstream included.
- own: the op that writes the tensor in the quantized model, run alone (Interpreter.run_op) on
  the float model's values of its inputs, quantized with the quantized model's parameters for
  those inputs ("float-exact inputs"). It is what the op adds by itself: its weights, its
  output grid, and the rounding of exact inputs onto its input grid. Ops left in float have
  own error 0 by definition (on float-exact inputs they run the float model's own kernel). A
  graph input's own error is its accumulated error: quantizing it is all that happened to it.

Headroom audit: for the int8 ops whose definition has an `accumulator` (CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED) the int32 accumulator
acc = sum w * (x - zp_x) + bias is recomputed from the int8 inputs of the quantized run and
reported as max|acc| / 2^31, with max|bias| / 2^31: how close the kernel came to overflow.
"""

from __future__ import annotations

import glob
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .calibrate import iterate_samples, stack_batches
from .errors import InputError, QEngineError
from .flatbuffer_io import load
from .ir import Model, Operator, Tensor
from .qparams import LOW_BIT_TYPES, QUANTIZED_TYPES, int_range
from .qparams import dequantize as dequantize_values
from .qparams import quantize as quantize_values

INF = float("inf")
INT32_LIMIT = 2 ** 31
# what the int8 pass appends to the names of tensors it inserts (QUANTIZE/DEQUANTIZE outputs)


# ---------------------------------------------------------------------------------------------
# metrics


@dataclass
class Metrics:
    sqnr_db: float
    rmse: float
    cosine: float
    max_error: float

    @classmethod
    def exact(cls) -> Metrics:
        return cls(INF, 0.0, 1.0, 0.0)


@dataclass
class ErrorSums:
    """Running float64 sums from which every metric follows, so batches simply add up."""

    signal: float = 0.0  # sum f^2
    noise: float = 0.0  # sum err^2
    cross: float = 0.0  # sum f * q
    power: float = 0.0  # sum q^2
    max_error: float = 0.0
    count: int = 0

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f = np.asarray(f, np.float64).ravel()
        q = np.asarray(q, np.float64).ravel()
        err = q - f
        self.signal += _dot(f, f)
        self.noise += _dot(err, err)
        self.cross += _dot(f, q)
        self.power += _dot(q, q)
        self.max_error = max(self.max_error, float(np.abs(err).max(initial=0.0)))
        self.count += f.size

    def metrics(self) -> Metrics:
        rmse = math.sqrt(self.noise / self.count) if self.count else 0.0
        return Metrics(sqnr_db(self.signal, self.noise), rmse, self._cosine(), self.max_error)

    def _cosine(self) -> float:
        norms = math.sqrt(self.signal * self.power)
        if norms == 0:
            return 1.0 if self.signal == self.power else 0.0  # both all-zero: identical
        return self.cross / norms


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.einsum("i,i->", a, b))  # not BLAS: its thread pool fights Numba's


def sqnr_db(signal: float, noise: float) -> float:
    """10 * log10(signal / noise); inf for no noise, -inf for noise on a zero signal."""
    if noise == 0:
        return INF
    if signal == 0:
        return -INF
    return 10 * math.log10(signal / noise)


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class TensorError:
    name: str  # in the quantized model
    reference: str  # the float model's tensor it is compared with (differs for inserted ones)
    op: str  # the producing op's type in the quantized model; INPUT for a graph input
    op_index: int | None
    dtype: str  # in the quantized model
    quantized: bool  # False: the producing op runs in float
    accumulated: Metrics
    own: Metrics | None  # None: the op's inputs could not be rebuilt from the float run
    saturation: float | None  # None for float tensors

    @property
    def own_sqnr(self) -> float:
        return INF if self.own is None else self.own.sqnr_db


@dataclass
class Headroom:
    op_index: int
    op: str
    output: str
    max_accumulator: int  # max |sum w * (x - zp) + bias| over the data
    max_bias: int
    accumulator_fraction: float  # max_accumulator / 2^31
    bias_fraction: float  # max_bias / 2^31


@dataclass
class CompareReport:
    samples: int
    outputs: list[str]  # the quantized model's output names that were compared
    tensors: list[TensorError]  # in the quantized model's graph order
    headroom: list[Headroom] = field(default_factory=list)

    def ranked(self) -> list[TensorError]:
        """Worst own error (lowest own SQNR) first; ties broken by accumulated SQNR."""
        return sorted(self.tensors, key=lambda t: (t.own_sqnr, t.accumulated.sqnr_db))

    def tensor(self, name: str) -> TensorError:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def output_sqnr_db(self) -> float | None:
        """The worst accumulated SQNR over the model's outputs."""
        values = [t.accumulated.sqnr_db for t in self.tensors if t.name in self.outputs]
        return min(values) if values else None

    def to_dict(self) -> dict:
        return finite(asdict(self) | {"output_sqnr_db": self.output_sqnr_db,
                                       "ranking": [t.name for t in self.ranked()]})

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON: infinite SQNRs (no error at all) are written as "inf" / "-inf"."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def format_text(self, top: int | None = None) -> str:
        return format_report(self, top)

    def plot(self, path) -> None:
        plot_sqnr(self, path)


def finite(value):
    """JSON has no infinity: write it as the string "inf" (float("inf") reads it back)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# compare


def compare(float_model, quant_model, data, *, batch_size: int = 32,
            limit: int | None = None) -> CompareReport:
    """Per-tensor accumulated and own error of `quant_model` against `float_model` on `data`.

    Models are Models, paths or .tflite bytes; `data` takes every form calibration data does
    (an array with samples on axis 0, a dict keyed by input name, an iterable of samples).
    """
    float_model, quant_model = _load(float_model), _load(quant_model)
    _check_inputs(float_model, quant_model)
    samples = list(iterate_samples(float_model, data))[:limit]
    if not samples:
        raise InputError("the comparison data is empty")
    comparison = _Comparison(float_model, quant_model)
    size = batch_size if _dynamic_batch(float_model) and _dynamic_batch(quant_model) else 1
    for batch in stack_batches(float_model, samples, size):
        comparison.add(batch)
    return comparison.report(len(samples))


def _load(model) -> Model:
    return model if isinstance(model, Model) else load(model)


def _check_inputs(float_model: Model, quant_model: Model) -> None:
    a, b = float_model.main.inputs, quant_model.main.inputs
    hint = "compare a float model with a quantized version of itself"
    if len(a) != len(b):
        raise InputError(f"the float model has {len(a)} inputs, the quantized one {len(b)}; "
                         f"{hint}")
    for x, y in zip(a, b):
        if x.shape != y.shape:
            raise InputError(f"float input {x.name!r} has shape {x.shape} but quantized input "
                             f"{y.name!r} has {y.shape}; {hint}")
    if not _matched(float_model, quant_model):
        raise InputError(f"the models have no tensor names in common; {hint}")


def _dynamic_batch(model: Model) -> bool:
    return all((t.shape_signature or t.shape)[:1] == (-1,) for t in model.main.inputs)


def _is_activation(t: Tensor | None) -> bool:
    return t is not None and not t.is_constant and t.dtype == "float32"


def _is_quantized(t: Tensor | None) -> bool:
    if t is None or t.dtype not in QUANTIZED_TYPES + LOW_BIT_TYPES:
        return False
    return t.quantization is not None and t.quantization.scale.size > 0


class _Comparison:
    """Runs both models batch by batch and accumulates every sum the report needs."""

    def __init__(self, float_model: Model, quant_model: Model):
        from .runtime import Interpreter

        self.float = Interpreter(float_model)
        self.quant = Interpreter(quant_model)
        self.graph = graph = quant_model.main
        self.producer = {id(t): i for i, op in enumerate(graph.operators)
                         for t in op.outputs if t is not None}
        self.reference = _matched(float_model, quant_model)  # quant name -> float name
        self.tensors = [graph.tensor(name) for name in self.reference]
        self.accumulated = {t.name: ErrorSums() for t in self.tensors}
        self.own = {t.name: ErrorSums() for t in self.tensors}
        self.clipped = {t.name: [0, 0] for t in self.tensors if _is_quantized(t)}
        self.audit = {i: [0, _max_bias(op)] for i, op in enumerate(graph.operators)
                      if _audited(op)}
        self.isolated = {t.name: True for t in self.tensors}

    def add(self, batch: list[np.ndarray]) -> None:
        f = self.float.run(batch, keep=True)
        q = self.quant.run([quantize_input(t, x) for t, x in zip(self.quant.inputs, batch)],
                           keep=True)
        alone: dict[int, list | None] = {}  # op index -> its outputs run on float-exact inputs
        for t in self.tensors:
            exact = f[self.reference[t.name]]
            if exact.shape != q[t.name].shape:
                raise InputError(f"tensor {t.name!r} has shape {q[t.name].shape} in the "
                                 f"quantized model but {exact.shape} in the float one")
            self.accumulated[t.name].add(exact, dequantize(t, q[t.name]))
            self._add_own(t, exact, f, q, alone)
            if t.name in self.clipped:
                _count_clipped(self.clipped[t.name], t, q[t.name])
        for index, seen in self.audit.items():
            op = self.graph.operators[index]
            seen[0] = max(seen[0], int(np.abs(accumulator(op, index, q)).max(initial=0)))

    def _add_own(self, t: Tensor, exact: np.ndarray, f: dict, q: dict, alone: dict) -> None:
        index = self.producer.get(id(t))
        if index is None:  # a graph input: its own error is its quantization
            self.own[t.name].add(exact, dequantize(t, q[t.name]))
            return
        op = self.graph.operators[index]
        if not _runs_quantized(op):
            return  # own error 0: float-exact inputs through the float model's own kernel
        if index not in alone:
            alone[index] = self._run_alone(index, op, f, q)
        if alone[index] is None:
            self.isolated[t.name] = False
            return
        value = alone[index][op.outputs.index(t)]
        self.own[t.name].add(exact, dequantize(t, value))

    def _run_alone(self, index: int, op: Operator, f: dict, q: dict) -> list | None:
        inputs = {}
        for u in op.inputs:
            if u is None or u.is_constant:
                continue
            value = _float_exact(u, f, q, self.reference)
            if value is None:
                return None
            inputs[u.name] = value
        return self.quant.run_op(index, inputs)

    def report(self, samples: int) -> CompareReport:
        tensors = [self._tensor_error(t) for t in self.tensors]
        outputs = [t.name for t in self.graph.outputs if t.name in self.accumulated]
        headroom = [_headroom(i, self.graph.operators[i], *seen)
                    for i, seen in self.audit.items()]
        return CompareReport(samples, outputs, tensors, headroom)

    def _tensor_error(self, t: Tensor) -> TensorError:
        index = self.producer.get(id(t))
        op = self.graph.operators[index] if index is not None else None
        quantized = op is None or _runs_quantized(op)
        own = self.own[t.name].metrics() if quantized else Metrics.exact()
        clipped = self.clipped.get(t.name)
        return TensorError(
            t.name, self.reference[t.name], op.type if op else "INPUT", index, t.dtype,
            quantized, self.accumulated[t.name].metrics(),
            own if self.isolated[t.name] else None,
            clipped[0] / clipped[1] if clipped and clipped[1] else None)


def _matched(float_model: Model, quant_model: Model) -> dict[str, str]:
    """Quantized-model activation name -> the float model's name for it, in graph order.

    A tensor the int8 pass inserted ("x_int8", "x_dequantized") is compared with the tensor
    it stands for, by the quantized model's `sources` map.
    """
    names = {t.name for t in float_model.main.all_tensors() if _is_activation(t)}
    graph = quant_model.main
    ordered = list(graph.inputs) + [t for op in graph.operators for t in op.outputs]
    matched = {}
    for t in ordered:
        if t is None or t.is_constant or not (t.dtype == "float32" or _is_quantized(t)):
            continue
        reference = t.name if t.name in names else quant_model.sources.get(t.name)
        if reference in names:
            matched.setdefault(t.name, reference)
    return matched


def _runs_quantized(op: Operator) -> bool:
    """An op with any quantized tensor (int8 activations, or int8 weights of a hybrid op)."""
    return any(t is not None and _is_quantized(t) for t in op.inputs + op.outputs)


def _float_exact(u: Tensor, f: dict, q: dict, reference: dict) -> np.ndarray | None:
    """Input u of a quantized op as the float model computed it, put on u's grid."""
    value = f.get(reference.get(u.name, u.name))
    if value is None:
        return q.get(u.name)  # not a float tensor (shapes, indices): both runs agree on it
    if _is_quantized(u) and value.dtype.kind == "f":
        return quantize(u, value)
    return value


# ---------------------------------------------------------------------------------------------
# real <-> integer


def quantize(t: Tensor, values: np.ndarray) -> np.ndarray:
    """Values on t's grid, in float32 as TFLite's QUANTIZE computes them."""
    return quantize_values(values, t.scale, t.zero_point, t.dtype)


def dequantize(t: Tensor, values: np.ndarray) -> np.ndarray:
    """real = scale * (q - zero_point) in float64; float tensors pass through."""
    if not _is_quantized(t):
        return np.asarray(values, np.float64)
    return dequantize_values(values, t.scale, t.zero_point, dtype=np.float64)


def quantize_input(t: Tensor, x: np.ndarray) -> np.ndarray:
    return quantize(t, x) if _is_quantized(t) else x


def _count_clipped(counts: list[int], t: Tensor, q: np.ndarray) -> None:
    qmin, qmax = int_range(t.dtype)
    zero_point = t.zero_point
    at_limit = 0
    if zero_point != qmin:  # qmin encoding real 0 is the range's floor, not clipping
        at_limit += int(np.count_nonzero(q == qmin))
    if zero_point != qmax:
        at_limit += int(np.count_nonzero(q == qmax))
    counts[0] += at_limit
    counts[1] += q.size


# ---------------------------------------------------------------------------------------------
# accumulator headroom


def _audited(op: Operator) -> bool:
    if op.type not in _accumulators() or len(op.inputs) < 2 or op.inputs[1] is None:
        return False
    x, w = op.inputs[0], op.inputs[1]
    return x.dtype == "int8" and w.dtype == "int8" and w.is_constant


def _max_bias(op: Operator) -> int:
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    if bias is None or not bias.is_constant:
        return 0
    return int(np.abs(bias.data.astype(np.int64)).max(initial=0))


def _headroom(index: int, op: Operator, max_acc: int, max_bias: int) -> Headroom:
    return Headroom(index, op.type, op.outputs[0].name, max_acc, max_bias,
                    max_acc / INT32_LIMIT, max_bias / INT32_LIMIT)


def _accumulators() -> dict:
    """Op type -> its exact accumulator (the ops whose definition has one: CONV_2D,
    DEPTHWISE_CONV_2D, FULLY_CONNECTED)."""
    from .ops.opdef import definitions

    return {name: d.accumulator for name, d in definitions().items() if d.accumulator}


def accumulator(op: Operator, index: int, values: dict) -> np.ndarray:
    """acc = sum w * (x - zp_x) + bias for every output element, as int64.

    Computed in float64, which is exact here: each product is below 2^15 (|w| <= 127,
    |x - zp| <= 255), so sums of up to 2^38 of them fit float64's 53-bit mantissa. The
    filter's zero point is 0 (int8 weights are symmetric).
    """
    x = op.inputs[0]
    centred = values[x.name].astype(np.float64) - x.zero_point
    w = op.inputs[1].data.astype(np.float64)
    acc = _accumulators()[op.type](op, index, centred, w)
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    if bias is not None and bias.is_constant:
        acc = acc + bias.data.astype(np.float64).reshape(-1)
    return acc.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# selective quantization


@dataclass
class KeepFloatResult:
    model: Model  # quantized with the chosen ops kept in float
    kept: list[str]  # output tensor names of the ops kept in float
    before: CompareReport
    after: CompareReport

    def summary(self) -> str:
        kept = ", ".join(repr(name) for name in self.kept) or "nothing"
        return (f"auto-keep-float: kept {kept} in float; output SQNR "
                f"{_db(self.before.output_sqnr_db)} -> {_db(self.after.output_sqnr_db)}")


def auto_keep_float(model, calibration, n: int, *, data=None, mode: str = "int8",
                    keep_float=(), limit: int | None = None, **options) -> KeepFloatResult:
    """Quantize, keep the `n` quantized ops with the worst own SQNR in float, quantize again.

    Own error is measured on `data` (default: the calibration data). Other keyword arguments
    go to `qengine.quantize`.
    """
    from .quantizer import quantize as quantize_model

    source = _load(model)
    data = calibration if data is None else data
    first = quantize_model(source, mode, calibration, keep_float=tuple(keep_float), **options)
    before = compare(source, first, data, limit=limit)
    kept = worst_ops(before, n)
    # exact names, escaped because keep_float entries are also fnmatch patterns
    keep = tuple(keep_float) + tuple(glob.escape(name) for name in kept)
    second = quantize_model(source, mode, calibration, keep_float=keep, **options)
    return KeepFloatResult(second, kept, before, compare(source, second, data, limit=limit))


def worst_ops(report: CompareReport, n: int) -> list[str]:
    """Float-model names of the outputs of the n quantized ops with the worst own SQNR (ops
    that add no error at all are never picked: keeping them in float cannot help)."""
    picked, ops = [], set()
    for t in report.ranked():
        if len(picked) == n:
            break
        if t.op_index is None or not t.quantized or t.op_index in ops or \
                not math.isfinite(t.own_sqnr):
            continue
        picked.append(t.reference)
        ops.add(t.op_index)
    return picked


# ---------------------------------------------------------------------------------------------
# text and plot


def format_report(report: CompareReport, top: int | None = None) -> str:
    ranked = report.ranked()
    shown = ranked if top is None else ranked[:top]
    title = (f"per-tensor error over {report.samples} samples, worst own error first "
             f"(own: the op alone on float-exact inputs; acc: end to end)")
    header = (f"{'tensor':<40} {'op':<18}{'own SQNR':>10}{'acc SQNR':>10}{'RMSE':>11}"
              f"{'cosine':>9}{'max|err|':>11}{'sat':>8}")
    lines = [title, header]
    lines += [_row(t) for t in shown]
    if len(shown) < len(ranked):
        lines.append(f"... {len(ranked) - len(shown)} more tensors (see --json)")
    if report.headroom:
        lines += ["", "int32 accumulator headroom (max |acc| / 2^31, max |bias| / 2^31)"]
        lines += [f"{_short(h.output):<40} {h.op:<18}acc {h.accumulator_fraction:>9.3%}  "
                  f"bias {h.bias_fraction:>9.3%}" for h in report.headroom]
    lines += ["", f"output SQNR: {_db(report.output_sqnr_db)} ({', '.join(report.outputs)})"]
    return "\n".join(lines)


def _row(t: TensorError) -> str:
    a = t.accumulated
    saturation = "-" if t.saturation is None else f"{t.saturation:.2%}"
    op = t.op if t.quantized else t.op + "(f)"
    return (f"{_short(t.name):<40} {op:<18}{_db(t.own_sqnr):>10}{_db(a.sqnr_db):>10}"
            f"{a.rmse:>11.4g}{a.cosine:>9.5f}{a.max_error:>11.4g}{saturation:>8}")


def _short(name: str, width: int = 40) -> str:
    """The first of a fused name's parts ("conv/Relu;conv/BiasAdd;..."), cut from the left."""
    name = name.split(";")[0]
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf dB" if value == INF else f"{value:.2f} dB"


def plot_sqnr(report: CompareReport, path) -> None:
    """Per-layer accumulated and own SQNR, in graph order, as a PNG (needs matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise QEngineError("plotting needs matplotlib: pip install 'qengine[plot]'") from None
    names = [_short(t.name, 32) for t in report.tensors]
    accumulated = [t.accumulated.sqnr_db for t in report.tensors]
    own = [t.own_sqnr for t in report.tensors]
    finite = [v for v in accumulated + own if math.isfinite(v)] or [0.0]
    ceiling = max(finite) + 10  # where "no error at all" (inf dB) is drawn
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6.0, 0.45 * len(names) + 2), 5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(x, _capped(accumulated, ceiling), "o-", label="accumulated (end to end)")
    ax.plot(x, _capped(own, ceiling), "s--", label="own (op alone, float-exact inputs)")
    ax.axhline(ceiling, color="grey", linewidth=0.5)
    ax.text(0, ceiling, " no error (inf dB)", va="bottom", fontsize=8, color="grey")
    ax.set_xticks(x, names, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(f"per-layer SQNR over {report.samples} samples")
    ax.legend()
    fig.savefig(Path(path), dpi=100, bbox_inches="tight")


def _capped(values: list[float], ceiling: float) -> list[float]:
    return [min(v, ceiling) if v != -INF else np.nan for v in values]
