"""Fast int8 CONV_2D and DEPTHWISE_CONV_2D, bit-exact with the reference kernels in `conv.py`.

The convolution is a packed GEMM, out[p, oc] = Σ_k A[p, k] · B[k, oc], with
p = (batch, out_y, out_x), k = (ky, kx, ic):

* B (weights) is packed once by `pack_conv_weights` into int8 panels of 16 output channels,
  [panel, K/2, 16, 2]: for each pair of taps (2i, 2i+1) the 16 channels' two weights lie side
  by side, which is the operand layout of `vpmaddwd`.
* A (activations, im2col) holds `x - in_zp` in int16 (in [-255, 255], exact). Taps outside
  the image are 0, i.e. `x - in_zp` of a pixel padded with the input zero point, which is
  exactly the reference's "skip the tap"; no Σw correction is needed.
* The 6×16 micro-kernels keep 12 int32x8 accumulators in registers and per tap pair do 2
  weight loads (sign-extended int8→int16), 6 broadcasts and 12 `vpmaddwd`+`vpaddd`.
  `vpmaddwd` computes x0·w0 + x1·w1 of int16 pairs into int32 without saturation
  (|pair| ≤ 2·255·128), and the int32 adds wrap like the reference's, so any summation order
  gives the same int32 (sums are taken mod 2^32 either way).
* MBQM per output channel is `fixedpoint.requantize` without branches, 8 lanes at a time
  (`_requant_vec`: int32 lanes except the x·M products, two `vpmuldq` per 8 outputs), using
  SRDHM = floor((x·M + 2^30) / 2^31), which equals gemmlowp's nudge-and-truncate; `_requant`
  is its scalar twin.

int8 CONV_2D (`plan_conv2d_int8` at prepare time, `run_conv2d_int8` per call) packs A
row-major, 6 pixels per block, and its tile (`_qtile`) requantizes in registers and stores
int8. FULLY_CONNECTED (`fast_fc.py`) and the hybrid ops run the older GEMM (`_gemm`,
`_hybrid_gemm`): A transposed into int16 pairs [K/2, 6, 2], an int32 C tile, then a row
epilogue. int8 DEPTHWISE_CONV_2D (`plan_depthwise_int8`, `run_depthwise_int8`) computes 16
channels of one pixel in registers (`_dw16`), tap pairs through `vpmaddwd`.

`plan_conv2d_int8_fp32` / `plan_depthwise_int8_fp32` make the same plans with XNNPACK's
float32 requantization in the tiles instead of MBQM (`_fp32_vec`, the twin of
`xnnpack.requantize_fp32`), for `arithmetic="xnnpack"`; the dtype of the plan's parameter
array selects the epilogue when the kernels compile.

Hybrid ops (float input quantized per image, `hybrid.py`) run the same GEMM and depthwise loops
with one zero point per image and a fused float epilogue instead of MBQM (`HybridEpilogue`:
TFLite's float32 products in TFLite's order); `*_acc_fast` return the raw int32 accumulators.

The vector code is LLVM IR emitted through Numba intrinsics because Numba's own loops did not
vectorize well here: the int16 pair products became `vpmulld` (9 GOPS instead of ~100) and the
requantization stayed in int64 lanes (3× slower).

The machine this was tuned on (AMD Zen 2) has AVX2 but no AVX-512/VNNI, and issues one
`vpmaddwd` (16 int16 MACs) per cycle: that is its exact int8 peak (`vpmaddubsw` would be twice
as wide but saturates int16 for u8·s8 pairs). Without AVX2 the micro-kernel falls back to plain
LLVM vector IR (same results, slower).
"""

from typing import NamedTuple

import llvmlite.binding as llvm_binding
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic, overload
from qengine.kernels.conv import conv2d_int8, depthwise_conv2d_int8
from qengine.kernels.fixedpoint import round_half_away_int32
from qengine.kernels.jit import inline_kernel, kernel, prange
from qengine.kernels.xnnpack import requantize_fp32_value

__all__ = [
    "ConvInt8Plan",
    "DepthwiseInt8Plan",
    "HybridEpilogue",
    "PackedConvWeights",
    "conv2d_hybrid_fast",
    "conv2d_int8_acc_fast",
    "conv2d_int8_fast",
    "depthwise_conv2d_hybrid_fast",
    "depthwise_conv2d_int8_acc_fast",
    "depthwise_conv2d_int8_fast",
    "hybrid_epilogue",
    "kernel_threads",
    "pack_conv_weights",
    "pack_depthwise_weights",
    "plan_conv2d_int8",
    "plan_conv2d_int8_fp32",
    "plan_depthwise_int8",
    "plan_depthwise_int8_fp32",
    "run_conv2d_int8",
    "run_depthwise_int8",
]

ROWS = 6  # output pixels (GEMM rows) per micro-kernel tile
LANES = 16  # output channels per weight panel (two int32x8 accumulators)

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
_V8I32, _V16I16, _V16I8 = ir.VectorType(_I32, 8), ir.VectorType(_I16, 16), ir.VectorType(_I8, 16)


def _host_has_avx2() -> bool:
    if numba.config.CPU_NAME not in (None, "host"):  # compiling for another CPU: stay generic
        return False
    return "+avx2" in llvm_binding.get_host_cpu_features().flatten().split(",")


_USE_AVX2 = _host_has_avx2()


def _madd(builder, u, v):
    """int16x16 · int16x16 → int32x8 of adjacent-pair sums (x86 `vpmaddwd`)."""
    if _USE_AVX2:
        fnty = ir.FunctionType(_V8I32, [_V16I16, _V16I16])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx2.pmadd.wd")
        return builder.call(fn, [u, v])
    halves = []
    for start in (0, 1):
        idx = ir.Constant(ir.VectorType(_I32, 8), list(range(start, 16, 2)))
        a = builder.sext(builder.shuffle_vector(u, u, idx), _V8I32)
        b = builder.sext(builder.shuffle_vector(v, v, idx), _V8I32)
        halves.append(builder.mul(a, b))
    return builder.add(*halves)


def _accumulate(builder, k2, n_acc, step, name):
    """Emit `accs = [0] * n_acc; for i in range(k2): accs = step(i, accs)` over int32x8
    accumulators and return their final values (all zero when k2 <= 0). `step` emits the loop
    body into the current block and returns the new accumulators."""
    const = lambda v: ir.Constant(_I64, v)
    zero = ir.Constant(_V8I32, None)
    entry = builder.block
    loop = builder.function.append_basic_block(f"{name}_loop")
    done = builder.function.append_basic_block(f"{name}_done")
    builder.cbranch(builder.icmp_signed(">", k2, const(0)), loop, done)

    builder.position_at_end(loop)
    i = builder.phi(_I64)
    accs = [builder.phi(_V8I32) for _ in range(n_acc)]
    new = step(i, accs)
    body_end = builder.block
    i_next = builder.add(i, const(1))
    builder.cbranch(builder.icmp_signed("<", i_next, k2), loop, done)
    i.add_incoming(const(0), entry)
    i.add_incoming(i_next, body_end)
    for acc, value in zip(accs, new):
        acc.add_incoming(zero, entry)
        acc.add_incoming(value, body_end)

    builder.position_at_end(done)
    final = []
    for value in new:
        phi = builder.phi(_V8I32)
        phi.add_incoming(zero, entry)
        phi.add_incoming(value, body_end)
        final.append(phi)
    return final


def _make_tile(rows, panels):
    """An LLVM micro-kernel: C[rows, panels*16] = A_panel · B_panels over k2 tap pairs.

    a_addr: int16 pairs [k2, a_stride, 2] (rows 0..rows-1 are used); b_addr: `panels` int8 panels [k2, 16, 2], panel j at
    b_addr + j*b_stride bytes; c_addr: int32 rows of `c_stride` elements, of which the first
    panels*16 are overwritten.
    """
    n_acc = rows * panels * 2

    def codegen(context, builder, signature, args):
        a_addr, a_stride, b_addr, b_stride, c_addr, c_stride, k2 = args
        a_ptr = builder.inttoptr(a_addr, _I32.as_pointer())
        b_ptr = builder.inttoptr(b_addr, _I8.as_pointer())
        c_ptr = builder.inttoptr(c_addr, _I32.as_pointer())
        const = lambda v: ir.Constant(_I64, v)

        def step(i, accs):
            weights = []  # 2 int16x16 vectors per panel: channels 0-7 and 8-15, two taps each
            for j in range(panels):
                base = builder.add(builder.mul(const(j), b_stride), builder.mul(i, const(32)))
                for half in range(2):
                    ptr = builder.gep(b_ptr, [builder.add(base, const(16 * half))])
                    raw = builder.load(builder.bitcast(ptr, _V16I8.as_pointer()), align=1)
                    weights.append(builder.sext(raw, _V16I16))
            new = []
            for r in range(rows):  # broadcast (x[2i], x[2i+1]) of row r to all 8 int32 lanes
                index = builder.add(builder.mul(i, a_stride), const(r))
                pair = builder.load(builder.gep(a_ptr, [index]), align=4)
                xs = builder.bitcast(_splat(builder, pair), _V16I16)
                for j, w in enumerate(weights):
                    new.append(builder.add(accs[r * len(weights) + j], _madd(builder, xs, w)))
            return new

        results = _accumulate(builder, k2, n_acc, step, "tile")
        per_row = panels * 2
        for idx, value in enumerate(results):
            r, v = divmod(idx, per_row)
            offset = builder.add(builder.mul(const(r), c_stride), const(8 * v))
            ptr = builder.bitcast(builder.gep(c_ptr, [offset]), _V8I32.as_pointer())
            builder.store(value, ptr, align=4)
        return context.get_dummy_value()

    @intrinsic
    def tile(typingctx, a_addr, a_stride, b_addr, b_stride, c_addr, c_stride, k2):
        sig = types.void(
            types.uintp, types.intp, types.uintp, types.intp, types.uintp, types.intp, types.intp
        )
        return sig, codegen

    return tile


_tile_6x16 = _make_tile(ROWS, 1)  # GEMM
_tile_1x64 = _make_tile(1, 4)  # GEMV (one row): four panels per pass
_tile_1x16 = _make_tile(1, 1)


# --- requantization epilogue ---------------------------------------------------------------


