"""`OpDef`: everything qengine knows about one op type, in the op's own module.

An OpDef holds
- how the runtime prepares the op: either one `prepare(ctx)` function, or a `shared(ctx)`
  step (validation and geometry common to every dtype) plus `kernels` keyed by the kind of
  the op's tensors ("float32", "hybrid", "int8", "int16", ... see `default_kind`) and
  optionally by arithmetic (("int8", "xnnpack")); a kernel is a function or a lazy
  "module:function" reference inside `qengine.ops`, so Numba modules load only when a model
  needs them;
- which input is the weight (`Weight`: its channel axis, layout and storable dtypes);
- the quantizer's facts (`Quantized`): how the int8/16x8 pass picks the output parameters,
  the op versions per scheme, the bias input, and the special cases (PADV2's pad value,
  PRELU's int8 alpha, TRANSPOSE_CONV's data input, comparisons' input scales, ADD/SUB's 16x8
  option);
- the dynamic-range facts (`Hybrid`), compare's accumulator audit (`accumulator`), and small
  graph facts the passes read (`reads_shape_only`, `scale_equivariant`).

The quantizer's rule tables, the dynamic mode's op list, PTQ's layers and compare's audited
ops are all derived from these definitions (`definitions()`), so an op type's name is written
in its own module only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..runtime.registry import OpContext, Prepared, register_op

# how the int8/16x8 pass chooses an op's output parameters
REQUANT = "requant"  # from the output's own calibration statistics
SAME = "same"  # the data input's (the op moves values, it does not compute new ones)
FIXED = "fixed"  # fixed by the kernel (SOFTMAX: 1/256, -128)
SHARED = "shared"  # inputs and output share one scale and zero point (CONCATENATION)

# filter layouts, by what each axis holds (O output channels, I input channels, H/W kernel)
OHWI, DEPTHWISE_1HWO, OI = "OHWI", "1HWO", "OI"
TABLE = "table"  # EMBEDDING_LOOKUP: one row per id, scales per row

# kinds of an op's tensors that kernels are keyed by (other kinds may be added freely)
FLOAT32, HYBRID, INT8, INT16, UINT8 = "float32", "hybrid", "int8", "int16", "uint8"
XNNPACK = "xnnpack"  # the arithmetic of TFLite's default (XNNPACK) interpreter


@dataclass(frozen=True)
class Weight:
    """A constant filter input, quantized symmetric per channel along `axis`."""

    input: int
    axis: int  # the output-channel axis (per-channel scales lie along it)
    layout: str  # OHWI, DEPTHWISE_1HWO, OI or TABLE
    blockwise: bool = False  # TFLite runs blockwise (per-block scales) weights in this op
    types: tuple[str, ...] = ("int8",)  # filter dtypes the kernel reads (int4/int2 unpacked)
    types_by_input: tuple = ()  # ((input dtype, filter dtypes), ...) where it reads fewer

    def types_for(self, input_dtype: str) -> tuple[str, ...]:
        """The filter dtypes TFLite's kernel reads with this input dtype."""
        return dict(self.types_by_input).get(input_dtype, self.types)


@dataclass(frozen=True)
class Quantized:
    """What the full-integer (int8 and 16x8) pass needs to know about an op."""

    output: str  # REQUANT, SAME, FIXED or SHARED
    int8: int  # the op version the converter writes for the int8 kernel
    int16: int | None = None  # the version for 16x8; None: no int16 kernel (the op stays float)
    fixed: tuple[float, int] | None = None  # FIXED: (scale, zero point) of the int8 output
    fixed16: tuple[float, int] | None = None  # FIXED in 16x8 (default: `fixed`)
    bias: int | None = None  # the bias input (int32; int64 in 16x8)
    bias_optional: bool = False  # no bias input stays none; otherwise zeros are inserted
    data_input: int = 0  # the input whose scale times the weight's is the bias scale
    int8_inputs: tuple[int, ...] = ()  # constants TFLite's int16 kernel reads as int8 (alpha)
    pad_value: int | None = None  # input holding a value in the output's units (PADV2)
    small_input_scales: bool = False  # the int8 kernel needs every input scale < 1
    int16_options: tuple[str, str, object] | None = None  # (options type, field, value) in 16x8
    # TF's converter quantizes an input read only by this op and written by a REQUANT op on the
    # union of its range and this op's output range (ADD); the "converter_add" range policy
    converter_widens_inputs: bool = False


