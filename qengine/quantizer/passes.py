"""Small graph rewrites the quantization modes share."""

from __future__ import annotations

import numpy as np

from ..ir import Model


def fold_constant_dequantize(model: Model) -> None:
    """DEQUANTIZE(float16 constant) -> a float32 constant: fp16 weights count as float weights."""
    for graph in model.subgraphs:
        kept = []
        for op in graph.operators:
            source = op.inputs[0] if op.inputs else None
            if op.type == "DEQUANTIZE" and source is not None and source.is_constant and \
                    source.dtype == "float16":
                out = op.outputs[0]
                out.data = source.data.astype(np.float32)
            else:
                kept.append(op)
        graph.operators = kept
        graph.prune()
