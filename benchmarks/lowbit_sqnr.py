"""Output SQNR (dB) of low-bit models against their float model: ai-edge-quantizer's named
recipes vs qengine's presets of the same names (max|w| scales, MSE-optimal clipping, and MSE
clipping with GPTQ rounding on 32 calibration samples).

    python benchmarks/lowbit_sqnr.py [--held-out 64] [--held-out-seed 3]

Models are tests/corpus.py's (random weights except the digit classifier: only comparisons
within a row mean anything); the peer's files come from tests/peer_corpus.py (its static
recipe calibrated on the same 16 samples as qengine's int8). Every file runs in TFLite's
default interpreter (XNNPACK; the optimized kernels skip the fused activation of a blockwise
FULLY_CONNECTED, so they are not used). SQNR = 10 log10(sum f^2 / sum (q - f)^2) over all
held-out outputs, dequantized where the model's interface is integer.
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
import numpy as np
import peer_corpus
from calibration import sqnr_db

import qengine
from qengine.quantizer import preset

MODELS = ("mlp", "digits", "transformer")
RECIPES = ("static_wi8_ai8", "dynamic_wi8_afp32", "dynamic_wi4_afp32", "dynamic_wi4b32_afp32",
           "dynamic_wi2c_afp32", "weight_only_wi4_afp32")


def outputs(model_bytes: bytes, inputs: np.ndarray) -> np.ndarray:
    from tflite_ref import dequantize_outputs, quantize_inputs, run_tflite

    raw = run_tflite(model_bytes, quantize_inputs(model_bytes, inputs), resolver="auto")
    return next(iter(dequantize_outputs(model_bytes, raw).values()))


GPTQ_SAMPLES = 32


def qengine_file(model: str, recipe: str, clipping: str, gptq: bool = False) -> bytes:
    args = preset(recipe)
    calibration = None
    if gptq:
        if args["mode"] == "int8":
            raise ValueError("GPTQ is implemented for the dynamic and weight-only modes")
        calibration = corpus.sample_inputs(model, GPTQ_SAMPLES, corpus.CALIBRATION_SEED)
        args["weight_rounding"] = "gptq"
    if args["mode"] == "int8":
        calibration = corpus.sample_inputs(model, peer_corpus.CALIBRATION_COUNT,
                                           corpus.CALIBRATION_SEED)
        args["inference_type"] = "int8"  # the peer's static files have an int8 interface
        if clipping != "minmax":
            from qengine.quantizer.scheme import Recipe, Scheme

            del args["mode"]
            args["recipe"] = Recipe(Scheme(weight_clipping=clipping))
    else:
        args["weight_clipping"] = clipping
    return qengine.quantize(corpus.path(model, "float"), calibration=calibration, quiet=True,
                            **args).to_bytes()


def cell(make, reference, held_out) -> str:
    try:
        return f"{sqnr_db(reference, outputs(make(), held_out)):.1f}"
    except Exception as e:  # noqa: BLE001  (a tool that cannot write this combination)
        return f"refused ({type(e).__name__})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--held-out", type=int, default=64)
    parser.add_argument("--held-out-seed", type=int, default=3)
    args = parser.parse_args(argv)
    print("| model | recipe | ai-edge-quantizer | qengine | qengine, MSE clipping | "
          "qengine, MSE + GPTQ |")
    print("|---|---|---|---|---|---|")
    for model in MODELS:
        held_out = corpus.sample_inputs(model, args.held_out, seed=args.held_out_seed)
        reference = outputs(corpus.path(model, "float").read_bytes(), held_out)
        for recipe in RECIPES:
            cells = [cell(lambda m=model, r=recipe: peer_corpus.path(m, r).read_bytes(),
                          reference, held_out)]
            for clipping, gptq in (("minmax", False), ("mse", False), ("mse", True)):
                cells.append(cell(lambda m=model, r=recipe, c=clipping, g=gptq:
                                  qengine_file(m, r, c, g), reference, held_out))
            print(f"| {model} | {recipe} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
