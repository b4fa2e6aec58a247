"""Hybrid ("dynamic range") kernels: float activations quantized on the fly, int8 weights.

TFLite quantizes a float input per batch row (FULLY_CONNECTED) or per batch image (CONV_2D,
DEPTHWISE_CONV_2D), takes an exact integer dot product with the int8 filter, and scales the
int32 result back to float. The float steps are reproduced here operation by operation in
float32, in the order of TFLite's x86 build (tensor_utils is compiled as NEON through
NEON_2_SSE there, so the quantizers are the Neon* ones; the int8 matrix-vector product is the
SSE one):

- `quantize_symmetric`: NeonSymmetricQuantizeFloats.
- `quantize_asymmetric`: NeonAsymmetricQuantizeFloats.
- `row_sums_sse`: SseReductionSumVector, whose 16-bit lanes wrap on very long rows.
- `conv_accumulators`, `depthwise_accumulators`: the integer part of
  reference_ops::HybridConvPerChannel / reference_integer_ops::DepthwiseConvHybridPerChannel
  (and of optimized_ops::HybridConv, whose im2col pads with the zero point 0).

NaN, ±inf and denormal inputs take the same compiled code, whose corner cases are kept too:
the min and max of a row holding a NaN are std::minmax_element's (libstdc++) or NeonMinMax's
(NEON_2_SSE), which keep or drop a NaN by where it sits (`_row_range`); a range of inf gives
inv = 0, a denormal one inv = inf, so products can be NaN or ±inf; the blocks of 8 convert
them with vcvtq_s32_f32 (cvttps2dq, 0x80000000, flipped to 0x7fffffff for >= 2^31) and add
the zero point in wrapping int32 before the int32 clamp (`_neon_q`); the scalar tail converts
with cvttss2si (symmetric) or saturates to int8 in float, NaN to 0 (asymmetric; `_roundf_q`).

The float epilogues (`acc * scale + bias`, clamping) are a few NumPy float32 operations and
live with the ops in qengine/ops; gemm_int8 / depthwise_int8 apply them after their packed GEMMs.
"""

# ruff: noqa: FURB136, PLR1730  (each `a if a < b else b` is C++'s, in its order: NaN decides)
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic
from qengine.kernels import threads as pool
from qengine.kernels.emit import I8, I32, addr, const64, loop
from qengine.kernels.jit import inline_kernel, kernel, prange
from qengine.kernels.requant import hybrid_rows

__all__ = [
    "conv_accumulators",
    "depthwise_accumulators",
    "has_nan",
    "matmul_accumulators",
    "quantize_asymmetric",
    "quantize_image_compiled",
    "quantize_images",
    "quantize_symmetric",
    "row_sums_sse",
    "transpose_conv_hybrid",
]

_NEON_BLOCK = 8  # the Neon quantizers handle blocks of 8 values, then a scalar tail
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1  # cvttps2dq's "integer indefinite", its flip
_TWO31 = 2.0**31


# --- 16 floats at a time (LLVM IR: Numba's own loops vectorize to 8 lanes and round scalar) --------

_F32 = ir.FloatType()
_V16F32, _V16I32 = ir.VectorType(_F32, 16), ir.VectorType(I32, 16)
_VEC = 16


