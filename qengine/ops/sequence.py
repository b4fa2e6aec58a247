"""Recurrent ops in float: UNIDIRECTIONAL_SEQUENCE_LSTM, LSTM, BIDIRECTIONAL_SEQUENCE_LSTM, RNN,
UNIDIRECTIONAL_SEQUENCE_RNN, BIDIRECTIONAL_SEQUENCE_RNN and SVDF.

Their recurrent state lives in variable tensors (`is_variable`), which TFLite keeps from one
invoke to the next; qengine keeps them in the interpreter's `Resources` the same way
(`reset_variables()` zeroes them). The step formulas follow TFLite's float reference path
(lstm_eval.cc, basic_rnn.cc, svdf.cc), in float32, with the gates' matrix products accumulated
in float64 and rounded once (TFLite accumulates in float32, so floats agree to the tolerance).
Also implemented: hybrid (int8 weights, float activations) SVDF, RNN,
UNIDIRECTIONAL_SEQUENCE_RNN, UNIDIRECTIONAL_SEQUENCE_LSTM and LSTM, and integer SVDF. The integer (8x8_16)
UNIDIRECTIONAL_SEQUENCE_LSTM and LSTM are in sequence_int.py. The bidirectional ops run hybrid
too.
"""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .common import NONE, RELU, RELU6, RELU_N1_TO_1, TANH
from .opdef import op

F32 = np.float32
_ACTIVATIONS = {
    NONE: lambda x: x,
    RELU: lambda x: np.maximum(x, F32(0)),
    RELU_N1_TO_1: lambda x: np.clip(x, F32(-1), F32(1)),
    RELU6: lambda x: np.clip(x, F32(0), F32(6)),
    TANH: np.tanh,
}


def _activation(ctx: OpContext):
    code = getattr(ctx.options, "fusedActivationFunction", NONE)
    if code not in _ACTIVATIONS:
        raise ctx.unsupported(f"fused activation {code} in a recurrent op")
    return _ACTIVATIONS[code]


def _sigmoid(x):
    return (F32(1) / (F32(1) + np.exp(-x))).astype(F32)


def _matmul(x, w):
    """x @ w.T for a [batch, k] by [n, k] pair, float64 accumulation rounded to float32."""
    return (x.astype(np.float64) @ w.T.astype(np.float64)).astype(F32)


def _float_inputs(ctx: OpContext, indices) -> None:
    for i in indices:
        spec = ctx.optional_input(i)
        if spec is not None and spec.dtype != "float32":
            raise ctx.unsupported(f"{spec.dtype} tensor {spec.name!r}: only float recurrent "
                                  f"ops are implemented (no hybrid or integer variant)")


def _state_tensor(ctx: OpContext, i: int, shape: tuple):
    t = ctx.op.inputs[i] if i < len(ctx.op.inputs) else None
    if t is None or not t.is_variable:
        raise ctx.invalid(f"input {i} must be a variable tensor (the recurrent state)")
    if tuple(t.shape) != tuple(shape):
        raise ctx.invalid(f"state {t.name!r} has shape {t.shape}; expected {shape}")
    return t


# -- LSTM ------------------------------------------------------------------------------------


LSTM_WEIGHTS = ["w_i", "w_f", "w_c", "w_o", "r_i", "r_f", "r_c", "r_o", "p_i", "p_f", "p_o",
                "b_i", "b_f", "b_c", "b_o", "proj", "proj_b"]  # inputs 1-17 of an LSTM


def _lstm_weights(values: list, first: int = 1, layer_norm: list | None = None) -> dict:
    """Named weights (None where absent): 17 inputs from `first`, then layer-norm ones."""
    weights = dict(zip(LSTM_WEIGHTS, values[first:first + 17]))
    weights.update(zip(["ln_i", "ln_f", "ln_c", "ln_o"], (list(layer_norm or []) + [None] * 4)))
    return weights


def gate_statistic(output_name: str, gate: str) -> str:
    """The calibration statistic of an LSTM gate's layer-norm input (gate: i, f, c or o)."""
    return f"{output_name}:gate_{gate}"


def _time_steps(x, time_major: bool):
    return x if time_major else x.transpose(1, 0, 2)


def _batch_layout(out, time_major: bool):
    return np.ascontiguousarray(out if time_major else out.transpose(1, 0, 2))


