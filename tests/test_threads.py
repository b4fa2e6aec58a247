"""kernels/threads.py: the one pool. Blocks cover the range once, errors reach the caller,
concurrent callers never get more helpers than there are idle cores, and a forked child can
still use it."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from qengine.kernels import threads

REPO = Path(__file__).parents[1]


class Recorder:
    """work(start, stop) that records its block and how many blocks ran at once."""

    def __init__(self, hold: float = 0.0):
        self.hold = hold
        self.lock = threading.Lock()
        self.blocks: list[tuple[int, int]] = []
        self.now = self.peak = 0

    def __call__(self, start: int, stop: int) -> None:
        with self.lock:
            self.blocks.append((start, stop))
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.hold)  # releases the GIL, as a nogil kernel does
        with self.lock:
            self.now -= 1


@pytest.mark.parametrize("total, threads_", [(0, 2), (1, 2), (7, 1), (7, 2), (7, 3), (2, 8)])
def test_blocks_cover_the_range_once(monkeypatch, total, threads_):
    monkeypatch.setattr(threads, "CORES", 4)
    work = Recorder()
    threads.parallel_blocks(work, total, threads_)
    covered = sorted(i for a, b in work.blocks for i in range(a, b))
    assert covered == list(range(total))
    assert len(work.blocks) <= max(1, min(threads_, total))


def test_an_error_in_a_pool_block_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(threads, "CORES", 2)

    def work(start, stop):
        if start > 0:
            raise ValueError("block failed")

    with pytest.raises(ValueError, match="block failed"):
        threads.parallel_blocks(work, 10, 2)
    work = Recorder()  # the pool's bookkeeping survived the error
    threads.parallel_blocks(work, 10, 2)
    assert len(work.blocks) == 2


def test_one_caller_gets_a_helper_per_idle_core(monkeypatch):
    monkeypatch.setattr(threads, "CORES", 2)
    work = Recorder(hold=0.05)
    threads.parallel_blocks(work, 10, 4)
    assert len(work.blocks) == 2 and work.peak == 2


def test_two_user_threads_do_not_oversubscribe(monkeypatch):
    """Two Python threads, each running 2-thread work on 2 cores: at most 2 blocks at once
    (the old ThreadPoolExecutor pool ran 3: two callers plus a helper)."""
    monkeypatch.setattr(threads, "CORES", 2)
    work = Recorder(hold=0.05)
    start = threading.Barrier(2)

    def user():
        start.wait()
        for _ in range(3):
            threads.parallel_blocks(work, 10, 2)

    users = [threading.Thread(target=user) for _ in range(2)]
    for t in users:
        t.start()
    for t in users:
        t.join()
    assert work.peak <= 2
    assert sorted(i for a, b in work.blocks for i in range(a, b)) == sorted(list(range(10)) * 6)


def _use_pool_in_child(result):
    work = Recorder()
    threads.parallel_blocks(work, 10, 2)
    result.put(sorted(work.blocks))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_can_use_the_pool(monkeypatch):
    monkeypatch.setattr(threads, "CORES", 2)
    threads.parallel_blocks(Recorder(), 10, 2)  # the parent's pool thread exists
    result = _in_forked_child(_use_pool_in_child, 30)
    assert result.get(timeout=5) == [(0, 5), (5, 10)]


def _in_forked_child(target, timeout: float):
    """Run target(queue) in a forked child that must exit cleanly in time; the queue."""
    context = multiprocessing.get_context("fork")
    result = context.Queue()
    child = context.Process(target=target, args=(result,))
    child.start()
    child.join(timeout=timeout)
    if child.is_alive():
        child.kill()
        pytest.fail(f"{target.__name__} hung in a forked child")
    assert child.exitcode == 0
    return result


def test_a_block_calling_parallel_blocks_runs_its_range_itself(monkeypatch):
    monkeypatch.setattr(threads, "CORES", 2)
    inner = Recorder()
    threads.parallel_blocks(lambda a, b: threads.parallel_blocks(inner, 4, 2), 2, 2)
    assert sorted(inner.blocks) == [(0, 4), (0, 4)]


def test_blas_stays_at_one_thread_until_the_last_concurrent_run_leaves():
    pytest.importorskip("threadpoolctl")
    import numpy as np  # noqa: F401 - loads the BLAS threadpoolctl reports

    from qengine.runtime.interpreter import _blas_controller, thread_limit

    def blas_threads():  # of the BLAS libraries qengine limits (those loaded when it looked)
        return [lib["num_threads"] for lib in _blas_controller().select(user_api="blas").info()]

    before = blas_threads()
    first, second = thread_limit(1), thread_limit(2)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # one run leaves while the other still runs
    assert set(blas_threads()) == {1}
    second.__exit__(None, None, None)
    assert blas_threads() == before


@pytest.mark.parametrize("mode", ["float", "int8"])
def test_one_interpreter_run_from_two_threads_at_once(mode):
    """Two user threads share one 2-thread Interpreter: every result equals the serial one."""
    import numpy as np

    import qengine

    data = np.load(REPO / "examples/digits_data.npz")
    model = qengine.load(REPO / "examples/digits.tflite")
    if mode == "int8":
        model = qengine.quantize(model, "int8", data["calibration"][:32, None], quiet=True)
    interpreter = qengine.Interpreter(model, num_threads=2)
    images = [data["test_images"][i:i + 8].astype(np.float32) for i in range(0, 80, 8)]
    if mode == "int8":
        scale, zero = interpreter.inputs[0].quantization.scale[0], \
            interpreter.inputs[0].quantization.zero_point[0]
        images = [np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8) for x in images]
    serial = [interpreter.run(x) for x in images]
    got: dict[tuple[int, int], dict] = {}
    start = threading.Barrier(2)

    def user(who):
        start.wait()
        for _ in range(3):
            for i, x in enumerate(images):
                got[who, i] = interpreter.run(x)

    users = [threading.Thread(target=user, args=(who,)) for who in range(2)]
    for t in users:
        t.start()
    for t in users:
        t.join()
    for (_, i), outputs in got.items():
        for name, value in serial[i].items():
            np.testing.assert_array_equal(outputs[name], value)


def test_two_threads_running_one_interpreter_at_different_batch_sizes():
    """A new input shape makes a new plan instead of re-preparing the one another thread is
    running: each thread's outputs equal the serial ones."""
    import numpy as np

    import qengine

    data = np.load(REPO / "examples/digits_data.npz")["test_images"].astype(np.float32)
    interpreter = qengine.Interpreter(REPO / "examples/digits.tflite")
    batches = {who: [data[i:i + 2 + 3 * who] for i in range(0, 40, 5)] for who in range(2)}
    serial = {who: [interpreter.run(x) for x in xs] for who, xs in batches.items()}
    errors = []
    start = threading.Barrier(2)

    def user(who):
        start.wait()
        try:
            for _ in range(5):
                for x, expected in zip(batches[who], serial[who]):
                    for name, value in interpreter.run(x).items():
                        np.testing.assert_array_equal(value, expected[name])
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    users = [threading.Thread(target=user, args=(who,)) for who in range(2)]
    for t in users:
        t.start()
    for t in users:
        t.join()
    assert errors == []


