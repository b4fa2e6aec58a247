"""Full-integer quantization: a float model plus calibration statistics -> an int8 model, or
a 16x8 one (int16 activations, int8 weights).

Per the TFLite 8-bit spec: activations int8 asymmetric per tensor; weights int8 symmetric in
[-127, 127], per channel on the op's output-channel axis; biases int32 with scale
input_scale * weight_scale and zero point 0. Ops TFLite has no int8 kernel for stay float,
with DEQUANTIZE before and QUANTIZE after them.

16x8 (TFLite's EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8): activations int16
symmetric (zero point 0, scale max|x| / 32767), the same int8 weights, int64 biases, and a
smaller set of ops (the definitions' `Quantized.int16`).

The pass walks the ops in order. Every float activation `t` of the original graph may end up
with an integer version (`as_int[t]`), a float version (`as_float[t]`) or both; conversion
ops are inserted lazily, only where a consumer needs the other representation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase

import numpy as np

from ..builder import options
from ..errors import QuantizationError
from ..ir import Model, OpCode, Operator, Quantization, Tensor, verify
from ..ops.common import filter_types
from ..ops.opdef import FIXED, REQUANT, SAME, SHARED, Quantized, Weight, definitions
from ..ops.quantization import DEQUANTIZE, QUANTIZE
from ..qparams import choose_qparams, int_range, quantize, quantize_symmetric
from . import control_flow, lstm, variables
from .gptq import gptq_round
from .policies import RANGE_POLICIES
from .scheme import Recipe, Scheme
from .weights import (
    affine_constant,
    bias_int32,
    bias_int64,
    fake_quantized_weights,
    scheme_weights,
    storage_dtype,
)

# Each op's rule comes from its definition (qengine.ops, `Quantized`): how its output
# parameters are chosen, its op versions, weight, bias and special inputs. Versions are the
# converter's where TFLite's reference resolver registers them (PRELU, SQUEEZE, DEPTH_TO_SPACE,
# RELU_N1_TO_1 and ELU stay at 1, the highest version BUILTIN_REF knows; kernels dispatch on
# types, not versions).
#
# 16x8 (`Quantized.int16`): the ops whose int16 reference kernels qengine reproduces. Versions
# are op_version.cc's for int16 inputs, never below the int8 ones (CONV_2D/DEPTHWISE/FC have no
# int16 bump without quantized_bias_type, TRANSPOSE_CONV none without it either); ADD/SUB carry
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


@dataclass(frozen=True)
class Rule:
    """An op's quantization facts for one activation type (int8 or int16)."""

    facts: Quantized
    version: int  # the op version to write
    fixed: tuple[float, int] | None  # FIXED output (scale, zero point)
    weight: Weight | None

    @property
    def output(self) -> str:
        return self.facts.output

    @property
    def weights(self) -> tuple:
        """((input index, channel axis),) of the filter to quantize symmetric per channel."""
        w = self.weight
        return () if w is None else ((w.input, w.axis),)

    @property
    def bias(self) -> int | None:
        return self.facts.bias


def rules(activations: str) -> dict[str, Rule]:
    """Op type -> Rule for int8 or int16 activations, from the op definitions."""
    found = {}
    for name, definition in definitions().items():
        q = definition.quantized
        if q is None:
            continue
        if activations == "int8":
            found[name] = Rule(q, q.int8, q.fixed, definition.weight)
        elif q.int16 is not None:
            found[name] = Rule(q, q.int16, q.fixed16 or q.fixed, definition.weight)
    return found


# UNIDIRECTIONAL_SEQUENCE_LSTM and LSTM: the 8x8_16 form has its own layout (quantizer/lstm.py)
LSTM_RULE = Rule(Quantized(REQUANT, lstm.VERSION), lstm.VERSION, None, None)


def shape_only_ops() -> set[str]:
    """Ops that read only the shape of their float input, so any dtype will do."""
    return {name for name, d in definitions().items() if d.reads_shape_only}


@dataclass
class Int8Options:
    """What the rewrite needs beyond the parameters. quantize() folds its legacy keywords
    (per_channel, observer, mode) into the recipe before it gets here."""

    inference_type: str = "int8"  # the model's interface: int8, uint8 or float32 (16x8: int16)
    strict: bool = False
    keep_float: frozenset = frozenset()  # op output names (or op types) to leave in float
    recipe: Recipe = field(default_factory=Recipe)  # per-op schemes and the range policy
    hessians: dict | None = None  # id(op) -> GPTQ's H, for ops whose scheme rounds with GPTQ

    @property
    def activations(self) -> str:
        return self.recipe.activations  # "int16": the 16x8 scheme


