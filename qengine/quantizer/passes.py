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