def requant_params(bias, mult, shift):
    """Per-channel int32 arrays for `_requant`: (bias, M, left, right), or None.

    A left shift > 31 makes the reference's shifted value 0 and its result 0; M = 0 with
    left = 0 gives the same 0. M = 0 gives 0 for any right shift, so right is then set to 0.
    Returns None if some right shift exceeds 31 with M ≠ 0 (QuantizeMultiplier never makes one;
    callers fall back to the reference kernel).
    """
    shift = np.asarray(shift, np.int64)
    m = np.asarray(mult, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    m = np.where(left > 31, 0, m)
    left = np.where(left > 31, 0, left)
    right = np.where(m == 0, 0, right)
    if np.any(right > 31):
        return None
    as32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)
    return as32(bias), as32(m), as32(left), as32(right)


@kernel
def _requant(acc, bias, m, left, right, out_zp, act_min, act_max):
    """`fixedpoint.requantize(wrap32(acc + bias), M, shift, ...)` without branches.

        x = wrap32(wrap32(acc + bias) << left)                              (0 <= left <= 31)
        h = SRDHM(x, M) = trunc((x*M + nudge) / 2^31), saturated for INT32_MIN²
        out = clamp(wrap32(RDBPOT(h, right) + out_zp), act_min, act_max)    (0 <= right <= 31)

    Written so LLVM keeps everything but the x*M product in int32 lanes (`& 31` bounds the
    shift amounts; `h` and the RDBPOT terms fit int32).
    """
    total = np.int32(np.int64(acc) + np.int64(bias))  # C int32 wrap
    x = np.int64(np.int32(np.int64(total) << (np.int64(left) & 31)))
    mm = np.int64(m)
    # SRDHM's trunc((ab + (ab >= 0 ? 2^30 : 1 - 2^30)) / 2^31) equals floor((ab + 2^30) / 2^31)
    # for both signs (for ab < 0 the truncation adds 2^31 - 1 before flooring).
    h = np.int32((x * mm + np.int64(1 << 30)) >> 31)
    if x == -(2**31) and mm == -(2**31):
        h = np.int32(2**31 - 1)
    e = np.int32(right) & np.int32(31)
    mask = np.int32((np.int32(1) << e) - np.int32(1))
    threshold = np.int32((mask >> np.int32(1)) + np.int32(h < 0))
    r = np.int32((h >> e) + np.int32((h & mask) > threshold))
    out = np.int32(r + np.int32(out_zp))
    return min(max(out, np.int32(act_min)), np.int32(act_max))


def _splat(builder, value, ty=_V8I32):
    """A vector of `ty` with every lane `value` (a Python int or an LLVM integer)."""
    if isinstance(value, int):
        return ir.Constant(ty, [value] * ty.count)
    value = builder.trunc(value, ty.element) if value.type != ty.element else value
    vec = builder.insert_element(ir.Constant(ty, ir.Undefined), value, ir.Constant(_I32, 0))
    lanes = ir.Constant(ir.VectorType(_I32, ty.count), [0] * ty.count)
    return builder.shuffle_vector(vec, ir.Constant(ty, ir.Undefined), lanes)


def _srdhm_core(builder, x, m):
    """int32x8 floor((x·M + 2^30) / 2^31), the low 32 bits (SRDHM without its saturation).

    With AVX2: `vpmuldq` multiplies the even int32 lanes into int64; the odd lanes are shifted
    down first. The even results sit in the low halves after >> 31, the odd ones in the high
    halves after << 1, and one blend merges them (no int64 sign extensions or lane shuffles).
    """
    v8i64, v4i64 = ir.VectorType(_I64, 8), ir.VectorType(_I64, 4)
    if not _USE_AVX2:
        prod = builder.mul(builder.sext(x, v8i64), builder.sext(m, v8i64))
        shifted = builder.ashr(builder.add(prod, _splat(builder, 1 << 30, v8i64)),
                               _splat(builder, 31, v8i64))  # fmt: skip
        return builder.trunc(shifted, _V8I32)
    fnty = ir.FunctionType(v4i64, [_V8I32, _V8I32])
    pmuldq = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx2.pmul.dq")
    c = lambda v: _splat(builder, v, v4i64)
    odd = lambda v: builder.bitcast(builder.lshr(builder.bitcast(v, v4i64), c(32)), _V8I32)
    even_p = builder.add(builder.call(pmuldq, [x, m]), c(1 << 30))
    odd_p = builder.add(builder.call(pmuldq, [odd(x), odd(m)]), c(1 << 30))
    lo = builder.bitcast(builder.lshr(even_p, c(31)), _V8I32)  # result in lanes 0, 2, 4, 6
    hi = builder.bitcast(builder.shl(odd_p, c(1)), _V8I32)  # result in lanes 1, 3, 5, 7
    lanes = ir.Constant(ir.VectorType(_I32, 8), [0, 9, 2, 11, 4, 13, 6, 15])
    return builder.shuffle_vector(lo, hi, lanes)


def _requant_vec(builder, acc, bias, m, left, right, out_zp, act_min, act_max, saturate=True):
    """`_requant` on int32x8 lanes (LLVM values) → the int32x8 output in [act_min, act_max].

    saturate=False leaves out SRDHM's INT32_MIN·INT32_MIN case: only for M ≠ INT32_MIN
    (QuantizeMultiplier's M is never negative).
    """
    x = builder.shl(builder.add(acc, bias), left)
    h = _srdhm_core(builder, x, m)
    if saturate:
        both_min = builder.and_(
            builder.icmp_signed("==", x, _splat(builder, -(2**31))),
            builder.icmp_signed("==", m, _splat(builder, -(2**31))),
        )
        h = builder.select(both_min, _splat(builder, 2**31 - 1), h)
    mask = builder.sub(builder.shl(_splat(builder, 1), right), _splat(builder, 1))
    negative = builder.lshr(h, _splat(builder, 31))
    threshold = builder.add(builder.lshr(mask, _splat(builder, 1)), negative)
    up = builder.icmp_signed(">", builder.and_(h, mask), threshold)
    r = builder.add(builder.ashr(h, right), builder.zext(up, _V8I32))
    out = builder.add(r, _splat(builder, out_zp))
    lo, hi = _splat(builder, act_min), _splat(builder, act_max)
    out = builder.select(builder.icmp_signed("<", out, lo), lo, out)
    return builder.select(builder.icmp_signed(">", out, hi), hi, out)


_V8F32 = ir.VectorType(ir.FloatType(), 8)


def _fp32_vec(builder, acc, bias, scale_bits, out_zp, act_min, act_max):
    """`xnnpack.requantize_fp32` on int32x8 lanes (LLVM values) → int32x8 in [act_min, act_max]:

        out = clamp(rint(float32(wrap32(acc + bias)) * scale), act_min - zp, act_max - zp) + zp
    `scale_bits` holds the float32 scales' bits. sitofp rounds to nearest even like float32(int32),
    fmul carries no fast-math flags (one IEEE rounding), rint rounds ties to even.
    """
    v = builder.sitofp(builder.add(acc, bias), _V8F32)
    v = builder.fmul(v, builder.bitcast(scale_bits, _V8F32))
    lo = builder.sitofp(_splat(builder, builder.sub(act_min, out_zp)), _V8F32)
    hi = builder.sitofp(_splat(builder, builder.sub(act_max, out_zp)), _V8F32)
    v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
    v = builder.select(builder.fcmp_ordered(">", v, hi), hi, v)
    rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8F32, [_V8F32]),
                                          "llvm.rint.v8f32")  # fmt: skip
    return builder.add(builder.fptosi(builder.call(rint, [v]), _V8I32), _splat(builder, out_zp))


def _is_fp32(q) -> bool:
    """Which epilogue a plan's parameter array `q` selects, at compile time: int32 holds MBQM's
    (bias, M, left, right), uint32 the bits of XNNPACK's (int32 bias, float32 scale)."""
    return q.dtype == types.uint32


def _requant8_codegen(context, builder, signature, args):
    acc_addr, out_addr, bias_addr, m_addr, left_addr, right_addr, out_zp, act_min, act_max = args

    def load(addr):
        return builder.load(builder.inttoptr(addr, _V8I32.as_pointer()), align=4)

    out = _requant_vec(builder, load(acc_addr), load(bias_addr), load(m_addr), load(left_addr),
                       load(right_addr), out_zp, act_min, act_max)  # fmt: skip
    v8i8 = ir.VectorType(_I8, 8)
    builder.store(builder.trunc(out, v8i8), builder.inttoptr(out_addr, v8i8.as_pointer()), align=1)
    return context.get_dummy_value()


@intrinsic
def _requant8(typingctx, acc_addr, out_addr, bias_addr, m_addr, left_addr, right_addr, out_zp,
              act_min, act_max):  # fmt: skip
    """`_requant` on 8 consecutive channels: int32 acc[8] → int8 out[8] (addresses)."""
    sig = types.void(*([types.uintp] * 6), types.int64, types.int64, types.int64)
    return sig, _requant8_codegen


@kernel
def _requant_row(acc, out, bias, m, left, right, out_zp, act_min, act_max):
    """out[oc] = requant(acc[oc]) for every output channel of one output pixel."""
    out_c = out.shape[0]
    vec_end = out_c - out_c % 8
    a, o, b = acc.ctypes.data, out.ctypes.data, bias.ctypes.data
    mm, lf, rt = m.ctypes.data, left.ctypes.data, right.ctypes.data
    for oc in range(0, vec_end, 8):
        _requant8(
            a + 4 * oc,
            o + oc,
            b + 4 * oc,
            mm + 4 * oc,
            lf + 4 * oc,
            rt + 4 * oc,
            np.int64(out_zp),
            np.int64(act_min),
            np.int64(act_max),
        )
    for oc in range(vec_end, out_c):
        out[oc] = _requant(acc[oc], bias[oc], m[oc], left[oc], right[oc], out_zp, act_min, act_max)


def _pixel_requant(acc, out, params, out_zp, act_min, act_max):
    """One output pixel's requantization, acc [Co] int32 → out [Co] int8, chosen at compile
    time by the dtype of params [4, Co]: int32 MBQM (`_requant_row`), uint32 fp32 (`_fp32_row`)."""


