"""Full-integer quantization: a float model plus calibration statistics -> an int8 model, or
a 16x8 one (int16 activations, int8 weights).

Per the TFLite 8-bit spec: activations int8 asymmetric per tensor; weights int8 symmetric in
[-127, 127], per channel on the op's output-channel axis; biases int32 with scale
input_scale * weight_scale and zero point 0. Ops TFLite has no int8 kernel for stay float,
with DEQUANTIZE before and QUANTIZE after them.

16x8 (TFLite's EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8): activations int16
symmetric (zero point 0, scale max|x| / 32767), the same int8 weights, int64 biases, and a
smaller set of ops (RULES_16X8).

The pass walks the ops in order. Every float activation `t` of the original graph may end up
with an integer version (`as_int[t]`), a float version (`as_float[t]`) or both; conversion
ops are inserted lazily, only where a consumer needs the other representation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..builder import options
from ..calibrate import choose_qparams
from ..errors import QuantizationError
from ..ir import Model, OpCode, Operator, Quantization, Tensor, verify
from ..ops.common import filter_types
from . import variables
from .gptq import gptq_round
from .scheme import Recipe, Scheme
from .weights import (
    affine_constant,
    bias_int32,
    fake_quantized_weights,
    round_half_away,
    scheme_weights,
    storage_dtype,
)

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
    "GELU": Rule(REQUANT, 2),
    "EXP": Rule(REQUANT, 2),
    "LOG": Rule(REQUANT, 2),
    "RSQRT": Rule(REQUANT, 2),
    "ABS": Rule(REQUANT, 2),
    # comparisons read two int8 inputs and write bools (no output rule); see _comparable
    "EQUAL": Rule(REQUANT, 2),
    "NOT_EQUAL": Rule(REQUANT, 2),
    "LESS": Rule(REQUANT, 2),
    "LESS_EQUAL": Rule(REQUANT, 2),
    "GREATER": Rule(REQUANT, 2),
    "GREATER_EQUAL": Rule(REQUANT, 2),
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
    # ops that only move int8 values (issue #13): the values keep the input's parameters;
    # index and shape inputs and outputs stay int32
    "TOPK_V2": Rule(SAME, 2),
    "MATRIX_DIAG": Rule(SAME, 1),
    "DILATE": Rule(SHARED, 1),  # the padding value takes the input's parameters
    "DYNAMIC_UPDATE_SLICE": Rule(SHARED, 1),
    "MATRIX_SET_DIAG": Rule(SHARED, 1),
    "SPARSE_TO_DENSE": Rule(SHARED, 3),  # values and default value
    "CONCATENATION": Rule(SHARED, 2),
    "PACK": Rule(SHARED, 2),
    "MAXIMUM": Rule(SHARED, 2),
    "MINIMUM": Rule(SHARED, 2),
}

# 16x8: the ops whose int16 reference kernels qengine reproduces. Versions are op_version.cc's for
# int16 inputs, never below the int8 ones (CONV_2D/DEPTHWISE/FC have no int16 bump without
# quantized_bias_type, TRANSPOSE_CONV none without it either); ADD/SUB carry
# pot_scale_int16 = false, as the converter writes them. Fixed outputs: LOGISTIC/TANH need
# scale 2^-15 and zero point 0 (activations.cc), SOFTMAX zero point 0 and scale 1/32768 (what
# the converter picks). PADV2's pad value takes the output's parameters (pad.cc checks them).
#
# Left float in 16x8 because BUILTIN_REF (ai-edge-litert 2.3.0) has no int16 kernel: HARD_SWISH,
# RELU_N1_TO_1, RELU_0_TO_1, LOG_SOFTMAX, L2_NORMALIZATION, DEPTH_TO_SPACE, SPACE_TO_DEPTH
# (their Prepare/Eval reject int16; the converter refuses them in 16x8 too) and ELU (not
# registered). SQUARED_DIFFERENCE: the converter emits an int16 one, but the kernel rejects it
# at invoke ("only supports FLOAT32 and INT32"), so even the converter's 16x8 model fails.
# SUM: BUILTIN_REF (ai-edge-litert 2.3.0) takes the int16 data through the uint8 path of
# QuantizedMeanOrSum: it sums the first n bytes of the input as uint8 and writes uint8 bytes
# into the int16 output, leaving the other bytes uninitialised, so its output is not a function
# of the input and cannot be matched (crafted inputs showed it; newer LiteRT sources sum int16).
# REDUCE_PROD: BUILTIN_REF runs int16 (the converter emits it), but qengine has no quantized
# REDUCE_PROD kernel yet, int8 or int16.
# EXP, LOG, RSQRT and GELU read 513-entry interpolated tables (LUTPopulate<int16_t> in float32);
# PRELU's alpha is quantized to int8 (affine), because TFLite's int16 kernel reads alpha as int8
# whatever its type; a computed alpha leaves PRELU float. The converter refuses PRELU in 16x8.
INT16_VERSIONS = {
    "ADD": 3, "SUB": 5, "MUL": 4, "MEAN": 3, "SOFTMAX": 3, "LOGISTIC": 3, "TANH": 3,
    "AVERAGE_POOL_2D": 3, "MAX_POOL_2D": 3, "CONCATENATION": 3, "PACK": 3, "TRANSPOSE": 5,
    "PAD": 3, "PADV2": 3, "MIRROR_PAD": 3, "SLICE": 4, "GATHER": 4, "SPLIT": 4, "UNPACK": 4,
    "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4, "BATCH_TO_SPACE_ND": 4,
    "SPACE_TO_BATCH_ND": 4, "MAXIMUM": 4, "MINIMUM": 4, "REDUCE_MAX": 3, "REDUCE_MIN": 3,
    "TRANSPOSE_CONV": 3, "BATCH_MATMUL": 3, "RELU": 3, "RELU6": 3, "LEAKY_RELU": 2,
    "BROADCAST_TO": 3, "ABS": 3, "GELU": 2, "EXP": 2, "LOG": 2, "RSQRT": 2, "PRELU": 1,
}
INT16_FIXED = {"SOFTMAX": (1 / 32768, 0), "LOGISTIC": (1 / 32768, 0), "TANH": (1 / 32768, 0)}
INT16_OPS = set(INT16_VERSIONS) | {
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
    "STRIDED_SLICE", "SPLIT_V", "TILE"}
RULES_16X8 = {name: replace(rule, version=max(rule.version, INT16_VERSIONS.get(name, 0)),
                            fixed=INT16_FIXED.get(name, rule.fixed))
              for name, rule in RULES.items() if name in INT16_OPS}
POT_SCALE_OPTIONS = {"ADD": "AddOptions", "SUB": "SubOptions"}

COMPARISONS = {"EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL"}

# Ops that read only the shape of their float input, so any dtype will do.
SHAPE_ONLY = {"SHAPE", "RANK"}


@dataclass
class Int8Options:
    inference_type: str = "int8"  # the model's interface: int8, uint8 or float32
    per_channel: bool = True
    strict: bool = False
    keep_float: frozenset = frozenset()  # op output names (or op types) to leave in float
    activations: str = "int8"  # "int16": the 16x8 scheme
    recipe: Recipe | None = None  # per-op schemes; None: one scheme from the fields above
    hessians: dict | None = None  # id(op) -> GPTQ's H, for ops whose scheme rounds with GPTQ

    def resolved_recipe(self) -> Recipe:
        if self.recipe is not None:
            return self.recipe
        granularity = "per_channel" if self.per_channel else "per_tensor"
        return Recipe(Scheme(activations=self.activations, granularity=granularity))


def quantize_int8(model: Model, stats: dict, options: Int8Options) -> Model:
    """Rewrite `model` (a copy the caller owns) in place and return it."""
    interfaces = ("int8", "uint8", "float32") if options.activations == "int8" else \
        (options.activations, "float32")
    if options.inference_type not in interfaces:
        raise QuantizationError(f"inference_type must be {', '.join(interfaces)}, not "
                                f"{options.inference_type!r}")
    variables.check_subgraphs(model)  # CALL_ONCE init subgraphs only
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
        self.act = options.activations  # the activation dtype: int8 or int16
        self.rules = RULES if self.act == "int8" else RULES_16X8
        self.recipe = options.resolved_recipe()
        self.scheme = {id(op): self.recipe.scheme_for(op_names(op)) for op in self.graph.operators}
        # a tensor's scale follows the scheme of the op that writes it (graph inputs: default)
        self.tensor_scheme = {id(t): self.scheme[id(op)] for op in self.graph.operators
                              for t in op.outputs if t is not None}
        self.fake_quantized: set[int] = set()  # ops run in float on fake-quantized weights
        self.float16_copies: dict[int, Tensor] = {}  # float constant -> its DEQUANTIZE(float16)
        # resource variables: one scale and zero point per variable for all reads and writes
        self.variables = variables.variable_qparams(model, stats, self.act)
        self.handles = variables.handles(self.graph)

    # -- driver --------------------------------------------------------------------------------

    def run(self) -> None:
        quantized = [self._for_activations(op, self._quantizable(op))
                     for op in self.graph.operators]
        if self.options.strict:
            self._refuse_float_ops(quantized)
        self._bind_graph_inputs()
        for op, rule in zip(self.graph.operators, quantized):
            if self._variable_params(op) is not None:
                self._variable_op(op)
                continue
            if id(op) in self.fake_quantized:
                self._fake_quantize_weights(op)
            if rule is not None and op.type in COMPARISONS and not self._comparable(op):
                rule = None
            if rule is None:
                self._float_op(op)
            else:
                self._int_op(op, rule)
        self._bind_graph_outputs()
        self.graph.operators = self.ops
        self.graph.prune()
        variables.quantize_init_values(self.model, self.variables, self.act)

    def _quantizable(self, op: Operator) -> Rule | None:
        from fnmatch import fnmatchcase

        rule = RULES.get(op.type)
        scheme = self.scheme[id(op)]
        # keep_float entries: op types or output tensor names, exact or fnmatch patterns
        if rule is None or scheme is None or any(
                name == keep or fnmatchcase(name, keep)
                for name in op_names(op) for keep in self.options.keep_float):
            return None
        floats = [t for t in op.inputs + op.outputs if t is not None and t.dtype == "float32"]
        if not floats:
            return None
        for index, _axis in rule.weights:
            if index >= len(op.inputs) or op.inputs[index] is None or \
                    not op.inputs[index].is_constant:
                return None  # a computed filter: leave the op in float
        if rule.weights and not scheme.integer_kernels:
            self.fake_quantized.add(id(op))  # no int8 kernel computes it: float, fake-quant
            return None
        return rule

    def _variable_params(self, op: Operator) -> tuple[float, int] | None:
        """The variable's parameters for a READ_VARIABLE/ASSIGN_VARIABLE of a float variable."""
        if op.type not in ("READ_VARIABLE", "ASSIGN_VARIABLE") or not op.inputs:
            return None
        return self.variables.get(self.handles.get(id(op.inputs[0])))

    def _variable_op(self, op: Operator) -> None:
        """A read gives an integer tensor with the variable's parameters; a write stores its
        value requantized to them (a QUANTIZE op when its parameters differ)."""
        scale, zero_point = self._variable_params(op)
        if op.type == "READ_VARIABLE":
            _make_int(op.outputs[0], self.act, scale, zero_point)
            self.as_int[id(op.outputs[0])] = op.outputs[0]
        else:
            op.inputs[1] = self._int_with(op.inputs[1], scale, zero_point)
        self.ops.append(op)

    def _int_with(self, t: Tensor, scale: float, zero_point: int) -> Tensor:
        """t as an integer tensor with exactly these parameters."""
        target = Quantization.per_tensor(scale, zero_point)
        source = self.as_int.get(id(t)) or self.as_float[id(t)]
        if source.dtype == self.act and _same_params(source.quantization, target):
            return source
        fixed = self._new(f"{t.name}_{self.act}_variable", t.shape, self.act, target, like=t)
        self.ops.append(Operator(OpCode("QUANTIZE", self._quantize_version), [source],
                                 [fixed]))
        return fixed

    def _comparable(self, op: Operator) -> bool:
        """TFLite's int8 comparisons rescale each input by QuantizeMultiplierSmallerThanOne, so
        an input scale of 1 or more (a range over 255 wide, or an all-zero constant) has no
        int8 kernel: such a comparison stays float."""
        def scale(t: Tensor) -> float:
            if id(t) in self.as_int:
                return float(self.as_int[id(t)].quantization.scale[0])
            if t.is_constant:
                return float(affine_constant(t.data.astype(np.float32))[1].scale[0])
            return self._qparams(t)[0]

        return all(scale(t) < 1.0 for t in op.inputs if t is not None)

    def _for_activations(self, op: Operator, rule: Rule | None) -> Rule | None:
        """The rule for this pass's activation dtype (None: TFLite has no such kernel)."""
        if rule is None or self.act == "int8":
            return rule
        if op.type == "PRELU" and not op.inputs[1].is_constant:
            return None  # the int16 kernel needs an int8 alpha, which only a constant gets
        return self.rules.get(op.type)

    def _refuse_float_ops(self, quantized) -> None:
        left = [f"op {i} {op.opcode.display} (output {op.outputs[0].name!r})"
                for i, (op, rule) in enumerate(zip(self.graph.operators, quantized))
                if rule is None and op.type not in SHAPE_ONLY and _has_float(op)
                and self._variable_params(op) is None]
        if left:
            raise QuantizationError(
                f"strict {self._scheme}: {len(left)} op(s) have no {self._scheme} kernel in "
                f"TFLite and would stay float: " + "; ".join(left))

    @property
    def _scheme(self) -> str:
        return "int8" if self.act == "int8" else "16x8"

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
            if kind == self.act:
                _make_int(t, self.act, scale, zero_point)
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
            elif kind == self.act:
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
        # keep the user-visible name on the float output; the integer tensor gets a suffix
        name = t.name
        t.name = f"{name}_{self.act}"
        out = self._new(name, t.shape, "float32", None, like=t)
        self.ops.append(Operator(OpCode("DEQUANTIZE", self._dequantize_version), [t], [out]))
        self.as_float[id(t)] = out
        return out

    # -- ops -----------------------------------------------------------------------------------

    def _float_op(self, op: Operator) -> None:
        for i, t in enumerate(op.inputs):
            if t is not None and (id(t) in self.as_int or id(t) in self.as_float):
                op.inputs[i] = t if op.type in SHAPE_ONLY else self._float(t)
            elif t is not None and _exact_in_float16(t):
                op.inputs[i] = self._from_float16(t)
        self.ops.append(op)
        for t in op.outputs:
            if t is not None and t.dtype == "float32":
                self.as_float[id(t)] = t

    def _int_op(self, op: Operator, rule: Rule) -> None:
        weights = dict(rule.weights)
        float_inputs = list(op.inputs)
        for i, t in enumerate(op.inputs):
            if t is None or i == rule.bias or (t.dtype != "float32" and id(t) not in self.as_int
                                               and id(t) not in self.as_float):
                continue
            if i in weights:
                op.inputs[i] = self._weights(op, t, weights[i])
            elif t.is_constant:  # 16x8 PRELU: TFLite reads alpha as int8
                op.inputs[i] = self._constant(t, int8=op.type == "PRELU")
            else:
                op.inputs[i] = self._int(t)
        if rule.bias is not None:
            self._bias(op, rule)
        if op.type == "PADV2" and len(op.inputs) > 2:
            self._pad_value_like_input(op, float_inputs[2])
        if rule.output == SHARED:
            self._share_params(op)
        else:
            for t in op.outputs:
                if t is not None and t.dtype == "float32":
                    self._set_output(op, rule, t)
        op.opcode = OpCode(op.type, max(rule.version, op.opcode.version))
        if self.act == "int16" and op.type in POT_SCALE_OPTIONS:
            op.options = op.options or options(POT_SCALE_OPTIONS[op.type])
            op.options.potScaleInt16 = False  # the general-scale int16 kernel (add.cc, sub.cc)
        self.ops.append(op)

    def _set_output(self, op: Operator, rule: Rule, t: Tensor) -> None:
        if rule.output == FIXED:
            scale, zero_point = rule.fixed
        elif rule.output == SAME:  # the data input: the first quantized one (SPLIT's is 1)
            q = next(x.quantization for x in op.inputs if x is not None and x.dtype == self.act)
            scale, zero_point = float(q.scale[0]), int(q.zero_point[0])
        else:
            scale, zero_point = self._qparams(t)
        _make_int(t, self.act, scale, zero_point)
        self.as_int[id(t)] = t

    def _share_params(self, op: Operator) -> None:
        """CONCATENATION and friends copy bytes: inputs and output need one scale and zp."""
        out = op.outputs[0]
        scale, zero_point = self._qparams(out)
        _make_int(out, self.act, scale, zero_point)
        self.as_int[id(out)] = out
        target = Quantization.per_tensor(scale, zero_point)
        for i, t in enumerate(op.inputs):
            if t is None or t.dtype != self.act or _same_params(t.quantization, target):
                continue
            if self._can_retarget(t):
                t.quantization = Quantization.per_tensor(scale, zero_point)
            else:
                fixed = self._new(t.name + "_requantized", t.shape, self.act,
                                  Quantization.per_tensor(scale, zero_point), like=t)
                self.ops.append(Operator(OpCode("QUANTIZE", self._quantize_version), [t],
                                         [fixed]))
                op.inputs[i] = fixed

    def _can_retarget(self, t: Tensor) -> bool:
        """A tensor only this op reads, written by an op that may choose its output scale."""
        producer = next((op for op in self.ops if t in op.outputs), None)
        return (producer is not None and self.rules.get(producer.type, Rule(SAME, 1)).output
                == REQUANT and len(self.consumers.get(id(t), [])) == 1
                and id(t) not in self.outputs and not t.is_constant)

    # -- constants -----------------------------------------------------------------------------

    def _weights(self, op: Operator, w: Tensor, axis: int) -> Tensor:
        value = w.data.astype(np.float32)
        if not 0 <= axis < value.ndim:
            raise QuantizationError(f"{op.opcode.display} filter {w.name!r} has rank "
                                    f"{value.ndim}; cannot quantize along axis {axis}")
        scheme = self.scheme[id(op)]
        q, quant = scheme_weights(value, axis, scheme)
        h = (self.options.hessians or {}).get(id(op))
        if h is not None and axis == 0 and scheme.integer_kernels:  # GPTQ, the same scales
            rows = value.reshape(value.shape[0], -1)
            scales = np.broadcast_to(quant.scale.astype(np.float64), (rows.shape[0],))
            q = gptq_round(rows, h, scheme.weight_range[1], scales)[0].reshape(q.shape)
        # sub-8-bit weights go into TFLite's INT4/INT2 tensors where the op's kernel reads them
        dtype = storage_dtype(scheme.weight_bits)
        allowed = filter_types(op.type, self.act)
        self._note_research(op, scheme, dtype if dtype in allowed else "int8", allowed)
        return self._new_constant(w.name, q, quant, dtype if dtype in allowed else "int8")

    def _fake_quantize_weights(self, op: Operator) -> None:
        """Replace the filter by dequantize(quantize(filter)) under the op's research scheme."""
        scheme = self.scheme[id(op)]
        for index, axis in RULES[op.type].weights:
            w = op.inputs[index]
            fake = fake_quantized_weights(w.data.astype(np.float32), axis, scheme)
            op.inputs[index] = self._new_constant(w.name, fake, None)
        self._note_research(op, scheme)

    def _note_research(self, op: Operator, scheme: Scheme, stored_as: str = "int8",
                       allowed: tuple = ("int8",)) -> None:
        """Record ops whose scheme TFLite cannot run; writing the model is refused for them."""
        problem = scheme.export_problem(stored_as, f"{op.type} with {self.act} activations",
                                        allowed)
        if problem:
            name = op.outputs[0].name if op.outputs and op.outputs[0] is not None else ""
            self.model.simulated[name] = f"{op.type} {name!r} ({scheme.describe()}): {problem}"

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
        if self.act == "int16":  # 16x8 kernels accumulate in int64 and take int64 biases
            q, quant = _bias_int64(values, x.scale, weight_scales)
        else:
            q, quant = bias_int32(values, x.scale, weight_scales)
        name = bias.name if bias is not None else op.outputs[0].name + "_bias"
        tensor = self._new_constant(name, q, quant)
        while len(op.inputs) <= index:
            op.inputs.append(None)
        op.inputs[index] = tensor

    def _pad_value_like_input(self, op: Operator, value: Tensor | None) -> None:
        """pad.cc requires PADV2's pad value to have the output's scale and zero point, which
        are the input's (SAME): q = clamp(round(v / s_in) + zp_in) in the activation type
        (16x8: zp 0 and [-32767, 32767], the symmetric range)."""
        if value is None or not value.is_constant or value.dtype != "float32":
            return
        q_in = op.inputs[0].quantization
        scale, zero_point = float(q_in.scale[0]), int(q_in.zero_point[0])
        low, high = (-32767, 32767) if self.act == "int16" else (-128, 127)
        q = np.clip(round_half_away(value.data.astype(np.float64) / np.float64(scale))
                    + zero_point, low, high)
        op.inputs[2] = self._new_constant(value.name, q.astype(self.act),
                                          Quantization.per_tensor(scale, zero_point))

    def _constant(self, t: Tensor, int8: bool = False) -> Tensor:
        value = t.data.astype(np.float32)
        q, quant = affine_constant(value) if self.act == "int8" or int8 else \
            _symmetric_int16(value)
        return self._new_constant(t.name, q, quant)

    def _new_constant(self, name: str, value: np.ndarray, quant: Quantization,
                      dtype: str | None = None) -> Tensor:
        t = Tensor(name, value.shape, dtype or str(value.dtype), quantization=quant)
        t.data = value
        return t

    # -- representations -----------------------------------------------------------------------

    def _int(self, t: Tensor) -> Tensor:
        """The integer version of activation t, quantizing its float version if needed."""
        if id(t) in self.as_int:
            return self.as_int[id(t)]
        scale, zero_point = self._qparams(t)
        q = self._new(f"{t.name}_{self.act}", t.shape, self.act,
                      Quantization.per_tensor(scale, zero_point), like=t)
        self.ops.append(Operator(OpCode("QUANTIZE", self._quantize_version),
                                 [self.as_float[id(t)]], [q]))
        self.as_int[id(t)] = q
        return q

    def _float(self, t: Tensor) -> Tensor:
        if id(t) in self.as_float:
            return self.as_float[id(t)]
        f = self._new(t.name + "_dequantized", t.shape, "float32", None, like=t)
        self.ops.append(Operator(OpCode("DEQUANTIZE", self._dequantize_version),
                                 [self.as_int[id(t)]], [f]))
        self.as_float[id(t)] = f
        return f

    def _from_float16(self, t: Tensor) -> Tensor:
        """A float constant whose every value is a float16 (the weights of a model published
        with float16 weights, folded for calibration) is stored as float16 again behind a
        DEQUANTIZE, as the converter writes it: half the bytes, the same float32 values."""
        if id(t) not in self.float16_copies:
            half = self._new_constant(t.name + "_float16", t.data.astype(np.float16), None)
            half.shape_signature = t.shape_signature
            out = self._new(t.name, t.shape, "float32", None, like=t)
            self.ops.append(Operator(OpCode("DEQUANTIZE", self._dequantize_version), [half],
                                     [out]))
            self.float16_copies[id(t)] = out
        return self.float16_copies[id(t)]

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
        scheme = self.tensor_scheme.get(id(t)) or self.recipe.default
        scale, zero_point = choose_qparams(*observer.range(), self.act,
                                           symmetric=self.act == "int16",
                                           power_of_two=scheme.power_of_two)
        return float(scale), zero_point

    @property
    def _quantize_version(self) -> int:
        return 2 if self.act == "int16" else 1  # op_version.cc: QUANTIZE to int16 is v2

    @property
    def _dequantize_version(self) -> int:
        return 3 if self.act == "int16" else 2  # DEQUANTIZE of int16 is v3


