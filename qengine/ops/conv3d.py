"""CONV_3D and CONV_3D_TRANSPOSE in float32 (the only type TFLite registers them for).

Layouts as in TFLite: input [N, D, H, W, C]; CONV_3D filter [KD, KH, KW, C_in, C_out];
CONV_3D_TRANSPOSE filter [KD, KH, KW, C_out, C_in] and an explicit output shape. Products are
accumulated in float64 and rounded once (TFLite sums in float32: floats agree to the
tolerance).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .common import conv_output_size, float_activation
from .opdef import op

F32 = np.float32


def _geometry(ctx: OpContext):
    o = ctx.options
    strides = [int(getattr(o, f"stride{a}", 1)) for a in "DHW"]
    dilations = [int(getattr(o, f"dilation{a}Factor", 1)) for a in "DHW"]
    return int(getattr(o, "padding", 0)), strides, dilations


def _bias(ctx: OpContext, i: int, channels: int):
    bias = ctx.optional_input(i)
    if bias is not None:
        ctx.expect_dtype(bias, "float32")
        if bias.shape != (channels,):
            raise ctx.invalid(f"bias {bias.shape}; expected ({channels},)")
    return bias


@op("CONV_3D")
def conv_3d(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2, 3)
    x, w = ctx.input(0), ctx.input(1)
    for spec in (x, w):
        ctx.expect_dtype(spec, "float32")
    if len(x.shape) != 5 or len(w.shape) != 5 or w.shape[3] != x.shape[4]:
        raise ctx.invalid(f"input {x.shape} and filter {w.shape} must be 5-D with matching "
                          f"input channels")
    padding, strides, dilations = _geometry(ctx)
    sizes = [conv_output_size(ctx, padding, n, k, s, d)
             for n, k, s, d in zip(x.shape[1:4], w.shape[:3], strides, dilations)]
    out_spatial = [size for size, _ in sizes]
    before = [pad for _, pad in sizes]
    out_shape = (x.shape[0], *out_spatial, w.shape[4])
    _bias(ctx, 2, w.shape[4])
    activation = float_activation(ctx)

    def run(values, filters, bias=None):
        # pad so that every tap reads inside: before + after enough for the last window
        after = [max((o - 1) * s + (k - 1) * d + 1 - n - b, 0) for o, s, k, d, n, b in
                 zip(out_spatial, strides, filters.shape[:3], dilations, values.shape[1:4],
                     before)]
        padded = np.pad(values.astype(np.float64),
                        [(0, 0)] + list(zip(before, after)) + [(0, 0)])
        acc = np.zeros(out_shape, np.float64)
        for taps in itertools.product(*(range(k) for k in filters.shape[:3])):
            window = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                           for t, d, o, s in zip(taps, dilations, out_spatial, strides))
            acc += padded[(slice(None),) + window] @ filters[taps].astype(np.float64)
        if bias is not None:
            acc += bias
        return activation(acc.astype(F32))

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


@op("CONV_3D_TRANSPOSE")
def conv_3d_transpose(ctx: OpContext) -> Prepared:
    """The gradient of CONV_3D: every input voxel scatters filter * value into the output,
    at stride spacing, then the padding is cropped (TFLite's Conv3DTranspose)."""
    ctx.expect_inputs(3, 4)
    w, x = ctx.input(1), ctx.input(2)
    for spec in (w, x):
        ctx.expect_dtype(spec, "float32")
    ctx.expect_dtype(ctx.input(0), "int32")
    out_shape = tuple(int(v) for v in np.ravel(ctx.constant(0, "output shape")))
    if len(x.shape) != 5 or len(w.shape) != 5 or len(out_shape) != 5:
        raise ctx.invalid(f"input {x.shape}, filter {w.shape} and output shape {out_shape} "
                          f"must all be 5-D")
    if w.shape[4] != x.shape[4] or w.shape[3] != out_shape[4] or out_shape[0] != x.shape[0]:
        raise ctx.invalid(f"filter {w.shape} does not map input {x.shape} to {out_shape}")
    padding, strides, dilations = _geometry(ctx)
    before = []
    for n_out, n_in, k, s, d in zip(out_shape[1:4], x.shape[1:4], w.shape[:3], strides,
                                    dilations):
        expected, pad = conv_output_size(ctx, padding, n_out, k, s, d)
        if expected != n_in:
            raise ctx.invalid(f"output shape {out_shape} does not give the input {x.shape} "
                              f"under this padding and stride")
        before.append(pad)
    _bias(ctx, 3, out_shape[4])
    activation = float_activation(ctx)

    def run(_, filters, values, bias=None):
        full = [(n - 1) * s + (k - 1) * d + 1 for n, s, k, d in
                zip(values.shape[1:4], strides, filters.shape[:3], dilations)]
        extent = [max(f, b + o) for f, b, o in zip(full, before, out_shape[1:4])]
        acc = np.zeros((values.shape[0], *extent, out_shape[4]), np.float64)
        v64 = values.astype(np.float64)
        for taps in itertools.product(*(range(k) for k in filters.shape[:3])):
            window = tuple(slice(t * d, t * d + (n - 1) * s + 1, s)
                           for t, d, n, s in zip(taps, dilations, values.shape[1:4], strides))
            acc[(slice(None),) + window] += v64 @ filters[taps].astype(np.float64).T
        crop = tuple(slice(b, b + o) for b, o in zip(before, out_shape[1:4]))
        out = acc[(slice(None),) + crop]
        if bias is not None:
            out = out + bias
        return activation(np.ascontiguousarray(out).astype(F32))

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])
