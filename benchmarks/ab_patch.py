"""One model, two interpreters in one process: as the code is, and with one of qengine's
functions replaced by a constant (a rewrite or fast path turned off), timed in alternation so
that the VM's drift cancels. Both must give the same outputs.

    python benchmarks/ab_patch.py MODEL --off MODULE:NAME=VALUE [--threads N] [--rounds R]
    python benchmarks/ab_patch.py MODEL --set MODULE:NAME=VALUE [--threads N] [--rounds R]

`--set` gives a module constant that kernels read at run time (a split bar of
`qengine.kernels.threads`, e.g. `--set qengine.kernels.threads:LOOKUP_FLOPS=16`) another
value, and times one interpreter with the constant as it is and as set, in alternation.

e.g. `--off qengine.runtime.fusion:_fuse_lookup=None` (no int8 lookup folds),
`--off qengine.ops.conv:_pointwise=False` (no flat 1x1 depthwise),
`--off qengine.ops.elementwise_int:PairLookup.then_pairs=None` (no chained PRELU). MODEL is a
path, or a name in `.cache/published` (fetched by `tests/published_models.py`). Prints the
medians (ms a run) and their ratio, as-is over patched.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import time
from pathlib import Path

import numpy as np

import qengine
from qengine.cli_common import generated_inputs

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "published"


def patch(spec: str) -> None:
    """Replace MODULE:NAME (NAME may be Class.attribute) by a function returning VALUE."""
    target, _, value = spec.partition("=")
    module_name, _, name = target.partition(":")
    owner = importlib.import_module(module_name)
    *path, attribute = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    if not hasattr(owner, attribute):
        raise SystemExit(f"{module_name} has no {name}")
    constant = ast.literal_eval(value)
    setattr(owner, attribute, lambda *args, **kwargs: constant)


def toggled(spec: str):
    """(owner, attribute, its value, the value set) of a --set MODULE:NAME=VALUE."""
    target, _, value = spec.partition("=")
    module_name, _, name = target.partition(":")
    owner = importlib.import_module(module_name)
    if not hasattr(owner, name):
        raise SystemExit(f"{module_name} has no {name}")
    return owner, name, getattr(owner, name), ast.literal_eval(value)


def expect_same(got: dict, want: dict, change: str) -> None:
    """The outputs with and without the change are equal (NaN where NaN), or the A/B stops."""
    for name, value in want.items():
        if not np.array_equal(got[name], value, equal_nan=value.dtype.kind == "f"):
            raise SystemExit(f"output {name!r} differs with {change}")


def timed(interpreter, inputs, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        interpreter.run(inputs)
    return (time.perf_counter() - start) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    change = parser.add_mutually_exclusive_group(required=True)
    change.add_argument("--off", metavar="MODULE:NAME=VALUE")
    change.add_argument("--set", metavar="MODULE:NAME=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--runs", type=int, default=20, help="runs per round and interpreter")
    args = parser.parse_args()
    path = Path(args.model)
    if not path.exists():
        path = CACHE / f"{args.model}.tflite"
    as_is = qengine.Interpreter(str(path), num_threads=args.threads)
    inputs = generated_inputs(as_is.inputs, 0, quiet=True)
    got = as_is.run(inputs)  # (its plans made before the patch)
    if args.set:
        return compare_setting(path, as_is, inputs, got, args)
    patch(args.off)
    patched = qengine.Interpreter(str(path), num_threads=args.threads)
    want = patched.run(inputs)
    expect_same(got, want, args.off)
    times: tuple[list, list] = ([], [])
    for _ in range(args.rounds):
        for interpreter, seconds in zip((as_is, patched), times):
            seconds.append(timed(interpreter, inputs, args.runs))
    a, b = (float(np.median(t)) for t in times)
    print(f"{path.name} threads={args.threads}: as is {a * 1e3:.3f} ms, with {args.off} "
          f"{b * 1e3:.3f} ms, ratio {a / b:.3f}")


def compare_setting(path, interpreter, inputs, got, args) -> None:
    owner, name, value, new = toggled(args.set)
    times: tuple[list, list] = ([], [])
    try:
        for _ in range(args.rounds):
            for setting, seconds in zip((value, new), times):
                setattr(owner, name, setting)
                interpreter.run(inputs)  # (one untimed run after each change)
                seconds.append(timed(interpreter, inputs, args.runs))
        want = interpreter.run(inputs)
    finally:
        setattr(owner, name, value)
    expect_same(got, want, args.set)
    a, b = (float(np.median(t)) for t in times)
    print(f"{path.name} threads={args.threads}: {name}={value!r} {a * 1e3:.3f} ms, with "
          f"{args.set} {b * 1e3:.3f} ms, ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
