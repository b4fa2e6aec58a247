"""Rewrites of a subgraph for runs that keep no intermediate tensor: fewer passes over memory,
the same values bit for bit. TFLite's default interpreter makes both (its XNNPACK delegate
fuses clamps into their producers and static PADs into convolutions).

- **Activation.** A float RELU, RELU6 or RELU_N1_TO_1 whose input is the only use of the output
  of a float CONV_2D, DEPTHWISE_CONV_2D, ADD, SUB or MUL, or of a hybrid (int8 filter) conv,
  without a fused activation becomes that op's fused activation. Same values: the op's clamp
  to [-FLT_MAX, FLT_MAX] followed by the activation's clamp is the activation's clamp alone,
  for every float (+-inf end at a bound, NaN passes both ways).
- **Padding.** A PAD by constant non-negative amounts on height and width only, whose output
  is used only as the input of CONV_2D or DEPTHWISE_CONV_2D ops with VALID padding (one or
  more), disappears: the conv reads the PAD's input with those amounts as its own padding
  (`Operator.fused_padding`, read by `ops.common.geometry`). Float input and filter: the
  float conv kernels multiply a tap in the padding by a row of zeros, the same zeros the PAD
  would have written (a zero times an infinite weight is NaN either way). Quantized input of
  the PAD's own scale and zero point, integer filter (int8, 16x8): the PAD writes the zero
  point, and a quantized conv adds nothing for a tap in the padding, as for (zp - zp) * w.
  Float input, int8 filter (a hybrid conv, which quantizes its input per image): the zeros
  leave the image's range as it was (TFLite's ranges hold 0) and quantize to its zero point,
  adding nothing, except when the image holds a NaN; the op then pads and runs as written
  (`ops.conv_int._unless_nan_unfold`).

- **Residual ADD.** A float ADD of two tensors of one static shape, one of them the only use of
  the output of a float or hybrid (int8 filter) CONV_2D or DEPTHWISE_CONV_2D (its own
  activation any), becomes the conv's epilogue (`Operator.fused_epilogue`): each output tile,
  still in cache, gets v = clamp(v + residual), the residual being the ADD's other operand,
  with the ADD's activation bounds.
  The fused op takes the ADD's place in the order (its residual may be made after the conv).
  A residual that is a PAD appending zero channels (BlazeFace's blocks that widen) is read
  unpadded and the PAD dropped: those channels get v + 0.0, as the ADD computed them. Same
  values: the conv's stored value is the ADD's operand either way, and IEEE addition
  commutes. An activation op after such an ADD folds into that clamp as above.
- **PRELU.** A float PRELU whose slopes vary along channels only, and whose input is the only
  use of the output of a float conv (with or without a folded ADD, without a PRELU yet),
  becomes the last step of the conv's epilogue, in the PRELU's place (float16 slopes behind a
  DEQUANTIZE may be made after the conv): v >= 0 ? v : v * alpha[c], the reference formula on
  the same value.
- **HARD_SWISH.** A float HARD_SWISH whose input is the only use of the output of a float or
  hybrid conv (with or without a folded ADD or PRELU) becomes the epilogue's last step, in its
  place: v * min(6, max(0, v + 3)) / 6, the reference formula on the same value
  (MobileNetV3's blocks: one op's dispatch less, and no pass over memory).

- **Int8 channel padding.** An int8 ADD of a tensor and a PAD appending channels to another
  (BlazeFace's widening blocks; the PAD's only use, its input and output of one scale and
  zero point) reads the PAD's input (`Operator.fused_operand_pad`): the appended channels
  hold the zero point (TFLite's pad.cc without a pad value), so each of their outputs is the
  ADD's table at (value, zero point), `ops.elementwise_int` reading it from one column.

- **Int8 lookups.** An int8 op that maps each value alone (RELU, RELU6, RELU_N1_TO_1,
  RELU_0_TO_1, LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU, ELU, GELU: a 256-entry table) or each
  (value, per-channel slope) pair (PRELU), whose input is the only use of the output of an
  int8 ADD, SUB or MUL, or of an int8 CONV_2D or DEPTHWISE_CONV_2D, folds into it
  (`Operator.fused_lookup`, in the second op's place, its other inputs appended): the
  interpreter prepares both as written and `ops.elementwise_int.fold_lookup` composes their
  tables, one pass instead of two (after a conv: the lookup runs in place on the conv's
  output, one op instead of two). Same values: a table of a table, or the two ops in turn.

`fuse(subgraph)` returns the rewritten subgraph (new Operator objects where an op changes, the
same tensors) and, for each of its ops, the index of the op it came from in the original.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ..ir import Epilogue, Subgraph

ACTIVATIONS = {"RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}  # ActivationFunctionType codes
ACTIVATION_PRODUCERS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL"}
CONVS = {"CONV_2D", "DEPTHWISE_CONV_2D"}
INT8_LOOKUPS = {"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LOGISTIC", "TANH", "HARD_SWISH",
                "LEAKY_RELU", "ELU", "GELU", "PRELU"}
PAIR_TABLES = {"ADD", "SUB", "MUL"}  # int8 ops whose output is a table of their input pairs
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
        elif op.type == "ADD":
            _fuse_residual(ops, index, uses, subgraph, dropped)
            _fuse_operand_pad(ops, index, uses, subgraph, dropped)
        elif op.type == "PRELU":
            _fuse_prelu(ops, index, uses, subgraph, dropped)
        elif op.type == "HARD_SWISH":
            _fuse_hard_swish(ops, index, uses, subgraph, dropped)
        if op.type in INT8_LOOKUPS and index not in dropped:
            _fuse_lookup(ops, index, uses, subgraph, dropped)
    if not dropped:
        return subgraph, list(range(len(ops)))
    kept = [i for i in range(len(ops)) if i not in dropped]
    fused = dataclasses.replace(subgraph, operators=[ops[i] for i in kept])
    return fused, kept


def fold_activations(subgraph: Subgraph, keep=None) -> int:
    """The **Activation** rewrite alone, on the subgraph itself (the full-integer quantizer's
    pass, `quantizer.passes.fuse_activations`, which writes it into the model): returns how
    many activations were folded. `keep(op)` true for the activation or its producer leaves
    the pair apart."""
    ops = list(subgraph.operators)
    uses = _uses(subgraph)
    dropped: set[int] = set()
    for index, op in enumerate(ops):
        if op.type in ACTIVATIONS:
            _fuse_activation(ops, index, uses, subgraph, dropped, keep)
    subgraph.operators = [op for i, op in enumerate(ops) if i not in dropped]
    subgraph.prune()
    return len(dropped)


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


def _fuse_activation(ops, index, uses, subgraph, dropped, keep=None) -> None:
    act = ops[index]
    x = act.inputs[0] if act.inputs else None
    if x is None or x.dtype != "float32" or len(act.outputs) != 1:
        return
    source = _producer(ops, x)
    if source is None or source in dropped or _only_use(x, uses, subgraph) != (index, 0):
        return
    producer = ops[source]
    if keep is not None and (keep(act) or keep(producer)):
        return
    epilogue = producer.fused_epilogue
    if epilogue is not None:  # the clamp of a folded ADD, if nothing comes after it
        if epilogue.prelu or epilogue.residual_activation != 0:
            return
        ops[source] = dataclasses.replace(
            producer, outputs=list(act.outputs),
            fused_epilogue=dataclasses.replace(epilogue, residual_activation=ACTIVATIONS[act.type]))
        dropped.add(index)
        return
    if (producer.type not in ACTIVATION_PRODUCERS or len(producer.outputs) != 1
            or producer.options is None
            or getattr(producer.options, "fusedActivationFunction", None) != 0
            or not _float_or_hybrid(producer)):
        return
    options = copy.copy(producer.options)
    options.fusedActivationFunction = ACTIVATIONS[act.type]
    ops[source] = dataclasses.replace(producer, options=options, outputs=list(act.outputs))
    dropped.add(index)


def _float_or_hybrid(op) -> bool:
    """Every input float32, or a conv with an int8 filter (dynamic range): TFLite's hybrid
    kernels clamp their float results to the fused activation's bounds as the float ones do
    (conv.cc and depthwise_conv.cc EvalHybridPerChannel: CalculateActivationRange)."""
    dtypes = [t.dtype for t in op.inputs if t is not None]
    if op.type in CONVS and len(dtypes) > 1 and dtypes[1] == "int8":
        dtypes.pop(1)
    return all(d == "float32" for d in dtypes)


def _fuse_padding(ops, index, uses, subgraph, dropped) -> None:
    pad = ops[index]
    if len(pad.inputs) != 2 or len(pad.outputs) != 1 or pad.inputs[0] is None:
        return
    x, (padded,) = pad.inputs[0], pad.outputs
    amounts = pad.inputs[1]
    readers = uses.get(id(padded), [])
    if (amounts is None or not amounts.is_constant or not readers
            or any(padded is out for out in subgraph.outputs)):
        return
    pads = _spatial_padding(amounts.data)
    if pads is None or not all(position == 0 and _pads_into(ops[reader], x, padded)
                               for reader, position in readers):
        return
    for reader, _ in readers:  # every reader (pose_detection's PADs feed two convs)
        conv = ops[reader]
        ops[reader] = dataclasses.replace(conv, inputs=[x, *conv.inputs[1:]], fused_padding=pads)
    dropped.add(index)


def _pads_into(conv, x, padded) -> bool:
    """conv can take a PAD of x (into `padded`) as its own padding."""
    return (conv.type in CONVS and conv.options is not None and conv.options.padding == VALID
            and conv.fused_padding is None and len(conv.inputs) >= 2
            and conv.inputs[1] is not None
            and (_float_conv(x, conv) or _hybrid_conv(x, conv)
                 or _quantized_conv(x, padded, conv)))


def _float_conv(x, conv) -> bool:
    """A float input and filter: the PAD writes 0.0, the float kernels multiply a tap in the
    padding by zeros."""
    return x.dtype == "float32" and conv.inputs[1].dtype == "float32"


def _hybrid_conv(x, conv) -> bool:
    """A float input and an int8 filter (dynamic range): the PAD's zeros change neither the
    image's range nor the sums, but for an image holding a NaN, which the op unfolds."""
    return x.dtype == "float32" and conv.inputs[1].dtype == "int8"


