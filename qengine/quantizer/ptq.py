"""Post-training methods beyond TFLite's converter; every result is a plain TFLite int8 model.

    equalize(float_model)                           cross-layer equalization (Nagel et al. 2019)
    bias_correction(float_model, quant_model, data) empirical bias correction (Nagel et al. 2019)
    adaround(float_model, quant_model, data)        learned up/down rounding (Nagel et al. 2020)

`equalize` rescales float weights, so it runs before `qengine.quantize`. The other two rewrite
the int8 weights and int32 biases of a model that `qengine.quantize` made from `float_model`
(they find each layer by its output tensor's name, which the int8 pass keeps): no op, scale or
zero point changes, so TFLite runs the result with its ordinary int8 kernels.

    eq = equalize(float_model)
    q = qengine.quantize(eq, "int8", data, per_channel=False)
    q = bias_correction(eq, adaround(eq, q, data), data)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..calibrate import iterate_samples, stack_batches
from ..errors import QuantizationError
from ..flatbuffer_io import load
from ..ir import Model, OpCode, Operator, Subgraph, Tensor
from ..ops.opdef import DEPTHWISE_1HWO, OHWI, OI, definitions
from ..qparams import quantize, rounded_quotient
from ..runtime import Interpreter
from .passes import fold_constant_weights

NONE, RELU = 0, 1  # ActivationFunctionType codes; RELU6 (3) changes under scaling, see below
# The layers: ops applying one filter to their input 0, by the filter's facts (its output-channel
# axis and layout) from the op definitions: CONV_2D (OHWI), DEPTHWISE_CONV_2D and
# FULLY_CONNECTED (OI). DEPTHWISE filters are [1, KH, KW, I * M]: output channel o reads input
# channel o // M.
WEIGHTS = {name: d.weight for name, d in definitions().items()
           if d.weight is not None and d.quantized is not None and d.quantized.data_input == 0
           and d.weight.layout in (OHWI, DEPTHWISE_1HWO, OI)}
LAYERS = tuple(sorted(WEIGHTS))
OUTPUT_AXIS = {name: w.axis for name, w in WEIGHTS.items()}
SAME_PADDING = 0


def _copy(model: Model) -> Model:
    return load(model.to_bytes())


# ---------------------------------------------------------------------------------------------
# cross-layer equalization


def equalize(model: Model, iterations: int = 20, tolerance: float = 1e-3) -> Model:
    """A copy of float `model` with the weight ranges of consecutive layers equalized.

    For each chain layer1 -> (no activation or ReLU) -> layer2 whose middle tensor only layer2
    reads: s_c = sqrt(r1_c * r2_c) / r2_c, W1[c] /= s_c, b1[c] /= s_c, W2[:, c] *= s_c, with
    r = max |w| of layer1's output channel c and of layer2's input channel c (the symmetric
    int8 grid's range). ReLU(x / s) = ReLU(x) / s for s > 0, so the float function is
    unchanged. Chains through RELU6 (or any other activation) are skipped: min(x, 6) / s is not
    min(x / s, 6), so scaling would move the clip point (replace RELU6 by RELU first, as
    Nagel et al. do for MobileNetV2). Pairs are swept until no scale moves by more than
    `tolerance` (relative) or after `iterations` sweeps.
    """
    work = _copy(model)
    fold_constant_weights(work)
    pairs = list(_chains(work.main))
    for _ in range(iterations):
        moved = max((_equalize_pair(a, b) for a, b in pairs), default=0.0)
        if moved < tolerance:
            break
    work.verify()
    return work


def _chains(graph) -> Iterator[tuple[Operator, Operator]]:
    consumers, outputs = graph.consumers(), {id(t) for t in graph.outputs}

    def only_reader(t: Tensor) -> Operator | None:
        readers = consumers.get(id(t), [])
        return readers[0] if len(readers) == 1 and id(t) not in outputs else None

    def own_weights(op: Operator) -> bool:  # float constants no other op shares
        return all(t is None or (t.is_constant and t.dtype == "float32"
                                 and len(consumers.get(id(t), [])) == 1) for t in op.inputs[1:3])

    for first in graph.operators:
        if first.type not in LAYERS or not own_weights(first):
            continue
        activation = first.options.fusedActivationFunction
        middle = first.outputs[0]
        second = only_reader(middle)
        if activation == NONE and second is not None and _scale_equivariant(second):
            middle, second = second.outputs[0], only_reader(second.outputs[0])
        if (activation in (NONE, RELU) and second is not None and second.type in LAYERS
                and second.inputs[0] is middle and own_weights(second)
                and _input_channels(second) == first.inputs[1].shape[OUTPUT_AXIS[first.type]]
                and middle.shape[-1] == _input_channels(second)):
            yield first, second


def _scale_equivariant(op: Operator) -> bool:
    """relu(s x) = s relu(x) for s > 0: equalization may scale through the op."""
    definition = definitions().get(op.type)
    return definition is not None and definition.scale_equivariant


def _depthwise(op: Operator) -> bool:
    return _depthwise_type(op.type)


def _depthwise_type(name: str) -> bool:
    return WEIGHTS[name].layout == DEPTHWISE_1HWO


def _input_channels(op: Operator) -> int:
    w = op.inputs[1]
    if _depthwise(op):
        return op.inputs[0].shape[-1]
    return w.shape[-1]


def _output_ranges(op: Operator) -> np.ndarray:
    w = np.abs(op.inputs[1].data)
    axis = OUTPUT_AXIS[op.type]
    return w.max(axis=tuple(d for d in range(w.ndim) if d != axis))


def _input_ranges(op: Operator) -> np.ndarray:
    w = np.abs(op.inputs[1].data)
    if _depthwise(op):
        return _by_input_channel(op, w).max(axis=(0, 2))
    return w.reshape(-1, w.shape[-1]).max(axis=0)


def _by_input_channel(op: Operator, w: np.ndarray) -> np.ndarray:
    """A depthwise filter as [KH * KW, I, M]."""
    channels = op.inputs[0].shape[-1]
    return w.reshape(-1, channels, w.shape[-1] // channels)


def _equalize_pair(first: Operator, second: Operator) -> float:
    r1, r2 = _output_ranges(first).astype(np.float64), _input_ranges(second).astype(np.float64)
    s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 * r2) / np.where(r2 > 0, r2, 1), 1.0)
    w1, bias = first.inputs[1], first.inputs[2] if len(first.inputs) > 2 else None
    shape = [1] * len(w1.shape)
    shape[OUTPUT_AXIS[first.type]] = s.size
    w1.data = w1.data / s.reshape(shape)
    if bias is not None:
        bias.data = bias.data / s
    w2 = second.inputs[1]
    if _depthwise(second):
        w2.data = (_by_input_channel(second, w2.data) * s[None, :, None]).reshape(w2.shape)
    else:
        w2.data = w2.data * s  # the input channel is the last axis of CONV and FC filters
    return float(np.abs(np.log(s)).max(initial=0.0))


# ---------------------------------------------------------------------------------------------
# running a float model and its int8 version side by side, layer by layer


@dataclass
class Layer:
    """One quantized CONV/DEPTHWISE/FC with what both models feed it (lists over batches)."""

    quant_op: Operator  # in the int8 model being rewritten
    float_op: Operator
    float_inputs: list[np.ndarray]  # the float model's input activation
    quant_inputs: list[np.ndarray]  # the int8 model's, dequantized
    float_weights: np.ndarray
    preactivation: Callable  # (inputs, weights, bias) -> float output without the activation

    def float_outputs(self) -> list[np.ndarray]:
        return [self.preactivation(x, None, None) for x in self.float_inputs]

    def quant_outputs(self) -> list[np.ndarray]:
        """The int8 layer in real arithmetic: exact but for the final requantization rounding."""
        w, b = self.quant_op.inputs[1], _bias(self.quant_op)
        weights = dequantize(w, w.data)
        bias = np.zeros(weights.shape[OUTPUT_AXIS[self.quant_op.type]], np.float32) \
            if b is None else dequantize(b, b.data)
        return [self.preactivation(x, weights, bias) for x in self.quant_inputs]


class _Walk:
    """Runs a model op by op over a list of batches, dropping tensors no later op reads."""

    def __init__(self, model: Model, batches: list[list[np.ndarray]]):
        graph = model.main
        self.model, self.ops, self.next = model, graph.operators, 0
        self.interpreter = Interpreter(model)
        self.values = [{id(t): a for t, a in zip(graph.inputs, batch)} for batch in batches]
        self.reads: dict[int, int] = {id(t): 1 for t in graph.outputs}
        for op in self.ops:
            for t in op.inputs:
                if t is not None and not t.is_constant:
                    self.reads[id(t)] = self.reads.get(id(t), 0) + 1

    def value(self, t: Tensor) -> list[np.ndarray]:
        return [values[id(t)] for values in self.values]

    def reload(self) -> None:
        """Pick up rewritten constants (run_op uses the ones prepared with the model)."""
        self.interpreter = Interpreter(self.model)

    def run_until(self, index: int) -> None:
        """Run every op before op `index`."""
        while self.next < index:
            self.step()

    def step(self) -> None:
        op, index = self.ops[self.next], self.next
        self.next += 1
        for values in self.values:
            feeds = {t.name: values[id(t)] for t in op.inputs if t is not None and id(t) in values}
            for t, value in zip(op.outputs, self.interpreter.run_op(index, feeds)):
                if t is not None:
                    values[id(t)] = value
        for t in op.inputs:
            if t is not None and id(t) in self.reads:
                self.reads[id(t)] -= 1
                if self.reads[id(t)] == 0:
                    for values in self.values:
                        values.pop(id(t), None)


def walk_layers(float_model: Model, quant_model: Model, data, visit: Callable[[Layer], None],
                types=LAYERS, batch_size: int = 16) -> None:
    """Call `visit` on each quantized layer of `types` in order, before it runs.

    Both models run on `data` (calibration-style inputs, float) op by op. `visit` may rewrite the
    layer's int8 constants in `quant_model`; later layers then see the rewritten layer's outputs
    (corrections are sequential).
    """
    fwalk = _Walk(float_model, _data_batches(float_model, data, batch_size))
    qwalk = _Walk(quant_model, _data_batches(quant_model, data, batch_size, quantize=True))
    by_name = _layers_by_output(float_model.main)
    for index, op in enumerate(quant_model.main.operators):
        if op.type in types and op.inputs[1].dtype == "int8":
            # a graph output behind a DEQUANTIZE (float interface) keeps its name on the float
            # tensor; the int8 one is an inserted tensor standing for it (quant_model.sources)
            name = op.outputs[0].name
            float_index = by_name.get(quant_model.sources.get(name, name))
            if float_index is not None:
                fwalk.run_until(float_index)
                visit(_layer(fwalk, float_index, op, qwalk))
                qwalk.reload()
        qwalk.step()


def _layers_by_output(graph) -> dict[str, int]:
    """Output name -> index of the float op writing it; a standalone activation's output also
    names the layer before it, which the quantizer folds it into (passes.fuse_activations)."""
    from ..runtime.fusion import ACTIVATIONS

    by_name = {op.outputs[0].name: i for i, op in enumerate(graph.operators)}
    for op in graph.operators:
        if op.type in ACTIVATIONS and op.inputs and op.inputs[0] is not None:
            source = by_name.get(op.inputs[0].name)
            if source is not None and graph.operators[source].type in LAYERS:
                by_name[op.outputs[0].name] = source
    return by_name


def _layer(fwalk: _Walk, float_index: int, quant_op: Operator, qwalk: _Walk) -> Layer:
    float_op = fwalk.ops[float_index]
    x, w, b = float_op.inputs[0], float_op.inputs[1], _bias(float_op)
    xq = quant_op.inputs[0]
    weights = np.asarray(w.data if w.is_constant else fwalk.value(w)[0], np.float32)
    float_bias = None if b is None else np.asarray(
        b.data if b.is_constant else fwalk.value(b)[0], np.float32)
    cache = {}

    def preactivation(inputs, new_weights, new_bias):
        key = "float" if new_weights is None else id(new_weights)
        if key not in cache:  # one interpreter per set of weights (run_op keeps the model's)
            cache[key] = Interpreter(_single_layer(
                float_op, weights if new_weights is None else new_weights,
                float_bias if new_weights is None else new_bias))
        return cache[key].run(inputs)["y"]

    return Layer(quant_op, float_op, fwalk.value(x),
                 [dequantize(xq, v) for v in qwalk.value(xq)], weights, preactivation)


def _single_layer(op: Operator, weights: np.ndarray, bias: np.ndarray | None) -> Model:
    """A float model of `op` alone with the given constants and no fused activation."""
    x = op.inputs[0]
    inputs = [Tensor("x", x.shape, "float32", shape_signature=(-1,) + tuple(x.shape[1:]))]
    for name, value in (("w", weights), ("b", bias)):
        if value is not None:
            inputs.append(Tensor(name, value.shape, "float32"))
            inputs[-1].data = value
    output = Tensor("y", op.outputs[0].shape, "float32")
    options = copy.copy(op.options)
    options.fusedActivationFunction = NONE
    layer = Operator(OpCode(op.type, op.opcode.version), inputs, [output], options)
    return Model([Subgraph(inputs[1:] + inputs[:1] + [output], inputs[:1], [output], [layer])])


def _bias(op: Operator) -> Tensor | None:
    return op.inputs[2] if len(op.inputs) > 2 else None


def dequantize(t: Tensor, q: np.ndarray) -> np.ndarray:
    """real = scale * (q - zero_point), per tensor or along the quantized axis."""
    quant = t.quantization
    if quant is None or t.dtype == "float32":
        return np.asarray(q, np.float32)
    shape = [1] * q.ndim
    if quant.scale.size > 1:
        shape[quant.axis] = quant.scale.size
    scale = quant.scale.astype(np.float64).reshape(shape)
    return (scale * (q.astype(np.float64) - quant.zero_point.reshape(shape))).astype(np.float32)


def _data_batches(model: Model, data, batch_size: int, quantize: bool = False) -> list:
    samples = list(iterate_samples(_float_view(model) if quantize else model, data))
    if not samples:
        raise QuantizationError("no data: bias correction and AdaRound need calibration inputs")
    if quantize:
        samples = [[_quantize_input(t, a) for t, a in zip(model.main.inputs, sample)]
                   for sample in samples]
    return list(stack_batches(model, samples, batch_size))


def _float_view(model: Model) -> Model:
    """The model with float inputs, so iterate_samples accepts float data for an int8 model."""
    view = _copy(model)
    for t in view.main.inputs:
        t.dtype = "float32"
    return view


def _quantize_input(t: Tensor, x: np.ndarray) -> np.ndarray:
    if t.dtype == "float32":
        return x
    return quantize(x, t.scale, t.zero_point, t.dtype, "float64")


# ---------------------------------------------------------------------------------------------
# bias correction


def bias_correction(float_model: Model, quant_model: Model, data, batch_size: int = 16) -> Model:
    """A copy of `quant_model` whose int32 biases cancel the mean error of each layer's output.

    For every int8 CONV/DEPTHWISE/FC: e_c = E[y_q - y_f] per output channel over `data`, before
    the fused activation (y_q is the layer in real arithmetic on the int8 model's own input,
    y_f the float layer on the float model's), and bias[c] -= round(e_c / bias_scale[c]).
    Sequential: layers are corrected in order, each measured after the ones before it are
    fixed, so a shift an earlier layer passes on is not corrected twice. A layer without a bias
    input (optional for FULLY_CONNECTED) is left alone.
    """
    work = _copy(quant_model)
    walk_layers(float_model, work, data, _correct_bias, batch_size=batch_size)
    work.verify()
    return work


def _correct_bias(layer: Layer) -> None:
    bias = _bias(layer.quant_op)
    if bias is None or bias.dtype != "int32":
        return
    total, count = 0.0, 0
    for yq, yf in zip(layer.quant_outputs(), layer.float_outputs()):
        diff = (yq.astype(np.float64) - yf).reshape(-1, yq.shape[-1])
        total, count = total + diff.sum(axis=0), count + diff.shape[0]
    error = total / count
    steps = rounded_quotient(error, bias.quantization.scale, "float64")
    bias.data = np.clip(bias.data.astype(np.int64) - steps, -(2**31) + 1, 2**31 - 1)


def layer_errors(float_model: Model, quant_model: Model, data, batch_size: int = 16
                 ) -> dict[str, float]:
    """Per quantized layer (by output name): E[(y_q - y_f)^2] / E[y_f^2] before the activation."""
    errors = {}

    def measure(layer: Layer) -> None:
        num = den = 0.0
        for yq, yf in zip(layer.quant_outputs(), layer.float_outputs()):
            num += float(((yq.astype(np.float64) - yf) ** 2).sum())
            den += float((yf.astype(np.float64) ** 2).sum())
        errors[layer.float_op.outputs[0].name] = num / max(den, 1e-30)

    walk_layers(float_model, quant_model, data, measure, batch_size=batch_size)
    return errors


# ---------------------------------------------------------------------------------------------
# AdaRound

GAMMA, ZETA = -0.1, 1.1  # the rectified sigmoid's stretch: h = clip(sigmoid(v)(ZETA-GAMMA)+GAMMA)


def adaround(float_model: Model, quant_model: Model, data, iterations: int = 300,
             max_samples: int = 2048, regularization: float = 0.01, learning_rate: float = 0.03,
             seed: int = 0, batch_size: int = 16) -> Model:
    """A copy of `quant_model` whose CONV_2D/FC int8 weights round up or down as learned.

    Per layer (in order, each on the inputs the already-rounded layers before it produce):
    w_int = floor(w / s) + h(v), h the rectified sigmoid, minimizing
    ||W~ x~ - W x||^2 (x~ the int8 model's input to the layer, dequantized; x the float model's)
    plus regularization * sum(1 - |2h - 1|^beta) with beta annealed from 20 to 2 after a 20%
    warm-up, by Adam in NumPy over `iterations` steps on at most `max_samples` input patches.
    Then h is rounded to 0/1. Scales (and so the bias scale) are unchanged.
    """
    work = _copy(quant_model)
    rng = np.random.default_rng(seed)

    def visit(layer: Layer) -> None:
        w = layer.quant_op.inputs[1]
        x_q, x_f = _sample_patches(layer, max_samples, rng)
        scale = w.quantization.scale.astype(np.float64)
        weights = layer.float_weights.reshape(w.shape[0], -1).astype(np.float64)
        q = learn_rounding(weights, scale, x_q, x_f, iterations, regularization, learning_rate)
        w.data = q.reshape(w.shape).astype(np.int8)

    walk_layers(float_model, work, data, visit, batch_size=batch_size,
                types=tuple(name for name in LAYERS if not _depthwise_type(name)))
    work.verify()
    return work


def learn_rounding(weights: np.ndarray, scale: np.ndarray, x_q: np.ndarray, x_f: np.ndarray,
                   iterations: int, regularization: float = 0.01, learning_rate: float = 0.03,
                   qmax: int = 127) -> np.ndarray:
    """Integer weights [O, K] for W [O, K], scales [O] or [1], inputs x~, x [N, K]."""
    s = np.broadcast_to(scale, weights.shape[:1])[:, None]
    base = np.floor(weights / s)
    rest = np.clip(weights / s - base, 1e-4, 1 - 1e-4)
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)  # h(v) = rest: start from the float value
    n = x_q.shape[0]
    gram = x_q.T @ x_q / n  # the loss is sum_o mean_n ((W~ x~ - W x)_no)^2
    target = weights @ (x_f.T @ x_q) / n
    # normalize by the error of a uniform rounding error, so `regularization` is dimensionless
    norm = float(np.mean(s**2) * np.trace(gram) / max(weights.shape[1], 1)) or 1.0
    adam_m, adam_v = np.zeros_like(v), np.zeros_like(v)
    warmup = int(0.2 * iterations)
    for step in range(iterations):
        sig = 1 / (1 + np.exp(-v))
        stretched = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(stretched, 0, 1)
        w_tilde = s * (base + h)
        grad_h = 2 * (w_tilde @ gram - target) * s / norm
        if step >= warmup:
            beta = 20 + (2 - 20) * (step - warmup) / max(iterations - warmup - 1, 1)
            centered = 2 * h - 1
            grad_h += -regularization * beta * np.abs(centered) ** (beta - 1) * np.sign(
                centered) * 2
        grad = grad_h * (ZETA - GAMMA) * sig * (1 - sig) * ((stretched > 0) & (stretched < 1))
        adam_m = 0.9 * adam_m + 0.1 * grad
        adam_v = 0.999 * adam_v + 0.001 * grad**2
        m_hat, v_hat = adam_m / (1 - 0.9 ** (step + 1)), adam_v / (1 - 0.999 ** (step + 1))
        v -= learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)
    h = np.clip(1 / (1 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0, 1)
    return np.clip(base + (h >= 0.5), -qmax, qmax)


def _sample_patches(layer: Layer, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Matching rows of im2col(x~) and im2col(x): [N, K] in the filter's [KH, KW, I] order."""
    x_q, x_f = np.concatenate(layer.quant_inputs), np.concatenate(layer.float_inputs)
    op = layer.float_op
    if WEIGHTS[op.type].layout == OI:
        k = layer.float_weights.shape[1]
        x_q, x_f = x_q.reshape(-1, k), x_f.reshape(-1, k)
        rows = rng.choice(len(x_q), size=min(count, len(x_q)), replace=False)
        return x_q[rows].astype(np.float64), x_f[rows].astype(np.float64)
    positions = _output_positions(op, x_f.shape, layer.float_weights.shape, count, rng)
    return (_patches(op, x_q, layer.float_weights.shape, positions),
            _patches(op, x_f, layer.float_weights.shape, positions))


def _conv_geometry(op: Operator, in_shape, filter_shape):
    o = op.options
    (_, h, w, _), (kh, kw) = in_shape, filter_shape[1:3]
    eff_h, eff_w = (kh - 1) * o.dilationHFactor + 1, (kw - 1) * o.dilationWFactor + 1
    if o.padding == SAME_PADDING:
        out_h, out_w = -(-h // o.strideH), -(-w // o.strideW)
        pad_h = max((out_h - 1) * o.strideH + eff_h - h, 0) // 2
        pad_w = max((out_w - 1) * o.strideW + eff_w - w, 0) // 2
    else:
        out_h, out_w = (h - eff_h) // o.strideH + 1, (w - eff_w) // o.strideW + 1
        pad_h = pad_w = 0
    return out_h, out_w, pad_h, pad_w


def _output_positions(op: Operator, in_shape, filter_shape, count: int, rng) -> np.ndarray:
    out_h, out_w, _, _ = _conv_geometry(op, in_shape, filter_shape)
    total = in_shape[0] * out_h * out_w
    flat = rng.choice(total, size=min(count, total), replace=False)
    return np.stack(np.unravel_index(flat, (in_shape[0], out_h, out_w)), axis=1)


def _patches(op: Operator, x: np.ndarray, filter_shape, positions: np.ndarray) -> np.ndarray:
    """Input windows of a CONV_2D at output positions [N, (batch, y, x)], zero padded."""
    o = op.options
    _, _, pad_h, pad_w = _conv_geometry(op, x.shape, filter_shape)
    kh, kw = filter_shape[1:3]
    reach_h, reach_w = (kh - 1) * o.dilationHFactor + 1, (kw - 1) * o.dilationWFactor + 1
    padded = np.pad(x, ((0, 0), (pad_h, reach_h), (pad_w, reach_w), (0, 0)))
    b, oy, ox = positions.T
    rows = (oy * o.strideH)[:, None] + np.arange(kh) * o.dilationHFactor
    cols = (ox * o.strideW)[:, None] + np.arange(kw) * o.dilationWFactor
    windows = padded[b[:, None, None], rows[:, :, None], cols[:, None, :]]  # [N, KH, KW, I]
    return windows.reshape(len(positions), -1).astype(np.float64)
