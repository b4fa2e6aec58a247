"""Exceptions raised for problems with the user's model or data (never for bugs in qengine)."""


class QEngineError(Exception):
    """Base class for errors caused by the input, not by qengine itself."""


class InvalidModelError(QEngineError, ValueError):
    """The .tflite file (or an IR built in memory) is malformed or inconsistent."""


class ShapeError(InvalidModelError):
    """An op's input shapes do not fit it (a convolution window larger than its input, shapes
    that do not broadcast); with dynamic inputs, other sizes may fit."""


class UnsupportedOpError(QEngineError, NotImplementedError):
    """The model uses an op (or an op/dtype combination) the runtime has no kernel for."""


class UnsupportedOpsError(UnsupportedOpError):
    """A model with ops that have no kernel: the message has one line per op type, `nodes`
    every such node."""

    def __init__(self, message: str, nodes: list[str]):
        super().__init__(message)
        self.nodes = nodes


class InputError(QEngineError, ValueError):
    """Inputs or calibration data do not match what the model expects."""


class QuantizationError(QEngineError, ValueError):
    """A quantization request cannot be carried out (e.g. strict mode, unexportable scheme)."""


class ExportError(QuantizationError):
    """The model holds a research scheme TFLite cannot express, so it cannot be written."""


class NothingToQuantize(QuantizationError):
    """The mode found nothing to quantize; writing the model would only copy it (CLI: exit 1)."""
