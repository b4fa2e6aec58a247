"""Reading and writing .tflite files: lossless round trips, the converter's layout, bad input."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from qengine.schema import tflite_generated as fb

import qengine
from qengine import InvalidModelError
from qengine.builder import GraphBuilder, options
from qengine.flatbuffer_io import _Writer
from qengine.ir import Buffer, OpCode, Operator, Quantization, Tensor, diff

EXAMPLE = Path(__file__).parents[1] / "examples" / "digits.tflite"
MODES = ("float", "dynamic", "float16", "int8")


def raw_bytes(model) -> bytes:
    """Serialize without verify(), to craft deliberately broken files."""
    return _Writer(model).build(external=False)


def small_model():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    w = b.const("w", np.arange(12, dtype=np.float32).reshape(3, 4))
    y = b.op("FULLY_CONNECTED", [x, w, None], (1, 3),
             options=options("FullyConnectedOptions", fusedActivationFunction=1))
    return b.build([y])


def assert_round_trip(model):
    again = qengine.load(model.to_bytes())
    again.verify()
    assert diff(model, again) == []
    assert again.to_bytes() == model.to_bytes()  # the writer is deterministic
    return again


# -- round trips ------------------------------------------------------------------------------


def test_example_round_trip_is_equal_ir():
    assert_round_trip(qengine.load(EXAMPLE))


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_corpus_round_trip_gives_identical_tflite_outputs(corpus, mode):
    from tflite_ref import run_tflite

    for name in corpus.names():
        original = corpus.path(name, mode).read_bytes()
        model = qengine.load(original)
        written = model.to_bytes()
        assert diff(model, qengine.load(written)) == [], name
        sample = corpus.sample_inputs(name, 2, seed=1)
        for x in sample:
            x = x[None]
            inputs = _as_model_input(original, x)
            want = run_tflite(original, inputs)
            got = run_tflite(written, inputs)
            for key in want:
                assert np.array_equal(want[key], got[key], equal_nan=True), (name, mode, key)


def _as_model_input(model_bytes, x):
    from tflite_ref import quantize_inputs

    return quantize_inputs(model_bytes, x)


def test_rare_features_round_trip():
    """Custom ops, sparsity, metadata, signatures, per-axis quantization, several subgraphs."""
    b = GraphBuilder()
    x = b.input("x", (2, 3), dynamic_batch=True)
    w = b.const("w", np.ones((3, 3), np.int8),
                quantization=Quantization(np.array([0.5, 0.25, 0.125]), np.zeros(3), axis=0))
    w.sparsity = fb.SparsityParametersT()
    w.sparsity.traversalOrder = np.array([0, 1], np.int32)
    dense = fb.DimensionMetadataT()
    dense.format, dense.denseSize = fb.DimensionType.DENSE, 3
    w.sparsity.dimMetadata = [dense, dense]
    custom = b.op("MyCustom", [x, w], (2, 3), custom_code="MyCustom",
                  custom_options=bytes(range(256)) * 3)
    model = b.build([custom])
    model.metadata["min_runtime_version"] = Buffer(b"1.14.0".ljust(16, b"\0"))
    model.metadata["notes"] = Buffer(b"\x00\x01binary\xff")
    body = GraphBuilder("body")
    i = body.input("i", ())
    one = body.const("one", np.float32(1))
    model.subgraphs.append(body.build([body.op("ADD", [i, one], ())]).main)
    from qengine.ir import SignatureDef

    model.signatures.append(SignatureDef("serving_default", model.main, {"in": x},
                                         {"out": custom}))
    again = assert_round_trip(model)
    op = again.main.operators[0]
    assert op.custom_options == bytes(range(256)) * 3
    assert again.main.inputs[0].shape_signature == (-1, 3)
    q = again.main.tensor("w").quantization
    assert q.axis == 0 and q.scale.tolist() == [0.5, 0.25, 0.125]


def test_file_layout_follows_the_converter():
    data = small_model().to_bytes()
    assert data[4:8] == b"TFL3"
    root = fb.Model.GetRootAs(data, 0)
    assert root.Version() == 3
    assert root.Buffers(0).DataLength() == 0  # the empty sentinel
    for i in range(1, root.BuffersLength()):
        buf = root.Buffers(i)
        start = buf._tab.Vector(buf._tab.Offset(4))
        assert start % 16 == 0, "buffer data must be 16-byte aligned"
    assert data.endswith(bytes(16)), "16 bytes of tail padding after the last buffer"


def test_opcode_fields_for_codes_above_127():
    b = GraphBuilder()
    x = b.input("x", (4,))
    y = b.op("GELU", [x], (4,))  # GELU is 150
    code = fb.Model.GetRootAs(b.build([y]).to_bytes(), 0).OperatorCodes(0)
    assert code.BuiltinCode() == fb.BuiltinOperator.GELU == 150
    assert code.DeprecatedBuiltinCode() == 127
    b = GraphBuilder()
    x = b.input("x", (4,))
    code = fb.Model.GetRootAs(b.build([b.op("RELU", [x], (4,))]).to_bytes(), 0).OperatorCodes(0)
    assert code.BuiltinCode() == code.DeprecatedBuiltinCode() == fb.BuiltinOperator.RELU


def test_buffers_outside_the_flatbuffer_when_too_large():
    model = qengine.load(EXAMPLE)
    data = model.to_bytes(external_threshold=1024)
    root = fb.Model.GetRootAs(data, 0)
    offsets = [root.Buffers(i).Offset() for i in range(root.BuffersLength())]
    assert any(o > 1 for o in offsets) and all(o % 16 == 0 for o in offsets if o > 1)
    assert all(root.Buffers(i).DataLength() == 0 for i in range(root.BuffersLength()))
    again = qengine.load(data)
    assert diff(model, again) == []


@pytest.mark.tf
def test_tflite_runs_the_external_buffer_layout():
    from tflite_ref import run_tflite

    original = EXAMPLE.read_bytes()
    external = qengine.load(original).to_bytes(external_threshold=1024)
    x = np.random.default_rng(0).random((1, 28, 28), np.float32)
    want, got = run_tflite(original, x), run_tflite(external, x)
    for key in want:
        assert np.array_equal(want[key], got[key])


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous contents")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        small_model().save(target)
    assert target.read_bytes() == b"previous contents"
    assert list(tmp_path.iterdir()) == [target], "no temporary file left behind"
    monkeypatch.undo()
    small_model().save(target)
    assert diff(qengine.load(target), small_model()) == []


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("data, message", [
    (b"", "too short"),
    (b"\x10\x00\x00\x00TFL2" + bytes(32), "identifier"),
    (b"hello world, not a model", "identifier"),
    (b"\xff\xff\xff\x7fTFL3", "root offset"),
])
def test_not_a_model(data, message):
    with pytest.raises(InvalidModelError, match=message):
        qengine.load(data)


def test_truncated_file():
    data = EXAMPLE.read_bytes()
    for cut in (9, 100, len(data) // 2, len(data) - 40):
        with pytest.raises(InvalidModelError):
            qengine.load(data[:cut])


def test_missing_file(tmp_path):
    with pytest.raises(InvalidModelError, match="cannot read"):
        qengine.load(tmp_path / "nope.tflite")


def _broken(mutate):
    model = small_model()
    mutate(model)
    return raw_bytes(model)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: setattr(m.main.tensors[0], "shape", (1, -4)), "negative dimension"),
    (lambda m: setattr(m.main.tensors[0], "shape", (1 << 30, 1 << 30, 1 << 10)), "absurd"),
    (lambda m: setattr(m.main.tensors[1], "shape", (3, 5)), "needs 60 bytes"),
    (lambda m: m.main.operators[0].inputs.__setitem__(0, m.main.operators[0].outputs[0]),
     "before any op writes it"),
    (lambda m: setattr(m.main.tensors[1], "quantization",
                       Quantization(np.ones(2), np.zeros(2), axis=5)), "quantized_dimension"),
])
def test_inconsistent_graph(mutate, message):
    with pytest.raises(InvalidModelError, match=message):
        qengine.load(_broken(mutate))


def _patch_int32(data: bytes, old: int, new: int, nth: int = 0) -> bytes:
    """Rewrite the nth little-endian int32 equal to `old` (for index corruption)."""
    needle = struct.pack("<i", old)
    position = -1
    for _ in range(nth + 1):
        position = data.index(needle, position + 1)
    return data[:position] + struct.pack("<i", new) + data[position + 4:]


def test_out_of_range_indices():
    data = small_model().to_bytes()
    root = fb.Model.GetRootAs(data, 0)
    op = root.Subgraphs(0).Operators(0)
    inputs_at = op._tab.Vector(op._tab.Offset(6))
    for bad in (99, -7):
        corrupt = bytearray(data)
        corrupt[inputs_at:inputs_at + 4] = struct.pack("<i", bad)
        with pytest.raises(InvalidModelError, match="out of range"):
            qengine.load(bytes(corrupt))
    tensor = root.Subgraphs(0).Tensors(1)
    corrupt = bytearray(data)
    position = tensor._tab.Pos + tensor._tab.Offset(8)
    corrupt[position:position + 4] = struct.pack("<I", 1000)
    with pytest.raises(InvalidModelError, match="buffer"):
        qengine.load(bytes(corrupt))


def test_out_of_range_opcode_index():
    model = small_model()
    relu_out = Tensor("relu_out", (1, 3), "float32")
    model.main.operators.append(Operator(OpCode("RELU"), [model.main.outputs[0]], [relu_out]))
    model.main.outputs = model.main.operators[-1].outputs
    data = model.to_bytes()
    op = fb.Model.GetRootAs(data, 0).Subgraphs(0).Operators(1)
    assert op.OpcodeIndex() == 1
    corrupt = bytearray(data)
    position = op._tab.Pos + op._tab.Offset(4)
    corrupt[position:position + 4] = struct.pack("<I", 77)
    with pytest.raises(InvalidModelError, match="opcode"):
        qengine.load(bytes(corrupt))


def test_bad_signature_subgraph_index():
    model = small_model()
    from qengine.ir import SignatureDef

    second = small_model().main
    model.subgraphs.append(second)
    model.signatures.append(SignatureDef("s", second, {}, {}))
    data = model.to_bytes()
    sig = fb.Model.GetRootAs(data, 0).SignatureDefs(0)
    position = sig._tab.Pos + sig._tab.Offset(12)  # subgraph_index (slot 4; slot 3 is deprecated)
    assert sig._tab.Offset(12) != 0
    corrupt = bytearray(data)
    corrupt[position:position + 4] = struct.pack("<I", 5)
    with pytest.raises(InvalidModelError, match="signature"):
        qengine.load(bytes(corrupt))
