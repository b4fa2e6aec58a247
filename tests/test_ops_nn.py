"""Float nn ops (pools, softmax family, normalizations, resizes, TRANSPOSE_CONV, BATCH_MATMUL,
EMBEDDING_LOOKUP) against TFLite's reference kernels over grids of shapes and options."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
from op_harness import check_against_tflite, rng

import qengine
from qengine.builder import ACTIVATIONS, SAME, VALID, GraphBuilder, options
from qengine.errors import InputError, InvalidModelError
from qengine.ir import Quantization

# Every op matches TFLite within the default tolerance (1e-5 of the output range).


def normal(r, shape, scale=3.0):
    return (r.normal(size=shape) * scale).astype(np.float32)


def single_op(name, inputs, opts=None, version=1, out_dtype="float32"):
    """A model of one op. inputs: list of ("input", shape) / ("const", array) / None."""
    b = GraphBuilder()
    tensors = []
    for i, item in enumerate(inputs):
        if item is None:
            tensors.append(None)
        elif item[0] == "input":
            tensors.append(b.input(f"in{i}", item[1], *item[2:]))
        else:
            tensors.append(b.const(f"c{i}", item[1], *item[2:]))
    out = b.op(name, tensors, None, out_dtype, options=opts, version=version)
    return b.build(outputs=[out])


def expect_invalid(model):
    with pytest.raises(InvalidModelError):
        qengine.Interpreter(model.to_bytes())


# -- pools -----------------------------------------------------------------------------------

POOLS = ["AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"]


def pool_model(op, shape, kernel, stride, padding, activation="NONE"):
    opts = options("Pool2DOptions", padding=padding, strideH=stride[0], strideW=stride[1],
                   filterHeight=kernel[0], filterWidth=kernel[1],
                   fusedActivationFunction=ACTIVATIONS[activation])
    return single_op(op, [("input", shape)], opts)


@pytest.mark.tf
@pytest.mark.parametrize("op", POOLS)
@pytest.mark.parametrize("shape", [(1, 7, 9, 3), (2, 8, 8, 2), (1, 1, 5, 1)])
@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 2), (3, 3), (1, 4)])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (2, 3)])
@pytest.mark.parametrize("padding", [SAME, VALID])
def test_pool(op, shape, kernel, stride, padding):
    if padding == VALID and (kernel[0] > shape[1] or kernel[1] > shape[2]):
        pytest.skip("the kernel does not fit the input")
    x = normal(rng(op, shape, kernel, stride, padding), shape)
    check_against_tflite(pool_model(op, shape, kernel, stride, padding), [x])


@pytest.mark.tf
@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((1, 20, 64, 24), (2, 2), (2, 2), VALID), ((2, 9, 7, 5), (3, 3), (2, 2), SAME),
    ((1, 5, 5, 16), (5, 5), (1, 1), SAME), ((1, 7, 9, 8), (2, 2), (3, 3), SAME)])
def test_average_pool_is_bit_exact(shape, kernel, stride, padding):
    """Float AVERAGE_POOL_2D sums each window's in-image taps in TFLite's (ky, kx) order and
    divides by their count: bit for bit, on values over six decades where order matters."""
    r = rng("avgpool-exact", shape, kernel, stride, padding)
    x = (r.standard_normal(shape) * 10 ** r.uniform(-3, 3, shape)).astype(np.float32)
    model = pool_model("AVERAGE_POOL_2D", shape, kernel, stride, padding)
    from op_harness import model_bytes
    from tflite_ref import run_tflite

    want = run_tflite(model_bytes(model), [x], "ref")
    got = qengine.Interpreter(model_bytes(model)).run([x])
    for name, value in want.items():
        np.testing.assert_array_equal(got[name].view(np.int32), value.view(np.int32))


@pytest.mark.tf
@pytest.mark.parametrize("op", POOLS)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_pool_fused_activation(op, activation):
    # TANH and SIGN_BIT give TFLite's pools no clamp at all: they are ignored
    x = normal(rng(op, activation), (1, 6, 6, 2), 0.8)
    check_against_tflite(pool_model(op, x.shape, (3, 3), (2, 2), SAME, activation), [x])


@pytest.mark.tf
@pytest.mark.parametrize("op", POOLS)
@pytest.mark.parametrize("activation", ["NONE", "TANH", "RELU"])
def test_pool_infinities(op, activation):
    """TFLite's float pools clamp to [-FLT_MAX, FLT_MAX] even without an activation, so an
    infinite window becomes +-FLT_MAX; NaN passes through."""
    x = normal(rng(op, "inf", activation), (1, 6, 6, 2), 0.8)
    x[0, 0, 0, 0], x[0, 3, 4, 1], x[0, 5, 5, 0] = np.inf, -np.inf, np.nan
    check_against_tflite(pool_model(op, x.shape, (2, 2), (2, 2), VALID, activation), [x])


def test_pool_rejects_empty_filter():
    expect_invalid(pool_model("MAX_POOL_2D", (1, 4, 4, 1), (0, 2), (1, 1), SAME))
    expect_invalid(pool_model("AVERAGE_POOL_2D", (1, 4, 4, 1), (2, 2), (0, 1), SAME))
    expect_invalid(pool_model("AVERAGE_POOL_2D", (1, 4, 4, 1), (5, 2), (1, 1), VALID))


# -- softmax and normalizations --------------------------------------------------------------

SHAPES_1_TO_4 = [(7,), (3, 5), (2, 3, 4), (2, 2, 3, 6), (1, 1, 1, 1)]


@pytest.mark.tf
@pytest.mark.parametrize("shape", SHAPES_1_TO_4 + [(2, 1, 2, 3, 4)])
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.7])
def test_softmax(shape, beta):
    x = normal(rng("softmax", shape, beta), shape, 5.0)
    check_against_tflite(single_op("SOFTMAX", [("input", shape)],
                                   options("SoftmaxOptions", beta=beta)), [x])


@pytest.mark.tf
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 40), (4, 1000), (1, 2, 16, 16)])
@pytest.mark.parametrize("beta", [1.0, 2.7])
def test_softmax_is_bit_exact(shape, beta):
    """Float SOFTMAX reproduces TFLite's reference kernel bit for bit (its max, the C
    library's expf, the sum in order, one division), with -inf, NaN and huge values mixed in."""
    from op_harness import In, model_bytes
    from op_harness import single_op as one_op
    from tflite_ref import run_tflite

    x = normal(rng("softmax-exact", shape, beta), shape, 5.0)
    flat = x.reshape(-1)
    flat[::13], flat[5::97], flat[7::29] = -np.inf, np.nan, 80.0
    model, _ = one_op("SOFTMAX", [In(x)], options("SoftmaxOptions", beta=beta))
    want = run_tflite(model_bytes(model), {"x0": x}, "ref")
    got = qengine.Interpreter(model_bytes(model)).run({"x0": x})
    for name, value in want.items():
        finite = ~np.isnan(value)
        np.testing.assert_array_equal(np.isnan(got[name]), ~finite)
        np.testing.assert_array_equal(got[name][finite].view(np.int32),
                                      value[finite].view(np.int32))


