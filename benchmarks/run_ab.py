"""Two ways of running the same model, timed in one process in alternating blocks of runs:
what a change to the run machinery buys, with the VM's drift (the second vCPU's speed moves
by the minute) shared by both ways.

    python benchmarks/run_ab.py claimed MODEL ... [--threads 2] [--rounds 40]
    python benchmarks/run_ab.py pinned MODEL ... [--threads 1]
    python benchmarks/run_ab.py warm-split MODEL ...

- `claimed`: a 2-thread run split with its cores claimed once (`threads.claimed_run`) against
  a claim per split layer (both forced to split).
- `pinned`: two interpreters of the file, one calling its float kernels through the
  dispatcher (`kernels.jit.pinned` off when it was prepared), one through their entry points.
- `warm-split`: a split run right after an unsplit one against one right after a split run
  (why `runtime/splits.py` times its trial in pairs).

MODEL is a path or a name in `.cache/published` (fetched by `tests/published_models.py`). A
round runs each way for 6 runs, the first untimed; the figure is the median over the rounds
after the first 3. Outputs are checked equal between the ways first.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from op_instances import model_path
from qengine.kernels import jit
from qengine.kernels import threads as pool

import qengine
from qengine.cli_common import generated_inputs
from qengine.runtime.interpreter import thread_limit

RUNS_PER_BLOCK = 6
SKIPPED_ROUNDS = 3


def arrays_of(interpreter) -> list[np.ndarray]:
    inputs = generated_inputs(interpreter.inputs, 0, quiet=True)
    return [np.asarray(v) for v in (inputs.values() if isinstance(inputs, dict) else inputs)]


def forced(interpreter, arrays, claimed: bool):
    """A run of the main graph split between the threads (no split trial), its cores claimed
    once for the run or by each split."""
    plan = interpreter._plan(0, [a.shape for a in arrays], True)

    def run():
        if claimed:
            with pool.claimed_run(interpreter.num_threads):
                return interpreter._run_locked(plan, arrays, False, False)
        return interpreter._run_locked(plan, arrays, False, False)

    return run


def unsplit(interpreter, arrays):
    plan = interpreter._plan(0, [a.shape for a in arrays], True)

    def run():
        with pool.on_this_thread():
            return interpreter._run_locked(plan, arrays, False, False)

    return run


def alternate(ways: dict, rounds: int, threads: int) -> dict[str, float]:
    """Median ms of each way, blocks of RUNS_PER_BLOCK runs in turn."""
    times = {name: [] for name in ways}
    with thread_limit(threads):
        for r in range(rounds):
            for name, run in ways.items():
                for k in range(RUNS_PER_BLOCK):
                    start = time.perf_counter()
                    run()
                    if k and r >= SKIPPED_ROUNDS:
                        times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def same_outputs(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        if x is not None and not np.array_equal(x, y, equal_nan=True):
            raise SystemExit("the two ways disagree")


def claimed_ab(path, threads: int, rounds: int) -> dict[str, float]:
    interpreter = qengine.Interpreter(str(path), num_threads=threads)
    arrays = arrays_of(interpreter)
    ways = {"per split": forced(interpreter, arrays, False),
            "claimed once": forced(interpreter, arrays, True)}
    return alternate(ways, rounds, threads)


def pinned_ab(path, threads: int, rounds: int) -> dict[str, float]:
    real = jit.pinned
    jit.pinned = lambda dispatcher: dispatcher  # read by the ops as they are prepared
    try:
        plain = qengine.Interpreter(str(path), num_threads=threads)
        arrays = arrays_of(plain)
        plain.run(arrays)
    finally:
        jit.pinned = real
    fast = qengine.Interpreter(str(path), num_threads=threads)
    want, got = plain.run(arrays), fast.run(arrays)
    same_outputs(list(want.values()), list(got.values()))
    ways = {"dispatcher": lambda: plain.run(arrays), "pinned": lambda: fast.run(arrays)}
    return alternate(ways, rounds, threads)


def warm_split_ab(path, threads: int, rounds: int) -> dict[str, float]:
    """Pairs (unsplit, split) against pairs (split, split): only the second run is timed."""
    interpreter = qengine.Interpreter(str(path), num_threads=threads)
    arrays = arrays_of(interpreter)
    split, whole = forced(interpreter, arrays, True), unsplit(interpreter, arrays)
    times = {"after an unsplit run": [], "after a split run": []}
    with thread_limit(threads):
        for _ in range(10):
            split()
            whole()
        for _ in range(rounds):
            for name, before in (("after an unsplit run", whole), ("after a split run", split)):
                before()
                start = time.perf_counter()
                split()
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


COMPARISONS = {"claimed": claimed_ab, "pinned": pinned_ab, "warm-split": warm_split_ab}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", choices=sorted(COMPARISONS))
    parser.add_argument("models", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    if args.threads < 1 or args.rounds <= SKIPPED_ROUNDS:
        parser.error(f"--threads must be >= 1 and --rounds > {SKIPPED_ROUNDS}")
    print(f"{args.comparison}, {args.threads} thread(s), ms (median)")
    for model in args.models:
        path = model_path(model)
        if not path.exists():
            parser.error(f"no model {model} (tests/published_models.py fetches them)")
        result = COMPARISONS[args.comparison](path, args.threads, args.rounds)
        (a, ta), (b, tb) = result.items()
        print(f"| {path.name} | {a} {ta:.3f} | {b} {tb:.3f} | {tb / ta:.3f} |", flush=True)


if __name__ == "__main__":
    main()
