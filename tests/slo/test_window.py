from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.slo import LatencyWindow
from sloguard.slo import window as window_module
from sloguard.slo.window import BucketClosed, latency_mapping

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
    window = LatencyWindow(
        latency_mapping(), window_seconds=10, buckets=2, on_close=_append(closed)
    )
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
    assert window_module._NO_SKETCH.count == 0  # the idle placeholder is never written


def test_memory_is_bounded_without_reads() -> None:
    window = LatencyWindow(latency_mapping(), window_seconds=60, buckets=12)
    for second in range(10_000):
        window.add(0.01, True, float(second))
    assert len(window._closed) <= 12
    assert window.snapshot(9_999.0).requests == 60


@pytest.mark.parametrize(("window_seconds", "buckets"), [(0, 12), (-1, 12), (60, 0)])
def test_bad_window_shape_is_refused(window_seconds: float, buckets: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        LatencyWindow(latency_mapping(), window_seconds=window_seconds, buckets=buckets)


def _append(into: list[tuple[float, int, int]]) -> BucketClosed:
    def on_close(start: float, requests: int, errors: int) -> None:
        into.append((start, requests, errors))

    return on_close
