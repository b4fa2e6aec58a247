"""Calibration: run the float graph over representative data and record activation statistics.

Observers only record. `choose_qparams` is the one function that turns a range into a scale and
zero point; every mode and every calibrator goes through it. Observers merge (`a.merge(b)`) so
calibration can be split across processes and combined afterwards.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import InputError
from .ir import Model, Tensor, numpy_dtype
from .observers import OBSERVERS, MinMaxObserver
from .qparams import choose_qparams  # noqa: F401  (the README's name; defined in qparams)

# ---------------------------------------------------------------------------------------------
# feeding data


def iterate_samples(model: Model, data) -> Iterator[list[np.ndarray]]:
    """Yield one list of input arrays (batch 1) per sample.

    `data`: an array with samples along axis 0 (single-input models); a dict of such arrays
    keyed by input (or signature input) name; or an iterable of samples, each an array, a list in
    input order or a dict.
    """
    inputs = model.main.inputs
    if isinstance(data, np.ndarray) or (isinstance(data, dict) and data and all(
            isinstance(v, np.ndarray) for v in data.values())):
        columns = _columns(model, data)
        count = {c.shape[0] for c in columns}
        if len(count) != 1:
            raise InputError(f"calibration arrays have different sample counts: {sorted(count)}")
        for i in range(count.pop()):
            yield [_as_input(t, c[i]) for t, c in zip(inputs, columns)]
        return
    for sample in data:
        if isinstance(sample, dict):
            columns = _columns(model, {k: np.asarray(v)[None] for k, v in sample.items()})
            yield [_as_input(t, c[0]) for t, c in zip(inputs, columns)]
        else:
            parts = list(sample) if isinstance(sample, (list, tuple)) else [sample]
            if len(parts) != len(inputs):
                raise InputError(f"a calibration sample has {len(parts)} arrays; the model has "
                                 f"{len(inputs)} inputs")
            yield [_as_input(t, np.asarray(p)) for t, p in zip(inputs, parts)]


def _columns(model: Model, data) -> list[np.ndarray]:
    inputs = model.main.inputs
    if isinstance(data, np.ndarray):
        if len(inputs) != 1:
            raise InputError(f"one calibration array given, but the model has {len(inputs)} "
                             f"inputs ({', '.join(t.name for t in inputs)}); pass a dict")
        return [data]
    aliases = {name: t for sig in model.signatures for name, t in sig.inputs.items()}
    by_tensor = {}
    for key, value in data.items():
        tensor = aliases.get(key) or next((t for t in inputs if t.name == key), None)
        if tensor is None:
            raise InputError(f"calibration data key {key!r} is not an input; inputs are "
                             f"{', '.join(repr(t.name) for t in inputs)}")
        by_tensor[id(tensor)] = np.asarray(value)
    missing = [t.name for t in inputs if id(t) not in by_tensor]
    if missing:
        raise InputError(f"calibration data has no values for input {missing[0]!r}")
    return [by_tensor[id(t)] for t in inputs]


def _as_input(t: Tensor, sample: np.ndarray) -> np.ndarray:
    """One sample with a batch dimension of 1 added if the model's input has one more rank."""
    sample = np.asarray(sample)
    if sample.ndim == len(t.shape) - 1:
        sample = sample[None]
    want = numpy_dtype(t.dtype)
    if sample.dtype != want:
        if want.kind == "f" and sample.dtype.kind in "fiu":
            sample = sample.astype(want)
        else:
            raise InputError(f"calibration data for {t.name!r} is {sample.dtype}, the input is "
                             f"{t.dtype}")
    signature = t.shape_signature or t.shape
    if sample.ndim != len(t.shape) or any(d != s and f != -1 for d, s, f in
                                          zip(sample.shape, t.shape, signature)):
        raise InputError(f"calibration sample for {t.name!r} has shape {sample.shape}, the "
                         f"input expects {tuple(t.shape)}")
    if want.kind == "f" and not np.all(np.isfinite(sample)):
        raise InputError(f"calibration data for {t.name!r} contains NaN or Inf")
    return sample


# ---------------------------------------------------------------------------------------------
# calibration


def calibrate(model: Model, data, observer: str = "minmax", quiet: bool = False,
              batch_size: int = 4, observer_for=None,
              workers: int | None = None) -> dict[str, MinMaxObserver]:
    """Observers for every float tensor the graph computes (and its inputs), keyed by name.

    `observer` names the calibrator (or is a factory); `observer_for(tensor_name)`, if given,
    returns a new observer for that tensor and overrides it (per-tensor calibrators).
    `workers` (default: one per core) threads run the float graph on different batches, each
    with one-thread kernels; the observers still see the batches one by one, in order, so every
    calibrator (including the order-dependent moving average) records what one thread would.
    """
    if isinstance(observer, str) and observer not in OBSERVERS:
        raise InputError(f"unknown calibrator {observer!r}; choose from "
                         f"{', '.join(sorted(OBSERVERS))}")
    factory = OBSERVERS[observer] if isinstance(observer, str) else observer
    make = observer_for or (lambda name: factory())
    samples = list(iterate_samples(model, data))
    if not samples:
        raise InputError("the calibration dataset is empty")
    float_names = {t.name for t in model.main.all_tensors()
                   if t.dtype == "float32" and not t.is_constant}
    stats: dict[str, object] = {}
    progress = Progress(len(samples), quiet)
    # a stateful model (resource or variable tensors) sees the samples one by one, in order,
    # through one interpreter: its state carries from each sample to the next
    if _is_stateful(model):
        workers, batch_size = 1, 1
    def observe(name: str, value: np.ndarray, internal: bool = False) -> None:
        if name in float_names or internal:
            if name not in stats:
                stats[name] = make(name)
            stats[name].update(value)

    # values ops compute inside a run (an LSTM's cell state at every step, its gates before
    # layer norm) are observed as they occur, before the run's kept values
    on_state = (lambda name, values: observe(name, values, internal=True)) \
        if _is_stateful(model) else None
    inner_names = {(index, t.name) for index, sub in enumerate(model.subgraphs[1:], start=1)
                   for t in sub.all_tensors() if t.dtype == "float32" and not t.is_constant}
    for batch, values, inner in _run_batches(
            model, list(stack_batches(model, samples, batch_size)),
            workers or os.cpu_count() or 1, on_state):
        for name, value in values.items():
            observe(name, value)
        for index, name, value in inner:  # subgraph runs, in the order they happened
            if (index, name) in inner_names:
                observe(subgraph_stat_name(index, name), value, internal=True)
        progress.advance(batch[0].shape[0])
    progress.close()
    return stats