def lstm_sequence(steps, h, c, w: dict, act, cell_clip: float, proj_clip: float,
                  reverse: bool = False, cells: list | None = None):
    """lstm_step over [time, batch, features]; the outputs in time order, final h and c.
    reverse=True walks time backwards (the backward half of a bidirectional LSTM); `cells`,
    if given, receives the cell state of every step (calibration)."""
    outputs = [None] * len(steps)
    for t in (range(len(steps) - 1, -1, -1) if reverse else range(len(steps))):
        h, c = lstm_step(steps[t], h, c, w, act, cell_clip, proj_clip)
        outputs[t] = h
        if cells is not None:
            cells.append(c)
    return np.stack(outputs), h, c


def _layer_norm(x, coefficients, bias):
    """TFLite's MeanStddevNormalization (epsilon 1e-8) times the coefficients plus the bias."""
    mean = x.mean(axis=-1, keepdims=True, dtype=np.float64)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + 1e-8) * coefficients + bias).astype(F32)


def lstm_step(x, h, c, w: dict, act, cell_clip: float, proj_clip: float):
    """One LSTM step (TFLite's LstmStepFloat): gates from input, output state and peepholes,
    optional layer norm and CIFG (no input gate: i = 1 - f), optional projection."""
    layer_norm = w["ln_f"] is not None
    zeros = np.zeros(w["w_f"].shape[0], F32)

    product = w.get("product", lambda v, name: _matmul(v, w[name]))  # hybrid: int8 weights

    def gate(k: str, peephole=None, cell=None):
        z = product(x, "w_" + k) + product(h, "r_" + k)
        if peephole is not None:
            z = z + peephole * cell
        if layer_norm:
            if "observe_gate" in w:  # calibration: the range of the layer norm's input
                w["observe_gate"](k, z)
            return _layer_norm(z, w["ln_" + k], w["b_" + k])
        return (z + w["b_" + k]).astype(F32) if w["b_" + k] is not None else z + zeros

    f = _sigmoid(gate("f", w["p_f"], c))
    i = None if w["w_i"] is None else _sigmoid(gate("i", w["p_i"], c))
    g = act(gate("c"))
    c = f * c + (F32(1) - f if i is None else i) * g
    if cell_clip > 0:
        c = np.clip(c, F32(-cell_clip), F32(cell_clip))
    o = _sigmoid(gate("o", w["p_o"], c))
    out = (o * act(c)).astype(F32)
    if w["proj"] is not None:
        out = product(out, "proj") + (w["proj_b"] if w["proj_b"] is not None else F32(0))
        if proj_clip > 0:
            out = np.clip(out, F32(-proj_clip), F32(proj_clip))
    return out.astype(F32), c.astype(F32)


def _hybrid_weights(ctx: OpContext, first: int) -> tuple[list[int], dict]:
    """The int8 inputs of one hybrid LSTM direction (its weight matrices, peepholes and
    projection, from input `first`) and their scales by weight name."""
    indices = [first + k for k in range(16) if k not in (11, 12, 13, 14)]
    scales = {}
    for i in indices:
        spec = ctx.optional_input(i)
        if spec is not None:
            ctx.expect_dtype(spec, "int8")
            scales[LSTM_WEIGHTS[i - first]] = F32(spec.scale)
    return indices, scales


def _hybrid_lstm_weights(w: dict, scales: dict, asymmetric: bool) -> dict:
    """The hybrid LSTM (LstmStepHybrid): peepholes dequantized (int8 * scale), and every
    matrix product through `hybrid_product` (the vector quantized per row on the fly)."""
    w = dict(w)
    for name in ("p_i", "p_f", "p_o"):
        if w[name] is not None:
            w[name] = (w[name].astype(F32) * scales[name]).astype(F32)
    sums = {}

    def product(v, name):
        return hybrid_product(v, w[name], scales[name], asymmetric, sums)

    w["product"] = product
    return w


