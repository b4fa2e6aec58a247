"""The fast `arithmetic="xnnpack"` int8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (the plans'
float32 epilogue, gemm_int8.plan_*_fp32) against their slow twin: the reference-loop
accumulators (kernels/hybrid.py) plus the bias in int32, then `xnnpack.requantize_fp32`.
Exact equality on random geometries, channel counts around the 16-channel panels and 6-pixel
tiles, depth multipliers, ties (power-of-two scales), accumulators past 2^24 and biases that
wrap int32, fused clamps; then whole models with the fast kernels on and off.
(tests/test_xnnpack_arithmetic.py checks the same path against TFLite's default interpreter.)
"""

import numpy as np
import pytest
from qengine.kernels import depthwise_int8, emit, gemm_int8, hybrid, pack
from qengine.kernels.xnnpack import requantize_fp32
from test_kernels_conv import assert_same, conv_geometry

import qengine
from qengine.builder import ACTIVATIONS, SAME, VALID, GraphBuilder, options
from qengine.ir import Quantization
from qengine.ops import xnnpack_int

SEEDS = range(30)
FC_GEOMETRY = (1, 1, 1, 1, 0, 0, 1, 1)


def slow_twin(acc, bias, scale, out_zp, act_min, act_max):
    """What ops/xnnpack_int.py does with reference accumulators: + bias (int32 wrap), fp32."""
    total = (acc.astype(np.int64) + bias.astype(np.int64)).astype(np.int32)
    rows = np.ascontiguousarray(total.reshape(-1, acc.shape[-1]))
    return requantize_fp32(rows, scale, out_zp, act_min, act_max).reshape(acc.shape)


def epilogue(rng, out_c, kind):
    """(bias, scale, out_zp, act_min, act_max): ordinary, ties (power-of-two scales, so
    float32(acc) * scale often ends in .5), or huge (biases that wrap int32 with tiny scales)."""
    out_zp = int(rng.integers(-128, 128))
    lo = int(rng.integers(-128, 128))
    act = (lo, int(rng.integers(lo, 128))) if rng.random() < 0.5 else (-128, 127)
    if kind == "ties":
        scale = 2.0 ** -rng.integers(1, 9, out_c)
        bias = rng.integers(-3000, 3000, out_c)
    elif kind == "huge":
        scale = rng.uniform(1e-9, 1e-6, out_c)
        bias = rng.integers(-(2**31), 2**31, out_c)
    else:
        scale = rng.uniform(1e-4, 2e-2, out_c)
        bias = rng.integers(-20000, 20000, out_c)
    return bias.astype(np.int32), scale.astype(np.float32), out_zp, *act


def operands(rng, x_shape, w_shape, kind):
    """x, w and in_zp; "huge" saturates them (|x - in_zp| = 255, |w| = 128) so that deep
    accumulators pass 2^24, where float32(acc) rounds."""
    if kind == "huge":
        in_zp = int(rng.choice([-128, 127]))
        x = np.full(x_shape, 127 if in_zp < 0 else -128, np.int8)
        x[rng.random(x_shape) < 0.05] = 0
        w = np.where(rng.random(w_shape) < 0.9, -128, 127).astype(np.int8)
        return x, w, in_zp
    in_zp = int(rng.integers(-128, 128))
    return (rng.integers(-128, 128, x_shape).astype(np.int8),
            rng.integers(-128, 128, w_shape).astype(np.int8), in_zp)  # fmt: skip


KINDS = ["plain", "ties", "huge"]


# the tiles of this host and, on a VNNI host, the vpmaddwd ones as well
VNNI = [False, True] if emit.HAS_VNNI else [False]


