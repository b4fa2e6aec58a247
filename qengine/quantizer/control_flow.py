"""WHILE and IF under full-integer quantization: their bodies are quantized like the main graph.

WHILE copies tensors between its inputs, the condition's and the body's inputs, the body's
outputs and its own outputs, byte for byte, at every iteration; IF copies its data inputs into
the branch taken and the branch's outputs into its own. So each such chain of tensors (a
"carried group") must have one scale and zero point: qengine gives it the union of the ranges
calibration saw on its members (at every iteration, qengine.calibrate) and of any constant
member's values. The union is found with a union-find over (subgraph index, tensor), so a body
that passes an input to another output, or a loop nested in a body, merges groups correctly.

A model with CALL, or whose WHILE/IF ops `keep_float` names (e.g. keep_float=["WHILE"]), keeps
the bodies float: every non-init subgraph runs in float, with DEQUANTIZE and QUANTIZE around
the control-flow ops of the main graph. Quantized bodies trade the float bodies' precision for
integer kernels: a loop that grows its carried values N-fold amplifies the initial value's
rounding error N-fold, since the whole chain shares the range of its largest member.
"""

from __future__ import annotations

import numpy as np

from ..calibrate import subgraph_stat_name
from ..errors import InvalidModelError
from ..ir import Model, Operator, Tensor
from ..qparams import choose_qparams

OPS = ("WHILE", "IF")


def quantizes_bodies(model: Model, keep_float=()) -> bool:
    """True when the WHILE/IF bodies are quantized: there is no CALL op, and `keep_float`
    (op types or output names, exact or fnmatch patterns) names no WHILE/IF op."""
    from fnmatch import fnmatchcase

    ops = [op for sub in model.subgraphs for op in sub.operators]
    if not any(op.type in OPS for op in ops) or any(op.type == "CALL" for op in ops):
        return False
    names = [name for op in ops if op.type in OPS
             for name in [op.type] + [t.name for t in op.outputs if t is not None]]
    return not any(name == keep or fnmatchcase(name, keep)
                   for name in names for keep in keep_float)


def unreached_ops(model: Model, stats: dict) -> int:
    """How many ops inside WHILE/IF bodies calibration never ran (e.g. an IF branch no sample
    took): their float outputs have no range, so the bodies cannot be quantized."""
    return sum(1 for index in body_subgraphs(model)
               for op in model.subgraphs[index].operators
               if any(t is not None and t.dtype == "float32" and not getattr(
                   stats.get(subgraph_stat_name(index, t.name)), "seen", False)
                      for t in op.outputs))


def body_subgraphs(model: Model) -> list[int]:
    """Indices of the subgraphs WHILE/IF ops run (conditions, bodies, branches)."""
    found = set()
    for sub in model.subgraphs:
        for op in sub.operators:
            found.update(_links(op))
    return sorted(found)


def data_inputs(op: Operator) -> list[int]:
    """The op's inputs that are copied into its subgraphs (IF: all but the condition)."""
    return list(range(1 if op.type == "IF" else 0, len(op.inputs)))


def _links(op: Operator) -> list[int]:
    names = {"WHILE": ("condSubgraphIndex", "bodySubgraphIndex"),
             "IF": ("thenSubgraphIndex", "elseSubgraphIndex")}.get(op.type, ())
    return [getattr(op.options, name, None) for name in names]


def _check(model: Model, op: Operator) -> None:
    """The subgraph indices exist and the subgraphs take and return what the op copies
    (the interpreter checks the same at prepare; quantizing from saved statistics skips it)."""
    n = len(data_inputs(op))
    for s in _links(op):
        if not isinstance(s, int) or not 0 < s < len(model.subgraphs):
            raise InvalidModelError(f"{op.type}: subgraph {s} is not a subgraph of this model")
        sub = model.subgraphs[s]
        # WHILE: the body returns what it takes (the condition returns one bool); IF: the
        # branches return the op's outputs
        returns = len(op.outputs) if op.type == "IF" else n if s == _links(op)[1] else None
        if len(sub.inputs) != n or returns is not None and len(sub.outputs) != returns:
            raise InvalidModelError(f"{op.type}: subgraph {s} takes {len(sub.inputs)} inputs "
                                    f"and returns {len(sub.outputs)}; the op copies {n} in")


def carried_groups(model: Model) -> list[list[tuple[int, Tensor]]]:
    """The groups of float tensors that must share parameters, as (subgraph index, tensor)."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}
    tensors: dict[tuple[int, int], tuple[int, Tensor]] = {}

    def key(index: int, t: Tensor) -> tuple[int, int]:
        k = (index, id(t))
        tensors[k] = (index, t)
        parent.setdefault(k, k)
        return k

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def join(a, b):
        parent[root(a)] = root(b)

    for index, sub in enumerate(model.subgraphs):
        for op in sub.operators:
            if op.type not in OPS:
                continue
            _check(model, op)
            subs = [model.subgraphs[s] for s in _links(op)]
            for position, i in enumerate(data_inputs(op)):
                t = op.inputs[i]
                if t is None or t.dtype != "float32":
                    continue
                k = key(index, t)
                for s, body in zip(_links(op), subs):
                    join(k, key(s, body.inputs[position]))
                if op.type == "WHILE":  # body output i and WHILE output i carry input i
                    join(k, key(index, op.outputs[position]))
                    body = model.subgraphs[_links(op)[1]]
                    join(k, key(_links(op)[1], body.outputs[position]))
            if op.type == "IF":
                for position, t in enumerate(op.outputs):
                    if t is None or t.dtype != "float32":
                        continue
                    k = key(index, t)
                    for s, branch in zip(_links(op), subs):
                        join(k, key(s, branch.outputs[position]))
    groups: dict = {}
    for k in parent:
        groups.setdefault(root(k), []).append(tensors[k])
    return list(groups.values())


def group_params(model: Model, ranges: dict, act: str) -> dict[str, tuple[float, int]]:
    """(scale, zero point) by statistics name for every member of every carried group, from
    the union of the members' calibrated ranges and constant values. A group none of whose
    members was seen is left out (the pass then reports the missing range)."""
    params = {}
    for group in carried_groups(model):
        lows, highs = [], []
        for index, t in group:
            if t.is_constant:
                data = np.asarray(t.data, np.float64)
                lows.append(float(data.min(initial=0.0)))
                highs.append(float(data.max(initial=0.0)))
            elif subgraph_stat_name(index, t.name) in ranges:
                low, high = ranges[subgraph_stat_name(index, t.name)]
                lows.append(float(low))
                highs.append(float(high))
        if not lows:
            continue
        scale, zero_point = choose_qparams(min(lows), max(highs), act, symmetric=act == "int16")
        for index, t in group:
            params[subgraph_stat_name(index, t.name)] = (float(scale), int(zero_point))
    return params


def by_local_name(stats_keyed: dict, model: Model, index: int) -> dict:
    """The entries of subgraph `index`'s tensors, keyed by their names within the subgraph."""
    if index == 0:
        return stats_keyed
    found = {}
    for t in model.subgraphs[index].all_tensors():
        name = subgraph_stat_name(index, t.name)
        if name in stats_keyed:
            found[t.name] = stats_keyed[name]
    return found
