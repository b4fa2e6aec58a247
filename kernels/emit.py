"""LLVM IR helpers for the int8 vector kernels (`gemm_int8`, `depthwise_int8`, `requant`).

The vector code is LLVM IR emitted through Numba intrinsics because Numba's own loops did not
vectorize well here: int16 pair products became `vpmulld` (9 GOPS instead of ~100) and the
requantization stayed in int64 lanes (3× slower).

On AVX2 without VNNI one `vpmaddwd` (16 int16 MACs) per cycle is the exact int8 peak
(`vpmaddubsw` would be twice as wide but saturates int16 for u8·s8 pairs). With VNNI, LLVM
fuses `vpmaddwd` + `vpaddd` into `vpdpwssd` by itself, and `dpbusd` (u8·s8, 4 taps per int32
lane, no saturation) doubles the MACs per instruction again (`HAS_VNNI`; the quad tiles of
the int8 GEMM and the hybrid conv). Without AVX2 the helpers emit plain LLVM vector IR (same
results, slower).
"""

import llvmlite.binding as llvm_binding
import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
V8I32, V16I16, V16I8 = ir.VectorType(I32, 8), ir.VectorType(I16, 16), ir.VectorType(I8, 16)
V16I32 = ir.VectorType(I32, 16)
V8F32 = ir.VectorType(ir.FloatType(), 8)


def host_has(feature: str) -> bool:
    """Whether the CPU the kernels are compiled for has `feature` (LLVM's name, e.g. "avx2")."""
    if numba.config.CPU_NAME not in (None, "host"):  # compiling for another CPU: stay generic
        return False
    return f"+{feature}" in llvm_binding.get_host_cpu_features().flatten().split(",")


USE_AVX2 = host_has("avx2")
HAS_AVX512 = host_has("avx512f")  # 512-bit vectors: the int8 GEMM's epilogue takes 16 lanes
# `vpdpbusd` on 256-bit vectors: AVX-VNNI, or AVX512-VNNI with AVX512VL (LLVM picks the encoding)
HAS_VNNI = host_has("avxvnni") or (host_has("avx512vnni") and host_has("avx512vl"))


def const64(value):
    return ir.Constant(I64, value)


def lanes(indices):
    """An int32 index vector for `shuffle_vector`."""
    return ir.Constant(ir.VectorType(I32, len(indices)), list(indices))


def madd(builder, u, v):
    """int16x16 · int16x16 → int32x8 of adjacent-pair sums (x86 `vpmaddwd`).

    |pair sum| ≤ 2·255·128 here, so no wrap or saturation ever happens."""
    if USE_AVX2:
        fnty = ir.FunctionType(V8I32, [V16I16, V16I16])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx2.pmadd.wd")
        return builder.call(fn, [u, v])
    halves = []
    for start in (0, 1):
        idx = lanes(range(start, 16, 2))
        a = builder.sext(builder.shuffle_vector(u, u, idx), V8I32)
        b = builder.sext(builder.shuffle_vector(v, v, idx), V8I32)
        halves.append(builder.mul(a, b))
    return builder.add(*halves)


def dpbusd(builder, acc, u, s):
    """acc + Σ of 4 adjacent u8·s8 products per int32 lane (x86 `vpdpbusd`, operands of 8 or 16
    int32 lanes holding bytes; `u` unsigned, `s` signed). |4·255·128| < 2^17 per step: no
    saturation, and the int32 sum wraps like the reference's. Only when HAS_VNNI (16 lanes:
    AVX512-VNNI)."""
    ty = acc.type
    fnty = ir.FunctionType(ty, [ty, ty, ty])
    name = f"llvm.x86.avx512.vpdpbusd.{32 * ty.count}"  # .256 or .512, by the vectors' bits
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    return builder.call(fn, [acc, u, s])


