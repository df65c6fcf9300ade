"""Escalation: an alert nobody acknowledges reaches more people, level by level.

``alerts.yml`` names policies of levels (``after_minutes``, ``sinks``) and
attaches them per channel (``escalation.channels``) or per SLA tier of the
alert's capability (``escalation.tiers``; warnings excluded: a tier's policy is
for what went wrong, not for what came near). The channel's attachment wins.

- When an alert with a policy fires, :meth:`Escalator.observe` stores an
  :class:`Escalation` under the alert's id (insert-if-absent: replicas firing
  the same alert share one row).
- :meth:`Escalator.tick` (every monitor tick) notifies each level whose
  deadline (``started_at + after_minutes``) has passed, in order, as an alert
  ``{alert id}:L{n}`` to that level's sinks. A level is first *claimed* in the
  store (``level = n`` where it was ``n - 1``, still unacknowledged and
  running): one replica wins, so each level is notified once across replicas,
  and a restart carries on from the stored level, neither repeating nor
  skipping one. A level that came due while no process ran is sent late,
  not dropped. After the last level the escalation stops (``exhausted``).
- ``POST /slo/alerts/{id}/ack`` acknowledges (:meth:`Escalator.ack`); the
  alert's resolution (a breach resolving) stops it (``resolved``).

Store calls block (SQL): they run in a worker thread, through ``call`` (the
reporter's :class:`~sloguard.reporting.storecalls.StoreCalls`, which bounds
each with a deadline).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar, runtime_checkable

from sloguard._clock import Clock
from sloguard.reporting.notifier import Notifier
from sloguard.reporting.records import Alert, Escalation
from sloguard.reporting.sinks import EscalationPolicy, EscalationSpec

logger = logging.getLogger("sloguard.alerts")

ACK_PATH = "/slo/alerts/{alert_id}/ack"

T = TypeVar("T")


class StoreCall(Protocol):
    """Runs a blocking store call off the event loop (``asyncio.to_thread``, or a
    :class:`~sloguard.reporting.storecalls.StoreCalls`)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]: ...


@runtime_checkable
class EscalationStore(Protocol):
    """Where escalations are kept: the history repository (SQLite, PostgreSQL), or
    :class:`MemoryEscalations` without one. Synchronous and thread-safe."""

    def start_escalation(self, escalation: Escalation) -> bool:
        """Insert ``escalation`` unless its alert id has one; say whether it was inserted."""
        ...

    def escalations(
        self, alert_ids: Sequence[str] | None = None, *, active: bool = False
    ) -> list[Escalation]:
        """Escalations (of ``alert_ids``; only the running ones if ``active``), oldest first."""
        ...

    def claim_level(self, alert_id: str, level: int) -> bool:
        """Move a running escalation from ``level - 1`` to ``level``; False if another
        process did, or it was acknowledged or stopped meanwhile."""
        ...

    def ack_escalation(self, alert_id: str, at: float, by: str | None) -> Escalation | None:
        """Acknowledge (the first acknowledgement stands); the escalation, or None if unknown."""
        ...

    def stop_escalation(self, alert_id: str, at: float, reason: str) -> bool:
        """Stop a running escalation; False if unknown or already stopped."""
        ...


