"""How far TFLite's default interpreter (XNNPACK, float requantization, ties to even) is from
qengine's two arithmetics on qengine's int8 models of the corpus: the default (TFLite's
reference kernels) and `arithmetic="xnnpack"`. For each, the fraction of output elements that
differ from the default interpreter and the largest difference, in quantization steps.

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


def differences(ours: dict, theirs: dict) -> tuple[float, int]:
    diff = np.concatenate([(ours[k].astype(int) - theirs[k].astype(int)).ravel() for k in theirs])
    return float(np.mean(diff != 0)), int(np.abs(diff).max())


print("| model | ref == TFLite REF | ref vs TFLite default: differing, max | "
      "xnnpack vs TFLite default: differing, max |")
print("|---|---|---|---|")
for name in ("digits", "mlp", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
             "transformer"):
    model = qengine.quantize(corpus.path(name, "float"), "int8",
                             corpus.sample_inputs(name, 16, seed=0), quiet=True).to_bytes()
    x = quantize_inputs(model, corpus.sample_inputs(name, 8, seed=4))
    ours = qengine.Interpreter(model).run(x)
    xnn = qengine.Interpreter(model, arithmetic="xnnpack").run(x)
    ref, auto = run_tflite(model, x, "ref"), run_tflite(model, x, "auto")
    exact = all(np.array_equal(ours[k], ref[k]) for k in ref)
    (ref_frac, ref_max), (xnn_frac, xnn_max) = differences(ours, auto), differences(xnn, auto)
    print(f"| {name} | {'yes' if exact else 'NO'} | {ref_frac:.2%}, {ref_max} | "
          f"{xnn_frac:.2%}, {xnn_max} |")
