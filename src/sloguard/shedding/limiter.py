"""Admitting requests against a capability's concurrency limit, by priority.

A :class:`PriorityLimiter` counts the requests of one capability in flight and
admits a new one while the count is under its :class:`~sloguard.shedding.limit.Limit`.
At the limit:

- ``low`` is refused at once (reason ``concurrency_limit``);
- ``critical``, ``high`` and ``normal`` wait in a short queue, the most important
  first and first come, first served within a priority. A place freed by a
  finished request goes to the head of the queue, never to a newcomer.
- A request whose expected finish, now plus its expected wait plus one latency,
  is already past its deadline is refused at once (``deadline``) rather than
  served late; one that waits so long that it could no longer finish in time
  is refused then (``deadline``), and none waits longer than ``max_wait_s``
  (``queue_timeout``). ``critical`` is never refused for its deadline, only
  for waiting ``max_wait_s``.
- A full queue makes room for a more important newcomer by refusing its least
  important, most recent waiter (``queue_full``); otherwise the newcomer is
  refused.

The expected wait of the ``k``-th in line is ``k * latency / limit``: by
Little's law places free up at ``limit / latency`` a second. ``latency`` is a
moving average of the latencies of the permits returned successfully.

Every admission is a :class:`Permit` that must report its outcome exactly
once: ``success(latency_s)``, ``dropped()`` (timed out, or failed because the
service was overloaded) or ``ignore()`` (failed for a reason unrelated to load;
the outcome says nothing about the limit). Reporting gives the place back; a
second report is a no-op. A waiter whose task is cancelled (its client went
away) leaves the queue, and a permit handed to it just as it was cancelled is
given back.

The limiter lives on one event loop: it is not thread-safe, and needs no lock.
Time comes from ``clock``; the waiters' timers run on the loop, and
:meth:`PriorityLimiter.expire` refuses those whose time is up by ``clock``
(tests move a manual clock and call it).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Literal

from sloguard._clock import Clock, monotonic
from sloguard.shedding.limit import Limit, limit_for
from sloguard.slo.schema import Priority, SLOFile

RefusalReason = Literal["concurrency_limit", "queue_full", "deadline", "queue_timeout"]
"""Why a request was refused: at the limit and not allowed to wait (``low``, or no
queue); the queue full of more important requests; it could not finish within its
deadline; it waited ``max_wait_s``."""

_RANK: dict[Priority, int] = {"critical": 0, "high": 1, "normal": 2}
"""Priorities that may wait at the limit, most important first; ``low`` may not."""
_LATENCY_WEIGHT = 0.2  # of a new success in the moving average of latency


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request not admitted: ``reason`` (the problem's ``error``) and a
    ``Retry-After`` hint in whole seconds, at least 1."""

    reason: RefusalReason
    retry_after_s: int


class Permit:
    """One admitted request's place; report its outcome exactly once to give it back."""

    __slots__ = ("_limiter", "acquired_at", "inflight", "priority", "released")

    def __init__(
        self, limiter: PriorityLimiter, priority: Priority, acquired_at: float, inflight: int
    ) -> None:
        self._limiter = limiter
        self.priority = priority
        self.acquired_at = acquired_at
        """When the place was given, by the limiter's clock."""
        self.inflight = inflight
        """Requests in flight once this one was admitted, itself included."""
        self.released = False

    def success(self, latency_s: float | None = None) -> None:
        """The request was served: ``latency_s`` long (default: since it was admitted)."""
        self._limiter._release(self, latency_s, dropped=False, sample=True)

    def dropped(self) -> None:
        """The request timed out or failed because the service was overloaded."""
        self._limiter._release(self, None, dropped=True, sample=True)

    def ignore(self) -> None:
        """The request ended in a way that says nothing about load (an unrelated
        error, a cancelled request): give the place back without a sample."""
        self._limiter._release(self, None, dropped=False, sample=False)


class _Waiter:
    __slots__ = ("future", "priority", "reason", "timer", "wait_until")

    def __init__(
        self,
        future: asyncio.Future[Permit | Refusal],
        priority: Priority,
        wait_until: float,
        reason: RefusalReason,
    ) -> None:
        self.future = future
        self.priority = priority
        self.wait_until = wait_until
        self.reason = reason
        """Why it is refused if it is still waiting at ``wait_until``."""
        self.timer: asyncio.TimerHandle | None = None


