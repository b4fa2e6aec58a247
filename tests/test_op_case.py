"""op_harness.op_case: one call builds a single-op model and checks qengine against TFLite's
reference kernels, or against a naive twin where TFLite is not installed."""

import numpy as np
import pytest
from op_harness import In, op_case, rng

from qengine.ir import Quantization

REFERENCES = [pytest.param("auto", marks=pytest.mark.tf), "twin"]


@pytest.mark.parametrize("reference", REFERENCES)
def test_float_add_with_a_constant(reference):
    r = rng("op_case", "add")
    x = r.standard_normal((2, 3, 4)).astype(np.float32)
    y = r.standard_normal((1, 1, 4)).astype(np.float32)
    out = op_case("ADD", [In(x), y], twin=np.add, reference=reference)
    np.testing.assert_array_equal(next(iter(out.values())), x + y)  # float32 adds exactly


@pytest.mark.parametrize("reference", REFERENCES)
def test_int8_maximum_keeps_the_shared_parameters(reference):
    r = rng("op_case", "maximum")
    q = Quantization.per_tensor(0.05, -3)
    a = r.integers(-128, 128, (4, 5)).astype(np.int8)
    b = r.integers(-128, 128, (4, 5)).astype(np.int8)
    op_case("MAXIMUM", [In(a, q), In(b, q)], out_dtype="int8", out_quantization=q,
            twin=np.maximum, reference=reference)
