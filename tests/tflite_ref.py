"""Reference helpers for tests that cross-check qengine against TensorFlow Lite.

TensorFlow and ai_edge_litert are imported inside the functions so that merely
importing this module (e.g. during collection on a machine without TF) is free.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

# Must be set before TensorFlow is first imported to silence its C++ logging.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ModelSource = bytes | bytearray | str | os.PathLike
Inputs = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]

MODES = ("float", "dynamic", "float16", "int8")
# The converter's 16x8 scheme (int16 activations, int8 weights): convert_* accept it, but it is
# not one of the corpus MODES (corpus.py builds and caches every model in every mode).
CONVERTER_MODES = MODES + ("int16x8",)


# --------------------------------------------------------------------------- running


def _resolver_type(resolver: str):
    from ai_edge_litert.interpreter import OpResolverType

    choices = {
        "ref": OpResolverType.BUILTIN_REF,  # reference kernels: the bit-exact target
        "nodelegate": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,  # optimized, no XNNPACK
        "auto": OpResolverType.AUTO,  # what users get by default (XNNPACK for float)
    }
    if resolver not in choices:
        raise ValueError(f"resolver must be one of {sorted(choices)}, got {resolver!r}")
    return choices[resolver]


def make_interpreter(model: ModelSource, resolver: str = "ref", preserve_all: bool = False,
                     num_threads: int = 1):
    """An unallocated Interpreter for a model given as bytes or a file path."""
    from ai_edge_litert.interpreter import Interpreter

    source = ({"model_content": bytes(model)} if isinstance(model, (bytes, bytearray))
              else {"model_path": os.fspath(model)})
    return Interpreter(
        **source,
        num_threads=num_threads,
        experimental_op_resolver_type=_resolver_type(resolver),
        experimental_preserve_all_tensors=preserve_all,
    )


def _inputs_by_index(interpreter, inputs: Inputs) -> dict[int, np.ndarray]:
    """Map the accepted input forms (array / list in input order / dict by name) to indices."""
    details = interpreter.get_input_details()
    if isinstance(inputs, Mapping):
        index_of = {d["name"]: d["index"] for d in details}
        unknown = set(inputs) - set(index_of)
        if unknown:
            raise KeyError(f"unknown input names {sorted(unknown)}; model has {sorted(index_of)}")
        return {index_of[name]: np.asarray(value) for name, value in inputs.items()}
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    if len(arrays) != len(details):
        raise ValueError(f"model has {len(details)} inputs, got {len(arrays)}")
    return {d["index"]: np.asarray(a) for d, a in zip(details, arrays)}


def _feed(interpreter, inputs: Inputs) -> None:
    """Resize inputs whose shape differs from the model's, allocate, and set the data."""
    by_index = _inputs_by_index(interpreter, inputs)
    dtype_of = {d["index"]: d["dtype"] for d in interpreter.get_input_details()}
    shape_of = {d["index"]: tuple(d["shape"]) for d in interpreter.get_input_details()}
    for index, value in by_index.items():
        if value.shape != shape_of[index]:
            interpreter.resize_tensor_input(index, list(value.shape), strict=False)
    interpreter.allocate_tensors()
    for index, value in by_index.items():
        if value.dtype != dtype_of[index]:
            raise TypeError(f"input {index} expects {np.dtype(dtype_of[index])}, got {value.dtype}"
                            " (use quantize_inputs for integer models)")
        interpreter.set_tensor(index, value)


def _invoke(model: ModelSource, inputs: Inputs, resolver: str, preserve_all: bool,
            num_threads: int):
    interpreter = make_interpreter(model, resolver, preserve_all, num_threads)
    _feed(interpreter, inputs)
    interpreter.invoke()
    return interpreter


def run_tflite(model: ModelSource, inputs: Inputs, resolver: str = "ref",
               preserve_all: bool = False, num_threads: int = 1) -> dict[str, np.ndarray]:
    """Run a model once; outputs keyed by output tensor name.

    resolver: "ref" (reference kernels), "nodelegate" (optimized kernels without
    XNNPACK) or "auto" (default delegates).
    """
    interpreter = _invoke(model, inputs, resolver, preserve_all, num_threads)
    return {d["name"]: interpreter.get_tensor(d["index"])
            for d in interpreter.get_output_details()}


