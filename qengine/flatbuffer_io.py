"""Read and write .tflite files (the LiteRT flatbuffer) to and from the IR.

Reading validates every index and length taken from the file before using it, so a corrupt or
hostile file raises `InvalidModelError` instead of crashing, hanging or allocating wildly.

Writing follows TensorFlow's converter: identifier "TFL3", schema version 3, buffer 0 empty,
every buffer's data 16-byte aligned and 16 zero bytes after the last one (XNNPACK may read past
the end of a weight). Models whose buffers do not fit the 2 GB flatbuffer limit are written with
the data after the flatbuffer, located by `Buffer.offset/size`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import flatbuffers
import numpy as np

from .errors import ExportError, InvalidModelError
from .ir import (
    TENSOR_TYPE_CODES,
    TENSOR_TYPES,
    BlockDetails,
    Buffer,
    Model,
    OpCode,
    Operator,
    Quantization,
    SignatureDef,
    Subgraph,
    Tensor,
    register_writer,
    verify,
)
from .schema import tflite_generated as fb

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
FLATBUFFER_LIMIT = (1 << 31) - 1  # offsets are signed 32-bit
BUFFER_ALIGNMENT = 16
TAIL_PADDING = 16
_EXTERNAL_MARKER = ("buffer_location", b"outside flatbuffers")
SOURCES_METADATA = "qengine_sources"  # Model.sources as JSON {inserted tensor: source tensor}

BUILTIN_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
PLACEHOLDER_FOR_GREATER_OP_CODES = 127


# ---------------------------------------------------------------------------------------------
# reading


def load(source) -> Model:
    """Read a .tflite model from a path or from bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise InvalidModelError(f"cannot read {source}: {e.strerror or e}") from None
    return _Reader(data).model()


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        _check_header(data)
        self.root = fb.Model.GetRootAs(data, 0)

    def model(self) -> Model:
        try:
            model = self._read_model()
        except InvalidModelError:
            raise
        except (IndexError, ValueError, TypeError, OverflowError, UnicodeDecodeError,
                AttributeError, KeyError, MemoryError) as e:
            # flatbuffers reads through offsets without checking them; garbage shows up here
            raise InvalidModelError(f"corrupt flatbuffer: {type(e).__name__}: {e}") from None
        except Exception as e:  # struct.error and friends from the flatbuffers runtime
            raise InvalidModelError(f"corrupt flatbuffer: {type(e).__name__}: {e}") from None
        verify(model)
        return model

    # -- helpers -------------------------------------------------------------------------------

    def length(self, n: int, elem_size: int, what: str) -> int:
        """A vector length from the file, checked against the bytes that could hold it."""
        if n < 0 or n * elem_size > len(self.data):
            raise InvalidModelError(f"{what}: vector length {n} exceeds the file size")
        return n

    def index(self, i: int, n: int, what: str) -> int:
        if not 0 <= i < n:
            raise InvalidModelError(f"{what}: index {i} is out of range [0, {n})")
        return int(i)

    def string(self, raw) -> str:
        return raw.decode("utf-8", errors="replace") if raw else ""

    def numbers(self, obj, name: str, what: str) -> np.ndarray:
        """A vector of scalars as numpy (empty when absent)."""
        n = getattr(obj, name + "Length")()
        if n == 0:
            return np.zeros(0, np.int64)
        self.length(n, 1, what)
        return np.array(getattr(obj, name + "AsNumpy")())

    def external(self, offset: int, size: int, what: str) -> bytes:
        if offset + size > len(self.data):
            raise InvalidModelError(
                f"{what}: data at offset {offset} size {size} lies past the end of the file "
                f"({len(self.data)} bytes)")
        return self.data[offset:offset + size]

    # -- model ---------------------------------------------------------------------------------

    def _read_model(self) -> Model:
        root = self.root
        if root.Version() != SCHEMA_VERSION:
            raise InvalidModelError(
                f"schema version {root.Version()}; only version {SCHEMA_VERSION} exists in "
                f"TFLite's runtime")
        self.buffers = [self._buffer(i) for i in
                        range(self.length(root.BuffersLength(), 4, "buffers"))]
        self.opcodes = [self._opcode(i) for i in
                        range(self.length(root.OperatorCodesLength(), 4, "operator_codes"))]
        n_subgraphs = self.length(root.SubgraphsLength(), 4, "subgraphs")
        if n_subgraphs == 0:
            raise InvalidModelError("model has no subgraphs")
        self.n_subgraphs = n_subgraphs
        subgraphs = [self._subgraph(i) for i in range(n_subgraphs)]
        model = Model(subgraphs=subgraphs, description=self.string(root.Description()),
                      version=root.Version())
        for i in range(self.length(root.MetadataLength(), 4, "metadata")):
            entry = root.Metadata(i)
            name = self.string(entry.Name())
            model.metadata[name] = self._buffer_ref(entry.Buffer(), f"metadata {name!r}")
        for i in self.numbers(root, "MetadataBuffer", "metadata_buffer"):
            model.metadata_buffer.append(self._buffer_ref(int(i), "metadata_buffer"))
        for i in range(self.length(root.SignatureDefsLength(), 4, "signature_defs")):
            model.signatures.append(self._signature(root.SignatureDefs(i), subgraphs))
        if model.metadata.get(_EXTERNAL_MARKER[0]) is not None:
            del model.metadata[_EXTERNAL_MARKER[0]]  # a property of the file layout, not the model
        sources = model.metadata.pop(SOURCES_METADATA, None)
        if sources is not None:
            model.sources = _sources_from(bytes(sources.data))
        return model

    def _buffer(self, i: int) -> Buffer:
        b = self.root.Buffers(i)
        offset, size = b.Offset(), b.Size()
        if offset > 1:  # the >2 GB layout: data lives after the flatbuffer
            return Buffer(self.external(offset, size, f"buffer {i}"))
        n = b.DataLength()
        if n == 0:
            return Buffer(b"")
        self.length(n, 1, f"buffer {i}")
        return Buffer(b.DataAsNumpy().tobytes())

    def _buffer_ref(self, i: int, what: str) -> Buffer:
        return self.buffers[self.index(i, len(self.buffers), what)]

    def _opcode(self, i: int) -> OpCode:
        code = self.root.OperatorCodes(i)
        # Old files only have the deprecated int8 field; new ones store 127 there for codes > 127.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin not in BUILTIN_NAMES:
            raise InvalidModelError(f"operator_codes[{i}]: unknown builtin operator code {builtin}")
        custom = code.CustomCode()
        return OpCode(BUILTIN_NAMES[builtin], code.Version(),
                      self.string(custom) if custom is not None else None)

    def _subgraph(self, index: int) -> Subgraph:
        sg = self.root.Subgraphs(index)
        where = f"subgraph {index}"
        tensors = [self._tensor(sg.Tensors(i), f"{where} tensor {i}")
                   for i in range(self.length(sg.TensorsLength(), 4, f"{where} tensors"))]

        def tensor_ref(i, what, optional=False):
            if optional and i == -1:
                return None
            return tensors[self.index(int(i), len(tensors), what)]

        for tensor in tensors:
            self._link_block_details(tensor, tensors, f"{where} tensor {tensor.name!r}")
        subgraph = Subgraph(tensors=tensors, name=self.string(sg.Name()))
        subgraph.inputs = [tensor_ref(i, f"{where} inputs")
                           for i in self.numbers(sg, "Inputs", f"{where} inputs")]
        subgraph.outputs = [tensor_ref(i, f"{where} outputs")
                            for i in self.numbers(sg, "Outputs", f"{where} outputs")]
        subgraph.debug_metadata_index = sg.DebugMetadataIndex()
        n_ops = self.length(sg.OperatorsLength(), 4, f"{where} operators")
        for i in range(n_ops):
            subgraph.operators.append(self._operator(sg.Operators(i), f"{where} op {i}", tensor_ref))
        return subgraph

    def _tensor(self, t, where: str) -> Tensor:
        code = t.Type()
        if code not in TENSOR_TYPES:
            raise InvalidModelError(f"{where}: unknown tensor type {code}")
        name = self.string(t.Name())
        where = f"{where} ({name!r})"
        shape = tuple(int(d) for d in self.numbers(t, "Shape", f"{where} shape"))
        tensor = Tensor(name=name, shape=shape, dtype=TENSOR_TYPES[code])
        if t.Buffer() != 0:
            tensor.buffer = self._buffer_ref(t.Buffer(), f"{where} buffer")
        tensor.is_variable = bool(t.IsVariable())
        tensor.has_rank = bool(t.HasRank())
        tensor.external_buffer = t.ExternalBuffer()
        if not t.ShapeSignatureIsNone():
            tensor.shape_signature = tuple(
                int(d) for d in self.numbers(t, "ShapeSignature", f"{where} shape_signature"))
        q = t.Quantization()
        if q is not None:
            tensor.quantization = self._quantization(q, where)
        if t.Sparsity() is not None:
            sparsity = t.Sparsity()
            self.length(sparsity.DimMetadataLength(), 4, f"{where} sparsity")
            tensor.sparsity = fb.SparsityParametersT.InitFromObj(sparsity)
        if not t.VariantTensorsIsNone():
            self.length(t.VariantTensorsLength(), 4, f"{where} variant_tensors")
            tensor.variant_tensors = fb.TensorT.InitFromObj(t).variantTensors
        return tensor

    def _quantization(self, q, where: str) -> Quantization | None:
        scale = self.numbers(q, "Scale", f"{where} scale").astype(np.float32)
        zero_point = self.numbers(q, "ZeroPoint", f"{where} zero_point").astype(np.int64)
        qmin = self.numbers(q, "Min", f"{where} min").astype(np.float32)
        qmax = self.numbers(q, "Max", f"{where} max").astype(np.float32)
        details = None
        if q.DetailsType() != 0:
            details = fb.QuantizationDetailsCreator(q.DetailsType(), q.Details())
        if scale.size == 0 and zero_point.size == 0 and qmin.size == 0 and qmax.size == 0 \
                and details is None:
            return None  # the converter writes empty tables for float tensors
        if scale.size == 0 and zero_point.size:
            raise InvalidModelError(f"{where}: zero_point without scale")
        return Quantization(scale, zero_point, axis=q.QuantizedDimension(),
                            min=qmin if qmin.size else None, max=qmax if qmax.size else None,
                            details=details)

    def _link_block_details(self, tensor: Tensor, tensors: list[Tensor], where: str) -> None:
        """Blockwise/multi-axis tables name their scales and zero points by tensor index; the IR
        holds the tensors themselves (-1: no zero points)."""
        q = tensor.quantization
        raw = None if q is None else q.details
        kind = type(raw).__name__[:-1]
        if kind not in ("BlockwiseQuantization", "MultiAxisQuantization"):
            return

        def ref(i, role):
            if i == -1 and role == "zero_points":
                return None
            return tensors[self.index(int(i), len(tensors), f"{where} blockwise {role}")]

        q.details = BlockDetails(
            scales=ref(raw.scales, "scales"), zero_points=ref(raw.zeroPoints, "zero_points"),
            block_size=int(raw.blockSize), kind=kind,
            block_shape=None if getattr(raw, "blockShape", None) is None
            else [int(d) for d in raw.blockShape],
            quantized_dimensions=None if getattr(raw, "quantizedDimensions", None) is None
            else [int(d) for d in raw.quantizedDimensions])

    def _operator(self, op, where: str, tensor_ref) -> Operator:
        opcode = self.opcodes[self.index(op.OpcodeIndex(), len(self.opcodes), f"{where} opcode")]
        where = f"{where} ({opcode.display})"
        inputs = [tensor_ref(i, f"{where} input", optional=True)
                  for i in self.numbers(op, "Inputs", f"{where} inputs")]
        outputs = [tensor_ref(i, f"{where} output", optional=True)
                   for i in self.numbers(op, "Outputs", f"{where} outputs")]
        result = Operator(opcode, inputs, outputs)
        result.options = self._options(op.BuiltinOptionsType(), op.BuiltinOptions(),
                                       fb.BuiltinOptionsCreator, where)
        result.options2 = self._options(op.BuiltinOptions2Type(), op.BuiltinOptions2(),
                                        fb.BuiltinOptions2Creator, where)
        if op.LargeCustomOptionsOffset() > 1:
            result.custom_options = self.external(
                op.LargeCustomOptionsOffset(), op.LargeCustomOptionsSize(), f"{where} options")
        elif not op.CustomOptionsIsNone():
            self.length(op.CustomOptionsLength(), 1, f"{where} custom_options")
            result.custom_options = op.CustomOptionsAsNumpy().tobytes()
        result.custom_options_format = op.CustomOptionsFormat()
        if not op.MutatingVariableInputsIsNone():
            flags = self.numbers(op, "MutatingVariableInputs", f"{where} mutating_variable_inputs")
            result.mutating_variable_inputs = [bool(f) for f in flags]
        result.intermediates = [tensor_ref(i, f"{where} intermediate")
                                for i in self.numbers(op, "Intermediates", f"{where} intermediates")]
        result.debug_metadata_index = op.DebugMetadataIndex()
        self._check_subgraph_refs(result.options, where)
        self._check_subgraph_refs(result.options2, where)
        return result

    def _options(self, kind: int, table, creator, where: str):
        if kind == 0:
            return None
        if table is None:
            raise InvalidModelError(f"{where}: options type {kind} without an options table")
        options = creator(kind, table)
        if options is None:
            raise InvalidModelError(f"{where}: unknown options type {kind}")
        return options

    def _check_subgraph_refs(self, options, where: str) -> None:
        """WHILE, IF, CALL_ONCE and composite ops name other subgraphs by index."""
        for name, value in getattr(options, "__dict__", {}).items():
            if name.lower().endswith("subgraphindex"):
                self.index(value, self.n_subgraphs, f"{where} {name}")

    def _signature(self, sig, subgraphs: list[Subgraph]) -> SignatureDef:
        key = self.string(sig.SignatureKey())
        where = f"signature {key!r}"
        subgraph = subgraphs[self.index(sig.SubgraphIndex(), len(subgraphs), where)]

        def tensor_map(count, get):
            result = {}
            for i in range(self.length(count, 4, where)):
                entry = get(i)
                i_tensor = self.index(entry.TensorIndex(), len(subgraph.tensors), where)
                result[self.string(entry.Name())] = subgraph.tensors[i_tensor]
            return result

        return SignatureDef(key, subgraph, tensor_map(sig.InputsLength(), sig.Inputs),
                            tensor_map(sig.OutputsLength(), sig.Outputs))


