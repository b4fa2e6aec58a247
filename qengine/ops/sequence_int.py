"""The full-integer (8x8_16) UNIDIRECTIONAL_SEQUENCE_LSTM and LSTM: TFLite's Prepare
(PopulateQuantizedLstmParams8x8_16, PopulatePrecomputedZPTimesWeightsWithBias) turned into
the parameters of `kernels.lstm_int.lstm_integer_sequence`.

The op carries five intermediate tensors: the four gate matmul outputs (their scales are used
only with layer norm; without it the gates are Q3.12) and the hidden state o * tanh(c) (its
scale and zero point). Effective scales follow TFLite's float32 / double arithmetic exactly.
"""

from __future__ import annotations

import numpy as np

from ..kernels.fixedpoint import quantize_multiplier
from ..kernels.lstm_int import gemmlowp_int16_table, lstm_integer_sequence
from ..runtime.registry import OpContext, Prepared

F32 = np.float32
GATES = "ifco"  # input, forget, cell, output: the kernel's gate order


def _scale(spec) -> F32:
    return F32(0.0) if spec is None else F32(spec.scale)


def _zero_point(spec) -> int:
    return int(spec.quantization.zero_point[0])


def _cell_scale_log2(ctx: OpContext, scale) -> int:
    """TFLite's CheckedLog2: the cell state scale must be 2^k (to 1e-3 in log2), k <= -9."""
    log2 = F32(np.log(scale)) * (F32(1.0) / F32(np.log(F32(2.0))))
    rounded = F32(np.round(log2))
    if abs(log2 - rounded) >= F32(1e-3) or int(rounded) > -9:
        raise ctx.invalid(f"the int16 cell state scale {scale} must be a power of two of at "
                          f"most 2^-9 (as TFLite requires)")
    return int(rounded)