# --- split_cores: compiled prange drivers (Numba's threading layer) ---------------------------

CONV_SCRIPT = """
import sys, threading
import numpy as np
from qengine.kernels import gemm_int8, pack
rng = np.random.default_rng(0)
x = rng.integers(-128, 128, (1, 40, 40, 32)).astype(np.int8)
w = rng.integers(-127, 128, (48, 3, 3, 32)).astype(np.int8)
plan = gemm_int8.plan_conv2d_int8(pack.pack_conv_weights(w), np.zeros(48, np.int32), 3,
                                  np.full(48, 1 << 30, np.int32), np.full(48, -8, np.int32),
                                  -2, -128, 127, 1, 1, 1, 1, 1, 1, 40, 40)
want = gemm_int8.run_conv2d_int8(plan, x, 1)
bad = []
def user():
    for _ in range(20):
        if not np.array_equal(gemm_int8.run_conv2d_int8(plan, x, 2), want):
            bad.append(1)
users = [threading.Thread(target=user) for _ in range(2)]
[t.start() for t in users]
[t.join() for t in users]
import numba
print(numba.threading_layer(), len(bad))
"""


def test_split_cores_grants_idle_cores_only(monkeypatch):
    """Two user threads asking for 2 parts each on 2 cores hold at most 2 parts between them."""
    monkeypatch.setattr(threads, "CORES", 2)
    lock, now, peak = threading.Lock(), [0], [0]
    start = threading.Barrier(2)

    def user():
        start.wait()
        for _ in range(5):
            with threads.split_cores(2, 10) as parts:
                with lock:
                    now[0] += parts
                    peak[0] = max(peak[0], now[0])
                time.sleep(0.02)
                with lock:
                    now[0] -= parts

    users = [threading.Thread(target=user) for _ in range(2)]
    for t in users:
        t.start()
    for t in users:
        t.join()
    assert peak[0] <= 2
    with threads.split_cores(2, 10) as parts:  # everything was released
        assert parts == 2