@overload(_pixel_requant, jit_options={"cache": True})
def _pixel_requant_impl(acc, out, params, out_zp, act_min, act_max):
    if params.dtype == types.uint32:

        def fp32(acc, out, params, out_zp, act_min, act_max):
            bias, scale = params[0].view(np.int32), params[1].view(np.float32)
            _fp32_row(acc, out, bias, scale, out_zp, act_min, act_max)

        return fp32

    def mbqm(acc, out, params, out_zp, act_min, act_max):
        _requant_row(acc, out, params[0], params[1], params[2], params[3], out_zp, act_min,
                     act_max)  # fmt: skip

    return mbqm


@kernel
def _fp32_row(acc, out, bias, scale, out_zp, act_min, act_max):
    """XNNPACK's float32 requantization of one output pixel: acc [Co] int32 → out [Co] int8,
    `xnnpack.requantize_fp32_value(wrap32(acc + bias), scale[c], ...)` per channel."""
    for c in range(out.shape[0]):
        total = np.int32(np.int64(acc[c]) + np.int64(bias[c]))  # C int32 wrap
        out[c] = requantize_fp32_value(total, scale[c], out_zp, act_min, act_max)


# --- CONV_2D ---------------------------------------------------------------------------------


class PackedConvWeights(NamedTuple):
    """`pack_conv_weights` output. `panels` int8 [ceil(Co/16), ceil(K/2), 16, 2], K = KH*KW*Cig."""

    panels: np.ndarray
    out_c: int
    k_h: int
    k_w: int
    in_c: int  # input channels per group (w.shape[3])
    w: np.ndarray  # the original filter, for the grouped-conv fallback


@kernel
def _pack_panels(w2):
    """[Co, K] int8 → [ceil(Co/16), ceil(K/2), 16, 2] int8, zero-padded."""
    out_c, depth = w2.shape
    n_panels = (out_c + LANES - 1) // LANES
    k2 = (depth + 1) // 2
    panels = np.zeros((n_panels, k2, LANES, 2), np.int8)
    for oc in range(out_c):
        for k in range(depth):
            panels[oc // LANES, k >> 1, oc % LANES, k & 1] = w2[oc, k]
    return panels


def pack_conv_weights(w) -> PackedConvWeights:
    """Prepare-time packing of a CONV_2D filter [Co, KH, KW, Cig] int8 for `conv2d_int8_fast`."""
    w = np.ascontiguousarray(w, dtype=np.int8)
    out_c, k_h, k_w, in_c = w.shape
    panels = _pack_panels(w.reshape(out_c, k_h * k_w * in_c))
    return PackedConvWeights(panels, out_c, k_h, k_w, in_c, w)


@kernel
def _pack_pairs(x, words, p0, rows, zps, k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top,
                pad_left, out_h, out_w):  # fmt: skip
    """`_pack_rows` for an even channel count, one (x[2j] - zp, x[2j+1] - zp) int16 pair (as the
    little-endian int32 `words[k2 * ROWS + r]`) at a time; `words` is already zeroed."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    half = in_c // 2
    for r in range(rows):
        p = p0 + r
        b = p // (out_h * out_w)
        oy = (p // out_w) % out_h
        ox = p % out_w
        zp = np.int32(zps[b])
        k2 = 0
        for ky in range(k_h):
            iy = oy * stride_h - pad_top + ky * dil_h
            for kx in range(k_w):
                ix = ox * stride_w - pad_left + kx * dil_w
                if 0 <= iy < in_h and 0 <= ix < in_w:
                    src = x[b, iy, ix]
                    for j in range(half):
                        lo = np.int32(src[2 * j]) - zp
                        hi = np.int32(src[2 * j + 1]) - zp
                        words[(k2 + j) * ROWS + r] = (lo & 0xFFFF) | (hi << 16)
                k2 += half


@kernel
def _pack_rows(x, a, p0, rows, zps, k_h, k_w, stride_h, stride_w, dil_h, dil_w,
               pad_top, pad_left, out_h, out_w):  # fmt: skip
    """im2col of output pixels p0..p0+ROWS-1 into a [K2, ROWS, 2] int16 panel: x - zps[b], 0 off-image.

    zps [N] holds each image's zero point. Rows past `rows` (the end of the output) are zero.
    """
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    flat = a.reshape(a.size)
    flat[:] = 0
    if in_c % 2 == 0:  # every tap starts on a pair: write whole int16 pairs
        _pack_pairs(x, flat.view(np.int32), p0, rows, zps, k_h, k_w, stride_h, stride_w, dil_h,
                    dil_w, pad_top, pad_left, out_h, out_w)  # fmt: skip
        return
    for r in range(rows):
        p = p0 + r
        b = p // (out_h * out_w)
        oy = (p // out_w) % out_h
        ox = p % out_w
        zp = np.int16(zps[b])
        k = 0
        for ky in range(k_h):
            iy = oy * stride_h - pad_top + ky * dil_h
            for kx in range(k_w):
                ix = ox * stride_w - pad_left + kx * dil_w
                if 0 <= iy < in_h and 0 <= ix < in_w:
                    for ic in range(in_c):
                        kk = k + ic
                        flat[((kk >> 1) * ROWS + r) * 2 + (kk & 1)] = (
                            np.int16(x[b, iy, ix, ic]) - zp
                        )
                k += in_c


@kernel
def _fc_requant_row(acc, out, bias, eff_scale, out_zp, act_min, act_max):
    """FULLY_CONNECTED's float epilogue (fully_connected.py): clamp(round(double(acc + bias)·s) + zp)."""
    for o in range(out.shape[0]):
        total = np.int64(np.int32(np.int64(acc[o]) + np.int64(bias[o])))  # C int32 wrap
        scaled = round_half_away_int32(np.float64(total) * eff_scale[o])
        v = np.int64(np.int32(scaled + np.int64(out_zp)))
        out[o] = min(max(v, np.int64(act_min)), np.int64(act_max))


@kernel
def _tiles(a, panels, c, rows, pan0, pan1):
    """c[r, :] = Σ_k A[r, k] · B[k, panels pan0..pan1-1] for the packed rows r < rows of `a`."""
    k2 = panels.shape[1]
    width = c.shape[1]
    j = pan0
    while j < pan1:
        cj = c.ctypes.data + (j - pan0) * LANES * 4
        if rows > 1:
            _tile_6x16(a.ctypes.data, ROWS, panels[j].ctypes.data, 0, cj, width, k2)
            j += 1
        elif j + 4 <= pan1:  # one row (GEMV): four panels per pass over A
            _tile_1x64(a.ctypes.data, ROWS, panels[j].ctypes.data, k2 * LANES * 2, cj, width, k2)
            j += 4
        else:
            _tile_1x16(a.ctypes.data, ROWS, panels[j].ctypes.data, 0, cj, width, k2)
            j += 1


@kernel
def _gemm_part(x, panels, bias, m, left, right, eff_scale, in_zp, out_zp, act_min, act_max,
               k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
               out, blk0, blk1, pan0, pan1):  # fmt: skip
    """Row blocks blk0..blk1-1 (ROWS output pixels each) × panels pan0..pan1-1 into out [P, Co].

    The epilogue is MBQM (`m`, `left`, `right`) unless `eff_scale` is non-empty (FC's float one).
    """
    k2 = panels.shape[1]
    out_c = out.shape[1]
    pixels = out.shape[0]
    width = (pan1 - pan0) * LANES
    oc0 = pan0 * LANES
    oc1 = min(out_c, pan1 * LANES)
    a = np.empty((k2, ROWS, 2), np.int16)
    c = np.empty((ROWS, width), np.int32)
    zps = np.full(x.shape[0], in_zp, np.int16)
    for blk in range(blk0, blk1):
        p0 = blk * ROWS
        rows = min(ROWS, pixels - p0)
        _pack_rows(
            x,
            a,
            p0,
            rows,
            zps,
            k_h,
            k_w,
            stride_h,
            stride_w,
            dil_h,
            dil_w,
            pad_top,
            pad_left,
            out_h,
            out_w,
        )
        _tiles(a, panels, c, rows, pan0, pan1)
        for r in range(rows):
            acc = c[r, : oc1 - oc0]
            dst = out[p0 + r, oc0:oc1]
            if eff_scale.size:
                _fc_requant_row(
                    acc, dst, bias[oc0:oc1], eff_scale[oc0:oc1], out_zp, act_min, act_max
                )
            else:
                _requant_row(
                    acc,
                    dst,
                    bias[oc0:oc1],
                    m[oc0:oc1],
                    left[oc0:oc1],
                    right[oc0:oc1],
                    out_zp,
                    act_min,
                    act_max,
                )


@kernel(parallel=True)
def _gemm(x, panels, out_c, bias, m, left, right, eff_scale, in_zp, out_zp, act_min, act_max,
          k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, threads):  # fmt: skip
    """out [N*out_h*out_w, Co] int8: im2col(x) · B, requantized. `threads` parallel parts, split
    over row blocks, or over weight panels when there are fewer row blocks than threads."""
    pixels = x.shape[0] * out_h * out_w
    out = np.empty((pixels, out_c), np.int8)
    blocks = (pixels + ROWS - 1) // ROWS
    n_panels = panels.shape[0]
    by_rows = blocks >= threads or n_panels < 2
    parts = min(threads, blocks if by_rows else n_panels)
    for t in prange(parts):
        lo, hi = (t * blocks) // parts, ((t + 1) * blocks) // parts
        p_lo, p_hi = (t * n_panels) // parts, ((t + 1) * n_panels) // parts
        if by_rows:
            p_lo, p_hi = 0, n_panels
        else:
            lo, hi = 0, blocks
        _gemm_part(
            x,
            panels,
            bias,
            m,
            left,
            right,
            eff_scale,
            in_zp,
            out_zp,
            act_min,
            act_max,
            k_h,
            k_w,
            stride_h,
            stride_w,
            dil_h,
            dil_w,
            pad_top,
            pad_left,
            out_h,
            out_w,
            out,
            lo,
            hi,
            p_lo,
            p_hi,
        )
    return out


_NO_SCALE = np.zeros(0, np.float64)


def conv2d_int8_fast(x, packed: PackedConvWeights, bias, in_zp, mult, shift, out_zp, act_min,
                     act_max, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w):  # fmt: skip
    """Bit-exact fast twin of `conv.conv2d_int8` (TFLite reference ConvPerChannel).

    conv2d_int8_fast(x, packed, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                     stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)

    x [N, H, W, Ci] int8; packed = pack_conv_weights(w) for w [Co, KH, KW, Ci/groups];
    bias [Co] int32 (zeros if absent); mult/shift [Co] int32 → [N, out_h, out_w, Co] int8.
    Runs on numba.get_num_threads() threads. Grouped convolutions (Ci ≠ w.shape[3]) and
    right shifts > 31 with M ≠ 0 (never made by QuantizeMultiplier) run the reference kernel,
    M = INT32_MIN (never made either) the FC GEMM `_gemm` with its saturating epilogue.
    """
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    params = requant_params(bias, mult, shift)
    if x.shape[3] != packed.in_c or params is None:
        return conv2d_int8(x, packed.w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                           *geometry)  # fmt: skip
    plan = plan_conv2d_int8(packed, bias, in_zp, mult, shift, out_zp, act_min, act_max, *geometry)
    if plan is not None:
        return run_conv2d_int8(plan, x)
    out = _gemm(x, packed.panels, packed.out_c, *params, _NO_SCALE, in_zp, out_zp, act_min,
                act_max, packed.k_h, packed.k_w, *geometry, numba.get_num_threads())  # fmt: skip
    return out.reshape(x.shape[0], out_h, out_w, packed.out_c)


# --- int8 CONV_2D: row-major activations, requantization fused into the tile -----------------
#
# `conv2d_int8_fast` runs its own GEMM (the FC and hybrid ones above keep the pair-transposed
# A panel and an int32 C tile). A is row-major here: int16 [ROWS, Kp] with Kp = 2·ceil(K/2),
# row r holding pixel p0+r's im2col taps minus in_zp. For a 1×1 stride-1 unpadded convolution
# that is a contiguous slice of the input, converted 16 values per instruction; for others,
# taps whose kx-window lies in the image are one contiguous run of k_w·Ci values. The tile
# broadcasts pair i of row r from a + r·a_row + 4i. Its epilogue requantizes the 6×16 int32
# accumulators in registers (`_requant_vec`) and stores int8, so no int32 C tile goes through
# memory and there is no per-row call.


def _qtile_codegen(context, builder, signature, args, rows, fp32):
    a_addr, a_row, b_addr, k2, out_addr, out_row, q_addr, out_zp, act_min, act_max = args[:10]
    a_ptr = builder.inttoptr(a_addr, _I8.as_pointer())
    b_ptr = builder.inttoptr(b_addr, _I8.as_pointer())
    q_ptr = builder.inttoptr(q_addr, _I32.as_pointer())
    out_ptr = builder.inttoptr(out_addr, _I8.as_pointer())
    const = lambda v: ir.Constant(_I64, v)

    def step(i, accs):
        weights = []  # channels 0-7 and 8-15 of the panel, taps 2i and 2i+1 of each
        for half in range(2):
            ptr = builder.gep(b_ptr, [builder.add(builder.mul(i, const(32)), const(16 * half))])
            raw = builder.load(builder.bitcast(ptr, _V16I8.as_pointer()), align=1)
            weights.append(builder.sext(raw, _V16I16))
        new = []
        for r in range(rows):  # broadcast row r's pair (x[2i], x[2i+1]) to all 8 int32 lanes
            offset = builder.add(builder.mul(const(r), a_row), builder.mul(i, const(4)))
            ptr = builder.bitcast(builder.gep(a_ptr, [offset]), _I32.as_pointer())
            xs = builder.bitcast(_splat(builder, builder.load(ptr, align=4)), _V16I16)
            for h, w in enumerate(weights):
                new.append(builder.add(accs[2 * r + h], _madd(builder, xs, w)))
        return new

    sums = _accumulate(builder, k2, 2 * rows, step, "qtile")

    def q_row(row, half):  # q is int32 [4, 16]: bias, M, left, right of the panel's channels
        ptr = builder.gep(q_ptr, [const(16 * row + 8 * half)])
        return builder.load(builder.bitcast(ptr, _V8I32.as_pointer()), align=4)

    v16i8 = ir.VectorType(_I8, 16)

    def store_rows(n_params, requant):
        params = [[q_row(row, h) for row in range(n_params)] for h in range(2)]
        for r in range(rows):
            lo, hi = (requant(sums[2 * r + h], params[h]) for h in range(2))
            both = builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(_I32, 16),
                                                              list(range(16))))  # fmt: skip
            ptr = builder.gep(out_ptr, [builder.mul(const(r), out_row)])
            builder.store(builder.trunc(both, v16i8), builder.bitcast(ptr, v16i8.as_pointer()),
                          align=1)  # fmt: skip

    if fp32:
        store_rows(2, lambda acc, p: _fp32_vec(builder, acc, *p, out_zp, act_min, act_max))
    else:
        store_rows(4, lambda acc, p: _requant_vec(builder, acc, *p, out_zp, act_min, act_max,
                                                  saturate=False))  # fmt: skip
    return context.get_dummy_value()