@pytest.mark.tf
def test_softmax_without_options_has_beta_0():
    x = normal(rng("softmax-default"), (3, 4))
    check_against_tflite(single_op("SOFTMAX", [("input", x.shape)]), [x])


@pytest.mark.tf
@pytest.mark.parametrize("shape", SHAPES_1_TO_4)
def test_log_softmax(shape):
    x = normal(rng("log_softmax", shape), shape, 5.0)
    check_against_tflite(single_op("LOG_SOFTMAX", [("input", shape)],
                                   options("LogSoftmaxOptions")), [x])


@pytest.mark.tf
@pytest.mark.parametrize("shape", SHAPES_1_TO_4)
def test_l2_normalization(shape):
    x = normal(rng("l2norm", shape), shape)
    if x.ndim > 1:
        x[0] = 0  # all-zero rows: the norm is clamped to the epsilon
    check_against_tflite(single_op("L2_NORMALIZATION", [("input", shape)],
                                   options("L2NormOptions")), [x])


@pytest.mark.tf
def test_l2_normalization_epsilon():
    # rows whose norm is below TFLite's epsilon 1e-6 are divided by the epsilon
    x = np.array([[0, 0, 0], [1e-8, -2e-8, 3e-8], [1e-3, 0, 0], [3, 4, 0]], np.float32)
    check_against_tflite(single_op("L2_NORMALIZATION", [("input", x.shape)],
                                   options("L2NormOptions")), [x])


