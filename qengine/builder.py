"""Build graphs in code: single-op test models, and graphs the converter rarely emits.

    b = GraphBuilder()
    x = b.input("x", (1, 8, 8, 3))
    w = b.const("w", np.ones((4, 3, 3, 3), np.float32))
    y = b.op("CONV_2D", [x, w, None], options("Conv2DOptions", padding=SAME, strideW=1,
             strideH=1), out_shape=(1, 8, 8, 4))
    model = b.build(outputs=[y])
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidModelError
from .ir import Model, OpCode, Operator, Quantization, Subgraph, Tensor, verify
from .schema import tflite_generated as fb

SAME, VALID = fb.Padding.SAME, fb.Padding.VALID
ACTIVATIONS = {name: code for name, code in vars(fb.ActivationFunctionType).items()
               if not name.startswith("_")}


def options(kind: str, **fields):
    """A flatc options object, e.g. options("Conv2DOptions", strideW=2).

    Field names are the object API's camelCase names; a misspelt one raises.
    """
    cls = getattr(fb, kind + "T", None)
    if cls is None:
        raise InvalidModelError(f"no options table {kind!r} in the schema")
    obj = cls()
    for name, value in fields.items():
        if not hasattr(obj, name):
            known = ", ".join(k for k in vars(obj))
            raise InvalidModelError(f"{kind} has no field {name!r}; fields: {known}")
        setattr(obj, name, value)
    return obj


class GraphBuilder:
    def __init__(self, name: str = "main"):
        self.subgraph = Subgraph(name=name)
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        base, n = name, 1
        while name in self._names:
            name, n = f"{base}_{n}", n + 1
        self._names.add(name)
        return name

    def tensor(self, name: str, shape, dtype: str = "float32",
               quantization: Quantization | None = None) -> Tensor:
        t = Tensor(self._unique(name), tuple(shape), dtype, quantization=quantization)
        self.subgraph.tensors.append(t)
        return t

    def input(self, name: str, shape, dtype: str = "float32",
              quantization: Quantization | None = None, dynamic_batch: bool = False) -> Tensor:
        t = self.tensor(name, shape, dtype, quantization)
        if dynamic_batch:
            t.shape_signature = (-1,) + tuple(shape[1:])
        self.subgraph.inputs.append(t)
        return t

    def const(self, name: str, value, dtype: str | None = None,
              quantization: Quantization | None = None) -> Tensor:
        value = np.asarray(value)
        t = self.tensor(name, value.shape, dtype or str(value.dtype), quantization)
        t.data = value
        return t

    def op(self, name: str, inputs, out_shape=None, out_dtype: str | None = None, *,
           options=None, version: int = 1, custom_code: str | None = None,
           custom_options: bytes | None = None, n_outputs: int = 1,
           out_quantization: Quantization | None = None, outputs=None):
        """Append an op; returns its output tensor (or list of them when n_outputs > 1)."""
        if outputs is None:
            # the dtype of the data input: the first computed one (TRANSPOSE_CONV's first input
            # is a constant int32 shape), else the first input
            present = [t for t in inputs if t is not None]
            data = [t for t in present if not t.is_constant] or present
            dtype = out_dtype or (data[0].dtype if data else "float32")
            shapes = out_shape if n_outputs > 1 else [out_shape]
            outputs = [self.tensor(f"{(custom_code or name).lower()}_out", s or (), dtype,
                                   out_quantization) for s in shapes]
        opcode = OpCode("CUSTOM" if custom_code else name, version, custom_code)
        self.subgraph.operators.append(Operator(opcode, list(inputs), list(outputs), options,
                                                custom_options=custom_options))
        if not outputs:
            return None  # ASSIGN_VARIABLE, CALL_ONCE
        return outputs if n_outputs > 1 else outputs[0]

    def build(self, outputs, description: str = "qengine.builder") -> Model:
        self.subgraph.outputs = list(outputs)
        model = Model(subgraphs=[self.subgraph], description=description)
        verify(model)
        return model