def _make_qtile(rows):
    @intrinsic
    def qtile(typingctx, a_addr, a_row, b_addr, k2, out_addr, out_row, q_addr, out_zp, act_min,
              act_max, q):  # fmt: skip
        """out[r, 0:16] = requant(Σ_i A[r, 2i:2i+2] · panel[i]) for r < rows (addresses, bytes).

        A: int16 rows `a_row` bytes apart; panel: int8 [k2, 16, 2]; q_addr: [4, 16] of the
        plan's array `q`, whose dtype picks the epilogue (`_is_fp32`): int32 bias, M, left,
        right (`_requant_vec`) or uint32 bias and float32 scale bits (`_fp32_vec`); out: int8
        rows `out_row` bytes apart.
        """
        fp32 = _is_fp32(q)

        def codegen(context, builder, signature, args):
            return _qtile_codegen(context, builder, signature, args, rows, fp32)

        return types.void(*[types.int64] * 10, q), codegen

    return qtile


# The tiles leave out SRDHM's INT32_MIN·INT32_MIN saturation: plans exist only when no M is
# INT32_MIN (see `plan_conv2d_int8`). Each unrolled tile costs seconds of LLVM optimization on a
# cold cache, so there are just these two.
_qtile = _make_qtile(ROWS)
_qtile1 = _make_qtile(1)  # a last block of one pixel (7x7 = 8·6 + 1)


class ConvInt8Plan(NamedTuple):
    """What `conv2d_int8_fast` needs besides the input, made once by `plan_conv2d_int8`
    (or `plan_conv2d_int8_fp32`)."""

    panels: np.ndarray  # int8 [ceil(Co/16), k2, 16, 2]
    q: np.ndarray  # [ceil(Co/16), 4, 16]: int32 bias, M, left, right (0 past Co), or uint32
    # bias and float32 scale bits (`plan_conv2d_int8_fp32`): the dtype picks the epilogue
    ints: np.ndarray  # int64: out_c, k_h, k_w, in_zp, out_zp, act_min, act_max, geometry
    in_c: int
    out_hwc: tuple  # (out_h, out_w, out_c)


def _conv_plan(packed: PackedConvWeights, q_rows, dtype, in_zp, out_zp, act_min, act_max,
               geometry) -> ConvInt8Plan:  # fmt: skip
    """q_rows: up to 4 [Co] arrays, the tile's per-channel parameters (0 past Co), as `dtype`."""
    n_panels = packed.panels.shape[0]
    q = np.zeros((n_panels * LANES, 4), dtype)
    q[: packed.out_c, : len(q_rows)] = np.stack(q_rows, axis=1)
    q = np.ascontiguousarray(q.reshape(n_panels, LANES, 4).transpose(0, 2, 1))
    ints = np.array([packed.out_c, packed.k_h, packed.k_w, in_zp, out_zp, act_min, act_max,
                     *geometry], np.int64)  # fmt: skip
    out_h, out_w = geometry[-2:]
    return ConvInt8Plan(packed.panels, q, ints, packed.in_c, (out_h, out_w, packed.out_c))


def plan_conv2d_int8(packed: PackedConvWeights, bias, in_zp, mult, shift, out_zp, act_min,
                     act_max, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h,
                     out_w):  # fmt: skip
    """A `ConvInt8Plan`, or None for multipliers QuantizeMultiplier never makes: a right shift
    > 31 with M ≠ 0, or M = INT32_MIN (SRDHM's saturating case, left out of the tiles)."""
    params = requant_params(bias, mult, shift)
    if params is None or np.any(params[1] == -(2**31)):
        return None
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    return _conv_plan(packed, params, np.int32, in_zp, out_zp, act_min, act_max, geometry)


def plan_conv2d_int8_fp32(packed: PackedConvWeights, bias, in_zp, scale, out_zp, act_min,
                          act_max, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h,
                          out_w) -> ConvInt8Plan:  # fmt: skip
    """A `ConvInt8Plan` with XNNPACK's float32 requantization (`xnnpack.requantize_fp32`,
    scale [Co] float32) instead of MBQM; `run_conv2d_int8` runs it. The accumulators are the
    same exact int32 sums, so the output is that of `xnnpack.requantize_fp32` applied to
    `hybrid.conv_accumulators` (zero point in_zp) plus the bias."""
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    q_rows = _fp32_bits(bias, scale)
    return _conv_plan(packed, q_rows, np.uint32, in_zp, out_zp, act_min, act_max, geometry)


def _fp32_bits(bias, scale):
    """The fp32 epilogue's per-channel parameters as uint32 bits: int32 bias, float32 scale."""
    return (np.ascontiguousarray(bias, np.int32).view(np.uint32),
            np.ascontiguousarray(scale, np.float32).view(np.uint32))  # fmt: skip


def _widen_codegen(context, builder, signature, args):
    src_addr, dst_addr, groups, zp = args
    const = lambda v: ir.Constant(_I64, v)
    src = builder.inttoptr(src_addr, _I8.as_pointer())
    dst = builder.inttoptr(dst_addr, _I16.as_pointer())
    zps = _splat(builder, zp, _V16I16)
    entry = builder.block
    loop = builder.function.append_basic_block("widen_loop")
    done = builder.function.append_basic_block("widen_done")
    builder.cbranch(builder.icmp_signed(">", groups, const(0)), loop, done)
    builder.position_at_end(loop)
    g = builder.phi(_I64)
    at = builder.mul(g, const(16))
    xs = builder.load(builder.bitcast(builder.gep(src, [at]), _V16I8.as_pointer()), align=1)
    diff = builder.sub(builder.sext(xs, _V16I16), zps)
    builder.store(diff, builder.bitcast(builder.gep(dst, [at]), _V16I16.as_pointer()), align=2)
    g_next = builder.add(g, const(1))
    builder.cbranch(builder.icmp_signed("<", g_next, groups), loop, done)
    g.add_incoming(const(0), entry)
    g.add_incoming(g_next, loop)
    builder.position_at_end(done)
    return context.get_dummy_value()


