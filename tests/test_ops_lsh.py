"""LSH_PROJECTION against TFLite's kernel: dense and sparse, with and without weights, on
rows long enough to take every FarmHash length path (<=16, <=32, <=64 and > 64 bytes)."""

import numpy as np
import pytest
from op_harness import In, check, rng

from qengine.builder import options

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("kind", [1, 2])  # SPARSE, DENSE
@pytest.mark.parametrize("row", [(), (3,), (6,), (20,), (40,)])  # key bytes 8, 16, 28, 84, 164
@pytest.mark.parametrize("weighted", [False, True])
def test_lsh_projection(kind, row, weighted):
    g = rng("lsh", kind, row, weighted)
    seeds = g.standard_normal((4, 5)).astype(np.float32)
    x = g.integers(-50, 50, (7,) + row).astype(np.int32)
    args = [seeds, In(x)] + ([In(g.standard_normal(7).astype(np.float32))] if weighted else [])
    check("LSH_PROJECTION", args, options("LSHProjectionOptions", type=kind),
          out_dtype="int32")


@pytest.mark.parametrize("dtype", ["float32", "int8", "int64"])
def test_lsh_projection_dtypes(dtype):
    g = rng("lsh-dtype", dtype)
    x = (g.standard_normal((5, 2)) * 20).astype(dtype)
    check("LSH_PROJECTION", [g.standard_normal((3, 8)).astype(np.float32), In(x)],
          options("LSHProjectionOptions", type=1), out_dtype="int32")
