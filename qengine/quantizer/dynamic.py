"""The calibration-free modes: dynamic range (int8 weights) and float16 weights.

Both follow what TensorFlow's converter writes, so the files look like its own:

- dynamic: the filters of the ops whose definition has `Hybrid` facts (CONV_2D,
  DEPTHWISE_CONV_2D, FULLY_CONNECTED) become int8 symmetric in [-127, 127], per channel on the
  weight's output-channel axis; filters with fewer than 1024 elements, biases and activations
  stay float. FULLY_CONNECTED gets `asymmetric_quantize_inputs` (the converter's default).
  At run time the kernels quantize their float input on the fly ("hybrid" kernels).
- float16: every float32 constant an op reads becomes a float16 constant feeding a DEQUANTIZE
  (version 3), which the runtime folds back to float32 once, at load.
"""

from __future__ import annotations

import numpy as np

from ..errors import NothingToQuantize, QuantizationError
from ..ir import (
    BlockDetails,
    Model,
    OpCode,
    Operator,
    Quantization,
    Tensor,
    expected_nbytes,
    verify,
)
from ..lowbit import blockwise_fc_problem
from ..ops.opdef import Weight, definitions
from ..ops.quantization import DENSIFY, DEQUANTIZE
from .gptq import gptq_round
from .scheme import Scheme
from .weights import (
    blockwise_weights,
    float16_scales,
    mse_bounds,
    scheme_weights,
    storage_dtype,
)

MIN_ELEMENTS = 1024  # the converter leaves smaller filters in float


def hybrid_ops() -> dict:
    """Op type -> definition, for the ops with a hybrid kernel (their `Hybrid` facts)."""
    return {name: d for name, d in definitions().items()
            if d.hybrid is not None and d.weight is not None}


def weight_only_ops() -> dict:
    """Op type -> weight facts, for every op with a weight input (weight-only mode)."""
    return {name: d.weight for name, d in definitions().items() if d.weight is not None}


def quantize_dynamic(model: Model, per_channel: bool = True, asymmetric_inputs: bool = True,
                     weight_bits: int = 8, block_size: int = 0,
                     min_elements: int | None = None, clipping: str = "minmax",
                     hessians: dict | None = None) -> Model:
    """Hybrid ops get `weight_bits`-bit filters (int8, or TFLite's INT4/INT2 tensors), per
    channel, per tensor or (FULLY_CONNECTED, int4) in blocks of `block_size` with float16
    scales. Filters stored as float16 behind a DEQUANTIZE count as float weights. Sub-8-bit and
    blockwise filters, and float16 ones, are quantized whatever their size (as Google's
    ai-edge-quantizer does); other int8 ones from MIN_ELEMENTS up (as TensorFlow's converter
    does), unless `min_elements` says otherwise. A filter several ops share is quantized once."""
    if min_elements is None:
        min_elements = MIN_ELEMENTS if weight_bits == 8 and not block_size else 0
    count, hybrid = 0, hybrid_ops()
    for graph in model.subgraphs:
        producers = graph.producers()
        done: dict[tuple, Tensor] = {}  # (filter, axis, per channel) -> its quantized tensor
        for op in graph.operators:
            definition = hybrid.get(op.type)
            if definition is None or op.inputs[0] is None or op.inputs[0].dtype != "float32":
                continue
            facts, weight = definition.hybrid, definition.weight
            index, axis = weight.input, weight.axis
            w = op.inputs[index] if index < len(op.inputs) else None
            values = float_weights(w, producers)
            if values is None or (values.size < min_elements and w.is_constant):
                continue
            if _denser_than_sparse(w, producers, values.size, weight_bits):
                continue  # a sparse weight its dense quantized form would not shrink
            # TFLite's hybrid depthwise kernel reads one scale per channel whatever the file
            # holds, so depthwise filters stay per-channel even when per-tensor is asked for
            channelwise = per_channel or facts.always_per_channel
            key = (id(w), axis, channelwise)
            if key not in done:
                done[key] = _hybrid_filter(op, weight, w.name, values, weight_bits, block_size,
                                           channelwise, clipping, (hessians or {}).get(id(op)))
            op.inputs[index] = done[key]
            _constant_bias(op, definition.quantized, producers)
            version = facts.per_channel if channelwise else facts.per_tensor
            if facts.asymmetric_inputs is not None:  # FULLY_CONNECTED's option
                op.options.asymmetricQuantizeInputs = asymmetric_inputs
                if asymmetric_inputs and not per_channel:
                    version = max(version, facts.asymmetric_inputs)
            op.opcode = OpCode(op.type, max(op.opcode.version, version))
            count += 1
        drop_unused_ops(graph)
    _expect_some(count, "dynamic", f"{', '.join(sorted(hybrid))} op with a constant float "
                 f"filter" + (f" of at least {min_elements} values" if min_elements else "")
                 + " and a float input")
    verify(model)
    return model


