"""The calibration-free modes: dynamic range (int8 weights) and float16 weights.

Both follow what TensorFlow's converter writes, so the files look like its own:

- dynamic: the filters of the ops whose definition has `Hybrid` facts (CONV_2D,
  DEPTHWISE_CONV_2D, FULLY_CONNECTED) become int8 symmetric in [-127, 127], per channel on the
  weight's output-channel axis; filters with fewer than 1024 elements, biases and activations
  stay float. FULLY_CONNECTED gets `asymmetric_quantize_inputs` (the converter's default). At run time the kernels quantize
  their float input on the fly ("hybrid" kernels).
- float16: every float32 constant an op reads becomes a float16 constant feeding a DEQUANTIZE
  (version 3), which the runtime folds back to float32 once, at load.
"""

from __future__ import annotations

import numpy as np

from ..ir import Model, OpCode, Operator, Tensor, verify
from ..ops.opdef import definitions
from ..ops.quantization import DEQUANTIZE
from .scheme import Scheme
from .weights import scheme_weights

MIN_ELEMENTS = 1024  # the converter leaves smaller filters in float



def hybrid_ops() -> dict:
    """Op type -> its definition, for the ops with a hybrid (dynamic-range) kernel."""
    return {name: d for name, d in definitions().items()
            if d.hybrid is not None and d.quantized is not None and d.quantized.weight}


def quantize_dynamic(model: Model, per_channel: bool = True,
                     asymmetric_inputs: bool = True) -> Model:
    hybrid = hybrid_ops()
    for graph in model.subgraphs:
        for op in graph.operators:
            if op.type in hybrid:
                _quantize_weight(op, hybrid[op.type], per_channel, asymmetric_inputs)
        graph.prune()
    verify(model)
    return model


def _quantize_weight(op: Operator, definition, per_channel: bool,
                     asymmetric_inputs: bool) -> None:
    facts, weight = definition.hybrid, definition.quantized.weight
    w = op.inputs[weight.input] if weight.input < len(op.inputs) else None
    if w is None or not w.is_constant or w.dtype != "float32" or \
            op.inputs[0].dtype != "float32" or w.data.size < MIN_ELEMENTS:
        return
    channelwise = per_channel or facts.always_per_channel
    scheme = Scheme(granularity="per_channel" if channelwise else "per_tensor")
    q, quant = scheme_weights(w.data, weight.axis, scheme)
    weights = Tensor(w.name, q.shape, "int8", quantization=quant)
    weights.data = q
    op.inputs[weight.input] = weights
    version = facts.per_channel if channelwise else facts.per_tensor
    if facts.asymmetric_inputs is not None:  # FULLY_CONNECTED's asymmetricQuantizeInputs
        op.options.asymmetricQuantizeInputs = asymmetric_inputs
        if asymmetric_inputs and not per_channel:
            version = max(version, facts.asymmetric_inputs)
    op.opcode = OpCode(op.type, max(op.opcode.version, version))


def quantize_float16(model: Model) -> Model:
    for graph in model.subgraphs:
        converted: dict[int, Tensor] = {}
        operators = []
        for op in graph.operators:
            for i, t in enumerate(op.inputs):
                if t is None or not t.is_constant or t.dtype != "float32" or op.type == \
                        DEQUANTIZE:
                    continue
                if id(t) not in converted:
                    converted[id(t)] = _float16_constant(graph, t, operators)
                op.inputs[i] = converted[id(t)]
            operators.append(op)
        graph.operators = operators
        graph.prune()
    verify(model)
    return model


def _float16_constant(graph, t: Tensor, operators: list[Operator]) -> Tensor:
    """fp16 constant -> DEQUANTIZE -> a float32 tensor standing where the constant stood."""
    half = Tensor(t.name + "_fp16", t.shape, "float16")
    half.data = t.data.astype(np.float16)
    upcast = Tensor(t.name, t.shape, "float32")
    graph.tensors.extend([half, upcast])
    operators.append(Operator(OpCode(DEQUANTIZE, 3), [half], [upcast]))
    return upcast
