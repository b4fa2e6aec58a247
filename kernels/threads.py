"""qengine's one pool of worker threads: every parallel kernel splits its output into blocks
run here (`parallel_blocks`), each block a serial `nogil` Numba kernel or a one-thread BLAS call.

BLAS (OpenBLAS) runs with one thread inside every interpreter run (`runtime.interpreter
.thread_limit`): its own pool spins after each call and, on a machine with as many threads as
cores, starves other workers (a 2-thread float palm_detection_lite took 500 ms instead of 34).
Idle pool threads block on a queue, so they never compete with anything.

No oversubscription: parallel work never runs on more threads than the process has cores.
The pool counts the threads running qengine blocks (callers and helpers). A caller waits
until a core is free, then gets `min(threads - 1, cores - running)` helpers and cuts its work
into that many blocks plus its own. So two user threads each running an
`Interpreter(num_threads=2)` on two cores run two blocks at once between them, not four.
(One-thread work does not come here and is not counted; a block calling parallel_blocks
again runs its range itself.)

Two ways to hand work to the other cores, sharing that count:
- `split_cores` for compiled kernels: the call site runs a `prange(parts)` driver, whose
  helpers are the workers of Numba's threading layer (OpenMP here). They spin ~0.6-1 ms after
  each parallel region before sleeping (GOMP_SPINCOUNT, set in jit.py), so the next op's
  split usually starts in ~2 us: a 2 x 25 us split takes ~28 us.
- `parallel_blocks` for Python callables (BLAS, NumPy): pool threads that sleep on a queue.
  A hand-off costs ~80 us on a 2-vCPU VM (a futex wake of an idle vCPU, then the GIL).
"""

from __future__ import annotations

import os
import threading
import time
from queue import SimpleQueue

import numba
import numba.np.ufunc.parallel as _parallel
import numpy as np
from qengine.kernels.jit import inline_kernel

# Below this many flops (2*M*K*N) work stays on the calling thread (kernels read it at call
# time). A hand-off to a pool thread costs ~80 us on the 2-vCPU VM this was measured on: the
# pool thread wakes from a futex, then waits for the GIL the caller holds until its own block
# enters compiled code (a 2-thread split of 2 x 25 us of work took 97-106 us, against 27 us on
# one thread), so work is split from ~0.4 ms of it on. Six published models (`published.py
# --threads 1 2`, float/int8/dynamic): at 4M, 2 threads took 0.75-0.94x the 1-thread speed;
# at 40M, 1.01-1.05x. The tests lower it so their small cases take the split paths.
MIN_PARALLEL_FLOPS = 40_000_000
# The same bar for `split_cores`: below it a compiled split costs more than it saves.
# Splitting ~10 us of int8 GEMM (1M flops) pays already; 0.5M-4M measured within noise
# of each other on 4 published models at 2 threads.
MIN_SPLIT_FLOPS = 1_000_000
# What one element of an elementwise pass counts against that bar: ~1 ns for one that
# computes (an interpolation, a float epilogue), splitting from ~10k elements; ~0.15 ns for
# one that streams (a float ADD, a PAD), from ~60k. A streaming pass gains only when each
# core reads what it wrote itself: in a model, where the op before was split the same way,
# pose_landmark_full's float ADDs took 1.5 ms on one thread and 0.83 ms on two.
ELEMENT_FLOPS = 100
STREAM_FLOPS = 16
# What one MAC of a depthwise convolution counts against that bar: 4 GEMM MACs (~0.09 ns
# each in the int8 tiles, ~20 GOPS, against ~100 for the GEMM): 28x28x40 3x3, 30 us, splits.
# 8 rather than 2 took 0.97-0.99x the time on three int8 models at 2 threads (`python
# benchmarks/ab_patch.py MODEL --threads 2 --set qengine.kernels.threads:DEPTHWISE_MAC_FLOPS=2`),
# and the hybrid depthwise counted 8 already.
DEPTHWISE_MAC_FLOPS = 8
# One int8 table lookup (elementwise.lookup_pairs, lookup_values): ~0.5 ns, a load that
# depends on two others; split from ~7k values. 150 rather than 16 took 0.96-0.99x the time
# on four int8 models at 2 threads (`ab_patch.py ... --set ...:LOOKUP_FLOPS=16`; 50:
# 0.98-1.00 by a throwaway script doing the same).
LOOKUP_FLOPS = 150
# One window tap of one MAX_POOL_2D output value (a vector max of 8-16 lanes): ~0.04 ns
# (palm_detection_lite's 3x3/2 96x96x32 float pool, 74k values, 28 us), splitting from
# ~250k of them.
POOL_TAP_FLOPS = 4
# im2col copies are made and multiplied in blocks of about this size (L2 512 KiB, L3 16 MiB)
COPY_BLOCK_BYTES = 4 << 20


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (taskset, cgroups)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