# below this many values a float16 copy saves fewer bytes than its DEQUANTIZE op and tensor cost
FLOAT16_MIN_VALUES = 128


def _exact_in_float16(t: Tensor) -> bool:
    if not t.is_constant or t.dtype != "float32" or t.quantization is not None:
        return False
    value = t.data
    return value.size >= FLOAT16_MIN_VALUES and np.array_equal(
        value.astype(np.float16).astype(np.float32), value)


def _bias_int64(b: np.ndarray, input_scale: float, weight_scales: np.ndarray
                ) -> tuple[np.ndarray, Quantization]:
    """The 16x8 bias: int64 with scale input_scale * weight_scale[c] and zero point 0."""
    scale = (np.float64(input_scale) * weight_scales.astype(np.float64)).astype(np.float32)
    q = round_half_away(np.asarray(b, np.float64) / scale.astype(np.float64))
    return q.astype(np.int64), Quantization(scale, np.zeros(scale.size, np.int64), axis=0)


def _symmetric_int16(value: np.ndarray) -> tuple[np.ndarray, Quantization]:
    """A 16x8 constant operand (ADD/MUL): int16, zero point 0, scale max|v| / 32767."""
    scale, _ = choose_qparams(value.min(initial=0.0), value.max(initial=0.0), "int16",
                              symmetric=True)
    q = np.clip(round_half_away(value.astype(np.float64) / np.float64(scale)), -32767, 32767)
    return q.astype(np.int16), Quantization.per_tensor(float(scale), 0)


def _make_int(t: Tensor, dtype: str, scale: float, zero_point: int) -> None:
    t.dtype = dtype
    t.quantization = Quantization.per_tensor(scale, zero_point)


def _same_params(q: Quantization | None, target: Quantization) -> bool:
    return q is not None and q.scale.size == 1 and np.float32(q.scale[0]) == np.float32(
        target.scale[0]) and int(q.zero_point[0]) == int(target.zero_point[0])


def op_names(op: Operator) -> list[str]:
    """What recipes and keep_float patterns match: the op type and its output-tensor names."""
    return [op.type] + [t.name for t in op.outputs if t is not None]


def _has_float(op: Operator) -> bool:
    return any(t is not None and t.dtype == "float32" and not t.is_constant
               for t in op.inputs + op.outputs)


def _retarget_signatures(model: Model, old: list[Tensor], new: list[Tensor]) -> None:
    mapping = {id(a): b for a, b in zip(old, new)}
    for sig in model.signatures:
        for key, t in sig.outputs.items():
            sig.outputs[key] = mapping.get(id(t), t)