def hybrid_product(v, matrix, scale, asymmetric: bool, row_sums: dict):
    """v @ matrix.T for an int8 matrix: v quantized per row (symmetric, or asymmetric with a
    zero point), the int32 product (minus zero point * row sum), times row scale * scale
    (TFLite's hybrid MatrixBatchVectorMultiplyAccumulate)."""
    from ..kernels import hybrid

    if asymmetric:
        q, sf, zp = hybrid.quantize_asymmetric(v)
    else:
        (q, sf), zp = hybrid.quantize_symmetric(v), None
    acc = hybrid.matmul_accumulators(q, matrix)
    if zp is not None and np.any(zp):
        if id(matrix) not in row_sums:
            row_sums[id(matrix)] = hybrid.row_sums_sse(np.ascontiguousarray(matrix)).astype(
                np.int64)
        acc = (acc - zp[:, None].astype(np.int64) * row_sums[id(matrix)]).astype(np.int32)
    return acc.astype(F32) * (sf * scale)[:, None]


def _lstm_prepare(ctx: OpContext, sequence: bool) -> Prepared:
    if len(ctx.inputs) not in (20, 24):
        raise ctx.invalid(f"has {len(ctx.inputs)} inputs; an LSTM has 20 or 24")
    x = ctx.input(0)
    integer = x.dtype == "int8"
    hybrid = ctx.input(2).dtype == "int8" and not integer
    int8_inputs, scales = _hybrid_weights(ctx, 1) if hybrid else ([], {})
    if not integer:
        _float_inputs(ctx, [i for i in range(len(ctx.inputs)) if i not in int8_inputs])
    asymmetric = bool(getattr(ctx.options, "asymmetricQuantizeInputs", False))
    n_cell, n_input = ctx.input(2).shape
    n_output = ctx.input(6).shape[1]
    time_major = bool(getattr(ctx.options, "timeMajor", False)) if sequence else True
    if sequence and len(x.shape) != 3 or not sequence and len(x.shape) != 2:
        raise ctx.invalid(f"input of shape {x.shape}")
    batch = x.shape[1] if sequence and time_major else x.shape[0]
    if x.shape[-1] != n_input:
        raise ctx.invalid(f"input has {x.shape[-1]} features, the weights take {n_input}")
    h_tensor = _state_tensor(ctx, 18, (batch, n_output))
    c_tensor = _state_tensor(ctx, 19, (batch, n_cell))
    if len(ctx.outputs) != 1:
        raise ctx.unsupported(f"an LSTM with {len(ctx.outputs)} outputs (only the one-output "
                              f"form is implemented)")
    if integer:
        from .sequence_int import integer_lstm

        return integer_lstm(ctx, sequence, h_tensor, c_tensor, time_major)
    act = _activation(ctx)
    cell_clip = float(getattr(ctx.options, "cellClip", 0.0))
    proj_clip = float(getattr(ctx.options, "projClip", 0.0))
    resources = ctx.interpreter.resources

    def run(*values):
        w = _lstm_weights(list(values), 1, values[20:24])
        if hybrid:
            w = _hybrid_lstm_weights(w, scales, asymmetric)
        steps = _time_steps(values[0], time_major) if sequence else values[0][None]
        observing = resources.state_observer is not None
        cells, gates = ([], {}) if observing else (None, None)
        if observing:
            w["observe_gate"] = lambda k, z: gates.setdefault(k, []).append(z)
        out, h, c = lstm_sequence(steps, resources.state(h_tensor), resources.state(c_tensor),
                                  w, act, cell_clip, proj_clip, cells=cells)
        resources.set_state(h_tensor, h)
        resources.set_state(c_tensor, c)
        if observing:
            resources.observe(c_tensor.name, np.stack(cells))
            for k, zs in gates.items():
                resources.observe(gate_statistic(ctx.outputs[0].name, k), np.stack(zs))
        return _batch_layout(out, time_major) if sequence else out[0]

    if sequence:
        shape = x.shape[:-1] + (n_output,)
    else:
        shape = (batch, n_output)
    return Prepared(run, [ctx.output_spec(0, shape, "float32")], foldable=False)


@op("UNIDIRECTIONAL_SEQUENCE_LSTM")
def unidirectional_sequence_lstm(ctx: OpContext) -> Prepared:
    return _lstm_prepare(ctx, sequence=True)


@op("LSTM")
def lstm(ctx: OpContext) -> Prepared:
    if int(getattr(ctx.options, "kernelType", 0)) != 0:
        raise ctx.unsupported("the BASIC LSTM kernel type (only FULL is implemented)")
    return _lstm_prepare(ctx, sequence=False)


