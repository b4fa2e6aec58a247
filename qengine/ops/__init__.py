"""qengine's own op implementations, one module per family; importing this package registers
every op.

Each op type is defined once, by an `OpDef` (`qengine.ops.opdef`) in its family's module. The
quantizer's rule tables, the dynamic-range and weight-only op lists, PTQ's layers and
compare's audited ops are derived from the definitions, so an op's name is written in its
module only (a few also appear in `warmup.py`'s sample model); `tests/test_architecture.py`
checks it (at most 3 files per op type, median 1).

Adding an op
------------
1. In the family module (`elementwise.py`, `nn.py`, `shape.py`, ...; or a new module here,
   which is imported automatically unless its name ends in `_int`), write `prepare(ctx)`: it
   validates with `ctx.expect_inputs/expect_dtype/expect_rank/constant` (raise
   `ctx.invalid(...)` or `ctx.unsupported(...)`, never a bare exception) and returns
   `Prepared(run, [ctx.output_spec(0, shape, dtype)])`; `run(*arrays)` computes blindly.
   Register it with the decorator beside it:

       @op("SQUARE")
       def square(ctx: OpContext) -> Prepared: ...

2. If the op has an int8 (or 16x8) kernel, give its quantization facts in the same decorator,
   and the quantizer picks it up:

       @op("ABS", kernels=integer_kernels("elementwise_int:abs_"),
           quantized=Quantized(REQUANT, 2, int16=3))

   The float `prepare` calls `quantized_path(ctx, "<family>")` for quantized inputs, which runs the kernel
   `kernels` keys by the data input's dtype (the same function for int8, uint8 and int16 with
   `integer_kernels`; the function refuses what TFLite refuses).

   `Quantized(output rule, int8 version, int16=16x8 version or None, fixed=(scale, zp),
   bias=input, ...)`: see the fields' comments in `opdef.py` for the special inputs (PADV2's
   pad value, PRELU's int8 alpha, ...). An op with a constant filter or table also gets
   `weight=Weight(input, channel axis, layout, types=...)` (quantized by every mode; the
   dynamic-range mode also needs `hybrid=Hybrid(versions...)`).

3. Kernels per dtype: an op whose dtypes share validation and geometry but not arithmetic
   (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) is an `OpDef` with `shared(ctx) -> args` and
   `kernels` keyed by kind (`FLOAT32`, `HYBRID`, `INT8`, `INT16`, or any new kind a
   `kind(ctx)` function returns, e.g. for int4 weights) and optionally by arithmetic
   (`(INT8, XNNPACK)`); each kernel is `kernel(ctx, *args) -> Prepared`, given as a function
   or as "module:function" so a Numba module loads only when a model needs it:

       CONV_2D = define(OpDef("CONV_2D", shared=_conv_shared,
                              kernels={FLOAT32: _conv_float, INT8: "conv_int:conv_2d", ...},
                              quantized=Quantized(...), hybrid=Hybrid(...)))

   Adding a dtype to such an op is one kernel function plus one `kernels` entry.

4. Tests: a `tests/test_ops_<family>.py` case against TFLite's reference kernels
   (`op_harness.check_against_tflite`), marked `tf`, plus a naive-twin test for any new
   Numba kernel.

Measured on this tree (by adding STABLEHLO_NEGATE, then reverting it): a float op is 4 lines
in one module (`@op("STABLEHLO_NEGATE")` + prepare in `elementwise.py`) plus its test file;
nothing else changed, and `tests/test_architecture.py` still found every op type named in one
file. An op with an int8 kernel is its family module (the `@op` decorator with its `Quantized`
facts, which the quantizer reads, and `kernels=integer_kernels("<family>_int:<function>")`,
which `quantized_path` dispatches to) plus the `<family>_int.py` module holding the kernel,
plus tests: two source files.

Modules whose name ends in `_int` hold the quantized paths; they import Numba kernels and are
loaded lazily, so a float model never compiles an integer kernel.
"""

import importlib
import pkgutil


def _register_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("common", "opdef") and not info.name.endswith("_int"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_all()
