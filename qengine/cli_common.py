"""Helpers the CLI commands share (argument types, reading and generating inputs).

Every `cli*` module and `bench` imports these from here, never from each other, so the
command modules form no import cycle.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import InputError

EXIT_USER_ERROR = 2  # errors in the model, the data or the options


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def generated_inputs(tensors, seed: int, quiet: bool = False) -> list[np.ndarray]:
    """Deterministic inputs: floats ~ U[0, 1), integers over a small non-negative range."""
    rng = np.random.default_rng(seed)
    arrays = []
    for t in tensors:
        from .ir import numpy_dtype

        dtype = numpy_dtype(t.dtype)
        if dtype.kind == "f":
            array = rng.random(t.shape, dtype=np.float32).astype(dtype)
        elif dtype.kind == "b":
            array = rng.random(t.shape) < 0.5
        elif dtype in (np.int8, np.uint8, np.int16):
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, t.shape, endpoint=True, dtype=dtype)
        else:
            array = rng.integers(0, 10, t.shape).astype(dtype)
        if not quiet:
            dynamic = t.shape_signature is not None and -1 in t.shape_signature
            note = (f"; its dimensions {list(t.shape_signature)} are dynamic (-1), so the "
                    f"model may need another size" if dynamic else "")
            print(f"input {t.name!r}: generated {dtype} {tuple(t.shape)} (seed {seed}){note}; "
                  f"pass --input to use your own", file=sys.stderr)
        arrays.append(array)
    return arrays


def read_inputs(path: str, tensors, model) -> dict | list:
    path = Path(path)
    if path.suffix == ".npy":
        if len(tensors) != 1:
            raise InputError(f"{path} holds one array but the model has {len(tensors)} inputs "
                             f"({', '.join(t.name for t in tensors)}); use an .npz keyed by "
                             f"input name")
        return [_load_array(path)]
    if path.suffix != ".npz":
        raise InputError(f"{path}: expected a .npy or .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None
    names = [t.name for t in tensors]
    aliases = {name for sig in model.signatures for name in sig.inputs}
    for key in arrays:
        if key not in names and key not in aliases:
            raise InputError(f"{path}: key {key!r} is not an input; inputs are "
                             f"{', '.join(repr(n) for n in names)}")
    return arrays


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable .npy file ({e})") from None


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
    tfl = tflite_interpreter(model_path, arithmetic)
    if tfl is None:
        return EXIT_USER_ERROR
    want = tflite_invoke(tfl, inputs)
    failed = False
    print(f"{'output':<40}{'max |diff|':>12}{'max rel':>12}  result")
    for name, expected in want.items():
        ok, max_abs, max_rel = outputs_agree(outputs[name], expected)
        failed |= not ok
        print(f"{name[:39]:<40}{max_abs:>12.3g}{max_rel:>12.3g}  {'PASS' if ok else 'FAIL'}")
    print("tolerance: integers exact; floats 1e-4 of the output's range")
    return 1 if failed else 0


def tflite_interpreter(model_path: str, arithmetic: str = "ref"):
    """TFLite's interpreter on one thread: reference kernels, or the default (XNNPACK) one;
    None (with a message) when ai-edge-litert is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        print("--compare needs ai-edge-litert: pip install 'qengine[tf]'", file=sys.stderr)
        return None
    resolver = OpResolverType.AUTO if arithmetic == "xnnpack" else OpResolverType.BUILTIN_REF
    tfl = Interpreter(model_path=str(model_path), num_threads=1,
                      experimental_op_resolver_type=resolver)
    tfl.allocate_tensors()
    return tfl


def set_tflite_inputs(tfl, arrays, allocate: bool = False) -> None:
    """Set a TFLite interpreter's inputs (a list, in input order). Inputs whose shape differs
    from the interpreter's are resized first (a dynamic batch, or a file shape too small for
    the model), then tensors are allocated: after a resize, or always with `allocate` (a
    fresh interpreter; allocating it before the resize could fail at the file's shapes)."""
    details = tfl.get_input_details()
    resized = False
    for d, array in zip(details, arrays):
        if tuple(d["shape"]) != array.shape:
            tfl.resize_tensor_input(d["index"], array.shape)
            resized = True
    if resized or allocate:
        tfl.allocate_tensors()
    for d, array in zip(details, arrays):
        tfl.set_tensor(d["index"], array)


def tflite_invoke(tfl, inputs) -> dict[str, np.ndarray]:
    """One invoke of an (already used or fresh) TFLite interpreter; outputs by name."""
    details = tfl.get_input_details()
    arrays = inputs if isinstance(inputs, list) else [inputs[d["name"]] for d in details]
    set_tflite_inputs(tfl, arrays)
    tfl.invoke()
    return {d["name"]: tfl.get_tensor(d["index"]) for d in tfl.get_output_details()}


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
