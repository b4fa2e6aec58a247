"""Shape and data-movement ops against TFLite's reference kernels, on every dtype they move."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import (
    Const,
    In,
    assert_close,
    check,
    check_against_tflite,
    model_bytes,
    rand,
    single_op,
)
from tflite_ref import run_tflite

import qengine
from qengine.builder import GraphBuilder, options
from qengine.ir import Quantization

Q8 = Quantization.per_tensor(0.05, 3)


def data(shape, dtype="float32", seed=0):
    """A runtime input; int8/int16 ones carry quantization, passed through by the op."""
    quant = Quantization.per_tensor(0.05, 3 if dtype == "int8" else 0) \
        if dtype in ("int8", "int16") else None
    return In(rand(shape, dtype, seed), quant)


def out_quant(dtype):
    return Quantization.per_tensor(0.05, 3 if dtype == "int8" else 0) \
        if dtype in ("int8", "int16") else None


MOVE_TYPES = ["float32", "int8", "int16", "int32", "int64", "bool"]


def i32(*values):
    return np.array(values, np.int32)


# -- reshaping ------------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("dtype", MOVE_TYPES)
@pytest.mark.parametrize("new_shape", [(6, 4), (-1,), (2, -1, 2), (1, 24, 1)])
@pytest.mark.parametrize("source", ["tensor", "option"])
def test_reshape(dtype, new_shape, source):
    x = data((2, 3, 4), dtype)
    if source == "tensor":
        args, opts = [x, i32(*new_shape)], None
    else:
        args, opts = [x], options("ReshapeOptions", newShape=list(new_shape))
    check("RESHAPE", args, opts, out_quantization=out_quant(dtype))


@pytest.mark.tf
def test_reshape_with_shape_computed_at_run_time():
    model, feeds = single_op("RESHAPE", [data((2, 6)), In(i32(3, -1))])
    interpreter = qengine.Interpreter(model_bytes(model))
    assert interpreter._plans[0].steps[0].prepared.outputs[0].shape is None
    check_against_tflite(model, feeds)
    with pytest.raises(qengine.InputError, match="RESHAPE"):
        interpreter.run([feeds[0], i32(5, -1)])


@pytest.mark.tf
@pytest.mark.parametrize("dims", [[], [0], [-1], [0, 3]])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_squeeze(dims, dtype):
    check("SQUEEZE", [data((1, 3, 2, 1), dtype)], options("SqueezeOptions", squeezeDims=dims),
          out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("axis", [0, 1, 3, -1, -4])
@pytest.mark.parametrize("dtype", MOVE_TYPES)
def test_expand_dims(axis, dtype):
    check("EXPAND_DIMS", [data((2, 3, 4), dtype), i32(axis)], out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("perm", [(1, 0), (2, 0, 1), (0, 2, 1, 3), (3, 1, 0, 2), (4, 0, 3, 1, 2)])
@pytest.mark.parametrize("dtype", MOVE_TYPES)
def test_transpose(perm, dtype):
    shape = (2, 3, 4, 5, 1)[:len(perm)]
    check("TRANSPOSE", [data(shape, dtype), i32(*perm)], out_quantization=out_quant(dtype))


# -- joining and splitting ------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("dtype", MOVE_TYPES)
def test_concatenation(axis, dtype):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for n, s in enumerate(shapes):
        s[axis] += n
    inputs = [data(s, dtype, seed=n) for n, s in enumerate(shapes)]
    check("CONCATENATION", inputs, options("ConcatenationOptions", axis=axis),
          out_quantization=out_quant(dtype))


@pytest.mark.parametrize("activation,low,high", [(1, 0, None), (2, -1, 1), (3, 0, 6)])
def test_concatenation_fused_activation(activation, low, high):
    # TFLite 2.21 refuses fused activations on CONCATENATION; qengine applies them
    a, b = rand((2, 3)) * 4, rand((2, 5), seed=1) * 4
    model, _ = single_op("CONCATENATION", [In(a), In(b)],
                         options("ConcatenationOptions", axis=1, fusedActivationFunction=activation))
    got = qengine.Interpreter(model).run([a, b])
    np.testing.assert_array_equal(next(iter(got.values())),
                                  np.clip(np.concatenate([a, b], axis=1), low, high))


def test_concatenation_of_int8_with_different_scales_takes_the_quantized_path():
    other = In(rand((2, 3), "int8"), Quantization.per_tensor(0.1, 0))
    model, _ = single_op("CONCATENATION", [data((2, 3), "int8"), other],
                         options("ConcatenationOptions", axis=0), out_quantization=Q8)
    try:
        qengine.Interpreter(model)
    except qengine.UnsupportedOpError as e:  # until shape_int.py provides it
        assert "CONCATENATION" in str(e)


@pytest.mark.tf
@pytest.mark.parametrize("axis", [0, 1, 3, -1, -2])
@pytest.mark.parametrize("dtype", ["float32", "int8", "int16", "int32", "int64"])  # no bool
def test_pack(axis, dtype):
    inputs = [data((2, 3, 4), dtype, seed=n) for n in range(3)]
    check("PACK", inputs, options("PackOptions", valuesCount=3, axis=axis),
          out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("dtype", ["float32", "int8", "int16", "int32", "bool"])  # no int64
def test_unpack(axis, dtype):
    shape = (2, 3, 4)
    n = shape[axis]
    check("UNPACK", [data(shape, dtype)], options("UnpackOptions", num=n, axis=axis),
          n_outputs=n, out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("axis,count", [(0, 2), (1, 3), (-1, 4), (2, 1)])
@pytest.mark.parametrize("dtype", ["float32", "int8", "int16", "int32", "int64"])  # no bool
def test_split(axis, count, dtype):
    check("SPLIT", [i32(axis), data((4, 6, 8), dtype)], options("SplitOptions", numSplits=count),
          n_outputs=count, out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("axis,sizes", [(0, [1, 3]), (1, [2, -1, 1]), (-1, [0, 8]),
                                        (2, [3, 3, 2])])
@pytest.mark.parametrize("dtype", ["float32", "int8", "int64"])
def test_split_v(axis, sizes, dtype):
    check("SPLIT_V", [data((4, 6, 8), dtype), i32(*sizes), i32(axis)],
          options("SplitVOptions", numSplits=len(sizes)), n_outputs=len(sizes),
          out_quantization=out_quant(dtype))


# -- slicing --------------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("begin,size", [([0, 0, 0], [-1, -1, -1]), ([1, 0, 2], [1, 3, 2]),
                                        ([0, 2, 1], [2, -1, 0])])
@pytest.mark.parametrize("index_type", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", MOVE_TYPES)
def test_slice(begin, size, index_type, dtype):
    check("SLICE", [data((2, 3, 4), dtype), np.array(begin, index_type),
                    np.array(size, index_type)], out_quantization=out_quant(dtype))


def _strided_case(seed):
    """A random STRIDED_SLICE spec that TFLite accepts (shrunk axes index inside the dim)."""
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 5))
    shape = tuple(int(d) for d in rng.integers(1, 6, rank))
    count = int(rng.integers(1, rank + 1))
    ellipsis = 1 << int(rng.integers(count)) if rng.random() < 0.25 else 0
    new_axis = int(rng.integers(0, 1 << count)) & ~ellipsis if rng.random() < 0.3 else 0
    if rank + new_axis.bit_count() > 5:
        new_axis = 0
    begin_mask, end_mask = (int(rng.integers(0, 1 << count)) for _ in range(2))
    begin, end, strides = [], [], []
    for i in range(count):
        size = 5
        begin.append(int(rng.integers(-size - 2, size + 3)))
        end.append(int(rng.integers(-size - 2, size + 3)))
        strides.append(int(rng.choice([-3, -2, -1, 1, 1, 2, 3])))
    shrink = int(rng.integers(0, 1 << count)) & ~ellipsis & ~new_axis \
        if rng.random() < 0.4 else 0
    # keep shrunk specs valid: a positive stride and an index inside the dim it lands on
    dims = _spec_dims(shape, count, ellipsis, new_axis)
    for i in range(count):
        if shrink >> i & 1:
            dim = dims[i]
            strides[i] = 1
            begin[i] = int(rng.integers(-dim, dim))
            begin_mask &= ~(1 << i)
    opts = options("StridedSliceOptions", beginMask=begin_mask, endMask=end_mask,
                   ellipsisMask=ellipsis, newAxisMask=new_axis, shrinkAxisMask=shrink)
    return shape, begin, end, strides, opts


def _spec_dims(shape, count, ellipsis, new_axis):
    """The input dim each slice spec addresses (a plain reading of TF's ellipsis rules)."""
    dims, pos = [], 0
    for i in range(count):
        if ellipsis >> i & 1:
            pos += len(shape) - sum(1 for j in range(count) if not (ellipsis | new_axis) >> j & 1)
            dims.append(None)
        elif new_axis >> i & 1:
            dims.append(1)
        else:
            dims.append(shape[pos] if pos < len(shape) else 1)
            pos += 1
    return dims


@pytest.mark.tf
@pytest.mark.parametrize("seed", range(300))
def test_strided_slice_random_masks(seed):
    shape, begin, end, strides, opts = _strided_case(seed)
    model, feeds = single_op("STRIDED_SLICE", [data(shape), i32(*begin), i32(*end),
                                               i32(*strides)], opts)
    try:
        want = run_tflite(model_bytes(model), feeds)
    except (RuntimeError, ValueError):
        pytest.skip("TFLite refuses this spec")
    got = qengine.Interpreter(model_bytes(model)).run(feeds)
    for name in want:
        assert_close(name, got[name], want[name])


@pytest.mark.tf
@pytest.mark.parametrize("begin,end,strides,masks", [
    ([0], [0], [1], {"shrinkAxisMask": 1}),  # the converter's x[0]
    ([-1], [0], [1], {"shrinkAxisMask": 1}),  # x[-1]
    ([4, 0], [-6, 0], [-1, 1], {"endMask": 2}),  # x[4:-6:-1, :]: runs down to index 0
    ([0, 0], [1, 2], [1, 1], {"ellipsisMask": 1}),  # x[..., :2]
    ([0, 1, 0], [0, 3, 0], [1, 1, 1], {"newAxisMask": 5}),  # x[None, 1:3, None]
    ([-10, 0], [10, 0], [-2, 1], {"endMask": 2}),
])
@pytest.mark.parametrize("dtype", MOVE_TYPES)
def test_strided_slice_cases(begin, end, strides, masks, dtype):
    check("STRIDED_SLICE", [data((5, 4), dtype), i32(*begin), i32(*end), i32(*strides)],
          options("StridedSliceOptions", **masks), out_quantization=out_quant(dtype))


@pytest.mark.parametrize("begin,end,stride", [(1, 2, 1), (-4, 3, 1), (4, -2, -1), (0, 9, 2)])
def test_strided_slice_offset(begin, end, stride):
    # TFLite 2.21 crashes or returns garbage with offset=True, so NumPy is the reference:
    # with offset, end counts from the (wrapped, clamped) begin
    x = rand((5, 4))
    model, _ = single_op("STRIDED_SLICE", [In(x), i32(begin, 0), i32(end, 0), i32(stride, 1)],
                         options("StridedSliceOptions", offset=True, endMask=2))
    got = next(iter(qengine.Interpreter(model).run([x]).values()))
    start = begin % 5
    stop = start + end
    want = x[start:stop if stop >= 0 else None:stride]
    np.testing.assert_array_equal(got, want)


@pytest.mark.tf
def test_strided_slice_with_begin_known_only_at_run_time():
    model, feeds = single_op("STRIDED_SLICE", [data((5, 4)), In(i32(1, -3)), i32(4, 0),
                                               i32(2, 1)],
                             options("StridedSliceOptions", endMask=2))
    check_against_tflite(model, feeds)


# -- gathering ------------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("axis,batch_dims,indices_shape", [
    (0, 0, (3,)), (1, 0, (2, 2)), (-1, 0, ()), (2, 0, (4, 1)),
    (1, 1, (2, 3)), (2, 1, (2, 2)), (2, 2, (2, 3, 2)), (2, -1, (2, 3, 4))])
