"""The int8 GEMM's two tile families on the same layers, one at a time, 1 thread.

    python benchmarks/int8_tiles.py [--repeat N] [--quick]

`vpmaddwd` pairs (what an AVX2 host runs) against `vpdpbusd` quads (VNNI hosts: the input's
bytes flipped to x + 128, kernel rows read straight from the input where they can), both
through `gemm_int8.plan_conv2d_int8(..., vnni=...)` and `run_conv2d_int8`. The two outputs
must be identical (each family is pinned to the reference kernels by tests/test_kernels_fast.py);
a difference exits 1. The layers: MobileNet-style ones, face_detection_back's first and its
24-channel 1x1, and Basic Pitch's (nmp) wide kernels and one-channel outputs. Without VNNI
only the pairs column is measured. Prints a Markdown table of the median µs of N calls.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from float_conv_paths import median_us  # (its one warm-up compiles on a cold cache)
from qengine.kernels import emit, gemm_int8, pack

# (name, h, w, ci, co, (kh, kw), (stride_h, stride_w)); SAME padding
LAYERS = [
    ("1x1, MobileNet", 56, 56, 24, 144, (1, 1), (1, 1)),
    ("1x1, MobileNet", 14, 14, 96, 576, (1, 1), (1, 1)),
    ("3x3", 48, 48, 32, 32, (3, 3), (1, 1)),
    ("3x3", 24, 24, 64, 128, (3, 3), (1, 1)),
    ("face_detection_back's first", 256, 256, 3, 24, (5, 5), (2, 2)),
    ("face_detection_back's 1x1", 128, 128, 24, 24, (1, 1), (1, 1)),
    ("nmp, wide kernel", 172, 264, 8, 8, (3, 39), (1, 1)),
    ("nmp, one channel", 172, 264, 8, 1, (5, 5), (1, 1)),
    ("nmp, one channel", 172, 88, 32, 1, (7, 3), (1, 1)),
    ("nmp, stride (1, 3)", 172, 264, 8, 32, (5, 5), (1, 3)),
]


def same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    return out, max((out - 1) * stride + k - size, 0) // 2


def plan(w, shape, stride, vnni: bool):
    """A SAME-padded conv's plan, one multiplier for all channels."""
    _, h, wd, _ = shape
    co, kh, kw, _ = w.shape
    (oh, pt), (ow, pl) = same_padding(h, kh, stride[0]), same_padding(wd, kw, stride[1])
    ones = np.ones(co, np.int32)
    return gemm_int8.plan_conv2d_int8(pack.pack_conv_weights(w), np.zeros(co, np.int32), 3,
                                      ones << 30, -8 * ones, 0, -128, 127, *stride, 1, 1, pt,
                                      pl, oh, ow, vnni=vnni)  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per figure")
    parser.add_argument("--quick", action="store_true", help="the first three layers only")
    args = parser.parse_args(argv)
    families = [False, True] if emit.HAS_VNNI else [False]
    print("| layer | shape | pairs µs | quads µs |\n|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, h, w, ci, co, k, stride in LAYERS[:3] if args.quick else LAYERS:
        weights = rng.integers(-127, 128, (co, *k, ci), dtype=np.int8)
        x = rng.integers(-128, 128, (1, h, w, ci), dtype=np.int8)
        outs, times = [], []
        for vnni in families:
            p = plan(weights, x.shape, stride, vnni)
            outs.append(gemm_int8.run_conv2d_int8(p, x, 1))
            times.append(median_us(lambda p=p, x=x: gemm_int8.run_conv2d_int8(p, x, 1),
                                   args.repeat))
        if any(not np.array_equal(outs[0], o) for o in outs[1:]):
            print(f"{name}: the tile families disagree", file=sys.stderr)
            return 1
        quads = f"{times[1]:.0f}" if len(times) > 1 else "— (no VNNI)"
        shape = f"{h}×{w}×{ci} → {co}, {k[0]}×{k[1]}" + (f" stride {stride}" if stride != (1, 1)
                                                          else "")
        print(f"| {name} | {shape} | {times[0]:.0f} | {quads} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
