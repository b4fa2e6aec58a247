"""How close each published float model comes to TFLite's default interpreter (XNNPACK) under
qengine's two arithmetics: bit for bit, or the largest difference of any output value.

    python benchmarks/xnnpack_exactness.py [--models NAME ...]

Same file and input (`qengine run`'s generated one) for both engines. `arithmetic="ref"` is
TFLite's reference kernels' arithmetic, so it differs from XNNPACK's by float rounding;
`arithmetic="xnnpack"` reproduces XNNPACK's float CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED and RESIZE_BILINEAR; the ops it does not (MEAN, LOGISTIC, SQRT, LOG, SIN) are
listed per model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import qengine
from qengine.cli_common import generated_inputs, set_tflite_inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published import SUITE

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "published"
NOT_REPRODUCED = {"MEAN", "LOGISTIC", "SQRT", "LOG", "SIN"}


def largest_difference(path: Path, arithmetic: str) -> float:
    """max |qengine - TFLite default| over every output value (0.0: bit for bit)."""
    from ai_edge_litert.interpreter import Interpreter

    ours = qengine.Interpreter(str(path), arithmetic=arithmetic)
    inputs = generated_inputs(ours.inputs, 0, quiet=True)
    arrays = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
    got = ours.run(arrays)
    tflite = Interpreter(model_path=str(path))
    set_tflite_inputs(tflite, arrays, allocate=True)
    tflite.invoke()
    worst = 0.0
    for detail in tflite.get_output_details():
        want = tflite.get_tensor(detail["index"])
        value = got[detail["name"]]
        if not np.array_equal(value, want, equal_nan=True):
            worst = max(worst, float(np.nanmax(np.abs(value.astype(np.float64) - want))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=SUITE)
    args = parser.parse_args()
    print("| model | ref: largest difference | xnnpack: largest difference | ops not reproduced |")
    print("|---|---|---|---|")
    exact = 0
    for name in args.models:
        path = CACHE / f"{name}.tflite"
        cells = []
        for arithmetic in ("ref", "xnnpack"):
            worst = largest_difference(path, arithmetic)
            cells.append("**bit for bit**" if worst == 0 else f"{worst:.2g}")
        exact += cells[1] == "**bit for bit**"
        own = sorted(NOT_REPRODUCED & {op.type for op in qengine.load(path).main.operators})
        print(f"| {name} | {cells[0]} | {cells[1]} | {', '.join(own) or '—'} |")
    print(f"\n{exact} of {len(args.models)} models bit for bit under arithmetic=\"xnnpack\"")


if __name__ == "__main__":
    main()