def _quantized_conv(x, padded, conv) -> bool:
    """A quantized input (int8, or int16 of 16x8) of the PAD's own scale and zero point, and
    an int8 filter: the PAD writes the zero point (TFLite's pad.cc, without a pad value), and
    a quantized conv's tap in the padding adds (zp - zp) * w = 0, as TFLite skips it."""
    return (x.dtype in ("int8", "int16") and padded.dtype == x.dtype
            and conv.inputs[1].dtype == "int8" and _same_quantization(x, padded))


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


def folded_ops(op) -> list[str]:
    """The types of the ops folded into op's epilogue, in order (`run --profile` names the
    fused op after them: CONV_2D+PAD+ADD+PRELU, ADD+RELU)."""
    if op.fused_lookup is not None or op.fused_operand_pad is not None:
        names = ["PAD"] if op.fused_operand_pad is not None else []
        return names + ([op.fused_lookup.type] if op.fused_lookup is not None else [])
    folded = op.fused_epilogue
    if folded is None:
        return []
    names = []
    if folded.residual_activation is not None:
        names += ["PAD", "ADD"] if folded.residual_pad else ["ADD"]
    if folded.prelu:
        names.append("PRELU")
    if folded.hard_swish:
        names.append("HARD_SWISH")
    return names


def _float_conv_only_feeding(ops, t, index, uses, subgraph, dropped) -> int | None:
    """Index of the CONV_2D/DEPTHWISE_CONV_2D with float input, bias and output (float or
    hybrid: an int8 filter) whose output t is, when op `index` is t's only reader and t is
    not a subgraph output."""
    source, reader = _producer(ops, t), _only_use(t, uses, subgraph)
    if source is None or source in dropped or reader is None or reader[0] != index:
        return None
    conv = ops[source]
    own = conv.inputs[:3]  # input, filter, bias (a folded epilogue's inputs follow)
    if (conv.type not in CONVS or len(conv.outputs) != 1 or len(own) < 2
            or (len(conv.inputs) > 3 and conv.fused_epilogue is None)
            or conv.outputs[0].dtype != "float32" or own[0] is None or own[1] is None
            or own[0].dtype != "float32" or own[1].dtype not in ("float32", "int8")
            or (len(own) == 3 and own[2] is not None and own[2].dtype != "float32")):
        return None
    return source


