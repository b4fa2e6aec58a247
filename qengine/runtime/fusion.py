"""Rewrites of a subgraph for runs that keep no intermediate tensor: fewer passes over memory,
the same values bit for bit. TFLite's default interpreter makes both (its XNNPACK delegate
fuses clamps into their producers and static PADs into convolutions).

- **Activation.** A float RELU, RELU6 or RELU_N1_TO_1 whose input is the only use of the output
  of a float CONV_2D, DEPTHWISE_CONV_2D, ADD, SUB or MUL without a fused activation becomes that
  op's fused activation. Same values: the op's clamp to [-FLT_MAX, FLT_MAX] followed by the
  activation's clamp is the activation's clamp alone, for every float (+-inf end at a bound,
  NaN passes both ways).
- **Padding.** A PAD of a float tensor, by constant non-negative amounts on height and width
  only, whose output is used only as the input of one float CONV_2D or DEPTHWISE_CONV_2D
  (float filter) with VALID padding, disappears: the conv reads the PAD's input with those amounts as its
  own padding (`Operator.fused_padding`, read by `ops.common.geometry`). Same values: the
  float conv kernels multiply a tap in the padding by a row of zeros, the same zeros the PAD
  would have written (a zero times an infinite weight is NaN either way).

`fuse(subgraph)` returns the rewritten subgraph (new Operator objects where an op changes, the
same tensors) and, for each of its ops, the index of the op it came from in the original.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ..ir import Subgraph

ACTIVATIONS = {"RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}  # ActivationFunctionType codes
ACTIVATION_PRODUCERS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL"}
CONVS = {"CONV_2D", "DEPTHWISE_CONV_2D"}
VALID = 1  # Padding.VALID


def fuse(subgraph: Subgraph) -> tuple[Subgraph, list[int]]:
    """(rewritten subgraph, original index of each of its ops); the subgraph itself and the
    identity when nothing fuses."""
    ops = list(subgraph.operators)
    uses = _uses(subgraph)
    dropped: set[int] = set()
    for index, op in enumerate(ops):
        if op.type in ACTIVATIONS:
            _fuse_activation(ops, index, uses, subgraph, dropped)
        elif op.type == "PAD":
            _fuse_padding(ops, index, uses, subgraph, dropped)
    if not dropped:
        return subgraph, list(range(len(ops)))
    kept = [i for i in range(len(ops)) if i not in dropped]
    fused = dataclasses.replace(subgraph, operators=[ops[i] for i in kept])
    return fused, kept


def _uses(subgraph: Subgraph) -> dict[int, list[tuple[int, int]]]:
    """id(tensor) -> [(op index, input position)] of every op input reading it."""
    uses: dict[int, list[tuple[int, int]]] = {}
    for index, op in enumerate(subgraph.operators):
        for position, t in enumerate(op.inputs):
            if t is not None:
                uses.setdefault(id(t), []).append((index, position))
    return uses


def _only_use(t, uses, subgraph: Subgraph) -> tuple[int, int] | None:
    """(op index, input position) of the one op reading t, if t has exactly one reader and is
    not an output of the subgraph."""
    readers = uses.get(id(t), [])
    if len(readers) != 1 or any(t is out for out in subgraph.outputs):
        return None
    return readers[0]


def _producer(ops, t) -> int | None:
    for index, op in enumerate(ops):
        if any(out is t for out in op.outputs):
            return index
    return None


def _fuse_activation(ops, index, uses, subgraph, dropped) -> None:
    act = ops[index]
    x = act.inputs[0] if act.inputs else None
    if x is None or x.dtype != "float32" or len(act.outputs) != 1:
        return
    source = _producer(ops, x)
    if source is None or source in dropped or _only_use(x, uses, subgraph) != (index, 0):
        return
    producer = ops[source]
    if (producer.type not in ACTIVATION_PRODUCERS or len(producer.outputs) != 1
            or producer.options is None
            or getattr(producer.options, "fusedActivationFunction", None) != 0
            or any(t is not None and t.dtype != "float32" for t in producer.inputs)):
        return
    options = copy.copy(producer.options)
    options.fusedActivationFunction = ACTIVATIONS[act.type]
    ops[source] = dataclasses.replace(producer, options=options, outputs=list(act.outputs))
    dropped.add(index)


def _fuse_padding(ops, index, uses, subgraph, dropped) -> None:
    pad = ops[index]
    if len(pad.inputs) != 2 or len(pad.outputs) != 1 or pad.inputs[0] is None:
        return
    x, amounts = pad.inputs
    reader = _only_use(pad.outputs[0], uses, subgraph)
    if (x.dtype != "float32" or amounts is None or not amounts.is_constant or reader is None
            or reader[1] != 0):
        return
    conv = ops[reader[0]]
    if (conv.type not in CONVS or conv.options is None or conv.options.padding != VALID
            or conv.fused_padding is not None or len(conv.inputs) < 2 or conv.inputs[1] is None
            or conv.inputs[1].dtype != "float32"):
        return
    pads = _spatial_padding(amounts.data)
    if pads is None:
        return
    ops[reader[0]] = dataclasses.replace(conv, inputs=[x, *conv.inputs[1:]], fused_padding=pads)
    dropped.add(index)


def _spatial_padding(amounts) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of a PAD's [4, 2] amounts that pad height and width only,
    by non-negative amounts; None otherwise."""
    amounts = np.asarray(amounts)
    if amounts.shape != (4, 2) or amounts.dtype.kind not in "iu":
        return None
    if (amounts < 0).any() or amounts[0].any() or amounts[3].any():
        return None
    (top, bottom), (left, right) = amounts[1].tolist(), amounts[2].tolist()
    return top, bottom, left, right