@intrinsic
def _widen(typingctx, src_addr, dst_addr, groups, zp):
    """dst[0:16·groups] = int16(src[0:16·groups]) - zp (int8 src, int16 dst; addresses).

    An intrinsic rather than a kernel: a call to another kernel is not inlined and costs
    reference counting, which per im2col run was most of the packing time.
    """
    return types.void(types.int64, types.int64, types.int64, types.int64), _widen_codegen


@inline_kernel
def _addr(a):
    """a's data address as int64 (uintp + int64 would be float64 in Numba's promotion)."""
    return np.int64(a.ctypes.data)


@inline_kernel
def _copy_run(xf, src, a, k, n, zp):
    """a[k : k+n] = int16(xf[src : src+n]) - zp, 16 at a time (see `_pack_block`)."""
    if src + (n + 15) // 16 * 16 <= xf.size:
        _widen(_addr(xf) + src, _addr(a) + 2 * k, (n + 15) // 16, np.int64(zp))
    else:
        for i in range(n):
            a[k + i] = np.int16(xf[src + i]) - zp


@kernel
def _pack_block(x, xf, a, kp, p0, rows, zp, ints):
    """A block a [ROWS·Kp + 16] int16 for output pixels p0..p0+rows-1: im2col minus zp, taps
    outside the image 0, rows past `rows` 0. xf is x flattened (once per call: ~20 ns).

    Each run of n values is copied 16 at a time, writing up to 15 values past its end when
    the source has room; rows and runs are written in increasing order, so those values are
    overwritten by the next run, row or zero fill (`a` has 16 spare elements for the last).
    """
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    k_h, k_w, out_h, out_w = ints[1], ints[2], ints[13], ints[14]
    stride_h, stride_w, dil_h, dil_w = ints[7], ints[8], ints[9], ints[10]
    pad_top, pad_left = ints[11], ints[12]
    depth = k_h * k_w * in_c
    pointwise = k_h == 1 and k_w == 1 and stride_h == 1 and stride_w == 1
    same_grid = pad_top == 0 and pad_left == 0 and out_h == in_h and out_w == in_w
    if pointwise and same_grid and kp == depth:  # pixel p's input row is A's row p - p0
        _copy_run(xf, p0 * in_c, a, 0, rows * in_c, zp)
        a[rows * in_c :] = 0
        return
    b, rest = divmod(p0, out_h * out_w)  # then stepped: a division costs ~40 cycles
    oy, ox = divmod(rest, out_w)
    row_run = k_w * in_c
    for r in range(rows):
        k = r * kp
        ix0 = ox * stride_w - pad_left
        whole = dil_w == 1 and 0 <= ix0 and ix0 + k_w <= in_w  # the kx taps are one run
        for ky in range(k_h):
            iy = oy * stride_h - pad_top + ky * dil_h
            if iy < 0 or iy >= in_h:
                a[k : k + row_run] = 0
                k += row_run
            elif whole:
                _copy_run(xf, ((b * in_h + iy) * in_w + ix0) * in_c, a, k, row_run, zp)
                k += row_run
            else:
                for kx in range(k_w):
                    ix = ix0 + kx * dil_w
                    if 0 <= ix < in_w:
                        _copy_run(xf, ((b * in_h + iy) * in_w + ix) * in_c, a, k, in_c, zp)
                    else:
                        a[k : k + in_c] = 0
                    k += in_c
        if kp > depth:
            a[k] = 0
        ox += 1
        if ox == out_w:
            ox, oy = 0, oy + 1
            if oy == out_h:
                oy, b = 0, b + 1
    a[rows * kp :] = 0


@inline_kernel
def _copy_tile(tail, out, p0, oc0, rows, width):
    """out[p0 : p0+rows, oc0 : oc0+width] = tail[:rows, :width], element by element: Numba's
    array-to-slice assignment compiles its shape-mismatch message (str/join of the shapes),
    about 4 s of a first int8 run's compile time, for a copy whose shapes always agree."""
    for r in range(rows):
        for j in range(width):
            out[p0 + r, oc0 + j] = tail[r, j]


@kernel
def _qgemm_part(x, panels, q, ints, out, blk0, blk1, pan0, pan1):
    """Row blocks blk0..blk1-1 × weight panels pan0..pan1-1 of out [P, Co] int8.

    Full tiles store straight into `out`; the last row block and the last (partial) panel go
    through a [ROWS, 16] scratch tile and are copied.
    """
    out_c, pixels = out.shape[1], out.shape[0]
    k2 = panels.shape[1]
    kp = 2 * k2
    zp = np.int16(ints[3])
    out_zp, act_min, act_max = ints[4], ints[5], ints[6]
    a = np.empty(ROWS * kp + 16, np.int16)  # + room for `_copy_run`'s last 16
    xf = x.reshape(x.size)
    tail = np.empty((ROWS, LANES), np.int8)
    aa, pa, qa, oa, ta = _addr(a), _addr(panels), _addr(q), _addr(out), _addr(tail)
    panel_bytes = k2 * LANES * 2
    for blk in range(blk0, blk1):
        p0 = blk * ROWS
        rows = min(ROWS, pixels - p0)
        _pack_block(x, xf, a, kp, p0, rows, zp, ints)
        for j in range(pan0, pan1):
            oc0 = j * LANES
            width = min(LANES, out_c - oc0)
            direct = rows == ROWS and width == LANES
            dst = oa + p0 * out_c + oc0 if direct else ta
            stride = out_c if direct else LANES
            panel, qj = pa + j * panel_bytes, qa + j * 4 * LANES * 4
            if rows == 1:
                _qtile1(aa, 2 * kp, panel, k2, dst, stride, qj, out_zp, act_min, act_max, q)
            else:
                _qtile(aa, 2 * kp, panel, k2, dst, stride, qj, out_zp, act_min, act_max, q)
            if not direct:
                _copy_tile(tail, out, p0, oc0, rows, width)


@kernel
def _qgemm_serial(x, panels, q, ints):
    pixels = x.shape[0] * ints[13] * ints[14]
    out = np.empty((pixels, ints[0]), np.int8)
    _qgemm_part(x, panels, q, ints, out, 0, (pixels + ROWS - 1) // ROWS, 0, panels.shape[0])
    return out


@kernel(parallel=True)
def _qgemm_parallel(x, panels, q, ints, threads):
    """`_qgemm_serial` on `threads` parts: split over row blocks, or over weight panels when
    there are fewer row blocks than threads."""
    pixels = x.shape[0] * ints[13] * ints[14]
    out = np.empty((pixels, ints[0]), np.int8)
    blocks = (pixels + ROWS - 1) // ROWS
    n_panels = panels.shape[0]
    by_rows = blocks >= threads or n_panels < 2
    parts = min(threads, blocks if by_rows else n_panels)
    for t in prange(parts):
        lo, hi = (t * blocks) // parts, ((t + 1) * blocks) // parts
        p_lo, p_hi = (t * n_panels) // parts, ((t + 1) * n_panels) // parts
        if by_rows:
            p_lo, p_hi = 0, n_panels
        else:
            lo, hi = 0, blocks
        _qgemm_part(x, panels, q, ints, out, lo, hi, p_lo, p_hi)
    return out


def kernel_threads(n) -> int:
    """The thread count to pass to `run_*_int8` for an interpreter running on n threads."""
    return max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))


def _threads(threads):
    """Numba's current thread count unless given (asking costs ~2 µs, a tenth of a small layer)."""
    return numba.get_num_threads() if threads is None else threads


def run_conv2d_int8(plan: ConvInt8Plan, x, threads=None) -> np.ndarray:
    """Run a `ConvInt8Plan` on x [N, H, W, Ci] int8 → [N, out_h, out_w, Co] int8 on `threads`
    threads (default: numba.get_num_threads()).

    The serial kernel is a separate entry point so that one-thread runs neither start nor
    compile the parallel region (compiling it costs seconds on a cold cache).
    """
    x = np.ascontiguousarray(x, np.int8)
    assert x.shape[3] == plan.in_c, "input channels differ from the filter's"
    threads = _threads(threads)
    if threads == 1:
        out = _qgemm_serial(x, plan.panels, plan.q, plan.ints)
    else:
        out = _qgemm_parallel(x, plan.panels, plan.q, plan.ints, threads)
    return out.reshape(x.shape[0], *plan.out_hwc)


# --- DEPTHWISE_CONV_2D -------------------------------------------------------------------------


def pack_depthwise_weights(w) -> np.ndarray:
    """Prepare-time repacking of a DEPTHWISE_CONV_2D filter [1, KH, KW, Co] int8 → int16 [KH, KW, Co]."""
    return np.ascontiguousarray(np.asarray(w)[0], dtype=np.int16)


def _dw_tap16_codegen(context, builder, signature, args):
    acc_addr, x_addr, w_addr, zp = args
    v16i32 = ir.VectorType(_I32, 16)
    xs = builder.load(builder.inttoptr(x_addr, _V16I8.as_pointer()), align=1)
    zp16 = builder.insert_element(
        ir.Constant(_V16I16, ir.Undefined), builder.trunc(zp, _I16), ir.Constant(_I32, 0)
    )
    zp16 = builder.shuffle_vector(
        zp16, ir.Constant(_V16I16, ir.Undefined), ir.Constant(ir.VectorType(_I32, 16), [0] * 16)
    )
    xs = builder.sub(builder.sext(xs, _V16I16), zp16)  # x - in_zp: exact in int16
    ws = builder.load(builder.inttoptr(w_addr, _V16I16.as_pointer()), align=2)
    prod = builder.sext(builder.mul(xs, ws), v16i32)  # |product| <= 255·128: exact in int16
    acc_ptr = builder.inttoptr(acc_addr, v16i32.as_pointer())
    builder.store(builder.add(builder.load(acc_ptr, align=4), prod), acc_ptr, align=4)
    return context.get_dummy_value()


@intrinsic
def _dw_tap16(typingctx, acc_addr, x_addr, w_addr, zp):
    """acc[0:16] += int16(x[0:16] - zp) * w[0:16] (int32 acc, int8 x, int16 w; addresses)."""
    return types.void(types.uintp, types.uintp, types.uintp, types.int64), _dw_tap16_codegen