def subgraph_stat_name(index: int, name: str) -> str:
    """The statistics key of tensor `name` of subgraph `index` (WHILE cond/body, IF branch):
    the main graph's tensors keep their names; a subgraph's are qualified, since tensor names
    repeat across subgraphs. Its observer has seen the tensor at every run of the subgraph
    (every loop iteration), over all samples."""
    return name if index == 0 else f"{name}@subgraph{index}"


def _observed_run(interpreter, batch: list) -> tuple[dict, list]:
    """One run: every main-graph tensor's value by name, and (subgraph index, tensor name,
    value) for each float tensor of each subgraph run the main graph made, in order."""
    inner: list = []

    def record(index: int, tensors: list, values: list) -> None:
        inner.extend((index, t.name, v) for t, v in zip(tensors, values)
                     if v is not None and t.dtype == "float32" and not t.is_constant)

    interpreter.subgraph_observer = record if len(interpreter.model.subgraphs) > 1 else None
    try:
        return interpreter.run(batch, keep=True), inner
    finally:
        interpreter.subgraph_observer = None


def _is_stateful(model: Model) -> bool:
    return any(op.type in ("VAR_HANDLE", "CALL_ONCE") for s in model.subgraphs
               for op in s.operators) or any(t.is_variable for t in model.main.all_tensors())


def _run_batches(model: Model, batches: list, workers: int,
                 on_state=None) -> Iterator[tuple[list, dict, list]]:
    """(batch, every tensor's value, the subgraphs' values: see _observed_run) for each
    batch, in order.

    Data parallel rather than parallel kernels: with several threads per op, the BLAS and Numba
    thread pools both spin while idle and fight over the cores (on 2 cores a batch-1 run took
    ~10x longer). So BLAS is held at one thread for the whole call and each worker thread has
    its own one-thread interpreter; matmuls and kernels release the GIL. At most `workers`
    batches are in flight ahead of the observers, which bounds memory.
    """
    from .runtime import Interpreter
    from .runtime.interpreter import thread_limit

    first = Interpreter(model, num_threads=1)
    first.resources.state_observer = on_state  # stateful models run on `first` only
    with thread_limit(1):
        if workers < 2 or len(batches) < 2:
            for batch in batches:
                yield batch, *_observed_run(first, batch)
            return
        yield batches[0], *_observed_run(first, batches[0])  # starts Numba's threading layer
        if not _threads_may_launch_kernels():
            for batch in batches[1:]:
                yield batch, *_observed_run(first, batch)
            return
        local = threading.local()

        def run(batch):
            if not hasattr(local, "interpreter"):
                local.interpreter = Interpreter(model, num_threads=1)
            return _observed_run(local.interpreter, batch)

        with ThreadPoolExecutor(workers) as pool:
            pending = collections.deque()
            for batch in batches[1:]:
                pending.append((batch, pool.submit(run, batch)))
                if len(pending) > workers:
                    done, future = pending.popleft()
                    yield done, *future.result()
            while pending:
                done, future = pending.popleft()
                yield done, *future.result()


def _threads_may_launch_kernels() -> bool:
    """Whether parallel Numba kernels may run from several threads at once: not with the
    'workqueue' threading layer, which is not thread-safe."""
    numba = sys.modules.get("numba")
    if numba is None:
        return True
    try:
        return numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel kernel has run yet: the layer is chosen at the first
        return False


def stack_batches(model: Model, samples: list[list[np.ndarray]], size: int) -> Iterable[list]:
    """Stack samples along the batch axis when every input's batch dimension is dynamic."""
    dynamic = all((t.shape_signature or t.shape)[:1] == (-1,) for t in model.main.inputs)
    if not dynamic or size == 1:
        yield from samples
        return
    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        yield [np.concatenate([s[i] for s in chunk]) for i in range(len(chunk[0]))]


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, quiet: bool, label: str = "calibrating"):
        self.total, self.done, self.label = total, 0, label
        self.enabled = not quiet and sys.stderr.isatty() and total > 1
        self.start = time.perf_counter()

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            filled = int(30 * self.done / self.total)
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                             f"{self.done}/{self.total} ({rate:.1f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")