CORES = _cores()
_mutex = threading.Lock()  # guards the counts below (a plain lock: ~0.1 us a split)
_freed = threading.Condition(_mutex)  # waited on only while every core is taken
_waiting = 0  # callers waiting on _freed


class _Inside(threading.local):
    block = False  # this thread is running a block now (a class default: reading a missing
    # thread-local attribute raises inside getattr, 0.5 us on every split)
    numba_threads = 0  # Numba's thread count on this thread while a run holds it (`note_numba
    # _threads`), else 0: ask Numba (~0.8 us, most of a split's bookkeeping)
    run_parts = 0  # inside `claimed_run`: the parts its splits take, claimed once for the run


def note_numba_threads(n: int) -> int:
    """Note that Numba's thread count on this thread is n (0: unknown) until the next note,
    which a run's thread limit makes when it leaves; returns the note it replaces. Inside a
    run only qengine changes the count (`_set_numba_threads` keeps the note)."""
    previous = _inside.numba_threads
    _inside.numba_threads = n
    return previous


_inside = _Inside()
_running = 0  # threads running qengine blocks now: callers of parallel_blocks plus helpers
_tasks: SimpleQueue = SimpleQueue()
_workers = 0  # pool threads started: CORES - 1 once a caller first gets a helper


class _Block:
    """One block handed to a pool thread; `done` is released when it has run. `counted`: its
    core was claimed for it (not when a claimed run's helpers run it)."""

    __slots__ = ("counted", "done", "error", "start", "stop", "work")

    def __init__(self, work, start: int, stop: int, counted: bool):
        self.work, self.start, self.stop, self.error = work, start, stop, None
        self.counted = counted
        self.done = threading.Lock()
        self.done.acquire()

    def run(self) -> None:
        _inside.block = True
        try:
            self.work(self.start, self.stop)
        except Exception as e:  # noqa: BLE001 - re-raised on the calling thread
            self.error = e
        finally:
            _inside.block = False
            if self.counted:
                _release(1)
            self.done.release()


def _worker() -> None:
    while True:
        _tasks.get().run()


class _OtherProcesses:
    """How many of this process's cores other processes kept busy lately (Linux: /proc/stat's
    busy time on those cores minus this process's CPU time, over the last >= 0.1 s). Helpers
    only go to idle cores: a split waits for its slowest part, so a helper sharing its core
    with a busy process made 2-thread runs slower than 1-thread ones (pose_detection float,
    one other busy process: 27.8 ms on 2 threads, 18.7 on 1)."""

    INTERVAL = 0.1  # seconds between two looks
    # QENGINE_IGNORE_OTHER_LOAD=1 splits whatever other processes do (tests, benchmarks of
    # the split code itself)
    enabled = os.path.exists("/proc/stat") and os.environ.get("QENGINE_IGNORE_OTHER_LOAD") != "1"

    def __init__(self):
        self.cores = 0
        self.last = None  # (monotonic time, busy seconds of our cores, our CPU seconds)

    def busy_cores(self) -> int:
        if not self.enabled:
            return 0
        now = time.monotonic()
        if self.last is not None and now - self.last[0] < self.INTERVAL:
            return self.cores
        busy, own = _busy_seconds(), sum(os.times()[:2])
        if self.last is not None and busy is not None:
            others = (busy - self.last[1] - (own - self.last[2])) / (now - self.last[0])
            self.cores = int(others + 0.25)  # a core busy 3/4 of the time or more counts
        self.last = (now, busy, own)
        return self.cores


