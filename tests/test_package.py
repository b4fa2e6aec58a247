"""Package boundaries: what `import qengine` loads, and which layer may import which."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def test_import_qengine_loads_neither_numba_nor_tensorflow():
    code = ("import sys, qengine; m = qengine.load(sys.argv[1]); "
            "bad = [n for n in ('numba', 'tensorflow', 'ai_edge_litert', 'qengine.kernels.conv')"
            " if n in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(REPO / "examples/digits.tflite")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_running_a_float_model_never_imports_tensorflow():
    code = ("import sys, numpy as np, qengine; i = qengine.Interpreter(sys.argv[1]); "
            "i.run(np.zeros((1, 28, 28), np.float32)); "
            "sys.exit(1 if 'tensorflow' in sys.modules or 'ai_edge_litert' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(REPO / "examples/digits.tflite")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("layer", ["kernels", "schema"])
def test_lower_layers_do_not_import_qengine(layer):
    """kernels/ knows arrays and Numba; schema/ the wire format. Neither knows the IR."""
    for path in (REPO / layer).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                allowed = name.startswith(f"qengine.{layer}")
                assert allowed or not name.startswith("qengine"), f"{path.name} imports {name}"


def test_the_deviation_list_collects():
    import deviations

    rows = deviations.collect()
    assert rows and all(reason.strip() for _, _, reason in rows)


def test_every_subpackage_is_packaged():
    """pyproject lists packages explicitly: a subpackage missing there is missing from the
    wheel (and from every non-editable install)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(("qengine",) + p.parent.relative_to(REPO / "qengine").parts)
             for p in (REPO / "qengine").rglob("__init__.py")}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"


