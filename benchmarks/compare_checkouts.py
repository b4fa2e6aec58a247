"""Two checkouts of qengine on the same models, interleaved: what a change bought, measured so
that the VM's drift (this 2-vCPU VM's speed moved by 10-20 % within an hour) cancels out.

    git worktree add /tmp/old REV
    python benchmarks/compare_checkouts.py /tmp/old . [--threads 1] [--rounds 3]
        [--new-arithmetic xnnpack] [--models NAME_OR_PATH ...] [--cold]

Each round runs one fresh process per checkout, old then new; a process times every model
(median of 40 runs after 5 warm-ups, `run` as `qengine run` calls it). A model's figure is the
median over the rounds; the last line is the geometric mean of new / old. Both checkouts use
this environment's packages; each imports its own `qengine`, `qengine.kernels` and
`qengine.schema` (and compiles its kernels into its own cache directory on first use). Models
are names in .cache/published (tests/published_models.py fetches them) or paths.

`--cold`: instead, the whole-process first run (`qengine run MODEL --repeat 1` on an empty
kernel cache, wall clock), one process per model and checkout per round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "published"
ISSUE_14 = ["face_detection_short_range", "face_detection_full_range",
            "face_detection_full_range_sparse", "face_detection_back", "face_landmark",
            "iris_landmark", "hand_recrop", "hand_landmark_lite", "hand_landmark_full",
            "palm_detection_lite", "palm_detection_full", "pose_detection",
            "pose_landmark_full", "nmp"]

# the start of both programs below: qengine imported from the checkout in argv[1]
IMPORT_CHECKOUT = r'''
import importlib.util, json, sys, time
checkout = sys.argv[1]
sys.path.insert(0, checkout)
for sub in ("kernels", "schema"):  # an editable install maps these to its own checkout
    spec = importlib.util.spec_from_file_location(
        f"qengine.{sub}", f"{checkout}/{sub}/__init__.py",
        submodule_search_locations=[f"{checkout}/{sub}"])
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"qengine.{sub}"] = module
    spec.loader.exec_module(module)
import qengine
assert qengine.__file__.startswith(checkout), qengine.__file__
'''

# run in a fresh process: argv = checkout, threads, arithmetic, model paths...
TIMER = IMPORT_CHECKOUT + r'''
import numpy as np
from qengine.cli_common import generated_inputs
threads, arithmetic, paths = int(sys.argv[2]), sys.argv[3], sys.argv[4:]
times = {}
for path in paths:
    interpreter = qengine.Interpreter(path, num_threads=threads, arithmetic=arithmetic)
    inputs = generated_inputs(interpreter.inputs, 0, quiet=True)
    for _ in range(5):
        interpreter.run(inputs)
    runs = []
    for _ in range(40):
        start = time.perf_counter()
        interpreter.run(inputs)
        runs.append(time.perf_counter() - start)
    times[path] = float(np.median(runs)) * 1e3
print(json.dumps(times))
'''


# a whole `qengine run` in a fresh process: argv = checkout, model path
COLD = IMPORT_CHECKOUT + r'''
from qengine.cli import main
sys.exit(main(["run", sys.argv[2], "--repeat", "1"]))
'''


def cold_checkout(checkout: str, paths: list[str]) -> dict:
    """Seconds of a whole first `qengine run` per model, each on an empty kernel cache."""
    import tempfile
    import time

    seconds = {}
    for path in paths:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, QENGINE_CACHE_DIR=cache)
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", COLD, checkout, path], env=env,
                                    cwd="/", capture_output=True, text=True, check=False)
            seconds[path] = time.perf_counter() - start
            if result.returncode:
                sys.exit(f"{checkout}: {(result.stderr.strip() or 'failed').splitlines()[-1]}")
    return seconds


def time_checkout(checkout: str, threads: int, arithmetic: str, paths: list[str]) -> dict:
    env = dict(os.environ, QENGINE_IGNORE_OTHER_LOAD="1")  # the two never overlap
    result = subprocess.run([sys.executable, "-c", TIMER, checkout, str(threads), arithmetic,
                             *paths], capture_output=True, text=True, env=env, cwd="/",
                            check=False)
    if result.returncode:
        sys.exit(f"{checkout}: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-arithmetic", choices=("ref", "xnnpack"), default="ref",
                        help="the new checkout's arithmetic (the old one runs ref)")
    parser.add_argument("--models", nargs="+", default=ISSUE_14)
    parser.add_argument("--cold", action="store_true",
                        help="time the whole-process first run on an empty kernel cache")
    args = parser.parse_args()
    paths = [str(Path(m).resolve()) if os.sep in m else str(CACHE / f"{m}.tflite")
             for m in args.models]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such model: {', '.join(missing)}")
    old_dir, new_dir = (str(Path(d).resolve()) for d in (args.old, args.new))
    rounds = {"old": [], "new": []}
    for _ in range(args.rounds):
        for key, checkout, arithmetic in (("old", old_dir, "ref"),
                                          ("new", new_dir, args.new_arithmetic)):
            rounds[key].append(cold_checkout(checkout, paths) if args.cold else
                               time_checkout(checkout, args.threads, arithmetic, paths))
    what = "first run, s" if args.cold else f"{args.threads} thread(s), ms"
    print(f"{what}; old {args.old} (ref), new {args.new} ({args.new_arithmetic}); median over "
          f"{args.rounds} interleaved rounds\n")
    print("| model | old | new | new / old |")
    print("|---|---|---|---|")
    ratios = []
    for model, path in zip(args.models, paths):
        old = float(np.median([r[path] for r in rounds["old"]]))
        new = float(np.median([r[path] for r in rounds["new"]]))
        ratios.append(new / old)
        print(f"| {Path(model).name} | {old:.2f} | {new:.2f} | {new / old:.2f} |")
    print(f"\ngeometric mean of new / old: {np.exp(np.mean(np.log(ratios))):.3f}")


if __name__ == "__main__":
    main()
