"""Ops that write values to computed positions: SCATTER_ND, DYNAMIC_UPDATE_SLICE,
SPARSE_TO_DENSE, REVERSE_SEQUENCE, MATRIX_DIAG, MATRIX_SET_DIAG.

They move values without arithmetic (SCATTER_ND adds duplicates), so quantized tensors are
handled as their raw integers, as TFLite's kernels do. Index values are checked before use:
from the model at prepare time when constant, from the data (InputError) otherwise.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..runtime.registry import OpContext, Prepared, Spec
from .opdef import SAME, SHARED, Quantized, op

MOVABLE = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")
INDEX = ("int32", "int64")


def data_error(ctx: OpContext):
    """`fail` for checks on runtime values: the model is fine, the data is not."""
    return lambda message: InputError(f"{ctx.where()}: {message}")


def _fail_for(ctx: OpContext, spec: Spec):
    return ctx.invalid if spec.value is not None else data_error(ctx)


def _shape_values(fail, values, what: str) -> tuple[int, ...]:
    shape = tuple(int(v) for v in np.ravel(values))
    if any(d < 0 for d in shape):
        raise fail(f"{what} {list(shape)} has a negative size")
    return checked_size(fail, shape, what)


def checked_size(fail, shape: tuple[int, ...], what: str) -> tuple[int, ...]:
    """An output shape read from the data, refused before anything is allocated when it
    exceeds the interpreter's element limit (a hostile or broken input, not a big tensor)."""
    from ..runtime.interpreter import MAX_ELEMENTS

    if np.prod(shape, dtype=np.float64) > MAX_ELEMENTS:
        raise fail(f"{what} {list(shape)} would have more than {MAX_ELEMENTS} elements")
    return shape


def _check_rows(fail, rows: np.ndarray, limits, what: str) -> None:
    """Every index row must address an element of `limits` (TFLite refuses the op)."""
    limits = np.asarray(limits, np.int64)
    bad = np.any((rows < 0) | (rows >= limits), axis=-1)
    if bad.any():
        raise fail(f"{what} {rows[bad][0].tolist()} is outside the shape {limits.tolist()}")


# -- SCATTER_ND ------------------------------------------------------------------------------


@op("SCATTER_ND")
def scatter_nd(ctx: OpContext) -> Prepared:
    """out = zeros(shape); out[indices[i]] += updates[i] (TFLite reference ScatterNd)."""
    ctx.expect_inputs(3)
    indices, updates, shape = ctx.input(0), ctx.input(1), ctx.input(2)
    ctx.expect_dtype(indices, "int32")  # TFLite's kernel takes int32 indices only
    ctx.expect_dtype(shape, "int32")
    ctx.expect_dtype(updates, "float32", "int8", "uint8", "int32", "int64", "bool")
    depth = indices.shape[-1] if indices.shape else 0
    dtype = updates.dtype

    def plan(out_shape):
        out_shape = _shape_values(_fail_for(ctx, shape), out_shape, "shape")
        expected = indices.shape[:-1] + out_shape[depth:]
        if depth > len(out_shape) or tuple(updates.shape) != expected:
            raise ctx.invalid(f"updates of shape {updates.shape} do not fit indices "
                              f"{indices.shape} into an output of shape {out_shape}")
        return out_shape

    def scatter(idx, upd, out_shape):
        rows = idx.reshape(-1, depth).astype(np.int64)
        _check_rows(data_error(ctx), rows, out_shape[:depth], "scatter index")
        out = np.zeros(out_shape, np.dtype(dtype))
        target = out.reshape((-1,) + out_shape[depth:]) if depth else out.reshape(1, -1)
        flat = np.ravel_multi_index(tuple(rows.T), out_shape[:depth]) if depth else \
            np.zeros(len(rows), np.int64)
        values = upd.reshape((len(rows),) + out_shape[depth:])
        if dtype == "bool":  # TFLite ORs duplicate bool updates (true wins)
            np.logical_or.at(target, flat, values)
        else:
            np.add.at(target, flat, values)
        return out

    if shape.value is not None:
        out_shape = plan(shape.value)
        return Prepared(lambda i, u, _: scatter(i, u, out_shape),
                        [ctx.output_spec(0, out_shape, dtype)])
    return Prepared(lambda i, u, s: scatter(i, u, plan(s)), [ctx.output_spec(0, None, dtype)])


