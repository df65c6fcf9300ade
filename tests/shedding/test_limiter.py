"""Admission against a concurrency limit: priorities, the queue, deadlines, no leaks.

A fixed limit and a manual clock make every decision deterministic; waiters
are asyncio tasks, and time is moved by hand (``clock.advance`` then
``limiter.expire()``), never slept through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sloguard._clock import ManualClock
from sloguard.shedding.limit import AdaptiveLimit, FixedLimit
from sloguard.shedding.limiter import Permit, PriorityLimiter, Refusal, limiter_for
from sloguard.slo import load_slo_file
from sloguard.slo.schema import Priority


class RecordingLimit:
    """A fixed limit that keeps the samples it is given."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.samples: list[tuple[float, float, int, bool]] = []

    def on_sample(self, now: float, latency_s: float, inflight: int, dropped: bool) -> None:
        self.samples.append((now, latency_s, inflight, dropped))


def make(
    clock: ManualClock, limit: int = 1, *, queue_size: int = 10, budget_s: float | None = None
) -> PriorityLimiter:
    return PriorityLimiter(
        FixedLimit(limit), clock=clock, queue_size=queue_size, max_wait_s=1.0, budget_s=budget_s
    )


def permit(got: Permit | Refusal | None) -> Permit:
    assert isinstance(got, Permit), got
    return got


async def queue_up(limiter: PriorityLimiter, priority: Priority) -> asyncio.Task[Permit | Refusal]:
    """Start a waiter and let it reach the queue."""
    before = limiter.queued
    task = asyncio.create_task(limiter.acquire(priority))
    await asyncio.sleep(0)  # one turn of the loop: no time passes
    assert limiter.queued == before + 1
    return task


async def test_under_the_limit_a_permit_is_given_at_once(clock: ManualClock) -> None:
    limiter = make(clock, limit=2)
    first = permit(limiter.try_acquire("low"))
    second = permit(await limiter.acquire("normal"))
    assert (limiter.inflight, first.inflight, second.inflight) == (2, 1, 2)
    assert limiter.try_acquire("critical") is None  # at the limit: the async path decides
    first.success()
    second.success()
    assert limiter.inflight == 0


async def test_at_the_limit_low_is_refused_at_once(clock: ManualClock) -> None:
    limiter = make(clock)
    held = permit(limiter.try_acquire("normal"))
    refusal = await limiter.acquire("low")
    assert refusal == Refusal("concurrency_limit", 1)
    assert limiter.refused == {("concurrency_limit", "low"): 1}
    assert (limiter.inflight, limiter.queued) == (1, 0)
    held.success()
    assert limiter.inflight == 0


async def test_waiters_are_served_most_important_first_then_in_arrival_order(
    clock: ManualClock,
) -> None:
    limiter = make(clock)
    held = permit(limiter.try_acquire("normal"))
    tasks = {
        name: await queue_up(limiter, priority)
        for name, priority in [
            ("normal-1", "normal"),
            ("high-1", "high"),
            ("normal-2", "normal"),
            ("critical", "critical"),
            ("high-2", "high"),
        ]
    }
    served: list[str] = []
    current = held
    while tasks:
        current.success()
        await asyncio.sleep(0)
        done = [name for name, task in tasks.items() if task.done()]
        assert len(done) == 1
        served.append(done[0])
        current = permit(tasks.pop(done[0]).result())
    current.success()
    assert served == ["critical", "high-1", "high-2", "normal-1", "normal-2"]
    assert (limiter.inflight, limiter.queued) == (0, 0)


async def test_a_newcomer_never_overtakes_a_waiter(clock: ManualClock) -> None:
    limiter = make(clock)
    held = permit(limiter.try_acquire("normal"))
    waiter = await queue_up(limiter, "normal")
    held.success()  # the place goes to the waiter, not to whoever asks next
    assert limiter.try_acquire("critical") is None
    permit(await waiter).success()
    assert limiter.inflight == 0


