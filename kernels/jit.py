"""The one place that decides how kernels are compiled.

Every kernel is compiled with `cache=True` so a second process loads machine code instead of
recompiling, and with `nogil=True` so callers may run kernels on threads. Integer kernels never
get `fastmath`: it would let LLVM reassociate and change results that must be bit-exact.

Numba's cache checks only the source file of the jitted function itself, not the kernels it
calls in other modules: after an edit to `fixedpoint.py`, cached callers would keep the old
code. So the cache lives in a directory named after a hash of every kernel source file, and
any edit starts a fresh one.
"""

import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

# Importing the kernels changes two process-wide settings, listed by environment_changes() (and
# `qengine --version`); QENGINE_KEEP_ENV=1 leaves both alone, and a user's own setting wins:
# - GOMP_SPINCOUNT=50000, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set: after a parallel
#   region, Numba's OpenMP workers spin ~0.6-1 ms (12-20 ns a spin) before sleeping, so the
#   next op's split (`threads.split_cores`) starts in ~2 us instead of the ~45-60 us of waking a
#   sleeping worker. At 5000 (~0.1 ms) small models ran slower on 2 threads than on 1
#   (face_detection_short_range float 3.0 vs 2.55 ms). At 20000 (~0.3 ms on the Xeon) a small
#   model's serial tail (iris_landmark's last 8x8 and 4x4 layers) outlasted the spin, and the
#   next run's first split paid the wake-up: 14 float models at 2 threads, back-to-back runs,
#   took 0.97x the time at 50000 (iris_landmark 1.56 -> 1.50 ms, face_landmark 1.35 -> 1.20),
#   int8 and dynamic 0.99-1.00x. GNU's default, 300000 (~5 ms), made a machine with another
#   busy process far slower (a split of 100 us took 450 us); such cores now get no helper at
#   all (threads._OtherProcesses).
#   OpenBLAS's pool, whose spinning used to fight these workers, is held at one thread
#   inside runs (runtime.interpreter).
# - numba.config.CACHE_DIR, for every @njit(cache=True) in the process (see _cache_dir).
# - glibc malloc's M_MMAP_THRESHOLD (32 MiB, its largest) and M_TRIM_THRESHOLD (256 MiB), unless
#   MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES is set (see _keep_freed_pages).
KEEP_ENV = os.environ.get("QENGINE_KEEP_ENV", "") not in ("", "0")
_CHANGES: dict[str, str] = {}
OMP_SPINCOUNT = "50000"
if not KEEP_ENV and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
    os.environ["GOMP_SPINCOUNT"] = _CHANGES["GOMP_SPINCOUNT"] = OMP_SPINCOUNT

import numba
import numba.core.caching
import numba.core.event
import numba.extending
import numba.np.linalg
from numba.core.errors import NumbaIRAssumptionWarning

# Numba's SSA pass warns "variable ... is not in scope" ("an internal pedantic check", asking
# for a bug report) while compiling a few of the kernels' loops, once per machine: the
# kernels are right (their tests pin them), and `qengine run` should not print it.
warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning)

__all__ = ["cache_dir", "environment_changes", "float_kernel", "inline_kernel", "kernel",
           "on_first_compile", "prange", "remove_stale_caches"]

prange = numba.prange


# A kernel directory no process has compiled into for this long is removed when a new one is
# made: each qengine version (each edit of a kernel source) gets its own, ~10-40 MB each.
STALE_CACHE_DAYS = 30


