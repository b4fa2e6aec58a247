"""`python -m qengine COMMAND ...`: inspect, run, quantize, compare and bench .tflite models.

`main(argv) -> exit code` is a pure function so tests call it directly. Problems with the
user's model, data or options print one `error: ...` line and exit with 2; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .cli_common import generated_inputs, positive, read_inputs
from .errors import QEngineError

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        return args.handler(args)
    except QEngineError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `qengine inspect ... | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as e:
        if args.debug:
            raise
        print(f"error: {e.filename or ''}: {e.strerror or e}".replace(": : ", ": "),
              file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    sys.exit(main())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qengine", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("inspect", help="describe a model's inputs, outputs, ops and sizes")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=cmd_inspect)

    p = commands.add_parser("run", help="run a model with qengine's kernels")
    p.add_argument("model")
    p.add_argument("--input", help=".npy (single-input models) or .npz keyed by input name")
    p.add_argument("--output", help="write outputs to this .npz, keyed by output tensor name")
    p.add_argument("--compare", action="store_true",
                   help="also run TFLite's interpreter and compare (its reference kernels; "
                        "its default interpreter, XNNPACK, with --arithmetic xnnpack)")
    p.add_argument("--profile", action="store_true", help="print time per op type")
    p.add_argument("--repeat", type=positive, default=10, help="timed runs (default 10)")
    p.add_argument("--threads", type=positive, default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the generated input")
    p.add_argument("--arithmetic", choices=("ref", "xnnpack"), default="ref",
                   help="integer arithmetic to reproduce (default: TFLite reference kernels)")
    p.set_defaults(handler=cmd_run)

    for extra in _extra_commands():
        extra(commands)
    return parser


def _extra_commands():
    """Commands defined in other modules (imported lazily when they run)."""
    from . import bench, cli_compare, cli_quantize

    return cli_quantize.COMMANDS + [bench.add_bench] + cli_compare.COMMANDS


# ---------------------------------------------------------------------------------------------
# inspect


def cmd_inspect(args) -> int:
    from .flatbuffer_io import load
    from .inspect import describe, format_text

    path = Path(args.model)
    info = describe(load(path), file_size=path.stat().st_size if path.exists() else None)
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    return 0


# ---------------------------------------------------------------------------------------------
# run


def cmd_run(args) -> int:
    from .flatbuffer_io import load
    from .runtime import Interpreter

    model = load(args.model)
    start = time.perf_counter()
    interpreter = Interpreter(model, num_threads=args.threads, arithmetic=args.arithmetic)
    prepare_time = time.perf_counter() - start
    inputs = read_inputs(args.input, interpreter.inputs, model) if args.input else \
        generated_inputs(interpreter.inputs, args.seed)
    outputs, first, steady = _timed_runs(interpreter, inputs, args.repeat, args.profile)
    for name, value in outputs.items():
        print(f"{name}: {summary(value)}")
    print(f"latency: prepare {prepare_time * 1e3:.1f} ms, first run {first * 1e3:.2f} ms, "
          f"steady {steady * 1e3:.2f} ms (median of {args.repeat})")
    if args.profile:
        print_profile(interpreter.op_times(), args.repeat)
    if args.output:
        write_npz(args.output, outputs)
        print(f"wrote {args.output}")
    if args.compare:
        return compare_with_tflite(args.model, inputs, outputs, args.arithmetic)
    return 0


def _timed_runs(interpreter, inputs, repeat: int, profile: bool):
    start = time.perf_counter()
    outputs = interpreter.run(inputs)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        interpreter.run(inputs, profile=profile)
        times.append(time.perf_counter() - start)
    return outputs, first, float(np.median(times))


def summary(value: np.ndarray) -> str:
    text = f"shape {tuple(value.shape)} {value.dtype}"
    if value.size == 0:
        return text + " (empty)"
    if value.dtype.kind in "fiu":
        flat = value.astype(np.float64).ravel()
        text += f" min {flat.min():.6g} max {flat.max():.6g} mean {flat.mean():.6g}"
        if value.ndim == 2 and value.shape[0] == 1:
            text += f" argmax {int(np.argmax(flat))}"
    return text


def print_profile(op_times: dict[str, float], repeat: int) -> None:
    total = sum(op_times.values()) or 1.0
    print(f"{'op type':<28}{'ms/run':>10}{'share':>8}")
    for name, seconds in sorted(op_times.items(), key=lambda kv: -kv[1]):
        print(f"{name:<28}{seconds / repeat * 1e3:>10.3f}{seconds / total:>8.1%}")


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Atomic: a temporary file renamed over the target, so no partial output remains."""
    import os
    import tempfile

    target = Path(path)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def compare_with_tflite(model_path: str, inputs, outputs: dict[str, np.ndarray],
                        arithmetic: str = "ref") -> int:
    """Run TFLite on the same input, with its reference kernels (arithmetic "ref") or as its
    default interpreter runs (XNNPACK delegate, one thread; arithmetic "xnnpack"); exit 1 if
    any output disagrees."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        print("--compare needs ai-edge-litert: pip install 'qengine[tf]'", file=sys.stderr)
        return EXIT_USER_ERROR
    resolver = OpResolverType.AUTO if arithmetic == "xnnpack" else OpResolverType.BUILTIN_REF
    tfl = Interpreter(model_path=str(model_path), num_threads=1,
                      experimental_op_resolver_type=resolver)
    details = tfl.get_input_details()
    arrays = inputs if isinstance(inputs, list) else [inputs[d["name"]] for d in details]
    for d, array in zip(details, arrays):
        if tuple(d["shape"]) != array.shape:
            tfl.resize_tensor_input(d["index"], array.shape)
    tfl.allocate_tensors()
    for d, array in zip(details, arrays):
        tfl.set_tensor(d["index"], array)
    tfl.invoke()
    failed = False
    print(f"{'output':<40}{'max |diff|':>12}{'max rel':>12}  result")
    for d in tfl.get_output_details():
        want, got = tfl.get_tensor(d["index"]), outputs[d["name"]]
        ok, max_abs, max_rel = outputs_agree(got, want)
        failed |= not ok
        print(f"{d['name'][:39]:<40}{max_abs:>12.3g}{max_rel:>12.3g}  {'PASS' if ok else 'FAIL'}")
    print("tolerance: integers exact; floats 1e-4 of the output's range")
    return 1 if failed else 0


def outputs_agree(got: np.ndarray, want: np.ndarray, rel: float = 1e-4):
    if got.shape != want.shape or got.dtype != want.dtype:
        return False, float("inf"), float("inf")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(want).max()) if want.size else 0.0
    max_rel = max_abs / scale if scale else max_abs
    if want.dtype.kind in "iub":
        return max_abs == 0, max_abs, max_rel
    span = float(np.ptp(want)) if want.size else 0.0
    return max_abs <= rel * max(span, scale, 1e-2), max_abs, max_rel
