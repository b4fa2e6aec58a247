"""Microbenchmarks of the fast int8 kernels (kernels/gemm_int8.py, kernels/depthwise_int8.py).

For each MobileNetV2 / transformer shape: check the fast kernel against the reference kernel
(exact equality; conv and depthwise through the plans the interpreter makes at prepare time,
`gemm_int8.plan_*_int8` / `run_*_int8`), then report GOPS = 2·MACs/s (best of --reps runs) for the reference kernel
(1 thread; it is serial), the fast kernel with 1 and 2 Numba threads, and NumPy float32 matmul
(BLAS, thread count limited with threadpoolctl) on the same GEMM shape. "% peak" is against
the exact-int8 peak 2·16·clock·threads: one 256-bit `vpmaddwd` (16 int16 MACs) per cycle per
core, which is the fast kernels' inner instruction on AVX2 machines.

    python benchmarks/kernels.py [--reps N] [--clock-ghz F] [--quick]

Prints a Markdown report (machine, BLAS, table) to stdout.
"""

from __future__ import annotations

import argparse
import platform
import re
import time
from functools import partial

import numba
import numpy as np
from qengine.kernels import conv, depthwise_int8, fully_connected, gemm_int8, pack
from qengine.kernels.fixedpoint import quantize_multipliers

CONV_1X1 = [(56, 24, 144), (28, 32, 192), (14, 64, 384), (7, 160, 960)]  # (hw, ci, co)
DEPTHWISE = [(112, 96, 2), (56, 144, 1), (28, 192, 1), (14, 384, 1), (7, 960, 1)]  # (hw, c, s)
FC = [(128, 512, 2048), (1, 1280, 1000), (128, 2048, 512)]  # (batch, depth, out)


def best_time(fn, reps, budget=3.0):
    fn()
    best, start = float("inf"), time.perf_counter()
    for i in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() - start > budget and i >= 2:
            break
    return best


@numba.njit(cache=True)
def _lcg_chain(n, x):
    for _ in range(n):  # imul (3 cycles) + add (1 cycle) on the critical path per iteration
        x = x * 6364136223846793005 + 1442695040888963407
    return x


def gops(macs, seconds):
    return 2 * macs / seconds / 1e9


def measured_clock_ghz(cycles_per_iter=4):
    n = 50_000_000
    _lcg_chain(10, 1)
    t = best_time(lambda: _lcg_chain(n, 1), 5)
    return n * cycles_per_iter / t / 1e9


def machine():
    info = {
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        info["model"] = re.search(r"model name\s*:\s*(.*)", text).group(1)
        info["mhz"] = float(re.search(r"cpu MHz\s*:\s*(.*)", text).group(1))
        flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())
        wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]
        info["flags"] = " ".join(f"{f}{'+' if f in flags else '-'}" for f in wanted)
    except (OSError, AttributeError):
        pass
    return info


def blas_info():
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return "threadpoolctl not installed", None
    rows = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, "
            f"{i['num_threads']} threads)" for i in threadpool_info() if i["user_api"] == "blas"]  # fmt: skip
    return "; ".join(rows) or "no BLAS found", threadpool_limits


def quant(rng, co):
    mult, shift = quantize_multipliers(10.0 ** rng.uniform(-4.5, -3, co))
    return rng.integers(-5000, 5000, co).astype(np.int32), mult, shift


