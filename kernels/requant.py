"""Requantization epilogues of the int8 GEMM and depthwise kernels, scalar and vector.

* MBQM, the reference kernels' per-channel `MultiplyByQuantizedMultiplier`: `requant_vec`
  (`fixedpoint.requantize` on 8 or 16 int32 lanes of LLVM IR, without branches) and its scalar
  twin `requant` (also int16 ADD/SUB's).
* XNNPACK's float32 requantization (`arithmetic="xnnpack"`): `fp32_vec`, the twin of
  `xnnpack.requantize_fp32`.
* FULLY_CONNECTED's double epilogue (`fc_requant_rows`, as `fully_connected.py`).
* The float epilogue of hybrid ops (`HybridEpilogue`, `hybrid_rows`).

A plan's per-channel parameter array `q` selects the GEMM/depthwise tile's epilogue when the
kernels compile (`epilogue_kind`): int32 holds MBQM's (bias, M, left, right), uint32 the bits
of XNNPACK's (int32 bias, float32 scale), int64 none (the tile stores int32 accumulators).
"""

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from qengine.kernels.emit import HAS_AVX512, I64, USE_AVX2, lanes, splat
from qengine.kernels.fixedpoint import round_half_away_int32
from qengine.kernels.jit import kernel, prange
from qengine.kernels.threads import ELEMENT_FLOPS, part, split_run

MBQM, FP32, RAW = "mbqm", "fp32", "raw"


def epilogue_kind(q) -> str:
    """The epilogue a plan's parameter array type `q` selects, at compile time."""
    return {types.int32: MBQM, types.uint32: FP32}.get(q.dtype, RAW)


def requant_params(bias, mult, shift):
    """Per-channel int32 arrays for `requant` / `requant_vec`: (bias, M, left, right), or None.

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


def fp32_bits(bias, scale):
    """The fp32 epilogue's per-channel parameters as uint32 bits: int32 bias, float32 scale."""
    return (np.ascontiguousarray(bias, np.int32).view(np.uint32),
            np.ascontiguousarray(scale, np.float32).view(np.uint32))  # fmt: skip


# --- MBQM ------------------------------------------------------------------------------------


@kernel
def requant(acc, bias, m, left, right, out_zp, act_min, act_max):
    """The scalar twin of `requant_vec` (SRDHM's INT32_MIN² saturation included):
    `fixedpoint.requantize(wrap32(acc + bias), M, shift, ...)` without branches, with the
    shift amounts bounded by `& 31` so LLVM keeps all but the x·M product in int32."""
    total = np.int32(np.int64(acc) + np.int64(bias))  # C int32 wrap
    x = np.int64(np.int32(np.int64(total) << (np.int64(left) & 31)))
    mm = np.int64(m)
    h = np.int32((x * mm + np.int64(1 << 30)) >> 31)  # floor((x·M + 2^30) / 2^31)
    if x == -(2**31) and mm == -(2**31):
        h = np.int32(2**31 - 1)
    e = np.int32(right) & np.int32(31)
    mask = np.int32((np.int32(1) << e) - np.int32(1))
    threshold = np.int32((mask >> np.int32(1)) + np.int32(h < 0))
    r = np.int32((h >> e) + np.int32((h & mask) > threshold))
    out = np.int32(r + np.int32(out_zp))
    return min(max(out, np.int32(act_min)), np.int32(act_max))


