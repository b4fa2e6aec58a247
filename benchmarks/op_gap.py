"""Where qengine trails TFLite, op by op: every op of a model as a one-op model
(`tflite_ops.one_op_models`: its constant inputs constants, fed the values it sees in a whole
run), run by qengine and by TFLite's default interpreter on the same file and input, timed in
alternation; the instances listed by how many microseconds qengine loses on each.

    python benchmarks/op_gap.py MODEL [--threads 1] [--top 25] [--runs 60]

MODEL is a path, or a name in `.cache/published` (fetched by `tests/published_models.py`),
e.g. `.cache/published/quantized/<digest>/pose_detection.int8.tflite` for qengine's int8 file
(written by `benchmarks/published.py`). A figure is the median of `--runs` runs after 10
warm-ups, each engine's whole `run`/`invoke` of the one-op model (so each includes one call's
overhead, a few microseconds); the sums are printed as a check against whole-model times.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from op_instances import model_path
from tflite_ops import one_op_models

import qengine
from qengine.cli_common import set_tflite_inputs


def median_pair_us(ours, theirs, runs: int) -> tuple[float, float]:
    """Median µs of ours() and theirs(), called in alternation after 10 warm-ups each."""
    for _ in range(10):
        ours()
        theirs()
    times = ([], [])
    for _ in range(runs):
        for fn, bucket in zip((ours, theirs), times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return float(np.median(times[0])) * 1e6, float(np.median(times[1])) * 1e6


def op_gaps(path: Path, threads: int, runs: int) -> list[tuple[float, float, str, str]]:
    """(qengine µs, TFLite µs, op type, "input x filter -> output" shapes) per op."""
    from ai_edge_litert.interpreter import Interpreter

    rows = []
    for op_type, content, feeds in one_op_models(path):
        tfl = Interpreter(model_content=content, num_threads=threads)
        set_tflite_inputs(tfl, feeds, allocate=True)
        model = qengine.load(content)
        ours = qengine.Interpreter(model, num_threads=threads)
        q_us, t_us = median_pair_us(lambda ours=ours, feeds=feeds: ours.run(feeds), tfl.invoke,
                                    runs)
        op = model.main.operators[0]
        shapes = " x ".join(str(tuple(t.shape)) for t in op.inputs[:2] if t is not None)
        rows.append((q_us, t_us, op_type, f"{shapes} -> {tuple(op.outputs[0].shape)}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25, help="instances listed")
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    path = model_path(args.model)
    if not path.exists():
        parser.error(f"no model at {args.model} (nor {path})")
    rows = op_gaps(path, args.threads, args.runs)
    ours, theirs = sum(r[0] for r in rows), sum(r[1] for r in rows)
    print(f"{path.name}, {args.threads} thread(s), {len(rows)} ops: qengine {ours:.0f} us, "
          f"TFLite default {theirs:.0f} us in one-op models")
    print("| qengine µs | TFLite µs | ratio | op |")
    print("|---|---|---|---|")
    for q_us, t_us, op_type, shapes in sorted(rows, key=lambda r: r[1] - r[0])[:args.top]:
        print(f"| {q_us:.1f} | {t_us:.1f} | {q_us / t_us:.2f} | {op_type} {shapes} |")


if __name__ == "__main__":
    main()
