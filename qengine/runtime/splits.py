"""Whether a model run on several threads should split its layers between them at all.

A split hands half of a layer to another core: it costs the hand-off (a few us) and, on the
2-vCPU VM this was measured on, the other core's share of the tensors moves between the
cores' caches (a conv whose output the calling core had written was 15 us slower split than
one whose output each core had written its own half of). Large layers gain (pose_landmark_full
float: 19.3 ms on one thread, 13.4 on two); models made of many small ones lose:
iris_landmark dynamic-range took 2.5 ms with its layers on one thread and 3.0 ms split,
face_detection_short_range 2.2 and 2.5 ms (`benchmarks/README.md`, session 15).

So an interpreter with num_threads > 1 times its first runs both ways and keeps the faster.
Results are the same either way: every kernel computes each output value the same whatever
the split.
"""

from __future__ import annotations

import math
import threading

WARMUP_RUNS = 2  # untimed: the first with splits, the second without (each may compile)
TRIAL_RUNS = 4  # timed, alternately without and with splits


class SplitChoice:
    """One plan's choice: `mode()` says whether the next run splits; `record(split, seconds)`
    reports how long it took. The first WARMUP_RUNS + TRIAL_RUNS runs alternate (with splits
    first); then every run splits if and only if the best trial run with splits beat the best
    one without. Thread-safe: runs from several threads only share the counts."""

    def __init__(self):
        self.lock = threading.Lock()
        self.runs = 0
        self.best = {True: math.inf, False: math.inf}
        self.split: bool | None = None  # decided

    def mode(self) -> tuple[bool, bool]:
        """(split, timed): how the next run goes and whether its time counts."""
        with self.lock:
            if self.split is not None:
                return self.split, False
            n = self.runs
            self.runs += 1
            return n % 2 == 0, n >= WARMUP_RUNS

    def record(self, split: bool, seconds: float) -> None:
        with self.lock:
            self.best[split] = min(self.best[split], seconds)
            if self.split is None and self.runs >= WARMUP_RUNS + TRIAL_RUNS:
                self.split = self.best[True] < self.best[False]

