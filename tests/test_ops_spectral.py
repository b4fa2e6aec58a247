"""RFFT2D, REAL, IMAG and COMPLEX_ABS against TFLite's reference kernels."""

import numpy as np
import pytest
from op_harness import In, assert_close, rand, single_op
from tflite_ref import run_tflite

import qengine

pytestmark = pytest.mark.tf


def _compare(model, feeds):
    want = run_tflite(model.to_bytes(), feeds)
    got = qengine.Interpreter(model).run(feeds)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        if w.dtype.kind == "c":  # the real and imaginary parts, each within the tolerance
            assert_close(name + ".real", g.real.copy(), w.real.copy())
            assert_close(name + ".imag", g.imag.copy(), w.imag.copy())
        else:
            assert_close(name, g, w)


@pytest.mark.parametrize("shape,fft", [((4, 8), (4, 8)), ((2, 3, 5, 6), (4, 8)),
                                       ((8, 8), (2, 4)), ((1, 16), (1, 16)),
                                       ((2, 7, 1, 20), (1, 16)), ((3, 5, 12), (1, 32))])
def test_rfft2d_crops_and_pads(shape, fft):
    model, feeds = single_op("RFFT2D", [In(rand(shape)), np.array(fft, np.int32)],
                             out_dtype="complex64")
    _compare(model, feeds)


@pytest.mark.parametrize("op", ["REAL", "IMAG", "COMPLEX_ABS"])
@pytest.mark.parametrize("dtype,real", [("complex64", "float32"), ("complex128", "float64")])
def test_complex_parts(op, dtype, real):
    z = (rand((3, 4), seed=1) + 1j * rand((3, 4), seed=2)).astype(dtype)
    model, feeds = single_op(op, [In(z)], out_dtype=real)
    _compare(model, feeds)


@pytest.mark.parametrize("shape,width", [((2, 7, 1, 20), 16), ((3, 5, 12), 32), ((1, 9, 1, 64), 64)])
def test_rfft2d_of_height_1_equals_numpys_rfft2(shape, width):
    """Height 1 (the framed STFTs of audio models) runs as a 1-D rfft of each first row:
    bit for bit what np.fft.rfft2 over both axes gives, in float64 rounded to complex64."""
    x = rand(shape)
    model, feeds = single_op("RFFT2D", [In(x), np.array([1, width], np.int32)],
                             out_dtype="complex64")
    got = next(iter(qengine.Interpreter(model).run(feeds).values()))
    want = np.fft.rfft2(x.astype(np.float64), s=(1, width)).astype(np.complex64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.float32), want.view(np.float32))
