"""SCATTER_ND, DYNAMIC_UPDATE_SLICE, SPARSE_TO_DENSE, REVERSE_SEQUENCE, MATRIX_(SET_)DIAG
against TFLite's reference kernels, on the dtypes TFLite registers them for."""

import numpy as np
import pytest
from op_harness import In, check, rand, single_op

import qengine
from qengine.builder import options
from qengine.errors import InputError, InvalidModelError

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("dtype", ["float32", "int8", "uint8", "int32", "int64"])
def test_scatter_nd_adds_duplicates(dtype, index_dtype="int32"):  # TFLite: int32 only
    indices = np.array([[1, 0], [3, 2], [1, 0], [0, 4]], index_dtype)  # (1, 0) twice
    updates = rand((4, 3), dtype, seed=1) // (2 if dtype != "float32" else 1)
    check("SCATTER_ND", [In(indices), In(updates), np.array([4, 5, 3], index_dtype)])


def test_scatter_nd_whole_slices_and_bad_index():
    indices = np.array([[2], [0]], np.int32)
    check("SCATTER_ND", [In(indices), In(rand((2, 3, 2))), np.array([4, 3, 2], np.int32)])
    model, feeds = single_op("SCATTER_ND", [In(indices), In(rand((2, 3, 2))),
                                            np.array([4, 3, 2], np.int32)])
    with pytest.raises(InputError, match=r"scatter index \[7\] is outside"):
        qengine.Interpreter(model).run([np.array([[7], [0]], np.int32), feeds[1]])


@pytest.mark.parametrize("dtype", ["float32", "int8", "int32", "int64", "bool"])
@pytest.mark.parametrize("start", [[0, 0, 0], [1, 2, 1], [5, -3, 9]])  # the last is clamped
def test_dynamic_update_slice(dtype, start):
    operand, update = rand((3, 5, 4), dtype, seed=2), rand((2, 2, 3), dtype, seed=3)
    check("DYNAMIC_UPDATE_SLICE", [In(operand), In(update), In(np.array(start, np.int32))])


@pytest.mark.parametrize("dtype", ["float32", "int8", "uint8", "int32", "int64"])
def test_sparse_to_dense(dtype):
    indices = np.array([[0, 1], [2, 3], [1, 0]], np.int32)
    values, default = rand((3,), dtype, seed=4), rand((), dtype, seed=5)
    check("SPARSE_TO_DENSE", [In(indices), np.array([3, 4], np.int32), In(values),
                              In(default)])
    check("SPARSE_TO_DENSE", [In(np.array([4, 1], np.int64)), np.array([6], np.int64),
                              In(values[:1].reshape(())), In(default)])


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int16", "int32", "int64"])
@pytest.mark.parametrize("seq_dim,batch_dim", [(1, 0), (0, 1), (2, 0), (1, 2)])
def test_reverse_sequence(dtype, seq_dim, batch_dim):
    x = rand((3, 4, 5), dtype, seed=6)
    lengths = np.array([0, 1, 3, 4, 5, 2][:x.shape[batch_dim]], np.int32)
    lengths = np.minimum(lengths, x.shape[seq_dim])
    check("REVERSE_SEQUENCE", [In(x), In(lengths)],
          options("ReverseSequenceOptions", seqDim=seq_dim, batchDim=batch_dim))


@pytest.mark.parametrize("dtype", ["float32", "int8", "uint8", "int16", "int32", "int64"])
def test_matrix_diag_and_set_diag(dtype):
    check("MATRIX_DIAG", [In(rand((2, 4), dtype, seed=7))])
    for shape in [(2, 3, 5), (4, 2)]:
        x = rand(shape, dtype, seed=8)
        d = rand(shape[:-2] + (min(shape[-2:]),), dtype, seed=9)
        check("MATRIX_SET_DIAG", [In(x), In(d)])


def test_reverse_sequence_lengths_beyond_the_axis_are_refused():
    model, _ = single_op("REVERSE_SEQUENCE", [In(rand((2, 3))), np.array([1, 4], np.int32)],
                         options("ReverseSequenceOptions", seqDim=1, batchDim=0))
    with pytest.raises(InvalidModelError, match="seq_lengths"):
        qengine.Interpreter(model).run(rand((2, 3)))


def test_matrix_diag_bool_against_numpy():  # see tests/deviations.py
    d = rand((2, 4), "bool", seed=7)
    model, feeds = single_op("MATRIX_DIAG", [In(d)])
    got = qengine.Interpreter(model).run(feeds)["matrix_diag_out"]
    np.testing.assert_array_equal(got, np.stack([np.diag(row) for row in d]))
    x, new = rand((3, 4), "bool", seed=8), rand((3,), "bool", seed=9)
    model, feeds = single_op("MATRIX_SET_DIAG", [In(x), In(new)])
    want = x.copy()
    want[np.arange(3), np.arange(3)] = new
    np.testing.assert_array_equal(qengine.Interpreter(model).run(feeds)["matrix_set_diag_out"],
                                  want)