@pytest.mark.parametrize("vnni", VNNI)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_conv(seed, kind, threads, vnni):
    rng = np.random.default_rng([seed, KINDS.index(kind), 1])
    g = conv_geometry(rng)
    n, in_c, out_c = int(rng.integers(1, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
    x, w, in_zp = operands(rng, (n, g["h"], g["w"], in_c), (out_c, *g["k"], in_c), kind)
    e = epilogue(rng, out_c, kind)
    geometry = (*g["stride"], *g["dil"], *g["pad"], *g["out"])
    plan = gemm_int8.plan_conv2d_int8_fp32(pack.pack_conv_weights(w), e[0], in_zp,
                                           *e[1:], *geometry, vnni=vnni)  # fmt: skip
    assert plan.panels.shape[3] == (4 if vnni else 2)  # the family asked for
    acc = hybrid.conv_accumulators(x, w, np.full(n, in_zp, np.int32), *geometry)
    assert_same(gemm_int8.run_conv2d_int8(plan, x, threads), slow_twin(acc, *e))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise(seed, kind, threads):
    rng = np.random.default_rng([seed, KINDS.index(kind), 2])
    g = conv_geometry(rng, max_k=5)
    n, in_c = int(rng.integers(1, 3)), int(rng.choice([1, 8, 16, 24, 32, 48]))
    multiplier = int(rng.choice([1, 1, 2]))  # 1 with in_c % 16 == 0: the vpmaddwd tile
    out_c = in_c * multiplier
    x, w, in_zp = operands(rng, (n, g["h"], g["w"], in_c), (1, *g["k"], out_c), kind)
    e = epilogue(rng, out_c, kind)
    geometry = (*g["stride"], *g["dil"], *g["pad"], *g["out"], multiplier)
    w16 = pack.pack_depthwise_weights(w)
    plan = depthwise_int8.plan_depthwise_int8_fp32(w16, e[0], in_zp, *e[1:], *geometry)
    acc = hybrid.depthwise_accumulators(x, w, np.full(n, in_zp, np.int32), *geometry)
    assert_same(depthwise_int8.run_depthwise_int8(plan, x, threads), slow_twin(acc, *e))


@pytest.mark.parametrize("vnni", VNNI)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows, depth, units", [(1, 1280, 1001), (7, 33, 17), (13, 4608, 40)])
def test_fully_connected_as_1x1_plan(rows, depth, units, kind, threads, vnni):
    rng = np.random.default_rng([rows, depth, units, KINDS.index(kind)])
    x, w, in_zp = operands(rng, (rows, depth), (units, depth), kind)
    e = epilogue(rng, units, kind)
    plan = gemm_int8.plan_conv2d_int8_fp32(pack.pack_fc_weights(w), e[0], in_zp, *e[1:],
                                           *FC_GEOMETRY, vnni=vnni)  # fmt: skip
    got = gemm_int8.run_conv2d_int8(plan, x.reshape(rows, 1, 1, depth), threads)
    acc = hybrid.conv_accumulators(x.reshape(rows, 1, 1, depth), w.reshape(units, 1, 1, depth),
                                   np.full(rows, in_zp, np.int32), *FC_GEOMETRY)  # fmt: skip
    assert_same(got.reshape(rows, units), slow_twin(acc, *e).reshape(rows, units))


def test_the_cases_reach_ties_and_large_accumulators():
    """The "ties" and "huge" regimes really produce exact .5 products and |acc| > 2^24."""
    rng = np.random.default_rng(0)
    x, w, in_zp = operands(rng, (1, 4, 4, 512), (8, 3, 3, 512), "huge")
    acc = hybrid.conv_accumulators(x, w, np.full(1, in_zp, np.int32), 1, 1, 1, 1, 1, 1, 4, 4)
    assert np.abs(acc).max() > 2**24
    x, w, in_zp = operands(rng, (1, 6, 6, 8), (16, 3, 3, 8), "ties")
    acc = hybrid.conv_accumulators(x, w, np.full(1, in_zp, np.int32), 1, 1, 1, 1, 1, 1, 6, 6)
    scaled = acc.astype(np.float32) * epilogue(rng, 16, "ties")[1]
    assert np.any(scaled - np.floor(scaled) == 0.5)


# -- whole models: fast plans against QENGINE_KERNELS=reference ---------------------------------


def model_with_every_op(rng):
    """CONV_2D (RELU6, odd channels) → DEPTHWISE (no bias) → DEPTHWISE x2 → FC (RELU)."""
    b = GraphBuilder()
    q = lambda s, zp: Quantization.per_tensor(s, zp)
    per_channel = lambda n, axis: Quantization(
        rng.uniform(2e-3, 2e-2, n).astype(np.float32), np.zeros(n, np.int64), axis)
    int8 = lambda shape: rng.integers(-127, 128, shape).astype(np.int8)

    def bias(n, wq, in_scale):
        scales = wq.scale.astype(np.float64) * in_scale
        return b.const(f"b{n}", rng.integers(-3000, 3000, n).astype(np.int32), "int32",
                       Quantization(scales, np.zeros(n, np.int64), 0))  # fmt: skip

    def conv_opts(kind, act="NONE", padding=SAME, stride=1, **extra):
        return options(kind, padding=padding, strideH=stride, strideW=stride,
                       dilationHFactor=1, dilationWFactor=1,
                       fusedActivationFunction=ACTIVATIONS[act], **extra)  # fmt: skip

    x = b.input("x", (2, 11, 11, 3), "int8", q(0.05, 3))
    wq = per_channel(32, 0)
    y = b.op("CONV_2D", [x, b.const("w1", int8((32, 3, 3, 3)), "int8", wq), bias(32, wq, 0.05)],
             options=conv_opts("Conv2DOptions", "RELU6", stride=2), version=3,
             out_quantization=q(0.03, -128))  # fmt: skip
    wq = per_channel(32, 3)
    y = b.op("DEPTHWISE_CONV_2D", [y, b.const("w2", int8((1, 3, 3, 32)), "int8", wq)],
             options=conv_opts("DepthwiseConv2DOptions", depthMultiplier=1), version=3,
             out_quantization=q(0.04, 5))  # fmt: skip
    wq = per_channel(64, 3)
    y = b.op("DEPTHWISE_CONV_2D",
             [y, b.const("w3", int8((1, 3, 3, 64)), "int8", wq), bias(64, wq, 0.04)],
             options=conv_opts("DepthwiseConv2DOptions", padding=VALID, depthMultiplier=2),
             version=3, out_quantization=q(0.05, -2))  # fmt: skip
    y = b.op("RESHAPE", [y, b.const("shape", np.array([2, -1], np.int32), "int32")],
             options=options("ReshapeOptions", newShape=[2, -1]), out_quantization=q(0.05, -2))
    depth = 4 * 4 * 64
    wq = per_channel(10, 0)
    y = b.op("FULLY_CONNECTED", [y, b.const("w4", int8((10, depth)), "int8", wq),
                                 bias(10, wq, 0.05)],
             options=options("FullyConnectedOptions", fusedActivationFunction=ACTIVATIONS["RELU"]),
             version=5, out_quantization=q(0.1, -10))  # fmt: skip
    return b.build([y])


@pytest.mark.parametrize("num_threads", [1, 2])
def test_models_fast_and_reference_kernels_agree(monkeypatch, num_threads):
    rng = np.random.default_rng(num_threads)
    model = model_with_every_op(rng)
    x = rng.integers(-128, 128, (2, 11, 11, 3)).astype(np.int8)
    calls = []
    for name in ("run_conv2d_int8", "run_depthwise_int8"):  # count the plans that run
        real = getattr(xnnpack_int, name)
        monkeypatch.setattr(xnnpack_int, name,
                            lambda *a, real=real, name=name: calls.append(name) or real(*a))
    fast = qengine.Interpreter(model, arithmetic="xnnpack", num_threads=num_threads)
    got = fast.run([x], keep=True)
    assert sorted(calls) == ["run_conv2d_int8"] * 2 + ["run_depthwise_int8"] * 2  # FC a conv
    monkeypatch.setenv("QENGINE_KERNELS", "reference")
    want = qengine.Interpreter(model, arithmetic="xnnpack").run([x], keep=True)
    assert want.keys() == got.keys()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
