"""The in-memory graph: models, subgraphs, tensors and ops that reference each other directly.

Indices exist only in the file. Here an op's inputs are `Tensor` objects, so a pass that inserts
a QUANTIZE op edits two lists and nothing is renumbered. `verify()` checks the invariants every
pass must keep; tests call it after building or rewriting a graph.

Op options are the flatc object-API tables (`Conv2DOptionsT`, ...) from `qengine.schema`, kept
as they were read so every option of every op survives a round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import lowbit
from .errors import InvalidModelError
from .qparams import per_tensor_params

# TensorType enum value -> IR dtype name. The name is numpy's where numpy has the type.
TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
    19: "int2", 20: "uint4", 21: "float8_e4m3fn", 22: "float8_e5m2",
}
TENSOR_TYPE_CODES = {name: code for code, name in TENSOR_TYPES.items()}

# Types whose bytes numpy can view directly; packed sub-byte types are unpacked by `lowbit`;
# the rest (strings, bfloat16, float8, ...) stay raw bytes.
_NUMPY_TYPES = {
    "float32", "float16", "int32", "uint8", "int64", "bool", "int16", "complex64", "int8",
    "float64", "complex128", "uint64", "uint32", "uint16",
}
_ONE_BYTE_RAW_TYPES = {"float8_e4m3fn", "float8_e5m2"}

MAX_ELEMENTS = 1 << 40  # no real tensor is bigger; larger claims in a file are corrupt


def numpy_dtype(dtype: str) -> np.dtype:
    if dtype not in _NUMPY_TYPES:
        raise InvalidModelError(f"dtype {dtype} has no numpy equivalent")
    return np.dtype(dtype)


def expected_nbytes(dtype: str, shape: tuple[int, ...]) -> int | None:
    """Bytes a constant of this dtype and shape occupies, or None if not fixed-size."""
    count = math.prod(shape)
    if dtype in _NUMPY_TYPES:
        return count * np.dtype(dtype).itemsize
    if lowbit.is_packed(dtype):
        return lowbit.packed_nbytes(dtype, count)
    if dtype == "bfloat16":
        return count * 2
    if dtype in _ONE_BYTE_RAW_TYPES:
        return count
    return None


@dataclass(eq=False)
class Buffer:
    """Raw little-endian bytes of a constant tensor or a metadata entry."""

    data: bytes = b""

    def __len__(self) -> int:
        return len(self.data)


@dataclass(eq=False)
class Quantization:
    """real = scale * (q - zero_point), per tensor or per slice along `axis`."""

    scale: np.ndarray  # float32
    zero_point: np.ndarray  # int64
    axis: int = 0  # the file's quantized_dimension; meaningful when len(scale) > 1
    min: np.ndarray | None = None  # informational ranges some tools write
    max: np.ndarray | None = None
    # BlockDetails for BlockwiseQuantization/MultiAxisQuantization, else the flatc object of the
    # QuantizationDetails union (e.g. CustomQuantizationT), kept as read
    details: Any = None

    def __post_init__(self):
        self.scale = np.asarray(self.scale, dtype=np.float32).reshape(-1)
        self.zero_point = np.asarray(self.zero_point, dtype=np.int64).reshape(-1)

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def blockwise(self) -> BlockDetails | None:
        return self.details if isinstance(self.details, BlockDetails) else None

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int = 0) -> Quantization:
        return cls(np.array([scale], np.float32), np.array([zero_point], np.int64))


@dataclass(eq=False)
class BlockDetails:
    """The file's BlockwiseQuantization (or MultiAxisQuantization) table, with its scales and
    zero points as tensors: real = scales[c, k // block_size] * (q[c, k] - zero_points[...]).

    The scales/zero-point tensors are constants of the subgraph that no op reads."""

    scales: Tensor
    zero_points: Tensor | None
    block_size: int
    block_shape: list[int] | None = None  # BlockwiseQuantization's optional block_shape
    quantized_dimensions: list[int] | None = None  # MultiAxisQuantization only
    kind: str = "BlockwiseQuantization"  # or "MultiAxisQuantization"

    def tensors(self) -> list[Tensor]:
        return [t for t in (self.scales, self.zero_points) if t is not None]


@dataclass(eq=False)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: Buffer | None = None  # set for constants
    quantization: Quantization | None = None
    is_variable: bool = False
    shape_signature: tuple[int, ...] | None = None  # -1 marks a dynamic dimension
    sparsity: Any = None  # flatc SparsityParametersT, kept as read
    has_rank: bool = False
    variant_tensors: Any = None  # flatc VariantSubTypeT list, kept as read
    external_buffer: int = 0

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.shape}, {self.dtype})"

    @property
    def is_constant(self) -> bool:
        """Has data in the file. A zero-element tensor with a buffer of its own is a constant
        too (e.g. an empty list of reduction axes)."""
        if self.buffer is None:
            return False
        return len(self.buffer) > 0 or math.prod(self.shape) == 0

    @property
    def data(self) -> np.ndarray | None:
        """The constant's value as a numpy array (a read-only view), or None.

        INT4/INT2 values come unpacked as int8, UINT4 as uint8 (see `qengine.lowbit`)."""
        if not self.is_constant:
            return None
        if self.sparsity is None and lowbit.is_packed(self.dtype):
            values = lowbit.unpack(self.buffer.data, self.dtype, math.prod(self.shape))
            values.flags.writeable = False
            return values.reshape(self.shape)
        if self.dtype not in _NUMPY_TYPES or self.sparsity is not None:
            return np.frombuffer(self.buffer.data, np.uint8)
        array = np.frombuffer(self.buffer.data, numpy_dtype(self.dtype))
        return array.reshape(self.shape)

    @data.setter
    def data(self, value: np.ndarray) -> None:
        if lowbit.is_packed(self.dtype):  # integer values, packed into the file's layout
            value = np.asarray(value)
            self.shape = tuple(value.shape)
            self.buffer = Buffer(lowbit.pack(value, self.dtype, repr(self.name)))
            return
        value = np.require(value, dtype=numpy_dtype(self.dtype), requirements="C")  # keeps 0-d
        self.shape = tuple(value.shape)
        self.buffer = Buffer(value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())

    @property
    def scale(self) -> float:
        """The per-tensor scale (raises if the tensor is not per-tensor quantized)."""
        return per_tensor_params(self.quantization, self.name)[0]

    @property
    def zero_point(self) -> int:
        return per_tensor_params(self.quantization, self.name)[1]


@dataclass(eq=False)
class OpCode:
    """What an op is: a builtin (`name`) or a custom op (`name == "CUSTOM"`, `custom_code`)."""

    name: str
    version: int = 1
    custom_code: str | None = None

    @property
    def display(self) -> str:
        return f"CUSTOM:{self.custom_code}" if self.name == "CUSTOM" else self.name


@dataclass(frozen=True)
class Epilogue:
    """What a float conv computes after its own bias and clamp, folded in by runtime/fusion.py:
    the ADD of a residual (the conv's input 3) with `residual_pad` zero channels appended (a
    PAD of it folded in too), clamped by that ADD's fused activation (`residual_activation`, an
    ActivationFunctionType code; None: no residual), then PRELU with the per-channel slopes of
    input 4 (`prelu`), then HARD_SWISH (`hard_swish`)."""

    residual_activation: int | None = None
    prelu: bool = False
    residual_pad: int = 0
    hard_swish: bool = False


@dataclass(eq=False)
class Operator:
    opcode: OpCode
    inputs: list[Tensor | None]  # None marks an omitted optional input (-1 in the file)
    outputs: list[Tensor]
    options: Any = None  # flatc object for builtin_options (e.g. Conv2DOptionsT) or None
    options2: Any = None  # flatc object for builtin_options_2 (StableHLO ops) or None
    custom_options: bytes | None = None
    custom_options_format: int = 0
    mutating_variable_inputs: list[bool] | None = None
    intermediates: list[Tensor] = field(default_factory=list)
    debug_metadata_index: int = -1
    # runtime only, never written: (top, bottom, left, right) zero padding of a conv whose
    # PAD the interpreter folded into it (runtime/fusion.py)
    fused_padding: tuple[int, int, int, int] | None = None
    # runtime only: the ADD and/or PRELU folded into a float conv's output (runtime/fusion.py)
    fused_epilogue: Epilogue | None = None
    # runtime only: the int8 op (RELU, LOGISTIC, PRELU, ...) whose input was this op's output,
    # folded in (runtime/fusion.py); its other inputs follow this op's own
    fused_lookup: Operator | None = None
    # runtime only: (operand position, channels) of an int8 ADD that reads that operand
    # before a PAD appended that many channels of its zero point (runtime/fusion.py)
    fused_operand_pad: tuple[int, int] | None = None

    @property
    def type(self) -> str:
        return self.opcode.name

    def __repr__(self) -> str:
        outs = ", ".join(t.name for t in self.outputs)
        return f"Operator({self.opcode.display} -> {outs})"


@dataclass(eq=False)
class Subgraph:
    tensors: list[Tensor] = field(default_factory=list)  # file order; writer adds any missing
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)
    name: str = ""
    debug_metadata_index: int = -1

    def producers(self) -> dict[int, Operator]:
        """id(tensor) -> the op writing it."""
        return {id(t): op for op in self.operators for t in op.outputs if t is not None}

    def consumers(self) -> dict[int, list[Operator]]:
        """id(tensor) -> the ops reading it, in execution order."""
        users: dict[int, list[Operator]] = {}
        for op in self.operators:
            for t in op.inputs:
                if t is not None:
                    users.setdefault(id(t), []).append(op)
        return users

    def all_tensors(self) -> list[Tensor]:
        """`tensors` followed by any tensor referenced but not yet listed (e.g. added by a pass)."""
        seen = {id(t) for t in self.tensors}
        extra = []
        for t in self._referenced():
            if id(t) not in seen:
                seen.add(id(t))
                extra.append(t)
        return self.tensors + extra

    def prune(self) -> None:
        """Drop listed tensors nothing references any more."""
        used = {id(t) for t in self._referenced()}
        self.tensors = [t for t in self.tensors if id(t) in used]

    def tensor(self, name: str) -> Tensor:
        for t in self.all_tensors():
            if t.name == name:
                return t
        raise KeyError(f"no tensor named {name!r} in subgraph {self.name!r}")

    def _referenced(self):
        yield from self.inputs
        yield from self.outputs
        for op in self.operators:
            for t in op.inputs + op.outputs:
                if t is not None:
                    yield t
                    if t.quantization is not None and t.quantization.blockwise is not None:
                        yield from t.quantization.blockwise.tensors()
            yield from op.intermediates


@dataclass(eq=False)
class SignatureDef:
    key: str
    subgraph: Subgraph
    inputs: dict[str, Tensor] = field(default_factory=dict)  # signature name -> tensor
    outputs: dict[str, Tensor] = field(default_factory=dict)


@dataclass(eq=False)
class Model:
    subgraphs: list[Subgraph] = field(default_factory=list)
    description: str = ""
    version: int = 3
    metadata: dict[str, Buffer] = field(default_factory=dict)
    signatures: list[SignatureDef] = field(default_factory=list)
    metadata_buffer: list[Buffer] = field(default_factory=list)  # deprecated field, kept as read
    # ops quantized with research schemes TFLite cannot run (output name -> why); such a model
    # runs in qengine but is never written (flatbuffer_io.to_bytes refuses it)
    simulated: dict[str, str] = field(default_factory=dict)
    # tensors a quantization pass inserted (x_int8, x_dequantized, ...) -> the name of the
    # tensor each stands for; compare and PTQ match tensors through it. Written to the file as
    # the metadata entry SOURCES_METADATA, read back into this field.
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]

    def save(self, path, **kwargs) -> None:
        _WRITER["save"](self, path, **kwargs)

    def to_bytes(self, **kwargs) -> bytes:
        return _WRITER["to_bytes"](self, **kwargs)

    def verify(self) -> None:
        verify(self)


# ---------------------------------------------------------------------------------------------
# verify


# The file format plugs in here: qengine.flatbuffer_io registers its writer when it is imported
# (`import qengine` imports it), so the IR depends on no file format and the writer, which
# depends on the IR, is not imported back by it.
_WRITER: dict = {}


def register_writer(to_bytes, save) -> None:
    """Set what Model.to_bytes / Model.save call: to_bytes(model, **kw), save(model, path, **kw)."""
    _WRITER.update(to_bytes=to_bytes, save=save)


def verify(model: Model) -> None:
    """Raise InvalidModelError if the graph breaks an invariant the runtime and writer rely on."""
    if not model.subgraphs:
        raise InvalidModelError("model has no subgraphs")
    for index, subgraph in enumerate(model.subgraphs):
        where = f"subgraph {index} ({subgraph.name!r})" if subgraph.name else f"subgraph {index}"
        for tensor in subgraph.all_tensors():
            _verify_tensor(tensor, where)
        _verify_dataflow(subgraph, where)
    for sig in model.signatures:
        if not any(sig.subgraph is s for s in model.subgraphs):
            raise InvalidModelError(f"signature {sig.key!r} refers to a subgraph not in the model")


def _verify_tensor(t: Tensor, where: str) -> None:
    if t.dtype not in TENSOR_TYPE_CODES:
        raise InvalidModelError(f"{where}: tensor {t.name!r} has unknown dtype {t.dtype!r}")
    if any(d < 0 for d in t.shape):
        raise InvalidModelError(f"{where}: tensor {t.name!r} has negative dimension in {t.shape}")
    if math.prod(t.shape) > MAX_ELEMENTS:
        raise InvalidModelError(f"{where}: tensor {t.name!r} shape {t.shape} is absurdly large")
    if t.shape_signature is not None:
        if len(t.shape_signature) != len(t.shape) or any(d < -1 for d in t.shape_signature):
            raise InvalidModelError(
                f"{where}: tensor {t.name!r} shape_signature {t.shape_signature} "
                f"does not fit shape {t.shape}")
    if t.is_constant and t.sparsity is None:
        want = expected_nbytes(t.dtype, t.shape)
        if want is not None and want != len(t.buffer):
            raise InvalidModelError(
                f"{where}: constant {t.name!r} of shape {t.shape} {t.dtype} needs {want} bytes "
                f"but its buffer has {len(t.buffer)}")
    if t.quantization is not None:
        _verify_quantization(t, where)


def _verify_quantization(t: Tensor, where: str) -> None:
    q = t.quantization
    if q.blockwise is not None:
        _verify_blockwise(t, q.blockwise, where)
    n = q.scale.size
    if n == 0:
        return
    if q.zero_point.size != n:
        raise InvalidModelError(
            f"{where}: tensor {t.name!r} has {n} scales but {q.zero_point.size} zero points")
    if n > 1:
        if not 0 <= q.axis < len(t.shape):
            raise InvalidModelError(
                f"{where}: tensor {t.name!r} quantized_dimension {q.axis} is outside rank "
                f"{len(t.shape)}")
        if t.shape[q.axis] != n:
            raise InvalidModelError(
                f"{where}: tensor {t.name!r} has {n} scales for dimension {q.axis} of size "
                f"{t.shape[q.axis]}")
    if not np.all(np.isfinite(q.scale)):
        raise InvalidModelError(f"{where}: tensor {t.name!r} has a non-finite scale")


BLOCK_SCALE_TYPES = ("float16", "float32")
BLOCK_ZERO_POINT_TYPES = ("int8", "int16", "int32", "int64")


def _verify_blockwise(t: Tensor, block: BlockDetails, where: str) -> None:
    """Blockwise weights: a constant [channels, depth] cut into blocks of `block_size` along
    depth, with a [channels, depth / block_size] constant of scales (and of zero points)."""
    def fail(rule: str) -> InvalidModelError:
        return InvalidModelError(f"{where}: blockwise tensor {t.name!r}: {rule}")

    if block.kind != "BlockwiseQuantization":
        return  # MultiAxisQuantization: no kernel reads it; kept as read
    if not t.is_constant:
        raise fail("blockwise quantization is only defined for constant weights, "
                   "not for an activation")
    if len(t.shape) != 2:
        raise fail(f"needs a rank-2 [channels, depth] weight, has shape {t.shape}")
    if block.block_size <= 0 or t.shape[1] % block.block_size:
        raise fail(f"block size {block.block_size} does not divide the depth {t.shape[1]}")
    want = (t.shape[0], t.shape[1] // block.block_size)
    for role, table, dtypes in (("scales", block.scales, BLOCK_SCALE_TYPES),
                                ("zero points", block.zero_points, BLOCK_ZERO_POINT_TYPES)):
        if table is None:
            continue
        if not table.is_constant:
            raise fail(f"its {role} tensor {table.name!r} is not a constant")
        if table.dtype not in dtypes:
            raise fail(f"its {role} tensor {table.name!r} is {table.dtype}; "
                       f"expected {' or '.join(dtypes)}")
        if tuple(table.shape) != want:
            raise fail(f"its {role} tensor {table.name!r} has shape {table.shape}; "
                       f"expected {want} (channels x blocks)")
    if not np.all(np.isfinite(block.scales.data.astype(np.float32))):
        raise fail(f"its scales tensor {block.scales.name!r} has a non-finite value")


def _verify_dataflow(subgraph: Subgraph, where: str) -> None:
    """Every op reads only tensors that exist by the time it runs; each tensor has one writer."""
    available = {id(t) for t in subgraph.all_tensors() if t.is_constant or t.is_variable}
    available |= {id(t) for t in subgraph.inputs}
    written: set[int] = set()
    for index, op in enumerate(subgraph.operators):
        for t in op.inputs:
            if t is not None and id(t) not in available:
                raise InvalidModelError(
                    f"{where}: op {index} ({op.opcode.display}) reads tensor {t.name!r} before "
                    f"any op writes it (a cycle, or ops out of order)")
        for t in op.outputs:
            if t is None:  # an optional output the file leaves out (-1)
                continue
            if id(t) in written:
                raise InvalidModelError(
                    f"{where}: tensor {t.name!r} is written by more than one op")
            if t.is_constant and len(t.buffer):
                raise InvalidModelError(
                    f"{where}: op {index} ({op.opcode.display}) writes constant tensor {t.name!r}")
            written.add(id(t))
            available.add(id(t))
    for t in subgraph.outputs:
        if id(t) not in available:
            raise InvalidModelError(f"{where}: output {t.name!r} is never computed")


# ---------------------------------------------------------------------------------------------
# structural comparison


def diff(a: Model, b: Model) -> list[str]:
    """Differences between two models, as readable lines (empty when equal).

    Tensors are matched by position, so this is the equality a round trip must preserve.
    """
    out: list[str] = []
    _same(out, "description", a.description, b.description)
    _same(out, "metadata names", sorted(a.metadata), sorted(b.metadata))
    for name in set(a.metadata) & set(b.metadata):
        _same(out, f"metadata {name!r}", bytes(a.metadata[name].data), bytes(b.metadata[name].data))
    _same(out, "subgraph count", len(a.subgraphs), len(b.subgraphs))
    for i, (sa, sb) in enumerate(zip(a.subgraphs, b.subgraphs)):
        _diff_subgraph(out, f"subgraph {i}", sa, sb)
    _same(out, "signature count", len(a.signatures), len(b.signatures))
    for sa, sb in zip(a.signatures, b.signatures):
        where = f"signature {sa.key!r}"
        _same(out, where, (sa.key, list(sa.inputs), list(sa.outputs)),
              (sb.key, list(sb.inputs), list(sb.outputs)))
        _same(out, f"{where} subgraph", a.subgraphs.index(sa.subgraph),
              b.subgraphs.index(sb.subgraph))
    return out


def _diff_subgraph(out: list[str], where: str, a: Subgraph, b: Subgraph) -> None:
    ta, tb = a.all_tensors(), b.all_tensors()
    _same(out, f"{where} name", a.name, b.name)
    _same(out, f"{where} tensor count", len(ta), len(tb))
    for i, (x, y) in enumerate(zip(ta, tb)):
        _diff_tensor(out, f"{where} tensor {i} ({x.name!r})", x, y)
    pa, pb = {id(t): i for i, t in enumerate(ta)}, {id(t): i for i, t in enumerate(tb)}

    def positions(ts, p):
        return [None if t is None else p[id(t)] for t in ts]

    _same(out, f"{where} inputs", positions(a.inputs, pa), positions(b.inputs, pb))
    _same(out, f"{where} outputs", positions(a.outputs, pa), positions(b.outputs, pb))
    _same(out, f"{where} op count", len(a.operators), len(b.operators))
    for i, (x, y) in enumerate(zip(a.operators, b.operators)):
        w = f"{where} op {i} ({x.opcode.display})"
        _same(out, f"{w} opcode", (x.opcode.name, x.opcode.custom_code, x.opcode.version),
              (y.opcode.name, y.opcode.custom_code, y.opcode.version))
        _same(out, f"{w} inputs", positions(x.inputs, pa), positions(y.inputs, pb))
        _same(out, f"{w} outputs", positions(x.outputs, pa), positions(y.outputs, pb))
        _same(out, f"{w} intermediates", positions(x.intermediates, pa),
              positions(y.intermediates, pb))
        _same(out, f"{w} options", _plain(x.options), _plain(y.options))
        _same(out, f"{w} options2", _plain(x.options2), _plain(y.options2))
        _same(out, f"{w} custom_options", x.custom_options, y.custom_options)
        _same(out, f"{w} mutating inputs", x.mutating_variable_inputs, y.mutating_variable_inputs)


def _diff_tensor(out: list[str], where: str, x: Tensor, y: Tensor) -> None:
    _same(out, f"{where} header", (x.name, x.shape, x.dtype, x.is_variable, x.shape_signature,
                                   x.has_rank),
          (y.name, y.shape, y.dtype, y.is_variable, y.shape_signature, y.has_rank))
    _same(out, f"{where} data", bytes(x.buffer.data) if x.is_constant else None,
          bytes(y.buffer.data) if y.is_constant else None)
    _same(out, f"{where} quantization", _plain(x.quantization), _plain(y.quantization))
    _same(out, f"{where} sparsity", _plain(x.sparsity), _plain(y.sparsity))


def _plain(obj):
    """A comparable form of option tables, quantization and numpy arrays."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, Tensor):  # a reference (blockwise scales); its content is diffed itself
        return ("tensor", obj.name, obj.shape, obj.dtype)
    if isinstance(obj, np.ndarray):
        return ("array", obj.dtype.kind, obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "__dict__"):
        return (type(obj).__name__, {k: _plain(v) for k, v in sorted(vars(obj).items())})
    return repr(obj)


def _same(out: list[str], what: str, x, y) -> None:
    if x != y:
        out.append(f"{what}: {_short(x)} != {_short(y)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."
