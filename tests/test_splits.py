"""runtime/splits.py: a multi-threaded interpreter times its first runs with and without
splitting layers between threads and keeps the faster way, with the same results."""

from __future__ import annotations

import numpy as np
import pytest
from qengine.kernels import threads

from qengine import Interpreter
from qengine.runtime.splits import (
    EARLY_RUNS,
    PROBE_EARLY,
    PROBE_EVERY,
    TRIAL_RUNS,
    WARMUP_RUNS,
    SplitChoice,
)
from qengine.warmup import builtin_model


def _trial(split_seconds: float, whole_seconds: float) -> SplitChoice:
    choice = SplitChoice()
    modes = []
    for _ in range(WARMUP_RUNS + TRIAL_RUNS):
        split, timed = choice.mode()
        modes.append((split, timed))
        if timed:
            choice.record(split, split_seconds if split else whole_seconds)
    # pairs of one way, split first, the second of each pair timed after the warm-up
    assert modes == [(n // 2 % 2 == 0, n >= WARMUP_RUNS and n % 2 == 1)
                     for n in range(WARMUP_RUNS + TRIAL_RUNS)]
    return choice


def _kept_runs(choice: SplitChoice, count: int) -> list[tuple[bool, bool]]:
    """The modes of the next `count` runs that are not probes (nothing recorded)."""
    modes = []
    while len(modes) < count:
        at = choice.runs % (PROBE_EARLY if choice.runs < EARLY_RUNS else PROBE_EVERY)
        mode = choice.mode()
        if at != 0:
            modes.append(mode)
    return modes


@pytest.mark.parametrize(("split_seconds", "keeps_splitting"), [(1.0, True), (3.0, False)])
def test_the_faster_way_is_kept_after_the_trial(split_seconds, keeps_splitting):
    choice = _trial(split_seconds, whole_seconds=2.0)
    assert choice.split is keeps_splitting
    assert _kept_runs(choice, 8) == [(keeps_splitting, True)] * 8


@pytest.mark.parametrize(("probe_seconds", "switches"), [(1.0, True), (1.95, False)])
def test_a_probe_the_other_way_switches_only_when_clearly_faster(probe_seconds, switches):
    choice = _trial(split_seconds=3.0, whole_seconds=2.0)  # keeps the layers whole
    first = -(-(WARMUP_RUNS + TRIAL_RUNS) // PROBE_EARLY) * PROBE_EARLY  # the probe pair's
    while choice.runs < first:
        assert choice.mode() == (False, True)
        choice.record(False, 2.0)
    assert choice.mode() == (True, True)  # the probe, one run the other way
    choice.record(True, probe_seconds)
    assert choice.split is switches


def test_probes_come_often_early_then_seldom():
    choice = _trial(split_seconds=3.0, whole_seconds=2.0)  # keeps the layers whole
    probes = []
    while choice.runs < EARLY_RUNS + 2 * PROBE_EVERY:
        split, timed = choice.mode()
        if split:
            probes.append((choice.runs - 1, timed))
        if timed:
            choice.record(split, 3.0 if split else 2.0)  # probes never faster: no switch
    early = [n for n, _ in probes if n < EARLY_RUNS]
    late = [n for n, _ in probes if n >= EARLY_RUNS]
    assert all(timed for _, timed in probes)
    assert early and all(n % PROBE_EARLY == 0 for n in early)
    assert len(early) == len(range(early[0], EARLY_RUNS, PROBE_EARLY))
    assert late == [n for n in range(EARLY_RUNS, choice.runs) if n % PROBE_EVERY == 0]


def test_the_best_run_of_each_way_counts():
    choice = SplitChoice()
    # slow split runs but one: the best one counts
    times = {True: [5.0, 1.0, 4.0], False: [2.0, 1.5, 1.8]}
    for _ in range(WARMUP_RUNS + TRIAL_RUNS):
        split, timed = choice.mode()
        if timed:
            choice.record(split, times[split].pop(0))
    assert choice.split is True


def test_runs_split_or_not_as_chosen_with_the_same_results(monkeypatch):
    monkeypatch.setattr(threads._OtherProcesses, "enabled", False)  # split under pytest -n 2
    parts_seen = []
    enter = threads.split_cores.__enter__

    def counting_enter(self):
        parts = enter(self)
        parts_seen.append(parts)
        return parts

    monkeypatch.setattr(threads.split_cores, "__enter__", counting_enter)
    model = builtin_model()
    rng = np.random.default_rng(0)
    inputs = [rng.random(t.shape, dtype=np.float32) for t in model.main.inputs]
    expected = Interpreter(model, num_threads=1).run(inputs)
    interpreter = Interpreter(model, num_threads=2)
    plan_splits = []
    decided = None
    for n in range(WARMUP_RUNS + TRIAL_RUNS + 4):
        parts_seen.clear()
        outputs = interpreter.run(inputs)
        plan_splits.append(max(parts_seen, default=1) > 1)
        for name, value in expected.items():
            np.testing.assert_array_equal(outputs[name], value)
        if n == WARMUP_RUNS + TRIAL_RUNS - 1:
            decided = interpreter._fused_plans[0].splits.split
    assert decided is not None
    assert plan_splits[:WARMUP_RUNS + TRIAL_RUNS] == [
        n // 2 % 2 == 0 for n in range(WARMUP_RUNS + TRIAL_RUNS)]
    # then a probe the other way (the trial's end is a multiple of PROBE_EARLY), then the way
    # the probe left
    assert (WARMUP_RUNS + TRIAL_RUNS) % PROBE_EARLY == 0
    choice = interpreter._fused_plans[0].splits
    assert plan_splits[WARMUP_RUNS + TRIAL_RUNS:] == [not decided] + [choice.split] * 3
