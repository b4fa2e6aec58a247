"""RIGHT_SHIFT, BITWISE_XOR, BITCAST, ADD_N, ATAN2 and BROADCAST_ARGS against TFLite's
reference kernels, on the dtypes TFLite registers them for."""

import numpy as np
import pytest
from op_harness import In, check, rand, rng, single_op
from tflite_ref import run_tflite

import qengine

pytestmark = pytest.mark.tf

INTEGERS = ["int8", "uint8", "int16", "uint16", "int32", "uint32"]


def _ints(shape, dtype, seed):
    info = np.iinfo(dtype)
    return rng("bits", dtype, seed).integers(info.min, info.max, shape, endpoint=True,
                                             dtype=dtype)


@pytest.mark.parametrize("dtype", INTEGERS)
def test_right_shift_clamps_the_shift(dtype):
    x = _ints((4, 6), dtype, 1)
    bits = np.dtype(dtype).itemsize * 8
    low = -3 if np.dtype(dtype).kind == "i" else 0
    y = rng("shift", dtype).integers(low, bits + 3, (4, 6)).astype(dtype)  # some out of range
    check("RIGHT_SHIFT", [In(x), In(y)])
    check("RIGHT_SHIFT", [In(x), In(y[:1])])  # broadcast


@pytest.mark.parametrize("dtype", INTEGERS)
def test_bitwise_xor(dtype):
    check("BITWISE_XOR", [In(_ints((3, 5), dtype, 2)), In(_ints((1, 5), dtype, 3))])


@pytest.mark.parametrize("src,dst,shape", [
    ("float32", "int32", (2, 3)), ("int32", "uint8", (2, 3)), ("uint8", "int32", (2, 4)),
    ("int16", "float16", (5,)), ("int64", "int32", (3,)), ("uint16", "int8", (2, 2))])
def test_bitcast(src, dst, shape):
    x = _ints(shape, src, 4) if src != "float32" else rand(shape)
    model, feeds = single_op("BITCAST", [In(x)], out_dtype=dst)
    want = run_tflite(model.to_bytes(), feeds)["bitcast_out"]
    got = qengine.Interpreter(model).run(feeds)["bitcast_out"]
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("n", [2, 5])  # TFLite refuses one input
def test_add_n(dtype, n):
    check("ADD_N", [In(rand((3, 4), dtype, seed=i)) for i in range(n)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_atan2(dtype):
    y, x = rand((4, 5), seed=5).astype(dtype), rand((4, 5), seed=6).astype(dtype)
    x[0, :3] = [0.0, -0.0, 0.0]
    y[0, :3] = [0.0, 0.0, -1.0]
    check("ATAN2", [In(y), In(x)])


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_broadcast_args(dtype):
    check("BROADCAST_ARGS", [In(np.array([2, 1, 4], dtype)), In(np.array([3, 1], dtype))])
    check("BROADCAST_ARGS", [In(np.array([5], dtype)), In(np.array([1, 5], dtype))])
