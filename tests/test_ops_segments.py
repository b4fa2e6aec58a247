"""SEGMENT_SUM and UNSORTED_SEGMENT_* against TFLite's reference kernels."""

import numpy as np
import pytest
from op_harness import In, check, rand, single_op

import qengine
from qengine.errors import InputError

pytestmark = pytest.mark.tf

UNSORTED = ["UNSORTED_SEGMENT_SUM", "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX",
            "UNSORTED_SEGMENT_MIN"]


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("ids", [[0, 0, 1, 2, 2], [0, 0, 0, 0, 0], [0, 1, 2, 3, 4]])
def test_segment_sum(dtype, ids):
    data = rand((5, 3), dtype, seed=1)
    # BUILTIN_REF lacks SEGMENT_SUM and the unsorted ops: TFLite's builtin kernels are the oracle
    check("SEGMENT_SUM", [In(data), In(np.array(ids, np.int32))], resolver="nodelegate")
    check("SEGMENT_SUM", [In(data), np.array(ids, np.int32)], resolver="nodelegate")


def test_unsorted_ids_for_segment_sum_are_refused():
    model, feeds = single_op("SEGMENT_SUM", [In(rand((3, 2))), In(np.array([0, 1, 1], np.int32))])
    for ids in ([1, 0, 1], [0, 2, 2], [1, 1, 1]):  # TFLite fails these at invoke
        with pytest.raises(InputError, match="must be sorted, start at 0 and skip no segment"):
            qengine.Interpreter(model).run([feeds[0], np.array(ids, np.int32)])


@pytest.mark.parametrize("op", UNSORTED)
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_unsorted_segments(op, dtype):
    data = rand((4, 3, 2), dtype, seed=2) % (5 if dtype == "int32" else 1000)
    ids = np.array([[3, 0, 3], [1, 3, 0], [0, 0, 1], [3, 1, 1]], np.int32)  # segment 2: empty
    check(op, [In(data), In(ids), np.array(5, np.int32)], resolver="nodelegate")  # 4 empty too
    check(op, [In(data), In(ids[:, 0]), np.array(4, np.int32)], resolver="nodelegate")
