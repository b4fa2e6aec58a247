"""`qengine run MODEL --input seq.npz --stream`: a stateful model fed one chunk per call.

Each input's array is cut along axis 0 into the chunks the model takes: an array of shape
(N, *input shape) gives N calls of one slice each; an array of the input's rank whose axis 0
is N times the input's gives N calls of consecutive blocks. The interpreter keeps its
resource variables between calls, so the chunks must come in order.
"""

from __future__ import annotations

import time

import numpy as np

from .cli_common import (
    EXIT_USER_ERROR,
    outputs_agree,
    read_inputs,
    summary,
    tflite_interpreter,
    tflite_invoke,
    write_npz,
)
from .errors import InputError


def run_stream(args, interpreter, model, prepare_time: float) -> int:
    if not args.input:
        raise InputError("--stream needs --input: the sequence to feed chunk by chunk")
    calls = stream_chunks(read_inputs(args.input, interpreter.inputs, model),
                          interpreter.inputs, model)
    per_call, times = [], []
    for inputs in calls:
        start = time.perf_counter()
        per_call.append(interpreter.run(inputs))
        times.append(time.perf_counter() - start)
    stacked = {name: np.stack([outputs[name] for outputs in per_call]) for name in per_call[0]}
    for name, value in stacked.items():
        print(f"{name}: {summary(value)} ({len(calls)} calls on axis 0)")
    print(f"latency: prepare {prepare_time * 1e3:.1f} ms, first call {times[0] * 1e3:.2f} ms, "
          f"median call {np.median(times) * 1e3:.2f} ms over {len(calls)} calls")
    if args.output:
        write_npz(args.output, stacked)
        print(f"wrote {args.output}")
    if args.compare:
        return compare_stream(args.model, calls, stacked, args.arithmetic)
    return 0


def stream_chunks(arrays, tensors, model) -> list[list[np.ndarray]]:
    """Per call, one array per model input (in input order)."""
    ordered = _in_input_order(arrays, tensors, model)
    pieces = [_chunks(t, np.asarray(a)) for t, a in zip(tensors, ordered)]
    counts = {len(p) for p in pieces}
    if len(counts) != 1:
        raise InputError("--stream: the inputs give different numbers of chunks ("
                         + ", ".join(f"{t.name!r}: {len(p)}" for t, p in zip(tensors, pieces))
                         + ")")
    return [list(call) for call in zip(*pieces)]


def _in_input_order(arrays, tensors, model) -> list[np.ndarray]:
    if isinstance(arrays, list):
        return arrays
    aliases = {name: t for sig in model.signatures for name, t in sig.inputs.items()}
    by_tensor = {id(aliases[k]) if k in aliases else k: v for k, v in arrays.items()}
    ordered = []
    for t in tensors:
        value = by_tensor.get(id(t), by_tensor.get(t.name))
        if value is None:
            raise InputError(f"--stream: no array for input {t.name!r}")
        ordered.append(value)
    return ordered


def _chunks(tensor, array: np.ndarray) -> list[np.ndarray]:
    shape = tuple(tensor.shape)
    if array.ndim == len(shape) + 1 and len(array):
        return list(array)
    block = shape[0] if shape else 0
    if array.ndim == len(shape) and block > 0 and len(array) % block == 0 and len(array):
        return [array[i:i + block] for i in range(0, len(array), block)]
    raise InputError(f"--stream: input {tensor.name!r} takes chunks of shape {shape}; give an "
                     f"array of shape (N, {', '.join(map(str, shape))}) or one with axis 0 a "
                     f"multiple of {block}, not {tuple(array.shape)}")


def compare_stream(model_path: str, calls, stacked: dict[str, np.ndarray],
                   arithmetic: str) -> int:
    """One TFLite interpreter fed the same chunks in order; exit 1 if any call differs."""
    tfl = tflite_interpreter(model_path, arithmetic)
    if tfl is None:
        return EXIT_USER_ERROR
    per_call = [tflite_invoke(tfl, inputs) for inputs in calls]
    failed = False
    print(f"{'output':<40}{'max |diff|':>12}{'calls differ':>14}  result")
    for name in per_call[0]:
        want = np.stack([outputs[name] for outputs in per_call])
        agree = [outputs_agree(stacked[name][i], want[i])[0] for i in range(len(calls))]
        ok, max_abs, _ = outputs_agree(stacked[name], want)
        ok = ok and all(agree)
        failed |= not ok
        print(f"{name[:39]:<40}{max_abs:>12.3g}{agree.count(False):>14}  "
              f"{'PASS' if ok else 'FAIL'}")
    print(f"{len(calls)} calls; tolerance: integers exact; floats 1e-4 of the output's range")
    return 1 if failed else 0
