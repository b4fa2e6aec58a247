"""The op registry: one prepare function per op, registered beside its code.

A prepare function receives an `OpContext` describing the op's inputs (shape, dtype,
quantization and, for constants, the value) and returns a `Prepared`: the kernel to call on
every run and the shape/dtype of each output. All validation happens in prepare; kernels assume
it was done. Raise `ctx.invalid(...)`/`ctx.unsupported(...)` for problems, never a bare
exception.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidModelError, ShapeError, UnsupportedOpError
from ..ir import Operator, Quantization, Tensor
from ..qparams import per_tensor_params

_REGISTRY: dict[str, Callable[[OpContext], Prepared]] = {}


def register_op(name: str, prepare: Callable | None = None):
    """Register `prepare` for a builtin op name ("CONV_2D") or a custom op's code.

    Usable as a decorator (`@register_op("MyOp")`). A later registration replaces an earlier
    one, so users can override qengine's own kernels.
    """
    def add(fn):
        _REGISTRY[name] = fn
        return fn

    return add if prepare is None else add(prepare)


def lookup(op: Operator) -> Callable | None:
    prepare = _REGISTRY.get(op_key(op))
    if op.fused_lookup is None or prepare is None:
        return prepare
    second = lookup(op.fused_lookup)
    return None if second is None else _FOLDING["lookup"]()(prepare, second)


# How an op with a folded lookup op (`Operator.fused_lookup`) prepares, given both ops'
# prepare functions: a loader of ops.elementwise_int.fold_lookup, which ops.elementwise
# registers here (the `_int` modules load on first use).
_FOLDING: dict[str, Callable[[], Callable]] = {}


def register_folding(kind: str, loader: Callable[[], Callable]) -> None:
    _FOLDING[kind] = loader


def op_key(op: Operator) -> str:
    return op.opcode.custom_code if op.opcode.name == "CUSTOM" else op.opcode.name


def supported_ops() -> list[str]:
    return sorted(_REGISTRY)


@dataclass
class Spec:
    """What prepare knows about a tensor: its shape and dtype, and its value if constant."""

    shape: tuple[int, ...] | None  # None: only known once the op has run
    dtype: str
    value: np.ndarray | None = None
    quantization: Quantization | None = None
    name: str = ""

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def scale(self) -> float:
        return per_tensor_params(self.quantization, self.name)[0]

    @property
    def zero_point(self) -> int:
        return per_tensor_params(self.quantization, self.name)[1]


@dataclass
class Prepared:
    run: Callable[..., Any]  # run(*input_arrays) -> array or tuple of arrays
    outputs: list[Spec]
    foldable: bool = True  # may run at prepare time when every input is constant


@dataclass
class OpContext:
    op: Operator
    index: int
    inputs: list[Spec | None]
    interpreter: Any = None  # for ops that run subgraphs (WHILE, IF)
    arithmetic: str = "ref"  # "ref": TFLite reference kernels; "xnnpack": default interpreter
    num_threads: int = 1
    scratch: dict = field(default_factory=dict)

    @property
    def options(self):
        return self.op.options

    @property
    def outputs(self) -> list[Tensor]:
        return self.op.outputs

    def output_spec(self, i: int, shape, dtype: str | None = None, value=None) -> Spec:
        """A Spec for output i with the output tensor's quantization attached."""
        t = self.op.outputs[i]
        return Spec(None if shape is None else tuple(int(d) for d in shape),
                    dtype or t.dtype, value, t.quantization, t.name)

    def where(self) -> str:
        out = self.op.outputs[0].name if self.op.outputs and self.op.outputs[0] else "?"
        return f"op {self.index} {self.op.opcode.display} (output {out!r})"

    def note(self, message: str) -> None:
        """Tell the user something about this op once per interpreter (on stderr), e.g. that it
        runs with other arithmetic than TFLite's reference kernels."""
        text = f"note: {self.where()}: {message}"
        notes = getattr(self.interpreter, "notes", None)
        if notes is not None:
            if text in notes:
                return
            notes.append(text)
        print(text, file=sys.stderr)

    def invalid(self, message: str) -> InvalidModelError:
        return InvalidModelError(f"{self.where()}: {message}")

    def shape_error(self, message: str) -> ShapeError:
        return ShapeError(f"{self.where()}: {message}")

    def unsupported(self, message: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.where()}: {message}")

    # -- common checks -------------------------------------------------------------------------

    def expect_inputs(self, low: int, high: int | None = None) -> None:
        n = len(self.inputs)
        if not low <= n <= (low if high is None else high):
            want = low if high is None else f"{low} to {high}"
            raise self.invalid(f"expects {want} inputs, has {n}")

    def input(self, i: int) -> Spec:
        if i >= len(self.inputs) or self.inputs[i] is None:
            raise self.invalid(f"input {i} is missing")
        return self.inputs[i]

    def optional_input(self, i: int) -> Spec | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def constant(self, i: int, what: str) -> np.ndarray:
        spec = self.input(i)
        if spec.value is None:
            raise self.unsupported(f"{what} (input {i}) must be a constant or computable at "
                                   f"prepare time")
        return spec.value

    def expect_dtype(self, spec: Spec, *dtypes: str) -> None:
        if spec.dtype not in dtypes:
            raise self.unsupported(f"{spec.dtype} tensor {spec.name!r}; supported: "
                                   f"{', '.join(dtypes)}")

    def expect_rank(self, spec: Spec, *ranks: int) -> None:
        if spec.shape is not None and len(spec.shape) not in ranks:
            raise self.invalid(f"tensor {spec.name!r} has rank {len(spec.shape)}, expected "
                               f"{' or '.join(map(str, ranks))}")

    def axis(self, axis: int, rank: int) -> int:
        """Normalize a possibly negative axis taken from the file."""
        if not -rank <= axis < max(rank, 1):
            raise self.invalid(f"axis {axis} is out of range for rank {rank}")
        return axis % rank if rank else 0
