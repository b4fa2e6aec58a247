"""TFLite's time per op type, measured one op at a time.

The ai-edge-litert Python API has no op profiler (no profiling entry point on `Interpreter`;
`experimental_force_delegate_node_profiling` writes nowhere Python can read), so TFLite's side of
the per-op-type breakdown is measured by cutting the model apart: every op of the main graph
becomes a one-op model whose constant inputs stay constants (and inputs computed from constants
alone, such as float16 weights behind DEQUANTIZE, become float32 constants, as TFLite's XNNPACK
delegate folds them), whose other inputs are graph inputs fed the values the op sees in a whole
run, and which TFLite runs with the same resolver and thread count as the whole model.

Each one-op figure includes one `invoke` of overhead (a few microseconds) and misses what
XNNPACK gains across ops (activation fusion, layout reuse), so the sum over ops is printed next
to the whole-model time as a check on the method.
"""

from __future__ import annotations

import numpy as np

import qengine
from qengine.cli_common import generated_inputs, set_tflite_inputs
from qengine.ir import Model, Operator, Subgraph, Tensor

# Ops left out: they run other subgraphs or state that a one-op model does not have.
SKIPPED = {"WHILE", "IF", "CALL_ONCE", "CALL", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}


def _constant_copy(t: Tensor, value: np.ndarray) -> Tensor:
    c = Tensor(t.name, tuple(value.shape), t.dtype, quantization=t.quantization)
    c.data = value
    c.shape = tuple(value.shape)  # keeps 0-d constants 0-d (the data setter stores them as (1,))
    return c


def one_op_models(path) -> list[tuple[str, bytes, list[np.ndarray]]]:
    """(op type, one-op .tflite bytes, its runtime inputs) for every op of the main graph that
    runs per inference in qengine (ops folded at prepare, e.g. DEQUANTIZE of constant weights,
    are left out: XNNPACK folds them too)."""
    model = qengine.load(path)
    interpreter = qengine.Interpreter(model)
    plan = interpreter._plan(0)
    inputs = generated_inputs(model.main.inputs, 0, quiet=True)
    values = plan.run(list(inputs), keep=True)
    derived = set(plan.constants) | set(plan.folded)  # slots known before any input arrives
    cases = []
    for index, op in enumerate(model.main.operators):
        if plan.steps[index].folded or op.type in SKIPPED or op.mutating_variable_inputs:
            continue
        graph_inputs, feeds, op_inputs = [], [], []
        for t in op.inputs:
            if t is None:
                op_inputs.append(None)
                continue
            slot = plan.slot[id(t)]
            if t.is_constant:
                op_inputs.append(t)
            elif slot in derived:
                op_inputs.append(_constant_copy(t, values[slot]))
            else:
                op_inputs.append(t)
                if all(t is not g for g in graph_inputs):
                    graph_inputs.append(t)
                    feeds.append(values[slot])
        one = Operator(op.opcode, op_inputs, list(op.outputs), op.options, op.options2,
                       op.custom_options, op.custom_options_format,
                       intermediates=list(op.intermediates))
        sub = Subgraph(inputs=graph_inputs, outputs=list(op.outputs), operators=[one])
        cases.append((op.type, Model(subgraphs=[sub]).to_bytes(), feeds))
    return cases


def tflite_op_times(path, threads: int, resolver: str, time_ms) -> dict[str, float]:
    """Milliseconds per op type: the sum over that type's ops of TFLite's time for the op alone.
    `time_ms(fn)` times one call of fn (e.g. the median of several)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    totals: dict[str, float] = {}
    for op_type, content, feeds in one_op_models(path):
        tfl = Interpreter(model_content=content, num_threads=threads,
                          experimental_op_resolver_type=getattr(OpResolverType, resolver))
        set_tflite_inputs(tfl, feeds, allocate=True)  # resized to the op's run-time shapes
        totals[op_type] = totals.get(op_type, 0.0) + time_ms(tfl.invoke)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))