def _cache_dir() -> str:
    sources = sorted(Path(__file__).parent.glob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    root = os.environ.get("QENGINE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "qengine")
    path = Path(root) / f"numba-{numba.__version__}-{digest}"
    try:
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            remove_stale_caches(path.parent, keep=path)
    except OSError:
        path = Path(tempfile.gettempdir()) / "qengine" / path.name
        path.mkdir(parents=True, exist_ok=True)
    return str(path)


def remove_stale_caches(root: Path, keep: Path, days: float = STALE_CACHE_DAYS) -> list[Path]:
    """Remove root's `numba-*` kernel directories other than `keep` that nothing has been
    compiled into for `days` (their modification time); the removed ones. A version still in
    use elsewhere only recompiles its kernels once. Errors (another process removing the same
    directory, permissions) leave a directory in place."""
    import re
    import shutil
    import time

    removed = []
    cutoff = time.time() - days * 86400
    for old in root.glob("numba-*"):
        try:
            ours = re.fullmatch(r"numba-.+-[0-9a-f]{16}", old.name) is not None
            if ours and old != keep and old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old)
                removed.append(old)
        except OSError:
            continue
    return removed


class _LazyBlasCheck:
    """Stands for `numba.np.arraymath._HAVE_BLAS`: runs Numba's own BLAS check when first read.

    Numba's CPU target imports `numba.np.arraymath` when it loads its first kernel, even one from
    the disk cache, and that module asks at import whether SciPy's BLAS is there by importing
    `scipy.linalg` (0.2 s of a 1 s `qengine run`, for a flag read only when typing
    np.convolve/np.correlate on floats). np.dot and the other BLAS calls check again themselves
    when they compile, so deferring this one check changes nothing a kernel computes.
    """

    def __init__(self, check):
        self.check = check
        self.value = None

    def __bool__(self):
        if self.value is None:
            try:
                self.check()
                self.value = True
            except ImportError:
                self.value = False
        return self.value


def _import_arraymath_without_scipy() -> None:
    if "numba.np.arraymath" in sys.modules:
        return  # the user's code loaded it already: nothing left to save
    real_check = numba.np.linalg.ensure_blas

    def no_blas_yet():
        raise ImportError("qengine defers Numba's BLAS check")

    numba.np.linalg.ensure_blas = no_blas_yet
    try:
        from numba.np import arraymath
    finally:
        numba.np.linalg.ensure_blas = real_check
    arraymath._HAVE_BLAS = _LazyBlasCheck(real_check)


_import_arraymath_without_scipy()

if not KEEP_ENV and not os.environ.get("NUMBA_CACHE_DIR"):  # a user's own setting wins
    numba.config.CACHE_DIR = _CHANGES["numba.config.CACHE_DIR"] = _cache_dir()


def _start_thread_pool() -> None:
    """Start Numba's thread pool now, before any kernel is loaded from the disk cache.

    A parallel kernel's machine code calls the pool's functions (`numba_parallel_for`, ...),
    which LLVM resolves when the code is loaded; starting the pool declares them. Numba
    starts it before loading a cached parallel kernel, but a kernel compiled while a parallel
    kernel it calls came from the cache is cached without that step (Numba 0.68), so a later
    process loading it before any other parallel kernel called address 0: the dynamic-range
    models (five tried) crashed so after a cold start whose compile helper had cached the
    image quantizer first (tests/test_package.py). ~18 ms, which a run spends anyway at its
    first parallel kernel. The pool's layer and size are fixed from here on: set
    NUMBA_THREADING_LAYER or NUMBA_NUM_THREADS before importing qengine's kernels."""
    from numba.np.ufunc import parallel

    parallel._launch_threads()


_start_thread_pool()


MMAP_THRESHOLD, TRIM_THRESHOLD = 32 << 20, 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def _keep_freed_pages() -> bool:
    """Make glibc's malloc keep freed memory for the next allocation instead of returning it.

    By default an array over ~128 KiB (the threshold adapts, but not to a model's mix of sizes)
    is a fresh mmap, so every run faults its pages in again, one 4 KiB page at a time: 2,944
    faults a run in face_detection_back's dynamic-range model, 13-15 % of its time, and 1,760
    in pose_detection's. With these thresholds an op's output reuses the heap pages a freed
    one left (0 faults a run); arrays over 32 MiB are still mapped, and the heap is given back
    once 256 MiB lie free at its top. True when set (glibc only; a no-op elsewhere)."""
    user = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"}
    if KEEP_ENV or user & set(os.environ) or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: other allocators
            return False
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


if _keep_freed_pages():
    _CHANGES["malloc"] = f"M_MMAP_THRESHOLD={MMAP_THRESHOLD}, M_TRIM_THRESHOLD={TRIM_THRESHOLD}"


def _parse_shared_module_on_demand() -> bool:
    """Keep a kernel loaded from the disk cache without its LLVM IR parsed.

    Numba caches a kernel as machine code plus the kernel's LLVM bitcode, which it parses into
    an in-memory module on every load in case a kernel compiled later links this one in. The
    parsed module takes ~10x the bitcode: loading face_landmark's five float kernels added
    ~9 MB to the process (max_pool_f32, a 108 KB cache file, 1.0 MB; depthwise_f32_rows, 249
    KB, 2.3 MB). With this, a loaded kernel keeps its bitcode as bytes and parses it only when
    something links against it (`_get_module_for_linking`, Numba's one reader). Numba's own
    behaviour when its internals are not those of the versions tested."""
    from llvmlite import binding
    from numba.core.codegen import CPUCodeLibrary

    unserialize = getattr(CPUCodeLibrary, "_unserialize", None)
    for_linking = getattr(CPUCodeLibrary, "_get_module_for_linking", None)
    if unserialize is None or for_linking is None:
        return False

    def lean_unserialize(cls, codegen, state):
        library = unserialize.__func__(cls, codegen, state)
        _, kind, data = state
        if kind == "object" and getattr(library, "_shared_module", None) is not None:
            library._qengine_bitcode = data[1]
            library._shared_module = None
        return library

    def module_for_linking(self):
        bitcode = getattr(self, "_qengine_bitcode", None)
        if self._shared_module is None and bitcode is not None:
            self._shared_module = binding.parse_bitcode(bitcode)
        return for_linking(self)

    CPUCodeLibrary._unserialize = classmethod(lean_unserialize)
    CPUCodeLibrary._get_module_for_linking = module_for_linking
    return True


if not KEEP_ENV and _parse_shared_module_on_demand():
    _CHANGES["numba.CPUCodeLibrary"] = "cached kernels load without parsing their bitcode"


def environment_changes() -> dict[str, str]:
    """What importing qengine's kernels changed in this process (name -> value); empty with
    QENGINE_KEEP_ENV=1 or when the user set both already."""
    return dict(_CHANGES)


def cache_dir() -> str:
    return numba.config.CACHE_DIR


class _FirstCompile(numba.core.event.Listener):
    """Calls `say` once, when Numba starts compiling a kernel that was not in the disk cache
    (the "numba:compile" event fires only on a cache miss)."""

    def __init__(self, say):
        self.say = say

    def on_start(self, event):
        if self.say is not None:
            say, self.say = self.say, None
            say()

    def on_end(self, event):
        pass


def on_first_compile(say) -> None:
    numba.core.event.register("numba:compile", _FirstCompile(say))


class _SharedCacheFile(numba.core.caching.IndexDataCacheFile):
    """A kernel's disk-cache index, safe when several processes compile into one cache (the
    compile helpers of runtime/precompile.py, two `qengine run`s at once).

    Numba names a new entry's data file by the first number its copy of the index leaves
    free, then writes that copy back: two processes saving two signatures of one kernel at
    once take the same number, entries are lost, and the index can name one signature's
    machine code for the other's. Here an entry's file is named by a digest of its key and
    written first; the index is then re-read, extended and written under a lock."""

    def save(self, key, data):
        digest = hashlib.sha256(self._dump(key)).hexdigest()[:20]
        name = self._data_name_pattern.replace("{number:d}", digest)
        self._save_data(name, data)
        with _locked(self._index_path + ".lock"):
            overloads = self._load_index()
            if overloads.get(key) != name:
                overloads[key] = name
                self._save_index(overloads)


class _locked:  # (lower case: a `with` block)
    """An exclusive lock on a file, held for the block (none where fcntl is missing)."""

    def __init__(self, path: str):
        self.path, self.file = path, None

    def __enter__(self):
        try:
            import fcntl

            self.file = open(self.path, "a")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        except (ImportError, OSError):
            self.__exit__()

    def __exit__(self, *error):
        if self.file is not None:
            self.file.close()  # closing releases the lock
            self.file = None


def _cached(options):
    """numba.njit(cache=True, **options), its disk-cache index a `_SharedCacheFile`."""
    def decorate(fn):
        dispatcher = numba.njit(cache=True, **options)(fn)
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if type(cache_file) is numba.core.caching.IndexDataCacheFile:  # else Numba changed
            cache_file.__class__ = _SharedCacheFile
        return dispatcher
    return decorate


def kernel(fn=None, *, parallel=False):
    """Decorator for exact (integer or order-defined float) kernels."""
    decorate = _cached({"nogil": True, "parallel": parallel, "error_model": "numpy"})
    return decorate if fn is None else decorate(fn)


def float_kernel(fn=None, *, parallel=False):
    """Decorator for float kernels whose result need not be bit-reproducible."""
    decorate = _cached({"nogil": True, "parallel": parallel, "fastmath": True,
                        "error_model": "numpy"})
    return decorate if fn is None else decorate(fn)


def inline_kernel(fn):
    """Decorator for a small exact helper that is inlined into each kernel calling it.

    A call from one kernel to another is not inlined by Numba: it costs a function call plus
    reference counting of every array argument, too much inside a per-pixel loop.

    Numba inlines it as untyped IR into each caller before typing (`njit(inline="always")`),
    so it is never compiled on its own. (As an overload, `register_jitable(inline="always")`,
    each helper was also compiled whole once to type it: a cold int8 pose_landmark_full
    compiled for 5.3 s on one core that way, 3.9 s this way.) Called from Python it would
    be compiled, in every process: Python code calls `fn.py_func` instead
    (tests/test_package.py checks that no run compiles one).
    """
    return numba.njit(inline="always", nogil=True, error_model="numpy")(fn)


def pinned(dispatcher):
    """`dispatcher` as a prepared op calls it: the first call through Numba's dispatcher
    (compiling or loading the kernel), every later one straight into the compiled entry point
    for the types of the first call's arguments. The dispatcher types every argument on every
    call: ~0.9 us for a float conv's 22, against ~0.5 us this way (a 2-thread run of a small
    model makes 100-200 kernel calls). Only for a caller whose arguments have the same types
    on every call, as a prepared op's do (arrays it makes itself, of one dtype, rank and
    layout): an argument of another type would be read as the first call's type."""
    entry = None

    def call(*args):
        nonlocal entry
        if entry is not None:
            return entry(*args)
        result = dispatcher(*args)
        # (none when the dispatcher converted the arguments to another signature's types:
        # then every call goes through it)
        compiled = dispatcher.overloads.get(tuple(map(dispatcher.typeof_pyval, args)))
        entry = compiled.entry_point if compiled is not None else None
        return result

    return call
