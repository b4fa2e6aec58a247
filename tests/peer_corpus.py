"""Files made by the peer, Google's ai-edge-quantizer, from the converter-made corpus models.

    RECIPES                     the peer's named recipes this helper builds (see below)
    path(model, recipe)         -> pathlib.Path of the quantized .tflite (built if missing)
    available()                 -> True when ai-edge-quantizer is installed

Files are cached under ``<repo>/.cache/peer/<ai-edge-quantizer version>/`` with the same
atomic-write and lock discipline as `corpus.py`. ai-edge-quantizer 0.10.0 has these named recipes
(`ai_edge_quantizer.recipe`): dynamic_wi8_afp32, dynamic_wi4_afp32, dynamic_wi{8,4,2}c_afp32,
dynamic_wi{8,4,2}b{32,64}_afp32, dynamic_wi{8,4,2}c_hr_afp32 (Hadamard rotation),
weight_only_wi8_afp32, weight_only_wi4_afp32, static_wi8_ai8, static_wi8_ai16,
dynamic_legacy_wi8_afp32 and the LiteRT-LM gemma4_mixed48* recipes. There is no
dynamic_wi2_afp32 alias and no static recipe with sub-8-bit weights.

What TFLite's interpreter (ai-edge-litert 2.3.0) runs, checked on MLP, digits (CONV_2D) and the
transformer block: every recipe below runs under BUILTIN_REF and under the optimized kernels
without delegate; under the default resolver (XNNPACK) everything runs except the int2 blockwise
files ("unsupported tensor type ... for blockwise quantized tensor in XNNPACK delegate").
`tests/test_lowbit_peer.py` asserts this table.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import pathlib

import corpus
import numpy as np
from tflite_ref import write_model

# recipe name -> needs calibration
RECIPES = {
    "dynamic_wi8_afp32": False,
    "dynamic_wi4_afp32": False,
    "dynamic_wi2c_afp32": False,
    "dynamic_wi4b32_afp32": False,
    "dynamic_wi2b32_afp32": False,
    "weight_only_wi8_afp32": False,
    "weight_only_wi4_afp32": False,
    "static_wi8_ai8": True,
    "static_wi8_ai16": True,
}
MODELS = ("mlp", "digits", "transformer")
CALIBRATION_COUNT = 16


def available() -> bool:
    try:
        importlib.metadata.version("ai-edge-quantizer")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def cache_dir() -> pathlib.Path:
    return corpus.REPO / ".cache" / "peer" / importlib.metadata.version("ai-edge-quantizer")


def path(model: str, recipe: str) -> pathlib.Path:
    """The peer's quantization of corpus model `model` (float) with named recipe `recipe`."""
    if recipe not in RECIPES:
        raise KeyError(f"unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
    target = cache_dir() / f"{model}.r{corpus.REVISION}.{recipe}.tflite"
    if not target.exists():
        with corpus._build_lock(target.with_suffix(".lock")):
            if not target.exists():
                write_model(_quantize(model, recipe), target)
    return target


def _quantize(model: str, recipe_name: str) -> bytes:
    from ai_edge_quantizer import quantizer, recipe

    source = corpus.path(model, "float")
    q = quantizer.Quantizer(str(source))
    q.load_quantization_recipe(getattr(recipe, recipe_name)())
    with contextlib.redirect_stdout(None):  # the peer prints a size summary
        if not RECIPES[recipe_name]:
            return bytes(q.quantize().quantized_model)
        result = q.calibrate(_calibration_set(model, source))
        return bytes(q.quantize(result).quantized_model)


def _calibration_set(model: str, source: pathlib.Path) -> dict:
    """{signature key: [{input name: one sample}]}, the peer's calibration format."""
    import qengine

    signature = qengine.load(source).signatures[0]
    (name,) = signature.inputs
    samples = corpus.sample_inputs(model, CALIBRATION_COUNT, corpus.CALIBRATION_SEED)
    return {signature.key: [{name: np.ascontiguousarray(s[None])} for s in samples]}
