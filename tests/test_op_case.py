"""op_harness.op_case: one call builds a single-op model and checks qengine against TFLite's
reference kernels, or against a naive twin where TFLite is not installed."""

import numpy as np
import pytest
from op_harness import Const, op_case, rng

from qengine.ir import Quantization


@pytest.mark.parametrize("reference", [pytest.param("auto", marks=pytest.mark.tf), "twin"])
def test_float_add_with_a_constant(reference):
    r = rng("op_case", "add")
    x = r.standard_normal((2, 3, 4)).astype(np.float32)
    y = r.standard_normal((1, 1, 4)).astype(np.float32)
    out = op_case("ADD", [x, Const(y)], x.shape, twin=np.add, reference=reference)
    np.testing.assert_array_equal(out, x + y)  # float32 addition is exact to reproduce


@pytest.mark.parametrize("reference", [pytest.param("auto", marks=pytest.mark.tf), "twin"])
def test_int8_maximum_keeps_the_shared_parameters(reference):
    r = rng("op_case", "maximum")
    q = Quantization.per_tensor(0.05, -3)
    a = r.integers(-128, 128, (4, 5)).astype(np.int8)
    b = r.integers(-128, 128, (4, 5)).astype(np.int8)
    op_case("MAXIMUM", [a, b], a.shape, "int8", params=[q, q], out_params=q,
            twin=np.maximum, reference=reference)
