"""Mutated real models must load (and run) or fail with qengine's own errors — nothing else.

Mutations: bit flips, overwritten bytes, truncations, splices of the file into itself, and
rewrites of small int32 values (the indices a flatbuffer is full of), of the digit example and
of a file with every low-bit format (int2/int4/uint4, blockwise scales). Any other exception, a
hang, or a crash of the process fails the run.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbit_models import mixed_model

import qengine
from qengine.errors import QEngineError

EXAMPLE_BYTES = (Path(__file__).parents[1] / "examples" / "digits.tflite").read_bytes()
# int2/int4/uint4 constants, a blockwise table and its float16 scales (tests/lowbit_models.py)
LOWBIT_BYTES = mixed_model().to_bytes()


def _small_words(data: bytes) -> list[int]:
    """Positions of little-endian int32 words holding small values: tensor/buffer/opcode
    indices, shapes, vector lengths."""
    return [i for i in range(0, len(data) - 4, 4)
            if 0 <= struct.unpack_from("<i", data, i)[0] < 4096]


SMALL_WORDS = {EXAMPLE_BYTES: _small_words(EXAMPLE_BYTES), LOWBIT_BYTES: _small_words(LOWBIT_BYTES)}


@st.composite
def mutated(draw):
    base = draw(st.sampled_from([EXAMPLE_BYTES, LOWBIT_BYTES]))
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        if len(data) < 8:
            break
        kind = draw(st.sampled_from(["flip", "byte", "word", "truncate", "splice"]))
        if kind == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif kind == "word":
            i = draw(st.sampled_from(SMALL_WORDS[base]))
            value = draw(st.sampled_from([-1, 0, 1, 2, 3, 7, 255, 4096, 65535, 2**31 - 1, -2**31])
                         | st.integers(-5, 300))
            if i + 4 <= len(data):
                data[i:i + 4] = struct.pack("<i", value)
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data) - 1)):]
        else:
            start = draw(st.integers(0, len(data) - 1))
            chunk = bytes(data[start:start + draw(st.integers(1, 64))])
            at = draw(st.integers(0, len(data)))
            data[at:at + len(chunk)] = chunk
    return bytes(data)


def load_or_refuse(data: bytes):
    try:
        return qengine.load(data)
    except qengine.InvalidModelError:
        return None


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)
@given(mutated())
def test_mutated_files_load_or_raise_invalid_model_error(data):
    model = load_or_refuse(data)
    if model is not None:
        model.verify()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)
@given(mutated())
def test_mutated_files_run_or_raise_qengine_errors(data):
    model = load_or_refuse(data)
    if model is None:
        return
    try:
        interpreter = qengine.Interpreter(model)
        inputs = [_zeros_for(t) for t in interpreter.inputs]
        if any(x is None for x in inputs):
            return
        interpreter.run(inputs)
    except QEngineError:
        pass


def _zeros_for(tensor):
    if np.prod(tensor.shape, dtype=np.int64) > 1 << 22:
        return None
    try:
        return np.zeros(tensor.shape, qengine.ir.numpy_dtype(tensor.dtype))
    except QEngineError:
        return None


@pytest.mark.parametrize("cut", range(0, len(EXAMPLE_BYTES), 997))
def test_every_truncation_is_refused(cut):
    with pytest.raises(qengine.InvalidModelError):
        qengine.load(EXAMPLE_BYTES[:cut])


@pytest.mark.parametrize("cut", range(0, len(LOWBIT_BYTES), 97))
def test_every_truncation_of_a_low_bit_file_is_refused(cut):
    with pytest.raises(qengine.InvalidModelError):
        qengine.load(LOWBIT_BYTES[:cut])
