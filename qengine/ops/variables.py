"""Resource variables and their initializer: VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE, CALL_ONCE.

The values live in the interpreter's `Resources` (qengine/runtime/resources.py), so they persist
from one `Interpreter.run` to the next: this is how streaming models (wake-word detectors) keep
their ring buffers. A VAR_HANDLE's output is the variable's resource id (an int32 scalar, as in
TFLite); READ_VARIABLE and ASSIGN_VARIABLE copy raw values, quantized ones included: TFLite
copies bytes and ignores the quantization parameters, and so does qengine.
"""

from __future__ import annotations

import numpy as np

from ..ir import numpy_dtype
from ..runtime.registry import OpContext, Prepared, Spec
from .opdef import op


def variable_names(options) -> tuple[str, str]:
    """(container, shared_name) of a VAR_HANDLE: what TFLite resolves variables by."""
    def text(value) -> str:
        return value.decode() if isinstance(value, bytes) else (value or "")

    return text(getattr(options, "container", None)), text(getattr(options, "sharedName", None))


def _resource_id(handle: np.ndarray) -> int:
    return int(np.asarray(handle).reshape(-1)[0])


def _expect_handle(ctx: OpContext, spec: Spec) -> None:
    ctx.expect_dtype(spec, "resource", "int32")
    if spec.shape is not None and int(np.prod(spec.shape)) != 1:
        raise ctx.invalid(f"the resource handle {spec.name!r} has shape {spec.shape}, not one "
                          f"element")


@op("VAR_HANDLE")
def var_handle(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(0)
    resource_id = ctx.interpreter.resources.handle(*variable_names(ctx.options))
    handle = np.full(ctx.outputs[0].shape, resource_id, np.int32)
    return Prepared(lambda: handle, [ctx.output_spec(0, handle.shape)], foldable=False)


@op("READ_VARIABLE")
def read_variable(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    _expect_handle(ctx, ctx.input(0))
    out = ctx.outputs[0]
    dtype = numpy_dtype(out.dtype)
    static = out.shape_signature is None or -1 not in out.shape_signature
    shape = tuple(out.shape) if static else None
    resources = ctx.interpreter.resources

    def run(handle):
        value = resources.read(_resource_id(handle))
        if value.dtype != dtype or (shape is not None and value.shape != shape):
            raise ctx.invalid(f"the variable holds {value.dtype} {value.shape}; the op's output "
                              f"is declared {dtype} {shape}")
        return value

    return Prepared(run, [ctx.output_spec(0, shape)], foldable=False)


@op("ASSIGN_VARIABLE")
def assign_variable(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    _expect_handle(ctx, ctx.input(0))
    ctx.input(1)
    if ctx.outputs:
        raise ctx.invalid(f"has {len(ctx.outputs)} outputs; ASSIGN_VARIABLE has none")
    resources = ctx.interpreter.resources

    def run(handle, value):
        resources.assign(_resource_id(handle), value)
        return ()

    return Prepared(run, [], foldable=False)


@op("CALL_ONCE")
def call_once(ctx: OpContext) -> Prepared:
    """Runs the init subgraph on the first invocation only (until `reset_variables()`)."""
    index = getattr(ctx.options, "initSubgraphIndex", None)
    n = len(ctx.interpreter.model.subgraphs)
    if index is None or not 0 < index < n:
        raise ctx.invalid(f"init subgraph {index} is not a subgraph of this model (it has {n})")
    init = ctx.interpreter.model.subgraphs[index]
    if ctx.inputs or ctx.outputs or init.inputs or init.outputs:
        raise ctx.invalid("CALL_ONCE and its init subgraph take no inputs and return nothing")
    interpreter, resources = ctx.interpreter, ctx.interpreter.resources

    def run():
        if index in resources.initialized:
            return ()
        if index in resources.initializing:
            raise ctx.invalid(f"init subgraph {index} calls itself through CALL_ONCE")
        resources.initializing.add(index)
        try:
            interpreter.run_subgraph(index, [])
        finally:
            resources.initializing.discard(index)
        resources.initialized.add(index)
        return ()

    return Prepared(run, [], foldable=False)