@kernel
def _dw_pixel(acc, x, w16, b, oy, ox, in_zp, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
              depth_multiplier, xs):  # fmt: skip
    """acc [Co] = the depthwise accumulators of output pixel (b, oy, ox); xs [Ci] int16 scratch.

    acc[oc] += int16(x - in_zp) * w: |x - in_zp| <= 255 and |w| <= 128, so the product fits
    int16 and `_dw_tap16` multiplies 16 channels per `vpmullw`; accumulation is int32
    (wrapping). Taps outside the image are skipped, as in the reference.
    """
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    k_h, k_w, out_c = w16.shape
    zp = np.int16(in_zp)
    acc[:] = 0
    for ky in range(k_h):
        iy = oy * stride_h - pad_top + ky * dil_h
        if iy < 0 or iy >= in_h:
            continue
        for kx in range(k_w):
            ix = ox * stride_w - pad_left + kx * dil_w
            if ix < 0 or ix >= in_w:
                continue
            xrow = x[b, iy, ix]
            wrow = w16[ky, kx]
            if depth_multiplier == 1:
                vec_end = out_c - out_c % 16
                for c in range(0, vec_end, 16):
                    _dw_tap16(
                        acc.ctypes.data + 4 * c,
                        xrow.ctypes.data + c,
                        wrow.ctypes.data + 2 * c,
                        np.int64(in_zp),
                    )
                for c in range(vec_end, out_c):
                    acc[c] += np.int16(np.int16(xrow[c]) - zp) * wrow[c]
            else:
                for c in range(in_c):
                    xs[c] = np.int16(xrow[c]) - zp
                for oc in range(out_c):
                    acc[oc] += xs[oc // depth_multiplier] * wrow[oc]


@kernel
def _dw_rows(x, w16, bias, m, left, right, in_zp, out_zp, act_min, act_max, stride_h, stride_w,
             dil_h, dil_w, pad_top, pad_left, depth_multiplier, out, row0, row1):  # fmt: skip
    """Output rows row0..row1-1 (row = batch*out_h + oy) of the depthwise conv into out."""
    out_h, out_w, out_c = out.shape[1], out.shape[2], out.shape[3]
    acc = np.empty(out_c, np.int32)
    xs = np.empty(x.shape[3], np.int16)
    for row in range(row0, row1):
        b = row // out_h
        oy = row - b * out_h
        for ox in range(out_w):
            _dw_pixel(acc, x, w16, b, oy, ox, in_zp, stride_h, stride_w, dil_h, dil_w, pad_top,
                      pad_left, depth_multiplier, xs)  # fmt: skip
            _requant_row(acc, out[b, oy, ox], bias, m, left, right, out_zp, act_min, act_max)


@kernel(parallel=True)
def _dw(x, w16, bias, m, left, right, in_zp, out_zp, act_min, act_max, stride_h, stride_w,
        dil_h, dil_w, pad_top, pad_left, out_h, out_w, depth_multiplier, threads):  # fmt: skip
    rows = x.shape[0] * out_h
    out = np.empty((x.shape[0], out_h, out_w, w16.shape[2]), np.int8)
    parts = min(threads, rows)
    for t in prange(parts):
        _dw_rows(
            x,
            w16,
            bias,
            m,
            left,
            right,
            in_zp,
            out_zp,
            act_min,
            act_max,
            stride_h,
            stride_w,
            dil_h,
            dil_w,
            pad_top,
            pad_left,
            depth_multiplier,
            out,
            (t * rows) // parts,
            ((t + 1) * rows) // parts,
        )
    return out


# --- int8 DEPTHWISE_CONV_2D: 16 channels of a pixel, all taps in registers --------------------
#
# A pixel whose every tap lies in the image needs no zero-point bookkeeping per tap:
# Σ w·(x - zp) = Σ w·x - zp·Σw (mod 2^32), so the plan folds -zp·Σw into the bias and the
# tile multiplies raw int8 x. Taps go in pairs through `vpmaddwd`: x of taps t and t+1
# interleaved per channel (|w·x| ≤ 128·128, a pair sum fits int32), weights pre-interleaved
# the same way, an odd tap count padded with a zero-weight tap. 16 channels per call, their
# accumulators in registers, then the fused requantization. A border pixel's off-image taps
# read a row of in_zp instead (w·zp, which the folded bias cancels: the reference skips them).
# Depth multipliers > 1 and channel counts not a multiple of 16 run `_dw_pixel` and
# `_requant_row` with the plain bias.

_LO = [0, 16, 1, 17, 2, 18, 3, 19, 8, 24, 9, 25, 10, 26, 11, 27]  # channels 0-3, 8-11
_HI = [4, 20, 5, 21, 6, 22, 7, 23, 12, 28, 13, 29, 14, 30, 15, 31]  # channels 4-7, 12-15
_DW_ORDER = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]  # lanes of the lo, hi accs


def _dw16_codegen(context, builder, signature, args, fp32):
    x_addr, offs_addr, w_addr, pairs, q_addr, out_addr, out_zp, act_min, act_max = args[:9]
    const = lambda v: ir.Constant(_I64, v)
    x_ptr = builder.inttoptr(x_addr, _I8.as_pointer())
    offs = builder.inttoptr(offs_addr, _I64.as_pointer())
    w_ptr = builder.inttoptr(w_addr, _V16I16.as_pointer())
    q_ptr = builder.inttoptr(q_addr, _V8I32.as_pointer())
    v32 = lambda idx: ir.Constant(ir.VectorType(_I32, len(idx)), idx)
    entry = builder.block
    loop = builder.function.append_basic_block("dw_loop")
    done = builder.function.append_basic_block("dw_done")
    zero = ir.Constant(_V8I32, None)
    builder.cbranch(builder.icmp_signed(">", pairs, const(0)), loop, done)

    builder.position_at_end(loop)
    i = builder.phi(_I64)
    accs = [builder.phi(_V8I32) for _ in range(2)]
    xs = []
    for t in range(2):  # taps 2i and 2i+1: 16 channels of int8 x, sign-extended
        off = builder.load(builder.gep(offs, [builder.add(builder.mul(i, const(2)), const(t))]))
        ptr = builder.bitcast(builder.gep(x_ptr, [off]), _V16I8.as_pointer())
        xs.append(builder.sext(builder.load(ptr, align=1), _V16I16))
    new = []
    for h, idx in enumerate((_LO, _HI)):
        pair = builder.shuffle_vector(xs[0], xs[1], v32(idx))
        w = builder.load(builder.gep(w_ptr, [builder.add(builder.mul(i, const(2)), const(h))]),
                         align=2)  # fmt: skip
        new.append(builder.add(accs[h], _madd(builder, pair, w)))
    i_next = builder.add(i, const(1))
    builder.cbranch(builder.icmp_signed("<", i_next, pairs), loop, done)
    i.add_incoming(const(0), entry)
    i.add_incoming(i_next, loop)
    for acc, value in zip(accs, new):
        acc.add_incoming(zero, entry)
        acc.add_incoming(value, loop)

    builder.position_at_end(done)
    sums = []
    for h in range(2):
        phi = builder.phi(_V8I32)
        phi.add_incoming(zero, entry)
        phi.add_incoming(new[h], loop)
        sums.append(phi)
    back = [_DW_ORDER.index(c) for c in range(16)]  # lane order → channel order
    v16i8 = ir.VectorType(_I8, 16)

    def store(n_params, requant):
        outs = []
        for h in range(2):  # q: int32 [4, 16] in _DW_ORDER lanes (see `_dw16`)
            params = [builder.load(builder.gep(q_ptr, [const(2 * row + h)]), align=4)
                      for row in range(n_params)]  # fmt: skip
            outs.append(requant(sums[h], params))
        both = builder.shuffle_vector(outs[0], outs[1], v32(back))
        builder.store(builder.trunc(both, v16i8), builder.inttoptr(out_addr, v16i8.as_pointer()),
                      align=1)  # fmt: skip

    if fp32:
        store(2, lambda acc, p: _fp32_vec(builder, acc, *p, out_zp, act_min, act_max))
    else:
        store(4, lambda acc, p: _requant_vec(builder, acc, *p, out_zp, act_min, act_max,
                                             saturate=False))  # fmt: skip
    return context.get_dummy_value()


@intrinsic
def _dw16(typingctx, x_addr, offs_addr, w_addr, pairs, q_addr, out_addr, out_zp, act_min,
          act_max, q):  # fmt: skip
    """out[0:16] = requant(Σ_t x[offs[t] + c] · w[t, c]) for 16 channels c (addresses).

    offs: int64 [2·pairs] byte offsets of the taps from x_addr; w: int16 [pairs, 2, 16], the
    pairs interleaved as `_LO`/`_HI`; q_addr: [4, 16] of the plan's `q` in `_DW_ORDER` lane
    order, int32 bias', M ≠ INT32_MIN, left, right, or uint32 bias' and float32 scale bits
    (the dtype of `q` picks the epilogue, `_is_fp32`).
    """
    fp32 = _is_fp32(q)

    def codegen(context, builder, signature, args):
        return _dw16_codegen(context, builder, signature, args, fp32)

    return types.void(*[types.int64] * 9, q), codegen


class DepthwiseInt8Plan(NamedTuple):
    """What `depthwise_conv2d_int8_fast` needs besides the input (`plan_depthwise_int8`, or
    `plan_depthwise_int8_fp32`: then params and q are uint32, bias and float32 scale bits in
    place of bias, M and 0, 0 in place of left, right)."""

    w16: np.ndarray  # int16 [KH, KW, Co]: border pixels
    params: np.ndarray  # int32 [4, Co]: bias, M, left, right (border pixels)
    w_pairs: np.ndarray  # int16 [Co/16, pairs, 2, 16]: interior pixels (empty: none)
    q: np.ndarray  # int32 [Co/16, 4, 16]: bias - zp·Σw, M, left, right in _DW_ORDER
    ints: np.ndarray  # int64: in_zp, out_zp, act_min, act_max, geometry, depth_multiplier