@op("BIDIRECTIONAL_SEQUENCE_LSTM")
def bidirectional_sequence_lstm(ctx: OpContext) -> Prepared:
    """A forward LSTM (inputs 1-17, state 35/36) and a backward one (18-34, state 37/38) over
    the same sequence; outputs both, or their concatenation with merge_outputs. The auxiliary
    input (39-47) is not implemented."""
    if len(ctx.inputs) != 48:
        raise ctx.invalid(f"has {len(ctx.inputs)} inputs; BIDIRECTIONAL_SEQUENCE_LSTM has 48")
    if any(ctx.optional_input(i) is not None for i in range(39, 48)):
        raise ctx.unsupported("the auxiliary input of BIDIRECTIONAL_SEQUENCE_LSTM")
    x = ctx.input(0)
    hybrid = ctx.input(2).dtype == "int8"
    hybrids = [_hybrid_weights(ctx, first) for first in (1, 18)] if hybrid else []
    int8_inputs = {i for indices, _ in hybrids for i in indices}
    _float_inputs(ctx, [i for i in range(39) if i not in int8_inputs])
    asymmetric = bool(getattr(ctx.options, "asymmetricQuantizeInputs", False))
    time_major = bool(getattr(ctx.options, "timeMajor", True))
    merge = bool(getattr(ctx.options, "mergeOutputs", False))
    if len(x.shape) != 3:
        raise ctx.invalid(f"input of shape {x.shape}; expected rank 3")
    batch = x.shape[1] if time_major else x.shape[0]
    directions = []
    for first, state in ((1, 35), (18, 37)):
        n_cell, n_input = ctx.input(first + 1).shape
        n_output = ctx.input(first + 5).shape[1]
        if n_input != x.shape[2]:
            raise ctx.invalid(f"input has {x.shape[2]} features, the weights take {n_input}")
        directions.append((first, _state_tensor(ctx, state, (batch, n_output)),
                           _state_tensor(ctx, state + 1, (batch, n_cell)), n_output))
    if ctx.input(2).shape[0] != ctx.input(19).shape[0] or sizes_differ(directions):
        raise ctx.invalid("the forward and backward LSTMs must have one cell and one output "
                          "size (as TFLite requires)")
    act = _activation(ctx)
    cell_clip = float(getattr(ctx.options, "cellClip", 0.0))
    proj_clip = float(getattr(ctx.options, "projClip", 0.0))
    resources = ctx.interpreter.resources

    def run(*values):
        steps = _time_steps(values[0], time_major)
        outputs = []
        for reverse, (first, h_tensor, c_tensor, _) in enumerate(directions):
            w = _lstm_weights(list(values), first)
            if hybrid:
                w = _hybrid_lstm_weights(w, hybrids[reverse][1], asymmetric)
            out, h, c = lstm_sequence(steps, resources.state(h_tensor),
                                      resources.state(c_tensor), w, act, cell_clip, proj_clip,
                                      reverse=bool(reverse))
            resources.set_state(h_tensor, h)
            resources.set_state(c_tensor, c)
            outputs.append(_batch_layout(out, time_major))
        return np.concatenate(outputs, axis=-1) if merge else tuple(outputs)

    sizes = [d[3] for d in directions]
    return _bidirectional_outputs(ctx, x.shape[:-1], sizes, merge, run)


def sizes_differ(directions) -> bool:
    return directions[0][-1] != directions[1][-1]


def _bidirectional_outputs(ctx: OpContext, lead, sizes, merge: bool, run) -> Prepared:
    if len(ctx.outputs) != (1 if merge else 2):
        raise ctx.invalid(f"has {len(ctx.outputs)} outputs; merge_outputs={merge} needs "
                          f"{1 if merge else 2}")
    shapes = [tuple(lead) + (sum(sizes),)] if merge else [tuple(lead) + (n,) for n in sizes]
    return Prepared(run, [ctx.output_spec(i, s, "float32") for i, s in enumerate(shapes)],
                    foldable=False)


# -- RNN -------------------------------------------------------------------------------------


def rnn_sequence(steps, h, cell, reverse: bool = False):
    """h = cell(x, h) per step of [time, batch, features]; every step's h, and the last."""
    outputs = [None] * len(steps)
    for t in (range(len(steps) - 1, -1, -1) if reverse else range(len(steps))):
        h = cell(steps[t], h)
        outputs[t] = h
    return np.stack(outputs), h