def _hybrid_filter(op, weight: Weight, name: str, values: np.ndarray, bits: int,
                   block_size: int, channelwise: bool, clipping: str = "minmax",
                   h=None) -> Tensor:
    """The quantized filter of a hybrid op, in a format TFLite has a hybrid kernel for."""
    dtype = storage_dtype(bits)
    axis = weight.axis
    allowed = weight.types_for("float32")
    where = f"{op.type} {op.outputs[0].name!r}"
    if dtype not in allowed:
        raise QuantizationError(
            f"{where}: TFLite has no hybrid {op.type} kernel for {dtype} filters (it takes "
            f"{', '.join(allowed)}); choose --weight-bits "
            f"{'8' if allowed == ('int8',) else '4 or 8'} for it")
    if block_size:
        return _blockwise_filter(where, op, weight, name, values, bits, block_size, dtype,
                                 clipping, h)
    scheme = Scheme(weight_bits=bits, granularity="per_channel" if channelwise else "per_tensor",
                    weight_clipping=clipping)
    q, quant = scheme_weights(values, axis, scheme)
    if h is not None:  # GPTQ rounding with the same scales
        rows = values.reshape(values.shape[0], -1)
        scales = np.broadcast_to(quant.scale.astype(np.float64), (rows.shape[0],))
        q = gptq_round(rows, h, scheme.weight_range[1], scales)[0].reshape(values.shape)
    weights = Tensor(name, q.shape, dtype, quantization=quant)
    weights.data = q
    return weights


def _blockwise_filter(where: str, op, weight: Weight, name: str, values: np.ndarray, bits: int,
                      block_size: int, dtype: str, clipping: str = "minmax", h=None) -> Tensor:
    units, depth = values.shape if values.ndim == 2 else (values.shape[0], -1)
    blockwise = {op_type for op_type, w in weight_only_ops().items() if w.blockwise}
    hybrid = sorted(blockwise & set(hybrid_ops()))  # FULLY_CONNECTED; EMBEDDING_LOOKUP besides
    problem = None if weight.blockwise else (
        f"TFLite runs blockwise weights only in {', '.join(hybrid)} (and "
        f"{', '.join(sorted(blockwise - set(hybrid)))}), not {op.type}")
    problem = problem or blockwise_fc_problem(dtype, units, depth)
    if not problem and depth % block_size:
        problem = f"block size {block_size} does not divide the depth {depth}"
    if problem:
        raise QuantizationError(f"{where}: blockwise weights: {problem}")
    q, scales = blockwise_weights(values, block_size, bits, clipping)
    if h is not None:  # GPTQ: each block's scale from the weights as updated so far
        qmax = 2 ** (bits - 1) - 1

        def block_scale(columns):
            bound = np.abs(columns).max(axis=1) if clipping != "mse" else \
                mse_bounds(columns, -qmax, qmax)
            return float16_scales(bound, qmax).astype(np.float64)

        q, wide = gptq_round(values, h, qmax, block_size=block_size, block_scale=block_scale)
        scales = wide.astype(np.float16)
    scale_tensor = Tensor(name + "_scales", scales.shape, "float16")
    scale_tensor.data = scales
    quant = Quantization(np.zeros(0), np.zeros(0),
                         details=BlockDetails(scale_tensor, None, block_size))
    weights = Tensor(name, q.shape, dtype, quantization=quant)
    weights.data = q
    return weights


