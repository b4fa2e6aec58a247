"""Segment reductions: SEGMENT_SUM and UNSORTED_SEGMENT_SUM/PROD/MAX/MIN.

out[s] = reduce(data[i] for i with segment_ids[i] == s), in the data's type. SEGMENT_SUM
takes sorted ids 0, ..., n - 1 without gaps and has n rows; the unsorted ops take the row count
(num_segments) as an input, and a segment no id names holds the reduction's identity (0, 1,
the type's lowest or highest value), as in TFLite's reference kernels.
"""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .indexing import checked_size, data_error
from .opdef import op

DATA = ("float32", "int32")


def _identity(ufunc, dtype: np.dtype):
    if ufunc is np.add:
        return 0
    if ufunc is np.multiply:
        return 1
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    # the max of nothing is the type's lowest value, the min of nothing its highest
    return info.min if ufunc is np.maximum else info.max


def _segment(ufunc, data: np.ndarray, ids: np.ndarray, rows: int, id_rank: int) -> np.ndarray:
    """Rows of `data` (after flattening its first id_rank dims) folded into `rows` segments."""
    tail = data.shape[id_rank:]
    values = data.reshape((-1,) + tail)
    flat_ids = ids.reshape(-1).astype(np.int64)
    out = np.full((rows,) + tail, _identity(ufunc, data.dtype), data.dtype)
    keep = (flat_ids >= 0) & (flat_ids < rows)  # TFLite skips ids outside [0, num_segments)
    ufunc.at(out, flat_ids[keep], values[keep])
    return out


@op("SEGMENT_SUM")
def segment_sum(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    data, ids = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(data, *DATA)
    ctx.expect_dtype(ids, "int32")
    if len(ids.shape) != 1 or not data.shape or ids.shape[0] != data.shape[0]:
        raise ctx.invalid(f"segment ids of shape {ids.shape} must be 1-D, one per row of the "
                          f"data {data.shape}")
    tail = data.shape[1:]

    def rows_of(fail, segment_ids):
        # TFLite's kernel: ids start at 0 and step by 0 or 1 (sorted, no empty segment)
        steps = np.diff(segment_ids)
        if segment_ids.size and (segment_ids[0] != 0 or np.any((steps < 0) | (steps > 1))):
            raise fail(f"segment ids {segment_ids.tolist()} must be sorted, start at 0 and "
                       f"skip no segment")
        return int(segment_ids[-1]) + 1 if segment_ids.size else 0

    if ids.value is not None:
        rows = rows_of(ctx.invalid, ids.value)
        return Prepared(lambda d, i: _segment(np.add, d, i, rows, 1),
                        [ctx.output_spec(0, (rows,) + tail, data.dtype)])
    fail = data_error(ctx)
    return Prepared(lambda d, i: _segment(np.add, d, i, rows_of(fail, i), 1),
                    [ctx.output_spec(0, None, data.dtype)])


def _unsorted(ctx: OpContext, ufunc) -> Prepared:
    ctx.expect_inputs(3)
    data, ids, num = ctx.input(0), ctx.input(1), ctx.input(2)
    ctx.expect_dtype(data, *DATA)
    ctx.expect_dtype(ids, "int32")
    ctx.expect_dtype(num, "int32")
    id_rank = len(ids.shape)
    if tuple(data.shape[:id_rank]) != tuple(ids.shape):
        raise ctx.invalid(f"segment ids of shape {ids.shape} must match the leading dims of the "
                          f"data {data.shape}")
    tail = data.shape[id_rank:]

    def rows_of(fail, count):
        if np.size(count) != 1 or int(np.ravel(count)[0]) < 0:
            raise fail(f"num_segments {np.ravel(count).tolist()} must be one value >= 0")
        rows = int(np.ravel(count)[0])
        return checked_size(fail, (rows,) + tail, "output shape")[0]

    if num.value is not None:
        rows = rows_of(ctx.invalid, num.value)
        return Prepared(lambda d, i, _: _segment(ufunc, d, i, rows, id_rank),
                        [ctx.output_spec(0, (rows,) + tail, data.dtype)])
    fail = data_error(ctx)
    return Prepared(lambda d, i, n: _segment(ufunc, d, i, rows_of(fail, n), id_rank),
                    [ctx.output_spec(0, None, data.dtype)])


@op("UNSORTED_SEGMENT_SUM")
def unsorted_segment_sum(ctx: OpContext) -> Prepared:
    return _unsorted(ctx, np.add)


@op("UNSORTED_SEGMENT_PROD")
def unsorted_segment_prod(ctx: OpContext) -> Prepared:
    return _unsorted(ctx, np.multiply)


@op("UNSORTED_SEGMENT_MAX")
def unsorted_segment_max(ctx: OpContext) -> Prepared:
    return _unsorted(ctx, np.maximum)


@op("UNSORTED_SEGMENT_MIN")
def unsorted_segment_min(ctx: OpContext) -> Prepared:
    return _unsorted(ctx, np.minimum)
