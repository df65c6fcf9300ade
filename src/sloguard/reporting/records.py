"""The records reporting keeps: minute aggregates and history, breaches, alerts, live events.

Times are Unix epoch seconds (wall clock), never the monotonic clock of the
request path. These are plain values shared by the history repository, the
breach and alert engine, and the /slo API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

BreachState = Literal["warning", "open", "resolved"]
BreachSeverity = Literal["warning", "minor", "major", "critical"]
"""How far a breach's worst measure went past its target (:func:`breach_severity`)."""
BREACH_SEVERITIES: tuple[BreachSeverity, ...] = ("warning", "minor", "major", "critical")

DAY_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class MinuteAggregate:
    """What one replica saw of one capability during one wall-clock minute."""

    capability: str
    minute: int
    """Start of the minute, Unix seconds, a multiple of 60."""
    replica: str
    requests: int
    errors: int
    shed: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    compliant: bool


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One step of a capability's history, merged across replicas.

    ``compliant_minutes`` and ``downtime_minutes`` count the minutes of the step
    that have data: a minute nobody reported is neither.
    """

    start: int
    """Start of the step, Unix seconds (a multiple of the step, so days start at 00:00 UTC)."""
    requests: int
    errors: int
    shed: int
    p50_ms: float | None
    """Largest p50 of any minute (and replica) in the step: an upper bound."""
    p95_ms: float | None
    p99_ms: float | None
    compliant_minutes: int
    downtime_minutes: int

    @property
    def availability(self) -> float | None:
        """Fraction of the step's requests that succeeded; None with no requests."""
        return None if not self.requests else 1.0 - self.errors / self.requests


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :meth:`~sloguard.reporting.repository.HistoryRepository.prune` did."""

    rolled_minutes: int
    """Minute rows folded into day rows (and deleted)."""
    dropped_days: int
    """Day rows older than the retention, deleted."""
    dropped_breaches: int
    dropped_alerts: int


@dataclass(frozen=True, slots=True)
class Breach:
    """A stretch of time a capability missed (or came within 5% of missing) its SLO."""

    id: str
    capability: str
    state: BreachState
    started_at: float
    ended_at: float | None
    violations: tuple[str, ...]
    """Every distinct violation seen while it lasted (``"p95 latency 300ms > target 100ms"``)."""
    worst: dict[str, float] = field(default_factory=dict)
    """Worst value seen per measure: ``p50_ms``, ``p95_ms``, ``p99_ms``, ``availability``,
    and the lowest judged ``throughput_rps`` (with the ``demand_rps`` it was judged at)."""
    severity: BreachSeverity | None = None
    credit_pct: float | None = None
    """The service credit this breach earned, set when it resolves (None: the SLO has no
    ``credits``, or it has not resolved); see
    :func:`~sloguard.reporting.compliance.breach_credit`."""

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert fired for a capability, sent to the sinks its channel maps to."""

    id: str
    """Deduplication key: the same alert fired twice has the same id."""
    capability: str
    kind: Literal["budget", "burn", "breach", "warning", "escalation"]
    channel: str
    severity: Literal["info", "warning", "critical"]
    summary: str
    fired_at: float
    details: dict[str, Any] = field(default_factory=dict)
    resolves: str | None = None
    """For a resolution, the id of the alert it resolves (PagerDuty's ``dedup_key``); else None."""


@dataclass(frozen=True, slots=True)
class ReportEvent:
    """A live event for /slo/ws subscribers and in-process callbacks."""

    type: Literal["breach", "warning", "resolved", "alert", "shedding", "concurrency"]
    capability: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Escalation:
    """An alert moving up its escalation policy's levels until acknowledged or resolved.

    ``level`` is the number of levels notified so far (0: none yet). Kept in the
    history store, so a restart or another replica picks it up where it was.
    """

    alert_id: str
    capability: str
    policy: str
    summary: str
    started_at: float
    level: int = 0
    acked_at: float | None = None
    acked_by: str | None = None
    stopped_at: float | None = None
    stop_reason: str | None = None
    """``resolved`` (its alert resolved), ``exhausted`` (every level notified) or
    ``policy removed`` (alerts.yml no longer has its policy)."""

    @property
    def active(self) -> bool:
        """Whether a later level may still be notified."""
        return self.acked_at is None and self.stopped_at is None

    @property
    def state(self) -> Literal["escalating", "acknowledged", "stopped"]:
        if self.acked_at is not None:
            return "acknowledged"
        return "escalating" if self.stopped_at is None else "stopped"
