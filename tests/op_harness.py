"""Compare qengine's interpreter with TFLite's on the same file and the same inputs.

Integer outputs must be equal. Float outputs must agree within `rel` times the range of
TFLite's output (plus a tiny absolute floor for all-zero outputs): float32 summation order
differs between implementations, so bitwise equality is not expected for them.
"""

from __future__ import annotations

import numpy as np

import qengine
from qengine.ir import Model
from tflite_ref import run_tflite

FLOAT_REL = 1e-5  # the default float tolerance, relative to the output's range


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