def _check_header(data: bytes) -> None:
    if len(data) < 8:
        raise InvalidModelError(f"not a TFLite model: {len(data)} bytes is too short")
    identifier = data[4:8]
    if identifier != FILE_IDENTIFIER:
        raise InvalidModelError(
            f"not a TFLite model: file identifier is {identifier!r}, expected {FILE_IDENTIFIER!r}")
    root = int.from_bytes(data[:4], "little")
    if root + 4 > len(data):
        raise InvalidModelError(f"not a TFLite model: root offset {root} is past the end")


# ---------------------------------------------------------------------------------------------
# writing


def to_bytes(model: Model, *, external_threshold: int = FLATBUFFER_LIMIT) -> bytes:
    """Serialize. Buffers go outside the flatbuffer when their total exceeds the threshold."""
    if model.simulated:
        raise ExportError(_research_refusal(model.simulated))
    verify(model)
    if model.sources:  # the map travels as metadata (and only while writing)
        text = json.dumps(model.sources, sort_keys=True, separators=(",", ":"))
        model.metadata[SOURCES_METADATA] = Buffer(text.encode())
    try:
        writer = _Writer(model)
        if writer.total_buffer_bytes() + (1 << 20) <= external_threshold:
            return writer.build(external=False)
        return writer.build_external()
    finally:
        model.metadata.pop(SOURCES_METADATA, None)


