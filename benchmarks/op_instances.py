"""Time of every op instance of a model, qengine alone: the per-layer figures of
benchmarks/README.md (issue #14), where `qengine run --profile` gives only per-op-type sums.

    python benchmarks/op_instances.py MODEL [--threads N] [--top K] [--set NAME=VALUE ...]
                                           [--in-runs]

The model runs once with every intermediate tensor kept; then each op's prepared kernel runs
again on those tensors, in model order (so each op finds the caches its predecessors left, as
in a whole run), 30 times; a figure is the median. Kept tensors are all distinct arrays, more
memory than a run touches (face_detection_full_range's ops summed 3.3 ms this way, 2.2 in
whole runs); `--in-runs` times each op inside whole runs instead (10 untimed, then 30; on
several threads every layer split, its cores claimed once a run, as the interpreter does). `--set` overrides a constant of
`qengine.kernels.threads` first, e.g. `--set STREAM_FLOPS=0` keeps the memory-bound passes
(ADD, PAD) on one thread, `--set MIN_SPLIT_FLOPS=1e18` keeps everything there. MODEL is a
path, or a name in `.cache/published` (fetched by `tests/published_models.py`).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from qengine.kernels import threads as pool

import qengine
from qengine.cli_common import generated_inputs
from qengine.runtime.interpreter import op_key, thread_limit

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "published"
REPEAT = 30


def model_path(model: str) -> Path:
    """MODEL as given: a path, or a name in `.cache/published`."""
    path = Path(model)
    return path if path.exists() else CACHE / f"{model}.tflite"


def instance_times(path: Path, threads: int, in_runs: bool = False
                   ) -> list[tuple[float, str, str]]:
    """(median µs, op type, "input x filter -> output" shapes) of every op that runs, in
    model order."""
    interpreter = qengine.Interpreter(str(path), num_threads=threads)
    inputs = generated_inputs(interpreter.inputs, 0, quiet=True)
    arrays = [np.asarray(v) for v in (inputs.values() if isinstance(inputs, dict) else inputs)]
    plan, values = interpreter._run_plan(0, arrays, keep=True, fused=True)  # as run() runs
    times = defaultdict(list)
    if in_runs:
        with thread_limit(threads), pool.claimed_run(threads):
            for r in range(10 + REPEAT):
                _timed_run(plan, arrays, times if r >= 10 else defaultdict(list))
    for _ in range(0 if in_runs else REPEAT):
        for index, step in enumerate(plan.steps):
            if step.folded:
                continue
            args = [None if slot < 0 else values[slot] for slot in plan.in_slots[index]]
            start = time.perf_counter()
            step.prepared.run(*args)
            times[index].append(time.perf_counter() - start)
    rows = []
    for index, seconds in times.items():
        op = plan.subgraph.operators[index]
        outputs = [values[slot].shape for slot in plan.out_slots[index] if slot >= 0]
        inputs = [tuple(t.shape) for t in op.inputs[:2] if t is not None]  # data, filter
        rows.append((float(np.median(seconds)) * 1e6, op_key(op),
                     f"{' x '.join(map(str, inputs))} -> {outputs[0] if outputs else ()}"))
    return rows


def _timed_run(plan, arrays: list, times: dict) -> None:
    """One run of the plan as `_Plan.run` makes it (each tensor dropped once its last reader
    ran), each op timed into times[op index]."""
    values = plan._known_values()
    for tensor, array in zip(plan.subgraph.inputs, arrays, strict=True):
        values[plan.slot[id(tensor)]] = array
    for index, step in enumerate(plan.steps):
        if step.folded:
            continue
        args = [None if slot < 0 else values[slot] for slot in plan.in_slots[index]]
        start = time.perf_counter()
        outputs = step.prepared.run(*args)
        times[index].append(time.perf_counter() - start)
        plan._store(values, index, plan.out_slots[index], step.prepared.outputs, outputs)
        for slot in plan.dead_after[index]:
            values[slot] = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=15, help="slowest instances listed")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a constant of qengine.kernels.threads")
    parser.add_argument("--in-runs", action="store_true",
                        help="time each op inside whole runs, not on kept tensors")
    args = parser.parse_args()
    for setting in args.set:
        name, value = setting.split("=", 1)
        if not hasattr(pool, name):
            parser.error(f"qengine.kernels.threads has no {name}")
        setattr(pool, name, int(float(value)))
    path = model_path(args.model)
    rows = instance_times(path, args.threads, args.in_runs)
    print(f"{path.name}, {args.threads} thread(s): {len(rows)} ops, "
          f"{sum(r[0] for r in rows):.0f} us in all")
    per_type = defaultdict(lambda: [0, 0.0])
    for us, kind, _ in rows:
        per_type[kind][0] += 1
        per_type[kind][1] += us
    for kind, (count, us) in sorted(per_type.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:<22} {count:>4} ops {us:>9.0f} us")
    for us, kind, shape in sorted(rows, key=lambda r: -r[0])[:args.top]:
        print(f"  {us:9.1f} us  {kind} {shape}")


if __name__ == "__main__":
    main()