# ---------------------------------------------------------------------------------------------
# the pass in three stages: statistics (qengine.calibrate) -> choose_params -> rewrite


def quantize_int8(model: Model, stats: dict, options: Int8Options) -> Model:
    """Rewrite `model` (a copy the caller owns) in place and return it: the parameters from
    the statistics, then the graph edits."""
    return rewrite(model, choose_params(model, stats, options.recipe), options)


@dataclass
class Params:
    """What choose_params decides: (scale, zero point) per activation tensor name, and per
    resource variable (one for all its reads and writes, see variables.py)."""

    tensors: dict[str, tuple[float, int]]
    variables: dict[str, tuple[float, int]] = field(default_factory=dict)
    # the raw calibrated (min, max) by statistic name: what layouts with their own rules need
    # (an LSTM's power-of-two cell scale, its gates' ranges before layer norm; lstm.py)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    # WHILE/IF: one (scale, zero point) per carried group, by member (control_flow.py); they
    # replace the members' own when the bodies are quantized
    carried: dict[str, tuple[float, int]] = field(default_factory=dict)


def choose_params(model: Model, stats: dict, recipe: Recipe) -> Params:
    """(scale, zero point) of every activation the statistics saw, and of every variable.

    A tensor's range is its observer's, adjusted by the recipe's range policy; its scheme
    (power-of-two scales) is that of the op writing it (graph inputs: the default scheme).
    16x8 activations are symmetric. Pure: the model is not changed.
    """
    act = recipe.activations
    by_tensor = {t.name: recipe.scheme_for(op_names(op)) for op in model.main.operators
                 for t in op.outputs if t is not None}
    ranges = {name: observer.range() for name, observer in stats.items() if observer.seen}
    ranges = RANGE_POLICIES[recipe.range_policy](model, ranges, rules(act))  # see policies.py
    params = {}
    for name, (low, high) in ranges.items():
        scheme = by_tensor.get(name) or recipe.default
        scale, zero_point = choose_qparams(low, high, act, symmetric=act == "int16",
                                           power_of_two=scheme.power_of_two)
        params[name] = (float(scale), zero_point)
    raw = {name: observer.range() for name, observer in stats.items() if observer.seen}
    return Params(params, variables.variable_qparams(model, stats, act), raw,
                  control_flow.group_params(model, ranges, act))


def rewrite(model: Model, params: Params, options: Int8Options) -> Model:
    """The graph edits: integer tensors with `params`, weights, biases, QUANTIZE/DEQUANTIZE at
    the float boundaries. Records every inserted tensor's source in `model.sources`."""
    interfaces = ("int8", "uint8", "float32") if options.activations == "int8" else \
        (options.activations, "float32")
    if options.inference_type not in interfaces:
        raise QuantizationError(f"inference_type must be {', '.join(interfaces)}, not "
                                f"{options.inference_type!r}")
    variables.check_subgraphs(model)  # CALL_ONCE init subgraphs only
    bodies = control_flow.quantizes_bodies(model, options.keep_float)
    if bodies:
        params = replace(params, tensors={**params.tensors, **params.carried})
    _Pass(model, params, options, bodies=bodies).run()
    if bodies:
        for index in control_flow.body_subgraphs(model):
            _Pass(model, params, options, bodies=True, index=index).run()
    verify(model)
    return model


