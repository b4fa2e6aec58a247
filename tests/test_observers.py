"""Calibration observers: merging equals one pass, what each range is good for, end to end."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qengine
import qengine.calibrate as calibrate_module
from qengine.calibrate import OBSERVERS, MinMaxObserver, calibrate, choose_qparams
from qengine.observers import (
    BINS,
    EntropyObserver,
    Histogram,
    MovingAverageObserver,
    MSEObserver,
    PercentileObserver,
)

EXAMPLES = Path(__file__).parents[1] / "examples"
DIGITS = EXAMPLES / "digits.tflite"
DATA = np.load(EXAMPLES / "digits_data.npz")
NAMES = ["minmax", "moving_average", "percentile", "mse", "entropy"]
EXACT_MERGE = ["minmax", "percentile", "mse", "entropy"]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def observe(make, parts) -> object:
    observer = make()
    for part in parts:
        observer.update(np.asarray(part, np.float32))
    return observer


def quantization_mse(values: np.ndarray, value_range) -> float:
    """The naive reference: quantize to int8 with choose_qparams' parameters, dequantize."""
    scale, zero_point = choose_qparams(*value_range, "int8")
    q = np.clip(np.round(values / scale) + zero_point, -128, 127)
    return float(np.mean(((q - zero_point) * scale - values) ** 2))


# -- the registry -----------------------------------------------------------------------------


def test_every_name_is_registered_as_a_zero_argument_factory():
    assert set(NAMES) <= set(OBSERVERS)
    for name in NAMES:
        observer = OBSERVERS[name]()
        assert not observer.seen and observer.count == 0
        assert observer.range() == (np.inf, -np.inf)  # like MinMaxObserver: nothing seen
        observer.update(np.arange(10, dtype=np.float32))
        assert observer.seen and observer.count == 10


def test_merging_different_settings_is_refused():
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(99.9).merge(PercentileObserver(99.99))
    with pytest.raises(ValueError, match="MSEObserver"):
        PercentileObserver().merge(MSEObserver())
    with pytest.raises(ValueError, match="percentile must be"):
        PercentileObserver(percentile=20)


# -- merge(split) equals one pass -------------------------------------------------------------

# Scales that differ by orders of magnitude, so histograms re-bin as the range grows.
PARTS = [(rng(i).normal(size=500) * s + m).astype(np.float32)
         for i, (s, m) in enumerate([(1e-3, 0), (1, 2), (50, -10), (0.1, 300)])]


@pytest.mark.parametrize("name", EXACT_MERGE)
@pytest.mark.parametrize("split", [1, 2, 3])
def test_merge_of_split_data_equals_one_pass_exactly(name, split):
    make = OBSERVERS[name]
    whole = observe(make, PARTS)
    a, b = observe(make, PARTS[:split]), observe(make, PARTS[split:])
    assert a.merge(b) == whole and b.merge(a) == whole
    assert a.merge(b).range() == whole.range()
    assert a.merge(make()) == a and make().merge(a) == a  # an observer that saw nothing


