"""WHILE and IF: ops whose bodies are other subgraphs of the model."""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .opdef import op


def _subgraph_index(ctx: OpContext, name: str) -> int:
    index = getattr(ctx.options, name, None)
    n = len(ctx.interpreter.model.subgraphs)
    if index is None or not 0 < index < n:
        raise ctx.invalid(f"{name} {index} is not a subgraph of this model")
    return index


def _check_arity(ctx: OpContext, index: int, n_inputs: int, n_outputs: int) -> None:
    sub = ctx.interpreter.model.subgraphs[index]
    if len(sub.inputs) != n_inputs or len(sub.outputs) != n_outputs:
        raise ctx.invalid(f"subgraph {index} takes {len(sub.inputs)} inputs and returns "
                          f"{len(sub.outputs)}; the op needs {n_inputs} and {n_outputs}")


@op("WHILE")
def while_loop(ctx: OpContext) -> Prepared:
    cond = _subgraph_index(ctx, "condSubgraphIndex")
    body = _subgraph_index(ctx, "bodySubgraphIndex")
    n = len(ctx.inputs)
    _check_arity(ctx, cond, n, 1)
    _check_arity(ctx, body, n, n)
    interpreter = ctx.interpreter
    limit = interpreter.max_iterations  # a loop that never ends is a broken model

    def run(*values):
        for _ in range(limit):
            if not bool(np.asarray(interpreter.run_subgraph(cond, values)[0]).reshape(-1)[0]):
                return tuple(np.array(v) for v in values)
            values = tuple(interpreter.run_subgraph(body, values))
        raise ctx.invalid(f"the loop did not finish within {limit} iterations (the limit is "
                          f"Interpreter(max_iterations=...), CLI run --max-iterations)")

    specs = [ctx.output_spec(i, None, s.dtype) for i, s in enumerate(ctx.inputs)]
    return Prepared(run, specs, foldable=False)


@op("IF")
def if_then_else(ctx: OpContext) -> Prepared:
    then_index = _subgraph_index(ctx, "thenSubgraphIndex")
    else_index = _subgraph_index(ctx, "elseSubgraphIndex")
    n_out = len(ctx.op.outputs)
    for index in (then_index, else_index):
        _check_arity(ctx, index, len(ctx.inputs) - 1, n_out)
    interpreter = ctx.interpreter

    def run(condition, *values):
        branch = then_index if bool(np.asarray(condition).reshape(-1)[0]) else else_index
        return tuple(interpreter.run_subgraph(branch, values))

    specs = [ctx.output_spec(i, None) for i in range(n_out)]
    return Prepared(run, specs, foldable=False)
