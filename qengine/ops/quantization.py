"""QUANTIZE, DEQUANTIZE and DENSIFY: moving between real numbers, integers and sparse storage.

    real = scale * (q - zero_point)

DEQUANTIZE of a constant (float16 or int8 weights) and DENSIFY of a sparse constant fold at
prepare time, as in TFLite: "float16 weights are upsampled to float32 prior to the first
inference".
"""

from __future__ import annotations

import numpy as np

from ..ir import numpy_dtype
from ..qparams import QUANTIZED_TYPES, int_range, quantize_reciprocal
from ..qparams import dequantize as dequantize_values
from ..qparams import quantize as quantize_values
from ..runtime.registry import OpContext, Prepared
from .common import SUB_BYTE_TYPES
from .opdef import op

FLOATS = ("float32", "float16")
# the passes insert and fold these ops by name
QUANTIZE, DEQUANTIZE, DENSIFY = "QUANTIZE", "DEQUANTIZE", "DENSIFY"


def _axis(ctx: OpContext, spec) -> int | None:
    """The axis of per-axis parameters (None: per tensor), checked against the shape."""
    q = spec.quantization
    if q is None or q.scale.size == 0:
        raise ctx.invalid(f"tensor {spec.name!r} has no quantization parameters")
    if q.scale.size == 1:
        return None
    if not 0 <= q.axis < len(spec.shape) or spec.shape[q.axis] != q.scale.size \
            or q.zero_point.size not in (1, q.scale.size):
        raise ctx.invalid(f"{q.scale.size} scales do not fit axis {q.axis} of shape "
                          f"{spec.shape}")
    return q.axis