def _busy_seconds() -> float | None:
    """Seconds the cores this process may use spent busy (not idle or waiting for I/O)."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    ours = {f"cpu{c}" for c in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") \
        else None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu" and (ours is None or name in ours):
            values = [int(v) for v in fields[:8]]
            ticks += sum(values) - values[3] - values[4]  # all but idle and iowait
    return ticks / os.sysconf("SC_CLK_TCK")


_others = _OtherProcesses()


def _claim_helpers(wanted: int) -> int:
    """Wait for a free core for the caller, then reserve up to `wanted` more for helpers on
    cores neither this process nor another one keeps busy."""
    global _running, _waiting
    idle = CORES - _others.busy_cores()
    with _mutex:
        while _running >= CORES:
            _waiting += 1
            _freed.wait()
            _waiting -= 1
        _running += 1
        helpers = max(0, min(wanted, idle - _running))
        _running += helpers
        _start_workers(helpers)
    return helpers


def _start_workers(helpers: int) -> None:
    """Start the pool's threads on its first use (under _mutex)."""
    global _workers
    while helpers and _workers < CORES - 1:
        threading.Thread(target=_worker, name=f"qengine-{_workers}", daemon=True).start()
        _workers += 1


def _release(n: int) -> None:
    global _running
    with _mutex:
        _running -= n
        if _waiting:
            _freed.notify_all()


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: start over. GNU OpenMP cannot start a
    parallel region in a child forked after the parent ran one (Numba aborts the child), so
    the child runs compiled work on one thread."""
    global _mutex, _freed, _waiting, _running, _tasks, _workers, _regions_allowed
    _mutex = threading.Lock()
    _freed, _waiting = threading.Condition(_mutex), 0
    _running, _tasks, _workers = 0, SimpleQueue(), 0
    _regions_allowed = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_regions_allowed = True  # False in a forked child
# Numba's workqueue layer (its fallback when neither TBB nor OpenMP loads) aborts the process
# on two parallel regions at once: with it, a region waits for this lock or runs on one part.
_one_region = threading.Lock()
_layer_is_threadsafe: bool | None = None  # known after the first region


class split_cores:
    """`with split_cores(threads, total) as parts:` how many parts (1..threads) to cut `total`
    items into for a compiled `prange(parts)` driver, cores reserved as `parallel_blocks` does;
    1 means run the serial kernel. Numba's thread count is `parts` inside the block."""

    __slots__ = ("claimed", "helpers", "locked", "previous", "wanted")

    def __init__(self, threads: int, total: int):
        # Numba's workers: NUMBA_NUM_THREADS may be below the cores (a user's limit)
        self.wanted = min(threads, total, numba.config.NUMBA_NUM_THREADS) - 1
        self.claimed = self.locked = False
        self.helpers = self.previous = 0

    def __enter__(self) -> int:
        if self.wanted < 1 or not _regions_allowed or _inside.block:
            return 1
        if _inside.run_parts:  # the cores the run claimed (Numba's count is set already)
            return min(_inside.run_parts, self.wanted + 1)
        wanted = self.wanted
        if not _layer_is_threadsafe:  # another region running: this caller's counts alone
            self.locked = _one_region.acquire(blocking=False)
            wanted = wanted if self.locked else 0
        self.helpers, self.claimed = _claim_helpers(wanted), True
        if self.helpers:
            self.previous = _numba_threads()
            if self.previous != self.helpers + 1:
                _set_numba_threads(self.helpers + 1)
        return self.helpers + 1

    def __exit__(self, *error) -> None:
        global _layer_is_threadsafe
        if self.helpers:
            if self.previous != self.helpers + 1:
                _set_numba_threads(self.previous)
            if _layer_is_threadsafe is None:
                _layer_is_threadsafe = numba.threading_layer() != "workqueue"
        if self.claimed:
            _release(self.helpers + 1)
        if self.locked:
            _one_region.release()


