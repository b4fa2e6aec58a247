"""A model's first run on an empty kernel cache, compiled on every core.

Numba compiles in one thread per process, and a cold model spends seconds there (an int8
pose_landmark_full ~6 s, float ones more). `compiling_on_all_cores` shares that between the
cores: the model's ops are grouped into kinds (op type and dtypes: ops that share kernels),
and this process and one helper process per other core (`python -m
qengine.runtime.precompile`) each take the next kind nobody has claimed (an O_EXCL file per
kind) and run its ops once on made-up inputs of the right shapes and dtypes, which compiles
their kernels (into the disk cache, from where this process loads the helpers' ones).

Helpers start while this process prepares its Interpreter, unless the model is marked in the
kernel cache's directory as compiled for these threads and arithmetic (a warm start costs one
stat). Ops with state or control flow (variables, hash tables, random ops, WHILE/IF/CALL) and
ops whose shapes depend on data are left to the real run; whatever this skips or an op
refuses to run on made-up data is compiled by the real run as before, so it changes no
result. QENGINE_COMPILE_HELPERS=0 turns it off.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..ir import numpy_dtype
from .registry import op_key

# modules whose ops touch the interpreter's state or run subgraphs: never run on made-up data
_STATEFUL_MODULES = {f"qengine.ops.{name}" for name in (
    "call", "control_flow", "hashtable", "random_ops", "sequence", "variables")}
HELPER_TIMEOUT_S = 600  # a helper's kind unfinished after this is left to the real run


class compiling_on_all_cores:  # (lower case: used as a function, in a `with`)
    """`with compiling_on_all_cores(path, threads, arithmetic) as first:` starts the helpers
    (unless the model is marked as compiled, or there is one core, or
    QENGINE_COMPILE_HELPERS=0), so that they load while the caller prepares its
    Interpreter; `first.take(interpreter)` then compiles alongside them. Leaving the block
    waits for the helpers that took a kind and stops the others."""

    def __init__(self, model_path, threads: int | None, arithmetic: str, enabled: bool = True):
        self.threads = max(1, int(threads or 1))  # as the Interpreter counts them
        self.claims: Path | None = None
        self.helpers: list[subprocess.Popen] = []
        self.marker = _marker(model_path, self.threads, arithmetic)
        if not enabled or self.marker is None or self.marker.exists() or _cores() < 2 or \
                os.environ.get("QENGINE_COMPILE_HELPERS", "1") == "0":
            return
        try:
            self.claims = Path(tempfile.mkdtemp(prefix="qengine-compile-"))
        except OSError:  # no writable temporary directory: compile here alone
            return
        command = [sys.executable, "-m", "qengine.runtime.precompile", str(model_path),
                   str(self.claims), str(self.threads), arithmetic]
        for _ in range(_cores() - 1):
            try:
                self.helpers.append(subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))
            except OSError:
                break

    def __enter__(self):
        return self

    def take(self, interpreter) -> None:
        """Compile the kinds no helper has taken, then mark the model as compiled."""
        if self.claims is None:
            return
        plan = interpreter._plan(0, fused=True)
        take_kinds(plan, op_kinds(plan), self.claims, self.threads)
        self._finish()
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
        except OSError:
            pass  # a read-only cache: the next start does this again

    def __exit__(self, error_type, *error) -> None:
        self._finish(stop_all=error_type is not None)  # an error or Ctrl-C: stop them all

    def _finish(self, stop_all: bool = False) -> None:
        """Wait until the helpers' kinds are compiled (not for their exit: a helper still
        starting up has claimed nothing and is not needed), then stop them."""
        if self.claims is None:
            return
        deadline = time.monotonic() + HELPER_TIMEOUT_S
        while not stop_all and time.monotonic() < deadline:
            busy = _unfinished_claims(self.claims)
            if not any(h.pid in busy and h.poll() is None for h in self.helpers):
                break
            time.sleep(0.005)
        for helper in self.helpers:
            helper.kill()
            helper.wait()
        shutil.rmtree(self.claims, ignore_errors=True)
        self.claims, self.helpers = None, []


def prepare_on_all_cores(model, model_path, *, num_threads: int | None, arithmetic: str,
                         helpers: bool = True, **options):
    """Interpreter(model, num_threads=..., arithmetic=..., **options), its kernels compiled on
    every core (`compiling_on_all_cores` on the file it was loaded from; helpers=False: here
    alone, lazily, as without this module)."""
    from . import Interpreter

    with compiling_on_all_cores(model_path, num_threads, arithmetic, helpers) as first:
        interpreter = Interpreter(model, num_threads=num_threads, arithmetic=arithmetic,
                                  **options)
        first.take(interpreter)
    return interpreter


def op_kinds(plan) -> list[list[int]]:
    """The indices of the plan's runnable ops, grouped by op type and dtypes: the kinds of
    windowed ops (convolutions, pools: options with a stride) first, then the others, each in
    the order of their first op (the same list in every process: claims are by position).

    Heaviest first, so that the process left compiling last has a light kind. The windowed
    kinds take most of a cold start (int8 pose_landmark_full on 2 cores: CONV_2D 2.2 s,
    DEPTHWISE_CONV_2D 2.2 s and MAX_POOL_2D 1.3 s of compiling, the next 0.26 s): in model
    order the helper, starting ~0.5 s after this process, took MAX_POOL_2D after
    DEPTHWISE_CONV_2D and ran 1.1 s alone at the end (5.0 s in all)."""
    groups: dict[tuple, list[int]] = {}
    for index, (op, step) in enumerate(zip(plan.subgraph.operators, plan.steps)):
        if _runnable(op, step):
            key = (op_key(op), tuple(None if t is None else t.dtype for t in op.inputs),
                   tuple(None if t is None else t.dtype for t in op.outputs))
            groups.setdefault(key, []).append(index)
    ops = plan.subgraph.operators
    return sorted(groups.values(),
                  key=lambda kind: getattr(ops[kind[0]].options, "strideW", None) is None)


def take_kinds(plan, kinds: list[list[int]], claims: Path, threads: int) -> None:
    """Run each kind nobody has claimed yet in `claims`, claiming it first."""
    from qengine.kernels import threads as pool

    from .interpreter import thread_limit

    shapes = _slot_shapes(plan)
    saved = pool._OtherProcesses.enabled
    pool._OtherProcesses.enabled = False  # split as on a quiet machine: the helpers are busy
    try:
        with thread_limit(threads):
            for number, indices in enumerate(kinds):
                if _claim(claims, number):
                    for index in indices:
                        _run_once(plan, index, shapes)
                    _mark_done(claims, number)
    finally:
        pool._OtherProcesses.enabled = saved


def _runnable(op, step) -> bool:
    if step.prepared is None or step.folded or not step.static:
        return False
    from .registry import lookup

    prepare = lookup(op)
    if prepare is None or _defined_in(prepare) in _STATEFUL_MODULES:
        return False
    dtypes = {t.dtype for t in (*op.inputs, *op.outputs) if t is not None}
    return not dtypes & {"resource", "variant", "string"}


def _defined_in(prepare) -> str:
    """The module of an op's prepare function (registered ops: their OpDef's run_prepare)."""
    definition = getattr(prepare, "__self__", None)
    if definition is not None:
        prepare = definition.prepare or definition.shared
    return getattr(prepare, "__module__", "")


def _slot_shapes(plan) -> dict[int, tuple]:
    """The prepared shape of every graph input and op output, by tensor slot."""
    shapes = {plan.slot[id(t)]: tuple(t.shape) for t in plan.subgraph.inputs}
    for op, step in zip(plan.subgraph.operators, plan.steps):
        if step.prepared is not None:
            for t, spec in zip(op.outputs, step.prepared.outputs):
                if t is not None and spec.shape is not None:
                    shapes[plan.slot[id(t)]] = tuple(spec.shape)
    return shapes


def made_up_inputs(plan, index: int, shapes: dict[int, tuple]) -> list | None:
    """Op `index`'s inputs: constants as they are, the rest made up in the tensor's dtype and
    prepared shape (floats in [0, 1), 8/16-bit integers over their range, other integers 0:
    indices and sizes stay valid); None if a shape is unknown. Made per op, so that memory
    holds one op's tensors at a time."""
    rng = np.random.default_rng(index)
    arrays = []
    for slot in plan.in_slots[index]:
        value = None if slot < 0 else plan.constants.get(slot, plan.folded.get(slot))
        if slot >= 0 and value is None:
            if slot not in shapes:
                return None
            value = _made_up(numpy_dtype(plan.tensors[slot].dtype), shapes[slot], rng)
        arrays.append(value)
    return arrays