def _environment_after_import(**env) -> list[str]:
    """GOMP_SPINCOUNT and Numba's cache dir in a fresh process that imported the kernels."""

    code = ("import os, numba, qengine.kernels.jit as jit; "
            "print(os.environ.get('GOMP_SPINCOUNT')); print(numba.config.CACHE_DIR); "
            "print(sorted(jit.environment_changes()))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**_environ_without_settings(), **env}, check=True)
    return result.stdout.splitlines()


_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_CACHE_DIR", "QENGINE_KEEP_ENV",
             "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def _environ_without_settings() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k not in _SETTINGS}


GLIBC = sys.platform.startswith("linux") and bool(__import__("platform").libc_ver()[0] == "glibc")
ALL_CHANGES = ("['GOMP_SPINCOUNT', 'malloc', 'numba.CPUCodeLibrary', 'numba.config.CACHE_DIR']"
               if GLIBC else "['GOMP_SPINCOUNT', 'numba.CPUCodeLibrary', 'numba.config.CACHE_DIR']")


def test_environment_changes_are_listed_and_can_be_refused():
    spin, cache, changes = _environment_after_import()
    assert spin == "50000" and "qengine" in cache
    assert changes == ALL_CHANGES
    spin, cache, changes = _environment_after_import(QENGINE_KEEP_ENV="1")
    assert spin == "None" and "qengine" not in cache and changes == "[]"
    for users in ({"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "7"}):
        spin, _, changes = _environment_after_import(**users)
        assert spin == users.get("GOMP_SPINCOUNT", "None")
        assert changes == ALL_CHANGES.replace("'GOMP_SPINCOUNT', ", "")
    for users in ({"MALLOC_MMAP_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.x=1"}):
        _, _, changes = _environment_after_import(**users)
        assert changes == "['GOMP_SPINCOUNT', 'numba.CPUCodeLibrary', 'numba.config.CACHE_DIR']"


_LEAN_LOAD = """
import sys, numpy as np
from qengine.kernels import float_conv
out = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
float_conv.post_f32(out, 0, 4, float_conv.post_args(None, -1e9, 1e9, np.ones(3, np.float32) / 2))
(library,) = [c.library for c in float_conv.post_f32.overloads.values()]
print(library._shared_module is None)
if sys.argv[1] == "link":  # a kernel compiled now that calls post_f32: links its bitcode
    x = np.ones((4, 3), np.float32)
    w = float_conv.tile_slopes(np.full(3, -2, np.float32))
    res = np.empty_like(x)
    float_conv.pointwise_depthwise_f32(x, w, w, res, np.float32(-1e9), np.float32(1e9),
                                       float_conv.post_args(None, 0, 0, w), 0, 4)
    print(res.tolist() == [[8.0] * 3] * 4)
"""


def test_cached_kernels_load_without_their_ir(tmp_path):
    """A kernel loaded from the disk cache keeps its LLVM bitcode unparsed (jit.py: the
    parsed module took ~10x the bitcode's memory); a kernel compiled later that calls it
    still links it in, and computes right."""
    env = {**_environ_without_settings(), "QENGINE_CACHE_DIR": str(tmp_path)}

    def run(step):
        return subprocess.run([sys.executable, "-c", _LEAN_LOAD, step], capture_output=True,
                              text=True, env=env, check=True).stdout.split()

    assert run("compile") == ["False"]  # compiled in this process: its module is at hand
    assert run("link") == ["True", "True"]  # loaded: unparsed; then linked into a new kernel


_FAULTS = """
import ctypes, resource, sys, numpy as np
if sys.argv[1] == "import":
    import qengine.kernels.jit
else:  # glibc's fixed 64 KiB threshold: every array below is a fresh mapping
    ctypes.CDLL(None).mallopt(-3, 65536)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # arrays of a few MiB made and freed in turn, as a model's ops make them
    before = faults()
    a = np.ones(3 << 18, np.float32); b = np.ones(1 << 18, np.float32)
    c = a * 2; del a; d = np.concatenate([c, b]); del b, c, d
print(faults() - before)
"""


@pytest.mark.skipif(not GLIBC, reason="the malloc thresholds are glibc's")
def test_freed_arrays_give_their_pages_to_the_next_ones():
    """After the kernels' import, a third round of the same allocations faults no page in;
    where every array is a fresh mapping (a fixed 64 KiB threshold), each round faults its
    ~9 MiB in again. (glibc's own adaptive threshold, and what a user sets, vary with the
    process: test_environment_changes_are_listed_and_can_be_refused checks that a user's
    setting is left alone.)"""
    def last_round_faults(how):
        out = subprocess.run([sys.executable, "-c", _FAULTS, how], capture_output=True,
                             text=True, env={**_environ_without_settings(),
                                             "NUMPY_MADVISE_HUGEPAGE": "0"}, check=True)
        return int(out.stdout)

    assert last_round_faults("import") < 50
    assert last_round_faults("fresh-mappings") > 1000


def test_runs_compile_no_inline_helper_on_its_own():
    """`kernels.jit.inline_kernel` helpers are inlined into the kernels calling them; called
    from Python one would be compiled in every process. The built-in network (the published
    vision models' ops) in float, its quantizations and XNNPACK's arithmetic, on 1 and 2
    threads, in a fresh process, leaves every helper of qengine.kernels uncompiled."""
    script = """
import sys
from numba.core.registry import CPUDispatcher
import qengine
from qengine.cli_common import generated_inputs
from qengine.warmup import builtin_variants
for _, model in builtin_variants():
    for threads, arithmetic in ((1, "ref"), (2, "ref"), (1, "xnnpack")):
        interpreter = qengine.Interpreter(model, num_threads=threads, arithmetic=arithmetic)
        interpreter.run(generated_inputs(interpreter.inputs, 0, quiet=True))
for name, module in list(sys.modules.items()):
    if name.startswith("qengine.kernels"):
        for value in vars(module).values():
            if isinstance(value, CPUDispatcher) and value.signatures and \\
                    value.targetoptions.get("inline") == "always":
                print(name, value.py_func.__qualname__)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out == ""


_CHAIN = """
from qengine.kernels.jit import kernel, prange

@kernel(parallel=True)
def ramp(a):
    for i in prange(a.size):
        a[i] = i

@kernel
def ramp_sum(a):
    ramp(a)
    return a.sum()
"""


def test_a_kernel_compiled_against_a_cached_parallel_one_runs_in_a_new_process(tmp_path):
    """Numba caches a kernel compiled while a parallel kernel it calls came from the disk
    cache without the step that starts the thread pool and declares its functions (its
    "reload_init"): a later process calling it before any other parallel kernel called
    address 0. The dynamic-range models (five tried) crashed so after a cold start, whose
    compile helper (runtime/precompile.py) had cached the parallel image quantizer first."""
    (tmp_path / "chain.py").write_text(_CHAIN)
    env = _environ_without_settings()
    env.update(QENGINE_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=os.pathsep.join(
        filter(None, [str(tmp_path), env.get("PYTHONPATH")])))

    def run(call):
        return subprocess.run([sys.executable, "-c", f"import numpy as np, chain; {call}"],
                              capture_output=True, text=True, env=env, check=False)

    assert run("chain.ramp(np.zeros(64))").returncode == 0  # ramp alone, cached
    for _ in range(2):  # compiled against the cached ramp, then loaded from the cache
        result = run("print(chain.ramp_sum(np.zeros(64)))")
        assert (result.returncode, result.stdout.split()) == (0, ["2016.0"]), result.stderr


_SAVER = """
import sys
from qengine.kernels.jit import _SharedCacheFile
cache = _SharedCacheFile(sys.argv[1], "kernel", "stamp")
for i in range(int(sys.argv[3])):
    cache.save(("signature", sys.argv[2], i), ("machine code", sys.argv[2], i))
"""


def test_processes_saving_one_kernels_signatures_at_once_neither_lose_nor_cross_them(tmp_path):
    """Two processes save 150 signatures each of one kernel into one cache at the same time.
    Numba's own index (what jit._SharedCacheFile replaces) lost 73-137 of the 300 and gave
    1-8 another signature's code in three tries of the same two processes."""
    import numba.core.caching

    saves = 150
    savers = [subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path), name, str(saves)],
                               env=_environ_without_settings()) for name in ("a", "b")]
    assert [saver.wait() for saver in savers] == [0, 0]
    cache = numba.core.caching.IndexDataCacheFile(str(tmp_path), "kernel", "stamp")
    for name in ("a", "b"):
        for i in range(saves):
            assert cache.load(("signature", name, i)) == ("machine code", name, i)
