"""Int8 MEAN and SUM: TFLite's reference `QuantizedMeanOrSum` (reduce.cc PrepareMeanOrSum).

    sum = Σ_reduced x                        (int32)
    out = clamp(MBQM(sum - in_zp * n, M, shift) + out_zp, -128, 127)
    (M, shift) = QuantizeMultiplier(double(s_in) / double(s_out)), with 1/n folded in for MEAN

BUILTIN_REF's int8 SUM has a quirk this reproduces under `arithmetic="ref"`: reduce.cc's
QuantizedMeanOrSum<int8_t, kReference> hands the reference kernel `uint8_t` pointers, so the
int8 bytes are summed as unsigned values (-1 counts as 255) and the result is clamped to
[0, 255] and stored back as a byte. The optimized kernel (and `arithmetic="xnnpack"` here)
sums the signed values. MEAN reads the right type in both.

The kernel reduces the middle axis of [outer, n, inner]: contiguous reduced axes are a plain
reshape; other axis sets are transposed to the end first. No axes at all still requantizes
(n = 1), as TFLite does.
"""

from __future__ import annotations

import numpy as np

from qengine.kernels.reduce import mean_multiplier, sum_int8_ref, sum_multiplier
from qengine.kernels.xnnpack import mean_fp32, mean_params

from ..runtime.registry import OpContext, Prepared, Spec
from .common import required_per_tensor
from .reduce import _keep_dims, reduced_axes


def mean(ctx: OpContext) -> Prepared:
    return _mean_or_sum(ctx, compute_sum=False)


def sum(ctx: OpContext) -> Prepared:
    return _mean_or_sum(ctx, compute_sum=True)


def _mean_or_sum(ctx: OpContext, compute_sum: bool) -> Prepared:
    ctx.expect_inputs(2)
    x = ctx.input(0)
    if x.dtype == "int16" and not compute_sum:  # 16x8 MEAN
        return _mean_int16(ctx, x)
    ctx.expect_dtype(x, "int8")
    if ctx.outputs[0].dtype != "int8":
        raise ctx.unsupported(f"int8 input with {ctx.outputs[0].dtype} output")
    axes = reduced_axes(ctx, x)
    keep = _keep_dims(ctx)
    out_shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape)
                      if keep or a not in axes)
    in_scale, in_zp = required_per_tensor(ctx, x)
    out_scale, out_zp = required_per_tensor(ctx, ctx.output_spec(0, None))
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    to_3d = _as_outer_n_inner(x.shape, axes)
    if ctx.arithmetic == "xnnpack" and not compute_sum:
        return _mean_xnnpack(ctx, to_3d, out_shape, n, (in_scale, in_zp), (out_scale, out_zp))
    mult, shift = (sum_multiplier(in_scale, out_scale) if compute_sum
                   else mean_multiplier(in_scale, out_scale, n))

    def run(x, _):
        out = sum_int8_ref(to_3d(x), in_zp, mult, shift, out_zp)
        return out.reshape(out_shape)

    def run_as_unsigned(x, _):
        # clamp(v + zp, 0, 255) == clamp(v + zp - 128, -128, 127) + 128, stored as a byte
        out = sum_int8_ref(to_3d(x.view(np.uint8)), in_zp, mult, shift, out_zp - 128)
        return (out.astype(np.int16) + 128).astype(np.uint8).view(np.int8).reshape(out_shape)

    if compute_sum and ctx.arithmetic == "ref":
        run = run_as_unsigned

    return Prepared(run, [ctx.output_spec(0, out_shape, "int8")])


def _mean_xnnpack(ctx: OpContext, to_3d, out_shape, n: int, in_q, out_q) -> Prepared:
    """arithmetic="xnnpack": XNNPACK's float32 MEAN (kernels/xnnpack.py mean_fp32)."""
    if n == 0:
        raise ctx.unsupported("MEAN over an empty axis (XNNPACK would divide by zero)")
    scale, bias = mean_params(in_q[0], out_q[0], n, in_q[1], out_q[1])

    def run(x, _):
        return mean_fp32(np.ascontiguousarray(to_3d(x)), scale, bias).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "int8")])


def _mean_int16(ctx: OpContext, x: Spec) -> Prepared:
    from . import int16_int

    if ctx.outputs[0].dtype != "int16":
        raise ctx.unsupported(f"int16 input with {ctx.outputs[0].dtype} output")
    axes = reduced_axes(ctx, x)
    keep = _keep_dims(ctx)
    out_shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape)
                      if keep or a not in axes)
    in_scale, _ = required_per_tensor(ctx, x)
    out_scale, _ = required_per_tensor(ctx, ctx.output_spec(0, None))
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    multiplier = mean_multiplier(in_scale, out_scale, n)
    return int16_int.mean(ctx, n, multiplier, _as_outer_n_inner(x.shape, axes), out_shape)


def _as_outer_n_inner(shape, axes):
    """A function viewing x as [outer, n, inner] with the reduced axes in the middle."""
    def size(dims) -> int:
        return int(np.prod([shape[a] for a in dims], dtype=np.int64))

    if not axes:
        return lambda x: x.reshape(-1, 1, 1)
    if list(axes) == list(range(axes[0], axes[-1] + 1)):  # contiguous: a reshape
        view = (size(range(axes[0])), size(axes), size(range(axes[-1] + 1, len(shape))))
        return lambda x: x.reshape(view)
    kept = [a for a in range(len(shape)) if a not in axes]
    order = kept + list(axes)
    view = (size(kept), size(axes), 1)
    return lambda x: np.ascontiguousarray(x.transpose(order)).reshape(view)
