"""The calibration-free modes: dynamic range (int8 weights) and float16 weights.

Both follow what TensorFlow's converter writes, so the files look like its own:

- dynamic: the filters of CONV_2D (per channel, axis 0), DEPTHWISE_CONV_2D (axis 3) and
  FULLY_CONNECTED (axis 0) become int8 symmetric in [-127, 127]; filters with fewer than 1024
  elements, biases and activations stay float. FULLY_CONNECTED gets
  `asymmetric_quantize_inputs` (the converter's default). At run time the kernels quantize
  their float input on the fly ("hybrid" kernels).
- float16: every float32 constant an op reads becomes a float16 constant feeding a DEQUANTIZE
  (version 3), which the runtime folds back to float32 once, at load.
"""

from __future__ import annotations

import numpy as np

from ..ir import Model, OpCode, Operator, Tensor, verify
from .scheme import Scheme
from .weights import scheme_weights

MIN_ELEMENTS = 1024  # the converter leaves smaller filters in float

# op -> (filter input, per-channel axis, hybrid version per-tensor, per-channel)
HYBRID_OPS = {
    "CONV_2D": (1, 0, 2, 5),
    "DEPTHWISE_CONV_2D": (1, 3, 4, 6),
    "FULLY_CONNECTED": (1, 0, 3, 12),
}
ASYMMETRIC_FC_VERSION = 9  # per-tensor weights with asymmetric input quantization


def quantize_dynamic(model: Model, per_channel: bool = True,
                     asymmetric_inputs: bool = True) -> Model:
    for graph in model.subgraphs:
        for op in graph.operators:
            spec = HYBRID_OPS.get(op.type)
            if spec is None:
                continue
            index, axis, version, channel_version = spec
            w = op.inputs[index] if index < len(op.inputs) else None
            if w is None or not w.is_constant or w.dtype != "float32" or \
                    op.inputs[0].dtype != "float32" or w.data.size < MIN_ELEMENTS:
                continue
            # TFLite's hybrid depthwise kernel reads one scale per channel whatever the file
            # holds, so depthwise filters stay per-channel even when per-tensor is asked for
            channelwise = per_channel or op.type == "DEPTHWISE_CONV_2D"
            scheme = Scheme(granularity="per_channel" if channelwise else "per_tensor")
            q, quant = scheme_weights(w.data, axis, scheme)
            weights = Tensor(w.name, q.shape, "int8", quantization=quant)
            weights.data = q
            op.inputs[index] = weights
            op.opcode = OpCode(op.type, max(op.opcode.version,
                                            channel_version if channelwise else version))
            if op.type == "FULLY_CONNECTED":
                op.options.asymmetricQuantizeInputs = asymmetric_inputs
                if asymmetric_inputs and not per_channel:
                    op.opcode = OpCode(op.type, max(op.opcode.version, ASYMMETRIC_FC_VERSION))
        graph.prune()
    verify(model)
    return model


def quantize_float16(model: Model) -> Model:
    for graph in model.subgraphs:
        converted: dict[int, Tensor] = {}
        operators = []
        for op in graph.operators:
            for i, t in enumerate(op.inputs):
                if t is None or not t.is_constant or t.dtype != "float32" or op.type == \
                        "DEQUANTIZE":
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
    operators.append(Operator(OpCode("DEQUANTIZE", 3), [half], [upcast]))
    return upcast
