"""The README's demo: quantize the bundled digit classifier in every mode and compare.

For each mode: file size, accuracy on 500 held-out scikit-learn digits, agreement of the
predicted class with the float model, and the largest difference in the logits. Everything runs
on qengine's own runtime; TensorFlow is not needed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import qengine

HERE = Path(__file__).parent


def logits(model, images: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Logits (float) for all images, with the first and the second run's time in ms."""
    start = time.perf_counter()
    out = _logits(qengine.Interpreter(model), images)
    first = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    _logits(qengine.Interpreter(model), images)
    return out, first, (time.perf_counter() - start) * 1e3


def _logits(interpreter, images: np.ndarray) -> np.ndarray:
    x = interpreter.inputs[0]
    if x.dtype == "int8":  # int8 interface: quantize the images with the input's parameters
        q = np.round(images / x.scale) + x.zero_point
        images = np.clip(q, -128, 127).astype(np.int8)
    out = interpreter.run(images)[interpreter.outputs[0].name]
    y = interpreter.outputs[0]
    if y.dtype == "int8":
        out = (out.astype(np.float32) - y.zero_point) * y.scale
    return out


def main() -> int:
    data = np.load(HERE / "digits_data.npz")
    images, labels = data["test_images"], data["test_labels"]
    float_model = qengine.load(HERE / "digits.tflite")
    models = {
        "float32": float_model,
        "int8": qengine.quantize(float_model, "int8", data["calibration"], quiet=True),
        "dynamic": qengine.quantize(float_model, "dynamic", quiet=True),
        "float16": qengine.quantize(float_model, "float16", quiet=True),
    }
    reference = None
    float_size = len(float_model.to_bytes())
    print(f"{'mode':<10}{'bytes':>10}{'smaller':>9}{'accuracy':>10}{'agrees':>9}"
          f"{'max |dlogit|':>14}{'first ms':>10}{'warm ms':>9}")
    for mode, model in models.items():
        out, first, warm = logits(model, images)
        if reference is None:
            reference = out
        size = len(model.to_bytes())
        accuracy = np.mean(out.argmax(1) == labels)
        agree = np.mean(out.argmax(1) == reference.argmax(1))
        print(f"{mode:<10}{size:>10,}{float_size / size:>8.2f}x{accuracy:>10.1%}{agree:>9.1%}"
              f"{np.abs(out - reference).max():>14.4f}{first:>10.1f}{warm:>9.1f}")
    print(f"\n{len(labels)} held-out images in one batch; 'agrees': same predicted class as "
          f"float32.\n'first ms' includes preparing the model and, on a cold cache, compiling "
          f"its kernels; 'warm ms' is a second interpreter on the same model.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
