"""Whether a model run on several threads should split its layers between them at all.

A split hands half of a layer to another core: it costs the hand-off (a few us) and, on the
2-vCPU VM this was measured on, the other core's share of the tensors moves between the
cores' caches (a conv whose output the calling core had written was 15 us slower split than
one whose output each core had written its own half of). Large layers gain (pose_landmark_full
float: 19.3 ms on one thread, 13.4 on two); models made of many small ones lose:
iris_landmark dynamic-range took 2.5 ms with its layers on one thread and 3.0 ms split,
face_detection_short_range 2.2 and 2.5 ms (`benchmarks/README.md`, session 15).

So an interpreter with num_threads > 1 times its first runs both ways, keeps the faster, and
now and then tries the other way again. Results are the same either way: every kernel
computes each output value the same whatever the split.
"""

from __future__ import annotations

import math
import threading

# The trial's runs go in pairs of one way, only the second timed: a split run right after an
# unsplit one finds the other core idle (its OpenMP worker asleep) and ran 2-8 % slower than
# one after a split run (Zen 5 VM, palm_detection_lite, pose_detection, hand_landmark_lite and
# face_detection_full_range float, native and as AVX2; `benchmarks/run_ab.py warm-split`),
# which biased the trial against splitting. Probes stay single runs: as pairs they doubled the runs spent the other way
# (a quarter of the first hundred), which cost more than their bias (a switch needs a probe
# clearly faster anyway).
WARMUP_RUNS = 4  # untimed: a pair with splits, a pair without (each may compile, and the
# first split runs are slower while the other core warms up)
TRIAL_RUNS = 12  # pairs with and without splits in turn, the second of each timed: on the
# 2-vCPU AMD VM, two trials a way chose wrong in 3 of 7 processes (pose_detection int8: one
# thread, 14.5 ms, kept over splits that ran 9.5 ms once warm); three, after four warm-ups,
# chose right in 6 of 6
PROBE_EVERY = 50  # later, one run in this many goes the other way, in case the machine changed
PROBE_EARLY, EARLY_RUNS = 8, 100  # before run EARLY_RUNS, one in PROBE_EARLY: on the AMD VM the
# other core took up to 20 runs to come up to speed (palm_detection_lite split: 12.7 ms, then
# 6.6), so a choice of one thread made in the trial is corrected within a few runs
PROBE_MARGIN = 0.95  # a probe must beat the kept way's typical run by 5 % to switch


class SplitChoice:
    """One plan's choice: `mode()` says whether the next run splits and whether to time it;
    `record(split, seconds)` reports a timed run. The first WARMUP_RUNS + TRIAL_RUNS runs
    alternate pair by pair (with splits first, the second run of a pair timed); then the way
    whose best trial run was faster is kept. Its typical time is followed (an exponential
    average), and every PROBE_EARLY-th run (up to run EARLY_RUNS, then every PROBE_EVERY-th)
    tries the other way: a probe faster by PROBE_MARGIN switches (a trial upset by another
    process, or a machine whose load changed, does not fix the choice for good). Thread-safe:
    runs from several threads only share the counts."""

    def __init__(self):
        self.lock = threading.Lock()
        self.runs = 0
        self.best = {True: math.inf, False: math.inf}
        self.split: bool | None = None  # decided
        self.typical = math.inf  # the kept way's recent run time

    def mode(self) -> tuple[bool, bool]:
        """(split, timed): how the next run goes and whether to time it."""
        with self.lock:
            n = self.runs
            self.runs += 1
            if self.split is None:
                return n // 2 % 2 == 0, n >= WARMUP_RUNS and n % 2 == 1
            probe = n % (PROBE_EARLY if n < EARLY_RUNS else PROBE_EVERY) == 0
            return self.split != probe, True

    def record(self, split: bool, seconds: float) -> None:
        with self.lock:
            if self.split is None:
                self.best[split] = min(self.best[split], seconds)
                if self.runs >= WARMUP_RUNS + TRIAL_RUNS:
                    self.split = self.best[True] < self.best[False]
                    self.typical = self.best[self.split]
            elif split == self.split:
                self.typical = seconds if math.isinf(self.typical) else \
                    0.9 * self.typical + 0.1 * seconds
            elif seconds < PROBE_MARGIN * self.typical:
                self.split, self.typical = split, seconds
