"""Sweep throughput: configurations per minute on 1 and 2 workers, local pool and Ray.

    python benchmarks/sweep_scaling.py [--repeat 2] [--engines local ray]

A 16-configuration grid on the bundled digit model (int8/16x8 x per-channel/per-tensor x
minmax/percentile x with/without bias correction; 500 test images per configuration), each run
into a fresh directory (no cached rows). The time is the whole `sweep()` call: calibration in
the parent, starting the workers (or Ray), quantizing, measuring and the TFLite check.
The best of `--repeat` runs is reported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from qengine.research.grid import configurations
from qengine.research.sweep import sweep

EXAMPLES = Path(__file__).parents[1] / "examples"
GRID = {"mode": ["int8", "int16x8"], "granularity": ["per_channel", "per_tensor"],
        "calibrator": ["minmax", "percentile"], "ptq": [[], ["bias_correction"]]}


def timed(engine: str, workers: int, model: bytes, data) -> float:
    configs = configurations(GRID)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = sweep(model, data["calibration"], data["test_images"], configs, out,
                       labels=data["test_labels"], engine=engine, workers=workers)
        seconds = time.perf_counter() - start
    assert len(result.rows) == len(configs) and not any(r["error"] for r in result.rows)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    args = parser.parse_args()
    model = (EXAMPLES / "digits.tflite").read_bytes()
    data = dict(np.load(EXAMPLES / "digits_data.npz"))
    count = len(configurations(GRID))
    timed("local", 1, model, data)  # warm the Numba cache so no run pays for compiling
    print(f"{count} configurations; best of {args.repeat} runs")
    print(f"{'engine':<8}{'workers':>8}{'seconds':>10}{'configs/min':>13}{'speed-up':>10}")
    for engine in args.engines:
        one = None
        for workers in (1, 2):
            seconds = min(timed(engine, workers, model, data) for _ in range(args.repeat))
            one = one or seconds
            print(f"{engine:<8}{workers:>8}{seconds:>10.1f}{count / seconds * 60:>13.1f}"
                  f"{one / seconds:>9.2f}x")


if __name__ == "__main__":
    main()