class MemoryEscalations:
    """Escalations kept in this process (no history store): lost at a restart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, Escalation] = {}

    def start_escalation(self, escalation: Escalation) -> bool:
        with self._lock:
            if escalation.alert_id in self._rows:
                return False
            self._rows[escalation.alert_id] = escalation
            return True

    def escalations(
        self, alert_ids: Sequence[str] | None = None, *, active: bool = False
    ) -> list[Escalation]:
        with self._lock:
            rows = list(self._rows.values())
        wanted = None if alert_ids is None else set(alert_ids)
        return sorted(
            (
                e
                for e in rows
                if (wanted is None or e.alert_id in wanted) and (e.active or not active)
            ),
            key=lambda e: (e.started_at, e.alert_id),
        )

    def claim_level(self, alert_id: str, level: int) -> bool:
        with self._lock:
            row = self._rows.get(alert_id)
            if row is None or not row.active or row.level != level - 1:
                return False
            self._rows[alert_id] = replace(row, level=level)
            return True

    def ack_escalation(self, alert_id: str, at: float, by: str | None) -> Escalation | None:
        with self._lock:
            row = self._rows.get(alert_id)
            if row is not None and row.acked_at is None:
                row = self._rows[alert_id] = replace(row, acked_at=at, acked_by=by)
            return row

    def stop_escalation(self, alert_id: str, at: float, reason: str) -> bool:
        with self._lock:
            row = self._rows.get(alert_id)
            if row is None or row.stopped_at is not None:
                return False
            self._rows[alert_id] = replace(row, stopped_at=at, stop_reason=reason)
            return True


class Escalator:
    """Starts, advances, acknowledges and stops escalations; see the module docs.

    ``tier_of`` gives a capability's SLA tier (the SLO manager's file), for
    policies attached per tier. ``clock`` is the wall clock (Unix seconds).
    """

    def __init__(
        self,
        spec: EscalationSpec,
        store: EscalationStore,
        notifier: Notifier,
        *,
        tier_of: Callable[[str], str | None] = lambda capability: None,
        clock: Clock = time.time,
        call: StoreCall = asyncio.to_thread,
    ) -> None:
        self.spec = spec
        self.store = store
        self._call = call
        self.notifier = notifier
        self._tier_of = tier_of
        self._clock = clock

    @property
    def enabled(self) -> bool:
        """Whether any policy is attached to anything."""
        return bool(self.spec.channels or self.spec.tiers)

    def policy_for(self, alert: Alert) -> str | None:
        """The name of the policy ``alert`` escalates under, or None."""
        if alert.resolves is not None or alert.kind == "escalation":
            return None
        name = self.spec.channels.get(alert.channel)
        if name is None and alert.kind != "warning":
            tier = self._tier_of(alert.capability)
            name = None if tier is None else self.spec.tiers.get(tier)
        return name

    async def observe(self, alert: Alert) -> None:
        """Start the escalation of a new alert, or stop the one its resolution resolves."""
        if alert.resolves is not None:
            await self._call(self.store.stop_escalation, alert.resolves, alert.fired_at, "resolved")
            return
        policy = self.policy_for(alert)
        if policy is None:
            return
        escalation = Escalation(
            alert_id=alert.id,
            capability=alert.capability,
            policy=policy,
            summary=alert.summary,
            started_at=alert.fired_at,
        )
        await self._call(self.store.start_escalation, escalation)

    async def tick(self, now: float | None = None) -> list[Alert]:
        """Notify every level that has come due; the level alerts queued by this process."""
        at = self._clock() if now is None else now
        running = await self._call(self.store.escalations, active=True)
        sent: list[Alert] = []
        for escalation in running:
            policy = self.spec.policies.get(escalation.policy)
            if policy is None:
                await self._call(
                    self.store.stop_escalation, escalation.alert_id, at, "policy removed"
                )
                continue
            sent += await self._advance(escalation, policy, at)
        return sent

    async def _advance(
        self, escalation: Escalation, policy: EscalationPolicy, at: float
    ) -> list[Alert]:
        levels = policy.levels
        due = sum(1 for level in levels if escalation.started_at + level.after_minutes * 60 <= at)
        sent = []
        for number in range(escalation.level + 1, due + 1):
            if not await self._call(self.store.claim_level, escalation.alert_id, number):
                break  # another replica has it, or it was acknowledged meanwhile
            level = levels[number - 1]
            alert = self._level_alert(escalation, number, len(levels), level.after_minutes, at)
            self.notifier.notify(alert, sinks=level.sinks)
            sent.append(alert)
            if number == len(levels):
                await self._call(self.store.stop_escalation, escalation.alert_id, at, "exhausted")
        return sent

    @staticmethod
    def _level_alert(
        escalation: Escalation, number: int, levels: int, after_minutes: float, at: float
    ) -> Alert:
        ack = ACK_PATH.format(alert_id=escalation.alert_id)
        return Alert(
            id=f"{escalation.alert_id}:L{number}",
            capability=escalation.capability,
            kind="escalation",
            channel=f"escalation:{escalation.policy}",
            severity="critical" if number == levels else "warning",
            summary=(
                f"[L{number}, unacknowledged for {after_minutes:g} min] {escalation.summary} "
                f"(acknowledge: POST {ack})"
            ),
            fired_at=at,
            details={
                "escalates": escalation.alert_id,
                "policy": escalation.policy,
                "level": number,
                "levels": levels,
                "started_at": escalation.started_at,
                "ack": ack,
            },
        )

    async def ack(self, alert_id: str, by: str | None = None) -> Escalation | None:
        """Acknowledge the escalation of ``alert_id``; None if it has none."""
        escalation = await self._call(self.store.ack_escalation, alert_id, self._clock(), by)
        if escalation is not None:
            logger.info("alert %s acknowledged by %s", alert_id, by or "someone")
        return escalation
