"""The two float CONV_2D kernels of kernels/float_gemm.py on the published models' first layers
and narrow heads, 1 thread, warm cache: the indirect GEMM (conv2d_f32_rows) against the
row-vectorized kernel (conv2d_f32_narrow_rows), median microseconds of each. qengine/ops/conv.py
(`_row_vectorized`) picks between them; this shows why.

    python benchmarks/float_conv_paths.py
"""

import time

import numpy as np
from qengine.kernels import float_gemm as fg
from qengine.kernels.float_conv import post_args

# (input NHWC, output channels, kernel, stride, padding top/left, what it is)
SHAPES = [
    ((1, 128, 128, 3), 24, (5, 5), (2, 2), (1, 1), "face_detection_short_range first"),
    ((1, 224, 224, 3), 24, (3, 3), (2, 2), (0, 0), "hand_landmark first"),
    ((1, 192, 192, 3), 16, (3, 3), (2, 2), (0, 0), "face_landmark first"),
    ((1, 192, 192, 3), 32, (5, 5), (2, 2), (1, 1), "palm_detection first"),
    ((1, 64, 64, 3), 64, (3, 3), (2, 2), (0, 0), "iris_landmark first (GEMM kept)"),
    ((1, 256, 256, 8), 1, (3, 3), (1, 1), (1, 1), "pose_landmark_full head"),
    ((1, 12, 12, 256), 6, (1, 1), (1, 1), (0, 0), "palm head (rows too short: GEMM)"),
]


def median_us(fn, runs=30, warmup=1) -> float:
    """Median wall time of fn() in µs over `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def both(x_shape, out_c, kernel, stride, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((out_c, *kernel, x_shape[3])).astype(np.float32)
    bias = rng.standard_normal(out_c).astype(np.float32)
    out_h, out_w = ((x_shape[1 + i] + 2 * pad[i] - kernel[i]) // stride[i] + 1 for i in (0, 1))
    geo = (*kernel, *stride, 1, 1, *pad, -np.inf, np.inf, fg.WIDE, False,  # reference order
           post_args())
    flat = np.empty((out_h * out_w, out_c), np.float32)
    panels, bias16 = fg.pack_conv_f32(w), fg.pad_channels(bias, fg.LANES)
    gemm = median_us(lambda: fg.conv2d_f32_rows(x, panels, bias16, flat, out_w, *geo, 0,
                                                out_h * out_w, 0, panels.shape[0]))
    out = np.empty((1, out_h, out_w, out_c), np.float32)
    w8 = fg.pack_narrow_f32(w)
    rows = median_us(lambda: fg.conv2d_f32_narrow_rows(x, w8, bias, out, *geo, 0, out_h))
    return gemm, rows


def main():
    print(f"AVX-512 tiles: {fg.WIDE}")
    print("| layer | input | Co | kernel | GEMM us | rows us |")
    print("|---|---|---|---|---|---|")
    for x_shape, out_c, kernel, stride, pad, what in SHAPES:
        gemm, rows = both(x_shape, out_c, kernel, stride, pad)
        print(f"| {what} | {x_shape[1:]} | {out_c} | {kernel} s{stride[0]} | {gemm:.0f} | "
              f"{rows:.0f} |")


if __name__ == "__main__":
    main()