def _splat16(builder, value):
    vec_type = ir.VectorType(value.type, _VEC)
    vec = builder.insert_element(ir.Constant(vec_type, ir.Undefined), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(vec, ir.Constant(vec_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(I32, _VEC), [0] * _VEC))


def _vectors(builder, base_addr, i):
    """Pointer to the i-th group of 16 float32 from base_addr."""
    ptr = builder.inttoptr(base_addr, _F32.as_pointer())
    return builder.bitcast(builder.gep(ptr, [builder.mul(i, const64(_VEC))]),
                           _V16F32.as_pointer())  # fmt: skip


_WAYS = 4  # independent accumulators: a chain of vminps waits 4 cycles per vector


def _min_max_codegen(context, builder, signature, args):
    src, groups, out_addr = args
    inf = float("inf")
    start = [ir.Constant(_V16F32, [inf] * _VEC), ir.Constant(_V16F32, [-inf] * _VEC),
             ir.Constant(ir.VectorType(ir.IntType(1), _VEC), [0] * _VEC)] * _WAYS  # fmt: skip

    def update(accs, v):
        low, high, nan = accs
        low = builder.select(builder.fcmp_ordered("<", v, low), v, low)  # NaN keeps low
        high = builder.select(builder.fcmp_ordered(">", v, high), v, high)
        return [low, high, builder.or_(nan, builder.fcmp_unordered("uno", v, v))]

    def step(i, accs):
        new = []
        for way in range(_WAYS):
            at = builder.add(builder.mul(i, const64(_WAYS)), const64(way))
            v = builder.load(_vectors(builder, src, at), align=4)
            new += update(accs[3 * way : 3 * way + 3], v)
        return new

    rounds = builder.sdiv(groups, const64(_WAYS))
    accs = loop(builder, rounds, start, step, "minmax16")
    low, high, nan = accs[:3]
    for way in range(1, _WAYS):  # fold the ways, then the groups past the last round
        other_low, other_high, other_nan = accs[3 * way : 3 * way + 3]
        low = builder.select(builder.fcmp_ordered("<", other_low, low), other_low, low)
        high = builder.select(builder.fcmp_ordered(">", other_high, high), other_high, high)
        nan = builder.or_(nan, other_nan)
    rest = builder.sub(groups, builder.mul(rounds, const64(_WAYS)))
    first = builder.mul(rounds, const64(_WAYS))
    low, high, nan = loop(builder, rest, [low, high, nan], lambda i, a: update(
        a, builder.load(_vectors(builder, src, builder.add(first, i)), align=4)), "minmax16_rest")
    builder.store(low, _vectors(builder, out_addr, const64(0)), align=4)
    builder.store(high, _vectors(builder, out_addr, const64(1)), align=4)
    any_nan = builder.icmp_unsigned("!=", builder.bitcast(nan, ir.IntType(_VEC)),
                                    ir.Constant(ir.IntType(_VEC), 0))  # fmt: skip
    flag = builder.uitofp(any_nan, _F32)
    out = builder.inttoptr(out_addr, _F32.as_pointer())
    builder.store(flag, builder.gep(out, [const64(2 * _VEC)]))
    return context.get_dummy_value()


@intrinsic
def _min_max16(typingctx, src_addr, groups, out_addr):
    """Lane-wise min and max of groups·16 float32 from src_addr, NaNs skipped: out[0:16] the
    minima (+inf where none), out[16:32] the maxima, out[32] = 1.0 if any value is NaN."""
    return types.void(types.int64, types.int64, types.int64), _min_max_codegen


def _neon_int16(builder, r):
    """NEON_2_SSE's vcvtq_s32_f32 on 16 lanes: cvttps2dq (0x80000000 for NaN and |r| >= 2^31),
    then 0x7fffffff where r >= 2^31. LLVM's fptosi is poison out of range, so it is only
    selected where r fits."""
    two31 = ir.Constant(_V16F32, [_TWO31] * _VEC)
    fits = builder.and_(builder.fcmp_ordered(">=", r, builder.fneg(two31)),
                        builder.fcmp_ordered("<", r, two31))  # fmt: skip
    c = builder.select(fits, builder.fptosi(r, _V16I32), ir.Constant(_V16I32, [_INT32_MIN] * _VEC))
    return builder.select(builder.fcmp_ordered(">=", r, two31),
                          ir.Constant(_V16I32, [_INT32_MAX] * _VEC), c)  # fmt: skip


def _quantize16_codegen(context, builder, signature, args):
    src, dst_addr, groups, inv, zp, q_min, shift = args
    inv, zp, lo, shift = (_splat16(builder, v) for v in (inv, zp, q_min, shift))
    hi = ir.Constant(_V16I32, [127] * _VEC)
    half, zero = ir.Constant(_V16F32, [0.5] * _VEC), ir.Constant(_V16F32, [0.0] * _VEC)
    dst = builder.inttoptr(dst_addr, I8.as_pointer())
    v16i8 = ir.VectorType(I8, _VEC)

    def step(i, accs):
        v = builder.fmul(builder.load(_vectors(builder, src, i), align=4), inv)
        sign_half = builder.select(builder.fcmp_ordered("<", v, zero), builder.fneg(half), half)
        t = builder.add(_neon_int16(builder, builder.fadd(v, sign_half)), zp)  # wraps
        t = builder.select(builder.icmp_signed("<", t, lo), lo, t)
        t = builder.select(builder.icmp_signed(">", t, hi), hi, t)
        q = builder.trunc(builder.add(t, shift), v16i8)
        ptr = builder.bitcast(builder.gep(dst, [builder.mul(i, const64(_VEC))]),
                              v16i8.as_pointer())  # fmt: skip
        builder.store(q, ptr, align=1)
        return accs

    loop(builder, groups, [], step, "quantize16")
    return context.get_dummy_value()


@intrinsic
def _quantize16(typingctx, src_addr, dst_addr, groups, inv, zp, q_min, shift):
    """`_neon_q` on groups·16 values, plus shift, into bytes: dst[i] = the low byte of
    _neon_q(x[i]·inv, zp, q_min) + shift (int8, or uint8 with shift 128; inv float32, then
    int32 zp, q_min, shift)."""
    sig = types.void(types.int64, types.int64, types.int64, types.float32, types.int32,
                     types.int32, types.int32)  # fmt: skip
    return sig, _quantize16_codegen


def quantize_symmetric(rows: np.ndarray):
    """NeonSymmetricQuantizeFloats on each row of a float32 [B, N] array.

        min, max = std::minmax_element     range = (|min| < |max| ? |max| : |min|)
        sf = range / 127     inv = 127 / range     (float32)
        q = clamp(round(x * inv), -127, 127) (`_quantize_row`);   range 0 gives q = 0, sf = 1.
    Returns (q int8 [B, N], sf float32 [B]).
    """
    rows = np.ascontiguousarray(rows, np.float32)
    q = np.zeros(rows.shape, np.int8)
    if rows.shape[1] == 0:
        return q, np.ones(rows.shape[0], np.float32)
    return q, _quantize_rows(rows, q, True, 0)[0]


def quantize_asymmetric(rows: np.ndarray):
    """NeonAsymmetricQuantizeFloats on each row of a float32 [B, N] array.

        rmin, rmax = NeonMinMax (min(0, min x), max(0, max x) without NaN)      (float32)
        scale = double(rmax - rmin) / 255         (the difference is taken in float32)
        zp = the nudged zero point from whichever of rmin/rmax has the smaller error (NaN: 0)
        sf = float(scale)     inv = float(1.0 / double(sf)), 0 if sf == 0
        q = clamp(round(x * inv) + zp, -128, 127) (`_quantize_row`);   rmin == rmax gives
        q = 0, sf = 1, zp = 0
    Returns (q int8 [B, N], sf float32 [B], zp int32 [B]).
    """
    rows = np.ascontiguousarray(rows, np.float32)
    q = np.zeros(rows.shape, np.int8)
    if rows.shape[1] == 0:
        n = rows.shape[0]
        return q, np.ones(n, np.float32), np.zeros(n, np.int32)
    return (q, *_quantize_rows(rows, q, False, 0))


SPARE_BYTES = 16  # readable bytes `quantize_images` leaves after the last image


def quantize_images(x: np.ndarray, symmetric: bool, threads: int = 1, unsigned: bool = False):
    """Each image x[b] of a float32 [N, ...] array quantized as one row (`quantize_symmetric`
    or `quantize_asymmetric`) → (q int8 of x's shape, sf float32 [N], zp int32 [N]; zp 0 when
    symmetric); `unsigned`: q + 128 as uint8 instead (what `vpdpbusd` multiplies; zp stays
    q's). q is a view of a buffer with SPARE_BYTES more, which the fast depthwise kernel reads
    past a pixel's last channels (`hybrid_conv`). A large image's two passes, its range and
    then its values, are split between threads (`quantize_image_parts`)."""
    rows = np.ascontiguousarray(x, np.float32).reshape(x.shape[0], -1)
    shift = 128 if unsigned else 0  # added to the int8 q, after its clamp
    buffer = np.empty(rows.size + SPARE_BYTES, np.uint8 if unsigned else np.int8)
    buffer[rows.size :] = 0  # every q is written below
    q = buffer[: rows.size].reshape(rows.shape)
    n = rows.shape[0]
    if rows.shape[1] == 0:  # q is empty
        return q.reshape(x.shape), np.ones(n, np.float32), np.zeros(n, np.int32)
    split_flops = pool.STREAM_FLOPS * 2 * rows.shape[1]  # ~0.3 ns a value
    if not pool.worth_splitting(threads, split_flops):  # one compiled call does it all
        sf, zp = _quantize_rows(rows, q, symmetric, shift)
        return q.reshape(x.shape), sf, zp
    sf, zp = np.empty(n, np.float32), np.empty(n, np.int32)
    for b in range(n):
        with pool.split_cores(threads, rows.shape[1]) as parts:
            sf[b], zp[b] = quantize_image_parts(rows[b], q[b], symmetric, shift, parts)
    return q.reshape(x.shape), sf, zp


@kernel
def quantize_image_compiled(image, q, symmetric, shift):
    """`quantize_images` for one image (any shape, contiguous) inside compiled code, into q
    (int8, or uint8 with shift 128: q + 128; at least image.size values): returns (sf, zp).
    For small images, where NumPy's calls cost more than the work."""
    if image.size == 0:
        return np.float32(1), np.int32(0)
    row = image.reshape(1, image.size)
    sf, zp = _quantize_rows(row, q[: image.size].reshape(1, image.size), symmetric, shift)
    return sf[0], zp[0]


@kernel
def quantize_image_parts(image, q, symmetric, shift, parts):
    """`quantize_image_compiled` with both passes over the image cut into `parts` parts at
    once (`quantize_images` and the hybrid kernels' split drivers; ~0.35 ns a value on one
    thread, a quarter of a 96x96x32 depthwise). The same (sf, zp) and q: the min and max of the parts' are the whole
    one's, and a NaN anywhere sends the range to the serial scan in TFLite's order."""
    n = image.size
    if n == 0:
        return np.float32(1), np.int32(0)
    flat = image.reshape(n)
    lows, highs = np.empty(parts, np.float32), np.empty(parts, np.float32)
    nans = np.empty(parts, np.bool_)
    # (arguments made by calls, not constants: Numba compiles a copy of a kernel for each
    # constant it is called with)
    _image_in_parts(flat, q, shift, parts, lows, highs, nans, np.float32(0), np.int32(0),
                    np.int64(0), np.bool_(True))
    low, high = _range_given(flat, symmetric, lows.min(), highs.max(), nans.any())
    sf, zp, inv, blank = _image_parameters(np.full(1, low), np.full(1, high), symmetric)
    if blank[0]:
        q[:n] = shift
        return sf[0], zp[0]
    q_min = _lowest_q(symmetric)
    _image_in_parts(flat, q, shift, parts, lows, highs, nans, inv[0], zp[0], q_min,
                    np.bool_(False))
    return sf[0], zp[0]


@kernel(parallel=True)
def _image_in_parts(flat, q, shift, parts, lows, highs, nans, inv, zp, q_min, ranges):
    """One pass of `quantize_image_parts` over flat in `parts` parts at once: each part's
    `_min_max` into lows/highs/nans (ranges), else its values quantized into q. (One parallel
    loop for both: each costs Numba seconds to compile.)"""
    n = flat.size
    for i in prange(parts):
        i0, i1 = pool.part(n, parts, i)
        if ranges:
            lows[i], highs[i], nans[i] = _min_max(flat[i0:i1])
        else:
            _quantize_span(flat, q, inv, zp, q_min, shift, i0, i1)


def has_nan(x: np.ndarray, threads: int = 1) -> bool:
    """Whether float32 x holds a NaN: one vectorized pass (`_min_max`), in parts on several
    threads when large (a 4 MB image from L3: ~240 us on one)."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    if flat.size == 0:
        return False
    if pool.worth_splitting(threads, pool.STREAM_FLOPS * flat.size):
        with pool.split_cores(threads, flat.size) as parts:
            if parts > 1:
                nans = np.zeros(parts, np.bool_)
                _nans_in_parts(flat, parts, nans)
                return bool(nans.any())
    return bool(_min_max(flat)[2])


@kernel(parallel=True)
def _nans_in_parts(flat, parts, nans):
    """nans[i]: whether part i of flat (`threads.part`) holds a NaN, the parts at once."""
    for i in prange(parts):
        i0, i1 = pool.part(flat.size, parts, i)
        nans[i] = _min_max(flat[i0:i1])[2]


@kernel
def _min_max(flat):
    """(min, max, any NaN) of a contiguous float32 vector, NaNs skipped (±inf if all are)."""
    groups = flat.size // _VEC
    lanes = np.empty(2 * _VEC + 1, np.float32)
    _min_max16(addr(flat), groups, addr(lanes))
    low, high = lanes[:_VEC].min(), lanes[_VEC : 2 * _VEC].max()
    nan = lanes[2 * _VEC] != 0
    for v in flat[_VEC * groups :]:
        nan |= np.isnan(v)
        if v < low:
            low = v
        if v > high:
            high = v
    return low, high, nan


@kernel
def _row_range(flat, symmetric):
    """(low, high) of a non-empty contiguous float32 vector as TFLite's quantizer takes them:
    std::minmax_element's (symmetric) or NeonMinMax's (asymmetric, capped at 0). Without NaN
    both are the true min and max (`_min_max`'s 16 lanes); what a NaN does depends on where it
    sits, so a row holding one is scanned in TFLite's order."""
    low, high, nan = _min_max(flat)
    return _range_given(flat, symmetric, low, high, nan)


@inline_kernel
def _range_given(flat, symmetric, low, high, nan):
    """`_row_range` of flat given its `_min_max` (low, high, nan), however that was taken."""
    if nan:
        return _minmax_element(flat, 0, flat.size) if symmetric else _neon_min_max(flat)
    if symmetric:
        return low, high
    return min(low, np.float32(0)), max(high, np.float32(0))


@kernel
def _minmax_element(flat, i0, i1):
    """libstdc++'s std::minmax_element over flat[i0:i1] (non-empty), operator< on float: the
    values in pairs; the smaller of a pair replaces min if < min, the larger replaces max if
    !(larger < max); a lone last value is tried for min, else for max. Every comparison with
    NaN is false, so a NaN first is the min for good, and a NaN max gives way to the next."""
    low = high = flat[i0]
    if i1 - i0 > 1:
        a, b = flat[i0], flat[i0 + 1]
        low, high = (b, a) if b < a else (a, b)
    for i in range(i0 + 2, i1 - 1, 2):
        a, b = flat[i], flat[i + 1]
        small, large = (b, a) if b < a else (a, b)
        if small < low:
            low = small
        if not large < high:
            high = large
    if i1 - i0 > 2 and (i1 - i0) % 2 == 1:
        a = flat[i1 - 1]
        if a < low:
            low = a
        elif not a < high:
            high = a
    return low, high


@kernel
def _neon_min_max(flat):
    """NeonMinMax (non-aarch64, NEON_2_SSE) on a non-empty float32 vector: lanes k = i % 4 of
    the whole vectors of 4 through minps/maxps (acc < v ? acc : v, so a NaN lane takes the
    next value), folded serially (vmin_f32: a < b ? a : b over lanes (0, 2), (1, 3); vpmin:
    m0 > m1 ? m1 : m0; max the same with > and <); the last < 4 values by `_minmax_element`;
    each merged as std::min(rmin, v) / std::max(rmax, v) from rmin = rmax = 0, where NaN
    loses."""
    block = flat.size & ~3
    low = high = np.float32(0)
    if block:
        lows, highs = flat[:4].copy(), flat[:4].copy()
        for i in range(4, block):
            k, v = i & 3, flat[i]
            lows[k] = lows[k] if lows[k] < v else v
            highs[k] = highs[k] if highs[k] > v else v
        m0 = lows[0] if lows[0] < lows[2] else lows[2]
        m1 = lows[1] if lows[1] < lows[3] else lows[3]
        m = m1 if m0 > m1 else m0
        low = m if m < low else low
        m0 = highs[0] if highs[0] > highs[2] else highs[2]
        m1 = highs[1] if highs[1] > highs[3] else highs[3]
        m = m1 if m0 < m1 else m0
        high = m if high < m else high
    if block < flat.size:
        tail_low, tail_high = _minmax_element(flat, block, flat.size)
        low = tail_low if tail_low < low else low
        high = tail_high if high < tail_high else high
    return low, high


@kernel
def _rows_range(rows, symmetric):
    """Each row's `_row_range` of a C-contiguous float32 [B, N], N > 0."""
    lows, highs = np.empty(rows.shape[0], np.float32), np.empty(rows.shape[0], np.float32)
    for b in range(rows.shape[0]):
        lows[b], highs[b] = _row_range(rows[b], symmetric)
    return lows, highs


@kernel
def _image_parameters(lows, highs, symmetric):
    """(sf, zp, inv, blank) of each row given its `_row_range`, as the Neon quantizers compute
    them; a blank row (symmetric range 0, asymmetric rmin == rmax) has q all 0, sf 1, zp 0,
    whatever its values (NaN or inf may hide behind a range of 0)."""
    n = lows.shape[0]
    sf, zps, inv = np.ones(n, np.float32), np.zeros(n, np.int32), np.zeros(n, np.float32)
    blank = np.zeros(n, np.bool_)
    for b in range(n):
        if symmetric:
            low, high = abs(lows[b]), abs(highs[b])
            top = high if low < high else low  # std::max: NaN if |min| is
            blank[b] = top == 0
            if not blank[b]:
                sf[b], inv[b] = _symmetric_parameters(top)
        else:
            blank[b] = lows[b] == highs[b]
            if not blank[b]:
                sf[b], zps[b], inv[b] = _asymmetric_parameters(lows[b], highs[b])
    return sf, zps, inv, blank


@inline_kernel
def _neon_q(v, zp, q_min):
    """The Neon loop's q of a float32 product v = x·inv (blocks of 8 from the row's start):

        r = v + (v < 0 ? -0.5f : 0.5f)                     (float32; NaN takes +0.5)
        c = vcvtq_s32_f32(r): trunc(r); INT32_MAX for r >= 2^31; INT32_MIN for NaN, r < -2^31
        q = clamp(c + zp, q_min, 127)                      (the int32 sum wraps)

    (r differs from roundf only for |v| = 0.5 - 2^-25, where the float32 sum rounds up to 1.)"""
    r = v + (np.float32(-0.5) if v < 0 else np.float32(0.5))
    c = np.int64(_INT32_MIN)
    if r >= _TWO31:
        c = np.int64(_INT32_MAX)
    elif r >= -_TWO31:
        c = np.int64(r)
    t = (c + zp - _INT32_MIN) % 2**32 + _INT32_MIN
    return min(max(t, q_min), 127)


@inline_kernel
def _roundf_q(v, zp, q_min):
    """The scalar tail's q of a float32 product v = x·inv (after the blocks of 8), r = roundf(v)
    (ties away from zero, computed exactly in float64):

        symmetric:  q = clamp(cvttss2si(r), -127, 127)      (INT32_MIN for NaN, |r| >= 2^31)
        asymmetric: q = int8 saturation of float(zp) + r     (float32 sum; NaN gives 0)

    The asymmetric clamp to int8's own range is compiled into a saturating conversion, which
    the symmetric [-127, 127] is not."""
    a = np.floor(abs(np.float64(v)) + 0.5)  # |v| + 0.5 is exact for a float32 v
    r = np.float32(-a if v < 0 else a)
    if q_min == -128:
        s = np.float32(zp) + r  # float32
        if np.isnan(s):
            return 0
        return np.int64(min(max(s, -128.0), 127.0))
    c = np.int64(r) if abs(r) < _TWO31 else np.int64(_INT32_MIN)
    return min(max(c, q_min), 127)


@kernel
def _quantize_row(row, out, inv, zp, q_min, shift, blank):
    """The Neon quantizer loop on one float32 row: out = q(x·inv) + shift (x·inv a float32
    product; q from `_neon_q` in whole blocks of 8 from the row's start, from `_roundf_q` for
    the tail; shift 0 into int8, 128 into uint8, added after the clamp); all q 0 if blank."""
    if blank:
        out[: row.shape[0]] = shift
    else:
        # (a start made by a call, as quantize_image_parts' are: one compiled copy for both)
        _quantize_span(row, out, inv, zp, q_min, shift, np.int64(0), row.shape[0])


@kernel
def _quantize_span(row, out, inv, zp, q_min, shift, i0, i1):
    """`_quantize_row` (not blank) on values i0..i1-1 of the row."""
    block = row.shape[0] & ~(_NEON_BLOCK - 1)
    end = min(i1, block)
    groups = max(0, end - i0) // _VEC  # row and out are contiguous
    _quantize16(addr(row) + 4 * i0, addr(out) + i0, groups, np.float32(inv), np.int32(zp),
                np.int32(q_min), np.int32(shift))  # fmt: skip
    for i in range(i0 + _VEC * groups, end):  # the last < 16 of the blocks of 8
        out[i] = _neon_q(row[i] * inv, zp, q_min) + shift  # stored as q's int8 or uint8
    for i in range(max(i0, block), i1):
        out[i] = _roundf_q(row[i] * inv, zp, q_min) + shift


@inline_kernel
def _lowest_q(symmetric):
    """The smallest q of the Neon quantizers (int64): -127 symmetric (q = ±round(x·127/max|x|)),
    -128 asymmetric."""
    return np.int64(-127 if symmetric else -128)


@kernel
def _round_away_f64(v):
    """std::round on a double: v - trunc(v) is exact, so ties are detected exactly."""
    t = np.trunc(v)
    if abs(v - t) >= 0.5:
        return t + (1.0 if v > 0 else -1.0)
    return t


@kernel
def _quantize_rows(rows, q, symmetric, shift):
    """NeonSymmetricQuantizeFloats or NeonAsymmetricQuantizeFloats per row of a C-contiguous
    float32 [B, N] (N > 0) into q (plus shift: 0 into int8, 128 into uint8); returns the
    scaling factors and zero points (0 when symmetric)."""
    sf, zps, inv, blank = _image_parameters(*_rows_range(rows, symmetric), symmetric)
    q_min = _lowest_q(symmetric)
    for b in range(rows.shape[0]):
        _quantize_row(rows[b], q[b], inv[b], zps[b], q_min, shift, blank[b])
    return sf, zps


@inline_kernel
def _symmetric_parameters(top):
    """(sf, inv) of a row whose range is top (> 0, inf or NaN): top / 127 and 127 / top in
    float32 (inv is 0 for an infinite range, inf for a denormal one)."""
    return top / np.float32(127), np.float32(127) / top


@inline_kernel
def _asymmetric_parameters(rmin, rmax):
    """(sf, zp, inv) of a row with rmin < 0 <= rmax or rmin <= 0 < rmax (float32; either may be
    infinite, and the differences then NaN)."""
    scale = np.float64(rmax - rmin) / 255.0  # the difference in float32
    low, high = np.float64(rmin) / scale, np.float64(rmax) / scale
    from_min, from_max = -128.0 - low, 127.0 - high
    zp_real = from_min if 128.0 + abs(low) < 127.0 + abs(high) else from_max
    sf = np.float32(scale)
    inv = np.float32(1.0 / np.float64(sf)) if sf != 0 else np.float32(0)
    return sf, _nudged_zero_point(zp_real), inv


@inline_kernel
def _nudged_zero_point(zp_real):
    """-128 if zp_real <= -128, 127 if >= 127, else int8(std::round(zp_real)): 0 for NaN (the
    low byte of cvttsd2si's 0x80000000)."""
    if zp_real <= -128.0:
        return np.int32(-128)
    if zp_real >= 127.0:
        return np.int32(127)
    if np.isnan(zp_real):
        return np.int32(0)
    return np.int32(_round_away_f64(zp_real))


SMALL_FC_MACS = 1 << 18  # multiply-adds up to which a hybrid FC runs as one small kernel (it was
# faster up to 2^20 at batch 1 on one thread; the packed GEMM splits between threads)


@kernel
def fully_connected_hybrid_small(x, w, scales, row_sums, bias, symmetric):
    """A whole hybrid FULLY_CONNECTED in one call, for layers so small that the packed GEMM's
    calls (quantizer, epilogue tables, thread checks: ~20 us) outweigh its speed. x [B, D]
    float32 (D > 0), w [U, D] int8, scales [1] or [U], row_sums [U] int32, bias [U] (-0.0
    when absent): each row quantized as `quantize_symmetric`/`_asymmetric` do, acc[b, u] =
    Σ_d q[b, d] w[u, d] (int32), then the packed path's epilogue, `requant.hybrid_rows`, on
    its tables: scale[b, u] = sf[b] * scales[u or 0], zp_sums[b, u] = int32(zp[b] *
    row_sums[u]) (wrapping), pre 1, no clamp."""
    rows, depth = x.shape
    units = w.shape[0]
    if w.shape[1] != depth or row_sums.shape[0] != units or bias.shape[0] != units or \
            scales.shape[0] not in (1, units) or depth == 0:
        raise ValueError("fully_connected_hybrid_small: shapes do not fit")
    q = np.zeros((rows, depth), np.int8)
    sf, zps = _quantize_rows(x, q, symmetric, 0)
    acc = np.empty((rows, units), np.int32)
    scale = np.empty((rows, units), np.float32)
    zp_sums = np.empty((rows, units), np.int32)
    for b in range(rows):
        codes = q[b]
        for u in range(units):
            weights = w[u]
            total = np.int64(0)
            for d in range(depth):
                total += np.int64(codes[d]) * np.int64(weights[d])
            acc[b, u] = np.int32(total)  # (the int32 sum, wrapped)
            scale[b, u] = sf[b] * scales[min(u, scales.shape[0] - 1)]
            zp_sums[b, u] = np.int32(np.int64(zps[b]) * np.int64(row_sums[u]))
    out = np.empty((rows, units), np.float32)
    hybrid_rows(acc, out, np.ones(units, np.float32), scale, bias, zp_sums,
                np.float32(-np.inf), np.float32(np.inf), 1, 0, rows)
    return out


@kernel
def row_sums_sse(w):
    """SseReductionSumVector (SSE4.1): Σ_d w[o, d] with 16-bit partial sums that wrap.

    Blocks of 16 columns add pairs into 8 int16 lanes, one block of 8 adds single values into
    them, the lanes are summed in int32 and the last < 8 columns are added one by one.
    """
    rows, cols = w.shape
    out = np.empty(rows, np.int32)
    lanes = np.empty(8, np.int64)
    for o in range(rows):
        lanes[:] = 0
        col = 0
        while col < (cols & ~15):
            for j in range(8):
                lanes[j] += np.int64(w[o, col + 2 * j]) + np.int64(w[o, col + 2 * j + 1])
            col += 16
        if col < (cols & ~7):
            for j in range(8):
                lanes[j] += np.int64(w[o, col + j])
            col += 8
        total = np.int64(0)
        for j in range(8):
            v = lanes[j] & 0xFFFF  # the int16 lane wraps
            total += v - 0x10000 if v >= 0x8000 else v
        for c in range(col, cols):
            total += np.int64(w[o, c])
        out[o] = total
    return out


@kernel
def matmul_accumulators(q, w):
    """acc[b, o] = Σ_d w[o, d] * q[b, d] in int32 (int8 products cannot overflow before 2^16 terms)."""
    batches, depth = q.shape
    out_c = w.shape[0]
    acc = np.empty((batches, out_c), np.int32)
    xs = np.empty(depth, np.int32)
    for b in range(batches):
        for d in range(depth):
            xs[d] = q[b, d]
        for o in range(out_c):
            total = np.int32(0)
            for d in range(depth):
                total += np.int32(w[o, d]) * xs[d]
            acc[b, o] = total
    return acc


@kernel
def conv_accumulators(q, w, offsets, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                      out_h, out_w):
    """The integer part of TFLite's hybrid CONV_2D (grouped when Ci = groups * w.shape[3]).

    q [N, H, W, Ci] int8 (the quantized input), w [Co, KH, KW, Ci/groups] int8,
    offsets [N] int32 (the per-image zero points; 0 for symmetric) → int32 [N, OH, OW, Co]:

        acc[oc] = Σ_{ky,kx in image, ic} w[oc,ky,kx,ic] * (q[b, iy, ix, g*Cig + ic] - offsets[b])

    Taps outside the image are skipped (padding with the zero point).
    """
    n, in_h, in_w, in_c = q.shape
    out_c, k_h, k_w, group_c = w.shape
    per_group = out_c // (in_c // group_c)
    out = np.zeros((n, out_h, out_w, out_c), np.int32)
    for b in range(n):
        zp = np.int32(offsets[b])
        for oy in range(out_h):
            for ox in range(out_w):
                for oc in range(out_c):
                    base = (oc // per_group) * group_c
                    acc = np.int32(0)
                    for ky in range(k_h):
                        iy = oy * stride_h - pad_top + ky * dil_h
                        if iy < 0 or iy >= in_h:
                            continue
                        for kx in range(k_w):
                            ix = ox * stride_w - pad_left + kx * dil_w
                            if ix < 0 or ix >= in_w:
                                continue
                            for ic in range(group_c):
                                acc += np.int32(w[oc, ky, kx, ic]) * (
                                    np.int32(q[b, iy, ix, base + ic]) - zp)
                    out[b, oy, ox, oc] = acc
    return out


@kernel
def depthwise_accumulators(q, w, offsets, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                           out_h, out_w, depth_multiplier):
    """The integer part of reference_integer_ops::DepthwiseConvHybridPerChannel.

    q [N, H, W, Ci] int8, w [1, KH, KW, Co] int8 with Co = Ci * depth_multiplier,
    offsets [N] int32 → int32 [N, OH, OW, Co]:

        oc = ic * depth_multiplier + m
        acc[oc] = Σ_{ky,kx in image} w[0,ky,kx,oc] * (q[b, iy, ix, ic] - offsets[b])
    """
    n, in_h, in_w, in_c = q.shape
    k_h = w.shape[1]
    k_w = w.shape[2]
    out_c = w.shape[3]
    out = np.zeros((n, out_h, out_w, out_c), np.int32)
    for b in range(n):
        zp = np.int32(offsets[b])
        for oy in range(out_h):
            for ox in range(out_w):
                for ky in range(k_h):
                    iy = oy * stride_h - pad_top + ky * dil_h
                    if iy < 0 or iy >= in_h:
                        continue
                    for kx in range(k_w):
                        ix = ox * stride_w - pad_left + kx * dil_w
                        if ix < 0 or ix >= in_w:
                            continue
                        for ic in range(in_c):
                            xv = np.int32(q[b, iy, ix, ic]) - zp
                            for m in range(depth_multiplier):
                                oc = ic * depth_multiplier + m
                                out[b, oy, ox, oc] += np.int32(w[0, ky, kx, oc]) * xv
    return out


@kernel
def transpose_conv_hybrid(q, scaling, offsets, w, channel_scales, bias, has_bias, stride_h,
                          stride_w, pad_top, pad_left, out_h, out_w, act_min, act_max):
    """reference_ops::HybridTransposeConv: q [N, H, W, I] int8 (each image quantized
    asymmetrically: scaling factor, offset), w [O, KH, KW, I] int8, channel_scales [O] ->
    float32 [N, out_h, out_w, O]. The scatter order of TFLite's loops, in float32:

        out[n, y*sh - pad + ky, x*sw - pad + kx, o] +=
            float((q[n, y, x, i] - offset[n]) * w[o, ky, kx, i]) * channel_scale[o] * scaling[n]

    over n, y, x, i, ky, kx, o; then out + bias[o], clamped to [act_min, act_max].
    """
    batches, in_h, in_w, in_c = q.shape
    out_c, kh, kw, _ = w.shape
    out = np.zeros((batches, out_h, out_w, out_c), np.float32)
    for b in range(batches):
        sf = scaling[b]
        for iy in range(in_h):
            for ix in range(in_w):
                for ic in range(in_c):
                    x = np.int32(q[b, iy, ix, ic]) - np.int32(offsets[b])
                    for ky in range(kh):
                        oy = iy * stride_h - pad_top + ky
                        for kx in range(kw):
                            ox = ix * stride_w - pad_left + kx
                            if oy < 0 or oy >= out_h or ox < 0 or ox >= out_w:
                                continue
                            for oc in range(out_c):
                                acc = x * np.int32(w[oc, ky, kx, ic])
                                out[b, oy, ox, oc] += np.float32(acc) * channel_scales[oc] * sf
    for b in range(batches):
        for oy in range(out_h):
            for ox in range(out_w):
                for oc in range(out_c):
                    v = out[b, oy, ox, oc]
                    if has_bias:
                        v = v + bias[oc]
                    out[b, oy, ox, oc] = min(max(v, act_min), act_max)
    return out
