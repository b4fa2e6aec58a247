"""CALL: run another subgraph of the model on the op's inputs and return its outputs."""

from __future__ import annotations

from ..runtime.registry import OpContext, Prepared
from .opdef import op


@op("CALL")
def call(ctx: OpContext) -> Prepared:
    """TFLite's builtin resolver has no CALL kernel (the converter inlines calls); qengine
    runs the subgraph named by CallOptions.subgraph."""
    index = getattr(ctx.options, "subgraph", None)
    n = len(ctx.interpreter.model.subgraphs)
    if index is None or not 0 < index < n:
        raise ctx.invalid(f"subgraph {index} is not a subgraph of this model (it has {n})")
    sub = ctx.interpreter.model.subgraphs[index]
    if len(sub.inputs) != len(ctx.inputs) or len(sub.outputs) != len(ctx.outputs):
        raise ctx.invalid(f"subgraph {index} takes {len(sub.inputs)} inputs and returns "
                          f"{len(sub.outputs)}; the op has {len(ctx.inputs)} and "
                          f"{len(ctx.outputs)}")
    interpreter = ctx.interpreter

    def run(*values):
        return tuple(interpreter.run_subgraph(index, list(values)))

    return Prepared(run, [ctx.output_spec(i, None) for i in range(len(ctx.outputs))],
                    foldable=False)
