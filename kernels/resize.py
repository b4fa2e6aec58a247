"""RESIZE_BILINEAR (integer reference path) and RESIZE_NEAREST_NEIGHBOR, NHWC.

Input and output share the quantization (the spec requires it; the kernels do not
requantize). Arrays are 4-D [batch, height, width, channels]; the caller extends lower
ranks. Both kernels are dtype-generic (Numba compiles one specialization per dtype).
"""

import functools

import numpy as np
from qengine.kernels import threads as pool
from qengine.kernels.jit import kernel, prange

__all__ = [
    "bilinear_scale_10",
    "interpolation_values",
    "nearest_neighbor_indices",
    "resize_bilinear_integer",
    "resize_nearest_neighbor",
]


def bilinear_scale_10(input_size: int, output_size: int, align_corners: bool) -> int:
    """ResizeBilinearInteger's scale in Q10: round(2^10 * in / out) with C integer division,
    or round(2^10 * (in - 1) / (out - 1)) when align_corners and out > 1 (all values >= 0,
    so Python's floor division is C's)."""
    if align_corners and output_size > 1:
        return ((1 << 10) * (input_size - 1) + (output_size - 1) // 2) // (output_size - 1)
    return ((1 << 10) * input_size + output_size // 2) // output_size


def _c_div(a: np.ndarray, b: int) -> np.ndarray:
    """C integer division (truncates toward zero) of an int64 array by b > 0."""
    return np.where(a >= 0, a // b, -((-a) // b))


@functools.lru_cache(maxsize=64)
def interpolation_values(input_size: int, output_size: int, align_corners: bool,
                         half_pixel_centers: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ComputeInterpolationValuesInteger for every output index o: (lower, upper, frac) int64.

      v = o * scale_10 (+ scale_10 / 2 - 2^9 with half_pixel_centers)
      lower = max(v / 2^10, 0);  upper = min((v + 2^10 - 1) / 2^10, input_size - 1)
      frac = v - 2^10 * lower
    with C (truncating) divisions; v may be negative with half_pixel_centers. NumPy, cached
    per axis, so the kernel below stays small (less to compile on a first run).
    """
    scale_10 = bilinear_scale_10(input_size, output_size, align_corners)
    v = np.arange(output_size, dtype=np.int64) * scale_10
    if half_pixel_centers:
        v += scale_10 // 2 - (1 << 9)
    lower = np.maximum(_c_div(v, 1 << 10), 0)
    upper = np.minimum(_c_div(v + (1 << 10) - 1, 1 << 10), input_size - 1)
    frac = v - (1 << 10) * lower
    for a in (lower, upper, frac):
        a.flags.writeable = False  # shared by every call through the cache
    return lower, upper, frac


def resize_bilinear_integer(x, output_height, output_width, align_corners, half_pixel_centers,
                            threads: int = 1):
    """RESIZE_BILINEAR for integer types, reference_ops::ResizeBilinearInteger
    (tflite/kernels/internal/reference/resize_bilinear.h, default double-rounding build).

    With (y0, y1, dy) and (x0, x1, dx) from `interpolation_values` (int64):
      o20 = x[y0,x0]*(2^10-dy)*(2^10-dx) + x[y1,x0]*dy*(2^10-dx)
          + x[y0,x1]*(2^10-dy)*dx       + x[y1,x1]*dy*dx
      out = (o20 + (o20 > 0 ? 2^19 : -2^19)) / 2^20      (C division: ties away from zero)
    x: [batch, in_h, in_w, channels]. align_corners and half_pixel_centers are exclusive.
    """
    _, input_height, input_width, _ = x.shape
    y0, y1, dy = interpolation_values(int(input_height), int(output_height),
                                      bool(align_corners), bool(half_pixel_centers))
    x0, x1, dx = interpolation_values(int(input_width), int(output_width),
                                      bool(align_corners), bool(half_pixel_centers))
    out = np.empty((x.shape[0], y0.shape[0], x0.shape[0], x.shape[3]), x.dtype)
    rows = out.shape[0] * out.shape[1]
    pool.split_run(_resize_bilinear_rows, _resize_bilinear_split,
                   (np.ascontiguousarray(x), y0, y1, dy, x0, x1, dx, out), rows, threads,
                   pool.ELEMENT_FLOPS * out.size)
    return out


@kernel
def _resize_bilinear_rows(x, y0s, y1s, dys, x0s, x1s, dxs, out, row0, row1):
    """The loop of `resize_bilinear_integer` over output rows row0..row1-1 (row = b * out_h +
    y), given per-row and per-column values."""
    depth, out_h = x.shape[3], y0s.shape[0]
    one = np.int64(1 << 10)
    for row in range(row0, row1):
        b, y = row // out_h, row % out_h
        y0, y1, dy = y0s[y], y1s[y], dys[y]
        for xo in range(x0s.shape[0]):
            x0, x1, dx = x0s[xo], x1s[xo], dxs[xo]
            # the C products x*a*b grouped as x*(a*b): exact, |x*a*b| < 2^40 in int64
            w00, w10 = (one - dy) * (one - dx), dy * (one - dx)
            w01, w11 = (one - dy) * dx, dy * dx
            for c in range(depth):
                o20 = (np.int64(x[b, y0, x0, c]) * w00 + np.int64(x[b, y1, x0, c]) * w10
                       + np.int64(x[b, y0, x1, c]) * w01 + np.int64(x[b, y1, x1, c]) * w11)
                # C division by 2^20 after rounding away from zero
                half_up = (o20 + (1 << 19)) >> 20
                half_down = -((-o20 + (1 << 19)) >> 20)
                out[b, y, xo, c] = half_up if o20 > 0 else half_down


@kernel(parallel=True)
def _resize_bilinear_split(x, y0s, y1s, dys, x0s, x1s, dxs, out, rows, parts):
    """`_resize_bilinear_rows` over rows 0..rows-1 in `parts` parts at once."""
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        _resize_bilinear_rows(x, y0s, y1s, dys, x0s, x1s, dxs, out, r0, r1)


@kernel
def nearest_neighbor_indices(input_size, output_size, align_corners, half_pixel_centers):
    """GetNearestNeighbor (…/reference/resize_nearest_neighbor.h) for every output index,
    all in float32:
      scale = (in - 1) / float(out - 1) if align_corners and out > 1 else in / float(out)
      offset = 0.5 if half_pixel_centers else 0
      i = min(align_corners ? roundf((o + offset) * scale) : floorf((o + offset) * scale),
              in - 1), then max(i, 0) when half_pixel_centers.
    """
    if align_corners and output_size > 1:
        scale = np.float32(input_size - 1) / np.float32(output_size - 1)
    else:
        scale = np.float32(input_size) / np.float32(output_size)
    offset = np.float32(0.5) if half_pixel_centers else np.float32(0.0)
    indices = np.empty(output_size, dtype=np.int64)
    for o in range(output_size):
        pos = np.float32(np.float32(np.float32(o) + offset) * scale)
        if align_corners:
            # TfLiteRound(float) = roundf: ties away from zero (pos >= 0 here)
            r = np.float32(np.floor(pos))
            if pos - r >= np.float32(0.5):
                r += np.float32(1.0)
            i = np.int64(r)
        else:
            i = np.int64(np.floor(pos))
        i = min(i, input_size - 1)
        if half_pixel_centers:
            i = max(i, 0)
        indices[o] = i
    return indices


@kernel
def resize_nearest_neighbor(x, output_height, output_width, align_corners, half_pixel_centers):
    """RESIZE_NEAREST_NEIGHBOR, reference_ops::ResizeNearestNeighbor: a pure gather of
    x[b, iy(y), ix(x), :] with iy, ix from nearest_neighbor_indices. Any dtype (float too)."""
    batches, input_height, input_width, depth = x.shape
    rows = nearest_neighbor_indices(input_height, output_height, align_corners, half_pixel_centers)
    cols = nearest_neighbor_indices(input_width, output_width, align_corners, half_pixel_centers)
    out = np.empty((batches, output_height, output_width, depth), dtype=x.dtype)
    for b in range(batches):
        for y in range(output_height):
            for xo in range(output_width):
                for c in range(depth):
                    out[b, y, xo, c] = x[b, rows[y], cols[xo], c]
    return out
