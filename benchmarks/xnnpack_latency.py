"""MobileNetV2-224 int8 latency of `arithmetic="xnnpack"` beside `arithmetic="ref"` and TFLite's
default interpreter (XNNPACK delegate), on the same file and input, in this one process.

    python benchmarks/xnnpack_latency.py [--threads 1] [--repeat 10]

The model is the corpus float MobileNetV2-224 quantized by qengine (int8, 8 calibration inputs,
seed 0). Each figure is the median of `repeat` runs after one warm-up run (qengine.bench).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import corpus
import numpy as np

import qengine
from qengine.bench import bench_tflite, median_seconds
from qengine.runtime import Interpreter


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    name = "mobilenet_v2_224"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilenet_v2_224_int8.tflite"
        model = qengine.quantize(str(corpus.path(name, "float")), "int8",
                                 corpus.sample_inputs(name, 8, seed=0), quiet=True)
        path.write_bytes(model.to_bytes())
        interpreters = {a: Interpreter(str(path), num_threads=args.threads, arithmetic=a)
                        for a in ("ref", "xnnpack")}
        spec = interpreters["ref"].inputs[0]
        x = np.random.default_rng(0).integers(-128, 128, spec.shape).astype(np.int8)
        ms = {a: 1e3 * median_seconds(lambda i=i: i.run([x]), args.repeat)
              for a, i in interpreters.items()}
        ms["tflite_default"] = 1e3 * bench_tflite(str(path), [x], args.threads, args.repeat,
                                                  "AUTO")
    print(f"{name} int8, {args.threads} thread(s), median of {args.repeat}: "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())
          + f"; xnnpack / TFLite default {ms['xnnpack'] / ms['tflite_default']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
