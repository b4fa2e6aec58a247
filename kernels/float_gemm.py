"""Float32 CONV_2D and DEPTHWISE_CONV_2D as indirect micro-kernels, bias and clamp fused,
bit-identical to TFLite's reference kernels (reference_ops::Conv / DepthwiseConv), or, with
`fused`, to its default interpreter's XNNPACK kernels.

CONV_2D is a GEMM out[p, o] = clamp(Σ_k A[p, k] · W[k, o] + bias[o]) with p = (batch,
out_y, out_x) and k = (ky, kx, ic), computed without an im2col copy ("indirect GEMM"): for a
tile of ROWS output pixels the driver writes one address per (tap, pixel), of the input pixel
that tap reads (x[n, oy*sh - pt + ky*dh, ox*sw - pl + kx*dw, 0]) or, for a tap in the padding,
of a row of zeros. The micro-kernel (`_make_conv_tile`) then runs over taps and input channels
with ROWS x 16 outputs in 2*ROWS float32x8 registers: per (tap, channel) two weight loads,
ROWS broadcasts, 2*ROWS products and sums (on AVX-512, ROWS x 32 outputs of two panels in
2*ROWS float32x16 registers). Weights are packed once at prepare time into panels
of 16 output channels, [panel, KH*KW*Ci, 16] (zero-filled past Co). The same kernel serves
1x1 (one tap: the pointers step through the input) and every kernel size, stride and dilation.

DEPTHWISE_CONV_2D (multiplier 1) runs 16 channels (8 below 16) of a row of interior output
pixels at a time (`_dw_run`: taps unrolled for 1x1, 3x3 and 5x5, their weights and offsets held in
registers); border pixels gather their tap addresses, zeros for taps in the padding
(`_dw_pixel`). C must be at least 8; when the vector width does not divide C the last vector
overlaps the one before it (`_dw_block`).

Why bit-identical: each output is summed in TFLite's order, total = 0; total += x * w over
(ky, kx, ic) with taps outside the image skipped (a zero input adds +-0, which leaves a sum
unchanged but for the sign of a zero), then total + bias, then
ActivationFunctionWithMinMax (std::min(std::max(v, lo), hi): NaN passes through). Every
product is rounded before its sum, as in the ai-edge-litert wheel (built without -mfma): a
fused multiply-add would be ~1.5x faster in compute-bound layers but changes the last bits,
which a network like Basic Pitch's nmp amplifies past the 1e-5 tolerance of its outputs.
`fused` (arithmetic="xnnpack") takes XNNPACK's order instead: each sum starts at the bias and
steps by fused multiply-adds over (ky, kx, ic), the depthwise taps column by column (see
depthwise_f32_rows); each intrinsic holds both orders behind a run-time flag. The
vectors only run different outputs side by side. Both drivers are serial; the caller splits
the output between threads (the `*_split` drivers at the end, run by `threads.split_run`).
"""

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from . import threads as pool
from .emit import HAS_AVX512, I64, addr, const64, loop
from .float_conv import activation_f32, post_due, post_fits, run_post
from .jit import inline_kernel, kernel, prange

ROWS = 12  # output pixels per conv tile
LANES = 16  # output channels per conv weight panel (two float32x8 accumulators per pixel)
VEC = 8  # float32 lanes of an AVX2 register
NARROW = 8  # convs with at most this many output channels vectorize along the output row



WIDE = HAS_AVX512  # use the 16-lane conv tile: one register per 16 channels

_F32 = ir.FloatType()
_V8F32 = ir.VectorType(_F32, VEC)


def _mul_add(builder, a, b, acc, fused=False):
    """acc + a * b per lane: the product rounded before the sum (no FMA), as TFLite's
    reference kernels compute `total += input * filter` (the wheel is built without -mfma);
    or, `fused`, one rounding (fused multiply-add), as XNNPACK's float kernels do."""
    if fused:  # llvm.fma.v8f32 / .v16f32: vfmadd231ps (llvmlite's builder.fma takes scalars)
        t = acc.type
        name = f"llvm.fma.v{t.count}f32" if isinstance(t, ir.VectorType) else "llvm.fma.f32"
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t] * 3), name)
        return builder.call(fma, [a, b, acc])
    return builder.fadd(acc, builder.fmul(a, b))


def _start(builder, bias, fused):
    """The accumulator a sum starts from: XNNPACK's kernels load the bias into it (fused);
    TFLite's reference kernels start at 0 and add the bias at the end (`_finish`)."""
    return bias if fused else ir.Constant(bias.type, None)


def _starts(builder, bias_vectors, vec_t, count, fused):
    """The `count` accumulators a tile's sums start from (see `_start`). The reference order
    starts at 0 and its caller loads the biases again after the loop: biases held in
    registers through it took AVX2's 16 from the sums (the 6x16 and 8x8 tiles spilled sums to
    the stack and ran 1.2-2x slower)."""
    return bias_vectors() if fused else [ir.Constant(vec_t, None)] * count


def _finish(builder, acc, bias, fused):
    return acc if fused else builder.fadd(acc, bias)


def _both_orders(builder, fused, emit):
    """emit(True) where the i1/i8 flag `fused` is set, emit(False) where not: one intrinsic
    holds TFLite's reference order and XNNPACK's, chosen at run time."""
    flag = builder.icmp_unsigned("!=", fused, ir.Constant(fused.type, 0))
    with builder.if_else(flag) as (xnnpack, reference):
        with xnnpack:
            emit(True)
        with reference:
            emit(False)


def _splat(builder, value, vec_t=_V8F32):
    undef = ir.Constant(vec_t, ir.Undefined)
    vec = builder.insert_element(undef, value, ir.Constant(I64, 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vec_t.count), [0] * vec_t.count)
    return builder.shuffle_vector(vec, undef, zeros)


def _load_vec(builder, f32_ptr, index, vec_t=_V8F32):
    ptr = builder.gep(f32_ptr, [index])
    return builder.load(builder.bitcast(ptr, vec_t.as_pointer()), align=4)


def _store_vec(builder, value, f32_ptr, index):
    ptr = builder.gep(f32_ptr, [index])
    builder.store(value, builder.bitcast(ptr, value.type.as_pointer()), align=4)


def _clamp(builder, v, low, high):
    """min(max(v, low), high) with NaN passing through (ordered compares select v)."""
    v = builder.select(builder.fcmp_ordered("<", v, low), low, v)
    return builder.select(builder.fcmp_ordered(">", v, high), high, v)