def test_l2_normalization_rejects_activation():
    expect_invalid(single_op("L2_NORMALIZATION", [("input", (2, 3))],
                             options("L2NormOptions", fusedActivationFunction=1)))


@pytest.mark.tf
@pytest.mark.parametrize("radius", [0, 1, 2, 7])
@pytest.mark.parametrize("bias, alpha, beta", [(1.0, 1.0, 0.5), (2.0, 0.1, 0.75),
                                               (0.5, 3.0, 1.3)])
@pytest.mark.parametrize("resolver, arithmetic", [("ref", "ref"), ("nodelegate", "xnnpack")])
def test_local_response_normalization(radius, bias, alpha, beta, resolver, arithmetic):
    # TFLite's reference kernel sums the window [c - r, c + r), its optimized one [c - r, c + r]
    x = normal(rng("lrn", radius, bias), (2, 3, 4, 6))
    opts = options("LocalResponseNormalizationOptions", radius=radius, bias=bias, alpha=alpha,
                   beta=beta)
    check_against_tflite(single_op("LOCAL_RESPONSE_NORMALIZATION", [("input", x.shape)], opts),
                         [x], resolver=resolver, arithmetic=arithmetic)


# -- resizes ---------------------------------------------------------------------------------

RESIZE_SIZES = [(8, 10), (2, 3), (7, 3), (1, 1), (6, 7), (4, 5), (13, 4)]
# (align_corners, half_pixel_centers); TFLite's bilinear rejects both set together
RESIZE_MODES = [(False, False), (True, False), (False, True)]


def resize_model(op, shape, size, align_corners, half_pixel, dtype="float32"):
    kind = "ResizeBilinearOptions" if op == "RESIZE_BILINEAR" else "ResizeNearestNeighborOptions"
    opts = options(kind, alignCorners=align_corners, halfPixelCenters=half_pixel)
    version = 3 if half_pixel else 1
    return single_op(op, [("input", shape, dtype), ("const", np.array(size, np.int32))], opts,
                     version, dtype)


@pytest.mark.tf
@pytest.mark.parametrize("op", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
@pytest.mark.parametrize("shape", [(1, 4, 5, 2), (2, 3, 3, 1), (1, 1, 6, 3)])
@pytest.mark.parametrize("size", RESIZE_SIZES)
@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_resize(op, shape, size, mode):
    x = normal(rng(op, shape, size, mode), shape)
    check_against_tflite(resize_model(op, shape, size, *mode), [x])


@pytest.mark.tf
@pytest.mark.parametrize("size", RESIZE_SIZES)
def test_resize_nearest_align_corners_and_half_pixel(size):
    x = normal(rng("nn-both", size), (1, 5, 4, 2))
    check_against_tflite(resize_model("RESIZE_NEAREST_NEIGHBOR", x.shape, size, True, True), [x])


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32"])
def test_resize_nearest_moves_integers(dtype):
    x = rng("nn-int", dtype).integers(0, 100, size=(1, 3, 4, 2)).astype(dtype)
    model = resize_model("RESIZE_NEAREST_NEIGHBOR", x.shape, (7, 5), False, True, dtype)
    for t in model.subgraphs[0].tensors:
        if t.dtype == dtype and dtype != "int32":
            t.quantization = Quantization(np.array([0.5], np.float32), np.array([3], np.int64))
    check_against_tflite(model, [x])


def test_resize_rejects_bad_sizes():
    expect_invalid(resize_model("RESIZE_BILINEAR", (1, 4, 4, 1), (0, 3), False, False))
    expect_invalid(resize_model("RESIZE_NEAREST_NEIGHBOR", (1, 4, 4, 1), (3, -1), False, False))
    expect_invalid(resize_model("RESIZE_BILINEAR", (1, 4, 4, 1), (3, 3, 3), False, False))
    expect_invalid(resize_model("RESIZE_BILINEAR", (1, 4, 4, 1), (3, 3), True, True))


# -- transpose convolution -------------------------------------------------------------------


def transpose_conv_model(in_shape, kernel, out_c, stride, padding, out_hw, bias, activation,
                         r):
    n, c = in_shape[0], in_shape[3]
    weights = normal(r, (out_c, kernel[0], kernel[1], c), 1.0)
    inputs = [("const", np.array((n,) + out_hw + (out_c,), np.int32)), ("const", weights),
              ("input", in_shape)]
    if bias:
        inputs.append(("const", normal(r, (out_c,), 1.0)))
    opts = options("TransposeConvOptions", padding=padding, strideH=stride[0],
                   strideW=stride[1], fusedActivationFunction=ACTIVATIONS[activation])
    return single_op("TRANSPOSE_CONV", inputs, opts, version=4 if activation != "NONE" else 3)


def natural_size(size, kernel, stride, padding):
    return size * stride if padding == SAME else (size - 1) * stride + kernel


@pytest.mark.tf
@pytest.mark.parametrize("in_shape, out_c", [((1, 4, 4, 3), 2), ((2, 3, 5, 2), 4),
                                             ((1, 1, 1, 3), 1)])
@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 3), (4, 3)])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 2)])
@pytest.mark.parametrize("padding", [SAME, VALID])
@pytest.mark.parametrize("bias", [False, True])
def test_transpose_conv(in_shape, out_c, kernel, stride, padding, bias):
    r = rng("tconv", in_shape, kernel, stride, padding, bias)
    out_hw = tuple(natural_size(in_shape[1 + i], kernel[i], stride[i], padding)
                   for i in range(2))
    model = transpose_conv_model(in_shape, kernel, out_c, stride, padding, out_hw, bias, "NONE",
                                 r)
    check_against_tflite(model, [normal(r, in_shape)])


