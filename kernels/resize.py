"""RESIZE_BILINEAR (integer reference path) and RESIZE_NEAREST_NEIGHBOR, NHWC.

Input and output share the quantization (the spec requires it; the kernels do not
requantize). Arrays are 4-D [batch, height, width, channels]; the caller extends lower
ranks. Both kernels are dtype-generic (Numba compiles one specialization per dtype).
"""

import numpy as np
from qengine.kernels.jit import kernel

__all__ = [
    "bilinear_scale_10",
    "nearest_neighbor_indices",
    "resize_bilinear_integer",
    "resize_nearest_neighbor",
]


@kernel
def bilinear_scale_10(input_size, output_size, align_corners):
    """ResizeBilinearInteger's scale in Q10: round(2^10 * in / out) with C integer division,
    or round(2^10 * (in - 1) / (out - 1)) when align_corners and out > 1."""
    if align_corners and output_size > 1:
        return ((1 << 10) * (input_size - 1) + (output_size - 1) // 2) // (output_size - 1)
    return ((1 << 10) * input_size + output_size // 2) // output_size


@kernel
def _c_div(a, b):
    """C integer division (truncates toward zero) for b > 0."""
    return a // b if a >= 0 else -((-a) // b)


@kernel
def _interpolation_values(value, scale_10, half_pixel_centers, input_size):
    """ComputeInterpolationValuesInteger: (scaled Q10 position, lower index, upper index).

      v = value * scale_10 (+ scale_10 / 2 - 2^9 with half_pixel_centers)
      lower = max(v / 2^10, 0);  upper = min((v + 2^10 - 1) / 2^10, input_size - 1)
    with C (truncating) divisions; v may be negative with half_pixel_centers.
    """
    if half_pixel_centers:
        v = value * scale_10 + scale_10 // 2 - (1 << 9)
    else:
        v = value * scale_10
    lower = max(_c_div(v, 1 << 10), 0)
    upper = min(_c_div(v + (1 << 10) - 1, 1 << 10), input_size - 1)
    return v, lower, upper


@kernel
def resize_bilinear_integer(x, output_height, output_width, align_corners, half_pixel_centers):
    """RESIZE_BILINEAR for integer types, reference_ops::ResizeBilinearInteger
    (tflite/kernels/internal/reference/resize_bilinear.h, default double-rounding build).

    With (vy, y0, y1) and (vx, x0, x1) from the Q10 positions, dy = vy - 2^10*y0,
    dx = vx - 2^10*x0 (int64):
      o20 = x[y0,x0]*(2^10-dy)*(2^10-dx) + x[y1,x0]*dy*(2^10-dx)
          + x[y0,x1]*(2^10-dy)*dx       + x[y1,x1]*dy*dx
      out = (o20 + (o20 > 0 ? 2^19 : -2^19)) / 2^20      (C division: ties away from zero)
    x: [batch, in_h, in_w, channels]. align_corners and half_pixel_centers are exclusive.
    """
    batches, input_height, input_width, depth = x.shape
    out = np.empty((batches, output_height, output_width, depth), dtype=x.dtype)
    height_scale_10 = bilinear_scale_10(input_height, output_height, align_corners)
    width_scale_10 = bilinear_scale_10(input_width, output_width, align_corners)
    for b in range(batches):
        for y in range(output_height):
            vy, y0, y1 = _interpolation_values(y, height_scale_10, half_pixel_centers, input_height)
            dy = np.int64(vy - (1 << 10) * y0)
            for xo in range(output_width):
                vx, x0, x1 = _interpolation_values(
                    xo, width_scale_10, half_pixel_centers, input_width
                )
                dx = np.int64(vx - (1 << 10) * x0)
                for c in range(depth):
                    o20 = (
                        np.int64(x[b, y0, x0, c]) * ((1 << 10) - dy) * ((1 << 10) - dx)
                        + np.int64(x[b, y1, x0, c]) * dy * ((1 << 10) - dx)
                        + np.int64(x[b, y0, x1, c]) * ((1 << 10) - dy) * dx
                        + np.int64(x[b, y1, x1, c]) * dy * dx
                    )
                    rounding = (1 << 19) if o20 > 0 else -(1 << 19)
                    out[b, y, xo, c] = _c_div(o20 + rounding, 1 << 20)
    return out


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