@dataclass(frozen=True)
class Hybrid:
    """Dynamic-range mode: the weight becomes int8 and the kernel quantizes inputs on the fly."""

    per_tensor: int  # op version with one weight scale
    per_channel: int  # op version with per-channel weight scales
    always_per_channel: bool = False  # the kernel reads one scale per channel whatever is asked
    asymmetric_inputs: int | None = None  # version with asymmetricQuantizeInputs, per tensor


@dataclass
class OpDef:
    name: str
    prepare: Callable[[OpContext], Prepared] | None = None  # all-in-one, or shared + kernels
    # (with `prepare`, `kernels` holds what it dispatches to, see common.quantized_path)
    shared: Callable[[OpContext], tuple] | None = None
    kernels: dict = field(default_factory=dict)  # kind or (kind, arithmetic) -> kernel
    kind: Callable[[OpContext], str] | None = None  # default: default_kind of the data input
    weight: Weight | None = None  # a constant filter/table input (quantized in every mode)
    quantized: Quantized | None = None
    hybrid: Hybrid | None = None
    accumulator: Callable | None = None  # (op, index, x - zp_x, w) -> int32 accumulators
    reads_shape_only: bool = False  # SHAPE, RANK: any dtype of the input will do
    scale_equivariant: bool = False  # f(s x) = s f(x) for s > 0 (RELU)

    def run_prepare(self, ctx: OpContext) -> Prepared:
        if self.prepare is not None:
            return self.prepare(ctx)
        shared = self.shared(ctx) if self.shared is not None else ()
        return self.kernel(ctx)(ctx, *shared)

    def kernel(self, ctx: OpContext) -> Callable:
        data = self.quantized.data_input if self.quantized else 0
        weight = self.weight.input if self.weight else 1
        kind = self.kind(ctx) if self.kind else default_kind(ctx, data, weight)
        chosen = self.kernels.get((kind, ctx.arithmetic)) or self.kernels.get(kind)
        if chosen is None:
            have = ", ".join(sorted({k if isinstance(k, str) else k[0] for k in self.kernels}))
            dtypes = ", ".join(sorted({s.dtype for s in ctx.inputs if s is not None}))
            raise ctx.unsupported(f"no {kind} kernel (no quantized kernel) for {self.name} on "
                                  f"{dtypes}; implemented: {have or 'float only'}")
        return resolve_kernel(chosen)


def integer_kernels(kernel) -> dict:
    """The same prepare for every quantized kind (int8, uint8, int16): for ops whose integer
    prepare in a `_int` module handles all of them (and refuses what TFLite refuses)."""
    return {INT8: kernel, UINT8: kernel, INT16: kernel}


def default_kind(ctx: OpContext, data: int = 0, weight: int = 1) -> str:
    """The kind of an op from its data input (0; TRANSPOSE_CONV: 2) and its weight (input 1):
    float32 throughout; "hybrid" for float32 data with an integer weight; else the data's
    dtype (int8, int16, uint8, ...)."""
    x, w = ctx.input(data), ctx.optional_input(weight)
    if x.dtype == FLOAT32:
        return HYBRID if w is not None and w.dtype != FLOAT32 else FLOAT32
    return x.dtype


def resolve_kernel(kernel) -> Callable:
    if callable(kernel):
        return kernel
    module, _, name = kernel.partition(":")
    return getattr(importlib.import_module(f"qengine.ops.{module}"), name)


_DEFINITIONS: dict[str, OpDef] = {}


def define(opdef: OpDef) -> OpDef:
    """Register an op: the runtime prepares it with `opdef.run_prepare`; the quantizer, compare
    and PTQ read its facts through `definitions()`."""
    _DEFINITIONS[opdef.name] = opdef
    register_op(opdef.name, opdef.run_prepare)
    return opdef


def op(name: str, **facts):
    """Decorator form for an op with one prepare function:

        @op("ADD", quantized=Quantized(REQUANT, 2, int16=3))
        def add(ctx): ...
    """
    def register(prepare):
        define(OpDef(name, prepare, **facts))
        return prepare

    return register


def definitions() -> dict[str, OpDef]:
    """Every op type qengine defines, by name (importing qengine.ops registers them)."""
    return dict(_DEFINITIONS)