# -- DYNAMIC_UPDATE_SLICE --------------------------------------------------------------------


@op("DYNAMIC_UPDATE_SLICE", quantized=Quantized(SHARED, 1))
def dynamic_update_slice(ctx: OpContext) -> Prepared:
    """operand with `update` written at `start`; each start is clamped to
    [0, operand_dim - update_dim] (XLA's rule, which TFLite follows)."""
    ctx.expect_inputs(3)
    operand, update, start = ctx.input(0), ctx.input(1), ctx.input(2)
    ctx.expect_dtype(operand, *MOVABLE)
    ctx.expect_dtype(start, *INDEX)
    if update.dtype != operand.dtype:
        raise ctx.invalid(f"update is {update.dtype}, operand {operand.dtype}")
    if len(update.shape) != len(operand.shape) or any(
            u > o for u, o in zip(update.shape, operand.shape)):
        raise ctx.invalid(f"update of shape {update.shape} does not fit in {operand.shape}")
    if start.shape != (len(operand.shape),):
        raise ctx.invalid(f"start indices of shape {start.shape}; need ({len(operand.shape)},)")
    room = np.subtract(operand.shape, update.shape)

    def run(x, u, s):
        begin = np.clip(s.astype(np.int64), 0, room)
        out = x.copy()
        out[tuple(slice(b, b + n) for b, n in zip(begin, u.shape))] = u
        return out

    return Prepared(run, [ctx.output_spec(0, operand.shape, operand.dtype)])


# -- SPARSE_TO_DENSE -------------------------------------------------------------------------


# int8: values and default value share the output's parameters; indices stay int32
@op("SPARSE_TO_DENSE", quantized=Quantized(SHARED, 3))
def sparse_to_dense(ctx: OpContext) -> Prepared:
    """out = default everywhere, values[i] (or the one scalar value) at indices[i]."""
    ctx.expect_inputs(4)
    indices, shape, values, default = (ctx.input(i) for i in range(4))
    ctx.expect_dtype(indices, *INDEX)
    ctx.expect_dtype(shape, *INDEX)
    ctx.expect_dtype(values, "float32", "int8", "uint8", "int32", "int64")
    if default.dtype != values.dtype:
        raise ctx.invalid(f"default value is {default.dtype}, values {values.dtype}")
    ctx.expect_rank(indices, 0, 1, 2)
    dtype = values.dtype

    def dense(idx, out_shape, vals, fill):
        rows = idx.reshape(-1, 1) if idx.ndim < 2 else idx
        rows = rows.astype(np.int64)
        if rows.shape[1] != len(out_shape):
            raise data_error(ctx)(f"indices address {rows.shape[1]} dims of an output of rank "
                                  f"{len(out_shape)}")
        if vals.size not in (1, len(rows)):
            raise data_error(ctx)(f"{vals.size} values for {len(rows)} indices")
        _check_rows(data_error(ctx), rows, out_shape, "index")
        out = np.full(out_shape, fill.reshape(-1)[0], np.dtype(dtype))
        out[tuple(rows.T)] = vals.reshape(-1) if vals.size > 1 else vals.reshape(-1)[0]
        return out

    if shape.value is not None:
        out_shape = _shape_values(ctx.invalid, shape.value, "output shape")
        return Prepared(lambda i, _, v, d: dense(i, out_shape, v, d),
                        [ctx.output_spec(0, out_shape, dtype)])
    fail = data_error(ctx)
    return Prepared(lambda i, s, v, d: dense(i, _shape_values(fail, s, "output shape"), v, d),
                    [ctx.output_spec(0, None, dtype)])


# -- REVERSE_SEQUENCE ------------------------------------------------------------------------


