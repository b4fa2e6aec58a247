"""Small graph rewrites the quantization modes share."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidModelError
from ..ir import Model, Operator


class _Where:
    """Error context for densify_tensor outside the interpreter."""

    def __init__(self, op: Operator):
        self.op = op

    def invalid(self, message: str) -> InvalidModelError:
        return InvalidModelError(f"{self.op.opcode.display} {self.op.outputs[0].name!r}: "
                                 f"{message}")


def fold_constant_weights(model: Model) -> None:
    """Fold DENSIFY(sparse constant) and DEQUANTIZE(float16 constant) into float constants.

    The converter stores weights as float16 and/or sparse constants expanded by these ops at
    load; quantizing treats the expanded values as the model's float weights.
    """
    from ..ops.quantization import DENSIFY, DEQUANTIZE, densify_tensor

    for graph in model.subgraphs:
        kept = []
        for op in graph.operators:
            source = op.inputs[0] if op.inputs else None
            if source is None or not source.is_constant:
                kept.append(op)
            elif op.type == DENSIFY and source.sparsity is not None:
                op.outputs[0].data = densify_tensor(_Where(op), source)
            elif op.type == DEQUANTIZE and source.dtype == "float16":
                op.outputs[0].data = source.data.astype(np.float32)
            else:
                kept.append(op)
        graph.operators = kept
        graph.prune()


def fuse_activations(model: Model, keep_float=frozenset()) -> int:
    """Fold each RELU, RELU6 or RELU_N1_TO_1 into the op writing its input, as TensorFlow's
    converter does, by the interpreter's own rule (`runtime.fusion.fold_activations`): the
    op can clamp its own output and nothing else reads the value. Returns how many were
    folded. Before calibration: the float graph computes the same values.

    Quantized, the folded op requantizes once instead of twice, and the graph stays whole for
    TFLite's XNNPACK delegate, which left each standalone int8 RELU of qengine's files to the
    builtin kernels: 17 RELUs split int8 face_detection_short_range into 18 delegated parts,
    5.5 ms a run in TFLite's default interpreter, 1.25 ms folded. Ops named in keep_float
    (types, output names or patterns, as `quantize(keep_float=...)` matches them) are left
    apart."""
    from ..runtime.fusion import fold_activations
    from .int8 import kept_float

    return sum(fold_activations(graph, lambda op: kept_float(op, keep_float))
               for graph in model.subgraphs)
