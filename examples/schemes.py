"""Weight schemes side by side on the bundled digit model: accuracy and output SQNR against the
float model, and whether TFLite can run the result.

    python examples/schemes.py

Schemes the int8 kernels express (fewer bits, full range, power-of-two scales) run on integer
arithmetic; asymmetric and blockwise weights are fake-quantized (float op on dequantized
weights between int8 activations). Only schemes inside TFLite's int8 spec can be written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import qengine
from qengine.quantizer.scheme import Recipe, Scheme

HERE = Path(__file__).parent
DATA = np.load(HERE / "digits_data.npz")
IMAGES, LABELS = DATA["test_images"], DATA["test_labels"]

SCHEMES = {
    "int8 per-channel (TFLite)": Scheme(),
    "int8 per-tensor": Scheme(granularity="per_tensor"),
    "int8 power-of-two scales": Scheme(power_of_two=True),
    "int8 full range": Scheme(narrow_range=False),
    "int4 per-channel": Scheme(weight_bits=4),
    "int4 asymmetric": Scheme(weight_bits=4, symmetric=False),
    "int4 blockwise(32)": Scheme(weight_bits=4, granularity="blockwise", block_size=32),
    "int2 per-channel": Scheme(weight_bits=2),
    "int2 blockwise(16)": Scheme(weight_bits=2, granularity="blockwise", block_size=16),
}


def outputs(model) -> np.ndarray:
    interpreter = qengine.Interpreter(model)
    x, y = interpreter.inputs[0], interpreter.outputs[0]
    images = IMAGES
    if x.dtype == "int8":
        images = np.clip(np.round(IMAGES / x.scale) + x.zero_point, -128, 127).astype(np.int8)
    out = interpreter.run(images)[y.name]
    return (out.astype(np.float32) - y.zero_point) * y.scale if y.dtype == "int8" else out


def main() -> None:
    reference = outputs(HERE / "digits.tflite")
    print(f"{'scheme':30} {'accuracy':>8} {'SQNR dB':>8}  exports")
    print(f"{'float':30} {np.mean(reference.argmax(1) == LABELS):8.3f} {'inf':>8}  (float)")
    for name, scheme in SCHEMES.items():
        model = qengine.quantize(HERE / "digits.tflite", calibration=DATA["calibration"],
                                 recipe=Recipe(scheme), quiet=True)
        got = outputs(model)
        noise = np.sum((got - reference) ** 2)
        sqnr = 10 * np.log10(np.sum(reference ** 2) / noise) if noise else float("inf")
        exports = "yes" if not model.simulated else "no"
        print(f"{name:30} {np.mean(got.argmax(1) == LABELS):8.3f} {sqnr:8.2f}  {exports}")


if __name__ == "__main__":
    main()
