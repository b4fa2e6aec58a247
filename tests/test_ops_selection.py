"""TOPK_V2, UNIQUE, BUCKETIZE and NON_MAX_SUPPRESSION_V4/V5 against TFLite's reference kernels,
with many ties: the order among equal values is part of what must match."""

import numpy as np
import pytest
from op_harness import In, check_against_tflite, rand, rng, single_op

from qengine.builder import options


def check(op, args, opts=None, out_dtypes=()):
    """One op whose outputs have the dtypes given (the builder gives each the input's)."""
    model, feeds = single_op(op, args, opts, n_outputs=max(len(out_dtypes), 1))
    for t, dtype in zip(model.main.outputs, out_dtypes):
        t.dtype = dtype
    return check_against_tflite(model, feeds)

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int8", "int32", "int64"])
@pytest.mark.parametrize("k", [1, 4, 9])  # k = 0: TFLite's Python API cannot read empty outputs
def test_topk_with_ties(dtype, k):
    x = (rand((3, 9), dtype, seed=k) % 4).astype(dtype)  # few distinct values: many ties
    check("TOPK_V2", [In(x), np.array(k, np.int32)], out_dtypes=(dtype, "int32"))
    # k known only at run time
    check("TOPK_V2", [In(x[0]), In(np.array(k, np.int32))], out_dtypes=(dtype, "int32"))


@pytest.mark.parametrize("dtype", ["float32", "int8", "uint8", "int16", "int32", "int64"])
@pytest.mark.parametrize("idx_type", [2, 4])  # int32, int64
def test_unique(dtype, idx_type):
    x = (rand((17,), dtype, seed=3) % 5).astype(dtype)
    check("UNIQUE", [In(x)], options("UniqueOptions", idxOutType=idx_type),
          out_dtypes=(dtype, {2: "int32", 4: "int64"}[idx_type]))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_bucketize(dtype):
    x = rng("bucketize", dtype).integers(-6, 7, (4, 5)).astype(dtype)
    x[0, :3] = [-2.0, 0.0, 3.0]  # exactly on boundaries
    check("BUCKETIZE", [In(x)], options("BucketizeOptions", boundaries=[-2.0, 0.0, 0.5, 3.0]),
          out_dtypes=("int32",))


def _boxes(n: int, seed: int) -> np.ndarray:
    g = rng("nms", seed)
    corners = g.uniform(0, 10, (n, 2)).astype(np.float32)
    sizes = g.uniform(1, 4, (n, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + sizes], axis=1)
    boxes[1::4] = boxes[1::4][:, [2, 3, 0, 1]]  # some boxes with their corners swapped
    return boxes


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_out", [0, 3, 20])
def test_nms_v4_with_tied_scores(seed, max_out):
    n = 24
    scores = (rng("scores", seed).integers(0, 5, n) / 4).astype(np.float32)  # many ties
    args = [In(_boxes(n, seed)), In(scores), np.array(max_out, np.int32),
            In(np.array(0.3, np.float32)), In(np.array(0.2, np.float32))]
    check("NON_MAX_SUPPRESSION_V4", args, out_dtypes=("int32", "int32"))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_nms_v5_soft(seed, sigma):
    n = 20
    scores = (rng("scores5", seed).integers(1, 6, n) / 5).astype(np.float32)
    args = [In(_boxes(n, seed)), In(scores), np.array(12, np.int32),
            In(np.array(0.6, np.float32)), In(np.array(0.1, np.float32)),
            In(np.array(sigma, np.float32))]
    check("NON_MAX_SUPPRESSION_V5", args, out_dtypes=("int32", "float32", "int32"))
