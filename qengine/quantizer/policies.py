"""Range policies: how the int8/16x8 pass adjusts calibration ranges before choosing
parameters. A Recipe names one (`range_policy`); `choose_params` applies it.

A policy is `(model, {tensor name: (min, max)}, rules) -> {tensor name: (min, max)}`, where
`rules` are the pass's op rules (`Rule.output` tells which ops may pick their output scale).
"""

from __future__ import annotations

from ..ir import Model
from ..ops.opdef import REQUANT
from .scheme import RANGE_POLICY_NAMES


def own_ranges(model: Model, ranges: dict, op_rules: dict) -> dict:
    """qengine's policy: every tensor is quantized on its own calibration range."""
    return ranges


def converter_add_ranges(model: Model, ranges: dict, op_rules: dict) -> dict:
    """TensorFlow's converter's rule: an ADD input (`Quantized.converter_widens_inputs`) read
    only by that ADD and written by an op free to pick its output scale (REQUANT: a residual
    branch's conv, a MUL) is quantized on the union of its own range and the ADD output's.
    (qengine's SQNR on held-out data was lower with it, see the README; it exists to reproduce
    the converter's parameters.)"""
    graph = model.main
    consumers, producers = graph.consumers(), graph.producers()
    outputs = {id(t) for t in graph.outputs}
    adjusted = dict(ranges)
    for op in graph.operators:
        rule = op_rules.get(op.type)
        if rule is None or not rule.facts.converter_widens_inputs or op.outputs[0] is None \
                or op.outputs[0].name not in ranges:
            continue
        out_low, out_high = ranges[op.outputs[0].name]
        for t in op.inputs:
            writer = producers.get(id(t)) if t is not None else None
            rule = op_rules.get(writer.type) if writer is not None else None
            if (rule is None or rule.output != REQUANT or t.name not in ranges
                    or len(consumers.get(id(t), [])) != 1 or id(t) in outputs):
                continue
            low, high = ranges[t.name]
            adjusted[t.name] = (min(low, out_low), max(high, out_high))
    return adjusted


# Recipe.range_policy names one of these: (model, {tensor: (min, max)}, rules) -> ranges
RANGE_POLICIES = {"own": own_ranges, "converter_add": converter_add_ranges}
assert tuple(RANGE_POLICIES) == RANGE_POLICY_NAMES