async def test_a_request_that_cannot_meet_its_deadline_is_refused_at_once(
    clock: ManualClock,
) -> None:
    limiter = make(clock, budget_s=0.100)
    first = permit(limiter.try_acquire("high"))
    clock.advance(0.040)
    first.success()  # the latency is now known: 40 ms
    assert limiter.latency_s == pytest.approx(0.040)
    held = permit(limiter.try_acquire("high"))
    # First in line: 40 ms of wait (one place freed per 40 ms at a limit of 1) + 40 ms.
    waiter = await queue_up(limiter, "high")
    # Second in line: 80 + 40 ms is past the 100 ms budget.
    assert await limiter.acquire("high") == Refusal("deadline", 1)
    assert await limiter.acquire("normal") == Refusal("deadline", 1)
    # An explicit deadline: when the request must be answered (its start + the budget).
    assert await limiter.acquire("high", deadline=clock() + 0.05) == Refusal("deadline", 1)
    patient = asyncio.create_task(limiter.acquire("high", deadline=clock() + 1.0))
    await asyncio.sleep(0)
    assert limiter.queued == 2
    assert limiter.refused == {("deadline", "high"): 2, ("deadline", "normal"): 1}
    held.success()
    permit(await waiter).success()
    permit(await patient).success()
    assert (limiter.inflight, limiter.queued) == (0, 0)


async def test_critical_is_never_refused_for_its_deadline(clock: ManualClock) -> None:
    limiter = make(clock, budget_s=0.010)
    first = permit(limiter.try_acquire("critical"))
    clock.advance(0.050)
    first.success()  # 50 ms, five times the budget
    held = permit(limiter.try_acquire("critical"))
    waiter = await queue_up(limiter, "critical")
    clock.advance(0.5)
    assert limiter.expire() == 0
    held.success()
    permit(await waiter).success()
    assert limiter.refused == {}


async def test_a_waiter_that_can_no_longer_finish_in_time_is_refused(clock: ManualClock) -> None:
    limiter = make(clock, budget_s=0.100)
    first = permit(limiter.try_acquire("high"))
    clock.advance(0.030)
    first.success()  # 30 ms a request
    held = permit(limiter.try_acquire("high"))
    waiter = await queue_up(limiter, "high")
    clock.advance(0.069)  # 31 ms left of its 100: still enough for 30 ms of work
    assert limiter.expire() == 0
    clock.advance(0.002)  # 29 ms left: no longer
    assert limiter.expire() == 1
    assert await waiter == Refusal("deadline", 1)
    assert (limiter.inflight, limiter.queued) == (1, 0)
    held.success()
    assert limiter.inflight == 0


async def test_a_waiter_is_refused_after_the_longest_wait(clock: ManualClock) -> None:
    limiter = make(clock)  # no budget: only max_wait_s (1 s) bounds the wait
    held = permit(limiter.try_acquire("normal"))
    waiter = await queue_up(limiter, "normal")
    clock.advance(0.999)
    assert limiter.expire() == 0
    clock.advance(0.001)
    assert limiter.expire() == 1
    assert await waiter == Refusal("queue_timeout", 1)
    assert limiter.refused == {("queue_timeout", "normal"): 1}
    held.success()
    assert (limiter.inflight, limiter.queued) == (0, 0)


async def test_a_waiter_whose_time_is_up_is_not_given_a_freed_place(clock: ManualClock) -> None:
    limiter = make(clock)
    held = permit(limiter.try_acquire("normal"))
    late = await queue_up(limiter, "normal")
    clock.advance(1.0)  # its timer has not run yet when the place frees up
    held.success()
    refusal = await late
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "queue_timeout"
    assert limiter.inflight == 0


async def test_the_loop_timer_refuses_a_waiter_by_itself() -> None:
    loop = asyncio.get_running_loop()
    limiter = PriorityLimiter(FixedLimit(1), clock=loop.time, max_wait_s=0.001)
    held = permit(limiter.try_acquire("high"))
    assert await limiter.acquire("high") == Refusal("queue_timeout", 1)
    held.success()
    assert (limiter.inflight, limiter.queued) == (0, 0)


