"""Step 3 of the request path: admission, per capability, in two loops.

:class:`Admission` decides whether a request of a capability with an SLO file
runs now, and hands it a permit to give back when it is done.

- The slow outer loop is the capability's :class:`SheddingPolicy`
  (``policy.py``): every ``evaluate_every_s`` it re-reads the capability's live
  SLO status (availability, budget burn, latency over the window) and moves one
  rejection ratio per priority; a request is refused with its priority's ratio.
- The fast inner loop is the capability's :class:`PriorityLimiter`
  (``limiter.py``): it bounds the requests in flight by a limit that adapts so
  that latency stays within the SLO's targets (``limit.py``). At the limit,
  ``low`` is refused at once and higher priorities wait in a short queue.

Computing the ratios and the limit is theirs; admitting, counting refusals and
answering them is this module's, as Netflix's concurrency-limits keeps its
``Limiter`` apart from its ``Limit``.

A refusal is a ready-made ``503`` (or ``429``) problem document with
``Retry-After``. The concurrency limit applies only while the file enforces
(``reject_on_violation``, grace period over); in a dry run the outer loop's
refusals are counted but nothing is refused.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from sloguard._clock import Clock
from sloguard.exceptions import ConfigurationError
from sloguard.http import Reply
from sloguard.observability.metrics import CapabilitySeries, MetricsSink, NoMetrics
from sloguard.problems import problem_reply
from sloguard.request import GuardedRequest
from sloguard.shedding.limiter import Permit, PriorityLimiter, Refusal, limiter_for
from sloguard.shedding.policy import SheddingPolicy
from sloguard.slo.manager import SLOManager, SLOStatus
from sloguard.slo.schema import Priority, SLOFile

logger = logging.getLogger("sloguard.shedding")

SHED_STATUSES = frozenset({429, 503})
_OVERLOADED = frozenset({503, 504})
"""Statuses that say the service was overloaded: pressure on the limit."""
_REASONS = {
    "concurrency_limit": "At its concurrency limit",
    "queue_full": "Its queue is full of more important requests",
    "deadline": "It could not answer within its latency target",
    "queue_timeout": "No place freed up in time",
}
_DAY_SECONDS = 86_400.0


class Wait(enum.Enum):
    """The type of :data:`WAIT` (a one-member enum, so that type checkers narrow on it)."""

    WAIT = "wait"


WAIT: Final = Wait.WAIT
"""What :meth:`Admission.admit` says of a request that may wait for a place."""


class CapabilityAdmission:
    """The admission state of one capability, for as long as ``slo`` is its loaded file."""

    __slots__ = (
        "capability",
        "enforce_from",
        "limiter",
        "next_update",
        "policy",
        "refusal",
        "refused",
        "series",
        "slo",
    )

    def __init__(
        self,
        capability: str,
        slo: SLOFile,
        enforce_from: float,
        series: CapabilitySeries,
        limiter: PriorityLimiter | None,
    ) -> None:
        self.capability = capability
        self.slo = slo
        self.series = series
        self.limiter = limiter
        self.policy = SheddingPolicy(slo.shedding, latency=limiter is None)
        self.enforce_from = enforce_from
        self.next_update = -float("inf")
        self.refusal: Reply | None = None
        self.refused: Counter[tuple[Priority, bool]] = Counter()
        """Refusals by priority and whether they were enforced (False: a dry run's)."""

    def enforcing(self, now: float) -> bool:
        """Whether refusals are real: enforcement on and the grace period over."""
        return self.slo.enforcement.reject_on_violation and now >= self.enforce_from


class Admission:
    """Admits or refuses requests of capabilities with an SLO file; see the module docs."""

    def __init__(
        self,
        manager: SLOManager,
        *,
        shed_status: int = 503,
        evaluate_every_s: float = 0.5,
        clock: Clock,
        random_source: Callable[[], float] = random.random,
        metrics: MetricsSink | None = None,
    ) -> None:
        if shed_status not in SHED_STATUSES:
            raise ConfigurationError(f"shed_status must be 429 or 503, got {shed_status!r}")
        if evaluate_every_s <= 0:
            raise ConfigurationError(f"evaluate_every_s must be positive, got {evaluate_every_s!r}")
        self.manager = manager
        self.shed_status = shed_status
        self.evaluate_every_s = evaluate_every_s
        self.metrics: MetricsSink = metrics if metrics is not None else NoMetrics()
        self._clock = clock
        self._random = random_source
        self._capabilities: dict[str, CapabilityAdmission] = {}

    def admit(self, request: GuardedRequest, slo: SLOFile) -> Permit | Reply | Wait | None:
        """Admit ``request`` (whose capability has ``slo``) if that needs no waiting: a
        permit to give back with :meth:`release` (None when no limit applies), the
        refusal to answer with, or :data:`WAIT`: the capability is at its concurrency
        limit, and :meth:`wait` decides (a place, after a wait, or a refusal).

        A plain call: most requests are admitted or refused at once, with no coroutine.
        """
        capability = request.capability
        assert capability is not None
        state = self._capabilities.get(capability)
        if state is None or state.slo is not slo:
            state = self._track(capability, slo)
        now = request.start
        if now >= state.next_update:
            self._update(state, now)
        priority = request.priority
        ratio = state.policy.ratios.get(priority)
        if ratio is not None and self._random() < ratio:
            enforcing = state.enforcing(now)
            state.refused[priority, enforcing] += 1
            state.series.shed(priority, dry_run=not enforcing)
            if enforcing:
                return state.refusal
        limiter = state.limiter
        if limiter is None or now < state.enforce_from:
            return None
        permit = limiter.try_acquire(priority)
        return WAIT if permit is None else permit

    async def wait(self, request: GuardedRequest) -> Permit | Reply:
        """Right after :meth:`admit` said :data:`WAIT`: a permit once a place is free, or
        the refusal (the queue is full, the request could not finish in time, or it
        waited too long)."""
        assert request.capability is not None
        state = self._capabilities[request.capability]
        limiter = state.limiter
        assert limiter is not None
        deadline = None if limiter.budget_s is None else request.start + limiter.budget_s
        granted = await limiter.acquire(request.priority, deadline=deadline)
        if isinstance(granted, Refusal):
            state.refused[request.priority, True] += 1
            state.series.shed(request.priority, dry_run=False)
            return self._limit_refusal(state, granted)
        return granted

    async def acquire(self, request: GuardedRequest, slo: SLOFile) -> Permit | Reply | None:
        """:meth:`admit`, then :meth:`wait` if it said to: a permit, None (no limit
        applies) or the refusal to answer with."""
        admitted = self.admit(request, slo)
        if admitted is WAIT:
            return await self.wait(request)
        return admitted

    def release(self, permit: Permit, status: int | None, latency_s: float) -> None:
        """Give ``permit`` back: the app answered with ``status`` after ``latency_s``
        (None: it raised or was cancelled, which says nothing about the limit)."""
        if status is None:
            permit.ignore()
        elif status in _OVERLOADED:
            permit.dropped()
        else:
            # The service's time: not the upload before it, nor the wait for the permit.
            permit.success(min(latency_s, self._clock() - permit.acquired_at))

    # -- introspection ----------------------------------------------------------

    def shed_counts(self, capability: str, *, dry_run: bool = False) -> dict[Priority, int]:
        """Requests of ``capability`` refused so far, by priority (``dry_run``: the
        ones that would have been, had enforcement been on)."""
        state = self._capabilities.get(capability)
        if state is None:
            return {}
        return {
            priority: count
            for (priority, enforced), count in state.refused.items()
            if enforced is not dry_run
        }

    def rejection_ratios(self, capability: str) -> dict[Priority, float]:
        """The current share of each priority refused (empty when not shedding)."""
        state = self._capabilities.get(capability)
        return {} if state is None else dict(state.policy.ratios)

    def concurrency(self, capability: str) -> dict[str, Any] | None:
        """The inner loop's state: limit, in flight, queued, refusals by reason and
        priority; None when no limit applies to ``capability`` (none made yet, or the
        file's grace period still holds it off)."""
        state = self._capabilities.get(capability)
        if state is None or state.limiter is None or self._clock() < state.enforce_from:
            return None
        limiter = state.limiter
        refused: dict[str, dict[str, int]] = {}
        for (reason, priority), count in limiter.refused.items():
            refused.setdefault(reason, {})[priority] = count
        return {
            "limit": limiter.limit,
            "inflight": limiter.inflight,
            "queued": limiter.queued,
            "refused": refused,
        }

    # -- the outer loop ---------------------------------------------------------

    def _track(self, capability: str, slo: SLOFile) -> CapabilityAdmission:
        loaded_at = self.manager.loaded_at(capability)
        if loaded_at is None:
            loaded_at = self._clock()
        grace = slo.enforcement.grace_period_days * _DAY_SECONDS
        previous = self._capabilities.get(capability)
        enforced = slo.enforcement.reject_on_violation and slo.shedding.enabled
        state = CapabilityAdmission(
            capability,
            slo,
            loaded_at + grace,
            self.metrics.capability(capability),
            limiter_for(slo, clock=self._clock) if enforced else None,
        )
        if previous is not None:
            state.refused = previous.refused  # a reload keeps the counts
            if previous.limiter is not None and state.limiter is not None:
                if previous.slo.shedding == slo.shedding:
                    state.limiter = previous.limiter  # and the limit learnt, if tuned the same
                else:  # a new limit, the old one's refusals still counted
                    state.limiter.refused.update(previous.limiter.refused)
        self._capabilities[capability] = state
        return state

    def _update(self, state: CapabilityAdmission, now: float) -> None:
        """Re-read the capability's live status and move its rejection ratios."""
        state.next_update = now + self.evaluate_every_s
        status = self.manager.status(state.capability)
        if status is None:
            return  # the SLO file went away; the next request stops guarding it
        policy = state.policy
        was_active, was_ratios = policy.active, policy.ratios
        policy.update(now, state.slo, status)
        if policy.active:
            state.refusal = self._refusal(state, status)
        self.manager.set_shedding(state.capability, policy.active)
        if policy.active != was_active or _moved(was_ratios, policy.ratios):
            _log_change(state, now, status.violations)

    def _limit_refusal(self, state: CapabilityAdmission, refusal: Refusal) -> Reply:
        limiter = state.limiter
        assert limiter is not None
        return problem_reply(
            self.shed_status,
            refusal.reason,
            "Shedding load to meet the SLO",
            f"{state.capability}: {_REASONS[refusal.reason]} ({limiter.inflight} in flight, "
            f"limit {limiter.limit}); retry after {refusal.retry_after_s} s or with a "
            "higher priority.",
            headers=((b"retry-after", str(refusal.retry_after_s).encode()),),
            capability=state.capability,
            violations=[],
            retry_after_s=refusal.retry_after_s,
            limit=limiter.limit,
        )

    def _refusal(self, state: CapabilityAdmission, status: SLOStatus) -> Reply:
        retry_after_s = state.slo.shedding.retry_after_s
        return problem_reply(
            self.shed_status,
            "slo_violation",
            "Shedding load to meet the SLO",
            f"{state.capability} {_state(status.violations)}; retry after "
            f"{retry_after_s} s or with a higher priority.",
            headers=((b"retry-after", str(retry_after_s).encode()),),
            capability=state.capability,
            violations=list(status.violations),
            retry_after_s=retry_after_s,
        )


def _moved(before: dict[Priority, float], after: dict[Priority, float]) -> bool:
    """Whether shedding changed materially: a priority started or stopped being refused,
    or a ratio moved by a quarter or more."""
    if before.keys() != after.keys():
        return True
    return any(abs(after[p] - before[p]) >= 0.25 for p in after)


def _log_change(state: CapabilityAdmission, now: float, violations: tuple[str, ...]) -> None:
    """One line when shedding starts, one when it changes materially, one when it stops."""
    policy = state.policy
    mode = "" if state.enforcing(now) else " (dry run: nothing refused)"
    if not policy.active:
        logger.info("%s: shedding stopped%s", state.capability, mode)
        return
    ratios = ", ".join(f"{p} {r:.0%}" for p, r in policy.ratios.items())
    if policy.severity > 0:
        why = f"severity {policy.severity:.2f}: {'; '.join(violations)}"
    else:  # compliant again: the ratios are decaying
        why = "recovering, the SLO is met again"
    logger.warning("%s: shedding %s, %s%s", state.capability, ratios, why, mode)


def _state(violations: tuple[str, ...]) -> str:
    if violations:
        return f"is not meeting its SLO ({'; '.join(violations)})"
    return "is recovering from an SLO violation"
