"""Shape and data-movement ops: reshape, slice, gather, pad, concat and their relatives.

These ops move values without arithmetic, so one implementation serves every dtype; an int8
tensor keeps its quantization because the values are copied unchanged. The exceptions are
CONCATENATION of int8 inputs whose quantization differs from the output's (it requantizes) and
the padding ops, which pad quantized tensors with the output zero point (the code for 0.0).

Where an output shape depends on the values of an index tensor (begin/end, paddings, a new
shape...) and that tensor is only known at run time, prepare declares the shape as None and the
kernel works it out (and checks it) on every run. Every kernel returns C-contiguous arrays.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from ..errors import InputError
from ..runtime.registry import OpContext, Prepared, Spec
from .common import NONE, float_activation, fused_activation, is_quantized, quantized_path
from .opdef import SAME, SHARED, Quantized, op

DATA_TYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32",
              "uint32", "int64", "uint64", "bool", "complex64")
INDEX_TYPES = ("int32", "int64")
# TensorType codes that ops use to choose an integer output type
INDEX_TYPE_CODES = {2: "int32", 4: "int64"}


def _data(ctx: OpContext, i: int) -> Spec:
    spec = ctx.input(i)
    ctx.expect_dtype(spec, *DATA_TYPES)
    return spec


def _index_input(ctx: OpContext, i: int, *ranks: int, types=INDEX_TYPES) -> Spec:
    spec = ctx.input(i)
    ctx.expect_dtype(spec, *types)
    ctx.expect_rank(spec, *ranks)
    return spec


def _constant_ints(ctx: OpContext, i: int, what: str) -> list[int]:
    return [int(v) for v in np.ravel(ctx.constant(i, what))]


def _scalar(ctx: OpContext, i: int, what: str) -> int:
    values = _constant_ints(ctx, i, what)
    if len(values) != 1:
        raise ctx.invalid(f"{what} must hold one value, has {len(values)}")
    return values[0]


def _field(options, name: str, default):
    """An options field, or TFLite's default when the file left the options out."""
    value = getattr(options, name, None) if options is not None else None
    return default if value is None else value


def _option(ctx: OpContext, name: str, default):
    return _field(ctx.options, name, default)


def _run_error(ctx: OpContext):
    """`fail` for checks that can only run on the data: the model is fine, the values are not."""
    return lambda message: InputError(f"{ctx.where()}: {message}")


def _contiguous(x):
    return np.asarray(x, order="C")  # not ascontiguousarray: it turns scalars into [1]


def _identity(x):
    return x


def _same_quantization(a: Spec, b: Spec) -> bool:
    qa, qb = a.quantization, b.quantization
    if qa is None or qb is None:
        return qa is None and qb is None
    return np.array_equal(qa.scale, qb.scale) and np.array_equal(qa.zero_point, qb.zero_point)


def _pad_value(out: Spec):
    """What padding stands for 0.0: the output zero point for quantized tensors."""
    return out.zero_point if is_quantized(out) else 0


def _value_dependent(ctx: OpContext, plan, index_inputs, out_dtype: str, kernel) -> Prepared:
    """Prepare an op whose output shape depends on the values of its index inputs.

    `plan(fail, *index_values)` checks them and returns (output shape, *extras); the kernel is
    `kernel(arrays, shape, *extras)`. With constant index tensors the plan runs now and errors
    are the model's; otherwise the output shape is None and the plan runs on every call, with
    errors blamed on the data.
    """
    specs = [ctx.optional_input(i) for i in index_inputs]
    if all(s is None or s.value is not None for s in specs):
        shape, *extras = plan(ctx.invalid, *[None if s is None else s.value for s in specs])
        return Prepared(lambda *arrays: kernel(arrays, shape, *extras),
                        [ctx.output_spec(0, shape, out_dtype)])
    fail = _run_error(ctx)

    def run(*arrays):
        values = [arrays[i] if i < len(arrays) else None for i in index_inputs]
        shape, *extras = plan(fail, *values)
        return kernel(arrays, shape, *extras)

    return Prepared(run, [ctx.output_spec(0, None, out_dtype)])


# -- reshaping ------------------------------------------------------------------------------


def resolve_shape(fail, in_shape, requested) -> tuple[int, ...]:
    """TFLite's reshape rule: at most one -1, which takes whatever the other dims leave."""
    requested = [int(d) for d in np.ravel(requested)]
    total = int(np.prod(in_shape, dtype=np.int64))
    if requested.count(-1) > 1 or any(d < -1 for d in requested):
        raise fail(f"new shape {requested} may hold one -1 and otherwise sizes >= 0")
    known = int(np.prod([d for d in requested if d != -1], dtype=np.int64))
    if -1 in requested:
        stretch = total // known if known else 0
        requested[requested.index(-1)] = stretch
        known *= stretch
    if known != total:
        raise fail(f"cannot reshape {tuple(in_shape)} ({total} elements) to {requested}")
    return tuple(requested)


def _reshaped(arrays, shape):
    return arrays[0].reshape(shape)


@op("RESHAPE", quantized=Quantized(SAME, 1, int16=1))
def reshape(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1, 2)
    x = _data(ctx, 0)
    shape_input = ctx.optional_input(1)
    # TFLite reads the shape tensor only when it is a 1-D int32 vector, else the option
    if shape_input is not None and shape_input.rank == 1 and shape_input.dtype == "int32":
        return _value_dependent(ctx, lambda fail, shape: (resolve_shape(fail, x.shape, shape),),
                                [1], x.dtype, _reshaped)
    requested = list(_option(ctx, "newShape", []))
    if len(requested) == 1 and requested[0] == 0:
        requested = []  # legacy converters wrote [0] for a scalar
    out_shape = resolve_shape(ctx.invalid, x.shape, requested)
    return Prepared(lambda *arrays: _reshaped(arrays, out_shape),
                    [ctx.output_spec(0, out_shape, x.dtype)])


