"""Helpers the CLI commands share (argument types, reading and generating inputs).

Every `cli*` module and `bench` imports these from here, never from each other, so the
command modules form no import cycle.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import InputError


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def generated_inputs(tensors, seed: int) -> list[np.ndarray]:
    """Deterministic inputs: floats ~ U[0, 1), integers over a small non-negative range."""
    rng = np.random.default_rng(seed)
    arrays = []
    for t in tensors:
        from .ir import numpy_dtype

        dtype = numpy_dtype(t.dtype)
        if dtype.kind == "f":
            array = rng.random(t.shape, dtype=np.float32).astype(dtype)
        elif dtype.kind == "b":
            array = rng.random(t.shape) < 0.5
        elif dtype in (np.int8, np.uint8, np.int16):
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, t.shape, endpoint=True, dtype=dtype)
        else:
            array = rng.integers(0, 10, t.shape).astype(dtype)
        print(f"input {t.name!r}: generated {dtype} {tuple(t.shape)} (seed {seed}); pass "
              f"--input to use your own", file=sys.stderr)
        arrays.append(array)
    return arrays


def read_inputs(path: str, tensors, model) -> dict | list:
    path = Path(path)
    if path.suffix == ".npy":
        if len(tensors) != 1:
            raise InputError(f"{path} holds one array but the model has {len(tensors)} inputs "
                             f"({', '.join(t.name for t in tensors)}); use an .npz keyed by "
                             f"input name")
        return [_load_array(path)]
    if path.suffix != ".npz":
        raise InputError(f"{path}: expected a .npy or .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None
    names = [t.name for t in tensors]
    aliases = {name for sig in model.signatures for name in sig.inputs}
    for key in arrays:
        if key not in names and key not in aliases:
            raise InputError(f"{path}: key {key!r} is not an input; inputs are "
                             f"{', '.join(repr(n) for n in names)}")
    return arrays


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable .npy file ({e})") from None
