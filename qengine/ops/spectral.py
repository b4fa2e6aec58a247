"""RFFT2D and the complex-number ops REAL, IMAG, COMPLEX_ABS."""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .opdef import op

REAL_OF = {"complex64": "float32", "complex128": "float64"}


def _complex_part(ctx: OpContext, part) -> Prepared:
    ctx.expect_inputs(1)
    x = ctx.input(0)
    ctx.expect_dtype(x, *REAL_OF)
    dtype = REAL_OF[x.dtype]
    return Prepared(lambda z: np.ascontiguousarray(part(z)).astype(dtype),
                    [ctx.output_spec(0, x.shape, dtype)])


@op("REAL")
def real(ctx: OpContext) -> Prepared:
    return _complex_part(ctx, np.real)


@op("IMAG")
def imag(ctx: OpContext) -> Prepared:
    return _complex_part(ctx, np.imag)


@op("COMPLEX_ABS")
def complex_abs(ctx: OpContext) -> Prepared:
    return _complex_part(ctx, np.abs)


@op("RFFT2D")
def rfft2d(ctx: OpContext) -> Prepared:
    """The 2-D FFT of a real signal over its last two axes, cropped or zero-padded to
    fft_length (powers of two, as TFLite requires); output [..., h, w / 2 + 1] complex64.
    Computed in float64 and rounded once (TFLite's Ooura FFT runs in double too)."""
    ctx.expect_inputs(2)
    x = ctx.input(0)
    ctx.expect_dtype(x, "float32")
    ctx.expect_dtype(ctx.input(1), "int32")
    if len(x.shape) < 2:
        raise ctx.invalid(f"input of rank {len(x.shape)}; RFFT2D needs rank >= 2")
    lengths = [int(v) for v in np.ravel(ctx.constant(1, "fft_length"))]
    if len(lengths) != 2 or any(n < 1 or n & (n - 1) for n in lengths):
        raise ctx.invalid(f"fft_length {lengths} must be two powers of two")
    height, width = lengths
    shape = x.shape[:-2] + (height, width // 2 + 1)

    if height == 1 and x.shape[-2] >= 1:
        # a 1-point FFT over the rows is the identity: the rows' first, transformed along the
        # last axis (audio models' framed STFTs; bit-identical, half rfft2's time on BirdNET's
        # 511 x 2048 frames)
        def run(signal, _):
            return np.fft.rfft(signal[..., :1, :].astype(np.float64), n=width,
                               axis=-1).astype(np.complex64)
    else:
        def run(signal, _):
            return np.fft.rfft2(signal.astype(np.float64),
                                s=(height, width)).astype(np.complex64)

    return Prepared(run, [ctx.output_spec(0, shape, "complex64")])