@pytest.mark.tf
@pytest.mark.parametrize("padding, out_hw", [(SAME, (7, 8)), (SAME, (8, 7)), (SAME, (7, 7)),
                                             (VALID, (9, 10)), (VALID, (10, 9))])
def test_transpose_conv_other_output_sizes(padding, out_hw):
    # every output size that a stride-2 conv maps back onto the 4x4 input is allowed
    r = rng("tconv-size", padding, out_hw)
    model = transpose_conv_model((1, 4, 4, 2), (3, 3), 3, (2, 2), padding, out_hw, True, "NONE",
                                 r)
    check_against_tflite(model, [normal(r, (1, 4, 4, 2))])


@pytest.mark.parametrize("padding, out_hw", [(SAME, (6, 8)), (SAME, (9, 8)), (VALID, (8, 9)),
                                             (VALID, (11, 9)), (VALID, (2, 9))])
def test_transpose_conv_rejects_output_sizes_the_input_cannot_give(padding, out_hw):
    model = transpose_conv_model((1, 4, 4, 2), (3, 3), 3, (2, 2), padding, out_hw, True, "NONE",
                                 rng("tconv-bad-size"))
    expect_invalid(model)


@pytest.mark.tf
@pytest.mark.parametrize("activation", ["RELU", "RELU6", "RELU_N1_TO_1", "TANH", "SIGN_BIT"])
def test_transpose_conv_fused_activation(activation):
    # TANH and SIGN_BIT give TFLite no clamp: they are ignored
    r = rng("tconv-act", activation)
    model = transpose_conv_model((1, 3, 3, 2), (3, 3), 2, (2, 2), SAME, (6, 6), True, activation,
                                 r)
    check_against_tflite(model, [normal(r, (1, 3, 3, 2))])


@pytest.mark.tf
@pytest.mark.parametrize("activation", ["NONE", "TANH", "RELU"])
def test_transpose_conv_infinities(activation):
    r = rng("tconv-inf", activation)
    model = transpose_conv_model((1, 3, 3, 2), (3, 3), 2, (2, 2), SAME, (6, 6), False,
                                 activation, r)
    x = normal(r, (1, 3, 3, 2))
    x[0, 1, 1, 0] = np.float32(3e38)  # products overflow to +-inf inside the sums
    check_against_tflite(model, [x])


