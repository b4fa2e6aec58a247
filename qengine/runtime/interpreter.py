"""The reference interpreter: prepare every op once, then run the kernels in order.

Prepare walks the graph with concrete input shapes: each op's prepare function validates its
inputs and options, precomputes what its kernel needs and reports its output shapes. Ops whose
inputs are all constant (shape arithmetic, DEQUANTIZE of float16 weights, DENSIFY) are run right
there and become constants, which is what TFLite does for them too. When an input shape changes
(a new batch size) or an op's output shape depends on data, the affected ops are prepared again
before they run.

Runs that keep no intermediate tensor (`keep=False`, the usual case) go through a rewritten copy
of each subgraph (runtime/fusion.py: activations and PADs folded into their neighbours, the same
values); runs with `keep=True` go through the graph as written, so every tensor of the file is
there to see. Each has its own plan, prepared on first use.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import strings
from ..errors import (
    InputError,
    InvalidModelError,
    QEngineError,
    ShapeError,
    UnsupportedOpsError,
)
from ..flatbuffer_io import load
from ..ir import Model, Subgraph, Tensor, numpy_dtype
from .fusion import folded_ops, fuse
from .registry import OpContext, Prepared, Spec, lookup, op_key
from .resources import Resources
from .splits import SplitChoice

MAX_ELEMENTS = 1 << 31  # larger intermediate tensors mean a corrupt or hostile model
# A WHILE loop running longer is taken to be one that never ends (an LSTM over a million
# steps is not a model anyone runs here); Interpreter(max_iterations=...) changes it.
DEFAULT_MAX_ITERATIONS = 1 << 20


@dataclass
class _Step:
    prepared: Prepared | None = None
    key: tuple | None = None  # the input shapes it was prepared for
    folded: bool = False  # outputs were computed at prepare time
    # prepared by the static pass, every input's shape fixed there: its input shapes cannot
    # change between runs (graph inputs re-prepare the plan, and every producer's output is
    # checked against its spec), so run() skips comparing them
    static: bool = False


class _Plan:
    """One subgraph, prepared for one set of input shapes.

    A plan is not changed once prepared, except the steps whose shapes depend on data
    (`dynamic`), which runs prepare under the plan's lock: new input shapes make a new plan
    (`Interpreter._plan`), so runs in other threads keep the plan they started with.
    """

    def __init__(self, interpreter: Interpreter, subgraph: Subgraph, like: _Plan | None = None,
                 origin: list[int] | None = None):
        self.interpreter = interpreter
        self.subgraph = subgraph
        # the index in the file of each op (the subgraph may be fuse()'s rewrite): for messages
        self.origin = origin if origin is not None else list(range(len(subgraph.operators)))
        self.steps = [_Step() for _ in subgraph.operators]
        self.folded: dict[int, np.ndarray] = {}
        self.input_shapes: list[tuple[int, ...]] | None = None
        self.dynamic = False  # some step is prepared while running
        self.lock = threading.RLock()
        self.splits = SplitChoice()  # on several threads: split the layers or not
        self.static_tables: tuple | None = None  # made on the first `_run_static`
        if like is not None:  # the same subgraph for other shapes: share its tables
            for name in ("tensors", "slot", "constants", "dead_after", "in_slots", "out_slots",
                         "op_time"):
                setattr(self, name, getattr(like, name))
            return
        self.tensors = subgraph.all_tensors()
        self.slot = {id(t): i for i, t in enumerate(self.tensors)}
        self.constants = {self.slot[id(t)]: _constant_value(t) for t in self.tensors
                          if t.is_constant}
        self.dead_after = _last_uses(subgraph, self.slot)
        # slots of each op's inputs and outputs (-1: an omitted optional tensor)
        self.in_slots = [tuple(-1 if t is None else self.slot[id(t)] for t in op.inputs)
                         for op in subgraph.operators]
        self.out_slots = [tuple(-1 if t is None else self.slot[id(t)] for t in op.outputs)
                          for op in subgraph.operators]
        self.op_time: dict[str, float] = {}

    def spec_of(self, t: Tensor, value=None, shape=None) -> Spec:
        slot = self.slot[id(t)]
        const = self.constants.get(slot, self.folded.get(slot))
        if const is not None:
            value = const
        if shape is None:
            shape = value.shape if value is not None else t.shape
        return Spec(tuple(shape), t.dtype, value, t.quantization, t.name)

    # -- prepare -------------------------------------------------------------------------------

    def prepare(self, input_shapes: list[tuple[int, ...]]) -> None:
        """Static pass from the graph inputs' shapes; stops where shapes depend on data."""
        self.input_shapes = [tuple(s) for s in input_shapes]
        known: dict[int, Spec] = {}
        for t, shape in zip(self.subgraph.inputs, input_shapes):
            known[self.slot[id(t)]] = self.spec_of(t, shape=shape)
        for index, op in enumerate(self.subgraph.operators):
            specs = []
            for t in op.inputs:
                if t is None:
                    specs.append(None)
                elif self.slot[id(t)] in known:
                    specs.append(known[self.slot[id(t)]])
                elif t.is_constant or self.slot[id(t)] in self.folded:
                    specs.append(self.spec_of(t))
                else:
                    specs.append(None if t.is_variable else False)
            if any(s is False for s in specs):
                continue  # an input's shape is only known at run time
            step = self._prepare_op(index, specs)
            step.static = True
            for t, spec in zip(op.outputs, step.prepared.outputs):
                if t is not None and spec.shape is not None:
                    known[self.slot[id(t)]] = spec
        self.dynamic = not all(step.static or step.folded for step in self.steps)

    def _prepare_op(self, index: int, specs: list[Spec | None]) -> _Step:
        op = self.subgraph.operators[index]
        ctx = OpContext(op, self.origin[index], specs, self.interpreter,
                        self.interpreter.arithmetic, self.interpreter.num_threads)
        prepare = lookup(op)
        try:
            prepared = prepare(ctx)
        except QEngineError:
            raise
        except (ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError) as e:
            # numpy rejecting a shape or option the op's checks let through: still the model's fault
            raise ctx.invalid(f"{type(e).__name__}: {e}") from e
        if len(prepared.outputs) != len(op.outputs):
            raise ctx.invalid(f"has {len(op.outputs)} outputs, the op produces "
                              f"{len(prepared.outputs)}")
        for spec in prepared.outputs:
            if spec.shape is not None and np.prod(spec.shape, dtype=np.float64) > MAX_ELEMENTS:
                raise ctx.invalid(f"output {spec.name!r} would have shape {spec.shape}, more "
                                  f"than {MAX_ELEMENTS} elements")
        step = self.steps[index]
        step.prepared, step.key, step.folded = prepared, _shapes_key(specs), False
        if prepared.foldable and op.inputs and all(
                s is None or s.value is not None for s in specs):
            values = _as_tuple(prepared.run(*[None if s is None else s.value for s in specs]))
            for t, spec, value in zip(op.outputs, prepared.outputs, values):
                _check_output(ctx, spec, value)
                if t is not None:
                    self.folded[self.slot[id(t)]] = value
                    spec.value, spec.shape = value, value.shape
            step.folded = True
        return step

    # -- run -----------------------------------------------------------------------------------

    def run(self, arrays: list[np.ndarray], profile: bool = False, keep: bool = False) -> list:
        """Every tensor's value by slot; with keep=False, a tensor no later op reads is dropped
        once read (None), so its memory is reused by the next outputs instead of new pages."""
        if not (profile or keep or self.dynamic):
            return self._run_static(arrays)
        values = self._known_values()
        for t, array in zip(self.subgraph.inputs, arrays):
            values[self.slot[id(t)]] = array
        for index, step in enumerate(self.steps):
            if step.folded:
                continue
            inputs = [None if slot < 0 else values[slot] for slot in self.in_slots[index]]
            if not step.static and (step.prepared is None
                                    or step.key != _array_shapes_key(inputs)):
                self._prepare_at_run(index, self.subgraph.operators[index], inputs)
                if step.folded:
                    for slot in self.out_slots[index]:
                        values[slot] = self.folded[slot]
                    continue
            prepared = step.prepared
            if profile:
                start = time.perf_counter()
                outputs = prepared.run(*inputs)
                op = self.subgraph.operators[index]
                name = "+".join([op_key(op), *folded_ops(op)])
                self.op_time[name] = self.op_time.get(name, 0.0) + time.perf_counter() - start
            else:
                outputs = prepared.run(*inputs)
            self._store(values, index, self.out_slots[index], prepared.outputs, outputs)
            if not keep:
                for slot in self.dead_after[index]:
                    values[slot] = None
        return values

    def _run_static(self, arrays: list[np.ndarray]) -> list:
        """`run` of a plan every step of which was prepared ahead, neither profiled nor
        keeping its tensors: the same steps from tables made once (`_static_tables`), as a
        small model's ~50-90 ops cost ~4 us each of Python around their kernels. A one-output
        step is stored inline (0.8 -> 0.5 us a step with the ops' own time left out)."""
        if self.static_tables is None:
            self.static_tables = self._static_tables()
        values, steps = self.static_tables
        values = values.copy()  # the constants' and folded tensors' slots filled in
        for t, array in zip(self.subgraph.inputs, arrays):
            values[self.slot[id(t)]] = array
        for run, in_slots, out_slot, shape, dead, index in steps:
            outputs = run(*[values[slot] for slot in in_slots])
            if out_slot is None:
                self._store(values, index, self.out_slots[index],
                            self.steps[index].prepared.outputs, outputs)
            else:
                if outputs.__class__ is tuple:
                    outputs = outputs[0]
                if outputs.shape != shape:
                    self._store(values, index, (out_slot,),
                                self.steps[index].prepared.outputs, (outputs,))
                values[out_slot] = outputs
            for slot in dead:
                values[slot] = None
        return values

    def _static_tables(self) -> tuple[list, list]:
        """(`_known_values()` and two more slots: one that stays None, read for an absent input,
        and one written with an output nothing reads; one (run, input slots, output slot,
        output shape, slots dead after it, op index) per step that runs. A step with one output
        names its slot and announced shape; any other has output slot None and is stored by
        `_store`. (Callers index values by slot; the two extra slots are past the tensors'.)"""
        values = self._known_values()
        absent, unread = len(values), len(values) + 1
        values += [None, None]
        steps = []
        for index, step in enumerate(self.steps):
            if step.folded:
                continue
            slots, specs = self.out_slots[index], step.prepared.outputs
            one = len(slots) == 1 and len(specs) == 1 and specs[0].shape is not None
            out_slot = (unread if slots[0] < 0 else slots[0]) if one else None
            steps.append((step.prepared.run, tuple(absent if s < 0 else s
                                                   for s in self.in_slots[index]),
                          out_slot, tuple(specs[0].shape) if one else None,
                          tuple(self.dead_after[index]), index))
        return values, steps

    def _known_values(self) -> list:
        """A run's values by slot before it starts: the constants and folded tensors."""
        values: list = [None] * len(self.tensors)
        for slot, value in self.constants.items():
            values[slot] = value
        for slot, value in self.folded.items():
            values[slot] = value
        return values

    def _store(self, values: list, index: int, slots, specs, outputs) -> None:
        """Op `index`'s outputs into their slots (-1: unused), each checked against the shape
        its prepare announced."""
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        for slot, spec, value in zip(slots, specs, outputs):
            if slot < 0:
                continue
            if spec.shape is not None and value.shape != spec.shape:
                _check_output(OpContext(self.subgraph.operators[index], self.origin[index], []),
                              spec, value)
            values[slot] = value

    def _prepare_at_run(self, index: int, op, inputs: list) -> None:
        specs = []
        for t, array in zip(op.inputs, inputs):
            if t is None:
                specs.append(None)
            elif array is None:
                raise InvalidModelError(
                    f"op {self.origin[index]} {op.opcode.display} reads {t.name!r}, which "
                    f"holds no value when the op runs")
            else:
                specs.append(self.spec_of(t, shape=array.shape))
        self._prepare_op(index, specs)