@pytest.mark.parametrize("index_type", [np.int32, np.int64])
@pytest.mark.parametrize("constant", [True, False])
def test_gather(axis, batch_dims, indices_shape, index_type, constant):
    params = data((2, 3, 5))
    limit = (2, 3, 5)[axis]
    indices = np.random.default_rng(1).integers(0, limit, indices_shape).astype(index_type)
    check("GATHER", [params, indices if constant else In(indices)],
          options("GatherOptions", axis=axis, batchDims=batch_dims))


@pytest.mark.tf
@pytest.mark.parametrize("dtype", MOVE_TYPES)
def test_gather_dtypes(dtype):
    check("GATHER", [data((4, 3), dtype), i32(3, 0, 0, 2)], options("GatherOptions", axis=0),
          out_quantization=out_quant(dtype))


def test_gather_index_out_of_range():
    model, feeds = single_op("GATHER", [data((4, 3)), i32(1, 4)], options("GatherOptions"))
    with pytest.raises(qengine.InvalidModelError, match="gather index 4"):
        qengine.Interpreter(model)
    model, feeds = single_op("GATHER", [data((4, 3)), i32(-1)], options("GatherOptions"))
    with pytest.raises(qengine.InvalidModelError, match="gather index -1"):
        qengine.Interpreter(model)
    model, feeds = single_op("GATHER", [data((4, 3)), In(i32(0, 1))], options("GatherOptions"))
    interpreter = qengine.Interpreter(model)
    with pytest.raises(qengine.InputError, match="GATHER"):
        interpreter.run([feeds[0], i32(0, -1)])


