"""Breaches: when a capability has missed its SLO for long enough to call it one.

:class:`BreachTracker` reads each capability's live :class:`SLOStatus` (every
few seconds, from a background task) and runs one small state machine per
capability. Each observation is one of:

- *quiet*: fewer than ``min_samples`` requests in the live window; too few to
  judge, so it never starts anything (and counts as clear while resolving);
- *bad*: not compliant (some measure beyond its target);
- *near*: compliant, but within ``warning_margin`` (5%) of a target, where
  "within 5%" uses the shedding *severity*: ``observed / target`` of 0.95 or
  more for a latency percentile, ``error rate / error budget`` of 0.95 or more
  for availability (99.9% allows 0.1% errors; 0.095% errors is near);
- *good*: anything else.

A near or bad observation starts a **warning** (a :class:`Breach` record with
``state="warning"``). Bad observations without a break for ``open_after_s``
(55 s: evaluated every 5 s, a breach opens within 60 s of the first violating
evaluation) turn it into an **open** breach; its ``started_at`` becomes the
start of that bad run. An open breach **resolves** once observations have been clear
(compliant or quiet) without a break for ``resolve_after_s``; its ``ended_at``
is when that clear run began. A warning that never opens ends after
``resolve_after_s`` of good (or quiet) observations: it keeps
``state="warning"`` and gets an ``ended_at`` (a near miss; reports of breaches
leave those out). Either way the record's id never changes, so it can be
upserted as it evolves.

Each record carries a *severity* from its worst values (:func:`breach_severity`:
``minor`` up to 1.5x a target, ``major`` up to 2x, ``critical`` beyond; a
warning that never went past a target is ``warning``), and a resolved breach
its service credit (:func:`~sloguard.reporting.compliance.breach_credit`).

Both durations need an unbroken run, so input that flaps around a target
cannot open and close breaches over and over: flapping keeps a warning on
(never opening), or keeps an open breach open.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Literal

from sloguard._clock import Clock
from sloguard.exceptions import ConfigurationError
from sloguard.reporting.compliance import breach_credit
from sloguard.reporting.records import Breach, BreachSeverity, BreachState, ReportEvent
from sloguard.shedding.policy import severity
from sloguard.slo.compliance import Metrics, check_compliance
from sloguard.slo.compliance import severity as severity_of
from sloguard.slo.manager import SLOStatus
from sloguard.slo.schema import SLOFile

Observation = Literal["quiet", "bad", "near", "good"]

_LATENCIES = ("p50_ms", "p95_ms", "p99_ms")

DEFAULT_OPEN_AFTER_S = 55.0
"""Bad observations needed, unbroken, to open a breach (with the monitor's 5 s
evaluations, a breach opens within 60 s of the first violating one)."""
DEFAULT_RESOLVE_AFTER_S = 60.0
"""Clear observations needed, unbroken, to resolve one."""


def breach_severity(slo: SLOFile, worst: Metrics) -> BreachSeverity:
    """``warning`` (no target missed), ``minor`` (the worst measure up to 1.5x its
    target), ``major`` (up to 2x) or ``critical`` (beyond), by the shedding severity:
    ``observed / target`` for latency, ``errors / allowed`` for availability and error
    rate, ``floor / observed`` for throughput."""
    ratio = severity_of(slo, worst)
    if ratio <= 1.0:
        return "warning"
    if ratio <= 1.5:
        return "minor"
    if ratio <= 2.0:
        return "major"
    return "critical"


@dataclass(slots=True)
class _Track:
    """What the tracker remembers about one capability between observations."""

    record: Breach | None = None
    bad_since: float | None = None
    clear_since: float | None = None
    worst: dict[str, float] = field(default_factory=dict)
    shedding: bool = False


class BreachTracker:
    """Warning, open and resolved breaches per capability, from successive statuses.

    Times are wall-clock Unix seconds (``clock`` defaults to ``time.time``) since
    they end up in stored records. ``min_samples`` overrides each SLO file's
    ``shedding.min_samples``. Not thread-safe: observe from one task.
    """

    def __init__(
        self,
        *,
        open_after_s: float = DEFAULT_OPEN_AFTER_S,
        resolve_after_s: float = DEFAULT_RESOLVE_AFTER_S,
        warning_margin: float = 0.05,
        min_samples: int | None = None,
        clock: Clock = time.time,
    ) -> None:
        for name, value in (("open_after_s", open_after_s), ("resolve_after_s", resolve_after_s)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= warning_margin < 1:
            raise ConfigurationError(f"warning_margin must be in [0, 1), got {warning_margin!r}")
        if min_samples is not None and min_samples < 1:
            raise ConfigurationError(f"min_samples must be at least 1, got {min_samples!r}")
        self.open_after_s = open_after_s
        self.resolve_after_s = resolve_after_s
        self.warning_margin = warning_margin
        self.min_samples = min_samples
        self._clock = clock
        self._tracks: dict[str, _Track] = {}

    def classify(self, status: SLOStatus, slo: SLOFile) -> Observation:
        """What one status says: ``quiet``, ``bad``, ``near`` or ``good`` (see the module docs)."""
        needed = self.min_samples if self.min_samples is not None else slo.shedding.min_samples
        if status.requests < needed:
            return "quiet"
        if not status.compliant:
            return "bad"
        if severity(slo, status) >= 1.0 - self.warning_margin:
            return "near"
        return "good"

    def observe(
        self, status: SLOStatus, slo: SLOFile, now: float | None = None
    ) -> list[ReportEvent]:
        """Feed one status of ``status.capability``; return the events it caused, if any.

        Events: ``warning`` (a warning started), ``breach`` (a breach opened),
        ``resolved`` (a breach resolved, or a warning ended), each with the
        :class:`Breach` as ``data["breach"]``; and ``shedding`` when the
        capability starts or stops shedding (``data["shedding"]``).
        """
        at = self._clock() if now is None else now
        capability = status.capability
        track = self._tracks.get(capability) or _Track()
        events = self._observe(track, status, slo, at)
        # Only a capability with something to remember keeps a track: 10,000 healthy
        # ones are no objects for the cyclic collector to walk.
        if track.record is None and not track.shedding:
            self._tracks.pop(capability, None)
        else:
            self._tracks[capability] = track
        return events

    def _observe(
        self, track: _Track, status: SLOStatus, slo: SLOFile, at: float
    ) -> list[ReportEvent]:
        capability = status.capability
        events: list[ReportEvent] = []
        if status.shedding != track.shedding:
            track.shedding = status.shedding
            data = {"shedding": status.shedding, "violations": list(status.violations)}
            events.append(ReportEvent("shedding", capability, at, data))
        kind = self.classify(status, slo)
        if track.record is None:
            if kind not in ("near", "bad"):
                return events
            track.record = Breach(
                id=f"{capability}@{int(at)}",
                capability=capability,
                state="warning",
                started_at=at,
                ended_at=None,
                violations=(),
            )
            track.worst = {}
            track.bad_since = track.clear_since = None
            self._fold(track, status, slo)
            events.append(self._event("warning", track, at))
        elif kind != "quiet":
            self._fold(track, status, slo)
        record = track.record

        opened = record.state == "open"
        if kind == "bad":
            track.clear_since = None
            if track.bad_since is None:
                track.bad_since = at
            if not opened and at - track.bad_since >= self.open_after_s:
                track.record = replace(record, state="open", started_at=track.bad_since)
                events.append(self._event("breach", track, at))
            return events
        track.bad_since = None
        # An open breach clears on compliance; a warning only once it is no longer near.
        if kind == "near" and not opened:
            track.clear_since = None
            return events
        if track.clear_since is None:
            track.clear_since = at
        if at - track.clear_since >= self.resolve_after_s:
            state: BreachState = "resolved" if opened else "warning"
            credit = breach_credit(slo, record.started_at, track.clear_since) if opened else None
            track.record = replace(
                record, state=state, ended_at=track.clear_since, credit_pct=credit
            )
            events.append(self._event("resolved", track, at))
            track.record = track.bad_since = track.clear_since = None
            track.worst = {}
        return events

    def current(self, capability: str) -> Breach | None:
        """The warning or open breach of ``capability`` right now, with its worst values so far."""
        track = self._tracks.get(capability)
        return None if track is None else track.record

    def active(self) -> list[Breach]:
        """Every warning and open breach right now (for saving, or for ``/slo/breaches``)."""
        return [b for b in (self.current(c) for c in sorted(self._tracks)) if b is not None]

    def forget(self, capability: str) -> None:
        """Drop what is known of ``capability`` (its SLO file was removed)."""
        self._tracks.pop(capability, None)

    @staticmethod
    def _fold(track: _Track, status: SLOStatus, slo: SLOFile) -> None:
        """Fold ``status`` into the record's worst values, and its violations into words."""
        assert track.record is not None
        if _keep_worst(track.worst, status, slo):
            # One message per measure, for its worst value: bounded, and the figure that matters.
            _, violations = check_compliance(slo, track.worst)
            track.record = replace(
                track.record,
                violations=tuple(violations),
                worst=dict(track.worst),
                severity=breach_severity(slo, track.worst),
            )

    @staticmethod
    def _event(
        kind: Literal["warning", "breach", "resolved"], track: _Track, at: float
    ) -> ReportEvent:
        assert track.record is not None
        return ReportEvent(kind, track.record.capability, at, {"breach": track.record})


def _keep_worst(worst: dict[str, float], status: SLOStatus, slo: SLOFile) -> bool:
    """Fold ``status`` into ``worst`` (highest latencies, lowest availability and
    throughput); say if it moved."""
    moved = False
    for key in _LATENCIES:
        value: float | None = getattr(status, key)
        if value is not None and value > worst.get(key, -math.inf):
            worst[key] = value
            moved = True
    availability = status.availability
    if availability is not None and availability < worst.get("availability", math.inf):
        worst["availability"] = availability
        moved = True
    # The lowest throughput judged (its demand reached the floor), with that demand.
    throughput, demand = status.throughput_rps, status.demand_rps
    floor = slo.slo.throughput
    if (
        floor is not None
        and throughput is not None
        and demand is not None
        and demand >= floor.min_rps
        and throughput < worst.get("throughput_rps", math.inf)
    ):
        worst["throughput_rps"], worst["demand_rps"] = throughput, demand
        moved = True
    return moved