async def test_a_full_queue_makes_room_for_a_more_important_request(clock: ManualClock) -> None:
    limiter = make(clock, queue_size=2)
    held = permit(limiter.try_acquire("normal"))
    first = await queue_up(limiter, "normal")
    second = await queue_up(limiter, "normal")
    assert await limiter.acquire("normal") == Refusal("queue_full", 1)
    high = asyncio.create_task(limiter.acquire("high"))
    await asyncio.sleep(0)
    assert await second == Refusal("queue_full", 1)  # the newest of the least important
    assert limiter.queued == 2
    assert limiter.refused == {("queue_full", "normal"): 2}
    held.success()
    permit(await high).success()
    permit(await first).success()
    assert (limiter.inflight, limiter.queued) == (0, 0)


async def test_without_a_queue_every_priority_is_refused_at_the_limit(clock: ManualClock) -> None:
    limiter = make(clock, queue_size=0)
    held = permit(limiter.try_acquire("normal"))
    assert await limiter.acquire("critical") == Refusal("concurrency_limit", 1)
    held.success()


async def test_a_cancelled_waiter_frees_its_place(clock: ManualClock) -> None:
    limiter = make(clock, queue_size=1)
    held = permit(limiter.try_acquire("normal"))
    gone = await queue_up(limiter, "normal")
    gone.cancel()  # its client disconnected
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert limiter.queued == 0
    waiter = await queue_up(limiter, "normal")  # the place in the queue is free again
    held.success()
    permit(await waiter).success()
    assert (limiter.inflight, limiter.queued) == (0, 0)
    assert limiter.refused == {}


async def test_a_permit_handed_to_a_waiter_just_as_it_is_cancelled_is_given_back(
    clock: ManualClock,
) -> None:
    limit = RecordingLimit(1)
    limiter = PriorityLimiter(limit, clock=clock)
    held = permit(limiter.try_acquire("normal"))
    unlucky = await queue_up(limiter, "normal")
    held.success()  # the place goes to the waiter: its future holds a permit ...
    assert limiter.inflight == 1
    unlucky.cancel()  # ... and it is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    assert (limiter.inflight, limiter.queued) == (0, 0)
    assert len(limit.samples) == 1  # given back without a sample: it says nothing


async def serve(
    limiter: PriorityLimiter, priority: Priority, app: Callable[[], Awaitable[None]]
) -> Refusal | None:
    """What the request path does with a permit: success, dropped on a timeout, and
    ignore on anything else (an exception, a cancelled request)."""
    got = limiter.try_acquire(priority) or await limiter.acquire(priority)
    if isinstance(got, Refusal):
        return got
    try:
        await app()
    except TimeoutError:
        got.dropped()
        raise
    except BaseException:
        got.ignore()
        raise
    got.success()
    return None


