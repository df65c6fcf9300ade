"""The concurrency limit, driven by a simulated service on a simulated clock.

The service has ``workers`` that each serve one request at a time, and a FIFO
in front of them (a request beyond the workers waits for one): its latency
grows with the concurrency above its capacity, as a real saturated service's
does. Arrivals are Poisson (seeded); one over the limit is refused. Nothing
sleeps: the simulation moves its own clock from event to event.
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sloguard.shedding.limit import AdaptiveLimit, FixedLimit, Limit, limit_for
from sloguard.slo.schema import ConcurrencyConfig, LatencyTarget

BENCH_TARGETS = {0.5: 0.050, 0.95: 0.100, 0.99: 0.250}  # benchmarks/overload.py's SLO


@dataclass
class Second:
    """What one simulated second looked like."""

    limits: list[int] = field(default_factory=list)  # the limit at each completion
    latencies: list[float] = field(default_factory=list)
    refused: int = 0

    @property
    def served(self) -> int:
        return len(self.latencies)


def simulate(
    limit: Limit,
    *,
    rate: Callable[[float], float],
    seconds: float,
    workers: int = 4,
    service_s: Callable[[float], float] = lambda now: 0.025,
    seed: int = 7,
) -> list[Second]:
    """Run ``rate(now)`` requests a second against the service behind ``limit``."""
    rng = random.Random(seed)
    order = itertools.count()
    events: list[tuple[float, int, tuple[float, int] | None]] = [(0.0, next(order), None)]
    waiting: deque[tuple[float, int]] = deque()
    busy = inflight = 0
    out = [Second() for _ in range(int(seconds))]
    while events:
        now, _, request = heapq.heappop(events)
        if now >= seconds:
            break
        second = out[int(now)]
        if request is None:  # an arrival; schedule the next one
            heapq.heappush(events, (now + rng.expovariate(rate(now)), next(order), None))
            if inflight >= limit.limit:
                second.refused += 1
                continue
            inflight += 1
            admitted = (now, inflight)
            if busy < workers:
                busy += 1
                heapq.heappush(events, (now + service_s(now), next(order), admitted))
            else:
                waiting.append(admitted)
        else:  # a completion
            started, admitted_with = request
            inflight -= 1
            limit.on_sample(now, now - started, admitted_with, False)
            second.latencies.append(now - started)
            second.limits.append(limit.limit)
            if waiting:
                heapq.heappush(events, (now + service_s(now), next(order), waiting.popleft()))
            else:
                busy -= 1
    return out


def capacity(workers: int = 4, service_s: float = 0.025) -> float:
    return workers / service_s


def test_a_fixed_limit_never_moves() -> None:
    limit = FixedLimit(4)
    run = simulate(limit, rate=lambda now: 3 * capacity(), seconds=3)
    assert {lim for second in run for lim in second.limits} == {4}
    with pytest.raises(ValueError, match="at least 1"):
        FixedLimit(0)


def test_under_overload_it_settles_where_latency_meets_the_setpoint() -> None:
    limit = AdaptiveLimit(BENCH_TARGETS)  # setpoint 0.8: a median of 40 ms at most
    run = simulate(limit, rate=lambda now: 3 * capacity(), seconds=10)
    for second in run[1:]:
        assert statistics.median(second.latencies) <= 0.040 * 1.1
        assert max(second.latencies) <= 0.100  # p95 and p99 well within their targets
        assert second.served >= 0.98 * capacity()  # the service never idles
    # 4 workers at 25 ms make 40 ms at 6.4 in flight: above the 4 of the capacity, no more.
    assert min(run[-1].limits) >= 5
    assert max(run[-1].limits) <= 8


def test_it_grows_while_the_limit_is_used_and_latency_is_low() -> None:
    # 50 workers at 10 ms serve 5,000 a second; 2,500 a second need ~25 in flight.
    run = simulate(
        AdaptiveLimit(BENCH_TARGETS, initial=4),
        rate=lambda now: 2_500,
        seconds=3,
        workers=50,
        service_s=lambda now: 0.010,
    )
    assert run[0].refused > 0  # 4 in flight is too few at first ...
    assert run[-1].refused == 0  # ... and soon it is not
    assert min(run[-1].limits) >= 25
    assert max(max(second.latencies) for second in run) < 0.02  # it never queued


def test_a_sudden_overload_is_cut_within_a_fraction_of_a_second() -> None:
    # Light load first: the limit is near its initial value; then 10x the capacity.
    limit = AdaptiveLimit(BENCH_TARGETS, initial=50)
    run = simulate(
        limit, rate=lambda now: 0.5 * capacity() if now < 3 else 10 * capacity(), seconds=6
    )
    spike = run[3]
    assert statistics.median(spike.latencies) <= 0.050
    assert max(run[4].limits) <= 8
    assert all(second.served >= 0.98 * capacity() for second in run[4:])


def test_a_steady_overload_does_not_make_it_oscillate() -> None:
    limit = AdaptiveLimit(BENCH_TARGETS)
    run = simulate(limit, rate=lambda now: 3 * capacity(), seconds=20, seed=11)
    steady = [lim for second in run[2:] for lim in second.limits]
    # Within one step either way of where it settles, for 18 seconds.
    assert max(steady) - min(steady) <= 3
    assert statistics.pstdev(steady) < 1.0

    # The same at scale: 100 workers of 20 ms, 2x overloaded, settle within 5%.
    big = AdaptiveLimit(BENCH_TARGETS)
    run = simulate(
        big,
        rate=lambda now: 2 * capacity(100, 0.020),
        seconds=4,
        workers=100,
        service_s=lambda now: 0.020,
    )
    settled = [lim for second in run[2:] for lim in second.limits]
    assert max(settled) <= 1.05 * min(settled)
    assert statistics.mean(settled) == pytest.approx(200, rel=0.05)  # 40 ms: 100 per 20 ms


def test_the_limit_stays_within_its_bounds() -> None:
    low_max = AdaptiveLimit(BENCH_TARGETS, initial=4, max_limit=6)
    run = simulate(
        low_max, rate=lambda now: 2_500, seconds=3, workers=50, service_s=lambda now: 0.010
    )
    assert max(lim for second in run for lim in second.limits) == 6

    high_min = AdaptiveLimit(BENCH_TARGETS, min_limit=12, initial=12)
    run = simulate(high_min, rate=lambda now: 10 * capacity(), seconds=3)
    assert min(lim for second in run for lim in second.limits) == 12


def test_an_unused_limit_decays_towards_what_is_used() -> None:
    limit = AdaptiveLimit(BENCH_TARGETS, initial=100)
    run = simulate(limit, rate=lambda now: 0.25 * capacity(), seconds=8)
    assert run[0].refused == 0
    assert min(run[-1].limits) <= 12
    assert all(second.refused == 0 for second in run)  # still room for its bursts


def test_an_slo_the_service_cannot_meet_steers_to_its_knee_instead_of_starving_it() -> None:
    # A 25 ms service cannot meet a 10 ms median: the limit stays near the capacity
    # (tolerance 1.5: 6 in flight for 4 workers), not at its minimum.
    limit = AdaptiveLimit({0.5: 0.010, 0.95: 0.020, 0.99: 0.030})
    run = simulate(limit, rate=lambda now: 3 * capacity(), seconds=8)
    assert limit.noload_s == pytest.approx(0.025)
    assert all(second.served >= 0.98 * capacity() for second in run[2:])
    assert min(run[-1].limits) >= 4
    assert max(run[-1].limits) <= 7


def test_a_service_that_becomes_slower_is_learned_again() -> None:
    # 10 ms at first (the no-load latency learned), then 40 ms whatever the load,
    # against a 20 ms median: the limit falls to its minimum, learns that 40 ms is
    # now the no-load latency, and comes back to the knee.
    limit = AdaptiveLimit({0.5: 0.020, 0.95: 0.050, 0.99: 0.100})
    run = simulate(
        limit,
        rate=lambda now: 0.25 * capacity(4, 0.010) if now < 2 else 3 * capacity(4, 0.040),
        seconds=8,
        service_s=lambda now: 0.010 if now < 2 else 0.040,
    )
    assert limit.noload_s == pytest.approx(0.040)
    assert min(run[-1].limits) >= 4
    assert all(second.served >= 0.98 * capacity(4, 0.040) for second in run[-3:])


def test_drops_cut_the_limit() -> None:
    limit = AdaptiveLimit(BENCH_TARGETS, initial=40, min_samples=10)
    for i in range(10):  # fast answers, but half of them dropped, at the limit
        limit.on_sample(i * 0.02, 0.005, 40, dropped=i % 2 == 0)
    assert limit.pressure == 2.0
    assert limit.limit == 20


def test_a_tail_percentile_is_read_only_from_enough_samples() -> None:
    limit = AdaptiveLimit({0.99: 0.100}, initial=10, min_samples=10, interval_s=0.1)
    now = 0.0
    for i in range(20):  # one slow answer in twenty: no p99 yet
        now += 0.011
        limit.on_sample(now, 0.5 if i == 0 else 0.01, 10, dropped=False)
    assert limit.limit >= 10
    assert limit.pressure < 1
    for i in range(100):  # two in a hundred over the target: that is a p99
        now += 0.011
        limit.on_sample(now, 0.5 if i in (40, 50) else 0.01, 10, dropped=False)
    assert limit.limit < 10


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="quantiles"):
        AdaptiveLimit({})
    with pytest.raises(ValueError, match="quantiles"):
        AdaptiveLimit({0.95: -1.0})
    with pytest.raises(ValueError, match="min_limit <= initial"):
        AdaptiveLimit(BENCH_TARGETS, min_limit=5, initial=2)
    with pytest.raises(ValueError, match="tolerance"):
        AdaptiveLimit(BENCH_TARGETS, tolerance=1.0)


def test_limit_for_follows_the_mode() -> None:
    latency = LatencyTarget(p50_ms=50, p95_ms=100, p99_ms=250)
    assert limit_for(ConcurrencyConfig(mode="off"), latency) is None
    fixed = limit_for(ConcurrencyConfig(mode="fixed", initial=7), latency)
    assert isinstance(fixed, FixedLimit)
    assert fixed.limit == 7
    adaptive = limit_for(ConcurrencyConfig(min=20, max=50), latency)
    assert isinstance(adaptive, AdaptiveLimit)
    assert adaptive.limit == 20