def quantize_weight_only(model: Model, weight_bits: int = 8, per_channel: bool = True,
                         block_size: int = 0, clipping: str = "minmax",
                         hessians: dict | None = None) -> Model:
    """Weights stored as int8/int4/int2 (per channel or per tensor) and expanded by DEQUANTIZE;
    every op still computes in float. Float16 weights behind a DEQUANTIZE count as weights."""
    if block_size:
        raise QuantizationError("weight-only blockwise weights: TFLite's DEQUANTIZE has no "
                                "blockwise path (it reads such a tensor as unquantized); use "
                                "--mode dynamic --weight-bits 4 --block-size N")
    dtype = storage_dtype(weight_bits)
    scheme = Scheme(weight_bits=weight_bits,
                    granularity="per_channel" if per_channel else "per_tensor",
                    weight_clipping=clipping)
    count, weights = 0, weight_only_ops()
    for graph in model.subgraphs:
        producers = graph.producers()
        operators = []
        done: dict[tuple, Tensor] = {}  # (weight, axis) -> its DEQUANTIZE output
        for op in graph.operators:
            weight = weights.get(op.type)
            spec = None if weight is None else (weight.input, weight.axis)
            values = None
            if spec is not None and spec[0] < len(op.inputs):
                if (id(op.inputs[spec[0]]), spec[1]) in done:
                    op.inputs[spec[0]] = done[(id(op.inputs[spec[0]]), spec[1])]
                    operators.append(op)
                    continue
                values = float_weights(op.inputs[spec[0]], producers)
                if values is not None and _denser_than_sparse(op.inputs[spec[0]], producers,
                                                              values.size, weight_bits):
                    values = None
            if values is not None:
                index, axis = spec
                name = op.inputs[index].name
                q, quant = scheme_weights(values, axis, scheme)
                h = (hessians or {}).get(id(op))
                if h is not None and axis == 0:  # GPTQ rounding with the same scales
                    rows = values.reshape(values.shape[0], -1)
                    scales = np.broadcast_to(quant.scale.astype(np.float64), (rows.shape[0],))
                    q = gptq_round(rows, h, scheme.weight_range[1], scales)[0].reshape(q.shape)
                stored = Tensor(name, q.shape, dtype, quantization=quant)
                stored.data = q
                expanded = Tensor(name + "_dequant", q.shape, "float32")
                graph.tensors.extend([stored, expanded])
                operators.append(Operator(OpCode(DEQUANTIZE, DEQUANTIZE_VERSION[dtype]),
                                          [stored], [expanded]))
                done[(id(op.inputs[index]), axis)] = expanded
                op.inputs[index] = expanded
                count += 1
            operators.append(op)
        graph.operators = operators
        drop_unused_ops(graph)
    _expect_some(count, "weight-only", f"{', '.join(sorted(weights))} op with a constant float "
                 f"weight")
    verify(model)
    return model


# DEQUANTIZE versions: 2 for int8 input, 4 for per-channel int8, 6 for int4/int2 (TFLite's
# op_version.cc); the builtin resolver accepts every version up to its own
DEQUANTIZE_VERSION = {"int8": 4, "int4": 6, "int2": 6}


def _constant_bias(op, quantized, producers: dict) -> None:
    """A hybrid op's bias stored as float16 behind a DEQUANTIZE becomes a float32 constant:
    TFLite's default interpreter (XNNPACK) fails to prepare a dynamically quantized CONV_2D
    whose bias is computed ("failed to delegate CONV_2D node"), where its builtin kernels run
    it. The bias values are unchanged (float16 widens to float32 exactly)."""
    index = quantized.bias if quantized is not None else None
    bias = op.inputs[index] if index is not None and index < len(op.inputs) else None
    if bias is None or bias.is_constant:
        return
    values = float_weights(bias, producers)
    if values is not None:
        constant = Tensor(bias.name + "_f32", bias.shape, "float32")
        constant.data = values.reshape(bias.shape)
        op.inputs[index] = constant