def _srdhm_core(builder, x, m):
    """int32 lanes (8 or 16) floor((x·M + 2^30) / 2^31), the low 32 bits (SRDHM without its
    saturation).

    With AVX2 (AVX-512 for 16 lanes): `vpmuldq` multiplies the even int32 lanes into int64;
    the odd lanes are shifted down first. The even results sit in the low halves after >> 31,
    the odd ones in the high halves after << 1, and one blend merges them (no int64 sign
    extensions or lane shuffles).
    """
    n = x.type.count
    wide_i64 = ir.VectorType(I64, n)
    if not USE_AVX2 or (n == 16 and not HAS_AVX512):
        prod = builder.mul(builder.sext(x, wide_i64), builder.sext(m, wide_i64))
        shifted = builder.ashr(builder.add(prod, splat(builder, 1 << 30, wide_i64)),
                               splat(builder, 31, wide_i64))  # fmt: skip
        return builder.trunc(shifted, x.type)
    pairs = ir.VectorType(I64, n // 2)
    name = "llvm.x86.avx512.pmul.dq.512" if n == 16 else "llvm.x86.avx2.pmul.dq"
    pmuldq = cgutils.get_or_insert_function(builder.module,
                                            ir.FunctionType(pairs, [x.type, x.type]), name)
    c = lambda v: splat(builder, v, pairs)
    odd = lambda v: builder.bitcast(builder.lshr(builder.bitcast(v, pairs), c(32)), x.type)
    even_p = builder.add(builder.call(pmuldq, [x, m]), c(1 << 30))
    odd_p = builder.add(builder.call(pmuldq, [odd(x), odd(m)]), c(1 << 30))
    lo = builder.bitcast(builder.lshr(even_p, c(31)), x.type)  # result in the even lanes
    hi = builder.bitcast(builder.shl(odd_p, c(1)), x.type)  # result in the odd lanes
    return builder.shuffle_vector(lo, hi, lanes([i + n * (i % 2) for i in range(n)]))


def requant_vec(builder, acc, bias, m, left, right, out_zp, act_min, act_max):
    """`fixedpoint.requantize(wrap32(acc + bias), M, shift, ...)` on int32 lanes (8 or 16, LLVM
    values) without branches, for M ≠ INT32_MIN → the int32 output in [act_min, act_max]:

        x = wrap32(wrap32(acc + bias) << left)                              (0 <= left <= 31)
        h = SRDHM(x, M) = trunc((x*M + nudge) / 2^31)
        out = clamp(wrap32(RDBPOT(h, right) + out_zp), act_min, act_max)    (0 <= right <= 31)

    SRDHM's trunc((ab + (ab >= 0 ? 2^30 : 1 - 2^30)) / 2^31) equals floor((ab + 2^30) / 2^31)
    for both signs (for ab < 0 the truncation adds 2^31 - 1 before flooring); its saturation
    of INT32_MIN · INT32_MIN is left out (QuantizeMultiplier's M is never negative; plans with
    M = INT32_MIN are refused). RDBPOT rounds half away from zero:
    (h >> right) + ((h & mask) > (mask >> 1) + (h < 0)).
    """
    ty = acc.type
    x = builder.shl(builder.add(acc, bias), left)
    h = _srdhm_core(builder, x, m)
    mask = builder.sub(builder.shl(splat(builder, 1, ty), right), splat(builder, 1, ty))
    negative = builder.lshr(h, splat(builder, 31, ty))
    threshold = builder.add(builder.lshr(mask, splat(builder, 1, ty)), negative)
    up = builder.icmp_signed(">", builder.and_(h, mask), threshold)
    r = builder.add(builder.ashr(h, right), builder.zext(up, ty))
    return _clamp(builder, builder.add(r, splat(builder, out_zp, ty)), act_min, act_max)


def _clamp(builder, v, act_min, act_max):
    lo, hi = splat(builder, act_min, v.type), splat(builder, act_max, v.type)
    v = builder.select(builder.icmp_signed("<", v, lo), lo, v)
    return builder.select(builder.icmp_signed(">", v, hi), hi, v)


# --- XNNPACK fp32 ----------------------------------------------------------------------------


def fp32_vec(builder, acc, bias, scale_bits, out_zp, act_min, act_max):
    """`xnnpack.requantize_fp32` on int32 lanes (8 or 16, LLVM values) → int32 lanes in
    [act_min, act_max]:

        out = clamp(rint(float32(wrap32(acc + bias)) * scale), act_min - zp, act_max - zp) + zp
    `scale_bits` holds the float32 scales' bits. sitofp rounds to nearest even like float32(int32),
    fmul carries no fast-math flags (one IEEE rounding), rint rounds ties to even.
    """
    n = acc.type.count
    floats = ir.VectorType(ir.FloatType(), n)
    v = builder.sitofp(builder.add(acc, bias), floats)
    v = builder.fmul(v, builder.bitcast(scale_bits, floats))
    lo = builder.sitofp(splat(builder, builder.sub(act_min, out_zp), acc.type), floats)
    hi = builder.sitofp(splat(builder, builder.sub(act_max, out_zp), acc.type), floats)
    v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
    v = builder.select(builder.fcmp_ordered(">", v, hi), hi, v)
    rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(floats, [floats]),
                                          f"llvm.rint.v{n}f32")  # fmt: skip
    return builder.add(builder.fptosi(builder.call(rint, [v]), acc.type),
                       splat(builder, out_zp, acc.type))  # fmt: skip


