"""Static hash tables: HASHTABLE, HASHTABLE_IMPORT, HASHTABLE_FIND, HASHTABLE_SIZE.

What TensorFlow's converter writes for a `tf.lookup.StaticHashTable`: the init subgraph (run
by CALL_ONCE) creates the table and imports its keys and values once; the main graph finds keys
(the default value where a key is missing) and reports the size. Tables live in the
interpreter's `Resources` by table id, so they persist across runs; `reset_variables()` empties
them. TFLite's key/value types: int64 -> string and string -> int64.
"""

from __future__ import annotations

import numpy as np

from ..ir import TENSOR_TYPES
from ..runtime.registry import OpContext, Prepared
from .opdef import op

PAIRS = {("int64", "string"), ("string", "int64")}


def _table_id(handle) -> int:
    return int(np.asarray(handle).reshape(-1)[0])


def _key(value):
    return bytes(value) if isinstance(value, (bytes, np.bytes_)) else int(value)


def _handle_input(ctx: OpContext) -> None:
    spec = ctx.input(0)
    ctx.expect_dtype(spec, "resource", "int32")


@op("HASHTABLE")
def hashtable(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(0)
    options = ctx.options
    table_id = int(getattr(options, "tableId", 0))
    key_type = TENSOR_TYPES.get(int(getattr(options, "keyDtype", -1)))
    value_type = TENSOR_TYPES.get(int(getattr(options, "valueDtype", -1)))
    if (key_type, value_type) not in PAIRS:
        raise ctx.unsupported(f"a {key_type} -> {value_type} table (TFLite has int64 -> string "
                              f"and string -> int64)")
    handle = np.full(ctx.outputs[0].shape, table_id, np.int32)
    return Prepared(lambda: handle, [ctx.output_spec(0, handle.shape)], foldable=False)


@op("HASHTABLE_IMPORT")
def hashtable_import(ctx: OpContext) -> Prepared:
    """Fills the table once; later imports into a filled table do nothing (as TFLite's)."""
    ctx.expect_inputs(3)
    _handle_input(ctx)
    keys, values = ctx.input(1), ctx.input(2)
    if len(keys.shape) != 1 or keys.shape != values.shape:
        raise ctx.invalid(f"keys {keys.shape} and values {values.shape} must be 1-D and equal")
    tables = ctx.interpreter.resources.tables

    def run(handle, k, v):
        table_id = _table_id(handle)
        if table_id not in tables:
            tables[table_id] = {_key(a): b for a, b in zip(k.tolist(), v.tolist())}
        return ()

    return Prepared(run, [], foldable=False)


@op("HASHTABLE_FIND")
def hashtable_find(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(3)
    _handle_input(ctx)
    keys, default = ctx.input(1), ctx.input(2)
    ctx.expect_dtype(keys, "int64", "string")
    value_type = "string" if keys.dtype == "int64" else "int64"
    if default.dtype != value_type:
        raise ctx.invalid(f"default value is {default.dtype}; a {keys.dtype} table holds "
                          f"{value_type}")
    tables = ctx.interpreter.resources.tables

    def run(handle, k, fallback):
        table = tables.get(_table_id(handle), {})
        missing = np.asarray(fallback).reshape(-1)[0]
        found = [table.get(_key(key), missing) for key in k.reshape(-1).tolist()]
        out = np.empty(len(found), object if value_type == "string" else np.int64)
        out[:] = found
        return out.reshape(k.shape)

    return Prepared(run, [ctx.output_spec(0, keys.shape, value_type)], foldable=False)


@op("HASHTABLE_SIZE")
def hashtable_size(ctx: OpContext) -> Prepared:
    """The number of entries, as an int64 tensor of shape (1,) (what TFLite returns)."""
    ctx.expect_inputs(1)
    _handle_input(ctx)
    tables = ctx.interpreter.resources.tables

    def run(handle):
        return np.array([len(tables.get(_table_id(handle), {}))], np.int64)

    return Prepared(run, [ctx.output_spec(0, (1,), "int64")], foldable=False)
