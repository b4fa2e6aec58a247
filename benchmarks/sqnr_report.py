"""Output SQNR (dB) of int8 models against their float model, on held-out inputs:
qengine's int8 pass, TensorFlow's converter and ai-edge-quantizer, same calibration samples.

    python benchmarks/sqnr_report.py [--calibration 50] [--held-out 8] [--held-out-seed 5]

Models are tests/corpus.py's (Keras models converted by TensorFlow; random weights except the
digit classifier, so only the relative numbers matter). The TFLite reference interpreter runs
every int8 model; outputs are dequantized before comparing. SQNR = 10 log10(sum f^2 / sum
(q - f)^2) over all held-out outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import corpus
from calibration import float_outputs, sqnr_db, with_ai_edge_quantizer, with_converter

import qengine

MODELS = ("digits", "mlp", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
          "transformer")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calibration", type=int, default=50)
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--held-out-seed", type=int, default=5)
    args = parser.parse_args(argv)
    print("| model | qengine int8 | TF converter int8 | ai-edge-quantizer int8 |")
    print("|---|---|---|---|")
    for name in MODELS:
        float_path = corpus.path(name, "float")
        data = corpus.sample_inputs(name, args.calibration, seed=0)
        held_out = corpus.sample_inputs(name, args.held_out, seed=args.held_out_seed)
        reference = float_outputs(float_path.read_bytes(), held_out)
        cells = []
        makers = (lambda: qengine.quantize(float_path, "int8", data, quiet=True).to_bytes(),
                  lambda: with_converter(name, data),
                  lambda: with_ai_edge_quantizer(float_path, data))
        for make in makers:
            try:
                cells.append(f"{sqnr_db(reference, float_outputs(bytes(make()), held_out)):.1f}")
            except Exception as e:  # a tool that cannot quantize this model
                cells.append(f"n/a ({type(e).__name__})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