def _made_up(dtype: np.dtype, shape: tuple, rng) -> np.ndarray:
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if dtype in (np.int8, np.uint8, np.int16):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    return np.zeros(shape, dtype)


def _run_once(plan, index: int, shapes: dict[int, tuple]) -> None:
    arrays = made_up_inputs(plan, index, shapes)
    if arrays is None:
        return
    try:
        plan.steps[index].prepared.run(*arrays)
    except Exception:  # noqa: BLE001, S110 - made-up data an op refuses: the real run compiles it
        pass


def _claim(claims: Path, number: int) -> bool:
    """Create claims/number holding this process's pid, unless it exists."""
    try:
        fd = os.open(claims / str(number), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except OSError:  # taken, or the directory is gone (the main process finished)
        return False
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
    return True


def _mark_done(claims: Path, number: int) -> None:
    try:
        (claims / f"{number}.done").touch()
    except OSError:  # the main process gave up waiting and removed the directory
        pass


def _unfinished_claims(claims: Path) -> set[int]:
    """The pids of the processes that claimed a kind and have not finished it."""
    pids = set()
    for claim in claims.glob("[0-9]*"):
        if claim.suffix != ".done" and not claim.with_name(f"{claim.name}.done").exists():
            try:
                pids.add(int(claim.read_text() or 0))
            except (OSError, ValueError):
                pass
    return pids


def _marker(model_path, threads: int, arithmetic: str) -> Path | None:
    """The file that says this model (contents, threads, arithmetic) was compiled for the
    kernel cache in use (its directory changes with every kernel source), or None when the
    model is not a regular file or the cache cannot be written."""
    from qengine.kernels.jit import cache_dir

    path, cache = Path(model_path), Path(cache_dir())
    if not path.is_file():  # a pipe or device: read once already, helpers could not load it
        return None
    if not os.access(cache, os.W_OK):  # helpers could not hand their kernels over
        return None
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    except OSError:
        return None
    return cache / "compiled-models" / f"{digest}-{threads}t-{arithmetic}"


def _cores() -> int:
    from qengine.kernels.threads import CORES

    return CORES


def _helper_main(argv: list[str]) -> int:
    """`python -m qengine.runtime.precompile MODEL CLAIMS THREADS ARITHMETIC`."""
    model_path, claims, threads, arithmetic = argv
    from . import Interpreter

    interpreter = Interpreter(model_path, num_threads=int(threads), arithmetic=arithmetic)
    plan = interpreter._plan(0, fused=True)
    take_kinds(plan, op_kinds(plan), Path(claims), interpreter.num_threads)
    return 0


if __name__ == "__main__":
    sys.exit(_helper_main(sys.argv[1:]))