def _interleave_taps(w16):
    """int16 [KH, KW, Co] → [Co/16, pairs, 2, 16]: per 16 channels, tap pairs as `_LO`/`_HI`."""
    out_c = w16.shape[2]
    taps = w16.reshape(-1, out_c // LANES, LANES).transpose(1, 0, 2)  # [groups, T, 16]
    if taps.shape[1] % 2:
        taps = np.concatenate([taps, np.zeros_like(taps[:, :1])], axis=1)
    pairs = taps.reshape(taps.shape[0], -1, 2 * LANES)  # [groups, pairs, (tap 2i, tap 2i+1)]
    return np.ascontiguousarray(pairs[:, :, [_LO, _HI]], np.int16)


def plan_depthwise_int8(w16, bias, in_zp, mult, shift, out_zp, act_min, act_max, stride_h,
                        stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                        depth_multiplier):  # fmt: skip
    """A `DepthwiseInt8Plan`, or None for multipliers QuantizeMultiplier never makes (a right
    shift > 31 with M ≠ 0, or M = INT32_MIN: see `plan_conv2d_int8`)."""
    params = requant_params(bias, mult, shift)
    if params is None or np.any(params[1] == -(2**31)):
        return None
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                depth_multiplier)
    return _depthwise_plan(w16, np.stack(params), in_zp, out_zp, act_min, act_max, geometry)


def plan_depthwise_int8_fp32(w16, bias, in_zp, scale, out_zp, act_min, act_max, stride_h,
                             stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                             depth_multiplier) -> DepthwiseInt8Plan:  # fmt: skip
    """A `DepthwiseInt8Plan` with XNNPACK's float32 requantization (scale [Co] float32; see
    `plan_conv2d_int8_fp32`): `xnnpack.requantize_fp32` of `hybrid.depthwise_accumulators`
    (zero point in_zp) plus the bias."""
    params = np.zeros((4, np.shape(scale)[0]), np.uint32)
    params[:2] = _fp32_bits(bias, scale)
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                depth_multiplier)
    return _depthwise_plan(w16, params, in_zp, out_zp, act_min, act_max, geometry)


def _depthwise_plan(w16, params, in_zp, out_zp, act_min, act_max,
                    geometry) -> DepthwiseInt8Plan:  # fmt: skip
    """params [4, Co] int32 or uint32 (see `DepthwiseInt8Plan`), the bias bits first."""
    depth_multiplier = geometry[-1]
    w16 = np.ascontiguousarray(w16, np.int16)
    out_c = w16.shape[2]
    w_pairs, q = np.zeros((0, 0, 2, LANES), np.int16), np.zeros((0, 4, LANES), params.dtype)
    if depth_multiplier == 1 and out_c % LANES == 0:
        w_pairs = _interleave_taps(w16)
        sum_w = w16.reshape(-1, out_c).astype(np.int64).sum(axis=0)
        folded = params.copy()
        bias = params[0].view(np.int32).astype(np.int64)
        folded[0] = (bias - in_zp * sum_w).astype(np.int32).view(params.dtype)  # mod 2^32
        q = np.ascontiguousarray(folded.reshape(4, -1, LANES).transpose(1, 0, 2)[:, :, _DW_ORDER])
    ints = np.array([in_zp, out_zp, act_min, act_max, *geometry], np.int64)
    return DepthwiseInt8Plan(w16, params, w_pairs, q, ints)