def test_transpose_conv_rejects_mismatched_shapes():
    r = rng("tconv-bad")
    bad_channels = single_op("TRANSPOSE_CONV", [
        ("const", np.array([1, 8, 8, 2], np.int32)), ("const", normal(r, (2, 3, 3, 4))),
        ("input", (1, 4, 4, 3))], options("TransposeConvOptions", padding=SAME, strideH=2,
                                          strideW=2))
    expect_invalid(bad_channels)
    bad_output = single_op("TRANSPOSE_CONV", [
        ("const", np.array([1, 8, 8, 5], np.int32)), ("const", normal(r, (2, 3, 3, 3))),
        ("input", (1, 4, 4, 3))], options("TransposeConvOptions", padding=SAME, strideH=2,
                                          strideW=2))
    expect_invalid(bad_output)


# -- batch matmul ----------------------------------------------------------------------------

MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)),
                 ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (1, 3, 4, 2)), ((2, 1, 3, 3, 4), (3, 4, 6)),
                 ((2, 1, 2, 1, 3), (1, 3, 1, 3, 2)), ((1, 1, 1, 1), (2, 1, 1, 1, 7))]


def transposed(shape, adjoint):
    return shape[:-2] + shape[:-3:-1] if adjoint else shape


@pytest.mark.tf
@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
@pytest.mark.parametrize("adj_x", [False, True])
@pytest.mark.parametrize("adj_y", [False, True])
@pytest.mark.parametrize("const_rhs", [False, True])
def test_batch_matmul(shapes, adj_x, adj_y, const_rhs):
    r = rng("bmm", shapes, adj_x, adj_y, const_rhs)
    a_shape, b_shape = transposed(shapes[0], adj_x), transposed(shapes[1], adj_y)
    a, b = normal(r, a_shape), normal(r, b_shape)
    rhs = ("const", b) if const_rhs else ("input", b_shape)
    model = single_op("BATCH_MATMUL", [("input", a_shape), rhs],
                      options("BatchMatMulOptions", adjX=adj_x, adjY=adj_y))
    check_against_tflite(model, [a] if const_rhs else [a, b])


def test_batch_matmul_rejects_bad_shapes():
    opts = options("BatchMatMulOptions")
    expect_invalid(single_op("BATCH_MATMUL", [("input", (2, 3, 4)), ("input", (2, 5, 6))], opts))
    expect_invalid(single_op("BATCH_MATMUL", [("input", (2, 3, 4)), ("input", (3, 4, 6))], opts))
    expect_invalid(single_op("BATCH_MATMUL", [("input", (4,)), ("input", (4, 6))], opts))


# -- embedding lookup ------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("table_shape", [(5, 3), (6, 2, 4), (3, 1)])
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_embedding_lookup(table_shape, dtype):
    r = rng("embedding", table_shape, dtype)
    table = (r.normal(size=table_shape) * 10).astype(dtype)
    ids = r.integers(0, table_shape[0], size=7).astype(np.int32)
    model = single_op("EMBEDDING_LOOKUP", [("input", ids.shape, "int32"), ("const", table)],
                      out_dtype=dtype)
    check_against_tflite(model, [ids])


@pytest.mark.tf
@pytest.mark.parametrize("per_row", [False, True])
def test_embedding_lookup_hybrid_int8(per_row):
    r = rng("embedding-hybrid", per_row)
    table = r.integers(-127, 128, size=(4, 5)).astype(np.int8)
    scales = r.uniform(0.01, 0.1, size=4 if per_row else 1).astype(np.float32)
    q = Quantization(scales, np.zeros(scales.size, np.int64), 0)
    b = GraphBuilder()
    ids = b.input("ids", (6,), "int32")
    values = b.const("values", table, "int8", quantization=q)
    out = b.op("EMBEDDING_LOOKUP", [ids, values], (6, 5), "float32")
    model = b.build(outputs=[out])
    check_against_tflite(model, [np.array([3, 0, 1, 1, 2, 3], np.int32)])


def test_embedding_lookup_validates_indices():
    table = ("const", np.ones((4, 2), np.float32))
    expect_invalid(single_op("EMBEDDING_LOOKUP", [("const", np.array([0, 4], np.int32)), table]))
    expect_invalid(single_op("EMBEDDING_LOOKUP", [("const", np.array([-1], np.int32)), table]))
    model = single_op("EMBEDDING_LOOKUP", [("input", (2,), "int32"), table])
    interpreter = qengine.Interpreter(model.to_bytes())
    with pytest.raises(InputError):
        interpreter.run([np.array([1, 9], np.int32)])
