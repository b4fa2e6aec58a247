"""Compare qengine's interpreter with TFLite's on the same file and the same inputs.

Integer outputs must be equal. Float outputs must agree within `rel` times the range of
TFLite's output (plus a tiny absolute floor for all-zero outputs): float32 summation order
differs between implementations, so bitwise equality is not expected for them.
"""

from __future__ import annotations

import importlib.util
import zlib

import numpy as np
import pytest
from tflite_ref import run_tflite

import qengine
from qengine.builder import GraphBuilder
from qengine.ir import Model

FLOAT_REL = 1e-5  # the default float tolerance, relative to the output's range


def rng(*key) -> np.random.Generator:
    """A generator seeded by a test's parameters. Not hash(): a str's hash changes from process
    to process (PYTHONHASHSEED), and so would the test's data; crc32 of the repr does not."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _float_pairs(x: np.ndarray) -> np.ndarray:
    """A complex array as float pairs (real, imaginary) along a new last axis."""
    return np.stack([x.real, x.imag], axis=-1)


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
    if want.dtype.kind == "c":  # real and imaginary parts, each as a float output
        for part in ("real", "imag"):
            assert_close(f"{name} ({part} part)", getattr(got, part), getattr(want, part), rel)
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
            if want.dtype.kind == "c":  # compare real and imaginary parts side by side
                got, want = _float_pairs(got), _float_pairs(want)
            diff = float(np.abs(got.astype(np.float64) - want).max())
            # relative to the output's spread or magnitude (at least 1e-2, as in assert_close)
            scale = max(float(np.ptp(want)), float(np.abs(want).max()), 1e-2)
            results.append((i, op, diff / scale))
    return results


# -- single-op models --------------------------------------------------------------------------


class In:
    """A runtime input of the single-op model (anything else passed to single_op is a constant)."""

    def __init__(self, value, quantization=None, dynamic_batch=False):
        self.value = np.asarray(value)
        self.quantization = quantization
        self.dynamic_batch = dynamic_batch


class Const:
    """A constant input that carries quantization."""

    def __init__(self, value, quantization=None):
        self.value = np.asarray(value)
        self.quantization = quantization


def single_op(op, args, opts=None, out_dtype=None, n_outputs=1, out_quantization=None,
              version=1):
    """(model, runtime inputs) for one op whose inputs are `args` (In, constant array or None)."""
    b = GraphBuilder()
    tensors, feeds = [], []
    for i, arg in enumerate(args):
        if arg is None:
            tensors.append(None)
        elif isinstance(arg, In):
            tensors.append(b.input(f"x{i}", arg.value.shape, str(arg.value.dtype),
                                   arg.quantization, dynamic_batch=arg.dynamic_batch))
            feeds.append(arg.value)
        elif isinstance(arg, Const):
            tensors.append(b.const(f"c{i}", arg.value, quantization=arg.quantization))
        else:
            tensors.append(b.const(f"c{i}", np.asarray(arg)))
            # Tensor.data's setter stores 0-d values as shape (1,); TFLite tells them apart
            tensors[-1].shape = np.shape(arg)
    shapes = [()] * n_outputs if n_outputs > 1 else ()
    out = b.op(op, tensors, shapes, out_dtype, options=opts, n_outputs=n_outputs,
               out_quantization=out_quantization, version=version)
    return b.build(outputs=out if n_outputs > 1 else [out]), feeds


def check(op, args, opts=None, resolver="ref", **kwargs):
    model, feeds = single_op(op, args, opts, **kwargs)
    return check_against_tflite(model, feeds, resolver=resolver)


def rand(shape, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -100), min(info.max, 100), shape, endpoint=True,
                        dtype=dtype)


# -- one op, one call ---------------------------------------------------------------------------


def op_case(op: str, args, opts=None, *, twin=None, rel: float = FLOAT_REL,
            reference: str = "auto", **kwargs) -> dict[str, np.ndarray]:
    """Build the single-op model `op(args)` (single_op's conventions: In(...) runtime inputs,
    Const(...) or arrays constants), run qengine, and compare it with TFLite's reference
    kernels when ai-edge-litert is installed, else with `twin(*values)` (a naive NumPy/Python
    version of the op); integers exactly, floats within `rel`. Returns qengine's outputs.
    `reference="twin"` uses the twin even where TFLite is installed.
    """
    model, feeds = single_op(op, args, opts, **kwargs)
    if reference == "auto" and importlib.util.find_spec("ai_edge_litert") is not None:
        return check_against_tflite(model, feeds, rel)
    if twin is None:
        pytest.skip("needs ai-edge-litert or a naive twin")
    got = qengine.Interpreter(model).run(feeds)
    name = model.main.outputs[0].name
    values = [a.value if isinstance(a, (In, Const)) else np.asarray(a) for a in args]
    assert_close(name, np.asarray(got[name]), np.asarray(twin(*values)), rel)
    return got


# -- inputs for the hybrid quantizers ------------------------------------------------------------


def non_finite_rows(r: np.random.Generator, depth: int) -> np.ndarray:
    """float32 [B, depth] rows that exercise the hybrid quantizers outside finite ranges: NaN,
    +inf and -inf at every position (so in the 16-lane vectors, the rest of the blocks of 8, the
    scalar tail, each lane of NeonMinMax's vectors and of its tail); both infinities; NaN with an
    infinity; NaN in rows of one sign (zero points -128 and 127); NaNs that hide a large value
    from the min and max (whose product then leaves int32 or the clamp range); all-NaN rows;
    rows of denormals, where 127 / range overflows to inf (and 0 · inf is NaN)."""
    def base():
        return (r.normal(size=depth) * 3 + r.normal() * 2).astype(np.float32)

    rows = []
    for p in range(depth):
        for special in (np.nan, np.inf, -np.inf):
            rows.append(base())
            rows[-1][p] = special
        rows.append(base())
        rows[-1][[p, (5 * p + 1) % depth]] = [np.inf, -np.inf]
        rows.append(base())
        rows[-1][[p, (3 * p + 2) % depth]] = [np.nan, np.inf if p % 2 else -np.inf]
        rows += [np.abs(base()), -np.abs(base())]
        rows[-2][p] = rows[-1][p] = np.nan
    last = (depth & ~3) - 4  # NeonMinMax's last whole vector of 4
    for big in (1e4, 1e10, -1e10):
        for where, nan in [(last + 1, last + 3), (last, last + 2), (last - 4, last),  # lanes
                           (2, 5), (0, 3)]:  # minmax_element's max given way to a later value
            if 0 <= where < depth and 0 <= nan < depth and where != nan:
                rows.append(base())
                rows[-1][[where, nan]] = [big, np.nan]
    rows.append(np.full(depth, np.nan, np.float32))
    for scale in (1e-39, 1e-42, 1e-45):
        rows += [base() * np.float32(scale), np.abs(base()) * np.float32(scale)]
    rows.append(np.where(np.arange(depth) % 3 == 0, 0, base() * np.float32(1e-40)))
    return np.array(rows, np.float32)
