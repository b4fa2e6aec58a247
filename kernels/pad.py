"""PAD / PADV2 of a 4-D NHWC tensor padded along H, W and C: one pass over the output, rows
split between threads (`threads.split_run`). Any dtype (Numba compiles one specialization per
dtype an op uses); the values are copied, never computed, so it is exact by construction."""

import numpy as np

from . import threads as pool
from .jit import kernel, prange


@kernel
def _fill(dst, value):
    for k in range(dst.shape[0]):
        dst[k] = value


@kernel
def _pad_rows(x, out, top, left, front, value, r0, r1):
    """Output rows r0..r1-1 (row = n * OH + oy) of out [N, OH, OW, OC]: x [N, H, W, C] placed
    at (top, left, front), `value` elsewhere. Loops run over slices indexed from 0, which
    Numba knows are not negative: they vectorize (no wraparound test)."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_c = out.shape[1], out.shape[3]
    inside = in_w * in_c
    for row in range(r0, r1):
        n, oy = row // out_h, row % out_h
        dst = out[n, oy].reshape(-1)  # [OW * OC], contiguous
        iy = oy - top
        if iy < 0 or iy >= in_h:
            _fill(dst, value)
            continue
        src = x[n, iy].reshape(-1)  # [W * C]
        _fill(dst[: left * out_c], value)
        _fill(dst[(left + in_w) * out_c :], value)
        middle = dst[left * out_c : (left + in_w) * out_c]
        if in_c == out_c:  # H/W padding only: the row's pixels are one run
            for k in range(inside):
                middle[k] = src[k]
            continue
        for ix in range(in_w):
            pixel, values = middle[ix * out_c : (ix + 1) * out_c], src[ix * in_c : (ix + 1) * in_c]
            _fill(pixel, value)
            inner = pixel[front : front + in_c]
            for c in range(in_c):
                inner[c] = values[c]


@kernel(parallel=True)
def _pad_split(x, out, top, left, front, value, rows, parts):
    """`_pad_rows` over rows 0..rows-1 in `parts` parts at once."""
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        _pad_rows(x, out, top, left, front, value, r0, r1)


def pad_nhwc(x: np.ndarray, pads, value, threads: int = 1) -> np.ndarray:
    """x [N, H, W, C] padded by pads ((0, 0), (top, bottom), (left, right), (front, back))
    (each >= 0) with `value` (cast to x's dtype)."""
    (n0, n1), (top, bottom), (left, right), (front, back) = pads
    if x.ndim != 4 or n0 or n1 or min(top, bottom, left, right, front, back) < 0:
        raise ValueError(f"pad_nhwc: pads {pads} for a tensor of shape {x.shape}")
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    out = np.empty((n, h + top + bottom, w + left + right, c + front + back), x.dtype)
    rows = out.shape[0] * out.shape[1]
    pool.split_run(_pad_rows, _pad_split, (x, out, top, left, front, x.dtype.type(value)), rows,
                   threads, pool.STREAM_FLOPS * out.size)
    return out
