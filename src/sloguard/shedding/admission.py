"""Step 3 of the request path: admission, per capability.

:class:`Admission` decides whether a request of a capability with an SLO file
runs now. Each capability has a :class:`SheddingPolicy` (``policy.py``: the
outer loop, which re-reads the capability's live SLO status every
``evaluate_every_s`` and moves one rejection ratio per priority); admitting a
request is then a lookup and a random draw. Computing the ratios is the
policy's; admitting, counting refusals and answering them is this module's, as
Netflix's concurrency-limits keeps its ``Limiter`` apart from its ``Limit``.

A refusal is a ready-made ``503`` (or ``429``) problem document with
``Retry-After``; in a dry run, or during the grace period, refusals are counted
but nothing is refused.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable

from sloguard._clock import Clock
from sloguard.exceptions import ConfigurationError
from sloguard.http import Reply
from sloguard.observability.metrics import CapabilitySeries, MetricsSink, NoMetrics
from sloguard.problems import problem_reply
from sloguard.request import GuardedRequest
from sloguard.shedding.policy import SheddingPolicy
from sloguard.slo.manager import SLOManager, SLOStatus
from sloguard.slo.schema import Priority, SLOFile

logger = logging.getLogger("sloguard.shedding")

SHED_STATUSES = frozenset({429, 503})
_DAY_SECONDS = 86_400.0


class CapabilityAdmission:
    """The admission state of one capability, for as long as ``slo`` is its loaded file."""

    __slots__ = (
        "capability",
        "enforce_from",
        "next_update",
        "policy",
        "refusal",
        "refused",
        "series",
        "slo",
    )

    def __init__(
        self, capability: str, slo: SLOFile, enforce_from: float, series: CapabilitySeries
    ) -> None:
        self.capability = capability
        self.slo = slo
        self.series = series
        self.policy = SheddingPolicy(slo.shedding)
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

    def acquire(self, request: GuardedRequest, slo: SLOFile) -> Reply | None:
        """None to admit ``request`` (whose capability has ``slo``); else the refusal to
        answer it with."""
        capability = request.capability
        assert capability is not None
        state = self._capabilities.get(capability)
        if state is None or state.slo is not slo:
            state = self._track(capability, slo)
        now = request.start
        if now >= state.next_update:
            self._update(state, now)
        ratio = state.policy.ratios.get(request.priority)
        if ratio is None or self._random() >= ratio:
            return None
        enforcing = state.enforcing(now)
        state.refused[request.priority, enforcing] += 1
        state.series.shed(request.priority, dry_run=not enforcing)
        return state.refusal if enforcing else None

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

    # -- the outer loop ---------------------------------------------------------

    def _track(self, capability: str, slo: SLOFile) -> CapabilityAdmission:
        loaded_at = self.manager.loaded_at(capability)
        if loaded_at is None:
            loaded_at = self._clock()
        grace = slo.enforcement.grace_period_days * _DAY_SECONDS
        previous = self._capabilities.get(capability)
        state = CapabilityAdmission(
            capability, slo, loaded_at + grace, self.metrics.capability(capability)
        )
        if previous is not None:
            state.refused = previous.refused  # a reload keeps the counts
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
        if policy.active != was_active or (policy.active and policy.ratios != was_ratios):
            _log_change(state, now, status.violations)

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


def _log_change(state: CapabilityAdmission, now: float, violations: tuple[str, ...]) -> None:
    policy = state.policy
    mode = "" if state.enforcing(now) else " (dry run: nothing refused)"
    if not policy.active:
        logger.info("%s: shedding stopped%s", state.capability, mode)
        return
    ratios = ", ".join(f"{p} {r:.0%}" for p, r in policy.ratios.items())
    logger.warning(
        "%s: shedding %s at severity %.2f: %s%s",
        state.capability,
        ratios,
        policy.severity,
        "; ".join(violations) or "recovering",
        mode,
    )


def _state(violations: tuple[str, ...]) -> str:
    if violations:
        return f"is not meeting its SLO ({'; '.join(violations)})"
    return "is recovering from an SLO violation"