def float_weights(t: Tensor | None, producers: dict) -> np.ndarray | None:
    """The float32 values of a weight input: a float32 constant, or a float16 constant behind
    a DEQUANTIZE (how float16 models store weights), either possibly sparse behind a DENSIFY;
    None for anything else. Sparse weights come back dense (the hybrid and DEQUANTIZE kernels
    the quantized weights feed take no sparse filters but FULLY_CONNECTED's 1x16 blocks, which
    qengine does not write): the caller's model then stores them dense."""
    if t is None:
        return None
    if t.is_constant:
        return t.data.astype(np.float32) if t.dtype in FLOAT_WEIGHTS and t.sparsity is None \
            else None
    source = producers.get(id(t))
    if source is None or source.inputs[0] is None:
        return None
    if source.type == DEQUANTIZE and t.dtype == "float32":
        return float_weights(source.inputs[0], producers)
    if source.type == DENSIFY and source.inputs[0].is_constant \
            and source.inputs[0].dtype in FLOAT_WEIGHTS:
        from ..ops.quantization import densify_tensor
        from .passes import _Where

        return densify_tensor(_Where(source), source.inputs[0]).astype(np.float32)
    return None


FLOAT_WEIGHTS = ("float32", "float16")


def _denser_than_sparse(t: Tensor, producers: dict, count: int, bits: int) -> bool:
    """True when `t` comes from a sparse constant (behind DENSIFY) that holds fewer bytes than
    the dense quantized weight would: such a weight is left as it is."""
    while t is not None and not t.is_constant:
        source = producers.get(id(t))
        if source is None or source.type not in (DEQUANTIZE, DENSIFY):
            return False
        t = source.inputs[0]
    if t is None or t.sparsity is None:
        return False
    return expected_nbytes(storage_dtype(bits), (count,)) >= len(t.buffer)


def drop_unused_ops(graph) -> None:
    """Remove ops (such as a float16 weight's DEQUANTIZE) whose outputs nothing reads any
    more, then the tensors nothing references."""
    while True:
        read = {id(t) for op in graph.operators for t in op.inputs if t is not None}
        read |= {id(t) for t in graph.outputs}
        kept = [op for op in graph.operators
                if any(t is not None and id(t) in read for t in op.outputs)]
        if len(kept) == len(graph.operators):
            break
        graph.operators = kept
    graph.prune()


def _expect_some(count: int, mode: str, what: str) -> None:
    if not count:
        raise NothingToQuantize(f"{mode} quantization changed nothing: the model has no {what}")


def quantize_float16(model: Model) -> Model:
    for graph in model.subgraphs:
        converted: dict[int, Tensor] = {}
        operators = []
        for op in graph.operators:
            for i, t in enumerate(op.inputs):
                if t is None or not t.is_constant or t.dtype != "float32" or op.type == \
                        DEQUANTIZE:
                    continue
                if id(t) not in converted:
                    converted[id(t)] = _float16_constant(graph, t, operators)
                op.inputs[i] = converted[id(t)]
            operators.append(op)
        graph.operators = operators
        graph.prune()
    verify(model)
    return model


def _float16_constant(graph, t: Tensor, operators: list[Operator]) -> Tensor:
    """fp16 constant -> DEQUANTIZE -> a float32 tensor standing where the constant stood."""
    half = Tensor(t.name + "_fp16", t.shape, "float16")
    half.data = t.data.astype(np.float16)
    upcast = Tensor(t.name, t.shape, "float32")
    graph.tensors.extend([half, upcast])
    operators.append(Operator(OpCode(DEQUANTIZE, 3), [half], [upcast]))
    return upcast
