"""Calibrate + quantize to int8: qengine vs TensorFlow's converter vs ai-edge-quantizer, on the
same float MobileNetV2 (224x224) and the same 100 calibration samples, and the output SQNR of
each int8 model against the float model on 8 held-out inputs.

    python benchmarks/calibration.py [--model mobilenet_v2_224] [--samples 100]

Each timing is one call in a process where the tool's libraries are already imported (qengine
is timed twice: the first call includes loading its cached Numba kernels). Beside the wall clock,
the process's CPU time (all threads): on a shared machine the wall clock also measures the
neighbours, and CPU time shows the work (and any idle spinning) a tool itself did.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import corpus
import numpy as np

import qengine


def timed(fn):
    """(result, wall s, CPU s of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    noise = np.sum((reference - approx) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference ** 2) / noise))


def float_outputs(model_bytes, inputs) -> np.ndarray:
    from tflite_ref import dequantize_outputs, quantize_inputs, run_tflite

    outs = []
    for x in inputs:
        raw = run_tflite(model_bytes, quantize_inputs(model_bytes, x[None]))
        outs.append(next(iter(dequantize_outputs(model_bytes, raw).values())))
    return np.concatenate(outs)


def with_qengine(float_path, data):
    return qengine.quantize(float_path, "int8", data, quiet=True).to_bytes()


def with_converter(name, data):
    from tflite_ref import convert_keras

    return convert_keras(corpus.keras_model(name), "int8", representative=data)


def with_ai_edge_quantizer(float_path, data):
    from ai_edge_quantizer import quantizer, recipe

    model = qengine.load(float_path)
    signature = model.signatures[0]
    (input_name,) = signature.inputs
    q = quantizer.Quantizer(str(float_path), recipe.static_wi8_ai8())
    samples = {signature.key: [{input_name: x[None]} for x in data]}
    result = q.calibrate(samples)
    return q.quantize(result, enable_progress_bar=False, enable_progress_report=False) \
        .quantized_model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilenet_v2_224")
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args(argv)
    float_path = corpus.path(args.model, "float")
    data = corpus.sample_inputs(args.model, args.samples, seed=0)
    held_out = corpus.sample_inputs(args.model, 8, seed=3)
    reference = float_outputs(float_path.read_bytes(), held_out)
    rows = [("qengine (first call)",) + timed(lambda: with_qengine(float_path, data))[::-1],
            ("qengine",) + timed(lambda: with_qengine(float_path, data))[::-1]]
    rows.append(("TensorFlow converter",) + timed(lambda: with_converter(args.model, data))[::-1])
    try:
        rows.append(("ai-edge-quantizer",)
                    + timed(lambda: with_ai_edge_quantizer(float_path, data))[::-1])
    except ImportError:
        print("ai-edge-quantizer not installed: pip install ai-edge-quantizer")
    print(f"{args.model}, {args.samples} calibration samples, output SQNR on 8 held-out inputs\n")
    print("| tool | calibrate + quantize s | CPU s | output SQNR vs float (dB) |")
    print("|---|---|---|---|")
    for tool, cpu, seconds, model_bytes in rows:
        quality = sqnr_db(reference, float_outputs(bytes(model_bytes), held_out))
        print(f"| {tool} | {seconds:.2f} | {cpu:.2f} | {quality:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
