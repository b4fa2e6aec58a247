"""Run a command as on a CPU without AVX-512 or VNNI, both engines taking their AVX2 code.

    python benchmarks/avx2_only.py python benchmarks/published.py --modes int8 --threads 1
    python benchmarks/avx2_only.py --check      # what LLVM, NumPy and qengine see

Issue #14's targets name an AVX2-only machine (AMD EPYC, Zen 3). On a VM with AVX-512 and
VNNI, TFLite's XNNPACK takes its AVX-512/VNNI kernels and qengine its 16-lane float tiles and
`vpdpbusd` hybrid tiles, so the ratios measured there are not the target's. This builds
`avx2_only.c` (gcc, once, into `.cache/avx2_only/`) and runs the command with it preloaded:
every `cpuid` after the process starts reports no AVX-512 and no VNNI, so Numba compiles the
AVX2 kernels (into their own cache entries: the CPU's features are part of the key) and
XNNPACK, NumPy and OpenBLAS choose their AVX2 code.

What it does not change: the cores. An Intel core runs 256-bit multiplies and adds on the
same two ports as its FMAs, where Zen 3 has two multiply and two add pipes besides, so float
mul+add without FMA (qengine's reference order) is relatively slower here than there. glibc's
string functions are chosen before the library loads. It needs Linux's CPUID faulting
(`cpuid_fault` in /proc/cpuinfo) and exits 2 with a message without it; the process must not
install its own SIGSEGV handler (Python's faulthandler).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("avx2_only.c")
BUILD = Path(__file__).resolve().parents[1] / ".cache" / "avx2_only"

CHECK = """
import llvmlite.binding as llvm
from numpy._core._multiarray_umath import __cpu_features__ as numpy_features
from qengine.kernels import emit, float_gemm
features = llvm.get_host_cpu_features()
print("LLVM avx512f:", features.get("avx512f", False), " avx2:", features.get("avx2", False))
print("NumPy AVX512F:", numpy_features["AVX512F"], " AVX2:", numpy_features["AVX2"])
print("qengine: AVX2 int8 tiles", emit.USE_AVX2, " VNNI tiles", emit.HAS_VNNI,
      " 16-lane float tiles", float_gemm.WIDE)
"""


def fail(message: str) -> None:
    print(f"avx2_only: {message}", file=sys.stderr)
    raise SystemExit(2)


def built_library() -> Path:
    """The preload library, built from avx2_only.c when missing or older than the source."""
    library = BUILD / "avx2_only.so"
    if library.exists() and library.stat().st_mtime >= SOURCE.stat().st_mtime:
        return library
    if not sys.platform.startswith("linux"):
        fail("needs Linux (CPUID faulting)")
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if " cpuid_fault" not in flags:
        fail("this CPU or hypervisor has no CPUID faulting (no cpuid_fault in /proc/cpuinfo)")
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        fail("needs a C compiler (gcc or cc) to build avx2_only.c")
    BUILD.mkdir(parents=True, exist_ok=True)
    partial = library.with_suffix(".tmp")
    built = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(partial),
                            str(SOURCE)], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        fail(f"building {SOURCE.name} failed:\n{built.stderr}")
    partial.replace(library)
    return library


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command = [sys.executable, "-c", CHECK] if argv == ["--check"] else argv
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(built_library()), env.get("LD_PRELOAD")]))
    env.pop("PYTHONFAULTHANDLER", None)  # its SIGSEGV handler would replace the library's
    try:
        os.execvpe(command[0], command, env)
    except OSError as error:
        fail(f"cannot run {command[0]}: {error.strerror}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