@kernel
def _dw_plan_rows(x, plan_w16, params, w_pairs, q, ints, out, row0, row1):
    """Output rows row0..row1-1 (row = batch·out_h + oy) of out [N, out_h, out_w, Co]."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w, out_c = out.shape[1], out.shape[2], out.shape[3]
    k_h, k_w = plan_w16.shape[0], plan_w16.shape[1]
    in_zp, out_zp, act_min, act_max = ints[0], ints[1], ints[2], ints[3]
    stride_h, stride_w, dil_h, dil_w = ints[4], ints[5], ints[6], ints[7]
    pad_top, pad_left, depth_multiplier = ints[8], ints[9], ints[12]
    acc = np.empty(out_c, np.int32)
    xs = np.empty(in_c, np.int16)
    groups, pairs = w_pairs.shape[0], w_pairs.shape[1]
    zp_row = np.full(in_c, in_zp, np.int8)  # what an off-image tap reads: w·zp, cancelled by bias'
    inner = np.zeros(2 * pairs, np.int64)  # byte offsets of the taps from tap (0, 0): interior
    edge = np.zeros(2 * pairs, np.int64)  # the same for one border pixel
    for t in range(k_h * k_w if groups > 0 else 0):
        inner[t] = ((t // k_w) * dil_h * in_w + (t % k_w) * dil_w) * in_c
    # interior: ox in [ox_lo, ox_hi) has every kx tap in the image
    ox_lo = min(out_w, max(0, -(-pad_left // stride_w)))
    ox_hi = max(ox_lo, min(out_w, (in_w - 1 - (k_w - 1) * dil_w + pad_left) // stride_w + 1))
    xa, oa, wa, qa, za = _addr(x), _addr(out), _addr(w_pairs), _addr(q), _addr(zp_row)
    inner_at, edge_at = _addr(inner), _addr(edge)
    w_group, q_group = pairs * 2 * LANES * 2, 4 * LANES * 4  # bytes per 16 channels
    for row in range(row0, row1):
        b = row // out_h
        oy = row - b * out_h
        iy0 = oy * stride_h - pad_top
        rows_in = iy0 >= 0 and iy0 + (k_h - 1) * dil_h < in_h
        for ox in range(out_w):
            if groups == 0:  # depth multiplier > 1 or channels not a multiple of 16
                _dw_pixel(acc, x, plan_w16, b, oy, ox, in_zp, stride_h, stride_w, dil_h, dil_w,
                          pad_top, pad_left, depth_multiplier, xs)  # fmt: skip
                _pixel_requant(acc, out[b, oy, ox], params, out_zp, act_min, act_max)
                continue
            ix0 = ox * stride_w - pad_left
            src = xa + ((b * in_h + iy0) * in_w + ix0) * in_c  # tap (0, 0), maybe off-image
            offs = inner_at  # an address: an array variable here would be reference-counted
            if not (rows_in and ox_lo <= ox < ox_hi):
                offs = edge_at
                edge[:] = za - src  # the zero-weight padding tap reads zp_row too
                t = 0
                for ky in range(k_h):
                    iy = iy0 + ky * dil_h
                    for kx in range(k_w):
                        ix = ix0 + kx * dil_w
                        if 0 <= iy < in_h and 0 <= ix < in_w:
                            edge[t] = inner[t]
                        t += 1
            dst = oa + ((b * out_h + oy) * out_w + ox) * out_c
            for g in range(groups):
                _dw16(src + g * LANES, offs, wa + g * w_group, pairs, qa + g * q_group,
                      dst + g * LANES, out_zp, act_min, act_max, q)  # fmt: skip


@kernel
def _dw_plan_serial(x, w16, params, w_pairs, q, ints):
    out = np.empty((x.shape[0], ints[10], ints[11], w16.shape[2]), np.int8)
    _dw_plan_rows(x, w16, params, w_pairs, q, ints, out, 0, x.shape[0] * ints[10])
    return out


@kernel(parallel=True)
def _dw_plan_parallel(x, w16, params, w_pairs, q, ints, threads):
    out = np.empty((x.shape[0], ints[10], ints[11], w16.shape[2]), np.int8)
    rows = x.shape[0] * ints[10]
    parts = min(threads, rows)
    for t in prange(parts):
        _dw_plan_rows(x, w16, params, w_pairs, q, ints, out, (t * rows) // parts,
                      ((t + 1) * rows) // parts)  # fmt: skip
    return out


def run_depthwise_int8(plan: DepthwiseInt8Plan, x, threads=None) -> np.ndarray:
    """Run a `DepthwiseInt8Plan` on x [N, H, W, Ci] int8 → [N, out_h, out_w, Co] int8 on
    `threads` threads (default: numba.get_num_threads())."""
    x = np.ascontiguousarray(x, np.int8)
    assert x.shape[3] * plan.ints[12] == plan.w16.shape[2], "channels differ from the filter's"
    threads = _threads(threads)  # one thread: the serial entry point, as in `run_conv2d_int8`
    if threads == 1:
        return _dw_plan_serial(x, plan.w16, plan.params, plan.w_pairs, plan.q, plan.ints)
    return _dw_plan_parallel(x, plan.w16, plan.params, plan.w_pairs, plan.q, plan.ints, threads)


def depthwise_conv2d_int8_fast(x, w16, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                               stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                               depth_multiplier):  # fmt: skip
    """Bit-exact fast twin of `conv.depthwise_conv2d_int8` (reference DepthwiseConvPerChannel).

    depthwise_conv2d_int8_fast(x, w16, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                               stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                               out_h, out_w, depth_multiplier)

    x [N, H, W, Ci] int8; w16 = pack_depthwise_weights(w) for w [1, KH, KW, Co], Co = Ci·dm;
    bias [Co] int32; mult/shift [Co] → [N, out_h, out_w, Co] int8. Channels are innermost and
    vectorized; threads split output rows. Multipliers QuantizeMultiplier never makes run the
    reference kernel (right shift > 31) or the per-pixel kernel `_dw` (M = INT32_MIN).
    """
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    params = requant_params(bias, mult, shift)
    if params is None:
        w = np.asarray(w16, np.int8)[None]
        return depthwise_conv2d_int8(x, w, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                                     *geometry, depth_multiplier)  # fmt: skip
    plan = plan_depthwise_int8(w16, bias, in_zp, mult, shift, out_zp, act_min, act_max,
                               *geometry, depth_multiplier)  # fmt: skip
    if plan is not None:
        return run_depthwise_int8(plan, x)
    return _dw(x, w16, *params, in_zp, out_zp, act_min, act_max, *geometry, depth_multiplier,
               numba.get_num_threads())  # fmt: skip


# --- hybrid (float input quantized per image, float output) -----------------------------------


class HybridEpilogue(NamedTuple):
    """The float epilogue of a hybrid op, per image b and output channel c:

        out = clamp((float(wrap32(acc - zp_sums[b, c])) * pre[c]) * scale[b, c] + bias[c], lo, hi)

    every operation in float32, in that order. `pre` is 1 when the op has no per-channel
    factor before the per-image one (x * 1.0f == x), `bias` is -0.0 when the op has none
    (x + -0.0f == x for every x, -0.0 included), and `zp_sums` is 0 except for FULLY_CONNECTED's
    asymmetric `zp_b * rowsum[c]` correction. NaN passes the clamp, as in np.clip.
    """

    pre: np.ndarray  # float32 [Co]
    scale: np.ndarray  # float32 [N, Co]
    bias: np.ndarray  # float32 [Co]
    zp_sums: np.ndarray  # int32 [N, Co]
    lo: np.float32
    hi: np.float32


def hybrid_epilogue(n, out_c, scale, pre=None, bias=None, zp_sums=None, lo=-np.inf,
                    hi=np.inf) -> HybridEpilogue:  # fmt: skip
    """A `HybridEpilogue` for n images and out_c channels: `scale` and `zp_sums` broadcast to
    [n, out_c], `pre` and `bias` to [out_c]; absent terms become their identities (pre 1,
    bias -0.0, zp_sums 0)."""

    def table(v, dtype, shape):
        return np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype), shape))

    return HybridEpilogue(table(1 if pre is None else pre, np.float32, (out_c,)),
                          table(scale, np.float32, (n, out_c)),
                          table(-0.0 if bias is None else np.ravel(bias), np.float32, (out_c,)),
                          table(0 if zp_sums is None else zp_sums, np.int32, (n, out_c)),
                          np.float32(lo), np.float32(hi))


@kernel
def _hybrid_row(acc, out, pre, scale, bias, zp_sums, lo, hi):
    """`HybridEpilogue` on one output pixel: acc [Co] int32 → out [Co] float32."""
    for c in range(out.shape[0]):
        total = np.int32(np.int64(acc[c]) - np.int64(zp_sums[c]))  # C int32 wrap
        v = (np.float32(total) * pre[c]) * scale[c] + bias[c]  # float32 products, in order
        if v < lo:
            v = lo
        elif v > hi:
            v = hi
        out[c] = v


@kernel
def _hybrid_gemm_part(x, panels, zps, pre, scale, bias, zp_sums, lo, hi, k_h, k_w, stride_h,
                      stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, out, acc_out,
                      blk0, blk1, pan0, pan1):  # fmt: skip
    """`_gemm_part` with per-image zero points and the hybrid float epilogue into out [P, Co].

    With a non-empty `acc_out` [P, Co] the raw int32 accumulators are stored there instead.
    """
    k2 = panels.shape[1]
    out_c = out.shape[1]
    pixels = out.shape[0]
    per_image = out_h * out_w
    width = (pan1 - pan0) * LANES
    oc0 = pan0 * LANES
    oc1 = min(out_c, pan1 * LANES)
    a = np.empty((k2, ROWS, 2), np.int16)
    c = np.empty((ROWS, width), np.int32)
    pre_s, bias_s = pre[oc0:oc1], bias[oc0:oc1]
    b = 0
    scale_b, zp_sums_b = scale[b, oc0:oc1], zp_sums[b, oc0:oc1]
    for blk in range(blk0, blk1):
        p0 = blk * ROWS
        rows = min(ROWS, pixels - p0)
        _pack_rows(x, a, p0, rows, zps, k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top,
                   pad_left, out_h, out_w)  # fmt: skip
        _tiles(a, panels, c, rows, pan0, pan1)
        for r in range(rows):
            p = p0 + r
            if acc_out.size:
                for j in range(oc1 - oc0):  # no slice assignment: see `_copy_tile`
                    acc_out[p, oc0 + j] = c[r, j]
                continue
            if p // per_image != b:  # slices are not free: take them once per image
                b = p // per_image
                scale_b, zp_sums_b = scale[b, oc0:oc1], zp_sums[b, oc0:oc1]
            _hybrid_row(c[r], out[p, oc0:oc1], pre_s, scale_b, bias_s, zp_sums_b, lo, hi)


@kernel(parallel=True)
def _hybrid_gemm(x, panels, zps, pre, scale, bias, zp_sums, lo, hi, k_h, k_w, stride_h, stride_w,
                 dil_h, dil_w, pad_top, pad_left, out_h, out_w, out, acc_out, threads):  # fmt: skip
    """`_gemm` for hybrid ops: fills out [N*out_h*out_w, Co] float32 (or acc_out int32)."""
    pixels = out.shape[0]
    blocks = (pixels + ROWS - 1) // ROWS
    n_panels = panels.shape[0]
    by_rows = blocks >= threads or n_panels < 2
    parts = min(threads, blocks if by_rows else n_panels)
    for t in prange(parts):
        lo_blk, hi_blk = (t * blocks) // parts, ((t + 1) * blocks) // parts
        p_lo, p_hi = (t * n_panels) // parts, ((t + 1) * n_panels) // parts
        if by_rows:
            p_lo, p_hi = 0, n_panels
        else:
            lo_blk, hi_blk = 0, blocks
        _hybrid_gemm_part(x, panels, zps, pre, scale, bias, zp_sums, lo, hi, k_h, k_w, stride_h,
                          stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, out, acc_out,
                          lo_blk, hi_blk, p_lo, p_hi)  # fmt: skip


_NO_ACC = np.zeros((0, 0), np.int32)


def _hybrid_conv_call(x, packed, zps, e, geometry, raw):
    """Run `_hybrid_gemm` over x [N, H, W, Ci] int8; geometry = (stride_h, ..., out_h, out_w)."""
    n, (out_h, out_w) = x.shape[0], geometry[-2:]
    shape = (n * out_h * out_w, packed.out_c)
    out = np.empty(shape, np.float32)
    acc = np.empty(shape, np.int32) if raw else _NO_ACC
    e = e or hybrid_epilogue(n, packed.out_c, 1)  # not applied: raw
    _hybrid_gemm(np.ascontiguousarray(x, np.int8), packed.panels,
                 np.ascontiguousarray(zps, np.int16), e.pre, e.scale, e.bias, e.zp_sums,
                 np.float32(e.lo), np.float32(e.hi), packed.k_h, packed.k_w, *geometry, out, acc,
                 numba.get_num_threads())  # fmt: skip
    return (acc if raw else out).reshape(n, out_h, out_w, packed.out_c)


def conv2d_int8_acc_fast(x, packed: PackedConvWeights, zps, stride_h, stride_w, dil_h, dil_w,
                         pad_top, pad_left, out_h, out_w):  # fmt: skip
    """Bit-exact fast twin of `hybrid.conv_accumulators` for ungrouped filters.

    x [N, H, W, Ci] int8; packed = pack_conv_weights(w); zps [N] per-image zero points →
    int32 [N, out_h, out_w, Co] = Σ w · (x - zps[b]), taps outside the image skipped.
    """
    assert x.shape[3] == packed.in_c, "grouped convolutions: use hybrid.conv_accumulators"
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    return _hybrid_conv_call(x, packed, zps, None, geometry, raw=True)


def conv2d_hybrid_fast(x, packed: PackedConvWeights, zps, epilogue: HybridEpilogue, stride_h,
                       stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w):  # fmt: skip
    """The integer and float parts of a hybrid CONV_2D: `HybridEpilogue` applied to
    `conv2d_int8_acc_fast(x, packed, zps, ...)`, fused → float32 [N, out_h, out_w, Co]."""
    assert x.shape[3] == packed.in_c, "grouped convolutions: use hybrid.conv_accumulators"
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w)
    return _hybrid_conv_call(x, packed, zps, epilogue, geometry, raw=False)


@kernel(parallel=True)
def _dw_hybrid(x, w16, zps, pre, scale, bias, zp_sums, lo, hi, stride_h, stride_w, dil_h, dil_w,
               pad_top, pad_left, depth_multiplier, out, acc_out, threads):  # fmt: skip
    """`_dw` for hybrid ops: per-image zero points, float epilogue into out [N, OH, OW, Co]
    (or the raw accumulators into a non-empty acc_out of the same shape)."""
    n, out_h, out_w, out_c = out.shape
    rows = n * out_h
    parts = min(threads, rows)
    for t in prange(parts):
        acc = np.empty(out_c, np.int32)
        xs = np.empty(x.shape[3], np.int16)
        for row in range((t * rows) // parts, ((t + 1) * rows) // parts):
            b = row // out_h
            oy = row - b * out_h
            for ox in range(out_w):
                _dw_pixel(acc, x, w16, b, oy, ox, zps[b], stride_h, stride_w, dil_h, dil_w,
                          pad_top, pad_left, depth_multiplier, xs)  # fmt: skip
                if acc_out.size:
                    acc_out[b, oy, ox] = acc
                else:
                    _hybrid_row(acc, out[b, oy, ox], pre, scale[b], bias, zp_sums[b], lo, hi)


def _hybrid_dw_call(x, w16, zps, e, geometry, raw):
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w, depth_multiplier = geometry
    n, out_c = x.shape[0], w16.shape[2]
    out = np.empty((n, out_h, out_w, out_c), np.float32)
    acc = np.empty(out.shape, np.int32) if raw else _NO_ACC4
    e = e or hybrid_epilogue(n, out_c, 1)  # not applied: raw
    _dw_hybrid(np.ascontiguousarray(x, np.int8), w16, np.ascontiguousarray(zps, np.int16), e.pre,
               e.scale, e.bias, e.zp_sums, np.float32(e.lo), np.float32(e.hi), stride_h, stride_w,
               dil_h, dil_w, pad_top, pad_left, depth_multiplier, out, acc,
               numba.get_num_threads())  # fmt: skip
    return acc if raw else out


_NO_ACC4 = np.zeros((0, 0, 0, 0), np.int32)


def depthwise_conv2d_int8_acc_fast(x, w16, zps, stride_h, stride_w, dil_h, dil_w, pad_top,
                                   pad_left, out_h, out_w, depth_multiplier):  # fmt: skip
    """Bit-exact fast twin of `hybrid.depthwise_accumulators`.

    x [N, H, W, Ci] int8; w16 = pack_depthwise_weights(w); zps [N] per-image zero points →
    int32 [N, out_h, out_w, Co] = Σ w · (x - zps[b]), taps outside the image skipped.
    """
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                depth_multiplier)
    return _hybrid_dw_call(x, w16, zps, None, geometry, raw=True)


def depthwise_conv2d_hybrid_fast(x, w16, zps, epilogue: HybridEpilogue, stride_h, stride_w,
                                 dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                                 depth_multiplier):  # fmt: skip
    """`HybridEpilogue` applied to `depthwise_conv2d_int8_acc_fast(x, w16, zps, ...)`, fused →
    float32 [N, out_h, out_w, Co]."""
    geometry = (stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                depth_multiplier)
    return _hybrid_dw_call(x, w16, zps, epilogue, geometry, raw=False)
