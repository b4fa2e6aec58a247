"""Sweep throughput: configurations per minute on 1 and 2 workers, local pool and Ray.

    python benchmarks/sweep_scaling.py [--model mobilenet_v2] [--repeat 3] [--engines local ray]

A 16-configuration grid (int8/16x8 x per-channel/per-tensor x minmax/percentile x
power-of-two scales or not) on a tests/corpus.py model (default: the test MobileNetV2, 96x96,
alpha 0.35; built by TensorFlow once and cached), 32 calibration and 256 measurement inputs,
each run into a fresh directory (no cached rows). The time is the whole `sweep()` call:
calibration and the float reference run in the parent (serial; timed on their own as
"prepare"), starting the workers or Ray, then quantizing, measuring and the TFLite check per
configuration. "vs local": the time against the local pool's with as many workers (Ray's
overhead).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import corpus

from qengine.research.grid import configurations, plan_for
from qengine.research.sweep import prepare, sweep

GRID = {"mode": ["int8", "int16x8"], "granularity": ["per_channel", "per_tensor"],
        "calibrator": ["minmax", "percentile"], "power_of_two": [False, True]}


def timed(engine: str, workers: int, model: bytes, calibration, data, grid=GRID) -> float:
    configs = configurations(grid)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = sweep(model, calibration, data, configs, out, engine=engine, workers=workers)
        seconds = time.perf_counter() - start
    assert len(result.rows) == len(configs) and not any(r["error"] for r in result.rows)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    args = parser.parse_args()
    model = corpus.path(args.model, "float").read_bytes()
    calibration = corpus.sample_inputs(args.model, 32, seed=0)
    data = corpus.sample_inputs(args.model, 256, seed=1)
    configs = configurations(GRID)
    count = len(configs)
    # compile (and cache) every kernel the grid needs before timing anything
    timed("local", 1, model, calibration, data, {"mode": ["int8", "int16x8"]})
    start = time.perf_counter()
    prepare(model, calibration, data, None, [plan_for(c) for c in configs])
    print(f"{args.model}: {count} configurations; best of {args.repeat} interleaved run(s); "
          f"prepare (serial, in every run) {time.perf_counter() - start:.1f} s")
    best: dict = {}
    for _ in range(args.repeat):  # interleaved, so a change in machine load hits every setting
        for engine in args.engines:
            for workers in (1, 2):
                seconds = timed(engine, workers, model, calibration, data)
                best[engine, workers] = min(best.get((engine, workers), seconds), seconds)
    print(f"{'engine':<8}{'workers':>8}{'seconds':>10}{'configs/min':>13}{'speed-up':>10}"
          f"{'vs local':>10}")
    for (engine, workers), seconds in best.items():
        print(f"{engine:<8}{workers:>8}{seconds:>10.1f}{count / seconds * 60:>13.1f}"
              f"{best[engine, 1] / seconds:>9.2f}x"
              f"{seconds / best.get(('local', workers), seconds):>9.2f}x")

if __name__ == "__main__":
    main()