class PriorityLimiter:
    """The requests of one capability in flight, admitted by priority; see the module docs."""

    __slots__ = (
        "_clock",
        "_queues",
        "algorithm",
        "budget_s",
        "inflight",
        "latency_s",
        "max_wait_s",
        "queue_size",
        "queued",
        "refused",
    )

    def __init__(
        self,
        limit: Limit,
        *,
        clock: Clock = monotonic,
        queue_size: int = 100,
        max_wait_s: float = 1.0,
        budget_s: float | None = None,
    ) -> None:
        """``budget_s``: the default deadline of a request, in seconds after it asks."""
        if queue_size < 0 or max_wait_s <= 0 or (budget_s is not None and budget_s <= 0):
            raise ValueError("need queue_size >= 0, max_wait_s > 0 and budget_s > 0")
        self.algorithm = limit
        """What computes the limit (its samples come from the permits)."""
        self._clock = clock
        self.queue_size = queue_size
        self.max_wait_s = max_wait_s
        self.budget_s = budget_s
        """The latency a request may take from its start, for its deadline (None: none)."""
        self.inflight = 0
        """Requests admitted and not yet reported."""
        self.queued = 0
        """Requests waiting for a place."""
        self.latency_s: float | None = None
        """A moving average of the latency of successful requests (None before one)."""
        self.refused: Counter[tuple[RefusalReason, Priority]] = Counter()
        """Requests refused so far, by reason and priority."""
        self._queues: tuple[deque[_Waiter], ...] = (deque(), deque(), deque())

    @property
    def limit(self) -> int:
        """The concurrency limit now."""
        return self.algorithm.limit

    def try_acquire(self, priority: Priority) -> Permit | None:
        """A permit at once if the capability is under its limit and nobody waits;
        None otherwise (then :meth:`acquire` decides: wait, or a refusal)."""
        if self.inflight < self.algorithm.limit and not self.queued:
            return self._grant(priority, self._clock())
        return None

    async def acquire(
        self, priority: Priority, *, deadline: float | None = None
    ) -> Permit | Refusal:
        """A permit, at once or after a short wait, or a refusal; see the module docs.

        ``deadline`` is when the request must be answered, by the limiter's
        clock: ``request_start + budget_s`` (the default counts from now).
        """
        now = self._clock()
        if self.inflight < self.algorithm.limit:
            if self.queued:  # the limit was raised since the last release
                self._admit_waiters()
            if self.inflight < self.algorithm.limit and not self.queued:
                return self._grant(priority, now)
        rank = _RANK.get(priority)
        if rank is None or self.queue_size == 0:
            return self._refuse("concurrency_limit", priority)
        if deadline is None and self.budget_s is not None:
            deadline = now + self.budget_s
        wait_until = now + self.max_wait_s
        reason: RefusalReason = "queue_timeout"
        latency = self.latency_s
        if deadline is not None and priority != "critical":
            latency = latency or 0.0
            ahead = sum(len(queue) for queue in self._queues[: rank + 1])
            expected_wait = (ahead + 1) * latency / max(1, self.algorithm.limit)
            if now + expected_wait + latency > deadline:
                return self._refuse("deadline", priority)
            if deadline - latency < wait_until:
                wait_until, reason = deadline - latency, "deadline"
        if self.queued >= self.queue_size and not self._evict_for(rank):
            return self._refuse("queue_full", priority)
        return await self._wait(priority, rank, wait_until, reason)

    def expire(self) -> int:
        """Refuse every waiter whose time is up by the clock; return how many.

        Each waiter's own timer on the event loop does this for it; a test that
        moves a manual clock calls this instead of waiting for the loop."""
        now = self._clock()
        due = [w for queue in self._queues for w in queue if w.wait_until <= now]
        for waiter in due:
            self._refuse_waiter(waiter, waiter.reason)
        return len(due)

    # -- internals -------------------------------------------------------------

    def _grant(self, priority: Priority, now: float) -> Permit:
        self.inflight += 1
        return Permit(self, priority, now, self.inflight)

    def _refuse(self, reason: RefusalReason, priority: Priority) -> Refusal:
        self.refused[reason, priority] += 1
        return Refusal(reason, self._retry_after())

    def _retry_after(self) -> int:
        """Whole seconds until the queue now waiting should have drained, at least 1."""
        latency = self.latency_s or 0.0
        drain = (self.queued + 1) * latency / max(1, self.algorithm.limit) + latency
        return max(1, math.ceil(drain))

    async def _wait(
        self, priority: Priority, rank: int, wait_until: float, reason: RefusalReason
    ) -> Permit | Refusal:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), priority, wait_until, reason)
        self._queues[rank].append(waiter)
        self.queued += 1
        self._arm(waiter, loop)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled():
                handed = future.result()
                if isinstance(handed, Permit):
                    handed.ignore()  # given just as the waiter was cancelled: give it back
            else:
                self._leave(waiter)
            raise

    def _arm(self, waiter: _Waiter, loop: asyncio.AbstractEventLoop) -> None:
        delay = max(0.0, waiter.wait_until - self._clock())
        waiter.timer = loop.call_later(delay, self._on_timer, waiter)

    def _on_timer(self, waiter: _Waiter) -> None:
        waiter.timer = None
        if waiter.future.done():
            return
        if waiter.wait_until <= self._clock():
            self._refuse_waiter(waiter, waiter.reason)
        else:  # the clock is not the loop's (a manual one in tests): look again later
            self._arm(waiter, waiter.future.get_loop())

    def _leave(self, waiter: _Waiter) -> None:
        """Take ``waiter`` out of the queue, if it is still there."""
        queue = self._queues[_RANK[waiter.priority]]
        try:
            queue.remove(waiter)
        except ValueError:
            return
        self.queued -= 1
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None

    def _refuse_waiter(self, waiter: _Waiter, reason: RefusalReason) -> None:
        self._leave(waiter)
        if not waiter.future.done():
            waiter.future.set_result(self._refuse(reason, waiter.priority))

    def _evict_for(self, rank: int) -> bool:
        """Refuse the least important, most recent waiter if it is less important than
        ``rank``; whether room was made."""
        for lower in range(len(self._queues) - 1, rank, -1):
            queue = self._queues[lower]
            if queue:
                self._refuse_waiter(queue[-1], "queue_full")
                return True
        return False

    def _release(
        self, permit: Permit, latency_s: float | None, *, dropped: bool, sample: bool
    ) -> None:
        if permit.released:
            return
        permit.released = True
        self.inflight -= 1
        if sample:
            now = self._clock()
            latency = now - permit.acquired_at if latency_s is None else latency_s
            if not dropped:
                average = self.latency_s
                self.latency_s = (
                    latency if average is None else average + _LATENCY_WEIGHT * (latency - average)
                )
            self.algorithm.on_sample(now, latency, permit.inflight, dropped)
        if self.queued:
            self._admit_waiters()

    def _admit_waiters(self) -> None:
        """Hand the free places to the head of the queue, most important first."""
        now = self._clock()
        limit = self.algorithm.limit
        for queue in self._queues:
            while queue and self.inflight < limit:
                waiter = queue.popleft()
                self.queued -= 1
                if waiter.timer is not None:
                    waiter.timer.cancel()
                    waiter.timer = None
                if waiter.future.done():
                    continue
                if waiter.wait_until <= now:  # its timer has not run yet
                    waiter.future.set_result(self._refuse(waiter.reason, waiter.priority))
                    continue
                waiter.future.set_result(self._grant(waiter.priority, now))
            if self.inflight >= limit:
                return


def limiter_for(slo: SLOFile, *, clock: Clock = monotonic) -> PriorityLimiter | None:
    """The limiter ``slo``'s ``shedding.concurrency`` describes (None when ``mode: off``)."""
    config = slo.shedding.concurrency
    limit = limit_for(config, slo.slo.latency)
    if limit is None:
        return None
    # The deadline's percentile, or (the file sets no target for it) the loosest one set.
    targets = slo.slo.latency.targets()
    named = targets[f"{config.queue.deadline}_ms"]
    budget_ms = named if named is not None else max(t for t in targets.values() if t is not None)
    return PriorityLimiter(
        limit,
        clock=clock,
        queue_size=config.queue.size,
        max_wait_s=config.queue.max_wait_ms / 1000,
        budget_s=budget_ms / 1000,
    )