def cases(rng, quick):
    """(name, shape, macs, gemm (m, k, n) or None, reference thunk, fast thunk)."""
    for hw, ci, co in CONV_1X1[:2] if quick else CONV_1X1:
        x = rng.integers(-128, 128, (1, hw, hw, ci)).astype(np.int8)
        w = rng.integers(-127, 128, (co, 1, 1, ci)).astype(np.int8)
        bias, mult, shift = quant(rng, co)
        args = (bias, -3, mult, shift, 5, -128, 127, 1, 1, 1, 1, 0, 0, hw, hw)
        plan = gemm_int8.plan_conv2d_int8(pack.pack_conv_weights(w), *args)
        yield (f"conv 1x1 {hw}x{hw}x{ci}→{co}", hw * hw * ci * co, (hw * hw, ci, co),
               lambda x=x, w=w, a=args: conv.conv2d_int8(x, w, *a),
               lambda x=x, p=plan: gemm_int8.run_conv2d_int8(p, x))  # fmt: skip
    x = rng.integers(-128, 128, (1, 224, 224, 3)).astype(np.int8)
    w = rng.integers(-127, 128, (32, 3, 3, 3)).astype(np.int8)
    bias, mult, shift = quant(rng, 32)
    args = (bias, -3, mult, shift, 5, -128, 127, 2, 2, 1, 1, 0, 0, 112, 112)  # SAME: pad 0/1
    plan = gemm_int8.plan_conv2d_int8(pack.pack_conv_weights(w), *args)
    yield ("conv 3x3 s2 224x224x3→112x112x32", 112 * 112 * 27 * 32, (112 * 112, 27, 32),
           lambda: conv.conv2d_int8(x, w, *args), lambda: gemm_int8.run_conv2d_int8(plan, x))  # fmt: skip
    for hw, c, s in DEPTHWISE[1:3] if quick else DEPTHWISE:
        oh = -(-hw // s)
        pad = max((oh - 1) * s + 3 - hw, 0) // 2
        x = rng.integers(-128, 128, (1, hw, hw, c)).astype(np.int8)
        w = rng.integers(-127, 128, (1, 3, 3, c)).astype(np.int8)
        bias, mult, shift = quant(rng, c)
        args = (bias, -3, mult, shift, 5, -128, 127, s, s, 1, 1, pad, pad, oh, oh, 1)
        plan = depthwise_int8.plan_depthwise_int8(pack.pack_depthwise_weights(w), *args)
        yield (f"dw 3x3 s{s} {hw}x{hw}x{c}", oh * oh * c * 9, None,
               lambda x=x, w=w, a=args: conv.depthwise_conv2d_int8(x, w, *a),
               lambda x=x, p=plan: depthwise_int8.run_depthwise_int8(p, x))  # fmt: skip
    for b, d, o in FC[:2] if quick else FC:
        x = rng.integers(-128, 128, (b, d)).astype(np.int8)
        w = rng.integers(-127, 128, (o, d)).astype(np.int8)
        bias = rng.integers(-5000, 5000, o).astype(np.int32)
        args = (bias, -3, 0, 10.0 ** rng.uniform(-5, -4, o), 5, -128, 127)
        packed = pack.pack_fc_weights(w)
        yield (f"FC [{b},{d}]x[{d},{o}]", b * d * o, (b, d, o),
               lambda x=x, w=w, a=args: fully_connected.fully_connected_int8(x, w, *a),
               lambda x=x, p=packed, a=args: gemm_int8.fully_connected_int8_fast(x, p, *a))  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="timed runs per kernel (best is kept)")
    parser.add_argument(
        "--clock-ghz", type=float, help="core clock for %% peak (default: measured)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    args = parser.parse_args(argv)

    info = machine()
    clock = args.clock_ghz or measured_clock_ghz()
    blas, limits = blas_info()
    threads = [t for t in (1, 2) if t <= numba.config.NUMBA_NUM_THREADS]
    peak = {t: 2 * 16 * clock * t for t in threads}  # GOPS: 16 int16 MACs/cycle/core
    print(
        f"- CPU: {info.get('model')} ({numba.config.NUMBA_NUM_THREADS} cores), /proc/cpuinfo "
        f"{info.get('mhz', 0):.0f} MHz, measured {clock:.2f} GHz (dependent imul+add chain, "
        f"4 cycles/iteration assumed); flags: {info.get('flags')}"
    )
    print(
        "- int8 peak assumed: 1 vpmaddwd ymm/cycle/core = 32 ops/cycle → "
        + ", ".join(f"{peak[t]:.0f} GOPS at {t} thread(s)" for t in threads)
    )
    print(f"- NumPy {info['numpy']}, Numba {info['numba']}, BLAS: {blas}")
    print()
    head = ["kernel", "MACs", "ref 1T"]
    for t in threads:
        head += [f"fast {t}T", f"% peak {t}T", f"sgemm {t}T"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    rng = np.random.default_rng(0)
    for name, macs, gemm, ref, fast in cases(rng, args.quick):
        numba.set_num_threads(threads[-1])
        want, got = ref(), fast()
        if not np.array_equal(want, got):
            raise SystemExit(f"{name}: fast kernel differs from the reference in "
                             f"{np.count_nonzero(want != got)} outputs")  # fmt: skip
        numba.set_num_threads(1)
        row = [name, f"{macs / 1e6:.1f}M", f"{gops(macs, best_time(ref, 3)):.2f}"]
        if gemm:
            a = rng.standard_normal(gemm[:2]).astype(np.float32)
            b = rng.standard_normal(gemm[1:]).astype(np.float32)
        for t in threads:
            numba.set_num_threads(t)
            fast_gops = gops(macs, best_time(fast, args.reps))
            row += [f"{fast_gops:.1f}", f"{100 * fast_gops / peak[t]:.0f}%"]
            if gemm and limits:
                with limits(limits=t, user_api="blas"):
                    row.append(f"{gops(macs, best_time(partial(np.matmul, a, b), args.reps)):.1f}")
            else:
                row.append("—")
        print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
