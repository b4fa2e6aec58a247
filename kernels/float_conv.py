"""The epilogue of float convolutions that run as a BLAS matmul (grouped convolutions and
non-constant filters); the others are in `float_gemm.py`."""

import numpy as np

from .jit import inline_kernel, kernel


@inline_kernel
def activation_f32(v, low, high):
    """TFLite's ActivationFunctionWithMinMax, std::min(std::max(v, low), high): NaN passes
    through and +-inf becomes the bound (written out: max()/min() would not let NaN through).
    The one scalar clamp of the float kernels."""
    if v < low:
        return low
    if v > high:
        return high
    return v


@kernel
def bias_clamp_f32(out, bias, act_min, act_max):
    """In place on out [rows, C] float32: out[r, c] = clamp(out[r, c] + bias[c]) to
    [act_min, act_max], the epilogue of a matmul convolution in one pass over the output.

    As TFLite's ActivationFunctionWithMinMax (std::min(std::max(v, lo), hi)), NaN passes through
    and +-inf becomes the bound; so no fastmath here, and the comparisons are written out.
    One thread: it is memory-bound and short (0.01-0.6 ms per MobileNetV2 layer), and a parallel
    launch right after a BLAS call would wake Numba's OpenMP pool while BLAS's threads spin.
    """
    rows, channels = out.shape
    low, high = np.float32(act_min), np.float32(act_max)
    for r in range(rows):
        for c in range(channels):
            out[r, c] = activation_f32(out[r, c] + bias[c], low, high)
