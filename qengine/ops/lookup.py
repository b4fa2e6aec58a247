"""Table lookups: HASHTABLE_LOOKUP (sorted int32 keys -> rows of values) and
EMBEDDING_LOOKUP_SPARSE."""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .indexing import data_error
from .opdef import op


@op("HASHTABLE_LOOKUP")
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


SUM, MEAN, SQRTN = 0, 1, 2  # CombinerType


@op("EMBEDDING_LOOKUP_SPARSE")
def embedding_lookup_sparse(ctx: OpContext) -> Prepared:
    """A sparse tensor of ids (ids, indices, dense_shape) with weights, looked up in params and
    combined per output row: SUM of weight * params[id], MEAN (divided by the weights' sum) or
    SQRTN (by the root of their squares' sum). Rows without entries are zero."""
    ctx.expect_inputs(5)
    ids, indices, dense_shape, weights, params = (ctx.input(i) for i in range(5))
    for spec in (ids, indices, dense_shape):
        ctx.expect_dtype(spec, "int32")
    ctx.expect_dtype(weights, "float32")
    ctx.expect_dtype(params, "float32")
    ctx.expect_rank(ids, 1)
    ctx.expect_rank(indices, 2)
    if indices.shape[0] != ids.shape[0] or weights.shape != ids.shape or len(params.shape) < 2:
        raise ctx.invalid(f"ids {ids.shape}, indices {indices.shape}, weights {weights.shape} "
                          f"and params {params.shape} do not fit together")
    combiner = int(getattr(ctx.options, "combiner", SUM))
    if combiner not in (SUM, MEAN, SQRTN):
        raise ctx.invalid(f"unknown combiner {combiner}")
    rows_shape = tuple(int(v) for v in np.ravel(ctx.constant(2, "dense shape")))[:-1]
    if len(rows_shape) + 1 != indices.shape[1]:
        raise ctx.invalid(f"indices of rank {indices.shape[1]} for a dense shape of rank "
                          f"{len(rows_shape) + 1}")
    out_shape = rows_shape + tuple(params.shape[1:])
    fail = data_error(ctx)

    def run(id_values, index_values, _, weight_values, table):
        if np.any((id_values < 0) | (id_values >= len(table))):
            raise fail(f"ids must lie in [0, {len(table)})")
        rows = index_values[:, :-1].astype(np.int64)
        if np.any((rows < 0) | (rows >= np.array(rows_shape, np.int64))):
            raise fail(f"sparse indices outside the dense shape {list(rows_shape)}")
        flat = np.ravel_multi_index(tuple(rows.T), rows_shape) if rows_shape else \
            np.zeros(len(rows), np.int64)
        n_rows = int(np.prod(rows_shape))
        picked = table[id_values].astype(np.float64)
        w = weight_values.astype(np.float64).reshape((-1,) + (1,) * (table.ndim - 1))
        out = np.zeros((n_rows,) + table.shape[1:], np.float64)
        np.add.at(out, flat, picked * w)
        if combiner != SUM:
            norm = np.zeros(n_rows)
            np.add.at(norm, flat, weight_values if combiner == MEAN else weight_values ** 2)
            norm = norm if combiner == MEAN else np.sqrt(norm)
            nonzero = norm != 0  # TFLite divides by any non-zero weight sum, negative too
            out[nonzero] /= norm[nonzero].reshape((-1,) + (1,) * (table.ndim - 1))
        return out.astype(np.float32).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])
