"""Whole-model latency: qengine vs TFLite (default/XNNPACK, optimized, reference) on the same
files and the same input, in this one process, plus cold/warm start-up of `qengine run`.

    python benchmarks/models.py [--threads 1] [--repeat 20] [--models mobilenet_v2_224]

Models come from tests/corpus.py (built with TensorFlow's converter and cached in .cache/):
MobileNetV2 224x224 in float, int8 and dynamic-range form. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import corpus
import numpy as np

from qengine.bench import bench_model


def latency_table(names, modes, threads: int, repeat: int) -> str:
    rows = ["| model | mode | qengine ms | TFLite default ms | ratio | TFLite optimized ms | "
            "ratio | TFLite reference ms | ratio | slowest qengine ops (ms) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        for mode in modes:
            path = corpus.path(name, mode)
            from qengine import load

            model = load(path)
            rng = np.random.default_rng(0)
            inputs = []
            for t in model.main.inputs:
                if t.dtype == "int8":
                    inputs.append(rng.integers(-128, 128, t.shape).astype(np.int8))
                else:
                    inputs.append(rng.random(t.shape, dtype=np.float32))
            r = bench_model(str(path), inputs, threads, repeat)
            top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(r["qengine_per_op_ms"].items())[:3])
            rows.append(
                f"| {name} | {mode} | {r['qengine_ms']:.1f} | {r['tflite_default_ms']:.1f} | "
                f"{r['ratio_vs_tflite_default']:.2f} | {r['tflite_optimized_ms']:.1f} | "
                f"{r['ratio_vs_tflite_optimized']:.2f} | {r['tflite_reference_ms']:.1f} | "
                f"{r['ratio_vs_tflite_reference']:.3f} | {top} |")
    return "\n".join(rows)


def startup_table(name: str, modes) -> str:
    """Wall clock of `python -m qengine run MODEL --repeat 1`: cold (empty Numba cache) and warm."""
    rows = ["| model | mode | cold s (empty kernel cache) | warm s |", "|---|---|---|---|"]
    for mode in modes:
        path = corpus.path(name, mode)
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, QENGINE_CACHE_DIR=cache)
            times = []
            for _ in range(2):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "qengine", "run", str(path), "--repeat",
                                "1"], env=env, check=True, capture_output=True)
                times.append(time.perf_counter() - start)
        rows.append(f"| {name} | {mode} | {times[0]:.2f} | {times[1]:.2f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2_224"])
    parser.add_argument("--modes", nargs="+", default=["float", "int8", "dynamic"])
    args = parser.parse_args(argv)
    print(f"threads {args.threads}, median of {args.repeat} runs after one warm-up\n")
    print(latency_table(args.models, args.modes, args.threads, args.repeat))
    print()
    print(startup_table(args.models[0], args.modes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
