"""The runtime: an interpreter over the IR and the op registry kernels plug into."""

from .. import ops as _ops  # noqa: F401  (registers qengine's own kernels)
from .interpreter import Interpreter
from .registry import OpContext, Prepared, Spec, register_op, supported_ops

__all__ = ["Interpreter", "OpContext", "Prepared", "Spec", "register_op", "supported_ops"]