async def test_every_permit_comes_back_on_success_exception_timeout_cancel_and_refusal(
    clock: ManualClock,
) -> None:
    limit = RecordingLimit(1)
    limiter = PriorityLimiter(limit, clock=clock)

    async def ok() -> None:
        clock.advance(0.010)

    async def boom() -> None:
        raise RuntimeError("the app failed")

    async def too_slow() -> None:
        raise TimeoutError

    release = asyncio.Event()

    async def blocked() -> None:
        await release.wait()

    assert await serve(limiter, "high", ok) is None
    with pytest.raises(RuntimeError):
        await serve(limiter, "high", boom)
    with pytest.raises(TimeoutError):
        await serve(limiter, "high", too_slow)
    running = asyncio.create_task(serve(limiter, "high", blocked))
    await asyncio.sleep(0)
    assert limiter.inflight == 1
    assert await serve(limiter, "low", ok) == Refusal("concurrency_limit", 1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert (limiter.inflight, limiter.queued) == (0, 0)
    # Samples: the success (10 ms, alone in flight) and the timeout; nothing else.
    assert [(latency, inflight, dropped) for _, latency, inflight, dropped in limit.samples] == [
        (pytest.approx(0.010), 1, False),
        (0.0, 1, True),
    ]


async def test_a_permit_is_released_exactly_once(clock: ManualClock) -> None:
    limit = RecordingLimit(2)
    limiter = PriorityLimiter(limit, clock=clock)
    first = permit(limiter.try_acquire("normal"))
    permit(limiter.try_acquire("normal"))
    first.success(0.020)
    first.success(0.020)
    first.dropped()
    first.ignore()
    assert first.released
    assert limiter.inflight == 1
    assert limit.samples == [(clock(), 0.020, 1, False)]


async def test_a_raised_limit_admits_the_waiters_first(clock: ManualClock) -> None:
    limit = FixedLimit(1)
    limiter = PriorityLimiter(limit, clock=clock)
    held = permit(limiter.try_acquire("normal"))
    waiter = await queue_up(limiter, "normal")
    limit.limit = 3  # e.g. a reloaded SLO file
    newcomer = permit(await limiter.acquire("low"))
    waited = permit(await waiter)
    assert (waited.inflight, newcomer.inflight) == (2, 3)  # the waiter went first
    for p in (held, newcomer, waited):
        p.success()
    assert limiter.inflight == 0


async def test_the_retry_after_hint_grows_with_the_queue_to_drain(clock: ManualClock) -> None:
    limiter = make(clock, queue_size=100)
    first = permit(limiter.try_acquire("normal"))
    clock.advance(0.5)
    first.success()  # half a second a request, one at a time
    held = permit(limiter.try_acquire("normal"))
    waiters = [await queue_up(limiter, "normal") for _ in range(4)]
    # Four waiting and the newcomer: 5 x 0.5 s to drain, plus its own 0.5 s.
    assert await limiter.acquire("low") == Refusal("concurrency_limit", 3)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    held.success()
    assert (limiter.inflight, limiter.queued) == (0, 0)


SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 250}
  availability: {target: 0.99}
"""


def test_limiter_for_reads_the_slo_file(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "pdf.yml"
    path.write_text(SLO, encoding="utf-8")
    limiter = limiter_for(load_slo_file(path), clock=clock)
    assert limiter is not None
    assert isinstance(limiter.algorithm, AdaptiveLimit)
    assert (limiter.limit, limiter.queue_size, limiter.max_wait_s) == (10, 100, 1.0)
    assert limiter.budget_s == pytest.approx(0.250)  # the p99 target

    path.write_text(
        SLO + "shedding:\n  concurrency: {mode: fixed, initial: 4, queue: {size: 8, "
        "max_wait_ms: 200, deadline: p95}}\n",
        encoding="utf-8",
    )
    fixed = limiter_for(load_slo_file(path), clock=clock)
    assert fixed is not None
    assert isinstance(fixed.algorithm, FixedLimit)
    assert (fixed.limit, fixed.queue_size, fixed.max_wait_s) == (4, 8, 0.2)
    assert fixed.budget_s == pytest.approx(0.100)

    path.write_text(SLO + "shedding: {concurrency: {mode: 'off'}}\n", encoding="utf-8")
    assert limiter_for(load_slo_file(path), clock=clock) is None


def test_a_file_without_the_deadlines_percentile_uses_its_loosest_target(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "pdf.yml"
    # A p95-only SLA (latency targets are each optional): the p99 deadline falls back to it.
    path.write_text(SLO.replace("p50_ms: 50, p95_ms: 100, p99_ms: 250", "p95_ms: 100"))
    limiter = limiter_for(load_slo_file(path), clock=clock)
    assert limiter is not None
    assert limiter.budget_s == pytest.approx(0.100)
    path.write_text(f"{SLO.splitlines()[0]}\ntier: gold\n", encoding="utf-8")  # gold: p99 only
    tiered = limiter_for(load_slo_file(path), clock=clock)
    assert tiered is not None
    assert tiered.budget_s == pytest.approx(0.200)


def test_bad_arguments_are_refused(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="queue_size"):
        PriorityLimiter(FixedLimit(1), queue_size=-1)
    with pytest.raises(ValueError, match="max_wait_s"):
        PriorityLimiter(FixedLimit(1), max_wait_s=0)
