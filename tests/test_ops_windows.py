"""REDUCE_WINDOW and EMBEDDING_LOOKUP_SPARSE against TFLite's reference kernels."""

import numpy as np
import pytest
from op_harness import In, check, check_against_tflite, rand, single_op

from qengine.builder import options

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("function,dtypes", [(1, ["float32", "int32", "int8"]),
                                             (2, ["float32", "int64"]),
                                             (3, ["float32", "int16"]), (4, ["float32", "uint8"]),
                                             (5, ["bool"]), (6, ["bool"])])
@pytest.mark.parametrize("window,strides,dilations", [
    ([1, 2, 2], [1, 1, 1], [1, 1, 1]), ([2, 3, 1], [1, 2, 1], [1, 1, 1]),
    ([1, 2, 2], [1, 2, 3], [1, 2, 1])])
def test_reduce_window(function, dtypes, window, strides, dilations):
    for dtype in dtypes:
        x = rand((3, 7, 8), dtype, seed=function)
        if dtype in ("int8", "int16", "uint8", "int64", "int32"):
            x = (x % 4).astype(dtype)  # products and sums stay in range
        init = np.array(0 if function in (1, 6) else 1 if function in (2, 5) else
                        x.max() if function == 3 else x.min()).astype(dtype)
        model, feeds = single_op("REDUCE_WINDOW", [
            In(x), In(init), np.array(window, np.int64), np.array(strides, np.int64),
            np.array(dilations, np.int64)])
        # ReduceWindowOptions live in the operator's builtin_options_2 union
        model.main.operators[0].options2 = options("ReduceWindowOptions",
                                                   reduceFunction=function)
        check_against_tflite(model, feeds)


@pytest.mark.parametrize("combiner", [0, 1, 2])  # SUM, MEAN, SQRTN
@pytest.mark.parametrize("rank", [2, 3])
def test_embedding_lookup_sparse(combiner, rank):
    if rank == 2:  # 3 rows; row 1 has no entries
        indices = np.array([[0, 0], [0, 1], [2, 0], [2, 3], [2, 4]], np.int32)
        dense = np.array([3, 5], np.int32)
    else:
        indices = np.array([[0, 0, 0], [0, 1, 2], [1, 0, 0], [1, 0, 1], [1, 1, 0]], np.int32)
        dense = np.array([2, 2, 3], np.int32)
    ids = np.array([1, 3, 0, 3, 2], np.int32)
    weights = np.array([1.0, 2.0, 0.5, -1.5, 3.0], np.float32)
    params = rand((4, 3, 2), seed=7)
    check("EMBEDDING_LOOKUP_SPARSE", [In(ids), In(indices), dense, In(weights), params],
          options("EmbeddingLookupSparseOptions", combiner=combiner), out_dtype="float32")