class _Pass:
    """Rewrites one subgraph: the main graph (index 0) or a WHILE/IF body, whose float inputs
    and outputs are integer with their carried group's parameters (control_flow.py)."""

    def __init__(self, model: Model, params: Params, options: Int8Options, bodies: bool,
                 index: int = 0):
        self.model, self.graph, self.options = model, model.subgraphs[index], options
        self.body = index > 0
        self.params = control_flow.by_local_name(params.tensors, model, index)
        self.ranges = control_flow.by_local_name(params.ranges, model, index)
        self.quantize_bodies = bodies
        self.as_int: dict[int, Tensor] = {}
        self.as_float: dict[int, Tensor] = {}
        self.ops: list[Operator] = []  # the rewritten op list
        self.consumers = self.graph.consumers()
        self.outputs = {id(t) for t in self.graph.outputs}
        self.act = options.activations  # the activation dtype: int8 or int16
        self.rules = rules(self.act)
        self.int8_rules = rules("int8")
        self.shape_only = shape_only_ops()
        self.recipe = options.recipe
        self.scheme = {id(op): self.recipe.scheme_for(op_names(op)) for op in self.graph.operators}
        self.fake_quantized: set[int] = set()  # ops run in float on fake-quantized weights
        self.float16_copies: dict[int, Tensor] = {}  # float constant -> its DEQUANTIZE(float16)
        # resource variables: one scale and zero point per variable for all reads and writes
        self.variables = params.variables
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
            if op.type in control_flow.OPS and self.quantize_bodies:
                self._control_flow_op(op)
                continue
            if id(op) in self.fake_quantized:
                self._fake_quantize_weights(op)
            if rule is not None and rule.facts.small_input_scales and not self._comparable(op):
                rule = None
            if rule is None:
                self._float_op(op)
            elif rule is LSTM_RULE:
                lstm.quantize(self, op)
            else:
                self._int_op(op, rule)
        if self.body:
            self._bind_body_outputs()
        else:
            self._bind_graph_outputs()
        self.graph.operators = self.ops
        self.graph.prune()
        if not self.body:
            variables.quantize_init_values(self.model, self.variables, self.act)

    def _quantizable(self, op: Operator) -> Rule | None:
        rule = self.int8_rules.get(op.type)
        if op.type in lstm.OPS and self.act == "int8" and lstm.supported(op):
            rule = LSTM_RULE
        scheme = self.scheme[id(op)]
        if rule is None or scheme is None or kept_float(op, self.options.keep_float):
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
        if not variables.is_access(op) or not op.inputs:
            return None
        return self.variables.get(self.handles.get(id(op.inputs[0])))

    def _variable_op(self, op: Operator) -> None:
        """A read gives an integer tensor with the variable's parameters; a write stores its
        value requantized to them (a QUANTIZE op when its parameters differ)."""
        scale, zero_point = self._variable_params(op)
        if variables.is_read(op):
            _make_int(op.outputs[0], self.act, scale, zero_point)
            self.as_int[id(op.outputs[0])] = op.outputs[0]
        else:
            op.inputs[1] = self._int_with(op.inputs[1], scale, zero_point)
        self.ops.append(op)

    def _control_flow_op(self, op: Operator) -> None:
        """WHILE/IF: each data input, and each output, integer with its carried group's
        parameters (the bodies are rewritten by their own passes with the same ones)."""
        for i in control_flow.data_inputs(op):
            t = op.inputs[i]
            if t is not None and t.dtype == "float32":
                op.inputs[i] = self._int_with(t, *self._qparams(t))
        for t in op.outputs:
            if t is not None and t.dtype == "float32":
                _make_int(t, self.act, *self._qparams(t))
                self.as_int[id(t)] = t
        self.ops.append(op)

    def _int_with(self, t: Tensor, scale: float, zero_point: int) -> Tensor:
        """t as an integer tensor with exactly these parameters."""
        target = Quantization.per_tensor(scale, zero_point)
        if t.is_constant and id(t) not in self.as_int:
            self.as_int[id(t)] = variables.quantized_constant(t, scale, zero_point, self.act)
            self.graph.tensors.append(self.as_int[id(t)])
        source = self.as_int.get(id(t)) or self.as_float[id(t)]
        if source.dtype == self.act and _same_params(source.quantization, target):
            return source
        fixed = self._new(f"{t.name}_{self.act}_variable", t.shape, self.act, target, like=t)
        self.ops.append(Operator(OpCode(QUANTIZE, self._quantize_version), [source],
                                 [fixed]))
        return fixed

    def _comparable(self, op: Operator) -> bool:
        """TFLite's int8 comparisons rescale each input by QuantizeMultiplierSmallerThanOne, so
        an input scale of 1 or more (a range over 255 wide, or an all-zero constant) has no
        int8 kernel: such an op (`Quantized.small_input_scales`) stays float."""
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
        if any(i < len(op.inputs) and op.inputs[i] is not None and not op.inputs[i].is_constant
               for i in rule.facts.int8_inputs):
            return None  # the int16 kernel reads an int8 input, which only a constant gets
        return self.rules.get(op.type)

    def _refuse_float_ops(self, quantized) -> None:
        left = [f"op {i} {op.opcode.display} (output {op.outputs[0].name!r})"
                for i, (op, rule) in enumerate(zip(self.graph.operators, quantized))
                if rule is None and op.type not in self.shape_only and _has_float(op)
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
            if self.body:  # WHILE/IF copies the caller's integer tensor in
                _make_int(t, self.act, *self._qparams(t))
                self.as_int[id(t)] = t
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
                self.ops.append(Operator(OpCode(QUANTIZE, 1), [t], [inner]))
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
                self.ops.append(Operator(OpCode(QUANTIZE, 1), [source], [out]))
                outputs.append(out)
        _retarget_signatures(self.model, self.graph.outputs, outputs)
        self.graph.outputs = outputs

    def _bind_body_outputs(self) -> None:
        """A body's float outputs, integer with exactly their carried group's parameters."""
        self.graph.outputs = [t if t.dtype != "float32" and id(t) not in self.as_int
                              and id(t) not in self.as_float
                              else self._int_with(t, *self._qparams(t))
                              for t in self.graph.outputs]

    def _float_output(self, t: Tensor) -> Tensor:
        if id(t) in self.as_float:
            return self.as_float[id(t)]
        # keep the user-visible name on the float output; the integer tensor gets a suffix
        name = t.name
        t.name = f"{name}_{self.act}"
        self.model.sources[t.name] = name
        out = self._new(name, t.shape, "float32", None, like=t)
        self.ops.append(Operator(OpCode(DEQUANTIZE, self._dequantize_version), [t], [out]))
        self.as_float[id(t)] = out
        return out

    # -- ops -----------------------------------------------------------------------------------

    def _float_op(self, op: Operator) -> None:
        for i, t in enumerate(op.inputs):
            if t is not None and (id(t) in self.as_int or id(t) in self.as_float):
                op.inputs[i] = t if op.type in self.shape_only else self._float(t)
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
                op.inputs[i] = self._constant(t, int8=bool(rule.facts.int8_inputs))
            else:
                op.inputs[i] = self._int(t)
        if rule.bias is not None:
            self._bias(op, rule)
        pad = rule.facts.pad_value
        if pad is not None and len(op.inputs) > pad:
            self._pad_value_like_input(op, pad, float_inputs[pad])
        if rule.output == SHARED:
            self._share_params(op)
        else:
            for t in op.outputs:
                if t is not None and t.dtype == "float32":
                    self._set_output(op, rule, t)
        op.opcode = OpCode(op.type, max(rule.version, op.opcode.version))
        if self.act == "int16" and rule.facts.int16_options is not None:
            # ADD/SUB: potScaleInt16 = False, the general-scale int16 kernel (add.cc, sub.cc)
            kind, name, value = rule.facts.int16_options
            op.options = op.options or options(kind)
            setattr(op.options, name, value)
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
                self.ops.append(Operator(OpCode(QUANTIZE, self._quantize_version), [t],
                                         [fixed]))
                op.inputs[i] = fixed

    def _can_retarget(self, t: Tensor) -> bool:
        """A tensor only this op reads, written by an op that may choose its output scale."""
        producer = next((op for op in self.ops if t in op.outputs), None)
        rule = self.rules.get(producer.type) if producer is not None else None
        return (rule is not None and rule.output == REQUANT
                and len(self.consumers.get(id(t), [])) == 1 and id(t) not in self.outputs
                and not t.is_constant)

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
        for index, axis in self.int8_rules[op.type].weights:
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
        x, w = op.inputs[rule.facts.data_input], op.inputs[rule.weights[0][0]]
        channels = w.quantization.scale.size if w.quantization.scale.size > 1 else \
            w.shape[rule.weights[0][1]]
        index = rule.bias
        bias = op.inputs[index] if index < len(op.inputs) else None
        if bias is None and rule.facts.bias_optional:
            return  # optional for this kernel (FULLY_CONNECTED, TRANSPOSE_CONV)
        values = np.zeros(channels, np.float32) if bias is None else \
            bias.data.astype(np.float32).reshape(-1)
        if bias is not None and not bias.is_constant:
            raise QuantizationError(f"{op.opcode.display} bias {bias.name!r} is not constant")
        weight_scales = w.quantization.scale
        if weight_scales.size == 1:
            weight_scales = np.repeat(weight_scales, channels)
        if self.act == "int16":  # 16x8 kernels accumulate in int64 and take int64 biases
            q, quant = bias_int64(values, x.scale, weight_scales)
        else:
            q, quant = bias_int32(values, x.scale, weight_scales)
        name = bias.name if bias is not None else op.outputs[0].name + "_bias"
        tensor = self._new_constant(name, q, quant)
        while len(op.inputs) <= index:
            op.inputs.append(None)
        op.inputs[index] = tensor

    def _pad_value_like_input(self, op: Operator, index: int, value: Tensor | None) -> None:
        """pad.cc requires PADV2's pad value to have the output's scale and zero point, which
        are the input's (SAME): q = clamp(round(v / s_in) + zp_in) in the activation type
        (16x8: zp 0 and [-32767, 32767], the symmetric range)."""
        if value is None or not value.is_constant or value.dtype != "float32":
            return
        q_in = op.inputs[0].quantization
        scale, zero_point = float(q_in.scale[0]), int(q_in.zero_point[0])
        q = quantize(value.data, scale, zero_point, self.act, "float64",
                     qrange=int_range(self.act, narrow=self.act == "int16"))
        op.inputs[index] = self._new_constant(value.name, q, Quantization.per_tensor(
            scale, zero_point))

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
        self.ops.append(Operator(OpCode(QUANTIZE, self._quantize_version),
                                 [self.as_float[id(t)]], [q]))
        self.as_int[id(t)] = q
        return q

    def _float(self, t: Tensor) -> Tensor:
        if id(t) in self.as_float:
            return self.as_float[id(t)]
        f = self._new(t.name + "_dequantized", t.shape, "float32", None, like=t)
        self.ops.append(Operator(OpCode(DEQUANTIZE, self._dequantize_version),
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
        """A tensor the pass inserts, standing for `like` (recorded in model.sources)."""
        t = Tensor(name, shape, dtype, quantization=quant, shape_signature=like.shape_signature)
        self.graph.tensors.append(t)
        source = self.model.sources.get(like.name, like.name)
        if name != source:
            self.model.sources[name] = source
        return t

    def _qparams(self, t: Tensor) -> tuple[float, int]:
        if t.name not in self.params:
            raise QuantizationError(
                f"tensor {t.name!r} has no calibration range: the calibration data never "
                f"reached it (check the inputs you pass and the model's control flow)")
        return self.params[t.name]

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


def _symmetric_int16(value: np.ndarray) -> tuple[np.ndarray, Quantization]:
    """A 16x8 constant operand (ADD/MUL): int16, zero point 0, scale max|v| / 32767."""
    q, scale = quantize_symmetric(value, "int16")
    return q, Quantization.per_tensor(float(scale), 0)


def _make_int(t: Tensor, dtype: str, scale: float, zero_point: int) -> None:
    t.dtype = dtype
    t.quantization = Quantization.per_tensor(scale, zero_point)


def _same_params(q: Quantization | None, target: Quantization) -> bool:
    return q is not None and q.scale.size == 1 and np.float32(q.scale[0]) == np.float32(
        target.scale[0]) and int(q.zero_point[0]) == int(target.zero_point[0])


def op_names(op: Operator) -> list[str]:
    """What recipes and keep_float patterns match: the op type and its output-tensor names."""
    return [op.type] + [t.name for t in op.outputs if t is not None]


def kept_float(op: Operator, keep_float) -> bool:
    """Whether `keep_float` (op types or output tensor names, exact or fnmatch patterns)
    names the op."""
    return any(name == keep or fnmatchcase(name, keep)
               for name in op_names(op) for keep in keep_float)


def _has_float(op: Operator) -> bool:
    return any(t is not None and t.dtype == "float32" and not t.is_constant
               for t in op.inputs + op.outputs)


def _retarget_signatures(model: Model, old: list[Tensor], new: list[Tensor]) -> None:
    mapping = {id(a): b for a, b in zip(old, new)}
    for sig in model.signatures:
        for key, t in sig.outputs.items():
            sig.outputs[key] = mapping.get(id(t), t)
