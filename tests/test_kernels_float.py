"""Float kernels against NumPy twins. The conv epilogue is one float32 add and a clamp per
element, so it must equal NumPy exactly, including TFLite's clamp semantics: NaN passes
through, +-inf becomes the bound."""

import numpy as np
import pytest
from qengine.kernels.float_conv import bias_clamp_f32

FLT_MAX = float(np.finfo(np.float32).max)


def clamp_twin(out, bias, low, high):
    """std::min(std::max(v, low), high) with v = out + bias: np.maximum/minimum keep NaN."""
    return np.minimum(np.maximum(out + bias, np.float32(low)), np.float32(high))


@pytest.mark.parametrize("low, high", [(0.0, 6.0), (0.0, FLT_MAX), (-1.0, 1.0),
                                       (-FLT_MAX, FLT_MAX)])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (333, 16), (64, 1280)])
def test_bias_clamp_equals_numpy(shape, low, high):
    rng = np.random.default_rng(shape[0] * shape[1])
    out = (rng.standard_normal(shape) * 8).astype(np.float32)
    out.flat[rng.integers(0, out.size, 4)] = [np.nan, np.inf, -np.inf, 6.0]
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    want = clamp_twin(out, bias, low, high)
    bias_clamp_f32(out, bias, low, high)
    np.testing.assert_array_equal(out, want)