def float_rnn_cell(weights, recurrent, bias, act):
    """h = act(W x + b + R h) (TFLite's RnnBatchStep)."""
    return lambda x, h: act((_matmul(x, weights) + bias + _matmul(h, recurrent)).astype(F32))


def hybrid_rnn_cell(weights, w_scale, recurrent, r_scale, bias, act, asymmetric: bool):
    """The hybrid RnnBatchStep: out = bias; then, for the input and for the hidden state (each
    skipped when all zero), quantize it per row (symmetric, or asymmetric with a zero point),
    take the int32 product with the int8 weights (minus zero point * row sum) and add
    product * row scale * weight scale; h = act(out)."""
    sums: dict = {}

    def product(v, matrix, scale):
        return hybrid_product(v, matrix, scale, asymmetric, sums)

    def cell(x, h):
        out = np.broadcast_to(bias, (len(x), len(bias))).astype(F32)
        if x.any():
            out = out + product(x, weights, w_scale)
        if h.any():
            out = out + product(h, recurrent, r_scale)
        return act(out.astype(F32))

    return cell


def _rnn_prepare(ctx: OpContext, sequence: bool) -> Prepared:
    """h = act(W x + R h + b) per step; the output is every step's h. int8 weights make it
    the hybrid kernel (float input, state and output)."""
    ctx.expect_inputs(5)
    x, w, r, b = (ctx.input(i) for i in range(4))
    hybrid = w.dtype == "int8"
    _float_inputs(ctx, [0, 3, 4] if hybrid else range(5))
    if hybrid:
        ctx.expect_dtype(r, "int8")
        w_scale, r_scale = F32(w.scale), F32(r.scale)
    asymmetric = bool(getattr(ctx.options, "asymmetricQuantizeInputs", False))
    units, n_input = w.shape
    time_major = bool(getattr(ctx.options, "timeMajor", False)) if sequence else True
    if len(x.shape) != (3 if sequence else 2) or x.shape[-1] != n_input:
        raise ctx.invalid(f"input of shape {x.shape} for weights {w.shape}")
    if r.shape != (units, units) or b.shape != (units,):
        raise ctx.invalid(f"recurrent weights {r.shape} / bias {b.shape} do not fit {units} "
                          f"units")
    batch = x.shape[1] if sequence and time_major else x.shape[0]
    h_tensor = _state_tensor(ctx, 4, (batch, units))
    act = _activation(ctx)
    resources = ctx.interpreter.resources

    def run(values, weights, recurrent, bias, _):
        steps = _time_steps(values, time_major) if sequence else values[None]
        cell = (hybrid_rnn_cell(weights, w_scale, recurrent, r_scale, bias, act, asymmetric)
                if hybrid else float_rnn_cell(weights, recurrent, bias, act))
        out, h = rnn_sequence(steps, resources.state(h_tensor), cell)
        resources.set_state(h_tensor, h)
        return _batch_layout(out, time_major) if sequence else out[0]

    shape = x.shape[:-1] + (units,)
    return Prepared(run, [ctx.output_spec(0, shape, "float32")], foldable=False)


@op("RNN")
def rnn(ctx: OpContext) -> Prepared:
    return _rnn_prepare(ctx, sequence=False)


@op("UNIDIRECTIONAL_SEQUENCE_RNN")
def unidirectional_sequence_rnn(ctx: OpContext) -> Prepared:
    return _rnn_prepare(ctx, sequence=True)