def finishes(fn, timeout: float = 60.0) -> None:
    """fn() on another thread, its error raised here; a test failure, not a hang, if fn waits
    forever (a claim of a core its own run holds)."""
    errors = []

    def call():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn.__name__} still waits after {timeout} s"
    if errors:
        raise errors[0]


def test_a_claimed_run_claims_once_and_its_splits_take_its_parts(monkeypatch):
    """Inside claimed_run the splits take the run's parts without a claim of their own (the
    count of running threads stays the run's), a nested run keeps the outer claim, a pool
    block still runs its splits alone, and leaving releases everything."""
    monkeypatch.setattr(threads, "CORES", 2)
    finishes(_claimed_run_splits)


def _claimed_run_splits():
    with threads.claimed_run(2):
        assert threads._running == 2
        with threads.split_cores(2, 10) as parts:
            assert parts == 2 and threads._running == 2
        with threads.split_cores(2, 1) as parts:  # one item: one part
            assert parts == 1
        with threads.claimed_run(2):
            assert threads._running == 2
        with threads.split_cores(2, 10) as parts:  # the outer claim is still held
            assert parts == 2
        with threads.on_this_thread(), threads.split_cores(2, 10) as parts:
            assert parts == 1
    assert threads._running == 0
    with threads.split_cores(2, 10) as parts:
        assert parts == 2


def test_pool_blocks_inside_a_claimed_run_use_its_helper(monkeypatch):
    """parallel_blocks inside a claimed run hands its block to the run's helper core instead
    of waiting for a core the run itself holds (a deadlock on 2 cores), and two users running
    claimed runs at once still run at most 2 blocks at a time."""
    monkeypatch.setattr(threads, "CORES", 2)
    work = Recorder(hold=0.02)

    def one_run():
        with threads.claimed_run(2):
            threads.parallel_blocks(work, 10, 2)

    finishes(one_run)
    assert len(work.blocks) == 2 and work.peak == 2 and threads._running == 0
    work = Recorder(hold=0.02)
    start = threading.Barrier(2)

    def user():
        start.wait()
        for _ in range(3):
            with threads.claimed_run(2):
                threads.parallel_blocks(work, 10, 2)

    users = [threading.Thread(target=user) for _ in range(2)]
    for t in users:
        t.start()
    for t in users:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in users)
    assert work.peak <= 2 and threads._running == 0
    assert sorted(i for a, b in work.blocks for i in range(a, b)) == sorted(list(range(10)) * 6)


