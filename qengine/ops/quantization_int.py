"""QUANTIZE from an integer tensor: requantization to new parameters (quantize.cc).

    out = clamp(MBQM(q - zp_in, M, shift) + zp_out),   M * 2^(shift-31) = double(s_in) / double(s_out)
"""

from __future__ import annotations

import numpy as np

from qengine.kernels import quantize as kernels

from ..qparams import int_range
from ..runtime.registry import OpContext, Prepared, Spec
from .common import per_tensor

# The (input, output) type pairs TFLite's Prepare accepts for requantization.
PAIRS = {("int8", "int8"), ("int8", "uint8"), ("uint8", "int8"), ("uint8", "uint8"),
         ("int16", "int8"), ("int16", "int16")}


def requantize(ctx: OpContext, x_spec: Spec, out_spec: Spec) -> Prepared:
    if (x_spec.dtype, out_spec.dtype) not in PAIRS:
        raise ctx.unsupported(f"QUANTIZE from {x_spec.dtype} to {out_spec.dtype}; supported: "
                              + ", ".join(f"{a}->{b}" for a, b in sorted(PAIRS)))
    s_in, zp_in = per_tensor(ctx, x_spec)
    s_out, zp_out = per_tensor(ctx, out_spec)
    if out_spec.dtype == x_spec.dtype == "int16" and (zp_in or zp_out):
        raise ctx.unsupported("int16 requantization needs zero points 0 (TFLite's Prepare)")
    params = kernels.requantize_params(s_in, zp_in, s_out, zp_out)
    low, high = int_range(out_spec.dtype)
    dtype = np.dtype(out_spec.dtype)

    def run(x):
        out = np.empty(x.size, dtype)
        return kernels.requantize(np.ascontiguousarray(x).ravel(), *params, low, high,
                                  out).reshape(x.shape)

    return Prepared(run, [out_spec])