def run_tflite_all_tensors(model: ModelSource, inputs: Inputs, resolver: str = "ref",
                           num_threads: int = 1) -> dict[str, np.ndarray]:
    """Run a model keeping intermediates; every readable tensor keyed by name.

    Tensors without data (e.g. optional/omitted ones) are skipped. A name that
    occurs twice keeps the first tensor; later ones are keyed "name#index".
    """
    interpreter = _invoke(model, inputs, resolver, True, num_threads)
    tensors: dict[str, np.ndarray] = {}
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:  # "Tensor data is null": nothing to compare
            continue
        key = detail["name"] if detail["name"] not in tensors else (
            f"{detail['name']}#{detail['index']}")
        tensors[key] = value
    return tensors


# ------------------------------------------------------------------------- (de)quantizing


def quantize_inputs(model: ModelSource, inputs: Inputs) -> list[np.ndarray]:
    """Float inputs converted to the model's input types with its input quantization.

    Inputs that the model takes as float pass through unchanged. Returns a list in
    model input order, ready for run_tflite.
    """
    interpreter = make_interpreter(model)
    details = interpreter.get_input_details()
    by_index = _inputs_by_index(interpreter, inputs)
    return [_quantize(by_index[d["index"]], d) for d in details]


def _quantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return value.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(value / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_outputs(model: ModelSource, outputs: Mapping[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
    """Integer outputs of run_tflite mapped back to float with the output quantization."""
    params = {d["name"]: d["quantization"] for d in make_interpreter(model).get_output_details()}
    result = {}
    for name, value in outputs.items():
        scale, zero_point = params[name]
        is_quantized = np.issubdtype(value.dtype, np.integer) and scale != 0
        result[name] = ((value.astype(np.float32) - zero_point) * scale if is_quantized
                        else value)
    return result


# ---------------------------------------------------------------------------- converting


def _as_input_list(representative: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """A single array means one model input; a list/tuple means one array per input."""
    if isinstance(representative, np.ndarray):
        return [representative]
    return [np.asarray(a) for a in representative]


def _representative_dataset(representative) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Samples along axis 0, yielded one at a time with a batch dimension of 1."""
    arrays = _as_input_list(representative)
    count = len(arrays[0])

    def generate() -> Iterator[list[np.ndarray]]:
        for i in range(count):
            yield [a[i:i + 1].astype(np.float32) for a in arrays]

    return generate


def _configure(converter, mode: str, representative=None, int8_io: bool = True):
    import tensorflow as tf

    if mode not in CONVERTER_MODES:
        raise ValueError(f"mode must be one of {CONVERTER_MODES}, got {mode!r}")
    if mode == "float":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        if representative is None:
            raise ValueError("int8 mode needs representative data")
        converter.representative_dataset = _representative_dataset(representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif mode == "int16x8":  # int16 activations, int8 weights; `int8_io` asks for int16 io
        if representative is None:
            raise ValueError("int16x8 mode needs representative data")
        converter.representative_dataset = _representative_dataset(representative)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int16
            converter.inference_output_type = tf.int16
    # "dynamic": DEFAULT without representative data = dynamic-range weight quantization.
    return converter


def _convert_quietly(converter) -> bytes:
    # Keras export prints a long signature listing to stdout on every conversion.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def convert_keras(model, mode: str = "float", representative=None, int8_io: bool = True) -> bytes:
    """Convert a Keras model with TFLiteConverter.from_keras_model in one of MODES."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return _convert_quietly(_configure(converter, mode, representative, int8_io))


def convert_tf_function(fn, input_signature: Sequence[Any], mode: str = "float",
                        representative=None, int8_io: bool = True) -> bytes:
    """Convert a (tf.)function, e.g. a single-op test model, with from_concrete_functions.

    `fn` may be a plain Python function or a tf.function; input_signature is a list
    of tf.TensorSpec. The function itself is passed as the trackable object so that
    variables it captures stay alive during conversion.
    """
    import tensorflow as tf

    if not isinstance(fn, tf.types.experimental.GenericFunction):
        fn = tf.function(fn, autograph=False)
    concrete = fn.get_concrete_function(*input_signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    return _convert_quietly(_configure(converter, mode, representative, int8_io))


def write_model(model_bytes: bytes, path: str | os.PathLike) -> pathlib.Path:
    """Atomically write a model (tmp file + os.replace), so concurrent readers never see halves."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(model_bytes)
    os.replace(tmp, path)
    return path