@op("REVERSE_SEQUENCE")
def reverse_sequence(ctx: OpContext) -> Prepared:
    """For each b along batch_dim, the first seq_lengths[b] entries along seq_dim reversed."""
    ctx.expect_inputs(2)
    x, lengths = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(x, "float32", "uint8", "int16", "int32", "int64")  # TFLite: no int8
    ctx.expect_dtype(lengths, *INDEX)
    seq_dim = int(getattr(ctx.options, "seqDim", 0))
    batch_dim = int(getattr(ctx.options, "batchDim", 0))
    rank = len(x.shape)
    if not (0 <= seq_dim < rank and 0 <= batch_dim < rank) or seq_dim == batch_dim:
        raise ctx.invalid(f"seq_dim {seq_dim} and batch_dim {batch_dim} must be different axes "
                          f"of rank {rank}")
    if lengths.shape != (x.shape[batch_dim],):
        raise ctx.invalid(f"seq_lengths of shape {lengths.shape}; need ({x.shape[batch_dim]},)")
    fail = _fail_for(ctx, lengths)

    def run(values, seq_lengths):
        if np.any((seq_lengths < 0) | (seq_lengths > values.shape[seq_dim])):
            raise fail(f"seq_lengths {seq_lengths.tolist()} must lie in [0, "
                       f"{values.shape[seq_dim]}]")
        moved = np.moveaxis(values, (batch_dim, seq_dim), (0, 1))
        out = moved.copy()
        for b, n in enumerate(seq_lengths.tolist()):
            out[b, :n] = moved[b, :n][::-1]
        return np.ascontiguousarray(np.moveaxis(out, (0, 1), (batch_dim, seq_dim)))

    return Prepared(run, [ctx.output_spec(0, x.shape, x.dtype)])


# -- MATRIX_DIAG / MATRIX_SET_DIAG -----------------------------------------------------------


@op("MATRIX_DIAG", quantized=Quantized(SAME, 1))  # int8 values keep the input's parameters
def matrix_diag(ctx: OpContext) -> Prepared:
    """[..., n] -> [..., n, n] with the input on the main diagonal and zeros elsewhere."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    ctx.expect_dtype(x, *MOVABLE)
    if not x.shape:
        raise ctx.invalid("the diagonal must have rank >= 1")
    n = x.shape[-1]
    out_shape = x.shape + (n,)

    def run(d):
        out = np.zeros(out_shape, d.dtype)
        out[..., np.arange(n), np.arange(n)] = d
        return out

    return Prepared(run, [ctx.output_spec(0, out_shape, x.dtype)])


@op("MATRIX_SET_DIAG", quantized=Quantized(SHARED, 1))
def matrix_set_diag(ctx: OpContext) -> Prepared:
    """input [..., m, n] with its main diagonal replaced by diagonal [..., min(m, n)]."""
    ctx.expect_inputs(2)
    x, diagonal = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(x, *MOVABLE)
    if len(x.shape) < 2:
        raise ctx.invalid("the input must have rank >= 2")
    k = min(x.shape[-2:])
    if diagonal.dtype != x.dtype or tuple(diagonal.shape) != x.shape[:-2] + (k,):
        raise ctx.invalid(f"diagonal {diagonal.dtype} {diagonal.shape} does not fit "
                          f"{x.dtype} {x.shape}")

    def run(values, d):
        out = values.copy()
        out[..., np.arange(k), np.arange(k)] = d
        return out

    return Prepared(run, [ctx.output_spec(0, x.shape, x.dtype)])


# -- DILATE ----------------------------------------------------------------------------------


@op("DILATE", quantized=Quantized(SHARED, 1))  # int8: the padding value takes the input's
def dilate(ctx: OpContext) -> Prepared:
    """Spread the input: d - 1 copies of padding_value between neighbours along each axis of
    dilation d; output size (n - 1) * d + 1."""
    ctx.expect_inputs(3)
    x, dilations, padding = ctx.input(0), ctx.input(1), ctx.input(2)
    ctx.expect_dtype(x, *MOVABLE)
    ctx.expect_dtype(dilations, "int32")
    if padding.dtype != x.dtype:
        raise ctx.invalid(f"padding value is {padding.dtype}, input {x.dtype}")
    steps = [int(v) for v in np.ravel(ctx.constant(1, "dilations"))]
    if len(steps) != len(x.shape) or any(d < 1 for d in steps):
        raise ctx.invalid(f"dilations {steps} need one value >= 1 per input axis")
    shape = tuple((n - 1) * d + 1 if n else 0 for n, d in zip(x.shape, steps))

    def run(values, _, fill):
        out = np.full(shape, fill.reshape(-1)[0], values.dtype)
        out[tuple(slice(None, None, d) for d in steps)] = values
        return out

    return Prepared(run, [ctx.output_spec(0, shape, x.dtype)])
