"""kernels/jit.py's `pinned`: a prepared op's kernel call that skips Numba's per-call typing
after the first call, with the results the dispatcher gives."""

from __future__ import annotations

import numpy as np
from qengine.kernels.jit import kernel, pinned


@kernel
def _scaled_sum(x, scale, out, start, stop):
    total = 0.0
    for i in range(start, stop):
        total += x[i] * scale
    out[0] = total
    return stop - start


class _CountingDispatcher:
    """The dispatcher interface `pinned` uses, counting calls that go through it."""

    def __init__(self, dispatcher):
        self.dispatcher, self.calls = dispatcher, 0
        self.overloads, self.typeof_pyval = dispatcher.overloads, dispatcher.typeof_pyval

    def __call__(self, *args):
        self.calls += 1
        return self.dispatcher(*args)


def test_a_pinned_kernel_goes_through_the_dispatcher_once_and_computes_the_same():
    counting = _CountingDispatcher(_scaled_sum)
    call = pinned(counting)
    rng = np.random.default_rng(0)
    for n in range(1, 6):  # new values of the same types on every call
        x = rng.standard_normal(10)
        got, want = np.zeros(1), np.zeros(1)
        assert call(x, 0.5 * n, got, 1, n + 1) == _scaled_sum(x, 0.5 * n, want, 1, n + 1) == n
        assert got[0] == want[0]
    assert counting.calls == 1  # the later calls ran the compiled entry point directly


def test_a_call_the_dispatcher_converted_keeps_going_through_it():
    """No compiled entry for the first call's exact argument types (the dispatcher converted
    them to another signature's): every call goes through the dispatcher, none is misread."""
    counting = _CountingDispatcher(_scaled_sum)
    counting.overloads = {}
    call = pinned(counting)
    x, out = np.arange(4.0), np.zeros(1)
    for _ in range(3):
        assert call(x, 2.0, out, 0, 4) == 4 and out[0] == 12.0
    assert counting.calls == 3
