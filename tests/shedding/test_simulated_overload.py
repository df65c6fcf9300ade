"""The adaptive limit and the priority limiter together, under simulated overload.

The scenarios of the overload benchmark (benchmarks/overload.py), on simulated
time: a service of 4 workers at 25 ms each (160 requests a second), its SLO
p50 50 ms, p95 100 ms, p99 250 ms; Poisson arrivals, ``high`` or ``low``. Each
request goes through the limiter as the request path does (``try_acquire``,
else ``acquire`` with its deadline), then through the service, and reports its
latency. The event loop is real, the clock is not: the simulation moves a
manual clock from event to event and lets the tasks run in between.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from sloguard._clock import ManualClock
from sloguard.shedding.limit import AdaptiveLimit
from sloguard.shedding.limiter import PriorityLimiter, Refusal

TARGETS = {0.5: 0.050, 0.95: 0.100, 0.99: 0.250}
CAPACITY = 160.0  # 4 workers / 25 ms


@dataclass(frozen=True)
class Answer:
    second: int  # of its arrival
    priority: str
    ok: bool
    latency_s: float  # from arrival to answer; 0 for a refusal


async def simulate(
    rate: Callable[[float], float], high_share: float, seconds: int, seed: int = 3
) -> list[Answer]:
    clock = ManualClock(0.0)
    limiter = PriorityLimiter(AdaptiveLimit(TARGETS), clock=clock, budget_s=0.250)
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    order = itertools.count()
    events: list[tuple[float, int, asyncio.Future[None] | None]] = [(0.0, next(order), None)]
    backlog: list[asyncio.Future[None]] = []  # inside the service, waiting for a worker
    busy = 0
    answers: list[Answer] = []

    async def request(priority: str, start: float) -> None:
        nonlocal busy
        got = limiter.try_acquire("high" if priority == "high" else "low")
        if got is None:
            got = await limiter.acquire(
                "high" if priority == "high" else "low", deadline=start + 0.250
            )
        if isinstance(got, Refusal):
            answers.append(Answer(int(start), priority, False, 0.0))
            return
        done: asyncio.Future[None] = loop.create_future()
        if busy < 4:
            busy += 1
            heapq.heappush(events, (clock() + 0.025, next(order), done))
        else:
            backlog.append(done)
        await done
        got.success(clock() - got.acquired_at)
        answers.append(Answer(int(start), priority, True, clock() - start))

    tasks: list[asyncio.Task[None]] = []
    while events:
        now, _, done = heapq.heappop(events)
        if now >= seconds:
            break
        clock.now = now
        limiter.expire()
        if done is None:  # an arrival
            heapq.heappush(events, (now + rng.expovariate(rate(now)), next(order), None))
            priority = "high" if rng.random() < high_share else "low"
            tasks.append(asyncio.create_task(request(priority, now)))
        else:  # a worker finished
            done.set_result(None)
            if backlog:
                heapq.heappush(events, (now + 0.025, next(order), backlog.pop(0)))
            else:
                busy -= 1
        for _ in range(4):  # let the woken tasks run; no time passes
            await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return answers


def p95(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def check(answers: list[Answer], seconds: int) -> None:
    """The benchmark's targets, after the first second and before the (cut) last one."""
    high = [a for a in answers if a.priority == "high" and 1 <= a.second < seconds - 1]
    assert sum(a.ok for a in high) / len(high) >= 0.999
    for second in range(1, seconds - 1):
        latencies = [a.latency_s for a in high if a.second == second and a.ok]
        assert p95(latencies) <= 0.100, f"second {second}"
        goodput = sum(1 for a in answers if a.second == second and a.ok and a.latency_s <= 0.100)
        assert goodput >= 0.9 * CAPACITY, f"second {second}"


@pytest.mark.parametrize(
    ("overload", "high_share"),
    [(3.0, 0.20), (10.0, 0.05)],
    ids=["3x-20%-high", "10x-5%-high"],
)
async def test_a_steady_overload(overload: float, high_share: float) -> None:
    answers = await simulate(lambda now: overload * CAPACITY, high_share, seconds=6)
    check(answers, 6)
    low = [a for a in answers if a.priority == "low" and a.second >= 1]
    assert sum(not a.ok for a in low) / len(low) >= 0.5  # the low priority made room


async def test_a_step_from_half_to_five_times_the_capacity_and_back() -> None:
    answers = await simulate(
        lambda now: 5 * CAPACITY if 3 <= now < 6 else 0.5 * CAPACITY, 0.10, seconds=9
    )
    high = [a for a in answers if a.priority == "high" and a.second >= 1]
    assert sum(a.ok for a in high) / len(high) >= 0.999
    for second in range(1, 8):
        assert p95([a.latency_s for a in high if a.second == second and a.ok]) <= 0.100
    # Low priority is admitted again within a second of the load dropping.
    after = [a for a in answers if a.priority == "low" and a.second in (6, 7)]
    assert sum(a.ok for a in after) / len(after) >= 0.95