@op("BIDIRECTIONAL_SEQUENCE_RNN")
def bidirectional_sequence_rnn(ctx: OpContext) -> Prepared:
    """Forward RNN (inputs 1-3, state 4) and backward RNN (5-7, state 8) over one sequence;
    the auxiliary input (9-11) is not implemented."""
    ctx.expect_inputs(9, 12)
    if any(ctx.optional_input(i) is not None for i in range(9, 12)):
        raise ctx.unsupported("the auxiliary input of BIDIRECTIONAL_SEQUENCE_RNN")
    x = ctx.input(0)
    hybrid = ctx.input(1).dtype == "int8"
    int8_inputs = (1, 2, 5, 6) if hybrid else ()
    _float_inputs(ctx, [i for i in range(9) if i not in int8_inputs])
    for i in int8_inputs:
        ctx.expect_dtype(ctx.input(i), "int8")
    scales = {i: F32(ctx.input(i).scale) for i in int8_inputs}
    asymmetric = bool(getattr(ctx.options, "asymmetricQuantizeInputs", False))
    time_major = bool(getattr(ctx.options, "timeMajor", False))
    merge = bool(getattr(ctx.options, "mergeOutputs", False))
    if len(x.shape) != 3:
        raise ctx.invalid(f"input of shape {x.shape}; expected rank 3")
    batch = x.shape[1] if time_major else x.shape[0]
    directions = []
    for first in (1, 5):
        units, n_input = ctx.input(first).shape
        if n_input != x.shape[2]:
            raise ctx.invalid(f"input has {x.shape[2]} features, the weights take {n_input}")
        directions.append((first, _state_tensor(ctx, first + 3, (batch, units)), units))
    act = _activation(ctx)
    resources = ctx.interpreter.resources

    def run(*values):
        steps = _time_steps(values[0], time_major)
        outputs = []
        for reverse, (first, h_tensor, _) in enumerate(directions):
            weights, recurrent, bias = values[first:first + 3]
            cell = (hybrid_rnn_cell(weights, scales[first], recurrent, scales[first + 1], bias,
                                    act, asymmetric) if hybrid
                    else float_rnn_cell(weights, recurrent, bias, act))
            out, h = rnn_sequence(steps, resources.state(h_tensor), cell, reverse=bool(reverse))
            resources.set_state(h_tensor, h)
            outputs.append(_batch_layout(out, time_major))
        return np.concatenate(outputs, axis=-1) if merge else tuple(outputs)

    return _bidirectional_outputs(ctx, x.shape[:-1], [d[2] for d in directions], merge, run)


# -- SVDF ------------------------------------------------------------------------------------


@op("SVDF")
def svdf(ctx: OpContext) -> Prepared:
    """Singular value decomposition filter (TFLite's EvalFloatSVDF / EvalIntegerSVDF). The state
    holds, per batch and filter, the last memory_size feature activations. Each call shifts
    it left by one column, writes weights_feature . x into the last column, and the output of
    unit u is act(sum over its `rank` filters of state . weights_time + bias[u]). (Newer
    TFLite sources shift after the output instead; ai-edge-litert 2.3.0's state tensor holds
    the newest activation last, and the test compares the state tensor itself.)"""
    ctx.expect_inputs(5)
    x, features, times = ctx.input(0), ctx.input(1), ctx.input(2)
    rank = int(getattr(ctx.options, "rank", 0))
    filters, n_input = features.shape
    memory = times.shape[1]
    if rank < 1 or filters % rank or times.shape[0] != filters:
        raise ctx.invalid(f"{filters} filters, weights_time {times.shape} and rank {rank} do "
                          f"not fit")
    units = filters // rank
    bias = ctx.optional_input(3)
    if bias is not None and bias.shape != (units,):
        raise ctx.invalid(f"bias {bias.shape}; expected ({units},)")
    if len(x.shape) != 2 or x.shape[1] != n_input:
        raise ctx.invalid(f"input of shape {x.shape} for {n_input} features")
    batch = x.shape[0]
    state_tensor = _state_tensor(ctx, 4, (batch, memory * filters))
    resources = ctx.interpreter.resources
    if x.dtype == "int8":
        step, out_dtype = _svdf_int8(ctx, state_tensor), "int8"
    elif features.dtype == "int8":
        step, out_dtype = _svdf_hybrid(ctx), "float32"
    else:
        _float_inputs(ctx, range(5))
        step, out_dtype = _svdf_float(ctx), "float32"

    def run(values, w_feature, w_time, b, _):
        old = resources.state(state_tensor).reshape(batch, filters, memory)
        state = np.zeros_like(old)
        state[:, :, :-1] = old[:, :, 1:]  # shift left; the step fills the last column
        out = step(state, values, w_feature, w_time, b, units, rank)
        resources.set_state(state_tensor, state.reshape(batch, filters * memory))
        return out

    return Prepared(run, [ctx.output_spec(0, (batch, units), out_dtype)], foldable=False)