def _sources_from(data: bytes) -> dict[str, str]:
    try:
        sources = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        sources = None
    if not isinstance(sources, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in sources.items()):
        raise InvalidModelError(f"metadata {SOURCES_METADATA!r} is not a JSON object of names")
    return sources


def _research_refusal(simulated: dict[str, str]) -> str:
    first = next(iter(simulated.values()))
    more = f" (and {len(simulated) - 1} more op(s))" if len(simulated) > 1 else ""
    return (f"cannot write a .tflite: the model uses a research scheme TFLite cannot express. "
            f"{first}{more}. Run it with qengine.Interpreter or evaluate it with `qengine "
            f"compare FLOAT --recipe RECIPE.json --data DATA`; choose int8 narrow-range "
            f"symmetric per-channel/per-tensor weights to export")


def save(model: Model, path, **kwargs) -> None:
    """Write atomically (see `atomic_write`)."""
    atomic_write(Path(path), to_bytes(model, **kwargs))


def atomic_write(path: Path, data: bytes) -> None:
    """A temporary file in the same folder, renamed over `path` at the end: a reader never
    sees a partial file, and a failure leaves none behind."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


register_writer(to_bytes, save)


class _Writer:
    def __init__(self, model: Model):
        self.model = model
        self.tensor_lists = [s.all_tensors() for s in model.subgraphs]
        self.buffers = self._collect_buffers()
        self.buffer_index = {id(b): i for i, b in enumerate(self.buffers)}
        self.opcodes, self.opcode_index = self._collect_opcodes()

    def total_buffer_bytes(self) -> int:
        return sum(len(b) for b in self.buffers)

    # -- collection ----------------------------------------------------------------------------

    def _collect_buffers(self) -> list[Buffer]:
        """Buffer 0 is the empty sentinel; then each constant's (or metadata's) buffer once."""
        buffers, seen = [Buffer(b"")], set()

        def add(buffer):
            if buffer is not None and id(buffer) not in seen:
                seen.add(id(buffer))
                buffers.append(buffer)

        for tensors in self.tensor_lists:
            for t in tensors:
                if t.is_constant:  # zero-element constants keep a (empty) buffer of their own
                    add(t.buffer)
        for buffer in list(self.model.metadata.values()) + self.model.metadata_buffer:
            if len(buffer):
                add(buffer)
        return buffers

    def _collect_opcodes(self):
        opcodes, index = [], {}
        for subgraph in self.model.subgraphs:
            for op in subgraph.operators:
                key = (op.opcode.name, op.opcode.custom_code, op.opcode.version)
                if key not in index:
                    index[key] = len(opcodes)
                    opcodes.append(op.opcode)
        return opcodes, index

    def ref(self, buffer: Buffer | None) -> int:
        return 0 if buffer is None else self.buffer_index.get(id(buffer), 0)

    # -- layouts -------------------------------------------------------------------------------

    def build(self, external: bool, offsets: list[tuple[int, int]] | None = None) -> bytes:
        b = flatbuffers.Builder(self.total_buffer_bytes() + 65536 if not external else 65536)
        self.vector_offsets: dict[tuple, int] = {}  # (builder, kind, bytes) -> shared offset
        if not external:
            b.Pad(TAIL_PADDING)  # written first, so it ends up after the last buffer
        buffer_offsets = [self._buffer(b, buf, external, offsets, i)
                          for i, buf in enumerate(self.buffers)]
        root = self._model(b, buffer_offsets, external)
        b.Finish(root, file_identifier=FILE_IDENTIFIER)
        return bytes(b.Output())

    def build_external(self) -> bytes:
        """Flatbuffer first, then each buffer's data at a 16-byte aligned absolute offset."""
        self.model.metadata[_EXTERNAL_MARKER[0]] = Buffer(_EXTERNAL_MARKER[1])
        self.buffers = self._collect_buffers()
        self.buffer_index = {id(b): i for i, b in enumerate(self.buffers)}
        try:
            # Offsets are fixed-width fields, so a placeholder pass gives the final size.
            placeholder = [(2, len(buf)) for buf in self.buffers]
            head = _align(len(self.build(True, placeholder)), BUFFER_ALIGNMENT)
            offsets, position = [], head
            for buf in self.buffers:
                offsets.append((position, len(buf)))
                position = _align(position + len(buf), BUFFER_ALIGNMENT)
            flat = self.build(True, offsets)
            assert len(flat) <= head, "flatbuffer grew between passes"
        finally:
            del self.model.metadata[_EXTERNAL_MARKER[0]]
        parts = [flat, bytes(head - len(flat))]
        for (offset, size), buf in zip(offsets, self.buffers):
            parts.append(bytes(buf.data))
            parts.append(bytes(_align(offset + size, BUFFER_ALIGNMENT) - offset - size))
        parts.append(bytes(TAIL_PADDING))
        return b"".join(parts)

    # -- tables --------------------------------------------------------------------------------

    def _buffer(self, b, buf: Buffer, external: bool, offsets, i: int) -> int:
        data = None
        if not external and len(buf):
            data = _aligned_bytes(b, buf.data, BUFFER_ALIGNMENT)
        fb.BufferStart(b)
        if data is not None:
            fb.BufferAddData(b, data)
        if external and len(buf):
            offset, size = offsets[i]
            fb.BufferAddOffset(b, offset)
            fb.BufferAddSize(b, size)
        return fb.BufferEnd(b)

    def _model(self, b, buffer_offsets, external: bool) -> int:
        m = self.model
        opcodes = _table_vector(b, [self._opcode(b, c) for c in self.opcodes])
        subgraphs = _table_vector(b, [self._subgraph(b, s, i) for i, s in
                                      enumerate(m.subgraphs)])
        buffers = _table_vector(b, buffer_offsets)
        description = b.CreateString(m.description) if m.description else None
        metadata = None
        if m.metadata:
            metadata = _table_vector(b, [self._metadata(b, name, buf)
                                         for name, buf in m.metadata.items()])
        metadata_buffer = None
        if m.metadata_buffer:
            metadata_buffer = b.CreateNumpyVector(
                np.array([self.ref(x) for x in m.metadata_buffer], np.int32))
        signatures = None
        if m.signatures:
            signatures = _table_vector(b, [self._signature(b, s) for s in m.signatures])
        fb.ModelStart(b)
        fb.ModelAddVersion(b, SCHEMA_VERSION)
        fb.ModelAddOperatorCodes(b, opcodes)
        fb.ModelAddSubgraphs(b, subgraphs)
        if description is not None:
            fb.ModelAddDescription(b, description)
        fb.ModelAddBuffers(b, buffers)
        if metadata_buffer is not None:
            fb.ModelAddMetadataBuffer(b, metadata_buffer)
        if metadata is not None:
            fb.ModelAddMetadata(b, metadata)
        if signatures is not None:
            fb.ModelAddSignatureDefs(b, signatures)
        return fb.ModelEnd(b)

    def _opcode(self, b, code: OpCode) -> int:
        builtin = getattr(fb.BuiltinOperator, code.name)
        custom = b.CreateString(code.custom_code) if code.custom_code is not None else None
        fb.OperatorCodeStart(b)
        fb.OperatorCodeAddDeprecatedBuiltinCode(b, min(builtin, PLACEHOLDER_FOR_GREATER_OP_CODES))
        if custom is not None:
            fb.OperatorCodeAddCustomCode(b, custom)
        fb.OperatorCodeAddVersion(b, code.version)
        fb.OperatorCodeAddBuiltinCode(b, builtin)
        return fb.OperatorCodeEnd(b)

    def _subgraph(self, b, subgraph: Subgraph, index: int) -> int:
        tensors = self.tensor_lists[index]
        position = {id(t): i for i, t in enumerate(tensors)}
        tensor_offsets = _table_vector(b, [self._tensor(b, t, position) for t in tensors])

        def indices(ts):
            return self._shared_vector(
                b, np.array([-1 if t is None else position[id(t)] for t in ts], np.int32))

        inputs, outputs = indices(subgraph.inputs), indices(subgraph.outputs)
        ops = _table_vector(b, [self._operator(b, op, indices) for op in subgraph.operators])
        name = b.CreateString(subgraph.name) if subgraph.name else None
        fb.SubGraphStart(b)
        fb.SubGraphAddTensors(b, tensor_offsets)
        fb.SubGraphAddInputs(b, inputs)
        fb.SubGraphAddOutputs(b, outputs)
        fb.SubGraphAddOperators(b, ops)
        if name is not None:
            fb.SubGraphAddName(b, name)
        if getattr(subgraph, "debug_metadata_index", -1) != -1:
            fb.SubGraphAddDebugMetadataIndex(b, subgraph.debug_metadata_index)
        return fb.SubGraphEnd(b)

    def _tensor(self, b, t: Tensor, position: dict[int, int]) -> int:
        shape = self._shared_vector(b, np.array(t.shape, np.int32))
        name = b.CreateString(t.name)
        quantization = self._quantization(b, t.quantization, position)
        sparsity = t.sparsity.Pack(b) if t.sparsity is not None else None
        signature = None
        if t.shape_signature is not None:
            signature = self._shared_vector(b, np.array(t.shape_signature, np.int32))
        variants = None
        if t.variant_tensors is not None:
            variants = _table_vector(b, [v.Pack(b) for v in t.variant_tensors])
        fb.TensorStart(b)
        fb.TensorAddShape(b, shape)
        fb.TensorAddType(b, TENSOR_TYPE_CODES[t.dtype])
        fb.TensorAddBuffer(b, self.ref(t.buffer))
        fb.TensorAddName(b, name)
        if quantization is not None:
            fb.TensorAddQuantization(b, quantization)
        if t.is_variable:
            fb.TensorAddIsVariable(b, True)
        if sparsity is not None:
            fb.TensorAddSparsity(b, sparsity)
        if signature is not None:
            fb.TensorAddShapeSignature(b, signature)
        if t.has_rank:
            fb.TensorAddHasRank(b, True)
        if variants is not None:
            fb.TensorAddVariantTensors(b, variants)
        if t.external_buffer:
            fb.TensorAddExternalBuffer(b, t.external_buffer)
        return fb.TensorEnd(b)

    def _quantization(self, b, q: Quantization | None, position: dict[int, int]) -> int | None:
        if q is None:
            return None
        vectors = {field: self._shared_vector(b, values) for field, values in (
            ("scale", q.scale.astype(np.float32) if q.scale.size else None),
            ("zeroPoint", q.zero_point.astype(np.int64) if q.zero_point.size else None),
            ("min", None if q.min is None else np.asarray(q.min, np.float32)),
            ("max", None if q.max is None else np.asarray(q.max, np.float32)))}
        details_type, details = 0, None
        if isinstance(q.details, BlockDetails):
            details_type = getattr(fb.QuantizationDetails, q.details.kind)
            details = _block_details_table(q.details, position).Pack(b)
        elif q.details is not None:
            details_type = getattr(fb.QuantizationDetails, type(q.details).__name__[:-1])
            details = q.details.Pack(b)
        fb.QuantizationParametersStart(b)
        for field, add in (("min", fb.QuantizationParametersAddMin),
                           ("max", fb.QuantizationParametersAddMax),
                           ("scale", fb.QuantizationParametersAddScale),
                           ("zeroPoint", fb.QuantizationParametersAddZeroPoint)):
            if vectors[field] is not None:
                add(b, vectors[field])
        fb.QuantizationParametersAddDetailsType(b, details_type)
        if details is not None:
            fb.QuantizationParametersAddDetails(b, details)
        fb.QuantizationParametersAddQuantizedDimension(b, q.axis)
        return fb.QuantizationParametersEnd(b)

    def _shared_table(self, b, table) -> int | None:
        """An op's options table, written once per distinct content (most convolutions of a
        model share theirs); the key is the table packed on its own."""
        if table is None:
            return None
        alone = flatbuffers.Builder(64)
        alone.Finish(table.Pack(alone))
        key = (id(b), type(table).__name__, bytes(alone.Output()))
        if key not in self.vector_offsets:
            self.vector_offsets[key] = table.Pack(b)
        return self.vector_offsets[key]

    def _shared_vector(self, b, values: np.ndarray | None) -> int | None:
        """A numeric vector (a shape, quantization parameters) written once per distinct content
        and referenced from every table that holds the same values (flatbuffers allow shared
        offsets): per-channel zero points, all 0, otherwise cost 8 bytes a channel each time."""
        if values is None:
            return None
        key = (id(b), values.dtype.str, values.tobytes())
        if key not in self.vector_offsets:
            self.vector_offsets[key] = b.CreateNumpyVector(values)
        return self.vector_offsets[key]

    def _operator(self, b, op: Operator, indices) -> int:
        c = op.opcode
        inputs, outputs = indices(op.inputs), indices(op.outputs)
        options, options2 = self._shared_table(b, op.options), self._shared_table(b, op.options2)
        custom = None
        if op.custom_options is not None:
            custom = b.CreateNumpyVector(np.frombuffer(op.custom_options, np.uint8))
        mutating = None
        if op.mutating_variable_inputs is not None:
            mutating = b.CreateNumpyVector(np.array(op.mutating_variable_inputs, np.bool_))
        intermediates = indices(op.intermediates) if op.intermediates else None
        fb.OperatorStart(b)
        fb.OperatorAddOpcodeIndex(b, self.opcode_index[(c.name, c.custom_code, c.version)])
        fb.OperatorAddInputs(b, inputs)
        fb.OperatorAddOutputs(b, outputs)
        if options is not None:
            fb.OperatorAddBuiltinOptionsType(b, _union_code(fb.BuiltinOptions, op.options))
            fb.OperatorAddBuiltinOptions(b, options)
        if options2 is not None:
            fb.OperatorAddBuiltinOptions2Type(b, _union_code(fb.BuiltinOptions2, op.options2))
            fb.OperatorAddBuiltinOptions2(b, options2)
        if custom is not None:
            fb.OperatorAddCustomOptions(b, custom)
        if op.custom_options_format:
            fb.OperatorAddCustomOptionsFormat(b, op.custom_options_format)
        if mutating is not None:
            fb.OperatorAddMutatingVariableInputs(b, mutating)
        if intermediates is not None:
            fb.OperatorAddIntermediates(b, intermediates)
        if op.debug_metadata_index != -1:
            fb.OperatorAddDebugMetadataIndex(b, op.debug_metadata_index)
        return fb.OperatorEnd(b)

    def _metadata(self, b, name: str, buf: Buffer) -> int:
        name_offset = b.CreateString(name)
        fb.MetadataStart(b)
        fb.MetadataAddName(b, name_offset)
        fb.MetadataAddBuffer(b, self.ref(buf))
        return fb.MetadataEnd(b)

    def _signature(self, b, sig: SignatureDef) -> int:
        s_index = next(i for i, s in enumerate(self.model.subgraphs) if s is sig.subgraph)
        position = {id(t): i for i, t in enumerate(self.tensor_lists[s_index])}

        def tensor_maps(mapping):
            maps = []
            for name, tensor in mapping.items():
                name_offset = b.CreateString(name)
                fb.TensorMapStart(b)
                fb.TensorMapAddName(b, name_offset)
                fb.TensorMapAddTensorIndex(b, position[id(tensor)])
                maps.append(fb.TensorMapEnd(b))
            return _table_vector(b, maps)

        inputs, outputs = tensor_maps(sig.inputs), tensor_maps(sig.outputs)
        key = b.CreateString(sig.key)
        fb.SignatureDefStart(b)
        fb.SignatureDefAddInputs(b, inputs)
        fb.SignatureDefAddOutputs(b, outputs)
        fb.SignatureDefAddSignatureKey(b, key)
        fb.SignatureDefAddSubgraphIndex(b, s_index)
        return fb.SignatureDefEnd(b)


def _block_details_table(block: BlockDetails, position: dict[int, int]):
    """The flatc table of a BlockDetails, its tensors named by index in the subgraph."""
    table = getattr(fb, block.kind + "T")()
    table.scales = position[id(block.scales)]
    table.zeroPoints = -1 if block.zero_points is None else position[id(block.zero_points)]
    table.blockSize = block.block_size
    if block.kind == "BlockwiseQuantization":
        table.blockShape = block.block_shape
    else:
        table.quantizedDimensions = block.quantized_dimensions
    return table


def _union_code(union, options) -> int:
    return getattr(union, type(options).__name__[:-1])  # Conv2DOptionsT -> Conv2DOptions


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def _aligned_bytes(b, data: bytes, alignment: int) -> int:
    """A [ubyte] vector whose first element is `alignment`-aligned (force_align in the schema)."""
    n = len(data)
    b.StartVector(1, n, alignment)
    b.head -= n
    b.Bytes[b.head:b.head + n] = data
    return b.EndVector()


def _table_vector(b, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()