class Interpreter:
    """Runs a TFLite model with qengine's kernels.

    `Interpreter(model_or_path, num_threads=None, arithmetic="ref")`; `run(inputs, keep=False)`
    returns outputs keyed by output tensor name (with `keep=True`, every computed tensor, and
    each resource variable's value after the run under its VAR_HANDLE tensor's name).
    Resource variables keep their values from one `run` to the next (streaming models);
    `reset_variables()` returns to the state before the first run. A WHILE loop that runs
    more than `max_iterations` times is an error, not a hang. Several threads may call `run`
    at once (models with resource variables share their state between them); parallel
    kernels then share the cores through `kernels/threads.py`'s pool.
    """

    def __init__(self, model, *, num_threads: int | None = None, arithmetic: str = "ref",
                 max_iterations: int = DEFAULT_MAX_ITERATIONS):
        if isinstance(model, (str, Path, bytes, bytearray, memoryview)):
            model = load(model)
        if not isinstance(model, Model):
            raise TypeError(f"expected a Model, path or bytes, got {type(model).__name__}")
        if arithmetic not in ("ref", "xnnpack"):
            raise ValueError(f"arithmetic must be 'ref' or 'xnnpack', not {arithmetic!r}")
        model.verify()
        self.model = model
        self.arithmetic = arithmetic
        self.notes: list[str] = []  # what ops told the user (OpContext.note), once each
        # One thread unless asked: Numba's and BLAS's worker pools spin while idle, and on a
        # busy machine a multi-threaded default is slower, not faster (like TFLite's default).
        self.num_threads = max(1, int(num_threads or 1))
        if int(max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations = int(max_iterations)
        self.resources = Resources()
        # called as subgraph_observer(index, tensors, values) after every run of a subgraph
        # other than the main graph (WHILE cond/body at each iteration, IF branches, CALL,
        # CALL_ONCE), with every tensor's value kept: calibration records bodies through it
        self.subgraph_observer = None
        _check_supported(model)
        self._plans: dict[int, _Plan] = {}  # per subgraph, the graph as written
        self._fused_plans: dict[int, _Plan] = {}  # per subgraph, fuse()'s rewrite (or the same)
        self._fused: dict[int, tuple[Subgraph, list[int]]] = {}
        self._prepare_lock = threading.RLock()
        try:  # prepare the main graph now so errors surface before anything runs
            self._plan(0, fused=True)
        except ShapeError:
            # Unless its inputs are dynamic: the sizes written in the file (often 1) may be
            # too small for the model, as TFLite allows until ResizeInputTensor; the first
            # run prepares again for the shapes it is given, and fails then if still invalid.
            if not any(-1 in (t.shape_signature or ()) for t in model.main.inputs):
                raise
            # (_plan stores a plan only once prepared: nothing to undo)

    # -- public API ----------------------------------------------------------------------------

    @property
    def inputs(self) -> list[Tensor]:
        return self.model.main.inputs

    @property
    def outputs(self) -> list[Tensor]:
        return self.model.main.outputs

    def run(self, inputs, keep: bool = False, profile: bool = False) -> dict[str, np.ndarray]:
        subgraph = self.model.main
        arrays = _bind_inputs(subgraph.inputs, inputs, self._signature_names(subgraph))
        with thread_limit(self.num_threads):
            plan, values = self._run_plan(0, arrays, profile, keep)
        if keep:
            kept = {t.name: v for t, v in zip(plan.tensors, values)
                    if v is not None and not t.is_constant and t.dtype != "resource"}
            kept.update(self._variables_by_handle(plan, values))
            return kept
        return {t.name: values[plan.slot[id(t)]] for t in subgraph.outputs}

    def variables(self) -> dict[str, np.ndarray]:
        """The current value of every assigned resource variable, keyed by its shared name."""
        return self.resources.variables()

    def reset_variables(self) -> None:
        """Forget every variable's value and rerun CALL_ONCE initializers on the next run."""
        self.resources.reset()

    def signature_runner(self, key: str | None = None):
        """A callable taking the signature's input names as keywords, returning its outputs."""
        signatures = self.model.signatures
        if not signatures:
            raise InputError("the model has no signatures; use Interpreter.run")
        if key is None:
            key = signatures[0].key
        for sig in signatures:
            if sig.key == key:
                return lambda **kwargs: self._run_signature(sig, kwargs)
        raise InputError(f"no signature {key!r}; the model has "
                         f"{', '.join(s.key for s in signatures)}")

    def run_subgraph(self, index: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run subgraph `index` on positional inputs (used by WHILE, IF, CALL_ONCE)."""
        observer = self.subgraph_observer
        plan, values = self._run_plan(index, list(arrays), keep=observer is not None)
        if observer is not None:
            observer(index, plan.tensors, values)
        return [values[plan.slot[id(t)]] for t in plan.subgraph.outputs]

    def run_op(self, index: int, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run op `index` of the main graph alone on the given values of its inputs.

        `inputs` maps input tensor names to arrays; constants come from the model. This is the
        research hook for per-op questions: feed an op the exact tensors another runtime (or
        the float model) saw, and compare what it computes.
        """
        plan = self._plan(0)
        op = plan.subgraph.operators[index]
        arrays = []
        for t in op.inputs:
            if t is None:
                arrays.append(None)
            elif t.name in inputs:
                arrays.append(np.asarray(inputs[t.name], dtype=numpy_dtype(t.dtype)))
            else:
                value = plan.constants.get(plan.slot[id(t)], plan.folded.get(plan.slot[id(t)]))
                if value is None:
                    raise InputError(f"op {index} {op.opcode.display} needs a value for "
                                     f"{t.name!r}")
                arrays.append(value)
        # values given for constants (e.g. a rewritten filter) replace the model's, in prepare too
        specs = [None if t is None else
                 Spec(a.shape, t.dtype, a if t.is_constant or plan.slot[id(t)] in plan.folded
                      else None, t.quantization, t.name)
                 for t, a in zip(op.inputs, arrays)]
        ctx = OpContext(op, index, specs, self, self.arithmetic, self.num_threads)
        prepared = lookup(op)(ctx)
        return list(_as_tuple(prepared.run(*arrays)))

    def op_times(self) -> dict[str, float]:
        """Seconds spent per op type on runs made with profile=True (main graph)."""
        times: dict[str, float] = {}
        for plan in {id(p): p for p in (self._plans.get(0), self._fused_plans.get(0))
                     if p is not None}.values():
            for name, seconds in plan.op_time.items():
                times[name] = times.get(name, 0.0) + seconds
        return times

    # -- internals -----------------------------------------------------------------------------

    def _plan(self, index: int, shapes=None, fused: bool = False) -> _Plan:
        """Subgraph `index`'s plan for these input shapes, of the graph as written or (fused)
        of fuse()'s rewrite; other shapes than the last make a new plan (sharing the old one's
        tables) rather than changing one a run may be using."""
        written = self.model.subgraphs[index]
        shapes = [tuple(s) for s in (shapes if shapes is not None else
                                     [t.shape for t in written.inputs])]
        plans = self._fused_plans if fused else self._plans
        plan = plans.get(index)
        if plan is not None and plan.input_shapes == shapes:
            return plan
        with self._prepare_lock:
            subgraph, origin = self._rewrite(index) if fused else (written, None)
            if subgraph is written:  # nothing fuses: one plan serves both kinds of run
                plans = self._plans
            plan = plans.get(index)
            if plan is None or plan.input_shapes != shapes:
                plan = _Plan(self, subgraph, like=plan, origin=origin)
                plan.prepare(shapes)
                plans[index] = plan
            if subgraph is written:
                self._fused_plans[index] = plan
        return plan

    def _rewrite(self, index: int) -> tuple[Subgraph, list[int]]:
        if index not in self._fused:
            self._fused[index] = fuse(self.model.subgraphs[index])
        return self._fused[index]

    def _run_plan(self, index: int, arrays: list, profile: bool = False,
                  keep: bool = False, fused: bool | None = None) -> tuple[_Plan, list]:
        """Run subgraph `index`; `fused` (default: not keep) picks fuse()'s rewrite."""
        fused = not keep if fused is None else fused
        plan = self._plan(index, [a.shape for a in arrays], fused)
        if index == 0 and self.num_threads > 1 and not keep:
            return plan, self._run_choosing_splits(plan, arrays, profile)
        return plan, self._run_locked(plan, arrays, profile, keep)

    def _run_locked(self, plan: _Plan, arrays: list, profile: bool, keep: bool) -> list:
        if plan.dynamic:  # its steps are prepared while it runs: one run at a time
            with plan.lock:
                return plan.run(arrays, profile, keep)
        return plan.run(arrays, profile, keep)

    def _run_choosing_splits(self, plan: _Plan, arrays: list, profile: bool) -> list:
        """The main graph on several threads, its layers split between them or not as the
        plan's first runs found faster (runtime/splits.py)."""
        from qengine.kernels.threads import claimed_run, on_this_thread

        split, timed = plan.splits.mode()
        start = time.perf_counter()
        if split:
            with claimed_run(self.num_threads):
                values = self._run_locked(plan, arrays, profile, False)
        else:
            with on_this_thread():
                values = self._run_locked(plan, arrays, profile, False)
        if timed and not profile:
            plan.splits.record(split, time.perf_counter() - start)
        return values

    def _variables_by_handle(self, plan: _Plan, values: list) -> dict[str, np.ndarray]:
        shown = {}
        for t, handle in zip(plan.tensors, values):
            if t.dtype == "resource" and handle is not None:
                value = self.resources.values.get(int(np.asarray(handle).reshape(-1)[0]))
                if value is not None:
                    shown[t.name] = value.copy()
        for tensor, value in self.resources.tensor_states.values():  # sequence ops' state
            shown[tensor.name] = value.copy()
        return shown

    def _signature_names(self, subgraph: Subgraph) -> dict[str, Tensor]:
        names = {}
        for sig in self.model.signatures:
            if sig.subgraph is subgraph:
                names.update(sig.inputs)
        return names

    def _run_signature(self, sig, kwargs) -> dict[str, np.ndarray]:
        index = next(i for i, s in enumerate(self.model.subgraphs) if s is sig.subgraph)
        unknown = set(kwargs) - set(sig.inputs)
        if unknown:
            raise InputError(f"signature {sig.key!r} has no input {sorted(unknown)[0]!r}; its "
                             f"inputs are {', '.join(sig.inputs)}")
        arrays = _bind_inputs(sig.subgraph.inputs, kwargs, sig.inputs)
        plan, values = self._run_plan(index, arrays)
        return {name: values[plan.slot[id(t)]] for name, t in sig.outputs.items()}


# ---------------------------------------------------------------------------------------------


def _last_uses(subgraph: Subgraph, slot: dict[int, int]) -> list[list[int]]:
    """Per op, the slots of computed tensors it is the last reader of (never a subgraph output,
    constant or variable)."""
    last = {}
    for index, op in enumerate(subgraph.operators):
        for t in op.inputs:
            if t is not None and not (t.is_constant or t.is_variable):
                last[slot[id(t)]] = index
    for t in subgraph.outputs:
        last.pop(slot[id(t)], None)
    dead: list[list[int]] = [[] for _ in subgraph.operators]
    for tensor_slot, index in last.items():
        dead[index].append(tensor_slot)
    return dead


# ---------------------------------------------------------------------------------------------


class thread_limit:  # (lower case: used as a function, `with thread_limit(n):`)
    """Run Numba kernels (prange) on at most n threads, and BLAS on one.

    BLAS's pool spins after each call and would fight qengine's own workers (and TFLite's, in
    the same process) for the cores, so BLAS calls are single-threaded and the float path
    splits its large matmuls itself. Numba's thread count is per calling thread; the BLAS limit
    is process-wide, so it is held while any run is inside (two user threads running
    interpreters at once), and lifted when the last one leaves. Numba is only touched if a
    kernel module loaded it and n > 1; BLAS is limited through threadpoolctl when that is
    installed. Entering and leaving cost ~3 us on one thread, ~6 us on more (a tiny model's
    whole run can be 30 us).
    """

    __slots__ = ("n", "noted", "previous")

    def __init__(self, n: int):
        self.n, self.previous, self.noted = n, None, None

    def __enter__(self):
        numba = sys.modules.get("numba")
        # on one thread no parallel region runs (every split and block stays on the caller:
        # kernels/threads.py), so Numba's count does not matter and is left alone (~3 us)
        if numba is not None and self.n > 1:
            wanted = min(self.n, numba.config.NUMBA_NUM_THREADS)
            current = numba.get_num_threads()
            if current != wanted:
                numba.set_num_threads(wanted)
                self.previous = current
            pool = sys.modules.get("qengine.kernels.threads")
            if pool is not None:  # the splits read the count there, not from Numba
                self.noted = pool.note_numba_threads(wanted)
        _hold_blas()
        return self

    def __exit__(self, *error) -> None:
        _release_blas()
        if self.noted is not None:
            sys.modules["qengine.kernels.threads"].note_numba_threads(self.noted)
            self.noted = None
        if self.previous is not None:
            sys.modules["numba"].set_num_threads(self.previous)
            self.previous = None


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries (scanning them is slow: do it once)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


@functools.lru_cache(maxsize=1)
def _blas_libraries() -> list:
    """threadpoolctl's controller of each loaded BLAS library (empty without threadpoolctl)."""
    controller = _blas_controller()
    return [] if controller is None else controller.select(user_api="blas").lib_controllers


def blas_is_limited() -> bool:
    """True when runs hold BLAS at one thread (threadpoolctl is installed), so the float path
    may split matmuls over its own pool without oversubscribing the cores."""
    return _blas_controller() is not None


_blas_lock = threading.Lock()
_blas_holders = 0  # runs inside thread_limit now, in any thread
_blas_saved: list[int] = []  # each library's thread count before the first of them


def _hold_blas() -> None:
    global _blas_holders, _blas_saved
    libraries = _blas_libraries()
    if not libraries:
        return
    with _blas_lock:
        if _blas_holders == 0:
            _blas_saved = [lib.num_threads for lib in libraries]
            for lib, n in zip(libraries, _blas_saved):
                if n != 1:
                    lib.set_num_threads(1)
        _blas_holders += 1


def _release_blas() -> None:
    global _blas_holders
    libraries = _blas_libraries()
    if not libraries:
        return
    with _blas_lock:
        _blas_holders -= 1
        if _blas_holders == 0:
            for lib, n in zip(libraries, _blas_saved):
                if n != 1:
                    lib.set_num_threads(n)


def unsupported_nodes(model: Model) -> list[tuple[str, str]]:
    """(op name, "op 3 NAME (output 'x')", with "subgraph 2 " before it outside the main
    graph) for every op with no kernel."""
    nodes = []
    for s_index, subgraph in enumerate(model.subgraphs):
        for index, op in enumerate(subgraph.operators):
            if lookup(op) is None:
                out = op.outputs[0].name if op.outputs and op.outputs[0] is not None else "?"
                where = f"op {index}" if s_index == 0 else f"subgraph {s_index} op {index}"
                nodes.append((op.opcode.display, f"{where} {op.opcode.display} (output {out!r})"))
    return nodes


def _check_supported(model: Model) -> None:
    """One line per op type without a kernel, with its count and first node; the full list is
    the error's `nodes` (CLI: --debug, or `qengine inspect --unsupported`)."""
    nodes = unsupported_nodes(model)
    if not nodes:
        return
    by_type: dict[str, list[str]] = {}
    for name, node in nodes:
        by_type.setdefault(name, []).append(node)
    if len(by_type) == 1:
        message = (f"{nodes[0][1]} has no qengine kernel ({len(nodes)} node(s) of this type); "
                   "register one with qengine.register_op(name, prepare)")
    else:
        message = (f"{len(by_type)} op types have no qengine kernel (`qengine inspect "
                   "--unsupported MODEL` lists every node; qengine.register_op(name, prepare) "
                   "adds a kernel):\n" + "\n".join(
                       f"  {name}: {len(found)} node(s), first {found[0]}"
                       for name, found in by_type.items()))
    raise UnsupportedOpsError(message, [node for _, node in nodes])


def _bind_inputs(tensors: list[Tensor], inputs, aliases: dict[str, Tensor]) -> list[np.ndarray]:
    """Accept one array, a list in input order, or a dict keyed by tensor or signature name."""
    if isinstance(inputs, dict):
        by_id = {id(t): None for t in tensors}
        for key, value in inputs.items():
            tensor = aliases.get(key) or next((t for t in tensors if t.name == key), None)
            if tensor is None:
                raise InputError(f"no input named {key!r}; inputs are "
                                 f"{', '.join(repr(t.name) for t in tensors)}")
            by_id[id(tensor)] = value
        arrays = [by_id[id(t)] for t in tensors]
    elif isinstance(inputs, (list, tuple)):
        arrays = list(inputs)
    else:
        arrays = [inputs]
    if len(arrays) != len(tensors):
        raise InputError(f"the model has {len(tensors)} inputs "
                         f"({', '.join(repr(t.name) for t in tensors)}), got {len(arrays)}")
    return [_check_input(t, a) for t, a in zip(tensors, arrays)]


def _check_input(t: Tensor, array) -> np.ndarray:
    if array is None:
        raise InputError(f"input {t.name!r} is missing ({_expected(t)})")
    if t.dtype == "string":
        array = strings.as_strings(t.name, array)  # an object array of bytes
    else:
        array = _with_dtype(t, np.asarray(array))
    signature = t.shape_signature or t.shape
    if len(array.shape) != len(t.shape) or any(
            d != s and fixed != -1 for d, s, fixed in zip(array.shape, t.shape, signature)):
        raise InputError(f"input {t.name!r} {_expected(t)}, got shape {tuple(array.shape)}")
    return np.require(array, requirements="C")  # (ascontiguousarray would make rank 0 rank 1)


def _expected(t: Tensor) -> str:
    """What an input error says the input should be (built only for the error: ~2 us)."""
    return f"expects shape {_shape_text(t)} {t.dtype}"


def _with_dtype(t: Tensor, array: np.ndarray) -> np.ndarray:
    want = numpy_dtype(t.dtype)
    if array.dtype == want:
        return array
    if want == np.float32 and array.dtype.kind == "f":
        return array.astype(np.float32)  # float64 from numpy is the common, harmless case
    raise InputError(f"input {t.name!r} {_expected(t)}, got dtype {array.dtype}")


def _shape_text(t: Tensor) -> str:
    signature = t.shape_signature or t.shape
    return "(" + ", ".join("None" if s == -1 else str(d) for d, s in zip(t.shape, signature)) \
        + ("," if len(t.shape) == 1 else "") + ")"


def _constant_value(t: Tensor) -> np.ndarray:
    value = t.data
    if t.dtype == "string" and value is not None:
        return strings.decode(t.buffer.data, t.shape, t.name)
    return value if value is not None else np.zeros(0, np.uint8)


def _as_tuple(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def _shapes_key(specs) -> tuple:
    return tuple(None if s is None else s.shape for s in specs)


def _array_shapes_key(arrays) -> tuple:
    return tuple(None if a is None else a.shape for a in arrays)


def _check_output(ctx: OpContext, spec: Spec, value) -> None:
    if spec.shape is not None and tuple(value.shape) != tuple(spec.shape):
        raise RuntimeError(f"{ctx.where()}: kernel produced shape {value.shape}, prepare said "
                           f"{spec.shape} (a qengine bug)")
