"""State that lives across `Interpreter.run` calls: resource variables, CALL_ONCE status and
the variable tensors (`is_variable`) sequence ops keep their recurrent state in.

TFLite keeps one map from (container, shared_name) to a resource id for the whole interpreter,
so a VAR_HANDLE in an init subgraph and one in the main graph with the same names refer to the
same variable. A variable exists once something is assigned to it; reading it before that is an
error (TFLite: `variable != nullptr`). `reset()` forgets every value and every finished
initialization, so the next run starts as the first one did.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidModelError
from ..ir import numpy_dtype


class Resources:
    def __init__(self):
        self.ids: dict[tuple[str, str], int] = {}  # (container, shared_name) -> resource id
        self.values: dict[int, np.ndarray] = {}
        self.initialized: set[int] = set()  # subgraphs CALL_ONCE has run to the end
        self.initializing: set[int] = set()  # subgraphs CALL_ONCE is running now
        self.tensor_states: dict[int, tuple] = {}  # id(variable tensor) -> (tensor, value)
        self.generators: dict = {}  # random ops' generator state (ops/random_ops.py)
        self.tables: dict[int, dict] = {}  # hash tables by table id (ops/hashtable.py)
        # calibration: called with (statistic name, values an op computed inside a run), e.g.
        # an LSTM's cell state (its tensor's name) at each time step (see `observe`)
        self.state_observer = None

    def handle(self, container: str, shared_name: str) -> int:
        """The resource id of a variable, created on first sight as TFLite's VAR_HANDLE does."""
        return self.ids.setdefault((container, shared_name), len(self.ids))

    def name(self, resource_id: int) -> str:
        for (container, shared_name), rid in self.ids.items():
            if rid == resource_id:
                return f"{container}/{shared_name}" if container else shared_name
        return f"#{resource_id}"

    def read(self, resource_id: int) -> np.ndarray:
        value = self.values.get(resource_id)
        if value is None:
            raise InvalidModelError(
                f"variable {self.name(resource_id)!r} is read before anything was assigned to "
                f"it (no CALL_ONCE initializer or ASSIGN_VARIABLE ran first)")
        return value

    def assign(self, resource_id: int, value: np.ndarray) -> None:
        """Store a copy. The shape and dtype are fixed by the first assignment, as a
        tf.Variable's are; TFLite would silently resize, which only a broken model needs."""
        old = self.values.get(resource_id)
        if old is not None and (old.shape != value.shape or old.dtype != value.dtype):
            raise InvalidModelError(
                f"variable {self.name(resource_id)!r} holds {old.dtype} {old.shape}; an "
                f"assignment of {value.dtype} {value.shape} would change it")
        self.values[resource_id] = np.array(value, copy=True)

    def variables(self) -> dict[str, np.ndarray]:
        """Every assigned variable's current value, keyed by its shared name."""
        return {self.name(rid): value.copy() for rid, value in sorted(self.values.items())}

    def state(self, tensor) -> np.ndarray:
        """A variable tensor's current value: its file value until written; without one,
        zeros, or the zero point for int8 (as TFLite's ResetVariableTensor memsets it)."""
        if id(tensor) not in self.tensor_states:
            initial = tensor.data
            value = np.full(tensor.shape, _reset_value(tensor), numpy_dtype(tensor.dtype)) \
                if initial is None else np.array(initial)
            self.tensor_states[id(tensor)] = (tensor, value)
        return self.tensor_states[id(tensor)][1]

    def set_state(self, tensor, value: np.ndarray) -> None:
        self.tensor_states[id(tensor)] = (tensor, value)

    def observe(self, name: str, values) -> None:
        """Report values computed inside an op (a state at every step) to calibration."""
        if self.state_observer is not None:
            self.state_observer(name, values)

    def reset(self) -> None:
        self.values.clear()
        self.tensor_states.clear()
        self.generators.clear()
        self.tables.clear()
        self.initialized.clear()
        self.initializing.clear()


def _reset_value(tensor) -> int:
    q = tensor.quantization
    if tensor.dtype == "int8" and q is not None and q.zero_point.size:
        return int(q.zero_point[0])
    return 0