def _svdf_float(ctx: OpContext):
    act = _activation(ctx)

    def step(state, values, w_feature, w_time, b, units, rank):
        state[:, :, -1] = _matmul(values, w_feature)
        per_filter = (state.astype(np.float64) * w_time.astype(np.float64)).sum(axis=2)
        out = per_filter.reshape(len(state), units, rank).sum(axis=2).astype(F32)
        return act(out if b is None else out + b).astype(F32)

    return step


def _svdf_hybrid(ctx: OpContext):
    """EvalHybridSVDF: float input, state and bias; int8 feature and time weights (the time
    weights are dequantized once; TFLite's hybrid path reads no float time weights). Each input
    row is quantized symmetrically, multiplied with the int8 feature weights in int32 and
    scaled by row scale * weight scale into the state."""
    features, times = ctx.input(1), ctx.input(2)
    _float_inputs(ctx, [0, 3])
    ctx.expect_dtype(times, "int8")
    feature_scale, time_scale = F32(features.scale), F32(times.scale)
    act = _activation(ctx)
    from ..kernels import hybrid

    def step(state, values, w_feature, w_time, b, units, rank):
        q, row_scales = hybrid.quantize_symmetric(values)
        acc = q.astype(np.int64) @ w_feature.astype(np.int64).T  # exact int32 dot products
        state[:, :, -1] = acc.astype(F32) * (row_scales * feature_scale)[:, None]
        if not values.any():  # TFLite skips the product for an all-zero input
            state[:, :, -1] = 0
        weights = w_time.astype(F32) * time_scale
        per_filter = (state.astype(np.float64) * weights.astype(np.float64)).sum(axis=2)
        out = per_filter.reshape(len(state), units, rank).sum(axis=2).astype(F32)
        return act(out if b is None else out + b).astype(F32)

    return step


def _svdf_int8(ctx: OpContext, state_tensor):
    """EvalIntegerSVDF: int8 input and feature weights, int16 time weights and state, int32
    bias, int8 output. activation = MBQM(sum (x - x_zp) w_f, s_x s_wf / s_state) clamped to
    int16 (the state is symmetric); out = MBQM(bias + sum state w_t, s_state s_wt / s_out)
    + out_zp clamped to int8. TFLite applies no fused activation on this path."""
    from ..kernels.fixedpoint import mbqm_array, quantize_multiplier

    x, features, times, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.outputs[0]
    state_q = state_tensor.quantization
    bias = ctx.optional_input(3)
    if features.dtype != "int8" or times.dtype != "int16" or state_tensor.dtype != "int16" or \
            out.dtype != "int8" or (bias is not None and bias.dtype != "int32"):
        raise ctx.unsupported("integer SVDF needs int8 input, feature weights and output, "
                              "int16 time weights and state, and an int32 bias")
    if getattr(ctx.options, "fusedActivationFunction", NONE) != RELU:
        raise ctx.unsupported("integer SVDF without a RELU activation (TFLite requires RELU)")
    if state_q is None or state_q.zero_point.size != 1 or int(state_q.zero_point[0]) != 0:
        raise ctx.invalid("the int16 state must be symmetric (zero point 0), as TFLite assumes")
    f32 = np.float32
    # the products are float32 in TFLite's Prepare, then widened to double
    scale_1 = f32(f32(x.scale) * f32(features.scale)) / f32(state_q.scale[0])
    scale_2 = f32(f32(state_q.scale[0]) * f32(times.scale)) / f32(out.quantization.scale[0])
    m1, s1 = quantize_multiplier(float(scale_1))
    m2, s2 = quantize_multiplier(float(scale_2))
    x_zp, out_zp = x.zero_point, int(out.quantization.zero_point[0])

    def step(state, values, w_feature, w_time, b, units, rank):
        acc = (values.astype(np.int64) - x_zp) @ w_feature.astype(np.int64).T
        state[:, :, -1] = np.clip(mbqm_array(acc, m1, s1), -32768, 32767)
        per_filter = (state.astype(np.int64) * w_time.astype(np.int64)).sum(axis=2)
        total = per_filter.reshape(len(state), units, rank).sum(axis=2)
        if b is not None:
            total = total + b
        total = ((total + 2**31) & 0xFFFFFFFF) - 2**31  # int32 accumulators wrap as in C
        return np.clip(mbqm_array(total, m2, s2) + out_zp, -128, 127).astype(np.int8)

    return step
