"""How far TFLite's default interpreter (XNNPACK, float requantization, ties to even) is from
the reference kernels qengine reproduces, on qengine's int8 models of the corpus:
fraction of output elements that differ and the largest difference, in quantization steps.

    python benchmarks/xnnpack_agreement.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import corpus  # noqa: E402
import numpy as np  # noqa: E402

import qengine  # noqa: E402
from tflite_ref import quantize_inputs, run_tflite  # noqa: E402

print("| model | qengine == TFLite REF | elements differing from TFLite default | max diff (steps) |")
print("|---|---|---|---|")
for name in ("digits", "mlp", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
             "transformer"):
    model = qengine.quantize(corpus.path(name, "float"), "int8",
                             corpus.sample_inputs(name, 16, seed=0), quiet=True).to_bytes()
    x = quantize_inputs(model, corpus.sample_inputs(name, 8, seed=4))
    ours = qengine.Interpreter(model).run(x)
    ref, auto = run_tflite(model, x, "ref"), run_tflite(model, x, "auto")
    exact = all(np.array_equal(ours[k], ref[k]) for k in ref)
    diff = np.concatenate([(ours[k].astype(int) - auto[k].astype(int)).ravel() for k in ref])
    print(f"| {name} | {'yes' if exact else 'NO'} | {np.mean(diff != 0):.2%} | "
          f"{np.abs(diff).max()} |")
