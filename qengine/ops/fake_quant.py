"""FAKE_QUANT: float values snapped to the grid of a quantized type and back."""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .opdef import op

F32 = np.float32


def round_half_away(v):
    """std::round for values >= 0, exactly: floor(v + 0.5) would round 0.49999997 up."""
    whole = np.floor(v)
    return whole + ((v - whole) >= F32(0.5))


def nudged_range(low: float, high: float, quant_max: int) -> tuple[F32, F32, F32]:
    """TFLite's NudgeQuantizationRange (quant_min 0): the range moved so that 0.0 falls on the
    grid; returns (nudged min, nudged max, scale) in float32."""
    scale = (F32(high) - F32(low)) / F32(quant_max)
    zero_from_min = F32(0) - F32(low) / scale
    zero = 0 if zero_from_min < 0 else quant_max if zero_from_min > quant_max else \
        int(round_half_away(zero_from_min))
    return F32(F32(0 - zero) * scale), F32(F32(quant_max - zero) * scale), F32(scale)


@op("FAKE_QUANT")
def fake_quant(ctx: OpContext) -> Prepared:
    """out = round((clamp(x) - min) / scale) * scale + min over the nudged range, with
    num_bits levels (TFLite's FakeQuant). narrow_range is refused, as TFLite refuses it."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    ctx.expect_dtype(x, "float32")
    options = ctx.options
    low, high = float(getattr(options, "min", 0.0)), float(getattr(options, "max", 0.0))
    bits = int(getattr(options, "numBits", 8))
    if not (low <= 0.0 <= high and low < high) or not 2 <= bits <= 16:
        raise ctx.invalid(f"range [{low}, {high}] must contain 0 and num_bits {bits} lie in "
                          f"[2, 16]")
    if getattr(options, "narrowRange", False):
        raise ctx.unsupported("narrow_range FAKE_QUANT (TFLite has no kernel for it either)")
    nudged_min, nudged_max, scale = nudged_range(low, high, (1 << bits) - 1)
    inverse = F32(1) / scale

    def run(values):
        shifted = np.clip(values, nudged_min, nudged_max) - nudged_min
        steps = round_half_away(shifted * inverse)
        return (steps * scale + nudged_min).astype(F32)

    return Prepared(run, [ctx.output_spec(0, x.shape, "float32")])