@pytest.mark.tf
@pytest.mark.parametrize("indices", [[[0, 1], [2, 0]], [[1], [0], [2]], [[[2, 1, 3]]], [2]])
@pytest.mark.parametrize("dtype", ["float32", "int8", "int64"])
def test_gather_nd(indices, dtype):
    check("GATHER_ND", [data((3, 2, 4), dtype), np.array(indices, np.int32)],
          out_quantization=out_quant(dtype))


def test_gather_nd_index_out_of_range():
    model, _ = single_op("GATHER_ND", [data((3, 2)), i32(0, 2)])
    with pytest.raises(qengine.InvalidModelError, match="outside"):
        qengine.Interpreter(model)


# -- repeating and filling ------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("multiples", [(1, 1), (2, 3), (1, 0), (3, 1)])
@pytest.mark.parametrize("dtype", MOVE_TYPES)
def test_tile(multiples, dtype):
    check("TILE", [data((2, 3), dtype), i32(*multiples)], out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("in_shape,shape", [((3,), (2, 3)), ((2, 1), (2, 4)),
                                            ((1, 3, 1), (2, 2, 3, 5)), ((), (2, 2))])
@pytest.mark.parametrize("dtype", ["float32", "int8", "int32", "bool"])
def test_broadcast_to(in_shape, shape, dtype):
    # the reference resolver has no BROADCAST_TO kernel; its versions start at 2
    check("BROADCAST_TO", [data(in_shape, dtype), i32(*shape)], resolver="nodelegate",
          version=2, out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("value", [np.float32(1.5), np.int32(-7), np.int64(3), np.bool_(True)])
@pytest.mark.parametrize("dims_constant", [True, False])
def test_fill(value, dims_constant):
    dims = i32(2, 3, 1)
    check("FILL", [dims if dims_constant else In(dims), In(np.array(value))])


# -- padding --------------------------------------------------------------------------------


PADS = [[[0, 0], [1, 2]], [[2, 1], [0, 3]], [[0, 0], [0, 0]]]


@pytest.mark.tf
@pytest.mark.parametrize("paddings", PADS)
@pytest.mark.parametrize("dtype", ["float32", "int8", "int16", "int32", "int64"])
def test_pad(paddings, dtype):
    # int8 pads with the output zero point (3), the code of 0.0
    check("PAD", [data((3, 4), dtype), np.array(paddings, np.int32)],
          out_quantization=out_quant(dtype))


@pytest.mark.tf
def test_pad_rank_4_int64_paddings():
    check("PAD", [data((1, 3, 4, 2)), np.array([[0, 0], [1, 1], [2, 0], [0, 1]], np.int64)])


@pytest.mark.tf
@pytest.mark.parametrize("paddings", PADS)
@pytest.mark.parametrize("dtype", ["float32", "int8", "int32"])
def test_padv2(paddings, dtype):
    value = Const(np.array(rand((), dtype, seed=5), dtype), out_quant(dtype))
    check("PADV2", [data((3, 4), dtype), np.array(paddings, np.int32), value],
          out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("paddings", [[[0, 0], [1, 2]], [[2, 1], [3, 3]], [[1, 1], [0, 0]]])
@pytest.mark.parametrize("dtype", ["float32", "int8", "int64"])
def test_mirror_pad(mode, paddings, dtype):
    check("MIRROR_PAD", [data((3, 4), dtype), np.array(paddings, np.int32)],
          options("MirrorPadOptions", mode=mode), out_quantization=out_quant(dtype))


def test_pad_rejects_negative_and_too_large_paddings():
    model, _ = single_op("PAD", [data((3, 4)), i32(0, 0, -1, 2).reshape(2, 2)])
    with pytest.raises(qengine.InvalidModelError, match="paddings"):
        qengine.Interpreter(model)
    model, _ = single_op("MIRROR_PAD", [data((3, 4)), i32(3, 0, 0, 0).reshape(2, 2)],
                         options("MirrorPadOptions", mode=0))
    with pytest.raises(qengine.InvalidModelError, match="too large"):
        qengine.Interpreter(model)


# -- shape queries and the dynamic-batch chain ----------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("out_type", [2, 4])
@pytest.mark.parametrize("shape", [(3,), (2, 1, 4)])
def test_shape(out_type, shape):
    check("SHAPE", [data(shape)], options("ShapeOptions", outType=out_type),
          out_dtype={2: "int32", 4: "int64"}[out_type])


@pytest.mark.tf
@pytest.mark.parametrize("shape", [(3,), (2, 1, 4)])
def test_rank(shape):
    check("RANK", [data(shape)], out_dtype="int32")


def dynamic_batch_model():
    """x: (-1, 4, 3) -> reshape to (batch, 12) with the batch read by SHAPE at run time."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 3), dynamic_batch=True)
    shape = b.op("SHAPE", [x], (3,), "int32", options=options("ShapeOptions", outType=2))
    batch = b.op("STRIDED_SLICE", [shape, b.const("begin", i32(0)), b.const("end", i32(1)),
                                   b.const("strides", i32(1))], (), "int32",
                 options=options("StridedSliceOptions", shrinkAxisMask=1))
    twelve = b.const("twelve", np.array(12, np.int32))
    twelve.shape = ()  # Tensor.data's setter stores 0-d values as shape (1,)
    new_shape = b.op("PACK", [batch, twelve], (2,), "int32",
                     options=options("PackOptions", valuesCount=2, axis=0))
    y = b.op("RESHAPE", [x, new_shape], (1, 12), "float32")
    return b.build(outputs=[y])


@pytest.mark.tf
def test_dynamic_batch_chain_reprepares_for_each_batch():
    model = model_bytes(dynamic_batch_model())
    interpreter = qengine.Interpreter(model)
    for batch in (1, 3, 1):
        x = rand((batch, 4, 3), seed=batch)
        want = run_tflite(model, [x])
        got = interpreter.run([x])
        for name in want:
            assert got[name].shape == (batch, 12)
            assert_close(name, got[name], want[name])
    # SHAPE's value is known at prepare time, so STRIDED_SLICE and PACK were folded
    steps = interpreter._plans[0].steps
    assert [s.folded for s in steps] == [False, True, True, False]


# -- moving blocks --------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("block", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float32", "int8", "int32", "int64"])
def test_depth_to_space_and_back(block, dtype):
    check("DEPTH_TO_SPACE", [data((2, 2, 3, 2 * block * block), dtype)],
          options("DepthToSpaceOptions", blockSize=block), out_quantization=out_quant(dtype))
    check("SPACE_TO_DEPTH", [data((2, 2 * block, 3 * block, 2), dtype)],
          options("SpaceToDepthOptions", blockSize=block), out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("shape,block,crops", [
    ((4, 2, 3, 2), [2, 2], [[0, 0], [0, 0]]), ((8, 2, 2, 1), [2, 2], [[1, 0], [0, 2]]),
    ((6, 3, 2, 3), [3, 2], [[2, 1], [1, 1]]), ((4, 3, 2), [2], [[1, 2]])])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_batch_to_space_nd(shape, block, crops, dtype):
    check("BATCH_TO_SPACE_ND", [data(shape, dtype), i32(*block), np.array(crops, np.int32)],
          out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("shape,block,pads", [
    ((1, 4, 4, 2), [2, 2], [[0, 0], [0, 0]]), ((2, 3, 5, 1), [2, 3], [[1, 0], [0, 1]]),
    ((1, 2, 2, 3), [3, 2], [[2, 2], [1, 1]]), ((2, 5, 2), [3], [[1, 0]])])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_space_to_batch_nd(shape, block, pads, dtype):
    # int8 pads with the output zero point
    check("SPACE_TO_BATCH_ND", [data(shape, dtype), i32(*block), np.array(pads, np.int32)],
          out_quantization=out_quant(dtype))


# -- reordering and searching ---------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("axes", [[0], [1], [-1], [1, 2]])  # TFLite: contiguous axes only
@pytest.mark.parametrize("dtype", ["float32", "int8", "int16", "int32", "int64", "bool"])
def test_reverse_v2(axes, dtype):
    check("REVERSE_V2", [data((2, 3, 4), dtype), i32(*axes)], out_quantization=out_quant(dtype))


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["bool", "float32", "int32"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2)])
def test_where(dtype, shape):
    x = rand(shape, dtype)
    if dtype != "bool":
        x = np.where(rand(shape, "bool", seed=1), x, 0).astype(dtype)
    check("WHERE", [In(x)], out_dtype="int64")


@pytest.mark.tf
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
def test_cumsum(axis, exclusive, reverse, dtype):
    check("CUMSUM", [data((3, 5), dtype), i32(axis)],
          options("CumsumOptions", exclusive=exclusive, reverse=reverse))


@pytest.mark.tf
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("value_type", [np.float32, np.int32, np.int64, np.bool_])
def test_one_hot(axis, value_type):
    indices = np.array([[0, 3, 5], [-1, 2, 1]], np.int32)  # 5 and -1 are off everywhere
    check("ONE_HOT", [In(indices), i32(4), np.array(1, value_type), np.array(0, value_type)],
          options("OneHotOptions", axis=axis))


@pytest.mark.tf
@pytest.mark.parametrize("start,limit,delta,dtype", [
    (0, 10, 3, "int32"), (10, -3, -4, "int64"), (5, 6, 1, "int32"),
    (0.5, 7.3, 0.7, "float32"), (1.0, -2.0, -0.3, "float32")])
@pytest.mark.parametrize("constant", [True, False])
def test_range(start, limit, delta, dtype, constant):
    args = [np.array(v, dtype) for v in (start, limit, delta)]
    if not constant:
        args = [In(a) for a in args]
    check("RANGE", args)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ARG_MAX", "ARG_MIN"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", ["float32", "int8", "uint8", "int32"])
@pytest.mark.parametrize("output_type", [2, 4])
def test_arg_max_min(op, axis, dtype, output_type):
    # a narrow value range makes ties common: the first index must win
    x = np.random.default_rng(3).integers(0, 3, (3, 4, 5)).astype(dtype)
    kind = "ArgMaxOptions" if op == "ARG_MAX" else "ArgMinOptions"
    check(op, [In(x), i32(axis)], options(kind, outputType=output_type),
          out_dtype={2: "int32", 4: "int64"}[output_type])


# -- malformed models -----------------------------------------------------------------------


@pytest.mark.parametrize("op,args,opts", [
    ("RESHAPE", [data((2, 3)), i32(4, -1)], None),
    ("RESHAPE", [data((2, 3)), i32(-1, -1)], None),
    ("SQUEEZE", [data((2, 1))], options("SqueezeOptions", squeezeDims=[0])),
    ("EXPAND_DIMS", [data((2, 3)), i32(4)], None),
    ("TRANSPOSE", [data((2, 3)), i32(0, 0)], None),
    ("CONCATENATION", [data((2, 3)), data((3, 3))], options("ConcatenationOptions", axis=1)),
    ("CONCATENATION", [data((2, 3))], options("ConcatenationOptions", axis=2)),
    ("PACK", [data((2, 3)), data((2, 3))], options("PackOptions", valuesCount=2, axis=3)),
    ("SLICE", [data((2, 3)), i32(1, 1), i32(2, 1)], None),
    ("STRIDED_SLICE", [data((2, 3)), i32(0), i32(1), i32(0)], None),
    ("GATHER", [data((2, 3)), i32(0)], options("GatherOptions", axis=2)),
    ("TILE", [data((2, 3)), i32(1, -1)], None),
    ("BROADCAST_TO", [data((2, 3)), i32(4, 3)], None),
    ("ARG_MAX", [data((2, 3)), i32(2)], options("ArgMaxOptions", outputType=2)),
    ("DEPTH_TO_SPACE", [data((1, 2, 2, 3))], options("DepthToSpaceOptions", blockSize=2)),
])
def test_malformed_models_raise_invalid_model_error(op, args, opts):
    model, _ = single_op(op, args, opts)
    with pytest.raises(qengine.InvalidModelError):
        qengine.Interpreter(model)


@pytest.mark.parametrize("dtype", ["float32", "int8", "int16"])
@pytest.mark.parametrize("threads", [1, 2])
def test_constant_pad_equals_numpy_pad(dtype, threads, monkeypatch):
    from qengine.kernels import threads as pool

    from qengine.ops.shape import constant_pad

    monkeypatch.setattr(pool, "MIN_SPLIT_FLOPS", 0)  # split even these small tensors

    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 5, 4, 3)) * 50).astype(dtype)
    if dtype == "float32":
        x.flat[:3] = [np.nan, -0.0, np.inf]
    for pads in [((0, 0), (1, 2), (0, 3), (0, 0)), ((0, 0), (0, 0), (0, 0), (0, 5)),
                 ((1, 0), (0, 1), (2, 2), (1, 1)), ((0, 0),) * 4,
                 ((0, 0), (3, 0), (0, 4), (2, 0)), ((0, 0), (9, 9), (1, 1), (0, 0))]:
        shape = tuple(d + a + b for d, (a, b) in zip(x.shape, pads))
        got = constant_pad(x, pads, shape, 3, threads)
        want = np.pad(x, pads, constant_values=3)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        assert np.array_equal(np.signbit(got), np.signbit(want))
