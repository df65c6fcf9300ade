"""What reporting shows of admission's two loops, and the live events of the inner one.

:func:`shedding_json` builds a capability's ``shedding`` object: ``GET /slo``
answers with it, and the ``shedding`` events of ``/slo/ws`` carry the same
fields. The outer loop (the SLO-window policy) is ``active``,
``rejection_ratios`` and ``shed``; the inner loop (the concurrency limit) is
``concurrency``: ``{mode, limit, inflight, queued, refused: {reason: {priority:
count}}}``, only ``{mode}`` before the capability's first request, and
``{"mode": "off"}`` when no limit applies.

:class:`LimitTracker` turns successive readings of ``concurrency`` (one per
monitor tick) into ``concurrency`` events, as the shedding log does for the
outer loop: one when the limiter starts refusing (refusals since the previous
look, or at the first look since the limiter was made), one when it has refused
nothing for ``quiet_s``, and one when the limit has moved materially (by a
factor of 1.5 and at least 2) since the last event, at most one per ``quiet_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from sloguard._clock import Clock
from sloguard.reporting.records import ReportEvent
from sloguard.shedding.admission import Admission
from sloguard.slo.schema import SLOFile

ConcurrencyMode = Literal["adaptive", "fixed", "off"]
QUIET_S = 5.0
"""Refusals have stopped after this long without one; the least time between two
events of a moving limit."""
LIMIT_FACTOR = 1.5
LIMIT_STEP = 2
"""A limit has moved materially when it is this factor and this many requests away
from the last one announced (so 2 to 3, or 5 to 6, is not news)."""


def concurrency_mode(slo: SLOFile) -> ConcurrencyMode:
    """The concurrency mode that applies to ``slo``'s capability: the file's, or ``off``
    when the file does not enforce (a dry run has no limit) or sheds nothing."""
    enforced = slo.enforcement.reject_on_violation and slo.shedding.enabled
    return slo.shedding.concurrency.mode if enforced else "off"


def shedding_json(slo: SLOFile, active: bool, admission: Admission | None) -> dict[str, Any]:
    """The ``shedding`` object of ``slo``'s capability (see the module docs); only
    ``{"active"}`` without an ``admission`` to read the figures from."""
    out: dict[str, Any] = {"active": active}
    if admission is None:
        return out
    capability = slo.key
    out["rejection_ratios"] = admission.rejection_ratios(capability)
    out["shed"] = dict(admission.shed_counts(capability))
    mode = concurrency_mode(slo)
    figures = admission.concurrency(capability) if mode != "off" else None
    out["concurrency"] = {"mode": mode} if figures is None else {"mode": mode, **figures}
    return out


def refused_by_reason(concurrency: dict[str, Any]) -> dict[str, int]:
    """The limiter's refusals so far, by reason (summed over priorities)."""
    refused: dict[str, dict[str, int]] = concurrency.get("refused") or {}
    return {reason: sum(by_priority.values()) for reason, by_priority in refused.items()}


@dataclass(slots=True)
class _Track:
    limit: int
    """The limit last announced (or first seen)."""
    refused: dict[str, int]
    """The refusals by reason at the last look."""
    announced_at: float
    last_refusal_at: float | None = None
    refusing: bool = False


class LimitTracker:
    """Turns readings of capabilities' ``concurrency`` objects into events; see the module docs."""

    def __init__(self, *, quiet_s: float = QUIET_S, clock: Clock = time.time) -> None:
        self.quiet_s = quiet_s
        self._clock = clock
        self._tracks: dict[str, _Track] = {}

    def observe(
        self, capability: str, concurrency: dict[str, Any] | None, now: float | None = None
    ) -> ReportEvent | None:
        """Feed one reading of ``capability``'s ``concurrency`` (None, or no ``limit``:
        no limiter); return the ``concurrency`` event it causes, if any."""
        at = self._clock() if now is None else now
        if concurrency is None or not isinstance(concurrency.get("limit"), int):
            self._tracks.pop(capability, None)
            return None
        limit: int = concurrency["limit"]
        refused = refused_by_reason(concurrency)
        track = self._tracks.get(capability)
        if track is None:  # a limiter is made at its first request: its refusals are recent
            track = self._tracks[capability] = _Track(limit, {}, announced_at=at)
        new = {
            reason: count - track.refused.get(reason, 0)
            if count >= track.refused.get(reason, 0)
            else count  # a limiter made anew (its limit was off meanwhile) counts from 0
            for reason, count in refused.items()
        }
        new = {reason: count for reason, count in new.items() if count > 0}
        track.refused = refused
        if new:
            track.last_refusal_at = at
        changes: list[str] = []
        if new and not track.refusing:
            changes.append("refusals_started")
        elif (
            track.refusing
            and track.last_refusal_at is not None
            and at - track.last_refusal_at >= self.quiet_s
        ):
            changes.append("refusals_stopped")
        if _moved(track.limit, limit) and (changes or at - track.announced_at >= self.quiet_s):
            changes.insert(0, "limit")
        if not changes:
            return None
        previous = track.limit
        track.limit, track.announced_at = limit, at
        if "refusals_started" in changes:
            track.refusing = True
        elif "refusals_stopped" in changes:
            track.refusing = False
        data = {
            "changes": changes,
            "summary": _summary(changes, previous, concurrency, new),
            "previous_limit": previous,
            "refusing": track.refusing,
            "new_refusals": new,
            "concurrency": concurrency,
        }
        return ReportEvent("concurrency", capability, at, data)

    def forget(self, capability: str) -> None:
        """Drop what is known of ``capability`` (its SLO file was removed)."""
        self._tracks.pop(capability, None)


def _moved(before: int, after: int) -> bool:
    low, high = min(before, after), max(before, after)
    return high - low >= LIMIT_STEP and high >= LIMIT_FACTOR * low


def _summary(
    changes: list[str], previous: int, concurrency: dict[str, Any], new: dict[str, int]
) -> str:
    """One line: ``limit 10 → 4; refusing (concurrency_limit 15); 4 in flight, 0 queued``."""
    limit = concurrency["limit"]
    parts = [f"limit {previous} → {limit}" if "limit" in changes else f"limit {limit}"]
    if "refusals_started" in changes:
        counts = ", ".join(f"{reason} {count}" for reason, count in sorted(new.items()))
        parts.append(f"refusing ({counts})")
    elif "refusals_stopped" in changes:
        parts.append("refusals stopped")
    parts.append(f"{concurrency.get('inflight')} in flight, {concurrency.get('queued')} queued")
    return "; ".join(parts)