def _static(t) -> bool:
    return t.shape is not None and all(d > 0 for d in t.shape) and (
        t.shape_signature is None or all(d > 0 for d in t.shape_signature))


def _fuse_residual(ops, index, uses, subgraph, dropped) -> None:
    add = ops[index]
    if (len(add.inputs) != 2 or len(add.outputs) != 1 or any(t is None for t in add.inputs)
            or add.inputs[0] is add.inputs[1] or add.options is None
            or add.options.fusedActivationFunction not in (0, *ACTIVATIONS.values())
            or any(t.dtype != "float32" for t in (*add.inputs, add.outputs[0]))
            or not all(_static(t) and tuple(t.shape) == tuple(add.outputs[0].shape)
                       for t in (*add.inputs, add.outputs[0]))):
        return
    for position in (0, 1):
        source = _float_conv_only_feeding(ops, add.inputs[position], index, uses, subgraph,
                                          dropped)
        if source is None or ops[source].fused_epilogue is not None:
            continue
        # the fused op runs where the ADD did: the residual may be made after the conv (a PAD
        # of the block's input), and nothing but the ADD reads the conv's output
        conv = ops[source]
        bias = conv.inputs[2] if len(conv.inputs) == 3 else None
        residual, pad = add.inputs[1 - position], 0
        padding = _producer(ops, residual)
        if padding is not None and padding not in dropped:
            pad = _channel_padding(ops[padding], residual, index, uses, subgraph)
            if pad:  # the ADD reads PAD(x): x with `pad` zero channels appended
                residual = ops[padding].inputs[0]
                dropped.add(padding)
        epilogue = Epilogue(residual_activation=add.options.fusedActivationFunction,
                            residual_pad=pad)
        ops[index] = dataclasses.replace(
            conv, inputs=[*conv.inputs[:2], bias, residual, None],
            outputs=list(add.outputs), fused_epilogue=epilogue)
        dropped.add(source)
        return


