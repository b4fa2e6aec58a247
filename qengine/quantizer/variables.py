"""Resource variables under full-integer quantization.

A variable is one buffer that READ_VARIABLE copies out and ASSIGN_VARIABLE copies in, byte for
byte, so every read and every write of it must use the same scale and zero point. qengine gives
each float variable the parameters of the union of the ranges calibration saw on its reads and
writes (calibration runs the samples in order through one interpreter, so those ranges are the
state's over the whole sequence) and of its initial value; the init subgraph (run by CALL_ONCE)
assigns that initial value quantized with them.

The bodies of control flow (WHILE/IF, CALL) stay float: the main graph's ops around them are
quantized, with DEQUANTIZE before and QUANTIZE after the control-flow op.
"""

from __future__ import annotations

import numpy as np

from ..errors import QuantizationError
from ..ir import Model, Operator, Quantization, Subgraph, Tensor
from ..qparams import choose_qparams, quantize

INIT_OPS = {"VAR_HANDLE", "ASSIGN_VARIABLE"}


def is_access(op: Operator) -> bool:
    """READ_VARIABLE or ASSIGN_VARIABLE."""
    return op.type in ("READ_VARIABLE", "ASSIGN_VARIABLE")


def is_read(op: Operator) -> bool:
    return op.type == "READ_VARIABLE"


def variable_key(op: Operator) -> str:
    """The variable a VAR_HANDLE names (container/shared_name, as TFLite resolves them)."""
    from ..ops.variables import variable_names

    container, shared = variable_names(op.options)
    return f"{container}/{shared}" if container else shared


def handles(subgraph: Subgraph) -> dict[int, str]:
    """id(handle tensor) -> variable key for the VAR_HANDLE ops of one subgraph."""
    return {id(op.outputs[0]): variable_key(op) for op in subgraph.operators
            if op.type == "VAR_HANDLE" and op.outputs}


def check_subgraphs(model: Model) -> None:
    """Subgraphs other than the main graph stay float (WHILE/IF bodies, CALL targets: their ops
    run in float between DEQUANTIZE and QUANTIZE) or are CALL_ONCE init subgraphs made of
    VAR_HANDLE and ASSIGN_VARIABLE (their initial values are quantized). A float subgraph that
    touches variables would read bytes of the wrong type, so it is refused."""
    inits = {getattr(op.options, "initSubgraphIndex", None) for op in model.main.operators
             if op.type == "CALL_ONCE"}
    for index, sub in enumerate(model.subgraphs[1:], start=1):
        kinds = {op.type for op in sub.operators}
        if index in inits:
            if not kinds <= INIT_OPS:
                raise QuantizationError(
                    f"init subgraph {index} does more than assign variables ("
                    f"{', '.join(sorted(kinds - INIT_OPS))}); it cannot be quantized yet")
        elif kinds & {"VAR_HANDLE", "CALL_ONCE"}:
            raise QuantizationError(
                f"subgraph {index} (control flow) uses resource variables; quantizing "
                f"variables inside WHILE/IF bodies is not supported yet")


def float_subgraph_ops(model: Model) -> int:
    """How many ops live in subgraphs that stay float (control-flow bodies)."""
    inits = {getattr(op.options, "initSubgraphIndex", None) for op in model.main.operators
             if op.type == "CALL_ONCE"}
    return sum(len(sub.operators) for index, sub in enumerate(model.subgraphs[1:], start=1)
               if index not in inits)


def variable_qparams(model: Model, stats: dict, act: str) -> dict[str, tuple[float, int]]:
    """Scale and zero point per float variable, from its reads, writes and initial value."""
    ranges: dict[str, list[float]] = {}

    def widen(key: str, low: float, high: float) -> None:
        lo, hi = ranges.get(key, (low, high))
        ranges[key] = [min(lo, low), max(hi, high)]

    for sub in model.subgraphs:
        names = handles(sub)
        for op in sub.operators:
            if not is_access(op) or not op.inputs:
                continue
            key = names.get(id(op.inputs[0]))
            value = op.outputs[0] if is_read(op) else op.inputs[1]
            if key is None or value is None or value.dtype != "float32":
                continue
            if value.is_constant:
                data = value.data.astype(np.float64)
                widen(key, float(data.min(initial=0.0)), float(data.max(initial=0.0)))
                continue
            observer = stats.get(value.name)
            if observer is None or not observer.seen:
                raise QuantizationError(
                    f"variable {key!r}: tensor {value.name!r} has no calibration range (the "
                    f"calibration data never reached it)")
            widen(key, *map(float, observer.range()))
    return {key: _params(low, high, act) for key, (low, high) in ranges.items()}


def _params(low: float, high: float, act: str) -> tuple[float, int]:
    scale, zero_point = choose_qparams(low, high, act, symmetric=act == "int16")
    return float(scale), int(zero_point)


def quantize_init_values(model: Model, params: dict, act: str) -> None:
    """Replace the float initial values the init subgraphs assign by quantized ones."""
    for sub in model.subgraphs[1:]:
        names = handles(sub)
        for op in sub.operators:
            if op.type != "ASSIGN_VARIABLE":
                continue
            key, value = names.get(id(op.inputs[0])), op.inputs[1]
            if key not in params or value is None or value.dtype != "float32":
                continue
            op.inputs[1] = quantized_constant(value, *params[key], act)
            sub.tensors.append(op.inputs[1])
        sub.prune()


def quantized_constant(t: Tensor, scale: float, zero_point: int, act: str) -> Tensor:
    """q = clamp(round(v / scale) + zero_point) in the activation type."""
    q = quantize(t.data, np.float32(scale), zero_point, act, "float64")
    out = Tensor(t.name, q.shape, act, quantization=Quantization.per_tensor(scale, zero_point))
    out.data = q
    return out