def _make_conv_tile(rows, width, vectors, panels=1):
    """An LLVM micro-kernel over `rows` pixels and `vectors` float32 x `width` blocks of one
    weight panel: out[r, 0:width*vectors] = clamp(Σ_t Σ_c src[t, r][c] · w[t*cin + c, ..] +
    bias[..]), summed in the order of t and c, where src[t, r] is the address at
    ptrs[t*ROWS + r] and w rows are LANES floats apart. With `panels` > 1 the vectors span
    that many consecutive panels (taps*cin*LANES floats apart), vectors // panels of them per
    panel: output channel width*h of the tile is vector h's first either way.
    Its first argument `fused` picks XNNPACK's order instead, the sum starting at the bias and
    every step a fused multiply-add."""
    vec_t = ir.VectorType(_F32, width)

    def codegen(context, builder, signature, args):
        _both_orders(builder, args[0], lambda fused: body(builder, args[1:], fused))
        return context.get_dummy_value()

    def body(builder, args, fused):
        ptrs_addr, taps, cin, w_addr, bias_addr, out_addr, out_stride, low, high = args
        ptrs = builder.inttoptr(ptrs_addr, I64.as_pointer())
        w = builder.inttoptr(w_addr, _F32.as_pointer())
        bias = builder.inttoptr(bias_addr, _F32.as_pointer())
        out = builder.inttoptr(out_addr, _F32.as_pointer())
        def bias_vectors():
            return [_load_vec(builder, bias, const64(width * h), vec_t) for h in range(vectors)]

        first = _starts(builder, bias_vectors, vec_t, vectors, fused)
        start = [first[h] for _ in range(rows) for h in range(vectors)]
        panel = builder.mul(builder.mul(taps, cin), const64(LANES))
        per = vectors // panels  # vectors per panel
        w_offsets = [builder.add(builder.mul(panel, const64(h // per)), const64(width * (h % per)))
                     for h in range(vectors)]

        def tap_step(t, accs):
            srcs = []
            for r in range(rows):
                slot = builder.add(builder.mul(t, const64(ROWS)), const64(r))
                addr = builder.load(builder.gep(ptrs, [slot]), align=8)
                srcs.append(builder.inttoptr(addr, _F32.as_pointer()))
            w_tap = builder.mul(builder.mul(t, cin), const64(LANES))

            def channel_step(c, accs):
                w_row = builder.add(w_tap, builder.mul(c, const64(LANES)))
                weights = [_load_vec(builder, w, builder.add(w_row, w_offsets[h]), vec_t)
                           for h in range(vectors)]
                new = []
                for r in range(rows):
                    a = builder.load(builder.gep(srcs[r], [c]), align=4)
                    a = _splat(builder, a, vec_t)
                    new.extend(_mul_add(builder, a, weights[h], accs[vectors * r + h], fused)
                               for h in range(vectors))
                return new

            return loop(builder, cin, accs, channel_step, "channel")

        accs = loop(builder, taps, start, tap_step, "tap")
        biases = first if fused else bias_vectors()
        low_v, high_v = _splat(builder, low, vec_t), _splat(builder, high, vec_t)
        for r in range(rows):
            for h in range(vectors):
                index = builder.add(builder.mul(const64(r), out_stride), const64(width * h))
                value = _finish(builder, accs[vectors * r + h], biases[h], fused)
                value = _clamp(builder, value, low_v, high_v)
                _store_vec(builder, value, out, index)

    @intrinsic
    def tile(typingctx, fused, ptrs_addr, taps, cin, w_addr, bias_addr, out_addr, out_stride,
             low, high):
        sig = types.void(types.boolean, types.uintp, types.intp, types.intp, types.uintp,
                         types.uintp, types.uintp, types.intp, types.float32, types.float32)
        return sig, codegen

    return tile


# A panel's 16 channels: 6 pixels x 2 float32x8 accumulators (12 of AVX2's 16 registers), run
# twice per tile, or 12 pixels x 1 float32x16 (AVX-512: 12 of 32 registers), run once.
_tile_6x16 = _make_conv_tile(ROWS // 2, VEC, 2)
_tile_12x16 = _make_conv_tile(ROWS, 2 * VEC, 1)
_tile_12x8 = _make_conv_tile(ROWS, VEC, 1)  # a panel's tail of 1-8 channels
# AVX-512: two panels at once, 12 pixels x 2 float32x16 (24 of 32 registers): 14 loads per 24
# multiply-adds instead of 13 per 12, 1.1-1.3x faster on 1x1 convs (the loads are the limit)
_pair_12x32 = _make_conv_tile(ROWS, 2 * VEC, 2, panels=2)
# and a range's last tile of 5-6 pixels (a 6 x 6 layer split in two: 12 + 6 pixels a part),
# where the 12-pixel pair would compute every pixel twice and one panel of 6 x 16 takes
# 256-bit vectors: 6 x 2 float32x16 (12 registers)
_pair_6x32 = _make_conv_tile(ROWS // 2, 2 * VEC, 2, panels=2)
# One output pixel (a conv whose output has 1-4 pixels, a layer's last tile of 1-4): 12-pixel
# tiles would compute the pixel 12 times over. Instead one pixel of GROUP panels at once, in 8
# registers (float32x16 on AVX-512, float32x8 x 2 per panel on AVX2), enough sums at once to
# hide the adds' latency; face_landmark's 3x3x32 -> 1404 head took 109-245 us as 12-pixel tiles.
GROUP_WIDE, GROUP_NARROW = 8, 4  # panels per one-pixel tile
_pixel_1x128 = _make_conv_tile(1, 2 * VEC, GROUP_WIDE, panels=GROUP_WIDE)
_pixel_1x64 = _make_conv_tile(1, VEC, 2 * GROUP_NARROW, panels=GROUP_NARROW)
FEW_ROWS = 4  # a tile of at most this many pixels runs pixel by pixel (when GROUP panels fit)
UNROLLED_TAPS = (1, 9, 25)  # depthwise filters whose taps are unrolled (`_by_taps`)


def _by_taps(builder, taps, emit, name):
    """emit(n) for `taps` n in UNROLLED_TAPS, else emit(None): 1x1 (hand_recrop's per-channel
    scales), 3x3 and 5x5 filters get their taps unrolled."""
    cases = {n: builder.function.append_basic_block(f"{name}{n}") for n in (*UNROLLED_TAPS,
                                                                              None)}
    done = builder.function.append_basic_block(f"{name}_done")
    switch = builder.switch(taps, cases[None])
    for n, block in cases.items():
        if n is not None:
            switch.add_case(const64(n), block)
        builder.position_at_end(block)
        emit(n)
        builder.branch(done)
    builder.position_at_end(done)


DW_BLOCKS = 4  # channel vectors of a border pixel summed side by side


def _make_dw_pixel(lanes):
    """An LLVM kernel for one output pixel, every channel: out[c:c+L] = clamp(bias[c:c+L] +
    Σ_t src_t[c:c+L] · w[t*C + c : t*C + c + L]) for the vectors c = 0, L, 2L, .. of C
    channels (L = `lanes`; the last one ends at C, overlapping the one before when L does not
    divide C), where src_t is the address at ptrs[t]. Filters of UNROLLED_TAPS taps get them
    unrolled, their addresses loaded once. Its first argument `fused` picks XNNPACK's order
    (see `_make_conv_tile`)."""
    vec_t = ir.VectorType(_F32, lanes)

    def pixel(builder, args, unrolled, fused):
        ptrs_addr, taps, chans, w_addr, bias_addr, out_addr, low, high = args
        ptrs = builder.inttoptr(ptrs_addr, I64.as_pointer())
        w = builder.inttoptr(w_addr, _F32.as_pointer())
        bias = builder.inttoptr(bias_addr, _F32.as_pointer())
        out = builder.inttoptr(out_addr, _F32.as_pointer())
        low_v, high_v = _splat(builder, low, vec_t), _splat(builder, high, vec_t)

        def source(t):
            addr = builder.load(builder.gep(ptrs, [t]), align=8)
            return builder.inttoptr(addr, _F32.as_pointer())

        hoisted = [source(const64(t)) for t in range(unrolled or 0)]
        blocks = builder.sdiv(builder.add(chans, const64(lanes - 1)), const64(lanes))

        last = builder.sub(chans, const64(lanes))

        def blocks_at(first, group):
            """Vectors first .. first+group-1 of the pixel, their sums side by side: one
            vector's sum is a chain of dependent adds (3-4 cycles each), which alone leaves
            the adders waiting (a 7x7x1152 5x5 layer, nearly all border, took 1.5x TFLite)."""
            cs = []
            for j in range(group):
                c = builder.mul(builder.add(first, const64(j)), const64(lanes))
                cs.append(builder.select(builder.icmp_signed("<", c, last), c, last))
            biases = [_load_vec(builder, bias, c, vec_t) for c in cs]

            def tap_step(t, accs, src=None):
                src = src or source(t)
                row = builder.mul(t, chans)
                return [_mul_add(builder, _load_vec(builder, src, c, vec_t),
                                 _load_vec(builder, w, builder.add(row, c), vec_t), acc, fused)
                        for c, acc in zip(cs, accs, strict=True)]

            accs = [_start(builder, b, fused) for b in biases]
            if unrolled:
                for t, src in enumerate(hoisted):
                    accs = tap_step(const64(t), accs, src)
            else:
                accs = loop(builder, taps, accs, tap_step, "dwtap")
            for c, acc, b in zip(cs, accs, biases, strict=True):
                value = _clamp(builder, _finish(builder, acc, b, fused), low_v, high_v)
                _store_vec(builder, value, out, c)

        groups = builder.sdiv(blocks, const64(DW_BLOCKS))
        loop(builder, groups, [], lambda g, _: blocks_at(
            builder.mul(g, const64(DW_BLOCKS)), DW_BLOCKS) or [], f"dwblocks{unrolled}")
        done = builder.mul(groups, const64(DW_BLOCKS))
        loop(builder, builder.sub(blocks, done), [],
             lambda i, _: blocks_at(builder.add(done, i), 1) or [], f"dwblock{unrolled}")

    def codegen(context, builder, signature, args):
        _both_orders(builder, args[0], lambda fused: _by_taps(
            builder, args[2], lambda n: pixel(builder, args[1:], n, fused), "dwptaps"))
        return context.get_dummy_value()

    @intrinsic
    def dw_pixel(typingctx, fused, ptrs_addr, taps, chans, w_addr, bias_addr, out_addr, low,
                 high):
        sig = types.void(types.boolean, types.uintp, types.intp, types.intp, types.uintp,
                         types.uintp, types.uintp, types.float32, types.float32)
        return sig, codegen

    return dw_pixel


DW_GROUP = 2  # interior pixels summed side by side (8- and 16-lane vectors alike)


def _dw_run_pixels(builder, args, unrolled, fused, vec_t):
    """The pixel loop of `_dw_run`; with `unrolled` taps (a constant) the tap offsets and
    weight vectors are loaded once, before the loop."""
    x_addr, x_step, offs_addr, taps, w_addr, w_stride, bias_addr, out_addr, out_step, count, \
        low, high = args
    x = builder.inttoptr(x_addr, _F32.as_pointer())
    offs = builder.inttoptr(offs_addr, I64.as_pointer())
    w = builder.inttoptr(w_addr, _F32.as_pointer())
    out = builder.inttoptr(out_addr, _F32.as_pointer())
    bias = _load_vec(builder, builder.inttoptr(bias_addr, _F32.as_pointer()), const64(0), vec_t)
    low_v, high_v = _splat(builder, low, vec_t), _splat(builder, high, vec_t)

    def tap_terms(t):
        return (builder.load(builder.gep(offs, [t]), align=8),
                _load_vec(builder, w, builder.mul(t, w_stride), vec_t))

    hoisted = [tap_terms(const64(t)) for t in range(unrolled or 0)]

    def pixels(first, group):
        """Pixels first .. first+group-1, their sums side by side: a pixel's sum is a chain
        of dependent adds (latency 3-4 cycles each), so one pixel at a time leaves the adders
        waiting."""
        bases = [builder.mul(builder.add(first, const64(p)), x_step) for p in range(group)]

        def tap_step(t, accs, terms=None):
            off, wv = terms or tap_terms(t)
            return [_mul_add(builder, _load_vec(builder, x, builder.add(base, off), vec_t), wv,
                             acc, fused) for base, acc in zip(bases, accs, strict=True)]

        accs = [_start(builder, bias, fused)] * group
        if unrolled:
            for terms in hoisted:
                accs = tap_step(None, accs, terms)
        else:
            accs = loop(builder, taps, accs, tap_step, "dwruntap")
        for p, acc in enumerate(accs):
            value = _clamp(builder, _finish(builder, acc, bias, fused), low_v, high_v)
            _store_vec(builder, value, out, builder.mul(builder.add(first, const64(p)),
                                                        out_step))

    group = DW_GROUP if unrolled else 1
    groups = builder.sdiv(count, const64(group))
    loop(builder, groups, [], lambda g, _: pixels(builder.mul(g, const64(group)), group) or [],
         f"dwrun{unrolled}")
    done = builder.mul(groups, const64(group))
    loop(builder, builder.sub(count, done), [],
         lambda i, _: pixels(builder.add(done, i), 1) or [], f"dwrunrest{unrolled}")


def _make_dw_run(lanes):
    """An LLVM kernel out[i*out_step + 0:L] = clamp(bias[0:L] + Σ_t x[i*x_step + offs[t] + 0:L]
    · w[t*w_stride + 0:L]) for i in range(count): a run of interior pixels (every tap inside
    the image), L = `lanes` channels. Filters of UNROLLED_TAPS taps get them unrolled. Its first
    argument `fused` picks XNNPACK's order (see `_make_conv_tile`)."""
    vec_t = ir.VectorType(_F32, lanes)

    def codegen(context, builder, signature, args):
        _both_orders(builder, args[0], lambda fused: _by_taps(
            builder, args[4], lambda n: _dw_run_pixels(builder, args[1:], n, fused, vec_t),
            "dwtaps"))
        return context.get_dummy_value()

    @intrinsic
    def dw_run(typingctx, fused, x_addr, x_step, offs_addr, taps, w_addr, w_stride, bias_addr,
               out_addr, out_step, count, low, high):
        sig = types.void(types.boolean, types.uintp, types.intp, types.uintp, types.intp,
                         types.uintp, types.intp, types.uintp, types.uintp, types.intp,
                         types.intp, types.float32, types.float32)
        return sig, codegen

    return dw_run


_dw_pixel_8, _dw_pixel_16 = _make_dw_pixel(VEC), _make_dw_pixel(LANES)
_dw_run_8, _dw_run_16 = _make_dw_run(VEC), _make_dw_run(LANES)


def _axpy_codegen(context, builder, signature, args):
    """dst[i] += src[i] * w for i < count (product rounded, then the sum; with the first
    argument `fused`, one fused multiply-add), 8 lanes at a time and the last count % 8 one by
    one."""
    _both_orders(builder, args[0], lambda fused: _axpy_body(builder, args[1:], fused))
    return context.get_dummy_value()


def _axpy_body(builder, args, fused):
    dst_addr, src_addr, w, count = args
    dst = builder.inttoptr(dst_addr, _F32.as_pointer())
    src = builder.inttoptr(src_addr, _F32.as_pointer())
    w_v = _splat(builder, w)
    vectors = builder.sdiv(count, const64(VEC))

    def vec_step(i, _):
        at = builder.mul(i, const64(VEC))
        total = _mul_add(builder, _load_vec(builder, src, at), w_v, _load_vec(builder, dst, at),
                         fused)
        _store_vec(builder, total, dst, at)
        return []

    def tail_step(i, _):
        at = builder.add(builder.mul(vectors, const64(VEC)), i)
        d_ptr = builder.gep(dst, [at])
        s_val = builder.load(builder.gep(src, [at]), align=4)
        builder.store(_mul_add(builder, s_val, w, builder.load(d_ptr, align=4), fused), d_ptr,
                      align=4)
        return []

    loop(builder, vectors, [], vec_step, "axpy")
    loop(builder, builder.sub(count, builder.mul(vectors, const64(VEC))), [], tail_step,
          "axpytail")


@intrinsic
def _axpy(typingctx, fused, dst_addr, src_addr, w, count):
    return (types.void(types.boolean, types.uintp, types.uintp, types.float32, types.intp),
            _axpy_codegen)


def _make_row_tile(width, chans, vectors):
    """An LLVM micro-kernel over `vectors` x `width` consecutive output pixels of a row (the
    lanes) and `chans` output channels, chans * vectors registers: acc[o, v] = Σ_k
    src_k[offset + v*width : ...] · w[k*w_stride + o] for k < count, in order of k, where src_k is
    the address at addrs[k]; stores clamp(acc + bias[o]) of pixel i, channel o at
    out[i*stride + o] (pixel-major, as NHWC wants it; stride == chans if chans < width). Its
    first argument `fused` picks XNNPACK's order (see `_make_conv_tile`)."""
    vec_t = ir.VectorType(_F32, width)

    def codegen(context, builder, signature, args):
        _both_orders(builder, args[0], lambda fused: body(builder, args[1:], fused))
        return context.get_dummy_value()

    def body(builder, args, fused):
        addrs_addr, count, offset, w_addr, w_stride, bias_addr, out_addr, stride, low, \
            high = args
        addrs = builder.inttoptr(addrs_addr, I64.as_pointer())
        w = builder.inttoptr(w_addr, _F32.as_pointer())
        bias = builder.inttoptr(bias_addr, _F32.as_pointer())
        def bias_vectors():
            return [_splat(builder, builder.load(builder.gep(bias, [const64(o)]), align=4), vec_t)
                    for o in range(chans)]

        def step(k, accs):
            src = builder.inttoptr(builder.load(builder.gep(addrs, [k]), align=8),
                                   _F32.as_pointer())
            xvs = [_load_vec(builder, src, builder.add(offset, const64(v * width)), vec_t)
                   for v in range(vectors)]
            new = []
            for o in range(chans):
                index = builder.add(builder.mul(k, w_stride), const64(o))
                wv = _splat(builder, builder.load(builder.gep(w, [index]), align=4), vec_t)
                new.extend(_mul_add(builder, xvs[v], wv, accs[o * vectors + v], fused)
                           for v in range(vectors))
            return new

        first = _starts(builder, bias_vectors, vec_t, chans, fused)
        start = [first[o] for o in range(chans) for _ in range(vectors)]
        accs = loop(builder, count, start, step, "rowtile")
        biases = first if fused else bias_vectors()
        out = builder.inttoptr(out_addr, _F32.as_pointer())
        low_v, high_v = _splat(builder, low, vec_t), _splat(builder, high, vec_t)
        values = []  # values[o][v]: channel o of pixels v*width .. v*width + width-1
        for o in range(chans):
            values.append([_clamp(builder, _finish(builder, accs[o * vectors + v], biases[o],
                                                   fused), low_v, high_v)
                           for v in range(vectors)])
        for v in range(vectors):
            _store_pixel_major(builder, [row[v] for row in values], out,
                               builder.mul(const64(v * width), stride), stride)

    @intrinsic
    def tile(typingctx, fused, addrs_addr, count, offset, w_addr, w_stride, bias_addr,
             out_addr, stride, low, high):
        sig = types.void(types.boolean, types.uintp, types.intp, types.intp, types.uintp,
                         types.intp, types.uintp, types.uintp, types.intp, types.float32,
                         types.float32)
        return sig, codegen

    return tile


def _interleave(builder, rows):
    """The vectors holding rows[0][i], rows[1][i], ... rows[c-1][i] for i = 0, 1, ..: c
    channel vectors (c a power of 2, each a sequence of vectors) made pixel-major by log2(c)
    rounds of zips, c*log2(c) shuffles (interleave(even rows) zipped with interleave(odd
    rows): element j of the one and of the other become elements 2j and 2j+1)."""
    if len(rows) == 1:
        return rows[0]
    width = rows[0][0].type.count
    lo = ir.Constant(ir.VectorType(ir.IntType(32), width),
                     [k // 2 + (k % 2) * width for k in range(width)])
    hi = ir.Constant(ir.VectorType(ir.IntType(32), width),
                     [width // 2 + k // 2 + (k % 2) * width for k in range(width)])
    out = []
    for even, odd in zip(_interleave(builder, rows[0::2]), _interleave(builder, rows[1::2]),
                         strict=True):
        out += [builder.shuffle_vector(even, odd, lo), builder.shuffle_vector(even, odd, hi)]
    return out


def _store_pixel_major(builder, channels, out, at, stride):
    """out[at + i*stride + o] = channels[o][i] for the `width` pixels i of C channel vectors
    (C a sum of powers of 2 of at most `width`, largest first: 24 = 16 + 8): each group of
    channels is interleaved; a single group narrower than a vector (then stride == C) is
    stored whole, others pixel by pixel."""
    width, chans = channels[0].type.count, len(channels)
    groups, o0 = [], 0
    while o0 < chans:
        size = min(width, 1 << ((chans - o0).bit_length() - 1))
        groups.append((o0, size))
        o0 += size
    for o0, size in groups:
        mixed = _interleave(builder, [[vec] for vec in channels[o0:o0 + size]])
        if size == chans < width:
            for q, vec in enumerate(mixed):
                _store_vec(builder, vec, out, builder.add(at, const64(q * width)))
            continue
        per_vec = width // size  # pixels per interleaved vector
        for q, vec in enumerate(mixed):
            for p in range(per_vec):
                part = vec if size == width else builder.shuffle_vector(
                    vec, ir.Constant(vec.type, ir.Undefined),
                    ir.Constant(ir.VectorType(ir.IntType(32), size),
                                list(range(p * size, p * size + size))))
                pixel = builder.mul(const64(q * per_vec + p), stride)
                _store_vec(builder, part, out, builder.add(at, builder.add(pixel, const64(o0))))


def _transpose_8_codegen(context, builder, signature, args):
    """dst[c*dst_stride + p] = src[p*src_stride + c] for p, c < 8: 8 pixels of 8 channels
    made channel-major by `_interleave` (24 shuffles)."""
    src_addr, src_stride, dst_addr, dst_stride = args
    src = builder.inttoptr(src_addr, _F32.as_pointer())
    dst = builder.inttoptr(dst_addr, _F32.as_pointer())
    pixels = [[_load_vec(builder, src, builder.mul(const64(p), src_stride))] for p in range(VEC)]
    for c, vec in enumerate(_interleave(builder, pixels)):
        _store_vec(builder, vec, dst, builder.mul(const64(c), dst_stride))
    return context.get_dummy_value()


@intrinsic
def _transpose_8(typingctx, src_addr, src_stride, dst_addr, dst_stride):
    return types.void(types.uintp, types.intp, types.uintp, types.intp), _transpose_8_codegen


# packed output channels -> pixel vectors per row tile: 8 accumulators at least (the adds'
# latency x throughput), at most 24 (AVX-512's 32 registers hold them, the x vectors and a
# broadcast); AVX2's 16 registers take the tiles of up to 8 channels (more in groups of 8)
ROW_CHANNELS = (1, 2, 4, 8, 16, 24)
_ROW_VECTORS = {1: 8, 2: 4, 4: 2, 8: 1, 16: 1, 24: 1}
_row_16x1, _row_16x2, _row_16x4, _row_16x8, _row_16x16, _row_16x24 = (
    _make_row_tile(2 * VEC, c, _ROW_VECTORS[c]) for c in ROW_CHANNELS)
_row_8x1, _row_8x2, _row_8x4, _row_8x8 = (
    _make_row_tile(VEC, c, _ROW_VECTORS[c]) for c in ROW_CHANNELS[:4])


@inline_kernel
def _row_run(chans, wide):
    """Output pixels per row tile of `chans` channels (a tile's, see `_row_group`)."""
    vectors = 8 // min(chans, 8)
    return vectors * (2 * VEC if wide else VEC)


@inline_kernel
def _row_tile(chans, wide, fused, addrs, depth, ox0, w, w_stride, bias, t, stride, low,
              high):
    """The row tile for `chans` channels of weight rows w_stride floats apart, from w[0] and
    bias[0], storing [run, chans] at address t, pixels `stride` floats apart; fused: XNNPACK's
    order."""
    a, b, w_ = addr(addrs), addr(bias), addr(w)
    if wide:
        if chans == 1:
            _row_16x1(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)
        elif chans == 2:
            _row_16x2(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)
        elif chans == 4:
            _row_16x4(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)
        elif chans == 8:
            _row_16x8(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)
        elif chans == 16:
            _row_16x16(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)
        else:
            _row_16x24(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)
    elif chans == 1:
        _row_8x1(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)
    elif chans == 2:
        _row_8x2(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)
    elif chans == 4:
        _row_8x4(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)
    else:
        _row_8x8(fused, a, depth, ox0, w_, w_stride, b, t, stride, low, high)


ROW_GROUP = 16  # channels per row tile beyond 24 (in turn, over the same input row)
ROW_GROUP_AVX2 = 8  # channels per row tile beyond 8 without AVX-512 (8 of 16 registers)
ROW_MAX = 64  # output channels a row-vectorized conv takes at most


def row_channels(out_c: int) -> int:
    """The packed channel count of a row-vectorized conv with out_c <= 64 output channels:
    one tile's worth up to 24, else whole groups of 16."""
    if out_c > ROW_CHANNELS[-1]:
        return -(-out_c // ROW_GROUP) * ROW_GROUP
    return next(c for c in ROW_CHANNELS if c >= out_c)


def row_run(packed: int, wide: bool) -> int:
    """Output pixels per row tile of a conv with `packed` channels (row_channels)."""
    return _row_run.py_func(_row_group.py_func(packed, wide), wide)  # (from Python)


@inline_kernel
def _row_group(packed, wide):
    """Channels per row tile of a [depth, packed] filter (see row_channels): all of them up to
    24 (AVX-512) or 8 (AVX2), else groups of 16 or 8 in turn over the same input rows."""
    if not wide:
        return min(packed, ROW_GROUP_AVX2)
    return packed if packed <= ROW_CHANNELS[-1] else ROW_GROUP


# --- packing (prepare time) ---------------------------------------------------------------------


@inline_kernel
def panel_channel(j: int, out_c: int) -> int:
    """The output channel of panel j's first lane: j*16, except for a last panel of 9-15 or
    1-7 channels, which starts 16 or 8 channels before out_c where out_c allows. It overlaps
    the panel before it, so its tile stores whole vectors straight into the output (the
    overlapped channels computed twice, identically) instead of through scratch and a copy
    (a 1x1 24 -> 28 conv at 64x64 took 1.7x as long per tile as 24 -> 24 that way)."""
    oc0 = j * LANES
    tail = out_c - oc0
    if VEC < tail < LANES and out_c >= LANES:
        return out_c - LANES
    if tail < VEC and out_c >= VEC:
        return out_c - VEC
    return oc0


def pack_conv_f32(w: np.ndarray) -> np.ndarray:
    """Filter [Co, KH, KW, Ci] -> panels [ceil(Co/16), KH*KW*Ci, 16] float32: panel j holds
    channels panel_channel(j, Co) on, zero past Co."""
    out_c = w.shape[0]
    depth = w[0].size
    flat_w = np.asarray(w, np.float32).reshape(out_c, depth)
    panels = np.zeros((-(-out_c // LANES), LANES, depth), np.float32)
    for j in range(panels.shape[0]):
        oc0 = panel_channel.py_func(j, out_c)  # (from Python)
        chans = flat_w[oc0:oc0 + LANES]
        panels[j, :chans.shape[0]] = chans
    return np.ascontiguousarray(panels.transpose(0, 2, 1))


def pack_narrow_f32(w: np.ndarray) -> np.ndarray:
    """Filter [Co, KH, KW, Ci], Co <= 64 -> [KH*KW*Ci, row_channels(Co)] float32, zero past
    Co."""
    out = np.zeros((w[0].size, row_channels(w.shape[0])), np.float32)
    out[:, :w.shape[0]] = np.asarray(w, np.float32).reshape(w.shape[0], -1).T
    return out


def pad_channels(v: np.ndarray, multiple: int) -> np.ndarray:
    """v [C] float32 zero-filled to a multiple of `multiple` entries."""
    out = np.zeros(-(-v.size // multiple) * multiple, np.float32)
    out[:v.size] = v
    return out


# --- drivers ------------------------------------------------------------------------------------


@inline_kernel
def _tap_addresses(ptrs, x, zeros, n, oy, ox, slot, stride_h, stride_w, dil_h, dil_w, pad_top,
                   pad_left, k_h, k_w, x_major):
    """ptrs[t, slot] = address of x[n, iy, ix, 0] for each tap t = ky*KW + kx (or, x_major,
    t = kx*KH + ky), or of `zeros` where the tap falls in the padding (contributing 0, as
    TFLite skips it)."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    base = addr(x)
    for ky in range(k_h):
        iy = oy * stride_h - pad_top + ky * dil_h
        for kx in range(k_w):
            ix = ox * stride_w - pad_left + kx * dil_w
            t = kx * k_h + ky if x_major else ky * k_w + kx
            if 0 <= iy < in_h and 0 <= ix < in_w:
                ptrs[t, slot] = base + 4 * (((n * in_h + iy) * in_w + ix) * in_c)
            else:
                ptrs[t, slot] = addr(zeros)


@inline_kernel
def _conv_fits(x, panels, bias, out, k_h, k_w, p0, p1, j0, j1):
    """conv2d_f32_rows' operands fit each other, [p0, p1) lies inside out and [j0, j1)
    inside the panels."""
    return (panels.shape[1] == k_h * k_w * x.shape[3] and panels.shape[0] * LANES >= out.shape[1]
            and bias.shape[0] >= panels.shape[0] * LANES and 0 <= p0 <= p1 <= out.shape[0]
            and 0 <= j0 <= j1 <= panels.shape[0] and out.shape[0] % max(x.shape[0], 1) == 0)


@kernel
def conv2d_f32_rows(x, panels, bias, out, out_w, k_h, k_w, stride_h, stride_w, dil_h, dil_w,
                    pad_top, pad_left, act_min, act_max, wide, fused, post, p0, p1, j0, j1):
    """Output pixels [p0, p1) of weight panels [j0, j1) (their channels, panel_channel) of a
    float CONV_2D into out [N*OH*OW, Co] float32 (see the
    module docstring). x [N,H,W,Ci] float32, panels from pack_conv_f32, bias [panels*16];
    wide: the 16-lane tile (WIDE, for AVX-512), else two 6x16 tiles of 8-lane vectors;
    fused: XNNPACK's arithmetic (each sum from the bias, by fused multiply-adds); post: a
    folded ADD and/or PRELU (float_conv.post_args), run on each tile while it is in cache.

    With dil_w == 1, a filter row's KW taps read KW*Ci consecutive floats of the input, in
    the order of the packed weights: a tile whose pixels all have their window inside the
    image's columns gets one address per filter row (KH "taps" of KW*Ci channels)."""
    if not _conv_fits(x, panels, bias, out, k_h, k_w, p0, p1, j0, j1) or \
            not post_fits(post, out.shape[0], out.shape[1]):
        raise ValueError("conv2d_f32_rows: panels, bias, out, post, [p0, p1) or [j0, j1) do "
                         "not fit x")
    per_image = out.shape[0] // x.shape[0]
    in_w, in_c = x.shape[2], x.shape[3]
    zeros = np.zeros(k_w * in_c, np.float32)
    ptrs = np.empty((k_h * k_w, ROWS), np.int64)
    scratch = np.empty((ROWS, 2 * LANES), np.float32)  # a short tile's output, then copied
    pix = np.empty((3, ROWS), np.int64)
    # interior columns: 0 <= ox*sw - pl and ox*sw - pl + (KW-1)*dw < W
    ox_lo = (pad_left + stride_w - 1) // stride_w
    ox_hi = (in_w - 1 + pad_left - (k_w - 1) * dil_w) // stride_w + 1
    # a 1x1, stride-1, unpadded conv reads output pixel p's input at x's pixel p
    pointwise = k_h * k_w == 1 and stride_h == 1 and stride_w == 1 and pad_top == 0 and \
        pad_left == 0 and x.shape[1] * in_w == per_image
    post_from = p0  # the first output pixel still waiting for `post`
    for t0 in range(p0, p1, ROWS):
        rows = min(ROWS, p1 - t0)
        if pointwise:
            for r in range(ROWS):
                ptrs[0, r] = addr(x) + 4 * in_c * (t0 + min(r, rows - 1))
            taps, depth = 1, in_c
        else:
            taps, depth = _window_addresses(ptrs, x, zeros, pix, t0, rows, per_image, out_w,
                                            ox_lo, ox_hi, k_h, k_w, stride_h, stride_w, dil_h,
                                            dil_w, pad_top, pad_left)
        _tile_panels(ptrs, taps, depth, panels, j0, j1, bias, out, scratch, t0, rows, act_min,
                     act_max, wide, fused, t0 + ROWS < p1)
        if post_due(post_from, t0 + rows, p1, out.shape[1], post[4]):
            run_post(out, post_from, t0 + rows, post)
            post_from = t0 + rows


@inline_kernel
def _window_addresses(ptrs, x, zeros, pix, t0, rows, per_image, out_w, ox_lo, ox_hi, k_h, k_w,
                      stride_h, stride_w, dil_h, dil_w, pad_top, pad_left):
    """The addresses of pixels t0 .. t0+rows-1 (a short tile repeats its last pixel) into
    ptrs; returns (taps, channels per tap): by filter row when dil_w == 1 and every window
    lies inside the image's columns [ox_lo, ox_hi), else by tap. pix [3, ROWS] is scratch."""
    n, rest = t0 // per_image, t0 % per_image  # pixel t0 = (n, oy, ox); then step
    oy, ox = rest // out_w, rest % out_w
    if dil_w == 1 and ox_lo <= ox and ox + ROWS - 1 < min(ox_hi, out_w):
        _one_row_addresses(ptrs, x, zeros, n, oy, ox, stride_h, stride_w, dil_h, pad_top,
                           pad_left, k_h)
        return k_h, k_w * x.shape[3]
    by_row = dil_w == 1
    for r in range(ROWS):
        pix[0, r], pix[1, r], pix[2, r] = n, oy, ox
        by_row = by_row and ox_lo <= ox < ox_hi
        if r + 1 < rows:
            ox += 1
            if ox == out_w:
                ox, oy = 0, oy + 1
                if oy * out_w == per_image:
                    oy, n = 0, n + 1
    for r in range(ROWS):
        if by_row:
            _row_addresses(ptrs, x, zeros, pix[0, r], pix[1, r], pix[2, r], r, stride_h,
                           stride_w, dil_h, pad_top, pad_left, k_h)
        else:
            _tap_addresses(ptrs, x, zeros, pix[0, r], pix[1, r], pix[2, r], r, stride_h,
                           stride_w, dil_h, dil_w, pad_top, pad_left, k_h, k_w, False)
    if by_row:
        return k_h, k_w * x.shape[3]
    return k_h * k_w, x.shape[3]


@inline_kernel
def _one_row_addresses(ptrs, x, zeros, n, oy, ox, stride_h, stride_w, dil_h, pad_top, pad_left,
                       k_h):
    """_row_addresses of the ROWS pixels (n, oy, ox + r), all in one output row with their
    windows inside the image's columns: pixel r's filter row starts stride_w*Ci floats after
    pixel r-1's, and a filter row in the padding is padding for all of them."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    step = 4 * stride_w * in_c
    for ky in range(k_h):
        iy = oy * stride_h - pad_top + ky * dil_h
        if 0 <= iy < in_h:
            first = addr(x) + 4 * (((n * in_h + iy) * in_w + ox * stride_w - pad_left) * in_c)
            for r in range(ROWS):
                ptrs[ky, r] = first + r * step
        else:
            for r in range(ROWS):
                ptrs[ky, r] = addr(zeros)


@inline_kernel
def _row_addresses(ptrs, x, zeros, n, oy, ox, slot, stride_h, stride_w, dil_h, pad_top,
                   pad_left, k_h):
    """ptrs[ky, slot] = address of x[n, iy, ix0, 0], the first of filter row ky's KW*Ci
    input floats (ix0 = ox*sw - pl, inside the image), or of `zeros` when row iy is padding."""
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    ix = ox * stride_w - pad_left
    for ky in range(k_h):
        iy = oy * stride_h - pad_top + ky * dil_h
        if 0 <= iy < in_h:
            ptrs[ky, slot] = addr(x) + 4 * (((n * in_h + iy) * in_w + ix) * in_c)
        else:
            ptrs[ky, slot] = addr(zeros)


@inline_kernel
def _tile_panels(ptrs, taps, depth, panels, j0, j1, bias, out, scratch, t0, rows, act_min,
                 act_max, wide, fused, more_rows):
    """Output pixels [t0, t0 + rows) of panels [j0, j1) (with `wide`, two whole panels at a time
    where they are, and the two panels of 24 channels when `more_rows`, the caller's range
    going on past this tile: their 8 extra lanes land in the next pixel's channels 0-7, which
    the next row's store, or the next tile, rewrites; a tile of at most FEW_ROWS pixels one
    pixel and GROUP panels at a time, one of at most 6 pixels as 6-pixel tiles);
    a short tile, or a conv of fewer than 8 channels, goes through `scratch` and is copied.
    Inlined, with raw addresses instead of array views: a call, or a view, per tile costs
    Numba's reference counting of each array (~90 ns a tile, 40 % of a 1x1 16 -> 16 conv)."""
    out_c = out.shape[1]
    low, high = np.float32(act_min), np.float32(act_max)
    p, w0, b0 = addr(ptrs), addr(panels), addr(bias)
    panel_bytes = 4 * panels.shape[1] * LANES
    o0 = addr(out) + 4 * t0 * out_c  # pixel t0's channel 0
    j = j0
    group = GROUP_WIDE if wide else GROUP_NARROW
    whole = min(j1, out_c // LANES)  # the range's panels all of whose 16 channels are outputs
    if rows <= FEW_ROWS and whole - j0 >= group:  # pixel by pixel, `group` panels at a time
        for r in range(rows):
            for g in range(j0, whole, group):
                first = min(g, whole - group)  # the last group overlaps the one before: its
                oc0 = first * LANES  # channels are computed twice, identically
                w_g, b_g = w0 + first * panel_bytes, b0 + 4 * oc0
                pixel = o0 + 4 * (r * out_c + oc0)
                if wide:  # (pixel r's addresses start r slots on)
                    _pixel_1x128(fused, p + 8 * r, taps, depth, w_g, b_g, pixel, out_c, low,
                                 high)
                else:
                    _pixel_1x64(fused, p + 8 * r, taps, depth, w_g, b_g, pixel, out_c, low,
                                high)
        j = whole  # then a tail panel of 1-15 channels, as below
    short = rows <= ROWS // 2  # the 6-pixel tiles run where 12 would be half empty
    while j < j1:
        oc0 = panel_channel(j, out_c)
        w_j, b_j = w0 + j * panel_bytes, b0 + 4 * oc0
        pair = wide and j + 1 < j1 and (oc0 + 2 * LANES <= out_c or j == 0 and out_c == LANES + VEC)
        width = min(2 * LANES if pair else LANES, out_c - oc0)
        # the pixels the tile computes: a short tile repeats its last one up to these
        tile_rows = ROWS // 2 if short and width > VEC else ROWS
        spill = pair and width == LANES + VEC and more_rows  # (more_rows: a whole tile)
        direct = rows == tile_rows and (width == VEC or width == LANES or
                                        width == 2 * LANES or spill)
        target, stride = addr(scratch), scratch.shape[1]
        if direct:
            target, stride = o0 + 4 * oc0, out_c
        if pair and short:
            _pair_6x32(fused, p, taps, depth, w_j, b_j, target, stride, low, high)
        elif pair:
            _pair_12x32(fused, p, taps, depth, w_j, b_j, target, stride, low, high)
        elif width <= VEC:
            _tile_12x8(fused, p, taps, depth, w_j, b_j, target, stride, low, high)
        elif wide and not short:
            _tile_12x16(fused, p, taps, depth, w_j, b_j, target, stride, low, high)
        else:  # pixels 0-5, then 6-11 (their addresses are 6 slots on) if there are any
            for half in range(1 if short else 2):
                _tile_6x16(fused, p + 8 * half * (ROWS // 2), taps, depth, w_j, b_j,
                           target + 4 * half * (ROWS // 2) * stride, stride, low, high)
        if not direct:
            for r in range(rows):
                for c in range(width):
                    out[t0 + r, oc0 + c] = scratch[r, c]
        j += 2 if pair else 1


@inline_kernel
def _narrow_fits(x, w8, bias, out, k_h, k_w, r0, r1):
    """conv2d_f32_narrow_rows' operands fit each other and rows [r0, r1) lie inside out."""
    packed, out_c = w8.shape[1], out.shape[3]
    one_tile = packed in (1, 2, 4, 8, 16, 24) and (packed <= 2 * out_c or packed == 1)
    groups = packed % ROW_GROUP == 0 and 24 < packed <= ROW_MAX and packed - out_c < ROW_GROUP
    return (w8.shape[0] == k_h * k_w * x.shape[3] and 0 < out_c <= packed
            and (one_tile or groups) and bias.shape[0] == out_c and out.shape[0] == x.shape[0]
            and 0 <= r0 <= r1 <= out.shape[0] * out.shape[1])


@kernel
def conv2d_f32_narrow_rows(x, w8, bias, out, k_h, k_w, stride_h, stride_w, dil_h, dil_w,
                           pad_top, pad_left, act_min, act_max, wide, fused, post, r0, r1):
    """Output rows [r0, r1) (row = n*OH + oy) of a float CONV_2D with few output channels
    (at most 64: 1-8 where a 16-channel panel would be mostly zeros, 9-64 for first layers,
    whose 3-channel taps leave the GEMM little to do per address) into out [N,OH,OW,Co].
    x [N,H,W,Ci], w8 [KH*KW*Ci, row_channels(Co)] float32 from pack_narrow_f32, bias [Co].

    The vectors run along the output row instead: each input row the block reads is copied
    once, zero-padded and split by column phase (u = j*sw + phase), channel-major, so that tap
    kx of every output pixel ox reads rows[iy % ring, c, phase, ox + (kx*dw) // sw],
    contiguous in ox (a ring of as many rows as a window spans). Then per run of pixels (`_row_run`: 8 accumulators or more), `_row_tile` sums over
    k = (ky, kx, c) in the reference order, one register per (output channel, 16 or 8
    pixels), and adds the bias and clamps; a filter row outside the image reads zeros (adding
    +-0 leaves a sum unchanged, see `_split_row`); more than 24 channels (8 on AVX2) take
    groups of 16 (8) in turn (`_row_group`). Rows narrower than a run take one `_axpy` per
    (k, o) into a row of sums. `post` (float_conv.post_args) runs on each finished row."""
    in_h, in_c = x.shape[1], x.shape[3]
    out_h, out_w, out_c = out.shape[1], out.shape[2], out.shape[3]
    depth = k_h * k_w * in_c
    flat = out.reshape((out.shape[0] * out_h * out_w, out_c))
    post_from = r0 * out_w  # the first output pixel still waiting for `post`
    if not _narrow_fits(x, w8, bias, out, k_h, k_w, r0, r1) or \
            not post_fits(post, flat.shape[0], out_c):
        raise ValueError("conv2d_f32_narrow_rows: w8, bias, out, post or [r0, r1) do not fit x")
    packed = w8.shape[1]
    chans = _row_group(packed, wide)  # per tile
    run = _row_run(chans, wide)
    span = out_w + ((k_w - 1) * dil_w) // stride_w  # columns j of each phase that are read
    ring = min(in_h, (k_h - 1) * dil_h + 1)  # input row iy at rows[iy % ring]: a window's rows
    rows = np.empty((ring, in_c, stride_w, span), np.float32)  # stay in cache, no page faults
    zeros = np.zeros(span, np.float32)
    addrs = np.empty(depth, np.int64)
    acc = np.empty((out_c, out_w), np.float32)  # the rows narrower than a run
    tile = np.empty((max(run, 1), chans), np.float32)
    bias_p = np.zeros(packed, np.float32)
    for o in range(out_c):  # (a slice assignment would compile Numba's shape-error text: 1.5 s)
        bias_p[o] = bias[o]
    low, high = np.float32(act_min), np.float32(act_max)
    split_n, split_hi = -1, 0  # the image and the input rows [.., split_hi) split so far
    for row in range(r0, r1):
        n, oy = row // out_h, row % out_h
        if n != split_n:
            split_n, split_hi = n, 0
        lo = max(0, oy * stride_h - pad_top)
        hi = min(in_h, oy * stride_h - pad_top + (k_h - 1) * dil_h + 1)
        for iy in range(max(lo, split_hi), hi):  # rows go down: split each one once, over
            _split_row(x, rows[iy % ring], n, iy, pad_left, stride_w)  # one before the window
        split_hi = max(split_hi, hi)
        for ky in range(k_h):
            iy = oy * stride_h - pad_top + ky * dil_h
            for kx in range(k_w):
                phase, j0 = (kx * dil_w) % stride_w, (kx * dil_w) // stride_w
                for c in range(in_c):
                    k = (ky * k_w + kx) * in_c + c
                    addrs[k] = addr(zeros)
                    if 0 <= iy < in_h:
                        addrs[k] = addr(rows[iy % ring, c, phase, j0:])
        if 0 < run <= out_w:
            for r in range((out_w + run - 1) // run):
                ox0 = min(r * run, out_w - run)  # the last run overlaps the one before
                for o0 in range(0, out_c, chans):
                    whole = o0 + chans <= out_c  # a whole group goes straight into out
                    target, stride = addr(tile), chans
                    if whole:
                        target, stride = addr(out[n, oy, ox0, o0:]), out_c
                    _row_tile(chans, wide, fused, addrs, depth, ox0, w8[0, o0:], packed,
                              bias_p[o0:], target, stride, low, high)
                    if whole:
                        continue
                    for i in range(run):
                        for o in range(min(chans, out_c - o0)):
                            out[n, oy, ox0 + i, o0 + o] = tile[i, o]
        else:
            for o in range(out_c):  # XNNPACK's sums start at the bias, the reference's at 0
                acc[o] = bias[o] if fused else 0
            for k in range(depth):
                for o in range(out_c):
                    _axpy(fused, addr(acc[o]), addrs[k], w8[k, o], out_w)
            _store_row(acc, bias, out, n, oy, 0, out_w, low, high, fused)
        if post_due(post_from, (row + 1) * out_w, r1 * out_w, flat.shape[1], post[4]):
            run_post(flat, post_from, (row + 1) * out_w, post)
            post_from = (row + 1) * out_w


@inline_kernel
def _store_row(acc, bias, out, n, oy, ox0, count, low, high, fused):
    """out[n, oy, ox0 + i, o] = clamp(acc[o, i] + bias[o]) for i < count, o < Co; fused: the
    sums hold their bias already (XNNPACK's order), clamp(acc[o, i])."""
    for i in range(count):
        for o in range(out.shape[3]):
            total = acc[o, i] if fused else acc[o, i] + bias[o]
            out[n, oy, ox0 + i, o] = activation_f32(total, low, high)


@kernel
def _split_row(x, rows, n, iy, pad_left, stride_w):
    """rows[c, phase, j] = x[n, iy, j*sw + phase - pl, c], 0 outside the image. A tap in the
    column padding then adds x*w = +-0, which leaves the running sum unchanged (it starts at
    +0 and a sum of floats is -0 only if every term is), unless w is inf or NaN."""
    in_w = x.shape[2]
    span = rows.shape[2]
    if stride_w == 1 and x.shape[3] % VEC == 0 and 0 <= pad_left:
        _split_row_by_8(x, rows, n, iy, pad_left)
        return
    in_c = x.shape[3]
    line = x[n, iy].reshape(in_w * in_c)
    for c in range(rows.shape[0]):
        for phase in range(stride_w):
            # the columns j whose pixel j*sw + phase - pl is in the image: [j_lo, j_hi)
            j_lo = min(span, max(0, -((phase - pad_left) // stride_w)))
            j_hi = max(j_lo, min(span, (in_w - 1 + pad_left - phase) // stride_w + 1))
            dst = rows[c, phase]
            for j in range(j_lo):
                dst[j] = 0
            for j in range(j_hi, span):
                dst[j] = 0
            if j_hi > j_lo:  # flat views from index 0, a positive step: no test per value
                inside = dst[j_lo:j_hi]
                src = line[(j_lo * stride_w + phase - pad_left) * in_c + c:]
                step = np.uint64(stride_w * in_c)
                for t in range(inside.size):
                    inside[t] = src[np.uint64(t) * step]


@kernel
def _split_row_by_8(x, rows, n, iy, pad_left):
    """`_split_row` for stride 1 and a multiple of 8 channels: the columns j whose pixel
    j - pl is inside the image in blocks of 8 pixels x 8 channels (`_transpose_8`), the rest
    one by one."""
    in_w, in_c = x.shape[2], x.shape[3]
    span = rows.shape[2]
    j_hi = min(span, in_w + pad_left)  # columns [pl, j_hi) are inside the image
    blocks = max(0, (j_hi - pad_left) // VEC)
    for b in range(blocks):
        j = pad_left + b * VEC
        for c0 in range(0, in_c, VEC):
            _transpose_8(addr(x[n, iy, j - pad_left, c0:]), in_c,
                         addr(rows[c0, 0, j:]), span)
    for c in range(in_c):
        for j in range(min(pad_left, span)):
            rows[c, 0, j] = 0
        for j in range(pad_left + blocks * VEC, span):
            ix = j - pad_left
            rows[c, 0, j] = x[n, iy, ix, c] if ix < in_w else 0


@inline_kernel
def _depthwise_fits(x, w, bias, out, k_h, k_w, r0, r1):
    """depthwise_f32_rows' operands fit each other and rows [r0, r1) lie inside out."""
    chans = out.shape[3]
    return (chans >= VEC and x.shape[3] == chans and w.shape[1] == chans
            and w.shape[0] == k_h * k_w and bias.shape[0] == chans and out.shape[0] == x.shape[0]
            and 0 <= r0 <= r1 <= out.shape[0] * out.shape[1])


@kernel
def depthwise_f32_rows(x, w, bias, out, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                       k_h, k_w, act_min, act_max, fused, x_major, post, r0, r1):
    """Output rows [r0, r1) (row = n*OH + oy) of a float DEPTHWISE_CONV_2D with multiplier 1
    into out [N,OH,OW,C], C >= 8. x [N,H,W,C] float32, w [KH*KW, C] float32, bias [C]:
    out[n,oy,ox,c] = clamp(bias[c] + Σ_{ky,kx} x[n, oy*sh-pt+ky*dh, ox*sw-pl+kx*dw, c]
                                               * w[ky*KW+kx, c]).
    Pixels whose taps all fall inside the image run in 16- (or 8-) channel blocks along the
    row (`_dw_run`); the others gather per pixel, zeros for taps in the padding (`_dw_pixel`).
    fused: XNNPACK's arithmetic, each sum from the bias, by fused multiply-adds; x_major: the
    taps column by column, w [KW*KH, C] with t = kx*KH + ky (its depthwise kernels' order;
    with a multiplier above 1 it runs a grouped GEMM, row by row). `post`
    (float_conv.post_args) runs on each finished row."""
    in_h, in_w = x.shape[1], x.shape[2]
    out_h, out_w, chans = out.shape[1], out.shape[2], out.shape[3]
    flat = out.reshape((out.shape[0] * out_h * out_w, chans))
    post_from = r0 * out_w  # the first output pixel still waiting for `post`
    if not _depthwise_fits(x, w, bias, out, k_h, k_w, r0, r1) or \
            not post_fits(post, flat.shape[0], chans):
        raise ValueError("depthwise_f32_rows: x, w, bias, out, post or [r0, r1) do not fit "
                         "(C >= 8)")
    taps = k_h * k_w
    low, high = np.float32(act_min), np.float32(act_max)
    zeros = np.zeros(chans, np.float32)
    ptrs = np.empty((taps, 1), np.int64)
    offs = np.empty(taps, np.int64)  # element offset of each tap from the window's corner
    for ky in range(k_h):
        for kx in range(k_w):
            offs[kx * k_h + ky if x_major else ky * k_w + kx] = (ky * dil_h * in_w + kx * dil_w) \
                * chans
    # interior columns: 0 <= ox*sw - pl and ox*sw - pl + (KW-1)*dw < W
    ox_lo = min(out_w, (pad_left + stride_w - 1) // stride_w)
    ox_hi = max(ox_lo, min(out_w, (in_w - 1 + pad_left - (k_w - 1) * dil_w) // stride_w + 1))
    for row in range(r0, r1):
        n, oy = row // out_h, row % out_h
        iy0 = oy * stride_h - pad_top
        inside = iy0 >= 0 and iy0 + (k_h - 1) * dil_h < in_h  # every filter row in the image
        for part in range(3):  # columns [0, lo) and [hi, OW) per pixel, [lo, hi) as a run
            ox0, ox1 = row_part(part, inside, ox_lo, ox_hi, out_w)
            if ox1 <= ox0:
                continue  # (an inlined helper's array arguments cost reference counts)
            if part == 1 and inside:
                _dw_interior(addr(x), in_h, in_w, addr(w), addr(bias), addr(offs), taps,
                             addr(out), out_h, out_w, chans, n, oy, iy0, ox0, ox1, stride_w,
                             pad_left, low, high, fused)
            else:
                _dw_pixels(x, w, bias, out, zeros, ptrs, n, oy, ox0, ox1, stride_h, stride_w,
                           dil_h, dil_w, pad_top, pad_left, k_h, k_w, low, high, fused, x_major)
        if post_due(post_from, (row + 1) * out_w, r1 * out_w, flat.shape[1], post[4]):
            run_post(flat, post_from, (row + 1) * out_w, post)
            post_from = (row + 1) * out_w


@inline_kernel
def row_part(part, inside, ox_lo, ox_hi, out_w):
    """Columns [ox0, ox1) of part 0, 1, 2 of an output row: all of it in part 0 when some
    filter row falls outside the image, else left border, interior, right border (depthwise
    and MAX_POOL_2D's drivers: the border parts' kernel then has one call site, and no
    literal 0 argument that Numba would compile a second copy of it for)."""
    if not inside:
        return (0, out_w) if part == 0 else (0, 0)
    if part == 0:
        return 0, ox_lo
    if part == 1:
        return ox_lo, ox_hi
    return ox_hi, out_w


@inline_kernel
def _dw_interior(x_addr, in_h, in_w, w_addr, bias_addr, offs_addr, taps, out_addr, out_h,
                 out_w, chans, n, oy, iy0, ox0, ox1, stride_w, pad_left, low, high, fused):
    """Pixels [ox0, ox1) of output row (n, oy), all of whose taps are inside the image, in
    the vectors of `_dw_block`. Inlined, on raw addresses and sizes: an inlined helper's array
    arguments cost two atomic reference counts each, per call (~60 ns a row for five)."""
    # the window corner of pixel ox0, and its output
    corner = x_addr + 4 * ((n * in_h + iy0) * in_w + ox0 * stride_w - pad_left) * chans
    target = out_addr + 4 * ((n * out_h + oy) * out_w + ox0) * chans
    c = 0
    while c < chans:
        c, lanes = _dw_block(c, chans)
        args = (corner + 4 * c, stride_w * chans, offs_addr, taps, w_addr + 4 * c, chans,
                bias_addr + 4 * c, target + 4 * c, chans, ox1 - ox0, low, high)
        if lanes == LANES:
            _dw_run_16(fused, *args)
        else:
            _dw_run_8(fused, *args)
        c += lanes


@inline_kernel
def _dw_lanes(chans):
    """Channels per depthwise vector of a border pixel: 16 (a whole cache line of each tap's
    input) from 16 channels on, else 8."""
    return LANES if chans >= LANES else VEC


@inline_kernel
def _dw_block(c, chans):
    """(first channel, lanes) of the interior run's vector covering channel c of C >= 8: 16
    lanes while 16 channels remain, then one vector ending at C, of 8 lanes for a tail of 1-8
    (24 channels: 16 + 8, not two 16s), else of 16 (or 8 below 16 channels). A last vector
    wider than the tail overlaps the one before it: those channels are computed twice,
    identically."""
    rest = chans - c
    if rest >= LANES:
        return c, LANES
    if rest <= VEC:
        return chans - VEC, VEC
    if chans >= LANES:
        return chans - LANES, LANES
    return c, VEC


@inline_kernel
def _dw_pixels(x, w, bias, out, zeros, ptrs, n, oy, ox0, ox1, stride_h, stride_w, dil_h,
               dil_w, pad_top, pad_left, k_h, k_w, low, high, fused, x_major):
    """Pixels [ox0, ox1) of output row (n, oy), gathering each one's tap addresses into
    ptrs [KH*KW, 1] (`zeros` [C] stands for taps in the padding); low, high float32."""
    chans = out.shape[3]
    taps = k_h * k_w
    for ox in range(ox0, ox1):
        _tap_addresses(ptrs, x, zeros, n, oy, ox, 0, stride_h, stride_w, dil_h, dil_w,
                       pad_top, pad_left, k_h, k_w, x_major)
        pixel = addr(out) + 4 * ((n * out.shape[1] + oy) * out.shape[2] + ox) * chans
        args = (addr(ptrs), taps, chans, addr(w), addr(bias), pixel, low,
                high)
        if _dw_lanes(chans) == LANES:
            _dw_pixel_16(fused, *args)
        else:
            _dw_pixel_8(fused, *args)


# --- threads: each kernel's range cut into `parts` run at once (threads.split_run) -----------
# A ValueError inside a prange is lost (Numba drops it and the part's output stays unwritten),
# so each driver checks the whole range first.


@kernel(parallel=True)
def conv2d_f32_split(x, panels, bias, out, out_w, k_h, k_w, stride_h, stride_w, dil_h, dil_w,
                     pad_top, pad_left, act_min, act_max, wide, fused, post, pixels, n_panels,
                     by_panels, parts):
    """conv2d_f32_rows over `pixels` x `n_panels` cut as threads.split_grid says; cut by
    panels, a pixel's channels finish in different parts, so its `post` runs after them all."""
    if not _conv_fits(x, panels, bias, out, k_h, k_w, 0, pixels, 0, n_panels) or \
            not post_fits(post, out.shape[0], out.shape[1]):
        raise ValueError("conv2d_f32_rows: panels, bias, out, post, [p0, p1) or [j0, j1) do "
                         "not fit x")
    deferred = by_panels and post[4] != 0
    now = (post[0], post[1], post[2], post[3], 0 if deferred else post[4])
    for i in prange(parts):
        p0, p1, j0, j1 = pool.grid_part(pixels, n_panels, by_panels, parts, i)
        conv2d_f32_rows(x, panels, bias, out, out_w, k_h, k_w, stride_h, stride_w, dil_h, dil_w,
                        pad_top, pad_left, act_min, act_max, wide, fused, now, p0, p1, j0, j1)
    if deferred:
        for i in prange(parts):
            p0, p1 = pool.part(pixels, parts, i)
            run_post(out, p0, p1, post)


@kernel(parallel=True)
def conv2d_f32_narrow_split(x, w8, bias, out, k_h, k_w, stride_h, stride_w, dil_h, dil_w,
                            pad_top, pad_left, act_min, act_max, wide, fused, post, rows,
                            parts):
    if not _narrow_fits(x, w8, bias, out, k_h, k_w, 0, rows) or \
            not post_fits(post, out.shape[0] * out.shape[1] * out.shape[2], out.shape[3]):
        raise ValueError("conv2d_f32_narrow_rows: w8, bias, out, post or [r0, r1) do not fit x")
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        conv2d_f32_narrow_rows(x, w8, bias, out, k_h, k_w, stride_h, stride_w, dil_h, dil_w,
                               pad_top, pad_left, act_min, act_max, wide, fused, post, r0, r1)


@kernel(parallel=True)
def depthwise_f32_split(x, w, bias, out, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                        k_h, k_w, act_min, act_max, fused, x_major, post, rows, parts):
    if not _depthwise_fits(x, w, bias, out, k_h, k_w, 0, rows) or \
            not post_fits(post, out.shape[0] * out.shape[1] * out.shape[2], out.shape[3]):
        raise ValueError("depthwise_f32_rows: x, w, bias, out, post or [r0, r1) do not fit "
                         "(C >= 8)")
    for i in prange(parts):
        r0, r1 = pool.part(rows, parts, i)
        depthwise_f32_rows(x, w, bias, out, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                           k_h, k_w, act_min, act_max, fused, x_major, post, r0, r1)