def _fuse_operand_pad(ops, index, uses, subgraph, dropped) -> None:
    add = ops[index]
    if (add.type != "ADD" or len(add.inputs) != 2 or len(add.outputs) != 1
            or any(t is None or t.dtype != "int8" for t in (*add.inputs, add.outputs[0]))
            or add.inputs[0] is add.inputs[1] or add.fused_epilogue is not None
            or add.fused_operand_pad is not None
            or not all(_static(t) and tuple(t.shape) == tuple(add.outputs[0].shape)
                       for t in (*add.inputs, add.outputs[0]))):
        return
    for position in (0, 1):
        padding = _producer(ops, add.inputs[position])
        if padding is None or padding in dropped:
            continue
        pad = ops[padding]
        n = _channel_padding(pad, add.inputs[position], index, uses, subgraph, "int8")
        if n and _same_quantization(pad.inputs[0], add.inputs[position]):
            inputs = list(add.inputs)
            inputs[position] = pad.inputs[0]
            ops[index] = dataclasses.replace(add, inputs=inputs, fused_operand_pad=(position, n))
            dropped.add(padding)
            return


def _same_quantization(a, b) -> bool:
    q, p = a.quantization, b.quantization
    return (q is not None and p is not None and q.scale.size == p.scale.size == 1
            and q.zero_point.size == p.zero_point.size == 1 and q.scale[0] == p.scale[0]
            and q.zero_point[0] == p.zero_point[0])


def _channel_padding(pad, out, reader, uses, subgraph, dtype="float32") -> int:
    """How many channels the PAD op `pad` appends to its input to make `out`, when that is all
    it does (a PAD of `dtype`, constant amounts [[0, 0], [0, 0], [0, 0], [0, n]], n > 0) and
    op `reader` is the only use of `out`; else 0."""
    only = _only_use(out, uses, subgraph)
    if (pad.type != "PAD" or len(pad.inputs) != 2 or pad.inputs[0] is None
            or pad.inputs[1] is None or not pad.inputs[1].is_constant
            or only is None or only[0] != reader):
        return 0
    x, amounts = pad.inputs[0], np.asarray(pad.inputs[1].data)
    if (x.dtype != dtype or not _static(x) or len(x.shape) != 4 or amounts.shape != (4, 2)
            or amounts.dtype.kind not in "iu" or amounts[:3].any() or amounts[3, 0] != 0
            or amounts[3, 1] <= 0):
        return 0
    n = int(amounts[3, 1])
    return n if tuple(x.shape[:3]) == tuple(out.shape[:3]) and x.shape[3] + n == out.shape[3] \
        else 0