@pytest.mark.parametrize("layer, workers", [("omp", ""), ("workqueue", ""), ("omp", "1")])
def test_concurrent_compiled_splits_agree_with_one_thread(layer, workers):
    """Two user threads running 2-thread int8 convs at once: same outputs as one thread, and
    Numba's workqueue layer (which aborts on two parallel regions at once) survives too, as
    does a user's NUMBA_NUM_THREADS=1 (Numba refuses more threads than that)."""
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_THREADING_LAYER": layer, "QENGINE_IGNORE_OTHER_LOAD": "1"}
    if workers:
        env["NUMBA_NUM_THREADS"] = workers
    run = subprocess.run([sys.executable, "-c", CONV_SCRIPT], capture_output=True, text=True,
                         check=False, env=env, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    # (the pool starts when the kernels are imported, kernels/jit.py: with one worker too)
    assert run.stdout.split() == [layer, "0"]


def _compiled_split_in_child(result):
    import numpy as np
    from qengine.kernels import depthwise_int8

    with threads.split_cores(2, 10) as parts:
        result.put(parts)
    x = np.ones((1, 60, 60, 16), np.int8)
    out = depthwise_int8.depthwise_conv2d_int8_acc_fast(x, np.ones((3, 3, 16), np.int16),
                                                        np.zeros(1, np.int64), 1, 1, 1, 1, 1,
                                                        1, 60, 60, 1, threads=2)
    result.put(int(out[0, 1, 1, 0]))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_child_forked_after_a_parallel_region_runs_compiled_work_on_one_thread(monkeypatch):
    """GNU OpenMP cannot start a region in a child forked after the parent ran one (Numba
    aborts the child): there, split_cores grants one part."""
    import numpy as np
    from qengine.kernels import depthwise_int8

    monkeypatch.setattr(threads, "CORES", 2)
    monkeypatch.setattr(threads, "MIN_SPLIT_FLOPS", 0)  # the parent's call runs a region

    x = np.ones((1, 60, 60, 16), np.int8)
    depthwise_int8.depthwise_conv2d_int8_acc_fast(x, np.ones((3, 3, 16), np.int16),
                                                  np.zeros(1, np.int64), 1, 1, 1, 1, 1, 1, 60,
                                                  60, 1, threads=2)  # a region in the parent
    result = _in_forked_child(_compiled_split_in_child, 120)
    assert result.get(timeout=5) == 1 and result.get(timeout=5) == 9  # 9 in-image taps of 1


# --- other processes' load ------------------------------------------------------------------


def test_helpers_go_only_to_cores_other_processes_leave_idle(monkeypatch):
    """busy_cores: the cores' busy time minus this process's CPU time, per second; a core busy
    3/4 of the time counts. A split then gets no helper on a 2-core machine."""
    clock = iter([0.0, 0.05, 0.5])  # the second look comes too early: no new figure
    busy = iter([100.0, 100.8])  # seconds the process's cores were busy, all together
    own = iter([(5.0, 0.0), (5.0, 0.05)])  # this process's user and system time
    monkeypatch.setattr(threads._OtherProcesses, "enabled", True)
    monkeypatch.setattr(threads, "_others", threads._OtherProcesses())
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads, "_busy_seconds", lambda: next(busy))
    monkeypatch.setattr(threads.os, "times", lambda: next(own))
    monkeypatch.setattr(threads, "CORES", 2)
    assert threads._others.busy_cores() == 0  # the first look: nothing to compare yet
    assert threads._others.busy_cores() == 0  # 0.05 s later: the last figure
    with threads.split_cores(2, 10) as parts:  # 0.5 s: (0.8 - 0.05) / 0.5 = 1.5 cores
        assert parts == 1
    assert threads._others.cores == 1


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads Linux's /proc/stat")
def test_a_busy_process_is_seen():
    import subprocess
    import sys

    others = threads._OtherProcesses()
    others.enabled = True  # (off for the other tests: see conftest.py)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        others.busy_cores()
        time.sleep(0.5)
        assert others.busy_cores() >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_a_run_notes_numbas_thread_count_and_leaves_it_as_it_was():
    """Inside a 2-thread run the splits read Numba's thread count from the run's note (Numba's
    getter costs ~0.8 us a split); the note and the user's own count are back after it."""
    import numba
    import numpy as np
    from qengine.kernels import threads as pool

    import qengine
    from qengine.builder import GraphBuilder
    from qengine.runtime import Prepared, register_op

    seen = []

    def prepare(ctx):
        def run(x):
            seen.append((numba.get_num_threads(), pool._numba_threads()))
            return x
        return Prepared(run, [ctx.output_spec(0, ctx.inputs[0].shape)])

    register_op("SeesThreads", prepare)
    b = GraphBuilder()
    y = b.op("SeesThreads", [b.input("x", (3,))], (3,), custom_code="SeesThreads")
    interpreter = qengine.Interpreter(b.build([y]), num_threads=2)
    numba.set_num_threads(1)
    try:
        interpreter.run(np.ones(3, np.float32))
        assert seen == [(2, 2)]
        assert numba.get_num_threads() == 1 and pool._inside.numba_threads == 0
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
