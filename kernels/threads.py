"""qengine's one pool of worker threads for the BLAS parts of the float path.

BLAS (OpenBLAS) runs with one thread inside every interpreter run (`runtime.interpreter
.thread_limit`): its own pool spins after each call and, on a machine with as many threads as
cores, starves Numba's OpenMP workers and TFLite's in the same process (a 2-thread float
palm_detection_lite took 500 ms instead of 34). The parallelism of a large matmul comes from
here instead: its output rows are split between the calling thread and `threads - 1` pool
threads, each running a one-thread BLAS call on its block (NumPy releases the GIL in matmul).
Idle pool threads block on a queue, so they never compete with Numba's pool.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Below this many flops (2*M*K*N) a matmul stays on the calling thread: handing a block to a
# pool thread costs ~20-50 us, the time of a ~2 MFLOP matmul on one core.
MIN_PARALLEL_FLOPS = 4_000_000
# im2col copies are made and multiplied in blocks of about this size (L2 512 KiB, L3 16 MiB)
COPY_BLOCK_BYTES = 4 << 20
_pool: ThreadPoolExecutor | None = None


def pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1) - 1),
                                   thread_name_prefix="qengine")
    return _pool


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering range(total) in `parts` near-equal blocks, none empty."""
    parts = max(1, min(parts, total))
    bounds = [total * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def parallel_blocks(work, total: int, threads: int) -> None:
    """Run work(start, stop) over range(total) in `threads` blocks: one on this thread, the
    rest on the pool. work must write disjoint outputs per block."""
    blocks = split(total, threads)
    futures = [pool().submit(work, a, b) for a, b in blocks[1:]]
    try:
        work(*blocks[0])
    finally:
        for future in futures:
            future.result()


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

    if threads == 1:
        work(0, total_rows)
    else:
        parallel_blocks(work, total_rows, threads)