def _multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in reals]
    return (np.array([m for m, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64))


INPUT_DTYPES = {0: "int8", **{i: "int8" for i in range(1, 9)},  # input, gate weights
                **{i: "int16" for i in (9, 10, 11)}, **{i: "int32" for i in range(12, 16)},
                16: "int8", 17: "int32", 18: "int8", 19: "int16",  # projection, h, c
                **{i: "int16" for i in range(20, 24)}}  # layer-norm coefficients


def _check_dtypes(ctx: OpContext) -> None:
    for i, dtype in INPUT_DTYPES.items():
        spec = ctx.optional_input(i)
        if spec is not None:
            ctx.expect_dtype(spec, dtype)
            if dtype != "int32" and (spec.quantization is None or spec.quantization.scale.size
                                     != 1):
                raise ctx.invalid(f"tensor {spec.name!r} needs per-tensor quantization")
    ctx.expect_dtype(ctx.outputs[0], "int8")


def integer_lstm(ctx: OpContext, sequence: bool, h_tensor, c_tensor, time_major: bool):
    """Prepared for an int8 LSTM; h_tensor / c_tensor are its checked state tensors."""
    layer_norm = ctx.optional_input(21) is not None
    if getattr(ctx.options, "diagonalRecurrentTensors", False):
        raise ctx.unsupported("an integer LSTM with diagonal recurrent weights")
    _check_dtypes(ctx)
    intermediates = ctx.op.intermediates
    if len(intermediates) != 5:
        raise ctx.unsupported(f"an integer LSTM with {len(intermediates)} intermediate tensors "
                              f"(only the 8x8_16 form with 5 is implemented)")
    for t in intermediates[4:] + (intermediates[:4] if layer_norm else []):
        q = t.quantization
        if q is None or q.scale.size != 1:
            raise ctx.invalid(f"intermediate {t.name!r} needs per-tensor quantization")
    x = ctx.input(0)
    for state, dtype in ((h_tensor, "int8"), (c_tensor, "int16")):
        ctx.expect_dtype(state, dtype)
        if state.quantization is None or state.quantization.scale.size != 1:
            raise ctx.invalid(f"state {state.name!r} needs per-tensor quantization")
    spec = {name: ctx.optional_input(i) for i, name in enumerate(
        ["x", "w_i", "w_f", "w_c", "w_o", "r_i", "r_f", "r_c", "r_o", "p_i", "p_f", "p_o",
         "b_i", "b_f", "b_c", "b_o", "proj", "proj_b"])}
    cifg = spec["w_i"] is None
    peephole = spec["p_o"] is not None
    projection = spec["proj"] is not None
    n_cell, n_input = spec["w_f"].shape
    n_output = spec["r_f"].shape[1]
    _check_shapes(ctx, spec, n_cell, n_input, n_output, cifg, peephole, layer_norm)
    if peephole and n_output != n_cell:
        raise ctx.unsupported("an integer LSTM with peepholes and n_output != n_cell (TFLite "
                              "reads the peephole product with the output size)")
    cell_log2 = _cell_scale_log2(ctx, F32(c_tensor.quantization.scale[0]))
    x_scale, h_scale = F32(x.scale), F32(h_tensor.quantization.scale[0])
    x_zp, h_zp = _zero_point(x), _zero_point(h_tensor)
    hidden_q = intermediates[4].quantization
    hidden_scale, hidden_zp = F32(hidden_q.scale[0]), int(hidden_q.zero_point[0])
    gate_scales = [F32(t.quantization.scale[0]) if layer_norm else F32(2.0 ** -12)
                   for t in intermediates[:4]]

    def effective(weight, other_scale, k):  # float32: weight scale * other scale / gate scale
        return F32(F32(_scale(weight) * other_scale) / gate_scales[k]) if weight else F32(1)

    m_in, s_in = _multipliers([effective(spec["w_" + g], x_scale, k) for k, g in
                               enumerate(GATES)])
    m_rec, s_rec = _multipliers([effective(spec["r_" + g], h_scale, k) for k, g in
                                 enumerate(GATES)])
    peep = [F32(2.0 ** cell_log2 * float(_scale(spec["p_" + g])) / float(gate_scales[k]))
            if spec.get("p_" + g) is not None else F32(1) for k, g in enumerate(GATES)]
    m_peep, s_peep = _multipliers(peep)
    ln_scales = [F32(ctx.input(20 + k).scale) if layer_norm and ctx.optional_input(20 + k)
                 is not None else F32(1) for k in range(4)]
    m_ln, s_ln = _multipliers(ln_scales)
    ln_guard = np.array([max(1, int(F32(10000) * s)) for s in ln_scales], np.int64)
    hidden_m, hidden_s = quantize_multiplier(float(F32(2.0 ** -15 / float(hidden_scale)
                                                       * 2.0 ** -15)))
    proj_scale = F32(F32(_scale(spec["proj"]) * hidden_scale) / h_scale)
    proj_m, proj_s = quantize_multiplier(float(proj_scale if projection else F32(1)))
    out_q = ctx.outputs[0].quantization
    if out_q is None or out_q.scale.size != 1:
        raise ctx.invalid("the int8 output needs per-tensor quantization")
    cell_clip = _quantized_clip(ctx, "cellClip", c_tensor.quantization.scale[0], 32767)
    proj_clip = _quantized_clip(ctx, "projClip", out_q.scale[0], 127)
    sigmoid = gemmlowp_int16_table("sigmoid", 3)
    tanh_gate = gemmlowp_int16_table("tanh", 3)
    # TFLite's ApplyTanh(15 + k) does nothing for k < -15 (no format with negative integer
    # bits): its output buffer keeps this step's input gate, which then multiplies o.
    tanh_of_input_gate = cell_log2 < -15
    if tanh_of_input_gate and cifg:
        raise ctx.unsupported(f"a CIFG integer LSTM with cell scale 2^{cell_log2}: TFLite's "
                              f"tanh of the cell state reads uninitialized memory below 2^-15")
    tanh_cell = gemmlowp_int16_table("tanh", max(15 + cell_log2, 0))
    resources = ctx.interpreter.resources

    def weights(values) -> tuple:
        """The kernel's weight arguments (gate order i, f, c, o; absent ones zero)."""
        v = dict(zip(spec, values))
        w_in = _stack([v["w_" + g] for g in GATES], (n_cell, n_input), np.int8)
        w_rec = _stack([v["r_" + g] for g in GATES], (n_cell, n_output), np.int8)
        biases = [None if layer_norm else v["b_" + g] for g in GATES]
        bias_in = np.stack([_zp_bias(w, -x_zp, b) for w, b in zip(w_in, biases)])
        bias_rec = np.stack([_zp_bias(w, -h_zp, None) for w in w_rec])
        peepholes = _stack([v.get("p_" + g) if g != "c" else None for g in GATES], (n_cell,),
                           np.int16)
        ln_w = _stack(list(values[20:24]) if layer_norm else [], (n_cell,), np.int16)
        ln_b = _stack([v["b_" + g] for g in GATES] if layer_norm else [], (n_cell,), np.int32)
        proj_w = v["proj"] if projection else np.zeros((n_output, n_cell), np.int8)
        proj_bias = _zp_bias(proj_w, hidden_zp, v["proj_b"])
        return w_in, w_rec, bias_in, bias_rec, peepholes, ln_w, ln_b, proj_w, proj_bias

    constants = [None if i == 0 or ctx.optional_input(i) is None else ctx.optional_input(i).value
                 for i in range(len(ctx.inputs))]
    fixed = None if any(c is None and ctx.optional_input(i) is not None
                        for i, c in enumerate(constants) if i not in (0, 18, 19)) \
        else weights(constants)  # constant weights: arranged once, here

    def run(*values):
        w_in, w_rec, bias_in, bias_rec, peepholes, ln_w, ln_b, proj_w, proj_bias = \
            fixed or weights(values)
        steps = np.ascontiguousarray(values[0] if not sequence else
                                     values[0] if time_major else values[0].transpose(1, 0, 2))
        if not sequence:
            steps = steps[None]
        h = resources.state(h_tensor).copy()
        c = resources.state(c_tensor).copy()
        out = np.empty(steps.shape[:2] + (n_output,), np.int8)
        lstm_integer_sequence(
            steps, h, c, w_in, w_rec, bias_in, bias_rec, m_in, s_in, m_rec, s_rec, peepholes,
            m_peep, s_peep, peephole, ln_w, ln_b, m_ln, s_ln, ln_guard, layer_norm, cifg,
            sigmoid, tanh_gate, tanh_cell, tanh_of_input_gate, 30 + cell_log2, cell_clip,
            hidden_m, hidden_s, hidden_zp, proj_w, proj_bias, proj_m, proj_s, projection, h_zp,
            proj_clip, out)
        resources.set_state(h_tensor, h)
        resources.set_state(c_tensor, c)
        if not sequence:
            return out[0]
        return np.ascontiguousarray(out if time_major else out.transpose(1, 0, 2))

    shape = (x.shape[:-1] + (n_output,)) if sequence else (x.shape[0], n_output)
    return Prepared(run, [ctx.output_spec(0, shape, "int8")], foldable=False)


def _check_shapes(ctx: OpContext, spec: dict, n_cell: int, n_input: int, n_output: int,
                  cifg: bool, peephole: bool, layer_norm: bool) -> None:
    """Every weight's shape, and the optional groups all-or-none (the kernel indexes them
    without bounds checks)."""
    expected = {**{"w_" + g: (n_cell, n_input) for g in GATES},
                **{"r_" + g: (n_cell, n_output) for g in GATES},
                **{k + g: (n_cell,) for k in ("p_", "b_") for g in GATES},
                "proj": (n_output, n_cell), "proj_b": (n_output,)}
    present = {name for name, s in spec.items() if s is not None}
    required = {"w_f", "w_c", "w_o", "r_f", "r_c", "r_o", "b_f", "b_c", "b_o"} | (
        set() if cifg else {"w_i", "r_i", "b_i"}) | (
        {"p_f", "p_o"} | (set() if cifg else {"p_i"}) if peephole else set())
    forbidden = ({"r_i", "b_i"} if cifg else set()) | (set() if peephole else {"p_i", "p_f"})
    if required - present or forbidden & present:
        raise ctx.invalid(f"inconsistent LSTM inputs: missing {sorted(required - present)}, "
                          f"unexpected {sorted(forbidden & present)}")
    if layer_norm:
        for k, g in enumerate(GATES):
            ln = ctx.optional_input(20 + k)
            if (ln is None) != (g == "i" and cifg) or ln is not None and ln.shape != (n_cell,):
                raise ctx.invalid(f"layer-norm coefficients {g}: expected ({n_cell},)")
    for name in present - {"x"}:
        if spec[name].shape != expected[name]:
            raise ctx.invalid(f"{name} {spec[name].name!r} has shape {spec[name].shape}; "
                              f"expected {expected[name]}")


def _quantized_clip(ctx: OpContext, field: str, scale, limit: int) -> int:
    """TFLite's quantized clip: int(min(max(clip / scale, -limit-1), limit)) in float32; 0 =
    no clipping."""
    clip = F32(getattr(ctx.options, field, 0.0))
    if clip <= 0:
        return 0
    return int(min(max(F32(clip / F32(scale)), F32(-limit - 1)), F32(limit)))


def _stack(arrays, shape, dtype) -> np.ndarray:
    """Four per-gate arrays (absent ones zero) as one [4, *shape] array."""
    arrays = list(arrays) + [None] * (4 - len(arrays))
    return np.stack([np.zeros(shape, dtype) if a is None else np.asarray(a, dtype)
                     for a in arrays])


def _zp_bias(weights, zero_point: int, bias) -> np.ndarray:
    """PrecomputeZeroPointTimesWeightWithBias: bias (or 0) + zero_point * row sums, int32
    arithmetic (wraps as in C)."""
    total = np.zeros(weights.shape[0], np.int64) if bias is None else bias.astype(np.int64)
    total = total + zero_point * weights.astype(np.int64).sum(axis=1)
    return ((total + 2**31) & 0xFFFFFFFF) - 2**31