class claimed_run:  # (lower case: used as a function, `with claimed_run(threads):`)
    """A model run on `threads` threads whose splits all take the cores claimed once, as it
    starts (as `split_cores` claims them), and released as it ends: a claim per split costs
    ~1.3 us of Python, and a small model's 2-thread run splits 25-70 layers (3.5-4.5 % of its
    time on six MediaPipe models). Another caller meanwhile finds those cores taken, as it
    would during one split. A run inside a claimed run keeps the outer claim."""

    __slots__ = ("outer", "split")

    def __init__(self, threads: int):
        self.split = split_cores(threads, threads)

    def __enter__(self):
        self.outer = _inside.run_parts or _inside.block
        if not self.outer:
            _inside.run_parts = self.split.__enter__()
        return self

    def __exit__(self, *error) -> None:
        if not self.outer:
            _inside.run_parts = 0
            self.split.__exit__(*error)


# Numba's own entry points behind get/set_num_threads (present in the versions tested; the
# public functions are used otherwise)
_DIRECT = all(hasattr(_parallel, name)
              for name in ("_is_initialized", "_get_num_threads", "_set_num_threads"))


def _numba_threads() -> int:
    """numba.get_num_threads() of this thread, without its ~1 us of locks once Numba's
    threading layer has started (every split asks; qengine's splits are a few us each)."""
    if _inside.numba_threads:
        return _inside.numba_threads
    if _DIRECT and _parallel._is_initialized:
        return _parallel._get_num_threads()
    return numba.get_num_threads()


def _set_numba_threads(n: int) -> None:
    """numba.set_num_threads(n) (n is 1 .. NUMBA_NUM_THREADS here), directly once started."""
    if _DIRECT and _parallel._is_initialized:
        _parallel._set_num_threads(n)
    else:
        numba.set_num_threads(n)
    if _inside.numba_threads:
        _inside.numba_threads = n


@inline_kernel
def part(total: int, parts: int, i: int) -> tuple[int, int]:
    """[start, stop) of part i of range(total) cut into `parts` near-equal parts (the
    compiled drivers' cut; `split` makes the same list in Python)."""
    return total * i // parts, total * (i + 1) // parts


def worth_splitting(threads: int, flops: int) -> bool:
    """More than one thread, and enough work (below the bar, the common case of tiny ops,
    there is no bookkeeping at all)."""
    return threads > 1 and flops >= MIN_SPLIT_FLOPS


def split_run(serial, driver, args: tuple, total: int, threads: int, flops: int) -> None:
    """serial(*args, 0, total) on this thread, or driver(*args, total, parts): the same
    range run as `parts` parts at once by a compiled prange (see split_cores), when the work
    is worth splitting (flops ≥ MIN_SPLIT_FLOPS) and other cores are free."""
    if not worth_splitting(threads, flops):
        serial(*args, 0, total)
        return
    with split_cores(threads, total) as parts:
        if parts > 1:
            driver(*args, total, parts)
        else:
            serial(*args, 0, total)


def split_grid(serial, driver, args: tuple, blocks: int, n_panels: int, threads: int,
               flops: int, min_blocks: int = 1, by_panels: bool = False) -> None:
    """The GEMMs' split of blocks x weight panels: serial(*args, 0, blocks, 0, n_panels) on
    this thread, or driver(*args, blocks, n_panels, by_panels, parts), whose prange part i runs
    `grid_part(...)`'s share: row blocks, or weight panels when the caller says so or there
    are fewer than min_blocks row blocks per thread (and at least 2 panels)."""
    if not worth_splitting(threads, flops):
        serial(*args, 0, blocks, 0, n_panels)
        return
    by_panels = (by_panels or blocks < min_blocks * threads) and n_panels >= 2
    with split_cores(threads, n_panels if by_panels else blocks) as parts:
        if parts > 1:
            driver(*args, blocks, n_panels, by_panels, parts)
        else:
            serial(*args, 0, blocks, 0, n_panels)


