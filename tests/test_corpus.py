"""Every corpus model, in every conversion mode, loads and runs in TFLite."""

from __future__ import annotations

import corpus as corpus_module
import numpy as np
import pytest
from tflite_ref import MODES, dequantize_outputs, make_interpreter, quantize_inputs, run_tflite

# Building these takes 10-40 s per mode on first use (cached afterwards).
_SLOW_MODELS = {"mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "mobilenet_v2_224"}
# Held-out inputs: any seed but the calibration seed.
_SEED = 1
_BATCH = 2  # > 1, so input resizing is exercised too


def _cases():
    for name in corpus_module.names(include_on_demand=True):
        marks = [pytest.mark.tf] + ([pytest.mark.slow] if name in _SLOW_MODELS else [])
        for mode in MODES:
            yield pytest.param(name, mode, marks=marks, id=f"{name}-{mode}")


def _input_dtypes(model_path) -> list[np.dtype]:
    return [np.dtype(d["dtype"]) for d in make_interpreter(model_path).get_input_details()]


def _output_dtypes(model_path) -> list[np.dtype]:
    return [np.dtype(d["dtype"]) for d in make_interpreter(model_path).get_output_details()]


@pytest.mark.parametrize(("name", "mode"), list(_cases()))
def test_model_runs_on_reference_kernels(corpus, name, mode):
    if corpus.is_on_demand(name) and not corpus.is_cached(name, mode):
        pytest.skip(f"{name} is built on demand (benchmarks); not built yet")
    model_path = corpus.path(name, mode)
    inputs = quantize_inputs(model_path, corpus.sample_inputs(name, _BATCH, seed=_SEED))

    outputs = run_tflite(model_path, inputs, resolver="ref")

    (output,) = dequantize_outputs(model_path, outputs).values()
    assert output.shape == (_BATCH, corpus.num_classes(name))
    assert np.all(np.isfinite(output))
    expected_io = np.int8 if mode == "int8" else np.float32
    assert _input_dtypes(model_path) == [np.dtype(expected_io)]
    assert _output_dtypes(model_path) == [np.dtype(expected_io)]


@pytest.mark.tf
@pytest.mark.parametrize("mode", MODES)
def test_digits_classifies_held_out_images(corpus, mode):
    """The one trained model keeps its accuracy through every conversion mode."""
    data = np.load(corpus.EXAMPLES / "digits_data.npz")
    model_path = corpus.path("digits", mode)
    inputs = quantize_inputs(model_path, data["test_images"])

    (logits,) = dequantize_outputs(model_path, run_tflite(model_path, inputs)).values()

    assert np.mean(logits.argmax(axis=1) == data["test_labels"]) > 0.93


@pytest.mark.parametrize("name", corpus_module.names())
def test_sample_inputs_are_deterministic_and_seeded(corpus, name):
    first = corpus.sample_inputs(name, 3, seed=5)
    assert first.dtype == np.float32 and len(first) == 3
    assert np.all(np.isfinite(first))
    np.testing.assert_array_equal(first, corpus.sample_inputs(name, 3, seed=5))
    assert not np.array_equal(first, corpus.sample_inputs(name, 3, seed=6))