@op("SQUEEZE", quantized=Quantized(SAME, 1, int16=1))
def squeeze(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = _data(ctx, 0)
    dims = list(_option(ctx, "squeezeDims", []))
    if dims:
        axes = {ctx.axis(int(d), x.rank) for d in dims}
        wide = [a for a in sorted(axes) if x.shape[a] != 1]
        if wide:
            raise ctx.invalid(f"cannot squeeze axis {wide[0]} of shape {x.shape}: size is not 1")
    else:  # no dims: every size-1 axis
        axes = {a for a, d in enumerate(x.shape) if d == 1}
    out_shape = tuple(d for a, d in enumerate(x.shape) if a not in axes)
    return Prepared(lambda x: x.reshape(out_shape), [ctx.output_spec(0, out_shape, x.dtype)])


@op("EXPAND_DIMS", quantized=Quantized(SAME, 1, int16=1))
def expand_dims(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    x = _data(ctx, 0)
    _index_input(ctx, 1, 0, 1)
    axis = ctx.axis(_scalar(ctx, 1, "axis"), x.rank + 1)  # -1 appends
    out_shape = x.shape[:axis] + (1,) + x.shape[axis:]
    return Prepared(lambda x, _: x.reshape(out_shape), [ctx.output_spec(0, out_shape, x.dtype)])


@op("TRANSPOSE", quantized=Quantized(SAME, 2, int16=5))
def transpose(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    x = _data(ctx, 0)
    _index_input(ctx, 1, 1)
    perm = [int(p) + (x.rank if p < 0 else 0) for p in _constant_ints(ctx, 1, "permutation")]
    if sorted(perm) != list(range(x.rank)):
        raise ctx.invalid(f"{perm} is not a permutation of the {x.rank} axes")
    out_shape = tuple(x.shape[p] for p in perm)
    return Prepared(lambda x, _: _contiguous(x.transpose(perm)),
                    [ctx.output_spec(0, out_shape, x.dtype)])


# -- joining and splitting ------------------------------------------------------------------


def _check_joinable(ctx: OpContext, specs: list[Spec], skip_axis: int | None) -> None:
    """Same dtype and shape (except along skip_axis) for every input."""
    first = specs[0]
    for s in specs[1:]:
        if s.dtype != first.dtype:
            raise ctx.invalid(f"inputs mix {first.dtype} and {s.dtype}")
        same = s.rank == first.rank and all(
            a == b for i, (a, b) in enumerate(zip(s.shape, first.shape)) if i != skip_axis)
        if not same:
            raise ctx.invalid(f"input shapes {first.shape} and {s.shape} do not fit together")


@op("CONCATENATION", quantized=Quantized(SHARED, 2, int16=3))
def concatenation(ctx: OpContext) -> Prepared:
    if not ctx.inputs:
        raise ctx.invalid("needs at least one input")
    specs = [_data(ctx, i) for i in range(len(ctx.inputs))]
    axis = ctx.axis(_option(ctx, "axis", 0), specs[0].rank)
    _check_joinable(ctx, specs, axis)
    out = ctx.output_spec(0, (), specs[0].dtype)
    if any(is_quantized(s) for s in specs) and not all(
            _same_quantization(s, out) for s in specs):
        return quantized_path(ctx, "shape")  # requantizes each input to the output's scale
    out_shape = list(specs[0].shape)
    out_shape[axis] = sum(s.shape[axis] for s in specs)
    # TFLite 2.21 refuses a fused activation here; qengine applies it to float outputs
    if fused_activation(ctx) == NONE:
        activation = _identity
    elif specs[0].dtype == "float32":
        activation = float_activation(ctx)
    else:
        raise ctx.unsupported(f"a fused activation on {specs[0].dtype} concatenation")

    def run(*arrays):
        return activation(np.concatenate(arrays, axis=axis))

    return Prepared(run, [ctx.output_spec(0, out_shape, specs[0].dtype)])


@op("PACK", quantized=Quantized(SHARED, 2, int16=3))
def pack(ctx: OpContext) -> Prepared:
    if not ctx.inputs:
        raise ctx.invalid("needs at least one input")
    specs = [_data(ctx, i) for i in range(len(ctx.inputs))]
    count = _option(ctx, "valuesCount", len(specs))
    if count != len(specs):
        raise ctx.invalid(f"valuesCount {count} but {len(specs)} inputs")
    _check_joinable(ctx, specs, None)
    axis = ctx.axis(_option(ctx, "axis", 0), specs[0].rank + 1)
    out = ctx.output_spec(0, (), specs[0].dtype)
    if any(is_quantized(s) for s in specs) and not all(
            _same_quantization(s, out) for s in specs):
        raise ctx.invalid("TFLite packs quantized tensors only with the output's quantization")
    out_shape = specs[0].shape[:axis] + (len(specs),) + specs[0].shape[axis:]
    return Prepared(lambda *arrays: np.stack(arrays, axis=axis),
                    [ctx.output_spec(0, out_shape, specs[0].dtype)])


@op("UNPACK", quantized=Quantized(SAME, 2, int16=4))
def unpack(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = _data(ctx, 0)
    if x.rank == 0:
        raise ctx.invalid("cannot unpack a scalar")
    axis = ctx.axis(_option(ctx, "axis", 0), x.rank)
    num = _option(ctx, "num", x.shape[axis])
    if num != x.shape[axis] or num != len(ctx.outputs):
        raise ctx.invalid(f"unpacks axis {axis} of size {x.shape[axis]} into num={num} and "
                          f"{len(ctx.outputs)} outputs")
    out_shape = x.shape[:axis] + x.shape[axis + 1:]

    def run(x):
        return tuple(_contiguous(np.take(x, i, axis=axis)) for i in range(num))

    return Prepared(run, [ctx.output_spec(i, out_shape, x.dtype) for i in range(num)])


def _check_split_count(ctx: OpContext, count: int) -> None:
    declared = _option(ctx, "numSplits", count)
    if count < 1 or declared != count or len(ctx.outputs) != count:
        raise ctx.invalid(f"splits into {count} pieces, numSplits is {declared}, and there are "
                          f"{len(ctx.outputs)} outputs")


@op("SPLIT", quantized=Quantized(SAME, 2, int16=4))
def split(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    _index_input(ctx, 0, 0, 1, types=("int32",))  # the axis comes first
    x = _data(ctx, 1)
    axis = ctx.axis(_scalar(ctx, 0, "axis"), x.rank)
    count = len(ctx.outputs)
    _check_split_count(ctx, count)
    if x.shape[axis] % count:
        raise ctx.invalid(f"axis {axis} of size {x.shape[axis]} does not split into {count}")
    return _split_along(x, axis, [x.shape[axis] // count] * count, ctx, 1)


@op("SPLIT_V", quantized=Quantized(SAME, 2, int16=2))
def split_v(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(3)
    x = _data(ctx, 0)
    _index_input(ctx, 1, 1)
    _index_input(ctx, 2, 0, 1, types=("int32",))
    axis = ctx.axis(_scalar(ctx, 2, "axis"), x.rank)
    sizes = _constant_ints(ctx, 1, "size_splits")
    _check_split_count(ctx, len(sizes))
    if sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        raise ctx.invalid(f"size_splits {sizes} may hold one -1 and otherwise sizes >= 0")
    rest = x.shape[axis] - sum(s for s in sizes if s != -1)
    if -1 in sizes and rest >= 0:
        sizes[sizes.index(-1)] = rest
    if sum(sizes) != x.shape[axis]:
        raise ctx.invalid(f"size_splits {sizes} do not add up to {x.shape[axis]}")
    return _split_along(x, axis, sizes, ctx, 0)


def _split_along(x: Spec, axis: int, sizes: list[int], ctx: OpContext, x_index: int):
    bounds = np.cumsum([0] + sizes)

    def run(*arrays):
        data = arrays[x_index]
        index = [slice(None)] * data.ndim
        pieces = []
        for a, b in pairwise(bounds):
            index[axis] = slice(int(a), int(b))
            pieces.append(_contiguous(data[tuple(index)]))
        return tuple(pieces)

    def shape_with(size):
        return x.shape[:axis] + (size,) + x.shape[axis + 1:]

    return Prepared(run, [ctx.output_spec(i, shape_with(s), x.dtype)
                          for i, s in enumerate(sizes)])


# -- slicing --------------------------------------------------------------------------------


@op("SLICE", quantized=Quantized(SAME, 2, int16=4))
def slice_(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(3)
    x = _data(ctx, 0)
    for i in (1, 2):
        spec = _index_input(ctx, i, 1)
        if spec.shape[0] != x.rank:
            raise ctx.invalid(f"begin and size need {x.rank} values, input {i} has "
                              f"{spec.shape[0]}")

    def plan(fail, begin, size):
        index, out_shape = [], []
        for dim, b, s in zip(x.shape, np.ravel(begin), np.ravel(size)):
            b, s = int(b), int(s)
            s = dim - b if s == -1 else s  # -1: everything from begin on
            if b < 0 or s < 0 or b + s > dim:
                raise fail(f"slice [{b}, {b}+{s}) does not fit in a dim of size {dim}")
            index.append(slice(b, b + s))
            out_shape.append(s)
        return tuple(out_shape), tuple(index)

    return _value_dependent(ctx, plan, [1, 2], x.dtype,
                            lambda arrays, shape, index: _contiguous(arrays[0][index]))


def _bit(mask: int, i: int) -> bool:
    return bool(mask >> i & 1) if i >= 0 else False


def _expand_ellipsis(ellipsis: int, new_axis: int, count: int, rank: int):
    """Which effective dims the ellipsis covers and which are new axes (TFLite's rules).

    The effective input has one extra size-1 dim per new axis outside the ellipsis. An ellipsis
    covers the dims that begin/end/strides leave unspecified, and always at least one.
    """
    num_new = sum(_bit(new_axis, i) and not _bit(ellipsis, i) for i in range(count))
    dims = rank + num_new
    covered, new_axes = set(), set()
    ellipsis_start, expanded, i = dims, 0, 0
    while i < dims:
        if _bit(ellipsis, i):
            ellipsis_start = i
            stop = max(i + 1, min(i + 1 + num_new + rank - count, dims))
            expanded = stop - i - 1
            covered.update(range(i, stop))
            i = stop
            continue
        if _bit(new_axis, i - expanded):
            new_axes.add(i)
        i += 1
    return dims, covered, new_axes, ellipsis_start, expanded


def _strided_start(begin: int, stride: int, size: int, masked: bool) -> int:
    """StridedSliceStartForAxis: negative indices wrap, then clamp to the iteration range."""
    if masked:
        return 0 if stride > 0 else size - 1
    begin += size if begin < 0 else 0
    return min(max(begin, 0), size) if stride > 0 else min(max(begin, -1), size - 1)


def _strided_stop(end: int, start: int, stride: int, size: int, masked: bool,
                  offset: bool) -> int:
    """StridedSliceEndForAxis (non-shrinking axes); with `offset`, end counts from start."""
    if masked:
        return size if stride > 0 else -1
    end += start if offset else 0
    end += size if end < 0 else 0
    return min(max(end, 0), size) if stride > 0 else min(max(end, -1), size - 1)


def _strided_range(start: int, count: int, stride: int) -> slice:
    """A Python slice taking `count` elements from `start` in steps of `stride`."""
    if count <= 0:
        return slice(0, 0)
    last = start + stride * (count - 1)
    if stride > 0:
        return slice(start, last + 1, stride)
    return slice(start, last - 1 if last >= 1 else None, stride)


def strided_slice_plan(fail, in_shape, begin, end, strides, options) -> tuple:
    """(output shape, effective input shape, slices) exactly as TFLite's strided_slice.cc.

    Ellipsis and new axes are first rewritten into an effective input (new axes become size-1
    dims, ellipsis dims get begin and end masks); then each effective dim is sliced like
    Python's start:stop:stride after TFLite's clamping, and shrunk dims are dropped.
    """
    begin, end, strides = (np.ravel(v).astype(np.int64).tolist() for v in (begin, end, strides))
    count, rank = len(begin), len(in_shape)
    if not len(end) == len(strides) == count:
        raise fail(f"begin, end and strides have {count}, {len(end)} and {len(strides)} values")
    begin_mask, end_mask = _field(options, "beginMask", 0), _field(options, "endMask", 0)
    ellipsis, new_axis = _field(options, "ellipsisMask", 0), _field(options, "newAxisMask", 0)
    shrink, offset = _field(options, "shrinkAxisMask", 0), _field(options, "offset", False)
    if (ellipsis & ((1 << count) - 1)).bit_count() > 1:
        raise fail(f"ellipsis_mask {ellipsis:#b} marks more than one ellipsis")
    dims, covered, new_axes, ellipsis_start, expanded = _expand_ellipsis(
        ellipsis, new_axis, count, rank)
    if count > dims + (1 if ellipsis else 0):
        raise fail(f"{count} slice specs for an input of rank {rank}")
    eff_shape, slices, out_shape = [], [], []
    added_ellipsis = added_axes = 0
    for i in range(dims):
        if i in new_axes:
            eff_shape.append(1)
            slices.append(slice(0, 1))
            out_shape.append(1)
            added_axes += 1
            continue
        size = in_shape[i - added_axes]
        eff_shape.append(size)
        if i in covered or i >= count + expanded:  # the whole dim
            if i in covered:
                added_ellipsis = max(0, i - ellipsis_start)
            slices.append(slice(None))
            out_shape.append(size)
            continue
        spec = i - added_ellipsis
        stride = strides[spec]
        if stride == 0:
            raise fail("a stride is 0")
        start = _strided_start(begin[spec], stride, size, _bit(begin_mask, spec))
        if _bit(shrink, spec):
            if stride < 0 or start >= size:
                raise fail(f"shrunk index {begin[spec]} (stride {stride}) is outside a dim of "
                           f"size {size}")
            slices.append(slice(start, start + 1))
            continue
        stop = _strided_stop(end[spec], start, stride, size, _bit(end_mask, spec), offset)
        n = max(0, -((start - stop) // stride))  # ceil((stop - start) / stride)
        slices.append(_strided_range(start, n, stride))
        out_shape.append(n)
    return tuple(out_shape), tuple(eff_shape), tuple(slices)


@op("STRIDED_SLICE", quantized=Quantized(SAME, 2, int16=2))
def strided_slice(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(4)
    x = _data(ctx, 0)
    for i in (1, 2, 3):
        _index_input(ctx, i, 1)

    def plan(fail, begin, end, strides):
        return strided_slice_plan(fail, x.shape, begin, end, strides, ctx.options)

    def kernel(arrays, shape, eff_shape, slices):
        return _contiguous(arrays[0].reshape(eff_shape)[slices].reshape(shape))

    return _value_dependent(ctx, plan, [1, 2, 3], x.dtype, kernel)


# -- gathering ------------------------------------------------------------------------------


def _check_indices(fail, indices: np.ndarray, limit: int, what: str) -> None:
    bad = (indices < 0) | (indices >= limit)
    if bad.any():
        raise fail(f"{what} {int(indices[bad].flat[0])} is outside [0, {limit})")


@op("GATHER", quantized=Quantized(SAME, 2, int16=4))
def gather(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    params = _data(ctx, 0)
    indices = _index_input(ctx, 1, *range(9), types=("int16", "int32", "int64"))
    axis = ctx.axis(_option(ctx, "axis", 0), params.rank)
    batch_dims = _option(ctx, "batchDims", 0)
    batch_dims += indices.rank if batch_dims < 0 else 0
    if not 0 <= batch_dims <= min(axis, indices.rank):
        raise ctx.invalid(f"batch_dims {batch_dims} must be in [0, min(axis {axis}, indices "
                          f"rank {indices.rank})]")
    if params.shape[:batch_dims] != indices.shape[:batch_dims]:
        raise ctx.invalid(f"batch dims of params {params.shape} and indices {indices.shape} "
                          f"differ")
    limit = params.shape[axis]
    if indices.value is not None:
        _check_indices(ctx.invalid, indices.value, limit, "gather index")
    fail = _run_error(ctx)
    out_shape = params.shape[:axis] + indices.shape[batch_dims:] + params.shape[axis + 1:]
    batch = int(np.prod(params.shape[:batch_dims], dtype=np.int64))

    checked = indices.value is not None  # constant indices were checked above, once

    def run(p, idx):
        if not checked:
            _check_indices(fail, idx, limit, "gather index")  # NumPy would wrap negative ones
        if batch_dims == 0:
            return np.take(p, idx, axis=axis)
        p = p.reshape((batch,) + p.shape[batch_dims:])
        idx = idx.reshape((batch,) + idx.shape[batch_dims:])
        out = np.empty((batch,) + out_shape[batch_dims:], p.dtype)
        for b in range(batch):
            out[b] = np.take(p[b], idx[b], axis=axis - batch_dims)
        return out.reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, params.dtype)])


@op("GATHER_ND")
def gather_nd(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    params = _data(ctx, 0)
    indices = _index_input(ctx, 1, *range(1, 9), types=("int16", "int32", "int64"))
    depth = indices.shape[-1]  # how many leading params dims each index addresses
    if depth > params.rank:
        raise ctx.invalid(f"indices address {depth} dims of params of rank {params.rank}")
    limits = np.array(params.shape[:depth], np.int64)
    if indices.value is not None:
        _check_nd_indices(ctx.invalid, indices.value, limits)
    fail = _run_error(ctx)
    out_shape = indices.shape[:-1] + params.shape[depth:]

    def run(p, idx):
        _check_nd_indices(fail, idx, limits)
        rows = idx.reshape(-1, depth)
        picked = p[tuple(rows.T)] if depth else np.broadcast_to(p, (len(rows),) + p.shape)
        return _contiguous(picked.reshape(out_shape))

    return Prepared(run, [ctx.output_spec(0, out_shape, params.dtype)])


def _check_nd_indices(fail, indices: np.ndarray, limits: np.ndarray) -> None:
    bad = (indices < 0) | (indices >= limits)
    if bad.any():
        row = indices.reshape(-1, len(limits))[np.any(bad.reshape(-1, len(limits)), axis=1)][0]
        raise fail(f"gather_nd index {row.tolist()} is outside the params shape "
                   f"{limits.tolist()}")


# -- repeating and filling ------------------------------------------------------------------


@op("TILE", quantized=Quantized(SAME, 2, int16=2))
def tile(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    x = _data(ctx, 0)
    multiples = _index_input(ctx, 1, 1)
    if multiples.shape[0] != x.rank:
        raise ctx.invalid(f"{multiples.shape[0]} multiples for an input of rank {x.rank}")

    def plan(fail, reps):
        reps = [int(r) for r in np.ravel(reps)]
        if any(r < 0 for r in reps):
            raise fail(f"multiples {reps} must be >= 0")
        return tuple(d * r for d, r in zip(x.shape, reps)), tuple(reps)

    return _value_dependent(ctx, plan, [1], x.dtype,
                            lambda arrays, shape, reps: np.tile(arrays[0], reps))


@op("BROADCAST_TO", quantized=Quantized(SAME, 2, int16=3))
def broadcast_to(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    x = _data(ctx, 0)
    _index_input(ctx, 1, 1)

    def plan(fail, shape):
        shape = tuple(int(d) for d in np.ravel(shape))
        padded = (1,) * (len(shape) - x.rank) + x.shape
        if len(shape) < x.rank or any(a not in (1, b) for a, b in zip(padded, shape)):
            raise fail(f"cannot broadcast {x.shape} to {shape}")
        return (shape,)

    return _value_dependent(ctx, plan, [1], x.dtype,
                            lambda arrays, shape: _contiguous(np.broadcast_to(arrays[0], shape)))


@op("FILL")
def fill(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    _index_input(ctx, 0, 1)
    value = _data(ctx, 1)
    if value.shape not in ((), (1,)):
        raise ctx.invalid(f"the fill value must be a scalar, has shape {value.shape}")

    def plan(fail, dims):
        dims = tuple(int(d) for d in np.ravel(dims))
        if any(d < 0 for d in dims):
            raise fail(f"dims {dims} must be >= 0")
        return (dims,)

    return _value_dependent(ctx, plan, [0], value.dtype,
                            lambda arrays, shape: np.full(shape, arrays[1].reshape(()),
                                                          arrays[1].dtype))


# -- padding --------------------------------------------------------------------------------


def _pad_plan(x: Spec, most: int | None = None):
    """Check a [rank, 2] paddings tensor; `most` is the per-side limit as a dim offset."""
    def plan(fail, paddings):
        pads = np.asarray(paddings, np.int64).reshape(-1, 2)
        if len(pads) != x.rank:
            raise fail(f"paddings has {len(pads)} rows for an input of rank {x.rank}")
        if (pads < 0).any():
            raise fail(f"paddings {pads.tolist()} must be >= 0")
        for dim, (a, b) in zip(x.shape, pads.tolist()):
            if most is not None and max(a, b) > dim + most:
                raise fail(f"padding {max(a, b)} is too large for a dim of size {dim}")
        shape = tuple(int(d + a + b) for d, (a, b) in zip(x.shape, pads.tolist()))
        return shape, tuple(map(tuple, pads.tolist()))
    return plan


def _check_paddings(ctx: OpContext, x: Spec, i: int) -> None:
    paddings = _index_input(ctx, i, 2)
    if paddings.shape[1] != 2:
        raise ctx.invalid(f"paddings must have shape [rank, 2], has {paddings.shape}")


@op("PAD", quantized=Quantized(SAME, 2, int16=3))
def pad(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    return _pad_with_zero(ctx, _data(ctx, 0))


def _pad_with_zero(ctx: OpContext, x: Spec) -> Prepared:
    _check_paddings(ctx, x, 1)
    fill_value = _pad_value(ctx.output_spec(0, ()))

    def kernel(arrays, shape, pads):
        return constant_pad(arrays[0], pads, shape, fill_value, ctx.num_threads)

    return _value_dependent(ctx, _pad_plan(x), [1], x.dtype, kernel)


def constant_pad(x: np.ndarray, pads, shape, value, threads: int = 1) -> np.ndarray:
    """np.pad(x, pads, constant_values=value). NHWC tensors padded along H, W, C:
    kernels/pad.py, one pass over the output (rows split between threads when large) for
    float32, and for other types when split. Else two NumPy passes: fill the padded slabs, copy
    x into the middle (np.pad takes about twice as long on NHWC). On one thread the kernel
    halves a channel pad's time (48x48x16 -> 32 float32: 28 -> 14 us; NumPy copies runs of 16
    values), which MediaPipe's float and dynamic-range models do between blocks; integer PADs
    keep NumPy there, so an int8 model's first run compiles no pad kernel (~0.4 s)."""
    from qengine.kernels import threads as pool

    nhwc = x.ndim == 4 and tuple(pads[0]) == (0, 0) and x.dtype.kind in "biuf"
    if nhwc and (x.dtype == np.float32
                 or pool.worth_splitting(threads, pool.STREAM_FLOPS * int(np.prod(shape)))):
        from qengine.kernels.pad import pad_nhwc

        return pad_nhwc(x, pads, value, threads)
    out = np.empty(shape, x.dtype)
    for axis, (before, after) in enumerate(pads):
        lead = (slice(None),) * axis
        if before:
            out[(*lead, slice(0, before))] = value
        if after:
            out[(*lead, slice(before + x.shape[axis], None))] = value
    out[tuple(slice(a, a + d) for (a, _), d in zip(pads, x.shape))] = x
    return out


@op("PADV2", quantized=Quantized(SAME, 2, int16=3, pad_value=2))
def padv2(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2, 3)
    x = _data(ctx, 0)
    value = ctx.optional_input(2)
    if value is None:
        return _pad_with_zero(ctx, x)
    _check_paddings(ctx, x, 1)
    ctx.expect_dtype(value, x.dtype)
    if value.value is not None and value.value.size != 1:
        raise ctx.invalid(f"the pad value must be a scalar, has shape {value.shape}")
    if is_quantized(x) and not _same_quantization(value, ctx.output_spec(0, ())):
        raise ctx.invalid("the quantized pad value needs the output's quantization")

    def kernel(arrays, shape, pads):
        return constant_pad(arrays[0], pads, shape, arrays[2].reshape(()), ctx.num_threads)

    return _value_dependent(ctx, _pad_plan(x), [1], x.dtype, kernel)


@op("MIRROR_PAD", quantized=Quantized(SAME, 2, int16=3))
def mirror_pad(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    x = _data(ctx, 0)
    _check_paddings(ctx, x, 1)
    mode = _option(ctx, "mode", 0)
    if mode not in (0, 1):
        raise ctx.invalid(f"unknown mirror pad mode {mode}")
    # REFLECT (0) skips the edge value, so it can add at most dim - 1; SYMMETRIC (1) repeats it
    numpy_mode = ("reflect", "symmetric")[mode]

    def kernel(arrays, shape, pads):
        return np.pad(arrays[0], pads, mode=numpy_mode)

    return _value_dependent(ctx, _pad_plan(x, most=-1 if mode == 0 else 0), [1], x.dtype,
                            kernel)


# -- shape queries --------------------------------------------------------------------------


@op("SHAPE", reads_shape_only=True)
def shape(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = ctx.input(0)
    dtype = INDEX_TYPE_CODES.get(_option(ctx, "outType", 2))
    if dtype is None:
        raise ctx.invalid(f"SHAPE out_type {_option(ctx, 'outType', 2)} is not int32 or int64")
    # the value is known now: later ops (STRIDED_SLICE, PACK, RESHAPE) can be folded with it
    value = np.array(x.shape, dtype).reshape(x.rank)
    return Prepared(lambda x: np.array(x.shape, dtype).reshape(x.ndim),
                    [ctx.output_spec(0, (x.rank,), dtype, value=value)])


@op("RANK", reads_shape_only=True)
def rank(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = ctx.input(0)
    return Prepared(lambda x: np.array(x.ndim, np.int32),
                    [ctx.output_spec(0, (), "int32", value=np.array(x.rank, np.int32))])


# -- moving blocks between space, depth and batch -------------------------------------------


def _block_size(ctx: OpContext) -> int:
    block = _option(ctx, "blockSize", 0)
    if block < 1:
        raise ctx.invalid(f"block size {block} must be >= 1")
    return block


@op("DEPTH_TO_SPACE", quantized=Quantized(SAME, 1))
def depth_to_space(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = _data(ctx, 0)
    ctx.expect_rank(x, 4)
    bs = _block_size(ctx)
    n, h, w, c = x.shape
    if c % (bs * bs):
        raise ctx.invalid(f"depth {c} is not a multiple of block size {bs} squared")
    depth = c // (bs * bs)
    out_shape = (n, h * bs, w * bs, depth)

    def run(x):  # out[n, h*bs + i, w*bs + j, d] = in[n, h, w, (i*bs + j)*depth + d]
        blocks = x.reshape(n, h, w, bs, bs, depth).transpose(0, 1, 3, 2, 4, 5)
        return _contiguous(blocks).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, x.dtype)])


@op("SPACE_TO_DEPTH", quantized=Quantized(SAME, 2))
def space_to_depth(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = _data(ctx, 0)
    ctx.expect_rank(x, 4)
    bs = _block_size(ctx)
    n, h, w, c = x.shape
    if h % bs or w % bs:
        raise ctx.invalid(f"height {h} and width {w} must be multiples of block size {bs}")
    out_shape = (n, h // bs, w // bs, bs * bs * c)

    def run(x):  # the inverse of DEPTH_TO_SPACE
        blocks = x.reshape(n, h // bs, bs, w // bs, bs, c).transpose(0, 1, 3, 2, 4, 5)
        return _contiguous(blocks).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, x.dtype)])


def _block_shape(ctx: OpContext, x: Spec, what: str) -> tuple[list[int], np.ndarray]:
    """The block_shape [M] and the [M, 2] crops/paddings of the *_ND ops, checked."""
    _index_input(ctx, 1, 1)
    _index_input(ctx, 2, 2)
    block = _constant_ints(ctx, 1, "block_shape")
    pairs = np.asarray(ctx.constant(2, what), np.int64)
    m = len(block)
    if pairs.shape != (m, 2) or x.rank < m + 1:
        raise ctx.invalid(f"block_shape {block} and {what} {pairs.shape} do not fit an input "
                          f"of shape {x.shape}")
    if any(b < 1 for b in block) or (pairs < 0).any():
        raise ctx.invalid(f"block_shape {block} must be >= 1 and {what} >= 0")
    return block, pairs


@op("BATCH_TO_SPACE_ND", quantized=Quantized(SAME, 2, int16=4))
def batch_to_space_nd(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(3)
    x = _data(ctx, 0)
    block, crops = _block_shape(ctx, x, "crops")
    m, blocks = len(block), int(np.prod(block))
    batch, spatial, rest = x.shape[0], x.shape[1:1 + m], x.shape[1 + m:]
    if batch % blocks:
        raise ctx.invalid(f"batch {batch} is not a multiple of the block count {blocks}")
    full = [s * b for s, b in zip(spatial, block)]
    out_spatial = [f - a - b for f, (a, b) in zip(full, crops.tolist())]
    if any(s < 0 for s in out_spatial):
        raise ctx.invalid(f"crops {crops.tolist()} remove more than {full}")
    out_shape = (batch // blocks, *out_spatial, *rest)
    # [block..., batch', spatial..., rest] -> [batch', spatial0, block0, spatial1, block1, rest]
    order = [m] + [i for k in range(m) for i in (m + 1 + k, k)] + \
        list(range(2 * m + 1, 2 * m + 1 + len(rest)))
    crop = (slice(None),) + tuple(slice(a, a + s) for (a, _), s in
                                  zip(crops.tolist(), out_spatial))

    def run(x, *_):
        y = x.reshape(*block, batch // blocks, *spatial, *rest).transpose(order)
        return _contiguous(y.reshape(batch // blocks, *full, *rest)[crop])

    return Prepared(run, [ctx.output_spec(0, out_shape, x.dtype)])


@op("SPACE_TO_BATCH_ND", quantized=Quantized(SAME, 2, int16=4))
def space_to_batch_nd(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(3)
    x = _data(ctx, 0)
    block, pads = _block_shape(ctx, x, "paddings")
    m, blocks = len(block), int(np.prod(block))
    batch, spatial, rest = x.shape[0], x.shape[1:1 + m], x.shape[1 + m:]
    padded = [s + a + b for s, (a, b) in zip(spatial, pads.tolist())]
    if any(p % b for p, b in zip(padded, block)):
        raise ctx.invalid(f"padded spatial shape {padded} is not a multiple of {block}")
    reduced = [p // b for p, b in zip(padded, block)]
    out_shape = (batch * blocks, *reduced, *rest)
    width = [(0, 0)] + pads.tolist() + [(0, 0)] * len(rest)
    fill_value = _pad_value(ctx.output_spec(0, ()))
    # [batch, reduced0, block0, ..., rest] -> [block0, ..., batch, reduced0, ..., rest]
    order = [2 + 2 * k for k in range(m)] + [0] + [1 + 2 * k for k in range(m)] + \
        list(range(1 + 2 * m, 1 + 2 * m + len(rest)))
    split = [batch] + [d for r, b in zip(reduced, block) for d in (r, b)] + list(rest)

    def run(x, *_):
        y = np.pad(x, width, constant_values=fill_value).reshape(split).transpose(order)
        return _contiguous(y).reshape(out_shape)

    return Prepared(run, [ctx.output_spec(0, out_shape, x.dtype)])


# -- reordering and searching ---------------------------------------------------------------


@op("REVERSE_V2")
def reverse_v2(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    x = _data(ctx, 0)
    _index_input(ctx, 1, 1)
    axes = [ctx.axis(a, x.rank) for a in _constant_ints(ctx, 1, "axis")]
    if len(set(axes)) != len(axes):
        raise ctx.invalid(f"axis {axes} repeats an axis")
    return Prepared(lambda x, _: _contiguous(np.flip(x, axes)),
                    [ctx.output_spec(0, x.shape, x.dtype)])


@op("WHERE")
def where(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    condition = _data(ctx, 0)
    # [number of true (non-zero) elements, rank], in row-major order
    shape = None
    if condition.value is not None:
        shape = (int(np.count_nonzero(condition.value)), condition.rank)
    return Prepared(lambda c: np.argwhere(c).astype(np.int64),
                    [ctx.output_spec(0, shape, "int64")])


@op("CUMSUM")
def cumsum(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    x = ctx.input(0)
    if is_quantized(x):
        raise ctx.unsupported("CUMSUM of quantized tensors")
    ctx.expect_dtype(x, "float32", "int32", "int64")
    _index_input(ctx, 1, 0, 1, types=("int32",))
    axis = ctx.axis(_scalar(ctx, 1, "axis"), x.rank)
    exclusive, reverse = _option(ctx, "exclusive", False), _option(ctx, "reverse", False)
    dtype = np.dtype(x.dtype)

    def run(x, _):
        # a running sum in the input type, element by element as TFLite's reference CumSum
        if reverse:
            x = np.flip(x, axis)
        out = np.cumsum(x, axis=axis, dtype=dtype)
        if exclusive:  # out[i] = sum of x[:i]: shift by one and start at 0
            out = np.concatenate([np.zeros_like(np.take(out, [0], axis)),
                                  np.delete(out, -1, axis)], axis) if x.shape[axis] else out
        return _contiguous(np.flip(out, axis) if reverse else out)

    return Prepared(run, [ctx.output_spec(0, x.shape, x.dtype)])


@op("ONE_HOT")
def one_hot(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(4)
    indices = _index_input(ctx, 0, *range(8))
    _index_input(ctx, 1, 0, 1, types=("int32",))
    on, off = _data(ctx, 2), _data(ctx, 3)
    if on.dtype != off.dtype:
        raise ctx.invalid(f"on_value is {on.dtype} but off_value is {off.dtype}")
    axis = _option(ctx, "axis", -1)
    if not -1 <= axis <= indices.rank:
        raise ctx.invalid(f"axis {axis} is out of range for indices of rank {indices.rank}")
    axis = indices.rank if axis == -1 else axis

    def plan(fail, depth):
        depth = int(np.ravel(depth)[0])
        if depth < 0:
            raise fail(f"depth {depth} must be >= 0")
        return (indices.shape[:axis] + (depth,) + indices.shape[axis:],)

    def kernel(arrays, shape, *_):
        idx, _, on_value, off_value = arrays
        classes = np.arange(shape[axis]).reshape((-1,) + (1,) * (len(shape) - axis - 1))
        hot = np.expand_dims(idx, axis) == classes  # out-of-range indices match nothing
        return np.where(hot, on_value.reshape(()), off_value.reshape(())).astype(on.dtype)

    return _value_dependent(ctx, plan, [1], on.dtype, kernel)


@op("RANGE")
def range_(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(3)
    specs = [ctx.input(i) for i in range(3)]
    dtype = specs[0].dtype
    ctx.expect_dtype(specs[0], "int32", "int64", "float32")
    for s in specs:
        if s.dtype != dtype or s.shape not in ((), (1,)):
            raise ctx.invalid("start, limit and delta must be scalars of one type")
    np_type = np.dtype(dtype)

    def plan(fail, start, limit, delta):
        start, limit, delta = (np_type.type(np.ravel(v)[0]) for v in (start, limit, delta))
        if delta == 0 or (start < limit and delta < 0) or (start > limit and delta > 0):
            raise fail(f"range({start}, {limit}, {delta}) does not move towards its limit")
        if np_type.kind == "f":  # ceil(|(limit - start) / delta|) in float32
            size = int(np.ceil(np.abs((limit - start) / delta)))
        else:
            size = int((abs(int(limit) - int(start)) + abs(int(delta)) - 1) // abs(int(delta)))
        return (size,), start, delta

    def kernel(arrays, shape, start, delta):
        # value = start; repeatedly value += delta, accumulating in the output type
        steps = np.full(shape, delta, np_type)
        if steps.size:
            steps[0] = start
        return np.cumsum(steps, dtype=np_type)

    return _value_dependent(ctx, plan, [0, 1, 2], dtype, kernel)


def _arg_reduce(ctx: OpContext, pick) -> Prepared:
    ctx.expect_inputs(2)
    x = _data(ctx, 0)
    _index_input(ctx, 1, 0, 1)
    axis = ctx.axis(_scalar(ctx, 1, "axis"), x.rank)
    code = _option(ctx, "outputType", None)
    dtype = INDEX_TYPE_CODES.get(code) if code is not None else ctx.outputs[0].dtype
    if dtype not in INDEX_TYPES:
        raise ctx.invalid(f"output type {dtype or code} is not int32 or int64")
    out_shape = x.shape[:axis] + x.shape[axis + 1:]
    # NumPy returns the first index among ties, as TFLite's strict comparison does
    return Prepared(lambda x, _: pick(x, axis=axis).astype(dtype),
                    [ctx.output_spec(0, out_shape, dtype)])


@op("ARG_MAX")
def arg_max(ctx: OpContext) -> Prepared:
    return _arg_reduce(ctx, np.argmax)


@op("ARG_MIN")
def arg_min(ctx: OpContext) -> Prepared:
    return _arg_reduce(ctx, np.argmin)
