"""Warm whole-process start-up and the interpreter's own per-op cost, optionally interleaved
with another checkout of qengine.

    python benchmarks/startup.py MODEL.tflite ... [--repeat 3] [--against DIR]
    python benchmarks/startup.py MODEL.tflite ... --loop          # interpreter cost per op

Start-up: wall clock and CPU time (user + sys: what a busy machine inflates least) of
`python -m qengine run MODEL --repeat 1`, run from a neutral directory with qengine's
modules byte-compiled (as an installed package has them) and a warm kernel cache (one run
first). With `--against DIR` (a checkout whose `qengine/` has `kernels` and `schema` links to
its own `kernels/` and `schema/`), every round runs old, new, new, old.

--loop: the same model once with its kernels and once with every op replaced by a function
returning that op's saved outputs: the second is the interpreter's own time per op.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def whole_run(model: Path, pythonpath: str) -> tuple[float, float]:
    """(wall s, CPU s) of one `qengine run` process."""
    env = dict(os.environ, PYTHONPATH=pythonpath)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qengine", "run", str(model), "--repeat", "1"],
                   env=env, cwd=tempfile.gettempdir(), check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def startup(models, repeat: int, against: str | None) -> None:
    for folder in [REPO / "qengine", REPO / "kernels", REPO / "schema"] + (
            [Path(against)] if against else []):
        compileall.compile_dir(folder, quiet=1)
    order = [("new", "")] if against is None else [("old", against), ("new", ""), ("new", ""),
                                                   ("old", against)]
    for model in models:
        for _, path in order[:2]:
            whole_run(model, path)  # compile kernels into the cache, write .pyc
        cells = []
        for _ in range(repeat):
            for label, path in order:
                wall, cpu = whole_run(model, path)
                cells.append(f"{label} {wall:.2f}/{cpu:.2f}")
        print(f"{model.name}: wall/CPU s: {', '.join(cells)}")


def loop_cost(models) -> None:
    import qengine
    from qengine.cli_common import generated_inputs

    for model in models:
        interpreter = qengine.Interpreter(str(model))
        x = generated_inputs(interpreter.model.main.inputs, 0, quiet=True)
        full = _best_ms(interpreter, x)
        plan = interpreter._plans[0]
        values = plan.run(x, keep=True)
        ops = 0
        for index, step in enumerate(plan.steps):
            if step.prepared is None or step.folded:
                continue
            op = plan.subgraph.operators[index]
            saved = tuple(None if t is None else values[plan.slot[id(t)]] for t in op.outputs)
            result = saved if len(saved) > 1 else saved[0]
            step.prepared.run = lambda *_, result=result: result
            ops += 1
        empty = _best_ms(interpreter, x)
        print(f"{model.name}: run {full:.3f} ms, interpreter alone {empty:.3f} ms "
              f"({empty / ops * 1e3:.2f} us per op, {ops} ops)")


def _best_ms(interpreter, x, runs: int = 300) -> float:
    for _ in range(10):
        interpreter.run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.run(x)
        times.append(time.perf_counter() - start)
    return float(np.min(times)) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=lambda p: Path(p).resolve())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--against", help="another checkout to interleave with (old, new, new, "
                                          "old)")
    parser.add_argument("--loop", action="store_true",
                        help="measure the interpreter's own time per op instead")
    args = parser.parse_args(argv)
    if args.loop:
        loop_cost(args.models)
    else:
        startup(args.models, args.repeat, args.against)
    return 0


if __name__ == "__main__":
    sys.exit(main())
