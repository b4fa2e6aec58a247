"""Full-integer quantization: a float model plus calibration statistics -> an int8 model.

Per the TFLite 8-bit spec: activations int8 asymmetric per tensor; weights int8 symmetric in
[-127, 127], per channel on the op's output-channel axis; biases int32 with scale
input_scale * weight_scale and zero point 0. Ops TFLite has no int8 kernel for stay float,
with DEQUANTIZE before and QUANTIZE after them.

The pass walks the ops in order. Every float activation `t` of the original graph may end up
with an integer version (`as_int[t]`), a float version (`as_float[t]`) or both; conversion
ops are inserted lazily, only where a consumer needs the other representation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..calibrate import choose_qparams
from ..errors import QuantizationError
from ..ir import Model, OpCode, Operator, Quantization, Tensor, verify
from .weights import affine_constant, bias_int32, symmetric_weights

# How each op's int8 output parameters are chosen. Versions are the converter's for int8 where
# TFLite's reference resolver registers them; PRELU, SQUEEZE, DEPTH_TO_SPACE, RELU_N1_TO_1 and
# ELU stay at 1, the highest version BUILTIN_REF knows (kernels dispatch on types, not versions).
REQUANT, SAME, FIXED, SHARED = "requant", "same", "fixed", "shared"


@dataclass(frozen=True)
class Rule:
    output: str  # REQUANT: from its own statistics; SAME: the input's; FIXED; SHARED: inputs too
    version: int  # the op version TFLite's converter writes for the int8 kernel
    weights: tuple = ()  # (input index, axis) of filters to quantize symmetric per channel
    bias: int | None = None  # input index of the bias
    fixed: tuple[float, int] | None = None


_CONV = dict(weights=((1, 0),), bias=2)
RULES = {
    "CONV_2D": Rule(REQUANT, 3, **_CONV),
    "DEPTHWISE_CONV_2D": Rule(REQUANT, 3, weights=((1, 3),), bias=2),
    "FULLY_CONNECTED": Rule(REQUANT, 4, **_CONV),
    "TRANSPOSE_CONV": Rule(REQUANT, 3, weights=((1, 0),), bias=3),
    "BATCH_MATMUL": Rule(REQUANT, 2),
    "ADD": Rule(REQUANT, 2),
    "SUB": Rule(REQUANT, 2),
    "MUL": Rule(REQUANT, 2),
    "SQUARED_DIFFERENCE": Rule(REQUANT, 2),
    "MEAN": Rule(REQUANT, 2),
    "SUM": Rule(REQUANT, 2),
    "HARD_SWISH": Rule(REQUANT, 1),
    "LEAKY_RELU": Rule(REQUANT, 2),
    "PRELU": Rule(REQUANT, 1),
    "RELU": Rule(REQUANT, 2),
    "RELU6": Rule(REQUANT, 2),
    "RELU_N1_TO_1": Rule(REQUANT, 1),
    "ELU": Rule(REQUANT, 1),
    "SOFTMAX": Rule(FIXED, 2, fixed=(1 / 256, -128)),
    "LOGISTIC": Rule(FIXED, 2, fixed=(1 / 256, -128)),
    "TANH": Rule(FIXED, 2, fixed=(1 / 128, 0)),
    "L2_NORMALIZATION": Rule(FIXED, 2, fixed=(1 / 128, 0)),
    "LOG_SOFTMAX": Rule(FIXED, 2, fixed=(16 / 256, 127)),
    "AVERAGE_POOL_2D": Rule(SAME, 2),
    "MAX_POOL_2D": Rule(SAME, 2),
    "RESHAPE": Rule(SAME, 1),
    "SQUEEZE": Rule(SAME, 1),
    "EXPAND_DIMS": Rule(SAME, 1),
    "TRANSPOSE": Rule(SAME, 2),
    "STRIDED_SLICE": Rule(SAME, 2),
    "SLICE": Rule(SAME, 2),
    "GATHER": Rule(SAME, 2),
    "PAD": Rule(SAME, 2),
    "PADV2": Rule(SAME, 2),
    "MIRROR_PAD": Rule(SAME, 2),
    "RESIZE_BILINEAR": Rule(SAME, 2),
    "RESIZE_NEAREST_NEIGHBOR": Rule(SAME, 2),
    "DEPTH_TO_SPACE": Rule(SAME, 1),
    "SPACE_TO_DEPTH": Rule(SAME, 2),
    "BATCH_TO_SPACE_ND": Rule(SAME, 2),
    "SPACE_TO_BATCH_ND": Rule(SAME, 2),
    "SPLIT": Rule(SAME, 2),
    "SPLIT_V": Rule(SAME, 2),
    "UNPACK": Rule(SAME, 2),
    "TILE": Rule(SAME, 2),
    "BROADCAST_TO": Rule(SAME, 2),
    "REDUCE_MAX": Rule(SAME, 2),
    "REDUCE_MIN": Rule(SAME, 2),
    "CONCATENATION": Rule(SHARED, 2),
    "PACK": Rule(SHARED, 2),
    "MAXIMUM": Rule(SHARED, 2),
    "MINIMUM": Rule(SHARED, 2),
}
# Ops that read only the shape of their float input, so any dtype will do.
SHAPE_ONLY = {"SHAPE", "RANK"}


@dataclass
class Int8Options:
    inference_type: str = "int8"  # the model's interface: int8, uint8 or float32
    per_channel: bool = True
    strict: bool = False
    keep_float: frozenset = frozenset()  # op output names (or op types) to leave in float


def quantize_int8(model: Model, stats: dict, options: Int8Options) -> Model:
    """Rewrite `model` (a copy the caller owns) in place and return it."""
    if options.inference_type not in ("int8", "uint8", "float32"):
        raise QuantizationError(f"inference_type must be int8, uint8 or float32, not "
                                f"{options.inference_type!r}")
    if len(model.subgraphs) > 1:
        raise QuantizationError("models with several subgraphs (control flow) cannot be "
                                "quantized to int8 yet")
    _Pass(model, stats, options).run()
    verify(model)
    return model


class _Pass:
    def __init__(self, model: Model, stats: dict, options: Int8Options):
        self.model, self.graph, self.stats, self.options = model, model.main, stats, options
        self.as_int: dict[int, Tensor] = {}
        self.as_float: dict[int, Tensor] = {}
        self.ops: list[Operator] = []  # the rewritten op list
        self.consumers = self.graph.consumers()
        self.outputs = {id(t) for t in self.graph.outputs}

    # -- driver --------------------------------------------------------------------------------

    def run(self) -> None:
        quantized = [self._quantizable(op) for op in self.graph.operators]
        if self.options.strict:
            self._refuse_float_ops(quantized)
        self._bind_graph_inputs()
        for op, rule in zip(self.graph.operators, quantized):
            if rule is None:
                self._float_op(op)
            else:
                self._int_op(op, rule)
        self._bind_graph_outputs()
        self.graph.operators = self.ops
        self.graph.prune()

    def _quantizable(self, op: Operator) -> Rule | None:
        rule = RULES.get(op.type)
        if rule is None or op.type in self.options.keep_float or any(
                t.name in self.options.keep_float for t in op.outputs if t is not None):
            return None
        floats = [t for t in op.inputs + op.outputs if t is not None and t.dtype == "float32"]
        if not floats:
            return None
        for index, _axis in rule.weights:
            if index >= len(op.inputs) or op.inputs[index] is None or \
                    not op.inputs[index].is_constant:
                return None  # a computed filter: leave the op in float
        return rule

    def _refuse_float_ops(self, quantized) -> None:
        left = [f"op {i} {op.opcode.display} (output {op.outputs[0].name!r})"
                for i, (op, rule) in enumerate(zip(self.graph.operators, quantized))
                if rule is None and op.type not in SHAPE_ONLY and _has_float(op)]
        if left:
            raise QuantizationError(
                f"strict int8: {len(left)} op(s) have no int8 kernel in TFLite and would stay "
                f"float: " + "; ".join(left))

    # -- interface -----------------------------------------------------------------------------

    def _bind_graph_inputs(self) -> None:
        kind = self.options.inference_type
        for t in self.graph.inputs:
            if t.dtype != "float32":
                continue
            if kind == "float32":
                self.as_float[id(t)] = t
                continue
            scale, zero_point = self._qparams(t)
            if kind == "int8":
                _make_int(t, "int8", scale, zero_point)
                self.as_int[id(t)] = t
            else:  # uint8 input, requantized to int8 by a QUANTIZE op: zero point + 128
                _make_int(t, "uint8", scale, zero_point + 128)
                inner = self._new(t.name + "_int8", t.shape, "int8",
                                  Quantization.per_tensor(scale, zero_point), like=t)
                self.ops.append(Operator(OpCode("QUANTIZE", 1), [t], [inner]))
                self.as_int[id(t)] = inner

    def _bind_graph_outputs(self) -> None:
        kind = self.options.inference_type
        outputs = []
        for t in self.graph.outputs:
            if id(t) not in self.as_int and id(t) not in self.as_float:
                outputs.append(t)  # an integer tensor the pass did not touch
            elif kind == "float32":
                outputs.append(self._float_output(t))
            elif kind == "int8":
                outputs.append(self._int(t))
            else:
                source = self._int(t)
                q = source.quantization
                out = self._new(t.name + "_uint8", t.shape, "uint8", Quantization.per_tensor(
                    float(q.scale[0]), int(q.zero_point[0]) + 128), like=t)
                self.ops.append(Operator(OpCode("QUANTIZE", 1), [source], [out]))
                outputs.append(out)
        _retarget_signatures(self.model, self.graph.outputs, outputs)
        self.graph.outputs = outputs

    def _float_output(self, t: Tensor) -> Tensor:
        if id(t) in self.as_float:
            return self.as_float[id(t)]
        # keep the user-visible name on the float output; the int8 tensor gets a suffix
        name = t.name
        t.name = name + "_int8"
        out = self._new(name, t.shape, "float32", None, like=t)
        self.ops.append(Operator(OpCode("DEQUANTIZE", 2), [t], [out]))
        self.as_float[id(t)] = out
        return out

    # -- ops -----------------------------------------------------------------------------------

    def _float_op(self, op: Operator) -> None:
        for i, t in enumerate(op.inputs):
            if t is not None and (id(t) in self.as_int or id(t) in self.as_float):
                op.inputs[i] = t if op.type in SHAPE_ONLY else self._float(t)
        self.ops.append(op)
        for t in op.outputs:
            if t is not None and t.dtype == "float32":
                self.as_float[id(t)] = t

    def _int_op(self, op: Operator, rule: Rule) -> None:
        weights = dict(rule.weights)
        for i, t in enumerate(op.inputs):
            if t is None or i == rule.bias or (t.dtype != "float32" and id(t) not in self.as_int
                                               and id(t) not in self.as_float):
                continue
            if i in weights:
                op.inputs[i] = self._weights(op, t, weights[i])
            elif t.is_constant:
                op.inputs[i] = self._constant(t)
            else:
                op.inputs[i] = self._int(t)
        if rule.bias is not None:
            self._bias(op, rule)
        if rule.output == SHARED:
            self._share_params(op)
        else:
            for t in op.outputs:
                if t is not None and t.dtype == "float32":
                    self._set_output(op, rule, t)
        op.opcode = OpCode(op.type, max(rule.version, op.opcode.version))
        self.ops.append(op)

    def _set_output(self, op: Operator, rule: Rule, t: Tensor) -> None:
        if rule.output == FIXED:
            scale, zero_point = rule.fixed
        elif rule.output == SAME:  # the data input: the first quantized one (SPLIT's is 1)
            q = next(x.quantization for x in op.inputs if x is not None and x.dtype == "int8")
            scale, zero_point = float(q.scale[0]), int(q.zero_point[0])
        else:
            scale, zero_point = self._qparams(t)
        _make_int(t, "int8", scale, zero_point)
        self.as_int[id(t)] = t

    def _share_params(self, op: Operator) -> None:
        """CONCATENATION and friends copy bytes: inputs and output need one scale and zp."""
        out = op.outputs[0]
        scale, zero_point = self._qparams(out)
        _make_int(out, "int8", scale, zero_point)
        self.as_int[id(out)] = out
        target = Quantization.per_tensor(scale, zero_point)
        for i, t in enumerate(op.inputs):
            if t is None or t.dtype != "int8" or _same_params(t.quantization, target):
                continue
            if self._can_retarget(t):
                t.quantization = Quantization.per_tensor(scale, zero_point)
            else:
                fixed = self._new(t.name + "_requantized", t.shape, "int8",
                                  Quantization.per_tensor(scale, zero_point), like=t)
                self.ops.append(Operator(OpCode("QUANTIZE", 1), [t], [fixed]))
                op.inputs[i] = fixed

    def _can_retarget(self, t: Tensor) -> bool:
        """A tensor only this op reads, written by an op that may choose its output scale."""
        producer = next((op for op in self.ops if t in op.outputs), None)
        return (producer is not None and RULES.get(producer.type, Rule(SAME, 1)).output
                == REQUANT and len(self.consumers.get(id(t), [])) == 1
                and id(t) not in self.outputs and not t.is_constant)

    # -- constants -----------------------------------------------------------------------------

    def _weights(self, op: Operator, w: Tensor, axis: int) -> Tensor:
        value = w.data.astype(np.float32)
        if not 0 <= axis < value.ndim:
            raise QuantizationError(f"{op.opcode.display} filter {w.name!r} has rank "
                                    f"{value.ndim}; cannot quantize along axis {axis}")
        q, quant = symmetric_weights(value, axis if self.options.per_channel else None)
        if not self.options.per_channel:
            quant.axis = 0
        return self._new_constant(w.name, q, quant)

    def _bias(self, op: Operator, rule: Rule) -> None:
        x, w = op.inputs[0], op.inputs[rule.weights[0][0]]
        if op.type == "TRANSPOSE_CONV":
            x = op.inputs[2]
        channels = w.quantization.scale.size if w.quantization.scale.size > 1 else \
            w.shape[rule.weights[0][1]]
        index = rule.bias
        bias = op.inputs[index] if index < len(op.inputs) else None
        if bias is None and op.type in ("FULLY_CONNECTED", "TRANSPOSE_CONV"):
            return  # optional for these kernels
        values = np.zeros(channels, np.float32) if bias is None else \
            bias.data.astype(np.float32).reshape(-1)
        if bias is not None and not bias.is_constant:
            raise QuantizationError(f"{op.opcode.display} bias {bias.name!r} is not constant")
        weight_scales = w.quantization.scale
        if weight_scales.size == 1:
            weight_scales = np.repeat(weight_scales, channels)
        q, quant = bias_int32(values, x.scale, weight_scales)
        name = bias.name if bias is not None else op.outputs[0].name + "_bias"
        tensor = self._new_constant(name, q, quant)
        while len(op.inputs) <= index:
            op.inputs.append(None)
        op.inputs[index] = tensor

    def _constant(self, t: Tensor) -> Tensor:
        q, quant = affine_constant(t.data.astype(np.float32))
        return self._new_constant(t.name, q, quant)

    def _new_constant(self, name: str, value: np.ndarray, quant: Quantization) -> Tensor:
        t = Tensor(name, value.shape, str(value.dtype), quantization=quant)
        t.data = value
        return t

    # -- representations -----------------------------------------------------------------------

    def _int(self, t: Tensor) -> Tensor:
        """The int8 version of activation t, quantizing its float version if needed."""
        if id(t) in self.as_int:
            return self.as_int[id(t)]
        scale, zero_point = self._qparams(t)
        q = self._new(t.name + "_int8", t.shape, "int8",
                      Quantization.per_tensor(scale, zero_point), like=t)
        self.ops.append(Operator(OpCode("QUANTIZE", 1), [self.as_float[id(t)]], [q]))
        self.as_int[id(t)] = q
        return q

    def _float(self, t: Tensor) -> Tensor:
        if id(t) in self.as_float:
            return self.as_float[id(t)]
        f = self._new(t.name + "_dequantized", t.shape, "float32", None, like=t)
        self.ops.append(Operator(OpCode("DEQUANTIZE", 2), [self.as_int[id(t)]], [f]))
        self.as_float[id(t)] = f
        return f

    def _new(self, name: str, shape, dtype: str, quant, like: Tensor) -> Tensor:
        t = Tensor(name, shape, dtype, quantization=quant, shape_signature=like.shape_signature)
        self.graph.tensors.append(t)
        return t

    def _qparams(self, t: Tensor) -> tuple[float, int]:
        observer = self.stats.get(t.name)
        if observer is None or not observer.seen:
            raise QuantizationError(
                f"tensor {t.name!r} has no calibration range: the calibration data never "
                f"reached it (check the inputs you pass and the model's control flow)")
        scale, zero_point = choose_qparams(*observer.range(), "int8")
        return float(scale), zero_point


def _make_int(t: Tensor, dtype: str, scale: float, zero_point: int) -> None:
    t.dtype = dtype
    t.quantization = Quantization.per_tensor(scale, zero_point)


def _same_params(q: Quantization | None, target: Quantization) -> bool:
    return q is not None and q.scale.size == 1 and np.float32(q.scale[0]) == np.float32(
        target.scale[0]) and int(q.zero_point[0]) == int(target.zero_point[0])


def _has_float(op: Operator) -> bool:
    return any(t is not None and t.dtype == "float32" and not t.is_constant
               for t in op.inputs + op.outputs)


def _retarget_signatures(model: Model, old: list[Tensor], new: list[Tensor]) -> None:
    mapping = {id(a): b for a, b in zip(old, new)}
    for sig in model.signatures:
        for key, t in sig.outputs.items():
            sig.outputs[key] = mapping.get(id(t), t)
