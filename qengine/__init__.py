"""qengine: post-training quantization and a bit-exact reference runtime for TFLite models.

`import qengine` is cheap: it loads the IR and the file reader only. The runtime, the
quantizer and the Numba kernels are imported on first use.
"""

from .errors import (
    ExportError,
    InputError,
    InvalidModelError,
    QEngineError,
    QuantizationError,
    ShapeError,
    UnsupportedOpError,
)
from .flatbuffer_io import load
from .ir import Model, verify

__version__ = "0.1.0"

__all__ = [
    "ExportError",
    "InputError",
    "Interpreter",
    "InvalidModelError",
    "Model",
    "QEngineError",
    "QuantizationError",
    "Recipe",
    "Scheme",
    "ShapeError",
    "UnsupportedOpError",
    "compare",
    "load",
    "quantize",
    "register_op",
    "verify",
]

_LAZY = {
    "Interpreter": ("qengine.runtime", "Interpreter"),
    "register_op": ("qengine.runtime", "register_op"),
    "quantize": ("qengine.quantizer", "quantize"),
    "compare": ("qengine.compare", "compare"),
    "Scheme": ("qengine.quantizer.scheme", "Scheme"),
    "Recipe": ("qengine.quantizer.scheme", "Recipe"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'qengine' has no attribute {name!r}")
