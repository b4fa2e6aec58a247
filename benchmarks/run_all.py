"""Every benchmark of benchmarks/README.md, one after another, each in its own process, with
the machine description first. `make bench-all` runs this (`make bench` only published.py, the
issue #14 suite, in about 6 minutes); paste the output into the README.

    python benchmarks/run_all.py [--quick]

--quick: fewer kernel shapes and repeats, for checking the scripts still run (about 5 min
instead of about 25 on 2 cores); its numbers are not the README's.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, full arguments, --quick arguments)
BENCHMARKS = [
    ("published.py", [], ["--models", "face_detection_short_range", "iris_landmark", "--repeat",
                          "3", "--memory", "--startup"]),
    ("kernels.py", [], ["--quick", "--reps", "5"]),
    ("int8_tiles.py", [], ["--quick", "--repeat", "5"]),
    ("models.py", ["--repeat", "20"], ["--repeat", "3", "--modes", "int8"]),
    ("calibration.py", [], ["--samples", "20"]),
    ("xnnpack_agreement.py", [], []),
    ("xnnpack_latency.py", [], ["--repeat", "3"]),
    ("sqnr_report.py", [], ["--calibration", "10", "--held-out", "2"]),
    ("float_layers.py", [], ["--repeat", "20"]),
    ("xnnpack_exactness.py", [], ["--models", "face_detection_short_range", "iris_landmark"]),
]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return (f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def run(script: str, args: list[str]) -> bool:
    command = [sys.executable, str(HERE / script), *args]
    print(f"\n## {script}\n\nCommand: `python benchmarks/{script} {' '.join(args)}`.\n",
          flush=True)
    start = time.perf_counter()
    result = subprocess.run(command)
    print(f"\n({time.perf_counter() - start:.0f} s, exit status {result.returncode})",
          flush=True)
    return result.returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-run every script")
    parser.add_argument("--only", nargs="+", metavar="SCRIPT",
                        help="run only these scripts (e.g. kernels.py models.py)")
    args = parser.parse_args(argv)
    known = {name for name, _, _ in BENCHMARKS}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]}; choose from {', '.join(sorted(known))}")
    print(f"# qengine benchmarks\n\nMachine: {machine()}.")
    failed = [name for name, full, quick in BENCHMARKS
              if (not args.only or name in args.only)
              and not run(name, quick if args.quick else full)]
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
