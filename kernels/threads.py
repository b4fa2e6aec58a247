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
"""

from __future__ import annotations

import os
import threading
from queue import SimpleQueue

import numpy as np

# Below this many flops (2*M*K*N) work stays on the calling thread (kernels read it at call
# time). A hand-off to a pool thread costs ~80 us on the 2-vCPU VM this was measured on: the
# pool thread wakes from a futex, then waits for the GIL the caller holds until its own block
# enters compiled code (a 2-thread split of 2 x 25 us of work took 97-106 us, against 27 us on
# one thread), so work is split from ~0.4 ms of it on. Six published models (`published.py
# --threads 1 2`, float/int8/dynamic): at 4M, 2 threads took 0.75-0.94x the 1-thread speed;
# at 40M, 1.01-1.05x. The tests lower it so their small cases take the split paths.
MIN_PARALLEL_FLOPS = 40_000_000
# im2col copies are made and multiplied in blocks of about this size (L2 512 KiB, L3 16 MiB)
COPY_BLOCK_BYTES = 4 << 20


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (taskset, cgroups)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


CORES = _cores()
_lock = threading.Condition()
_inside = threading.local()  # .block: this thread is running a block now
_running = 0  # threads running qengine blocks now: callers of parallel_blocks plus helpers
_tasks: SimpleQueue = SimpleQueue()
_workers = 0  # pool threads started: CORES - 1 once a caller first gets a helper


class _Block:
    """One block handed to a pool thread; `done` is released when it has run."""

    __slots__ = ("done", "error", "start", "stop", "work")

    def __init__(self, work, start: int, stop: int):
        self.work, self.start, self.stop, self.error = work, start, stop, None
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
            _release(1)
            self.done.release()


def _worker() -> None:
    while True:
        _tasks.get().run()


def _claim_helpers(wanted: int) -> int:
    """Wait for a free core for the caller, then reserve up to `wanted` more for helpers."""
    global _running, _workers
    with _lock:
        while _running >= CORES:
            _lock.wait()
        _running += 1
        helpers = max(0, min(wanted, CORES - _running))
        _running += helpers
        while helpers and _workers < CORES - 1:  # the pool starts on its first use
            threading.Thread(target=_worker, name=f"qengine-{_workers}", daemon=True).start()
            _workers += 1
    return helpers


def _release(n: int) -> None:
    global _running
    with _lock:
        _running -= n
        _lock.notify_all()


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: start over."""
    global _lock, _running, _tasks, _workers
    _lock, _running, _tasks, _workers = threading.Condition(), 0, SimpleQueue(), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering range(total) in `parts` near-equal blocks, none empty."""
    parts = max(1, min(parts, total))
    bounds = [total * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def parallel_blocks(work, total: int, threads: int) -> None:
    """Run work(start, stop) over range(total) in at most `threads` near-equal blocks: one on
    this thread, the others on pool threads while cores are idle (fewer, larger blocks when
    they are not). work must write disjoint outputs per block; an exception in any block is
    raised here once every block has finished."""
    if threads <= 1 or total <= 1 or getattr(_inside, "block", False):
        work(0, total)
        return
    helpers = _claim_helpers(min(threads, total) - 1)
    blocks = split(total, helpers + 1)
    handed = [_Block(work, a, b) for a, b in blocks[1:]]
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