@inline_kernel
def grid_part(blocks: int, n_panels: int, by_panels: bool, parts: int, i: int):
    """(blk0, blk1, pan0, pan1) of part i of a `split_grid`."""
    if by_panels:
        p0, p1 = part(n_panels, parts, i)
        return 0, blocks, p0, p1
    b0, b1 = part(blocks, parts, i)
    return b0, b1, 0, n_panels


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering range(total) in `parts` near-equal blocks, none empty."""
    parts = max(1, min(parts, total))
    return [part(total, parts, i) for i in range(parts)]


class on_this_thread:  # (lower case: used as a function, `with on_this_thread():`)
    """Every split inside the block runs on the calling thread alone, as inside a pool block
    (`split_cores` gives 1 part, `parallel_blocks` runs its range itself)."""

    __slots__ = ("saved",)

    def __enter__(self):
        self.saved = _inside.block
        _inside.block = True
        return self

    def __exit__(self, *error) -> None:
        _inside.block = self.saved


def parallel_blocks(work, total: int, threads: int) -> None:
    """Run work(start, stop) over range(total) in at most `threads` near-equal blocks: one on
    this thread, the others on pool threads while cores are idle (fewer, larger blocks when
    they are not). work must write disjoint outputs per block; an exception in any block is
    raised here once every block has finished."""
    if threads <= 1 or total <= 1 or _inside.block:
        work(0, total)
        return
    counted = not _inside.run_parts  # inside a claimed run, its cores are this caller's
    if counted:
        helpers = _claim_helpers(min(threads, total) - 1)
    else:
        helpers = min(_inside.run_parts, threads, total) - 1
        with _mutex:
            _start_workers(helpers)
    blocks = split(total, helpers + 1)
    handed = [_Block(work, a, b, counted) for a, b in blocks[1:]]
    for block in handed:
        _tasks.put(block)
    _inside.block = True
    try:
        work(*blocks[0])
    finally:
        _inside.block = False
        for block in handed:
            block.done.acquire()
        # counted until its helpers finish: released earlier, another caller's helper could
        # start while this caller's are still running
        if counted:
            _release(1)
    for block in handed:
        if block.error is not None:
            raise block.error


def matmul_rows(rows_of, total_rows: int, b, out, threads: int, row_bytes: int = 0) -> None:
    """out[r] = rows_of(r0, r1) @ b for row blocks [r0, r1) of out (2-D, C-contiguous), where
    rows_of returns the [pixels, K] left operand of a block (e.g. its im2col slice, built on
    the thread that multiplies it). row_bytes > 0 says rows_of copies that many bytes per row:
    each thread then copies and multiplies at most COPY_BLOCK_BYTES at a time, so the copy is
    still in cache when BLAS reads it (an 8x3x39x8 conv over 172x264 pixels: 103 ms with one
    170 MB im2col, 20 ms in 4 MB blocks)."""
    k, n = b.shape
    if threads <= 1 or 2 * total_rows * k * n < MIN_PARALLEL_FLOPS:
        threads = 1
    per_row = out.shape[0] // max(total_rows, 1)  # output pixels per block row
    step = max(1, COPY_BLOCK_BYTES // row_bytes) if row_bytes else total_rows

    def work(r0, r1):
        for start in range(r0, r1, step):
            stop = min(start + step, r1)
            np.matmul(rows_of(start, stop), b, out=out[start * per_row:stop * per_row])

    parallel_blocks(work, total_rows, threads)
