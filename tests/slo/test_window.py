from __future__ import annotations

import math
import random
import sys

import pytest
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore
from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.slo import LatencyWindow
from sloguard.slo.window import BucketClosed, FrozenBucket, latency_mapping

QUANTILES = (0.50, 0.95, 0.99)


def exact_quantile(values: list[float], q: float) -> float:
    """The value at rank ``q * (n - 1)``, rounded down: the rank DDSketch answers for."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def quantiles(window: LatencyWindow, now: float) -> tuple[float | None, ...]:
    snap = window.snapshot(now)
    return snap.p50_s, snap.p95_s, snap.p99_s


def test_empty_window_has_no_quantiles_and_no_availability() -> None:
    window = LatencyWindow(latency_mapping())
    snap = window.snapshot(5.0)
    assert (snap.requests, snap.errors) == (0, 0)
    assert quantiles(window, 5.0) == (None, None, None)
    assert snap.availability is None


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0])
def test_quantiles_within_5_percent_of_exact_on_lognormal_data(sigma: float) -> None:
    rng = random.Random(42)
    # A minute of traffic spread over every bucket, so the answer is a merge of 12 sketches.
    values = [rng.lognormvariate(math.log(0.05), sigma) for _ in range(20_000)]
    window = LatencyWindow(latency_mapping(0.01), window_seconds=60, buckets=12)
    for i, value in enumerate(values):
        window.add(value, True, 1_000.0 + i * 60 / len(values))
    now = 1_000.0 + 59.99
    for q, estimate in zip(QUANTILES, quantiles(window, now), strict=True):
        exact = exact_quantile(values, q)
        assert estimate is not None
        assert abs(estimate - exact) / exact <= 0.01  # the sketch's guarantee, well inside 5%
        assert abs(estimate - exact) / exact <= 0.05


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-6, max_value=600.0, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([0.01, 0.02, 0.05]),
)
def test_quantile_error_bounded_by_relative_accuracy_for_any_latencies(
    values: list[float], accuracy: float
) -> None:
    window = LatencyWindow(latency_mapping(accuracy), window_seconds=10, buckets=5)
    for i, value in enumerate(values):
        window.add(value, True, 100.0 + 9.0 * i / len(values))
    for q, estimate in zip(QUANTILES, quantiles(window, 109.5), strict=True):
        exact = exact_quantile(values, q)
        assert estimate is not None
        assert abs(estimate - exact) <= accuracy * exact * (1 + 1e-9)


def test_counts_and_availability() -> None:
    window = LatencyWindow(latency_mapping())
    for i in range(200):
        window.add(0.01, ok=i % 50 != 0, now=10.0)
    snap = window.snapshot(10.0)
    assert (snap.requests, snap.errors) == (200, 4)
    assert snap.availability == pytest.approx(0.98)


def test_buckets_leave_the_window_after_window_seconds() -> None:
    window = LatencyWindow(latency_mapping(), window_seconds=60, buckets=12)  # 5 s buckets
    window.add(1.0, False, 100.0)  # bucket [100, 105)
    window.add(0.01, True, 130.0)
    assert window.snapshot(130.0).requests == 2
    assert window.snapshot(159.9).requests == 2  # [100, 105) is still one of the last 12
    later = window.snapshot(160.0)  # now in [160, 165): [100, 105) has slid out
    assert (later.requests, later.errors) == (1, 0)
    assert later.p99_s == pytest.approx(0.01, rel=0.01)
    assert window.snapshot(190.0).requests == 0
    assert window.snapshot(190.0).p50_s is None


def test_adds_after_a_snapshot_are_seen_by_the_next_one() -> None:
    window = LatencyWindow(latency_mapping(), window_seconds=60, buckets=12)
    window.add(0.010, True, 100.0)
    window.add(0.020, True, 106.0)
    assert window.snapshot(107.0).requests == 2
    window.add(0.030, True, 107.5)  # same bucket as the snapshot: the cache must not hide it
    window.add(0.040, True, 112.0)  # a new bucket: the cache is rebuilt
    snap = window.snapshot(112.0)
    assert snap.requests == 4
    values = [0.010, 0.020, 0.030, 0.040]
    assert snap.p50_s == pytest.approx(exact_quantile(values, 0.5), rel=0.01)
    assert snap.p99_s == pytest.approx(exact_quantile(values, 0.99), rel=0.01)
    assert window.snapshot(112.0).requests == 4  # reading twice changes nothing


def test_closed_buckets_are_reported_once_with_their_start() -> None:
    closed: list[tuple[float, int, int]] = []
    mapping = latency_mapping()
    window = LatencyWindow(mapping, window_seconds=10, buckets=2, on_close=_append(closed))
    other = LatencyWindow(mapping, window_seconds=10, buckets=2)
    window.add(0.1, True, 20.0)
    window.add(0.1, False, 24.9)
    assert closed == []
    assert window.open_bucket() == (20.0, 2, 1)
    window.add(0.1, True, 25.0)
    assert closed == [(20.0, 2, 1)]
    window.snapshot(31.0)  # a read rolls the window too
    assert closed == [(20.0, 2, 1), (25.0, 1, 0)]
    assert window.open_bucket() == (0.0, 0, 0)
    window.snapshot(40.0)
    assert len(closed) == 2
    window.add(0.1, True, 41.0)
    assert window.snapshot(41.0).requests == 1
    assert other.snapshot(41.0).requests == 0  # windows on one mapping share no bins


def test_closed_buckets_after_a_start_are_the_newer_ones() -> None:
    window = LatencyWindow(latency_mapping(), window_seconds=60, buckets=12)
    for second in (1.0, 6.0, 7.0, 11.0, 16.0):
        window.add(0.01, True, second)
    starts = [b.epoch * 5.0 for b in window.closed_buckets(20.0)]
    assert starts == [0.0, 5.0, 10.0, 15.0]
    assert [b.epoch * 5.0 for b in window.closed_buckets(20.0, after=5.0)] == [10.0, 15.0]
    assert window.closed_buckets(20.0, after=15.0) == []
    assert [b.requests for b in window.closed_buckets(20.0, after=-1.0)] == [1, 2, 1, 1]


def test_memory_is_bounded_without_reads() -> None:
    window = LatencyWindow(latency_mapping(), window_seconds=60, buckets=12)
    for second in range(10_000):
        window.add(0.01, True, float(second))
    assert len(window._closed) <= 12
    assert window.snapshot(9_999.0).requests == 60


def test_every_latency_of_a_busy_unread_bucket_is_in_the_next_read() -> None:
    window = LatencyWindow(latency_mapping(), window_seconds=60, buckets=12)
    sketch, _ = new_sketch(latency_mapping())
    for i in range(1283):
        window.add(0.001 * (1 + i % 50), True, 1.0)  # all in one bucket, never read
        sketch.add(0.001 * (1 + i % 50))
    assert window.snapshot(1.0).requests == 1283
    assert quantiles(window, 1.0) == tuple(sketch.get_quantile_value(q) for q in QUANTILES)


@pytest.mark.parametrize("latency", [math.nan, math.inf, -math.inf, -0.001])
def test_nan_infinite_and_negative_latencies_are_refused(latency: float) -> None:
    window = LatencyWindow(latency_mapping())
    window.add(0.0, True, 10.0)  # zero is a latency (a cache hit timed coarsely)
    with pytest.raises(ValueError, match=f"got {latency!r}"):
        window.add(latency, True, 10.0)
    snap = window.snapshot(10.0)
    assert (snap.requests, snap.p99_s) == (1, 0.0)


@pytest.mark.parametrize(("window_seconds", "buckets"), [(0, 12), (-1, 12), (60, 0)])
def test_bad_window_shape_is_refused(window_seconds: float, buckets: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        LatencyWindow(latency_mapping(), window_seconds=window_seconds, buckets=buckets)


def _append(into: list[tuple[float, int, int]]) -> BucketClosed:
    def on_close(start: float, requests: int, errors: int) -> None:
        into.append((start, requests, errors))

    return on_close


# -- frozen buckets ---------------------------------------------------------------

MANY_QUANTILES = tuple(i / 100 for i in range(101))
latencies = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=1e-7, max_value=3_600.0)), min_size=1, max_size=200
)


def new_sketch(mapping: LogarithmicMapping) -> tuple[BaseDDSketch, DenseStore]:
    """The reference: a plain DDSketch on ``mapping``, and its store of positive values."""
    store = DenseStore(32)
    return BaseDDSketch(mapping, store, DenseStore(32), 0.0), store


@given(st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=1))
def test_the_window_bins_each_latency_as_the_sketch_would(values: list[float]) -> None:
    mapping = latency_mapping()
    window = LatencyWindow(mapping, window_seconds=60, buckets=12)
    sketch, store = new_sketch(mapping)
    for value in values:
        window.add(value, True, 1.0)  # bucket 0: [0, 5)
        sketch.add(value)
    (bucket,) = window.closed_buckets(5.0)  # the same keys and counts, byte for byte
    assert bucket == FrozenBucket.freeze(store, epoch=0, requests=len(values), errors=0)


def live_sketch(values: list[float], accuracy: float = 0.01) -> tuple[BaseDDSketch, DenseStore]:
    sketch, store = new_sketch(latency_mapping(accuracy))
    for value in values:
        sketch.add(value)
    return sketch, store


@settings(max_examples=100, deadline=None)
@given(latencies, st.sampled_from([0.01, 0.02, 0.05]))
def test_a_frozen_bucket_answers_every_quantile_as_its_live_sketch(
    values: list[float], accuracy: float
) -> None:
    sketch, store = live_sketch(values, accuracy)
    frozen = FrozenBucket.freeze(store, epoch=7, requests=len(values), errors=1)
    assert (frozen.epoch, frozen.requests, frozen.errors) == (7, len(values), 1)
    mapping = latency_mapping(accuracy)
    assert frozen.quantiles(MANY_QUANTILES, mapping) == tuple(
        sketch.get_quantile_value(q) for q in MANY_QUANTILES
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(latencies, min_size=1, max_size=6))
def test_merged_frozen_buckets_answer_as_the_merged_sketches(groups: list[list[float]]) -> None:
    frozen = []
    merged, _ = new_sketch(latency_mapping())
    for values in groups:
        sketch, store = live_sketch(values)
        frozen.append(FrozenBucket.freeze(store, epoch=1, requests=len(values), errors=0))
        merged.merge(sketch)
    bucket = FrozenBucket.merge(2, frozen)
    assert (bucket.epoch, bucket.requests) == (2, sum(len(values) for values in groups))
    assert bucket.quantiles(MANY_QUANTILES, latency_mapping()) == tuple(
        merged.get_quantile_value(q) for q in MANY_QUANTILES
    )


@pytest.mark.parametrize("weight", [1, 255, 256, 65_536, 2**32])
def test_counts_wider_than_a_byte_survive_the_freeze(weight: int) -> None:
    # One sketch insert per request in a window; a weight stands in for that many requests.
    sketch, store = new_sketch(latency_mapping())
    sketch.add(0.010, float(weight))
    sketch.add(0.500)
    sketch.add(90.0, float(weight))
    frozen = FrozenBucket.freeze(store, epoch=0, requests=2 * weight + 1, errors=0)
    twice = FrozenBucket.merge(0, [frozen, frozen])
    qs = (0.0, 0.49, 0.5, 0.51, 1.0)
    assert frozen.quantiles(qs, latency_mapping()) == tuple(
        sketch.get_quantile_value(q) for q in qs
    )
    sketch.merge(sketch)
    assert twice.requests == 4 * weight + 2
    assert twice.quantiles(qs, latency_mapping()) == tuple(sketch.get_quantile_value(q) for q in qs)


def test_an_empty_merge_has_no_quantiles() -> None:
    empty = FrozenBucket.merge(3, [])
    assert (empty.epoch, empty.requests, empty.errors) == (3, 0, 0)
    assert empty.quantiles(QUANTILES, latency_mapping()) == (None, None, None)


def test_a_frozen_bucket_is_a_fraction_of_its_live_sketch() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(math.log(0.05), 0.6) for _ in range(10)]
    _, store = live_sketch(values)
    frozen = FrozenBucket.freeze(store, epoch=0, requests=10, errors=0)
    live_bytes = sys.getsizeof(store.bins) + sum(sys.getsizeof(b) for b in store.bins if b)
    assert sys.getsizeof(frozen) * 5 < live_bytes


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.floats(min_value=0.0, max_value=2.0), latencies), min_size=1, max_size=12)
)
def test_snapshots_across_rotations_equal_one_sketch_of_the_window(
    steps: list[tuple[float, list[float]]],
) -> None:
    """The window answers exactly as one DDSketch of the latencies still in it."""
    window = LatencyWindow(latency_mapping(), window_seconds=6, buckets=3)  # 2 s buckets
    now = 100.0
    added: list[tuple[float, float]] = []
    for advance, values in steps:
        now += advance
        for value in values:
            window.add(value, True, now)
            added.append((now, value))
        oldest = (now // 2 - 3) * 2 + 2  # the start of the oldest bucket still in the window
        expected, _ = new_sketch(latency_mapping())
        for at, value in added:
            if at >= oldest:
                expected.add(value)
        snap = window.snapshot(now)
        assert snap.requests == expected.count
        assert quantiles(window, now) == tuple(expected.get_quantile_value(q) for q in QUANTILES)