def _fuse_prelu(ops, index, uses, subgraph, dropped) -> None:
    prelu = ops[index]
    if len(prelu.inputs) != 2 or len(prelu.outputs) != 1 or any(t is None for t in prelu.inputs):
        return
    x, alpha = prelu.inputs
    if (x.dtype != "float32" or alpha.dtype != "float32" or prelu.outputs[0].dtype != "float32"
            or not _static(x) or not _static(alpha) or not _per_channel(alpha.shape, x.shape)):
        return
    source = _float_conv_only_feeding(ops, x, index, uses, subgraph, dropped)
    epilogue = _epilogue_so_far(ops, source)
    if epilogue is None or epilogue.prelu or epilogue.hard_swish:
        return
    inputs = list(ops[source].inputs) + [None] * (5 - len(ops[source].inputs))
    inputs[4] = alpha
    _fold_into(ops, index, source, dropped, inputs=inputs,
               fused_epilogue=dataclasses.replace(epilogue, prelu=True))


def _fuse_hard_swish(ops, index, uses, subgraph, dropped) -> None:
    act = ops[index]
    if len(act.inputs) != 1 or len(act.outputs) != 1 or act.inputs[0] is None:
        return
    x = act.inputs[0]  # (any shape: the step maps each value alone)
    if x.dtype != "float32" or act.outputs[0].dtype != "float32":
        return
    source = _float_conv_only_feeding(ops, x, index, uses, subgraph, dropped)
    epilogue = _epilogue_so_far(ops, source)
    if epilogue is None or epilogue.hard_swish:
        return
    _fold_into(ops, index, source, dropped,
               fused_epilogue=dataclasses.replace(epilogue, hard_swish=True))


def _epilogue_so_far(ops, source: int | None) -> Epilogue | None:
    """What conv `source` (if any) has folded into its epilogue already (an empty one)."""
    return None if source is None else ops[source].fused_epilogue or Epilogue()


def _fold_into(ops, index, source, dropped, **changes) -> None:
    """Conv `source` with `changes` takes op `index`'s place and outputs; its own is dropped."""
    ops[index] = dataclasses.replace(ops[source], outputs=list(ops[index].outputs), **changes)
    dropped.add(source)


def _fuse_lookup(ops, index, uses, subgraph, dropped) -> None:
    second = ops[index]
    z = second.inputs[0] if second.inputs else None
    if (z is None or second.type not in INT8_LOOKUPS or second.fused_epilogue is not None
            or len(second.outputs) != 1 or z.dtype != "int8" or second.outputs[0].dtype != "int8"
            or any(t is None for t in second.inputs)):
        return
    source = _producer(ops, z)
    if source is None or source in dropped or _only_use(z, uses, subgraph) != (index, 0):
        return
    first = ops[source]
    pair = first.type in PAIR_TABLES and len(first.inputs) == 2 and all(
        t is not None and t.dtype == "int8" for t in first.inputs)
    conv = first.type in CONVS and first.inputs and first.inputs[0] is not None and \
        first.inputs[0].dtype == "int8" and first.fused_epilogue is None
    if not (pair or conv) or first.fused_lookup is not None or len(first.outputs) != 1:
        return
    ops[index] = dataclasses.replace(first, inputs=[*first.inputs, *second.inputs[1:]],
                                     outputs=list(second.outputs), fused_lookup=second)
    dropped.add(source)


def _per_channel(alpha_shape, x_shape) -> bool:
    """Slopes of this shape, broadcast against x, vary along x's last axis only."""
    alpha_shape, x_shape = tuple(alpha_shape), tuple(x_shape)
    if len(alpha_shape) > len(x_shape) or not x_shape:
        return False
    return all(d == 1 for d in alpha_shape[:-1]) and (
        not alpha_shape or alpha_shape[-1] in (1, x_shape[-1]))
