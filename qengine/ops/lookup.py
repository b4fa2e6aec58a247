"""Table lookups: HASHTABLE_LOOKUP (sorted int32 keys -> rows of values)."""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared, register_op


@register_op("HASHTABLE_LOOKUP")
def hashtable_lookup(ctx: OpContext) -> Prepared:
    """out[i] = values[j] where keys[j] == lookup[i], else zeros; hits[i] = 1 if found.
    TFLite binary-searches the keys, so they must be sorted (checked here)."""
    ctx.expect_inputs(3)
    lookup, keys, values = ctx.input(0), ctx.input(1), ctx.input(2)
    ctx.expect_dtype(lookup, "int32")
    ctx.expect_dtype(keys, "int32")
    ctx.expect_dtype(values, "float32", "uint8", "int8", "int32")
    ctx.expect_rank(lookup, 1)
    ctx.expect_rank(keys, 1)
    if not values.shape or values.shape[0] != keys.shape[0]:
        raise ctx.invalid(f"values {values.shape} need one row per key ({keys.shape[0]})")
    if keys.value is not None and np.any(np.diff(keys.value) <= 0):
        raise ctx.invalid("keys must be sorted and distinct (TFLite binary-searches them)")
    for t, dtype in zip(ctx.outputs, (values.dtype, "uint8")):
        if t.dtype != dtype:
            raise ctx.invalid(f"output {t.name!r} is {t.dtype}; the op writes {dtype}")
    shape = (lookup.shape[0],) + tuple(values.shape[1:])

    def run(wanted, table_keys, table):
        at = np.clip(np.searchsorted(table_keys, wanted), 0, max(len(table_keys) - 1, 0))
        hit = (table_keys[at] == wanted) if len(table_keys) else np.zeros(len(wanted), bool)
        out = np.zeros(shape, table.dtype)
        out[hit] = table[at[hit]]
        return out, hit.astype(np.uint8)

    return Prepared(run, [ctx.output_spec(0, shape, values.dtype),
                          ctx.output_spec(1, (lookup.shape[0],), "uint8")])