def epilogue_vec(builder, kind, acc, params, out_zp, act_min, act_max):
    """The int32x8 output of `kind`'s epilogue; params: its per-channel int32x8 rows (4 for
    MBQM: bias, M, left, right; 2 for fp32: bias, scale bits)."""
    if kind == FP32:
        return fp32_vec(builder, acc, *params[:2], out_zp, act_min, act_max)
    return requant_vec(builder, acc, *params, out_zp, act_min, act_max)


PARAM_ROWS = {MBQM: 4, FP32: 2, RAW: 0}  # the int32x8 rows `epilogue_vec` reads per 8 channels


# --- FULLY_CONNECTED's double epilogue -------------------------------------------------------


@kernel
def fc_requant_rows(acc, out, bias, eff_scale, out_zp, act_min, act_max):
    """FULLY_CONNECTED's float epilogue (fully_connected.py) on acc [B, O] int32 → out [B, O]
    int8: clamp(round_half_away(double(wrap32(acc + bias)) · s) + zp)."""
    for b in range(out.shape[0]):
        for o in range(out.shape[1]):
            total = np.int64(np.int32(np.int64(acc[b, o]) + np.int64(bias[o])))  # C int32 wrap
            scaled = round_half_away_int32(np.float64(total) * eff_scale[o])
            v = np.int64(np.int32(scaled + np.int64(out_zp)))
            out[b, o] = min(max(v, np.int64(act_min)), np.int64(act_max))


# --- hybrid ops' float epilogue --------------------------------------------------------------


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
        if isinstance(v, np.ndarray) and v.dtype == dtype and v.shape == shape \
                and v.flags.c_contiguous:
            return v  # (as it is: ~2.5 us a table saved, on a batch-1 FC's ~30)
        return np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype), shape))

    return HybridEpilogue(table(1 if pre is None else pre, np.float32, (out_c,)),
                          table(scale, np.float32, (n, out_c)),
                          table(-0.0 if bias is None else np.ravel(bias), np.float32, (out_c,)),
                          table(0 if zp_sums is None else zp_sums, np.int32, (n, out_c)),
                          np.float32(lo), np.float32(hi))


@kernel
def hybrid_rows(acc, out, pre, scale, bias, zp_sums, lo, hi, per_image, p0, p1):
    """`HybridEpilogue` on pixels p0..p1-1 of acc [P, Co] int32 → out [P, Co] float32; pixel p
    belongs to image p // per_image."""
    for p in range(p0, p1):
        b = p // per_image
        for c in range(out.shape[1]):
            total = np.int32(np.int64(acc[p, c]) - np.int64(zp_sums[b, c]))  # C int32 wrap
            v = (np.float32(total) * pre[c]) * scale[b, c] + bias[c]  # float32, in order
            if v < lo:
                v = lo
            elif v > hi:
                v = hi
            out[p, c] = v


@kernel(parallel=True)
def _hybrid_split(acc, out, pre, scale, bias, zp_sums, lo, hi, per_image, pixels, parts):
    """`hybrid_rows` over pixels 0..pixels-1 in `parts` parts at once (threads.split_run)."""
    for i in prange(parts):
        p0, p1 = part(pixels, parts, i)
        hybrid_rows(acc, out, pre, scale, bias, zp_sums, lo, hi, per_image, p0, p1)


def apply_hybrid(acc, e: HybridEpilogue, threads: int):
    """`HybridEpilogue` over acc [N, ..., Co] int32 (image b = acc[b]) → float32 of the same
    shape, split over `threads` threads when large."""
    n, out_c = acc.shape[0], acc.shape[-1]
    flat = acc.reshape(-1, out_c)
    out = np.empty(flat.shape, np.float32)
    per_image = flat.shape[0] // max(n, 1)

    args = (flat, out, e.pre, e.scale, e.bias, e.zp_sums, np.float32(e.lo), np.float32(e.hi),
            per_image)
    split_run(hybrid_rows, _hybrid_split, args, flat.shape[0], threads,
              ELEMENT_FLOPS * flat.size)
    return out.reshape(acc.shape)
