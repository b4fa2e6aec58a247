"""Compare qengine's interpreter with TFLite's on the same file and the same inputs.

Integer outputs must be equal. Float outputs must agree within `rel` times the range of
TFLite's output (plus a tiny absolute floor for all-zero outputs): float32 summation order
differs between implementations, so bitwise equality is not expected for them.
"""

from __future__ import annotations

import importlib.util
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from tflite_ref import run_tflite

import qengine
from qengine.ir import Model

FLOAT_REL = 1e-5  # the default float tolerance, relative to the output's range


def rng(*key) -> np.random.Generator:
    """A generator seeded by a test's parameters. Not hash(): a str's hash changes from process
    to process (PYTHONHASHSEED), and so would the test's data; crc32 of the repr does not."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def model_bytes(model) -> bytes:
    return model.to_bytes() if isinstance(model, Model) else bytes(model)


def assert_close(name: str, got: np.ndarray, want: np.ndarray, rel: float = FLOAT_REL) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != TFLite {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != TFLite {want.dtype}"
    if want.dtype.kind in "iub":
        mismatches = np.count_nonzero(got != want)
        assert mismatches == 0, (
            f"{name}: {mismatches}/{want.size} integer outputs differ; first at "
            f"{np.argwhere(got != want)[0].tolist()}: {got[got != want][0]} vs {want[got != want][0]}")
        return
    finite = np.isfinite(want)
    assert np.array_equal(finite, np.isfinite(got)), f"{name}: inf/nan pattern differs"
    if not finite.any():
        return
    values = want[finite].astype(np.float64)
    # the scale of the output: its range, or its magnitude for near-constant outputs, and at
    # least 0.01 so that outputs that are all ~0 are not held to a meaningless bound
    bound = rel * max(float(np.ptp(values)), float(np.abs(values).max()), 1e-2)
    diff = float(np.abs(got[finite].astype(np.float64) - values).max())
    assert diff <= bound, (
        f"{name}: max |diff| {diff:.3g} exceeds {bound:.3g} ({rel:g} of the output range)")


def check_against_tflite(model, inputs, rel: float = FLOAT_REL, resolver: str = "ref",
                         arithmetic: str = "ref") -> dict[str, np.ndarray]:
    """Run both interpreters; assert every output matches; return qengine's outputs."""
    data = model_bytes(model)
    want = run_tflite(data, inputs, resolver=resolver)
    got = qengine.Interpreter(data, arithmetic=arithmetic).run(inputs)
    assert set(got) == set(want), f"output names differ: {sorted(got)} vs {sorted(want)}"
    for name in want:
        assert_close(name, np.asarray(got[name]), np.asarray(want[name]), rel)
    return got


def op_by_op(model_bytes: bytes, inputs, resolver: str = "ref") -> list[tuple[int, object, float]]:
    """Feed every op TFLite's own input tensors and compare with TFLite's output tensors.

    Returns (op index, op, max |diff| relative to the output's range) per op output TFLite lets
    us read. This separates an op's own arithmetic from differences it inherits: hybrid ops, for
    instance, re-quantize their input on the fly, so an upstream float rounding difference can
    flip an int8 value there even though the op itself is exact.
    """
    from tflite_ref import make_interpreter

    model = qengine.load(model_bytes)
    interpreter = qengine.Interpreter(model)
    tfl = make_interpreter(model_bytes, resolver, preserve_all=True)
    details = tfl.get_input_details()
    arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    for d, x in zip(details, arrays):
        if tuple(d["shape"]) != np.shape(x):
            tfl.resize_tensor_input(d["index"], np.shape(x))
    tfl.allocate_tensors()
    for d, x in zip(details, arrays):
        tfl.set_tensor(d["index"], x)
    tfl.invoke()
    index = {id(t): i for i, t in enumerate(model.main.tensors)}

    def value(t):
        try:
            return tfl.get_tensor(index[id(t)])
        except (ValueError, KeyError):
            return None

    results = []
    for i, op in enumerate(model.main.operators):
        feeds = {t.name: value(t) for t in op.inputs if t is not None and not t.is_constant}
        if any(v is None for v in feeds.values()):
            continue
        for t, got in zip(op.outputs, interpreter.run_op(i, feeds)):
            want = value(t)
            if want is None or want.size == 0:
                continue
            if want.dtype == bool:
                results.append((i, op, float(np.count_nonzero(got != want))))
                continue
            diff = float(np.abs(got.astype(np.float64) - want).max())
            # relative to the output's spread or magnitude (at least 1e-2, as in assert_close)
            scale = max(float(np.ptp(want)), float(np.abs(want).max()), 1e-2)
            results.append((i, op, diff / scale))
    return results


# -- one op, one call ---------------------------------------------------------------------------


@dataclass
class Const:
    """An op_case input held in the model as a constant."""

    value: np.ndarray


def op_case(op: str, inputs, out_shape, out_dtype: str | None = None, *, params=None,
            options=None, out_params=None, twin=None, rel: float = FLOAT_REL,
            reference: str = "auto"):
    """Build the single-op model `op(inputs)`, run qengine, and compare its output with
    TFLite's reference kernels when ai-edge-litert is installed, else with `twin(*values)` (a
    naive NumPy/Python version); integers exactly, floats within `rel`. Returns qengine's
    output.

    `inputs`: arrays (graph inputs) or Const(array); `params`: one Quantization (or None) per
    input; `options`: an options object (qengine.builder.options(...)); `out_params`: the
    output's Quantization; `reference="twin"` compares with the twin even when TFLite is there.
    """
    from qengine.builder import GraphBuilder

    b = GraphBuilder()
    params = params or [None] * len(inputs)
    feeds, tensors = [], []
    for i, (x, q) in enumerate(zip(inputs, params)):
        if isinstance(x, Const):
            tensors.append(b.const(f"c{i}", x.value, quantization=q))
        else:
            tensors.append(b.input(f"x{i}", x.shape, str(x.dtype), q))
            feeds.append(x)
    out = b.op(op, tensors, out_shape, out_dtype, options=options, out_quantization=out_params)
    model = b.build([out])
    if reference == "auto" and importlib.util.find_spec("ai_edge_litert") is not None:
        return check_against_tflite(model, feeds, rel)[out.name]
    if twin is None:
        pytest.skip("needs ai-edge-litert or a naive twin")
    got = qengine.Interpreter(model).run(feeds)[out.name]
    values = [x.value if isinstance(x, Const) else x for x in inputs]
    assert_close(out.name, np.asarray(got), np.asarray(twin(*values)), rel)
    return got
