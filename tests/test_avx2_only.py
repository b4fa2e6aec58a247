"""benchmarks/avx2_only.py: a process that sees its CPU without AVX-512 and VNNI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def _cpuid_faulting() -> bool:
    try:
        return " cpuid_fault" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


needs_cpuid_faulting = pytest.mark.skipif(
    not _cpuid_faulting() or not (shutil.which("gcc") or shutil.which("cc")),
    reason="needs Linux's CPUID faulting and a C compiler")


@needs_cpuid_faulting
def test_llvm_numpy_and_the_kernels_see_no_avx512_and_no_vnni():
    """On an AVX-512/VNNI host this is the switch to the AVX2 code; on an AVX2 host the
    same lines hold without it."""
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "avx2_only.py"),
                             "--check"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "LLVM avx512f: False  avx2: True"
    assert lines[1] == "NumPy AVX512F: False  AVX2: True"
    assert lines[2] == "qengine: AVX2 int8 tiles True  VNNI tiles False  16-lane float tiles False"


@needs_cpuid_faulting
@pytest.mark.slow
def test_the_int8_kernels_are_exact_in_their_avx2_code():
    """On an AVX-512/VNNI host the suite runs the int8 GEMM's `vpdpbusd` tiles and 16-lane
    epilogue; this runs the int8 kernel tests as on the issue's AVX2-only CPU, where the
    `vpmaddwd` tiles and the 8-lane epilogue run (its own kernel cache entries, ~20 s)."""
    tests = ["tests/test_kernels_fast.py", "tests/test_xnnpack_fast.py"]
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "avx2_only.py"),
                             sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-p", "no:faulthandler", *tests], cwd=REPO, capture_output=True,
                            text=True, timeout=1200, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]


def test_no_command_is_a_usage_error():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "avx2_only.py")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "avx2_only.py" in result.stdout