@op(DEQUANTIZE)
def dequantize(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = ctx.input(0)
    out_shape = x.shape
    if x.dtype == "float16":
        return Prepared(lambda v: v.astype(np.float32), [ctx.output_spec(0, out_shape, "float32")])
    # int4/int2/uint4 arrive unpacked; TFLite unpacks them to int8 and dequantizes as int8
    ctx.expect_dtype(x, *QUANTIZED_TYPES, "int32", *SUB_BYTE_TYPES)
    if x.quantization is not None and x.quantization.blockwise is not None:
        raise ctx.unsupported(f"blockwise tensor {x.name!r}: TFLite's DEQUANTIZE has no "
                              f"blockwise path (it reads the tensor as unquantized)")
    axis, q = _axis(ctx, x), x.quantization
    if axis is None and x.dtype in QUANTIZED_TYPES + ("int32",):
        from qengine.kernels.quantize import affine_dequantize

        scale = float(np.float32(np.asarray(q.scale).reshape(-1)[0]))
        zero_points = np.asarray(q.zero_point if q.zero_point is not None else []).reshape(-1)
        zero_point = int(zero_points[0]) if zero_points.size else 0

        def run(v):  # reference_integer_ops::Dequantize: (float)(double(scale) * (q - zp))
            values = np.ascontiguousarray(v).reshape(-1)
            result = np.empty(values.size, np.float32)
            return affine_dequantize(values, scale, zero_point, result).reshape(v.shape)
    else:
        def run(v):  # the same per axis (and for unpacked sub-byte types), in NumPy
            return dequantize_values(v, q.scale, q.zero_point, axis)

    return Prepared(run, [ctx.output_spec(0, out_shape, "float32")])


@op(QUANTIZE)
def quantize(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = ctx.input(0)
    out = ctx.op.outputs[0]
    if out.dtype not in QUANTIZED_TYPES:
        raise ctx.unsupported(f"QUANTIZE to {out.dtype}")
    out_spec = ctx.output_spec(0, x.shape, out.dtype)
    if x.dtype in QUANTIZED_TYPES:
        from . import quantization_int

        return quantization_int.requantize(ctx, x, out_spec)
    ctx.expect_dtype(x, *FLOATS)
    axis, q = _axis(ctx, out_spec), out_spec.quantization
    if axis is None:
        scale, zero_point = out_spec.scale, out_spec.zero_point
    else:
        scale, zero_point = q.scale, q.zero_point
    if axis is None and ctx.arithmetic == "xnnpack":
        def run(v):  # optimized/XNNPACK: multiply by the reciprocal, round half to even
            return quantize_reciprocal(v, scale, zero_point, out.dtype)
    elif axis is None and x.dtype == "float32":
        from qengine.kernels.quantize import affine_quantize

        qmin, qmax = int_range(out.dtype)
        args = (np.float32(scale), int(zero_point), qmin, qmax)

        def run(v):  # reference AffineQuantize: round(x / scale) + zp in float32, then clamp
            values = np.ascontiguousarray(v, np.float32).reshape(-1)
            result = np.empty(values.size, numpy_dtype(out.dtype))
            return affine_quantize(values, *args, result).reshape(v.shape)
    else:
        def run(v):  # the same per axis (or from float16), in NumPy
            return quantize_values(v, scale, zero_point, out.dtype, axis=axis)

    return Prepared(run, [out_spec])


# ---------------------------------------------------------------------------------------------
# DENSIFY


@op(DENSIFY)
def densify(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    tensor = ctx.op.inputs[0]
    if tensor.sparsity is None or not tensor.is_constant:
        raise ctx.unsupported("DENSIFY of a tensor that is not a sparse constant")
    dense = densify_tensor(ctx, tensor)
    return Prepared(lambda _: dense, [ctx.output_spec(0, dense.shape, tensor.dtype)])


def densify_tensor(ctx: OpContext, tensor) -> np.ndarray:
    """Expand TFLite's sparse format (traversal order, block map, CSR levels) to dense."""
    from ..ir import numpy_dtype

    sp = tensor.sparsity
    shape = tensor.shape
    values = np.frombuffer(tensor.buffer.data, numpy_dtype(tensor.dtype))
    levels = list(sp.dimMetadata or [])
    order = [int(i) for i in (sp.traversalOrder if sp.traversalOrder is not None else [])]
    block_map = [int(i) for i in (sp.blockMap if sp.blockMap is not None else [])]
    n, k = len(shape), len(block_map)
    if len(levels) != n + k or sorted(order) != list(range(n + k)) or \
            any(not 0 <= d < n for d in block_map):
        raise ctx.invalid(f"sparsity of {tensor.name!r} does not describe shape {shape}")
    block_size = {d: int(levels[order.index(n + j)].denseSize) for j, d in enumerate(block_map)}
    coords, count = _walk_levels(ctx, levels, order, values.size)
    if count != values.size:
        raise ctx.invalid(f"sparse {tensor.name!r} has {values.size} values, its index "
                          f"describes {count}")
    dense = np.zeros(shape, values.dtype)
    index = []
    for d in range(n):
        position = coords[order.index(d)]
        if d in block_size:
            j = block_map.index(d)
            position = position * block_size[d] + coords[order.index(n + j)]
        if position.size and (position.min() < 0 or position.max() >= shape[d]):
            raise ctx.invalid(f"sparse {tensor.name!r} has an index outside dimension {d}")
        index.append(position)
    dense[tuple(index)] = values
    return dense


def _walk_levels(ctx, levels, order, n_values: int):
    """Coordinates (per traversal level) of every stored value, in storage order."""
    coords: list[np.ndarray] = []
    parents = np.zeros(1, np.int64)  # linear position at the previous level
    for level in levels:
        if level.format == 0:  # DENSE: every parent has denseSize children
            size = int(level.denseSize)
            if size < 0 or parents.size * max(size, 1) > 4 * max(n_values, 1) + (1 << 20):
                raise ctx.invalid(f"dense level of size {size} is implausible")
            child = np.arange(size, dtype=np.int64)
            coords = [np.repeat(c, size) for c in coords] + [np.tile(child, parents.size)]
            parents = (parents[:, None] * size + child[None, :]).reshape(-1)
        else:  # SPARSE_CSR: children of parent p are indices[segments[p]:segments[p+1]]
            segments = _index_vector(ctx, level.arraySegments)
            indices = _index_vector(ctx, level.arrayIndices)
            if segments.size != parents.size + 1:
                raise ctx.invalid("sparse level segments do not match the level above")
            if np.any(np.diff(segments) < 0) or segments[0] < 0 or segments[-1] > indices.size:
                raise ctx.invalid("sparse level segments are not a valid CSR index")
            counts = np.diff(segments[:parents.size + 1])
            coords = [np.repeat(c, counts) for c in coords]
            picked = np.concatenate([np.arange(segments[p], segments[p + 1])
                                     for p in range(parents.size)]) if parents.size else \
                np.zeros(0, np.int64)
            coords.append(indices[picked].astype(np.int64))
            parents = picked.astype(np.int64)
    return coords, (coords[0].size if coords else 0)


def _index_vector(ctx, union_value) -> np.ndarray:
    values = getattr(union_value, "values", None)
    if values is None:
        raise ctx.invalid("sparse level without index vectors")
    return np.asarray(values, dtype=np.int64)
