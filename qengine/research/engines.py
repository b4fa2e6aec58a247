"""Run `func(shared, item)` for every item, on a local process pool or on Ray.

    run_tasks(func, shared, items, engine="local", workers=N, address=None)
        -> yields (index, result) as results arrive, in completion order

`shared` (the model bytes, data and calibration statistics) is sent to each worker once: to
the pool's processes when they start, into Ray's object store once (`ray.put`), where every
task on every node reads it. Work lost with a killed worker is retried: Ray re-runs a task
whose worker died (`max_retries`); the local pool is rebuilt and the unfinished items are
resubmitted. Each item gets at most `retries` extra attempts.

Workers run one item at a time on one thread each (Numba and BLAS), so N workers use N cores.
Ray is imported only by `engine="ray"`.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from ..errors import QEngineError

ENGINES = ("local", "ray")
RETRIES = 3
CONNECT_TIMEOUT = 10.0  # seconds to reach a Ray address before giving up


def run_tasks(func: Callable, shared, items: list, *, engine: str = "local",
              workers: int | None = None, address: str | None = None,
              retries: int = RETRIES) -> Iterator[tuple[int, object]]:
    if engine == "local":
        if address:
            raise QEngineError("--address is for --engine ray")
        return _local(func, shared, items, workers or cores(), retries)
    if engine == "ray":
        return _ray(func, shared, items, workers, address, retries)
    raise QEngineError(f"unknown engine {engine!r}; engines are {', '.join(ENGINES)}")


def cores() -> int:
    return multiprocessing.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# local process pool

_worker_state: dict = {}


def _start_worker(shared) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _worker_state["shared"] = shared


def _call_in_worker(func: Callable, item):
    from ..runtime.interpreter import thread_limit

    with thread_limit(1):
        return func(_worker_state["shared"], item)


def _local(func, shared, items, workers, retries) -> Iterator[tuple[int, object]]:
    """Spawned (not forked) workers: the parent may already run Numba and BLAS threads, which
    a fork would copy in an unknown state."""
    pending = dict(enumerate(items))
    attempts: Counter = Counter()
    context = multiprocessing.get_context("spawn")
    while pending:
        pool = ProcessPoolExecutor(min(workers, len(pending)), mp_context=context,
                                   initializer=_start_worker, initargs=(shared,))
        try:
            futures = {pool.submit(_call_in_worker, func, item): i for i, item in pending.items()}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool:  # a worker died: every unfinished item is resubmitted
                    attempts[index] += 1
                    if attempts[index] > retries:
                        raise QEngineError(f"item {index} lost its worker {attempts[index]} "
                                           f"times; giving up") from None
                    continue
                del pending[index]
                yield index, result
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Ray


def _ray(func, shared, items, workers, address, retries) -> Iterator[tuple[int, object]]:
    try:
        import ray
    except ImportError:
        raise QEngineError("--engine ray needs Ray: pip install 'qengine[ray]'") from None
    started = _connect(ray, address, workers)
    refs: dict = {}
    try:
        shared_ref = ray.put(shared)  # once, in the object store
        remote = ray.remote(num_cpus=1, max_retries=retries)(_call_in_worker_ray)
        refs = {remote.remote(func, shared_ref, item): i for i, item in enumerate(items)}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            index = refs.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.WorkerCrashedError:
                raise QEngineError(f"item {index} lost its worker {retries + 1} times; "
                                   f"giving up") from None
            except ray.exceptions.RayTaskError as e:  # our error, raised in a worker: as is
                if isinstance(e.cause, QEngineError):
                    raise e.cause from None
                raise
            yield index, result
    finally:
        for ref in refs:  # left over after an error or Ctrl-C
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _call_in_worker_ray(func: Callable, shared, item):
    from ..runtime.interpreter import thread_limit

    with thread_limit(1):
        return func(shared, item)


def _connect(ray, address: str | None, workers: int | None) -> bool:
    """Join the cluster at `address`, or start a local instance with `workers` CPUs; True if
    this call started Ray (and so must stop it)."""
    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    else:
        ray.init(num_cpus=workers or cores(), include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False, object_store_memory=200 * 2 ** 20)
    return True


def _check_reachable(address: str) -> None:
    """Ray would retry an unreachable address for minutes; a TCP connect answers in seconds."""
    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise QEngineError(f"Ray address {address!r} must be HOST:PORT (or ray://HOST:PORT)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise QEngineError(f"cannot reach the Ray cluster at {address}: "
                           f"{e.strerror or e}") from None
