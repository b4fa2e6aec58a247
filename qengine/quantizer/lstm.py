"""Full-integer quantization of a float UNIDIRECTIONAL_SEQUENCE_LSTM and LSTM (one step) into
TFLite's 8x8_16 form (the layout TensorFlow's converter writes, which lstm.cc's integer Prepare
reads):

  input, output and output state (input 18): int8, one scale and zero point for the output and
      the state (the state is the previous step's output)
  gate and projection weights: int8 symmetric per tensor (scale max|w| / 127)
  peephole weights: int16 symmetric per tensor (max|p| / 32767)
  gate biases: int32 with scale input_scale * input-weight scale of the gate; the projection
      bias: int32 with scale hidden_scale * projection-weight scale
  cell state (input 19): int16, zero point 0, scale 2^k with 2^(k+15) the calibrated max|c|
      rounded up to a power of two, k clamped to [-15, -9] (TFLite needs k <= -9; below -15
      its cell tanh is a no-op)
  five intermediates: the gate matmul outputs (TFLite reads them only with layer norm: then
      int16 symmetric from the gates' calibrated ranges before layer norm, else Q3.12) and the
      hidden state o * tanh(c): the output's parameters without projection, [-1, 1) (scale
      2^-7) with it
  layer norm: coefficients int16 symmetric (scale s); the gate biases, added to the normalized
      value times 2^10 in TFLite's ApplyLayerNorm, int32 with scale s / 2^10.

The bidirectional op stays float.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Operator, Quantization, Tensor
from ..ops.sequence import gate_statistic
from ..qparams import quantize_symmetric
from .weights import bias_int32

OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM")
VERSION = 1  # op_version.cc: int8 input and weights (the 8x8_16 form) are version 1 for both
GATES = "ifco"
WEIGHTS = {1: "input", 2: "input", 3: "input", 4: "input", 5: "recurrent", 6: "recurrent",
           7: "recurrent", 8: "recurrent", 16: "projection"}
PEEPHOLES = (9, 10, 11)
BIASES = {12: 1, 13: 2, 14: 3, 15: 4}  # gate bias -> its input-weight index
HIDDEN_SCALE_WITH_PROJECTION = 2.0 ** -7


def supported(op: Operator) -> bool:
    """A float LSTM this module can quantize: constant float weights."""
    if op.type not in OPS or len(op.inputs) not in (20, 24) or len(op.outputs) != 1:
        return False
    if getattr(op.options, "kernelType", 0) != 0 or getattr(op.options,
                                                           "diagonalRecurrentTensors", False):
        return False  # LSTM's BASIC kernel and diagonal recurrent weights have other layouts
    constants = [t for t in op.inputs[1:18] + op.inputs[20:24] if t is not None]
    if op.inputs[11] is not None and op.inputs[16] is not None and \
            op.inputs[16].shape[0] != op.inputs[16].shape[1]:
        return False  # peepholes with n_output != n_cell: TFLite's integer kernel misreads them
    return all(t.is_constant and t.dtype == "float32" for t in constants)


def quantize(qpass, op: Operator) -> None:
    """Rewrite `op` in place into the 8x8_16 form; `qpass` is the int8 pass (int8.py)."""
    x = qpass._int(op.inputs[0])
    op.inputs[0] = x
    out = op.outputs[0]
    out_scale, out_zp = qpass._qparams(out)
    _set(out, "int8", out_scale, out_zp)
    qpass.as_int[id(out)] = out
    h_state, c_state = op.inputs[18], op.inputs[19]
    _set(h_state, "int8", out_scale, out_zp)
    _set(c_state, "int16", _cell_scale(qpass, c_state), 0)
    for i in WEIGHTS:
        if op.inputs[i] is not None:
            op.inputs[i] = _symmetric(op.inputs[i], "int8")
    for i in PEEPHOLES:
        if op.inputs[i] is not None:
            op.inputs[i] = _symmetric(op.inputs[i], "int16")
    layer_norm = len(op.inputs) == 24 and op.inputs[21] is not None
    x_scale = float(x.quantization.scale[0])
    for k, (i, weight_index) in enumerate(BIASES.items()):
        if op.inputs[i] is None:
            continue
        if layer_norm:  # the bias belongs to the layer norm: scale coefficient scale / 2^10
            op.inputs[20 + k] = _symmetric(op.inputs[20 + k], "int16")
            op.inputs[i] = _bias(op.inputs[i], 2.0 ** -10, op.inputs[20 + k])
        else:
            op.inputs[i] = _bias(op.inputs[i], x_scale, op.inputs[weight_index])
    projection = op.inputs[16] is not None
    hidden = (HIDDEN_SCALE_WITH_PROJECTION, 0) if projection else (out_scale, out_zp)
    if projection and op.inputs[17] is not None:
        op.inputs[17] = _bias(op.inputs[17], hidden[0], op.inputs[16])
    while len(op.inputs) < 24:
        op.inputs.append(None)
    op.intermediates = [qpass._new(f"{out.name}_{gate}_gate", (), "int16",
                                   Quantization.per_tensor(_gate_scale(qpass, out, gate,
                                                                       layer_norm), 0),
                                   like=out) for gate in GATES]
    op.intermediates.append(qpass._new(f"{out.name}_hidden", (), "int8",
                                       Quantization.per_tensor(*hidden), like=out))
    op.opcode = type(op.opcode)(op.type, VERSION)
    qpass.ops.append(op)


def _set(t: Tensor, dtype: str, scale: float, zero_point: int) -> None:
    t.dtype = dtype
    t.quantization = Quantization.per_tensor(float(scale), int(zero_point))


def _cell_scale(qpass, c_state: Tensor) -> float:
    """2^k: the calibrated max|c| rounded up to a power of two, over 2^15, k in [-15, -9]."""
    seen = qpass.ranges.get(c_state.name)
    bound = max(abs(v) for v in seen) if seen is not None else 1.0
    k = math.ceil(math.log2(max(bound, 2.0 ** -30))) - 15
    return 2.0 ** min(max(k, -15), -9)


def _gate_scale(qpass, out: Tensor, gate: str, layer_norm: bool) -> float:
    """A gate's matmul output scale: Q3.12 without layer norm; with it, max|z| / 32767 of the
    calibrated layer-norm input (Q3.12 for a CIFG's absent input gate)."""
    seen = qpass.ranges.get(gate_statistic(out.name, gate)) if layer_norm else None
    if seen is None:
        return 2.0 ** -12
    bound = max(abs(v) for v in seen)
    return float(np.float32(bound / 32767)) if bound > 0 else 2.0 ** -12


def _symmetric(t: Tensor, dtype: str) -> Tensor:
    """A weight as int8 / int16, zero point 0, scale max|w| / 127 (32767)."""
    q, scale = quantize_symmetric(t.data, dtype)
    out = Tensor(t.name, q.shape, dtype, quantization=Quantization.per_tensor(float(scale), 0))
    out.data = q
    return out


def _bias(t: Tensor, input_scale: float, weights: Tensor) -> Tensor:
    w_scale = weights.quantization.scale
    q, quant = bias_int32(t.data.astype(np.float32), input_scale,
                          np.repeat(w_scale, t.data.size))
    out = Tensor(t.name, q.shape, "int32", quantization=Quantization.per_tensor(
        float(quant.scale[0]), 0))
    out.data = q
    return out