@settings(max_examples=60, deadline=None)
@given(st.lists(hnp.arrays(np.float32, st.integers(0, 40),
                           elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
                min_size=1, max_size=6),
       st.integers(0, 6))
def test_histogram_merge_is_exact_for_any_data_and_split(parts, split):
    whole, a, b = Histogram(), Histogram(), Histogram()
    for i, part in enumerate(parts):
        whole.add(part)
        (a if i < split else b).add(part)
    assert a.merged(b) == whole
    assert whole.total == sum(p.size for p in parts)


def test_histogram_counts_equal_numpy_histogram_on_its_own_edges():
    h = Histogram()
    for part in PARTS:
        h.add(part)  # grows three times
    values = np.concatenate(PARTS).astype(np.float64)
    np.testing.assert_array_equal(h.counts, np.histogram(values, h.edges())[0])
    assert h.edges()[0] <= values.min() and values.max() < h.edges()[-1]
    assert h.min == values.min() and h.max == values.max()


def test_histogram_bins_are_as_fine_as_the_range_allows():
    h = Histogram()
    h.add(np.array([-1.0, 2.99]))  # 3.99 / 2048 <= 2**-9
    assert h.width == 2.0**-9 and len(h.counts) == BINS
    h.add(np.array([3.0]))  # [-1, 3] needs 2049 bins of 2**-9: 3.0 is the edge of bin 2048
    assert h.width == 2.0**-8


def test_moving_average_merge_approximates_one_pass():
    """Merging weights the two averages by count, which ignores batch order, so it is only
    close: for i.i.d. batches both estimate the typical batch extreme. Tolerance: 5% of the
    one-pass range's width (the averages' spread here is about 1.5%)."""
    batches = list(rng().normal(size=(400, 256)))
    make = functools.partial(MovingAverageObserver, averaging_constant=0.1)
    whole = observe(make, batches)
    merged = observe(make, batches[:200]).merge(observe(make, batches[200:]))
    tolerance = 0.05 * (whole.max - whole.min)
    assert merged.count == whole.count
    np.testing.assert_allclose(merged.range(), whole.range(), atol=tolerance)


def test_moving_average_follows_its_formula():
    observer = MovingAverageObserver(averaging_constant=0.25)
    observer.update(np.array([-4.0, 8.0]))  # the first batch sets it
    observer.update(np.array([0.0, 4.0]))
    assert observer.range() == (0.75 * -4.0 + 0.25 * 0.0, 0.75 * 8.0 + 0.25 * 4.0)


# -- what each range is for -------------------------------------------------------------------


def test_percentile_clips_a_few_huge_outliers():
    gaussian = rng().normal(size=100_000)
    values = np.concatenate([gaussian, [1000.0, 900.0, 800.0, -500.0, -700.0]])
    observer = observe(PercentileObserver, np.array_split(values, 7))
    expected = np.percentile(values, [0.01, 99.99])  # inside the gaussian: 5 < 10 outliers
    # within one histogram bin (the resolution) of the exact percentiles, far from 1000
    np.testing.assert_allclose(observer.range(), expected, atol=observer.histogram.width)
    assert observer.range()[1] < 5


@pytest.mark.parametrize("values, gain", [
    (rng().laplace(size=50_000), 0.95), (rng(1).standard_t(3, size=50_000), 0.95),
    (np.maximum(rng().laplace(size=50_000), 0), 1.0)], ids=["laplace", "student_t3", "relu"])
def test_mse_range_quantizes_heavy_tails_better_than_min_max(values, gain):
    """Lower error than min/max, by at least 5% on the two-sided heavy tails (seen: 10%)."""
    values = values.astype(np.float32)
    parts = np.array_split(values, 5)
    mse = quantization_mse(values, observe(MSEObserver, parts).range())
    assert mse < gain * quantization_mse(values, observe(MinMaxObserver, parts).range())


def test_mse_range_is_near_the_best_of_a_brute_force_search():
    values = rng().laplace(size=20_000)
    grid = [(lo, hi) for lo in np.linspace(values.min(), 0, 31)[:-1]
            for hi in np.linspace(0, values.max(), 31)[1:]]
    best = min(quantization_mse(values, r) for r in grid)
    assert quantization_mse(values, observe(MSEObserver, [values]).range()) <= 1.03 * best


def test_mse_range_does_not_clip_uniform_data():
    values = rng().uniform(-1, 3, size=50_000)
    mse = quantization_mse(values, observe(MSEObserver, [values]).range())
    assert mse <= 1.01 * quantization_mse(values, (values.min(), values.max()))


def test_entropy_threshold_on_a_laplacian_is_inside_the_data():
    values = rng().laplace(size=100_000)
    lo, hi = observe(EntropyObserver, np.array_split(values, 4)).range()
    largest = np.abs(values).max()
    assert lo == -hi and 0 < hi < largest  # one threshold T, strictly inside (0, max |x|)


def test_entropy_folds_negative_values_onto_positive_ones():
    values = rng().laplace(size=100_000)
    lo, hi = observe(EntropyObserver, [values]).range()
    mirrored = observe(EntropyObserver, [-values])
    np.testing.assert_allclose(mirrored.range(), (-hi, -lo), atol=mirrored.histogram.width)
    relu = observe(EntropyObserver, [np.maximum(values, 0)])
    assert relu.range()[0] == 0 and 0 < relu.range()[1] < values.max()


# -- degenerate data --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("constant", [0.0, 3.5, -2.0, 1e-30])
def test_constant_data_gets_its_own_value_as_range(name, constant):
    values = np.full(100, constant, np.float32)
    observer = observe(OBSERVERS[name], [values, values[:0], values])  # with an empty batch
    assert observer.range() == (values[0], values[0])
    assert observer.merge(observe(OBSERVERS[name], [values])).range() == observer.range()
    scale, zero_point = choose_qparams(*observer.range(), "int8")  # raises nothing
    q = np.clip(np.round(values / scale) + zero_point, -128, 127)
    np.testing.assert_allclose((q - zero_point) * scale, values, atol=scale / 2)
    if constant == 0:
        assert (scale, zero_point) == (1.0, 0)  # all zeros: exactly representable


@pytest.mark.parametrize("name", NAMES)
def test_range_always_lies_within_the_data_and_keeps_zero_representable(name):
    values = np.concatenate([np.zeros(1000), rng().laplace(size=5000) + 3]).astype(np.float32)
    lo, hi = observe(OBSERVERS[name], [values]).range()
    assert values.min() <= lo <= hi <= values.max()
    _, zero_point = choose_qparams(lo, hi, "int8")
    assert -128 <= zero_point <= 127  # so 0.0 quantizes to q = zero_point and back exactly


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("observer", NAMES + [functools.partial(PercentileObserver,
                                                                 percentile=99.9)],
                         ids=NAMES + ["partial_percentile_99.9"])
def test_quantize_digits_with_every_observer(observer):
    model = qengine.quantize(DIGITS, "int8", DATA["calibration"][:32], observer=observer,
                             quiet=True)
    model.verify()
    interpreter = qengine.Interpreter(model)
    x, y = interpreter.inputs[0], interpreter.outputs[0]
    images = np.clip(np.round(DATA["test_images"] / x.scale) + x.zero_point, -128, 127)
    predictions = interpreter.run(images.astype(np.int8))[y.name].argmax(1)
    assert np.mean(predictions == DATA["test_labels"]) > 0.9


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_worker_threads_record_what_one_thread_records(name, batch_size):
    """Workers run batches in parallel but the observers see them in order, so even the
    order-dependent moving average ends up identical."""
    model = qengine.load(DIGITS)
    data = DATA["calibration"][:10]
    one = calibrate(model, data, name, quiet=True, batch_size=batch_size, workers=1)
    two = calibrate(model, data, name, quiet=True, batch_size=batch_size, workers=2)
    assert calibrate_module._threads_may_launch_kernels()  # so the worker threads did run
    assert one.keys() == two.keys()
    for key in one:
        assert (one[key].range(), one[key].count) == (two[key].range(), two[key].count), key


def test_calibrate_accepts_a_factory_with_settings():
    model = qengine.load(DIGITS)
    stats = calibrate(model, DATA["calibration"][:8], functools.partial(
        MSEObserver, steps=32), quiet=True)
    assert all(isinstance(o, MSEObserver) and o.steps == 32 for o in stats.values())
