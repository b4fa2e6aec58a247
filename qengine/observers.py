"""Observers: min/max, a moving average of batch extremes, and three histogram calibrators.

Every observer has MinMaxObserver's interface: `update(values)` records, `merge(other)` returns
a new observer equal to (or, for the moving average, approximating) one that saw both streams,
`range()` is the (min, max) to quantize, `seen` and `count`. `range()` only picks a clipping
range; `qparams.choose_qparams` alone turns it into a scale and zero point.

The histogram observers share `Histogram`, a 2048-bin histogram on a grid anchored at 0 whose
bin width is a power of two. Growing the range doubles the width (pairs of bins add up exactly),
so a histogram is a function of the values seen and not of their order or split: merging two
histograms gives bit for bit the histogram of one pass.

`OBSERVERS` names them all (the calibrator names of schemes and the CLI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .qparams import choose_qparams, int_range

# ---------------------------------------------------------------------------------------------
# min/max


@dataclass
class MinMaxObserver:
    """The running minimum and maximum over every value seen (TFLite converter semantics)."""

    min: float = math.inf
    max: float = -math.inf
    count: int = 0

    def update(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        self.count += values.size

    def merge(self, other: MinMaxObserver) -> MinMaxObserver:
        return MinMaxObserver(min(self.min, other.min), max(self.max, other.max),
                              self.count + other.count)

    def range(self) -> tuple[float, float]:
        return self.min, self.max

    @property
    def seen(self) -> bool:
        return self.count > 0


# ---------------------------------------------------------------------------------------------
# moving average


@dataclass
class MovingAverageObserver:
    """Exponential moving averages of each update's minimum and maximum.

    Per update (batch): min = (1 - c) * min + c * batch_min, likewise max; the first batch sets
    both. Because it averages batch extremes, it ignores the rare extreme batch.
    """

    averaging_constant: float = 0.01  # c
    min: float = math.inf
    max: float = -math.inf
    count: int = 0  # values seen

    def __post_init__(self):
        if not 0 < self.averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be in (0, 1], got "
                             f"{self.averaging_constant}")

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values)
        if values.size == 0:
            return
        batch_min, batch_max = float(values.min()), float(values.max())
        if self.seen:
            c = self.averaging_constant
            self.min = (1 - c) * self.min + c * batch_min
            self.max = (1 - c) * self.max + c * batch_max
        else:
            self.min, self.max = batch_min, batch_max
        self.count += values.size

    def merge(self, other: MovingAverageObserver) -> MovingAverageObserver:
        """An approximation: the averages weighted by values seen, min = (n_a min_a + n_b min_b)
        / (n_a + n_b). A moving average depends on the order of its batches, which two
        observers that ran in parallel do not have; for i.i.d. batches both estimate the
        typical batch extreme."""
        _check_same_settings(self, other, "averaging_constant")
        if not (self.seen and other.seen):
            return replace(self if self.seen else other)
        n = self.count + other.count
        return MovingAverageObserver(
            self.averaging_constant, (self.count * self.min + other.count * other.min) / n,
            (self.count * self.max + other.count * other.max) / n, n)

    def range(self) -> tuple[float, float]:
        return self.min, self.max

    @property
    def seen(self) -> bool:
        return self.count > 0


# ---------------------------------------------------------------------------------------------
# the shared histogram

BINS = 2048
_MIN_EXPONENT = -100  # the finest bin width, 2**-100
_INDEX_BITS = 50  # |value| / width < 2**50: bin indices are exact in float64 and int64


@dataclass(eq=False)
class Histogram:
    """Counts of values in BINS bins of width 2**exponent; bin i holds [(offset + i) * width,
    (offset + i + 1) * width). The width is the smallest power of two that fits [min, max] in
    BINS bins, and offset = floor(min / width). Non-finite values are not counted."""

    exponent: int = _MIN_EXPONENT
    offset: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    min: float = math.inf  # the exact extremes of the values counted
    max: float = -math.inf

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exponent)

    def edges(self) -> np.ndarray:
        return (self.offset + np.arange(BINS + 1)) * self.width

    def centers(self) -> np.ndarray:
        return (self.offset + np.arange(BINS) + 0.5) * self.width

    def add(self, values: np.ndarray) -> None:
        x = np.asarray(values, np.float64).ravel()
        x = x[np.isfinite(x)]
        if x.size == 0:
            return
        self._grow(min(self.min, float(x.min())), max(self.max, float(x.max())))
        index = np.floor(x / self.width).astype(np.int64) - self.offset
        self.counts += np.bincount(index, minlength=BINS)

    def merged(self, other: Histogram) -> Histogram:
        result = Histogram()
        for part in (self, other):
            if part.total:
                result._grow(min(result.min, part.min), max(result.max, part.max))
                result.counts += part._rebinned(result.exponent, result.offset)
        return result

    def __eq__(self, other) -> bool:
        grid = (self.exponent, self.offset, self.min, self.max)
        return isinstance(other, Histogram) and grid == (
            other.exponent, other.offset, other.min, other.max) and np.array_equal(
            self.counts, other.counts)

    def _grow(self, lo: float, hi: float) -> None:
        exponent = _fitting_exponent(lo, hi)
        assert exponent >= self.exponent or not self.total, "a histogram's bins only widen"
        offset = math.floor(lo / math.ldexp(1.0, exponent))
        self.counts = self._rebinned(exponent, offset)
        self.exponent, self.offset, self.min, self.max = exponent, offset, lo, hi

    def _rebinned(self, exponent: int, offset: int) -> np.ndarray:
        """These counts on the grid (exponent, offset); exact, as each old bin lies inside one
        new bin: old global bin g becomes floor(g / 2**(exponent - self.exponent))."""
        occupied = np.flatnonzero(self.counts)
        moved = ((self.offset + occupied) >> (exponent - self.exponent)) - offset
        return np.bincount(moved, weights=self.counts[occupied], minlength=BINS).astype(np.int64)


def _fitting_exponent(lo: float, hi: float) -> int:
    """The smallest k >= _MIN_EXPONENT with |values| / 2**k < 2**_INDEX_BITS and
    floor(hi / 2**k) - floor(lo / 2**k) < BINS. Both conditions only get easier as k grows and
    harder as [lo, hi] widens, so the exponent only grows as data arrives."""
    magnitude = max(abs(lo), abs(hi))
    k = _MIN_EXPONENT
    if magnitude > 0:  # frexp: magnitude < 2**e
        k = max(k, math.frexp(magnitude)[1] - _INDEX_BITS)
    if hi > lo:
        k = max(k, math.floor(math.log2((hi - lo) / (BINS + 1))) - 1)  # a lower bound
    while math.floor(hi / math.ldexp(1.0, k)) - math.floor(lo / math.ldexp(1.0, k)) >= BINS:
        k += 1
    return k


@dataclass(eq=False)
class _HistogramObserver:
    """Recording and merging for the observers that pick a range from a Histogram. Subclasses
    are dataclasses whose fields before `histogram` are settings, and define `_clip(histogram)`.
    """

    def update(self, values: np.ndarray) -> None:
        self.histogram.add(values)

    def merge(self, other):
        settings = [f for f in self.__dataclass_fields__ if f != "histogram"]
        _check_same_settings(self, other, *settings)
        return replace(self, histogram=self.histogram.merged(other.histogram))

    def range(self) -> tuple[float, float]:
        h = self.histogram
        if not self.seen or h.min == h.max:  # nothing seen (inf, -inf), or a constant
            return h.min, h.max
        lo, hi = self._clip(h)
        return max(float(lo), h.min), min(float(hi), h.max)

    @property
    def count(self) -> int:
        return self.histogram.total

    @property
    def seen(self) -> bool:
        return self.count > 0

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)


# ---------------------------------------------------------------------------------------------
# percentile


@dataclass(eq=False)
class PercentileObserver(_HistogramObserver):
    """Clips at the (100 - p)-th and p-th percentiles of the values seen.

    The q-quantile is read off the histogram's cumulative counts C(e) at the bin edges e,
    interpolating linearly inside the bin where C crosses q * N (values uniform within a bin).
    Resolution: one bin, (max - min) / 2048 or finer.
    """

    percentile: float = 99.99
    histogram: Histogram = field(default_factory=Histogram)

    def __post_init__(self):
        if not 50 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")

    def _clip(self, h: Histogram) -> tuple[float, float]:
        tail = 1 - self.percentile / 100
        return _quantile(h, tail), _quantile(h, 1 - tail)


def _quantile(h: Histogram, q: float) -> float:
    """The point where the cumulative count reaches q * N, values uniform inside each bin."""
    cumulative = np.cumsum(h.counts)
    target = q * cumulative[-1]
    j = int(np.searchsorted(cumulative, target))  # first bin whose upper edge reaches it
    before = cumulative[j - 1] if j > 0 else 0
    return float(h.edges()[j] + h.width * (target - before) / h.counts[j])


# ---------------------------------------------------------------------------------------------
# mean squared error


@dataclass(eq=False)
class MSEObserver(_HistogramObserver):
    """The clipping range [lo, hi] that minimizes the expected squared int8 quantization error.

    For a candidate, (s, z) = choose_qparams(lo, hi, "int8", asymmetric) can represent
    [a, b] = [(-128 - z) s, (127 - z) s]. With values uniform within each bin (center c,
    width w, count n), the error is
        sum over bins inside [a, b]:   n * s**2 / 12                 (rounding)
      + sum over bins outside:        n * ((c - clip(c, a, b))**2 + w**2 / 12)   (clipping).
    Candidates are hi = max * k / steps (if max > 0) and lo = min * k / steps (if min < 0) for
    k = 1..steps; an end on the same side of zero as the other stays put, as choose_qparams
    widens every range to contain 0. The search alternates between the two ends, each
    minimized with the other fixed, until neither moves.
    """

    steps: int = 256
    histogram: Histogram = field(default_factory=Histogram)

    def _clip(self, h: Histogram) -> tuple[float, float]:
        lo, hi = h.min, h.max
        for _ in range(8):  # converges in two or three rounds
            new_hi = min(_candidates(h.max, +1, self.steps), key=lambda x: _mse(h, lo, x))
            new_lo = min(_candidates(h.min, -1, self.steps), key=lambda x: _mse(h, x, new_hi))
            if (new_lo, new_hi) == (lo, hi):
                break
            lo, hi = new_lo, new_hi
        return lo, hi


def _candidates(extreme: float, sign: int, steps: int) -> list[float]:
    """Clipping points between 0 and `extreme` if it lies on the `sign` side of zero."""
    if extreme * sign <= 0:
        return [extreme]
    return [extreme * k / steps for k in range(1, steps + 1)]


def _mse(h: Histogram, lo: float, hi: float, dtype: str = "int8") -> float:
    scale, zero_point = choose_qparams(lo, hi, dtype)
    qmin, qmax = int_range(dtype)
    a, b = (qmin - zero_point) * float(scale), (qmax - zero_point) * float(scale)
    c = h.centers()
    clipped = np.clip(c, a, b)
    inside = clipped == c
    errors = np.where(inside, float(scale) ** 2 / 12, (c - clipped) ** 2 + h.width ** 2 / 12)
    return float(np.dot(h.counts, errors)) / h.total


# ---------------------------------------------------------------------------------------------
# entropy (KL divergence)


@dataclass(eq=False)
class EntropyObserver(_HistogramObserver):
    """TensorRT's entropy calibration: the threshold T whose int8 histogram loses least
    information, range = [-T, T] cut to [min, max].

    Negative values are folded onto positive ones (the search runs on the histogram of |x|,
    exact because the bin grid is symmetric about 0), so the sign is ignored when choosing T and
    one T clips both sides: symmetric data gets [-T, T], a ReLU output [0, T].

    For each candidate i >= 128 bins of |x| (T = i * width):
      P = the first i bins, with the count of every bin beyond added to bin i - 1 (clipping);
      Q = the first i bins (without that tail) merged into 128 bins, each spread evenly back
          over the bins of its group that are nonzero in P;
      T = argmin KL(P || Q) = sum p log(p / q), after giving empty bins a count of 1e-4 (taken
          evenly from the others, as MXNet's _smooth_distribution) and normalizing.
    With fewer than 128 bins of |x| there is nothing to merge and T = max |x|.
    """

    quantized_bins: int = 128
    histogram: Histogram = field(default_factory=Histogram)

    def _clip(self, h: Histogram) -> tuple[float, float]:
        folded = _folded(h)
        last = np.flatnonzero(folded)[-1] + 1
        threshold = max(abs(h.min), abs(h.max))
        if last > self.quantized_bins:
            kl = [_kl_divergence(folded, i, self.quantized_bins)
                  for i in range(self.quantized_bins, last + 1)]
            threshold = (self.quantized_bins + int(np.argmin(kl))) * h.width
        return -threshold, threshold


def _folded(h: Histogram) -> np.ndarray:
    """The histogram of |x| on the same width: bin g >= 0 stays bin g, bin g < 0
    ([g w, (g + 1) w), negated) becomes bin -g - 1."""
    g = h.offset + np.arange(BINS)
    occupied = h.counts > 0
    index = np.where(g >= 0, g, -g - 1)[occupied]
    return np.bincount(index, weights=h.counts[occupied]).astype(np.float64)


def _kl_divergence(hist: np.ndarray, i: int, levels: int) -> float:
    p = hist[:i].copy()
    p[-1] += hist[i:].sum()
    group = np.arange(i) * levels // i  # which of the `levels` merged bins each bin falls in
    nonzero = p > 0
    merged = np.bincount(group, weights=hist[:i], minlength=levels)
    spread = np.bincount(group, weights=nonzero, minlength=levels)
    q = np.where(nonzero, merged[group] / np.maximum(spread[group], 1), 0.0)
    p, q = _smoothed(p), _smoothed(q)
    if p is None or q is None:
        return math.inf
    return float(np.sum(p * np.log(p / q)))


def _smoothed(counts: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Normalized counts with eps moved onto the empty bins from the others (KL needs q > 0);
    None if the others cannot spare it."""
    zeros = counts == 0
    nonzeros = counts.size - zeros.sum()
    take = eps * zeros.sum() / max(nonzeros, 1)
    if nonzeros == 0 or take >= counts[~zeros].min():
        return None
    smoothed = np.where(zeros, eps, counts - take)
    return smoothed / smoothed.sum()


# ---------------------------------------------------------------------------------------------


def _check_same_settings(a, b, *names: str) -> None:
    if type(a) is not type(b):
        raise ValueError(f"cannot merge a {type(a).__name__} with a {type(b).__name__}")
    for name in names:
        if getattr(a, name) != getattr(b, name):
            raise ValueError(f"cannot merge {type(a).__name__}s with different {name} "
                             f"({getattr(a, name)} and {getattr(b, name)})")


OBSERVERS = {"minmax": MinMaxObserver, "moving_average": MovingAverageObserver,
             "percentile": PercentileObserver, "mse": MSEObserver, "entropy": EntropyObserver}
