"""Whole models end to end: converter-made files in every mode, and qengine's own int8 files.

Tolerances (float outputs, relative to the output's range; integer outputs are exact):
- float and float16 models: 1e-5 (float32 summation order differs between implementations);
- dynamic-range models: 1e-5 as well. Hybrid kernels quantize activations on the fly, so a
  float difference upstream can flip one input's int8 rounding; see deviations.MODEL_TOLERANCES for models
  where that is known to happen;
- int8 models: bit-exact against TFLite's reference kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
from deviations import MODEL_TOLERANCES
from op_harness import assert_close, op_by_op
from tflite_ref import quantize_inputs, run_tflite

import qengine

pytestmark = [pytest.mark.tf, pytest.mark.slow]

MODES = ("float", "dynamic", "float16", "int8")
FLOAT_REL = 1e-5
# (model, mode) -> (tolerance, reason). Every entry says why the default does not hold.
# Dynamic-range models are checked op by op (test_dynamic_models_op_by_op), not end to end:
# hybrid ops quantize their float input on the fly, so a float32 rounding difference upstream
# (summation order) flips single int8 input values and random-weight networks amplify that
# (EfficientNet-B0's output moves by up to ~0.36 of its range). Fed TFLite's own inputs, every
# hybrid op is bit-exact.
END_TO_END_MODES = ("float", "float16", "int8")
HYBRID = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")


def corpus_cases(corpus):
    return [(name, mode) for name in corpus.names() for mode in END_TO_END_MODES]


def pytest_generate_tests(metafunc):
    if "corpus_case" in metafunc.fixturenames:
        import corpus

        metafunc.parametrize("corpus_case", corpus_cases(corpus),
                             ids=[f"{n}-{m}" for n, m in corpus_cases(corpus)])


def test_converter_models_match_tflite(corpus, corpus_case):
    name, mode = corpus_case
    data = corpus.path(name, mode).read_bytes()
    inputs = quantize_inputs(data, corpus.sample_inputs(name, 2, seed=1))
    want = run_tflite(data, inputs, resolver="ref")
    got = qengine.Interpreter(data).run(inputs)
    rel = MODEL_TOLERANCES.get((name, mode), (FLOAT_REL, ""))[0]
    for key in want:
        assert_close(f"{name}/{mode}/{key}", got[key], want[key], rel)


QENGINE_INT8 = ("digits", "mlp", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                "transformer")


@pytest.mark.parametrize("name", QENGINE_INT8)
def test_qengine_int8_models_load_in_tflite_and_match_exactly(corpus, name):
    float_model = corpus.path(name, "float")
    calibration = corpus.sample_inputs(name, 16, seed=0)
    model = qengine.quantize(float_model, "int8", calibration, quiet=True)
    data = model.to_bytes()
    held_out = quantize_inputs(data, corpus.sample_inputs(name, 3, seed=2))
    want = run_tflite(data, held_out, resolver="ref")
    got = qengine.Interpreter(data).run(held_out)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}/{key}")


# MobileNetV2 at alpha 0.35 keeps most filters under the converter's 1024-element threshold,
# so even TensorFlow's converter only reaches 2.9x (dynamic) and 1.88x (float16) on it; the
# targets apply to the other CNNs, and on it qengine must at least match the converter.
TARGET_RATIO = {"dynamic": 3.5, "float16": 1.9}


@pytest.mark.parametrize("mode", ["dynamic", "float16"])
@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_calibration_free_modes_on_cnns(corpus, name, mode):
    """Size ratios (>= 3.5x dynamic, >= 1.9x float16; >= the converter's) and TFLite agreement."""
    float_bytes = corpus.path(name, "float").read_bytes()
    model = qengine.quantize(float_bytes, mode, quiet=True)
    data = model.to_bytes()
    ratio = len(float_bytes) / len(data)
    converter_ratio = len(float_bytes) / corpus.path(name, mode).stat().st_size
    assert ratio >= converter_ratio * 0.995, (ratio, converter_ratio)
    if name != "mobilenet_v2":
        assert ratio >= TARGET_RATIO[mode], ratio
    inputs = corpus.sample_inputs(name, 2, seed=1)
    if mode == "dynamic":
        assert_op_by_op(name, data, inputs)
        return
    want = run_tflite(data, inputs, resolver="ref")
    got = qengine.Interpreter(data).run(inputs)
    for key in want:
        assert_close(f"{name}/{mode}/{key}", got[key], want[key], FLOAT_REL)


@pytest.mark.parametrize("name", ["digits", "mobilenet_v2", "mobilenet_v3_small",
                                  "efficientnet_b0", "transformer"])
def test_dynamic_models_op_by_op(corpus, name):
    """Every op fed TFLite's inputs: hybrid ops bit-exact, float ops within FLOAT_REL."""
    for data in (corpus.path(name, "dynamic").read_bytes(),
                 qengine.quantize(corpus.path(name, "float"), "dynamic", quiet=True).to_bytes()):
        assert_op_by_op(name, data, corpus.sample_inputs(name, 1, seed=1))


def assert_op_by_op(name, data, inputs):
    """Hybrid ops bit-exact and float ops within FLOAT_REL, each fed TFLite's own inputs."""
    for index, op, rel in op_by_op(data, quantize_inputs(data, inputs)):
        hybrid = op.type in HYBRID and any(t is not None and t.dtype == "int8"
                                           for t in op.inputs)
        limit = 0.0 if hybrid else FLOAT_REL
        assert rel <= limit, f"{name}: op {index} {op.opcode.display} differs by {rel:.3g}"
