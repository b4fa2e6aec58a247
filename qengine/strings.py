"""TFLite's string tensors: the buffer layout and the NumPy form qengine computes with.

A string tensor's bytes are: int32 count N, then N + 1 int32 offsets (from the start of the
buffer; the last one is the buffer's end), then the strings' bytes. qengine holds such a
tensor as a NumPy object array of `bytes`, as TFLite's Python API returns it.
"""

from __future__ import annotations

import itertools

import numpy as np

from .errors import InputError, InvalidModelError


def decode(raw: bytes, shape: tuple[int, ...], name: str = "") -> np.ndarray:
    data = bytes(raw)
    if len(data) < 4:
        raise InvalidModelError(f"string tensor {name!r}: {len(data)} bytes, no count")
    count = int(np.frombuffer(data[:4], "<i4")[0])
    header = 4 * (count + 2)
    if count < 0 or len(data) < header:
        raise InvalidModelError(f"string tensor {name!r}: count {count} does not fit its "
                                f"{len(data)} bytes")
    offsets = np.frombuffer(data[4:header], "<i4")
    if np.any(np.diff(offsets) < 0) or offsets[0] < header or offsets[-1] > len(data):
        raise InvalidModelError(f"string tensor {name!r}: offsets out of order or range")
    values = np.empty(count, object)
    values[:] = [data[a:b] for a, b in itertools.pairwise(offsets)]
    if int(np.prod(shape)) != count:
        raise InvalidModelError(f"string tensor {name!r} of shape {shape} holds {count} "
                                f"strings")
    return values.reshape(shape)


def as_strings(name: str, array) -> np.ndarray:
    """A user's array of str or bytes as an object array of bytes."""
    array = np.asarray(array)
    if array.dtype.kind not in "SUO":
        raise InputError(f"input {name!r} expects strings, got dtype {array.dtype}")
    out = np.empty(array.shape, object)
    for index, value in np.ndenumerate(array):
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, (bytes, np.bytes_)):
            raise InputError(f"input {name!r} expects strings, got {type(value).__name__}")
        out[index] = bytes(value)
    return out
