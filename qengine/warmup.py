"""`qengine warmup [MODEL ...]`: compile the kernels into the on-disk cache ahead of time.

Numba compiles each kernel the first time a process needs it and caches the machine code
(kernels/jit.py); a model's first run on a new machine otherwise spends 5-25 s compiling.
With models, each is prepared and run once in every thread setting asked for (exactly what
they need); without, a small built-in network with the ops the published vision models use
(CONV_2D 3x3/1x1, DEPTHWISE_CONV_2D, ADD, PRELU, MAX_POOL_2D, RESIZE_BILINEAR, CONCATENATION,
FULLY_CONNECTED) runs as float and in qengine's int8, dynamic-range and 16x8 quantizations.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .builder import SAME, GraphBuilder, options

# Seconds a cold first `qengine run` of pose_landmark_full took (session 15, 2-vCPU VM), by
# kind of model, on one core and on two (runtime/precompile.py compiles on every core)
# (int8; "integer" covers 16x8 models too)
COMPILE_SECONDS = {"integer": (8, 5), "dynamic range": (25, 15), "float": (15, 10)}


def compile_notice(model, cores: int | None = None) -> str:
    """The one line `run` prints when a kernel is compiled rather than loaded from the cache."""
    if cores is None:
        from qengine.kernels.threads import CORES as cores
    integer = any(t.dtype in ("int8", "int16") and not t.is_constant for t in model.main.tensors)
    weights8 = any(t.dtype == "int8" and t.is_constant for t in model.main.tensors)
    kind = "integer" if integer else "dynamic range" if weights8 else "float"
    seconds = COMPILE_SECONDS[kind][cores > 1]
    return f"compiling qengine's {kind} kernels for this CPU, once (qengine warmup does it " \
           f"ahead): ~{seconds} s"


def announce_first_compile(message: str) -> None:
    """Print `message` to stderr (a terminal only) when the first kernel compiles."""
    if not sys.stderr.isatty():
        return
    from qengine.kernels.jit import on_first_compile

    on_first_compile(lambda: print(message, file=sys.stderr, flush=True))


def builtin_model():
    """A small float network with the ops of the published vision models, its filters of at
    least 1024 values (MediaPipe's sizes) so that dynamic-range quantization makes every conv
    hybrid, as in the published models, and the warmup compiles those kernels too."""
    rng = np.random.default_rng(0)
    b = GraphBuilder()
    c = 128  # a depthwise filter of 3x3x128 = 1152 values

    def weights(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.3

    x = b.input("image", (1, 16, 16, 3))
    conv = b.op("CONV_2D", [x, b.const("w1", weights(c, 3, 3, 3)), b.const("b1", weights(c))],
                (1, 8, 8, c), options=options("Conv2DOptions", padding=SAME, strideH=2,
                                                strideW=2, fusedActivationFunction=1))
    dw = b.op("DEPTHWISE_CONV_2D", [conv, b.const("w2", weights(1, 3, 3, c)),
                                    b.const("b2", weights(c))], (1, 8, 8, c),
              options=options("DepthwiseConv2DOptions", padding=SAME, strideH=1, strideW=1,
                              depthMultiplier=1))
    pw = b.op("CONV_2D", [dw, b.const("w3", weights(c, 1, 1, c)), b.const("b3", weights(c))],
              (1, 8, 8, c), options=options("Conv2DOptions", padding=SAME, strideH=1,
                                              strideW=1))
    added = b.op("ADD", [pw, conv], (1, 8, 8, c), options=options("AddOptions"))
    act = b.op("PRELU", [added, b.const("alpha", np.full((1, 1, c), 0.1, np.float32))],
               (1, 8, 8, c))
    pooled = b.op("MAX_POOL_2D", [act], (1, 4, 4, c), options=options(
        "Pool2DOptions", padding=SAME, strideH=2, strideW=2, filterHeight=2, filterWidth=2))
    up = b.op("RESIZE_BILINEAR", [pooled, b.const("size", np.array([8, 8], np.int32))],
              (1, 8, 8, c), options=options("ResizeBilinearOptions"))
    cat = b.op("CONCATENATION", [up, act], (1, 8, 8, 2 * c),
               options=options("ConcatenationOptions", axis=3))
    padded = b.op("PAD", [act, b.const("pads", np.array([[0, 0], [0, 0], [0, 0], [0, c]],
                                                         np.int32))], (1, 8, 8, 2 * c))
    both = b.op("ADD", [cat, padded], (1, 8, 8, 2 * c), options=options("AddOptions"))
    flat = b.op("RESHAPE", [both, b.const("shape", np.array([1, 128 * c], np.int32))],
                (1, 128 * c))
    out = b.op("FULLY_CONNECTED", [flat, b.const("w4", weights(10, 128 * c)),
                                   b.const("b4", weights(10))], (1, 10),
               options=options("FullyConnectedOptions"))
    # a one-channel head, as the landmark models end (too small a filter to quantize)
    head = b.op("CONV_2D", [both, b.const("w5", weights(1, 1, 1, 2 * c)),
                            b.const("b5", weights(1))], (1, 8, 8, 1),
                options=options("Conv2DOptions", padding=SAME, strideH=1, strideW=1))
    # a wide map with few channels (a heatmap branch): the row-vectorized float depthwise
    # and one-channel conv kernels, which only maps of 64 or more columns take
    wide = b.input("heatmap", (1, 64, 64, 8))
    spread = b.op("DEPTHWISE_CONV_2D", [wide, b.const("w6", weights(1, 3, 3, 8)),
                                        b.const("b6", weights(8))], (1, 64, 64, 8),
                  options=options("DepthwiseConv2DOptions", padding=SAME, strideH=1,
                                  strideW=1, depthMultiplier=1))
    gate = b.op("LOGISTIC", [spread], (1, 64, 64, 8))
    heat = b.op("CONV_2D", [gate, b.const("w7", weights(1, 1, 1, 8)), b.const("b7", weights(1))],
                (1, 64, 64, 1), options=options("Conv2DOptions", padding=SAME, strideH=1,
                                                  strideW=1))
    # a global average over 64 positions (the landmark models' heads): the ordered float sum
    mean = b.op("MEAN", [both, b.const("axes", np.array([1, 2], np.int32))], (1, 2 * c),
                options=options("ReducerOptions", keepDims=False))
    return b.build([out, head, heat, mean])


def builtin_variants():
    """(name, model) of the built-in network: float, float16 weights (as MediaPipe publishes
    them: Numba compiles a kernel apart for the writable weights a DEQUANTIZE makes and a
    file's read-only constants) and qengine's three quantizations."""
    from .quantizer import quantize

    model = builtin_model()
    rng = np.random.default_rng(1)
    calibration = [[rng.random(t.shape, dtype=np.float32) for t in model.main.inputs]
                   for _ in range(4)]
    return [("float", model),
            ("float16", quantize(model, "float16", quiet=True)),
            ("int8", quantize(model, "int8", calibration, quiet=True)),
            ("dynamic", quantize(model, "dynamic", quiet=True)),
            ("16x8", quantize(model, "int16x8", calibration, quiet=True))]


@contextlib.contextmanager
def _every_layer_split():
    """Split work between threads however small (the built-in network's layers are below the
    bars of kernels/threads.py) and whatever other processes run, so runs with threads > 1
    compile the kernels' split drivers."""
    from qengine.kernels import threads

    saved = threads.MIN_SPLIT_FLOPS, threads.MIN_PARALLEL_FLOPS, threads._OtherProcesses.enabled
    threads.MIN_SPLIT_FLOPS = threads.MIN_PARALLEL_FLOPS = 0
    threads._OtherProcesses.enabled = False  # split even on a busy machine (an image build)
    try:
        yield
    finally:
        threads.MIN_SPLIT_FLOPS, threads.MIN_PARALLEL_FLOPS, threads._OtherProcesses.enabled \
            = saved


def cmd_warmup(args) -> int:
    from .flatbuffer_io import load

    start = time.perf_counter()
    models = [(path, load(path)) for path in args.models] or builtin_variants()
    with _every_layer_split(), tempfile.TemporaryDirectory(prefix="qengine-warmup-") as scratch:
        for name, model in models:
            path = Path(name) if args.models else Path(scratch) / f"{name}.tflite"
            if not args.models:
                model.save(path)  # the compile helpers load the model from a file
            for threads in args.threads:
                for arithmetic in ("ref", "xnnpack") if args.xnnpack else ("ref",):
                    _compile_one(model, path, threads, arithmetic)
            print(f"{name}: ready ({time.perf_counter() - start:.1f} s so far)")
    from qengine.kernels.jit import cache_dir

    print(f"kernels cached in {cache_dir()}")
    return 0


def _compile_one(model, path: Path, threads: int, arithmetic: str) -> None:
    """Prepare and run `model` once, its kernels compiled on every core (runtime/precompile)."""
    from .cli_common import generated_inputs
    from .runtime.precompile import prepare_on_all_cores

    interpreter = prepare_on_all_cores(model, path, num_threads=threads, arithmetic=arithmetic)
    interpreter.run(generated_inputs(interpreter.inputs, 0, quiet=True))


def add_warmup(commands) -> None:
    p = commands.add_parser("warmup", help="compile the kernels into the disk cache ahead")
    p.add_argument("models", nargs="*", help="models to prepare and run once (default: a "
                   "built-in network in float, int8, dynamic and 16x8)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="thread counts to compile for (default: 1 2)")
    p.add_argument("--xnnpack", action="store_true",
                   help="also compile the --arithmetic xnnpack kernels")
    p.set_defaults(handler=cmd_warmup)
