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

from .cli_common import (
    EXIT_USER_ERROR,
    compare_with_tflite,
    generated_inputs,
    positive,
    print_profile,
    read_inputs,
    summary,
    write_npz,
)
from .errors import QEngineError


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
            for node in getattr(e, "nodes", ()):  # every unsupported node, not one per type
                print(f"unsupported: {node}", file=sys.stderr)
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


class _Version(argparse.Action):
    """--version, computed only when asked (it imports the kernels' settings module)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def version_text() -> str:
    from . import __version__
    from .kernels.jit import KEEP_ENV, environment_changes

    lines = [f"qengine {__version__}"]
    changes = environment_changes()
    for name, value in changes.items():
        lines.append(f"set by qengine: {name}={value}")
    if KEEP_ENV:
        lines.append("QENGINE_KEEP_ENV is set: qengine changed no process settings")
    elif changes:
        lines.append("(QENGINE_KEEP_ENV=1 keeps these unchanged; a user's own setting wins)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qengine", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the version and what qengine changes in the process's "
                             "environment, then exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("inspect", help="describe a model's inputs, outputs, ops and sizes")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--unsupported", action="store_true",
                   help="list every op qengine has no kernel for, one per line")
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
                   help="arithmetic to reproduce: TFLite's reference kernels (default) or its "
                        "default interpreter's XNNPACK kernels (int8, and float convolutions, "
                        "fully-connected and bilinear resize: bit for bit, and faster)")
    p.add_argument("--stream", action="store_true",
                   help="feed the input's axis-0 chunks as successive calls (state carried), "
                        "--output gets every call's outputs stacked on a new axis 0")
    p.add_argument("--max-iterations", type=positive, default=None,
                   help="WHILE loops running longer are an error (default 2^20)")
    p.set_defaults(handler=cmd_run)

    for extra in _extra_commands():
        extra(commands)
    return parser


def _extra_commands():
    """Commands defined in other modules (imported lazily when they run)."""
    from . import bench, cli_compare, cli_quantize, cli_research, warmup

    return (cli_quantize.COMMANDS + [bench.add_bench, warmup.add_warmup] + cli_compare.COMMANDS
            + cli_research.COMMANDS)


# ---------------------------------------------------------------------------------------------
# inspect


def cmd_inspect(args) -> int:
    from .flatbuffer_io import load
    from .inspect import describe, format_text

    path = Path(args.model)
    if args.unsupported:
        return print_unsupported(load(path))
    info = describe(load(path), file_size=path.stat().st_size if path.exists() else None)
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    return 0


def print_unsupported(model) -> int:
    from .runtime.interpreter import unsupported_nodes

    nodes = unsupported_nodes(model)
    for _, node in nodes:
        print(node)
    print(f"{len(nodes)} op(s) without a qengine kernel, "
          f"{len({name for name, _ in nodes})} distinct type(s)")
    return 0


# ---------------------------------------------------------------------------------------------
# run


def cmd_run(args) -> int:
    from .flatbuffer_io import load
    from .runtime.precompile import prepare_on_all_cores
    from .warmup import announce_first_compile, compile_notice

    model = load(args.model)
    announce_first_compile(compile_notice(model))
    start = time.perf_counter()
    limits = {"max_iterations": args.max_iterations} if args.max_iterations else {}
    # a cold kernel cache is compiled on every core (streaming models have few kernels)
    interpreter = prepare_on_all_cores(model, args.model, num_threads=args.threads,
                                       arithmetic=args.arithmetic, helpers=not args.stream,
                                       **limits)
    prepare_time = time.perf_counter() - start
    if args.stream:
        from .cli_stream import run_stream

        return run_stream(args, interpreter, model, prepare_time)
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
