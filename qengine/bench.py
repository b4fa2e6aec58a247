"""`qengine bench MODEL`: qengine's latency beside TFLite's, on the same file and input.

TFLite runs in three settings: its default (XNNPACK delegate applied), its optimized kernels
without the delegate, and its reference kernels (the only other bit-exact path). Every figure is
the median of `repeat` timed runs after one warm-up run, in this one process.
"""

from __future__ import annotations

import json
import time

import numpy as np

TFLITE_SETTINGS = {
    "tflite_default": "AUTO",
    "tflite_optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    "tflite_reference": "BUILTIN_REF",
}


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up: first-run allocations and (for qengine) kernel compilation
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_qengine(model_path: str, inputs: list[np.ndarray], threads: int, repeat: int):
    from .runtime import Interpreter

    interpreter = Interpreter(model_path, num_threads=threads)
    seconds = median_seconds(lambda: interpreter.run(inputs), repeat)
    for _ in range(repeat):
        interpreter.run(inputs, profile=True)
    per_op = {name: t / repeat for name, t in interpreter.op_times().items()}
    return seconds, per_op


def bench_tflite(model_path: str, inputs: list[np.ndarray], threads: int, repeat: int,
                 resolver: str) -> float | None:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        return None
    from .cli_common import set_tflite_inputs

    tfl = Interpreter(model_path=str(model_path), num_threads=threads,
                      experimental_op_resolver_type=getattr(OpResolverType, resolver))
    set_tflite_inputs(tfl, inputs, allocate=True)
    details = tfl.get_input_details()

    def run():
        for d, x in zip(details, inputs):
            tfl.set_tensor(d["index"], x)
        tfl.invoke()

    return median_seconds(run, repeat)


def bench_model(model_path: str, inputs, threads: int = 1, repeat: int = 20) -> dict:
    qengine_s, per_op = bench_qengine(model_path, inputs, threads, repeat)
    result = {"model": str(model_path), "threads": threads, "repeat": repeat,
              "qengine_ms": qengine_s * 1e3,
              "qengine_per_op_ms": {k: v * 1e3 for k, v in sorted(per_op.items(),
                                                                   key=lambda kv: -kv[1])}}
    for name, resolver in TFLITE_SETTINGS.items():
        seconds = bench_tflite(model_path, inputs, threads, repeat, resolver)
        result[name + "_ms"] = None if seconds is None else seconds * 1e3
        result[f"ratio_vs_{name}"] = None if seconds is None else qengine_s / seconds
    return result


def format_result(r: dict) -> str:
    lines = [f"{r['model']}  ({r['threads']} thread(s), median of {r['repeat']})",
             f"  qengine            {r['qengine_ms']:9.2f} ms"]
    for name in TFLITE_SETTINGS:
        ms = r[name + "_ms"]
        if ms is None:
            lines.append(f"  {name:<18} (ai-edge-litert not installed)")
        else:
            lines.append(f"  {name:<18} {ms:9.2f} ms   qengine/TFLite = "
                         f"{r['ratio_vs_' + name]:.2f}")
    lines.append("  qengine per op type:")
    for op, ms in r["qengine_per_op_ms"].items():
        lines.append(f"    {op:<26}{ms:9.3f} ms")
    return "\n".join(lines)


def cmd_bench(args) -> int:
    from .cli_common import generated_inputs, read_inputs
    from .flatbuffer_io import load

    model = load(args.model)
    tensors = model.main.inputs
    inputs = read_inputs(args.input, tensors, model) if args.input else \
        generated_inputs(tensors, args.seed)
    if isinstance(inputs, dict):
        inputs = [inputs[t.name] for t in tensors]
    result = bench_model(args.model, inputs, args.threads, args.repeat)
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0


def add_bench(commands) -> None:
    p = commands.add_parser("bench", help="latency of qengine vs TFLite on the same file")
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_bench)