def splat(builder, value, ty=V8I32):
    """A vector of `ty` with every lane `value` (a Python int or an LLVM integer)."""
    if isinstance(value, int):
        return ir.Constant(ty, [value] * ty.count)
    value = builder.trunc(value, ty.element) if value.type != ty.element else value
    vec = builder.insert_element(ir.Constant(ty, ir.Undefined), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(vec, ir.Constant(ty, ir.Undefined), lanes([0] * ty.count))


def join_halves(builder, lo, hi):
    """Two vectors of n lanes → one of 2n: lo's lanes, then hi's."""
    n = lo.type.count
    return builder.shuffle_vector(lo, hi, lanes(range(2 * n)))


def load_vec(builder, base, offset, ty, align=1):
    """Load a `ty` vector from `base` (an element pointer) + `offset` elements."""
    ptr = builder.bitcast(builder.gep(base, [offset]), ty.as_pointer())
    return builder.load(ptr, align=align)


def loop(builder, count, accs, step, name):
    """Emit `for i in range(count): accs = step(i, accs)` over accumulators with their
    initial values `accs`; returns the final values (the initial ones when count <= 0).
    `step` emits the loop body into the current block and returns the new accumulators."""
    entry = builder.block
    body = builder.function.append_basic_block(f"{name}_loop")
    done = builder.function.append_basic_block(f"{name}_done")
    builder.cbranch(builder.icmp_signed(">", count, const64(0)), body, done)
    builder.position_at_end(body)
    i = builder.phi(I64)
    phis = [builder.phi(start.type) for start in accs]
    new = step(i, phis)
    body_end = builder.block
    i_next = builder.add(i, const64(1))
    builder.cbranch(builder.icmp_signed("<", i_next, count), body, done)
    i.add_incoming(const64(0), entry)
    i.add_incoming(i_next, body_end)
    for phi, start, value in zip(phis, accs, new):
        phi.add_incoming(start, entry)
        phi.add_incoming(value, body_end)
    builder.position_at_end(done)
    final = []
    for start, value in zip(accs, new):
        phi = builder.phi(start.type)
        phi.add_incoming(start, entry)
        phi.add_incoming(value, body_end)
        final.append(phi)
    return final


def accumulate(builder, count, n_acc, step, name):
    """`loop` over n_acc int32x8 accumulators starting at 0."""
    return loop(builder, count, [ir.Constant(V8I32, None)] * n_acc, step, name)


def counted_loop(builder, start, stop, name, body):
    """Emit `for i in range(start, stop): body(i)` (int64 i)."""
    entry = builder.block
    loop = builder.function.append_basic_block(f"{name}_loop")
    done = builder.function.append_basic_block(f"{name}_done")
    builder.cbranch(builder.icmp_signed("<", start, stop), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(I64)
    body(i)
    i_next = builder.add(i, const64(1))
    builder.cbranch(builder.icmp_signed("<", i_next, stop), loop, done)
    i.add_incoming(start, entry)
    i.add_incoming(i_next, builder.block)
    builder.position_at_end(done)


def _widen_codegen(context, builder, signature, args):
    src_addr, src_end, dst_addr, n, zp = args
    src = builder.inttoptr(src_addr, I8.as_pointer())
    dst = builder.inttoptr(dst_addr, I16.as_pointer())
    zps = splat(builder, zp, V16I16)
    full = builder.ashr(n, const64(4))
    # one more group of 16 past n when the source has room (the values past n are garbage)
    room = builder.icmp_signed("<=", builder.add(src_addr, builder.mul(builder.add(
        full, const64(1)), const64(16))), src_end)  # fmt: skip
    over = builder.and_(builder.icmp_signed(">", builder.and_(n, const64(15)), const64(0)), room)
    groups = builder.add(full, builder.zext(over, I64))

    def group(g):
        at = builder.mul(g, const64(16))
        diff = builder.sub(builder.sext(load_vec(builder, src, at, V16I8), V16I16), zps)
        builder.store(diff, builder.bitcast(builder.gep(dst, [at]), V16I16.as_pointer()),
                      align=2)  # fmt: skip

    def single(i):
        value = builder.sub(builder.sext(builder.load(builder.gep(src, [i])), I16),
                            builder.trunc(zp, I16))  # fmt: skip
        builder.store(value, builder.gep(dst, [i]))

    counted_loop(builder, const64(0), groups, "widen", group)
    tail_start = builder.select(over, n, builder.mul(full, const64(16)))
    counted_loop(builder, tail_start, n, "widen_tail", single)
    return context.get_dummy_value()


@intrinsic
def widen(typingctx, src_addr, src_end, dst_addr, n, zp):
    """dst[0:n] = int16(src[0:n]) - zp (int8 src, int16 dst; addresses), 16 at a time; when
    src_end (the source's end) leaves room, the last 16 also write up to 15 values past
    dst[n - 1] (callers overwrite them), else the last n % 16 go one by one.

    An intrinsic rather than a kernel: a call to another kernel is not inlined and costs
    reference counting, which per im2col run was most of the packing time.
    """
    sig = types.void(types.int64, types.int64, types.int64, types.int64, types.int64)
    return sig, _widen_codegen


def _memset(builder, dst, n, value):
    """memset(dst, value, n) for an address dst; n <= 0 writes nothing."""
    size = builder.select(builder.icmp_signed(">", n, const64(0)), n, const64(0))
    cgutils.memset(builder, builder.inttoptr(dst, I8.as_pointer()), size, value)


@intrinsic
def zero_fill(typingctx, dst_addr, n_bytes):
    """memset(dst, 0, n_bytes) (an address; n_bytes <= 0 writes nothing)."""

    def codegen(context, builder, signature, args):
        _memset(builder, *args, 0)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@intrinsic
def fill_bytes(typingctx, dst_addr, n_bytes, value):
    """memset(dst, value, n_bytes) (an address; the low byte of value; n_bytes <= 0: nothing)."""

    def codegen(context, builder, signature, args):
        dst, n, value = args
        _memset(builder, dst, n, builder.trunc(value, I8))
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64), codegen


@intrinsic
def copy_bytes(typingctx, dst_addr, src_addr, n_bytes):
    """memcpy(dst, src, n_bytes) (addresses of buffers that do not overlap; n_bytes >= 0)."""

    def codegen(context, builder, signature, args):
        dst, src, n = args
        cgutils.raw_memcpy(builder, builder.inttoptr(dst, I8.as_pointer()),
                           builder.inttoptr(src, I8.as_pointer()), n, 1)  # fmt: skip
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64), codegen


@intrinsic
def addr(typingctx, a):
    """a's data address as int64 (uintp + int64 would be float64 in Numba's promotion). An
    intrinsic: an inlined helper is re-typed at each of its call sites when kernels compile."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(array.data, I64)

    return types.int64(a), codegen
