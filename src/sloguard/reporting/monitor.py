"""SLOMonitor: every few seconds, each capability's status through breaches and alerts.

One :meth:`SLOMonitor.tick` reads every loaded capability's live status from
the :class:`SLOManager`, feeds the :class:`BreachTracker`, asks the
:class:`AlertEngine` what is new, queues the alerts on the :class:`Notifier`
(first: delivery never waits on a store), saves breach records
(``save_breach``, e.g. the history repository's upsert) and publishes every
event on the :class:`EventHub` (WebSocket subscribers, ``on_breach`` /
``on_alert`` callbacks); then the :class:`Escalator` starts, stops and
advances escalations. A capability whose turn fails is logged (once until it
works again) and skipped; the others are looked at as usual
(:attr:`SLOMonitor.liveness` counts the failures).

A ``throughput`` floor is judged here, not in the live status (which drives
shedding: refusing requests would only lower throughput further). Demand is the
window's requests plus the ones admission refused over the same span
(``refusals``: a capability's enforced refusals so far, e.g. SLOGuard's
``shed_counts``), so a capability that sheds below its floor is in breach.

With ``shedding`` (a capability's ``shedding`` object of ``GET /slo``, e.g. the
:class:`Reporter`'s), each ``shedding`` event carries the same fields as that
object, and a :class:`LimitTracker` reads its ``concurrency`` every tick:
the limiter starting or stopping to refuse, or its limit moving materially, is
a ``concurrency`` event.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from sloguard._clock import Clock
from sloguard.liveness import Liveness
from sloguard.reporting.alerts import AlertEngine
from sloguard.reporting.breaches import BreachTracker
from sloguard.reporting.escalation import Escalator
from sloguard.reporting.events import EventHub, alert_event
from sloguard.reporting.notifier import Notifier
from sloguard.reporting.records import Alert, Breach, ReportEvent
from sloguard.reporting.shedding import LimitTracker
from sloguard.reporting.slicing import in_slices
from sloguard.slo.compliance import check_compliance
from sloguard.slo.manager import SLOManager, SLOStatus
from sloguard.slo.schema import SLOFile

logger = logging.getLogger("sloguard.reporting")

SaveBreach = Callable[[Breach], Awaitable[None] | None]
Refusals = Callable[[str], int]
"""A capability's requests refused by admission so far (a running total)."""
SheddingFigures = Callable[[str, bool], "dict[str, Any] | None"]
"""A capability's ``shedding`` object of ``GET /slo``, given whether the window policy
sheds (None: the capability has gone)."""


class RefusalRate:
    """Refusals per second over a span, from successive readings of a running total."""

    def __init__(self, total: Refusals) -> None:
        self._total = total
        self._seen: dict[str, deque[tuple[float, int]]] = {}

    def rate(self, capability: str, at: float, span_s: float) -> float:
        total = self._total(capability)
        seen = self._seen.setdefault(capability, deque())
        seen.append((at, total))
        # Keep the newest reading at or before the span's start: the baseline.
        while len(seen) > 1 and seen[1][0] <= at - span_s:
            seen.popleft()
        return max(0, total - seen[0][1]) / span_s

    def forget(self, capability: str) -> None:
        self._seen.pop(capability, None)


class SLOMonitor:
    """Runs the breach tracker and the alert engine over an SLO manager's capabilities.

    Every part has a default (a log-only notifier, a fresh hub); pass your own to
    share them. ``clock`` is the wall clock the records are stamped with.
    """

    def __init__(
        self,
        manager: SLOManager,
        *,
        tracker: BreachTracker | None = None,
        engine: AlertEngine | None = None,
        notifier: Notifier | None = None,
        hub: EventHub | None = None,
        save_breach: SaveBreach | None = None,
        escalator: Escalator | None = None,
        refusals: Refusals | None = None,
        shedding: SheddingFigures | None = None,
        limits: LimitTracker | None = None,
        clock: Clock = time.time,
        slice_s: float | None = None,
    ) -> None:
        self.manager = manager
        self.tracker = tracker if tracker is not None else BreachTracker(clock=clock)
        self.engine = engine if engine is not None else AlertEngine(clock=clock)
        self.notifier = notifier if notifier is not None else Notifier()
        self.hub = hub if hub is not None else EventHub()
        self._save_breach = save_breach
        self.escalator = escalator
        self._refusals = None if refusals is None else RefusalRate(refusals)
        self._shedding = shedding
        self.limits = limits if limits is not None else LimitTracker(clock=clock)
        self._clock = clock
        self.slice_s = slice_s
        """Hand the event loop back after this much work in a tick (default ``SLICE_S``)."""
        self._known: set[str] = set()
        self.liveness = Liveness("slo_monitor", clock=clock)
        """The liveness of :meth:`run` (``idle`` until it runs)."""

    async def tick(self, now: float | None = None) -> tuple[list[ReportEvent], list[Alert]]:
        """Look at every capability once; return the events published and the alerts queued.

        The pass is cut into slices (:func:`in_slices`): requests are served between them.
        """
        at = self._clock() if now is None else now
        all_events: list[ReportEvent] = []
        all_alerts: list[Alert] = []
        capabilities = set(self.manager.capabilities)
        for gone in self._known - capabilities:
            self.tracker.forget(gone)
            self.limits.forget(gone)
            if self._refusals is not None:
                self._refusals.forget(gone)
        self._known = capabilities
        liveness = self.liveness
        async for capability in in_slices(sorted(capabilities), slice_s=self.slice_s):
            try:  # one capability that fails never keeps the others from being watched
                events, alerts = await self._look_at(capability, at)
            except Exception as exc:
                liveness.failed(capability, exc, logger)
                continue
            liveness.recovered(capability, logger)
            all_events += events
            all_alerts += alerts
        if self.escalator is not None:
            try:
                all_alerts += await self.escalator.tick(at)
            except Exception as exc:
                liveness.failed("advancing escalations", exc, logger)
            else:
                liveness.recovered("advancing escalations", logger)
        return all_events, all_alerts

    async def _look_at(self, capability: str, at: float) -> tuple[list[ReportEvent], list[Alert]]:
        slo = self.manager.get_slo(capability)
        status = self.manager.status(capability)
        if slo is None or status is None:
            return [], []  # removed by a reload between the two calls
        status = self._judge_throughput(status, slo, at)
        events = self.tracker.observe(status, slo, at)
        if self._shedding is not None:
            events = self._with_admission(capability, status, events, at)
        alerts = self.engine.evaluate(status, slo, events, at)
        for alert in alerts:  # queued first: delivery never waits on saving a breach
            self.notifier.notify(alert)
        for event in events:
            breach = event.data.get("breach")
            if isinstance(breach, Breach):
                await self._save(breach)
            self.hub.publish(event)
        for alert in alerts:
            self.hub.publish(alert_event(alert))
            await self._escalate(alert)
        return events, alerts

    def _with_admission(
        self, capability: str, status: SLOStatus, events: list[ReportEvent], at: float
    ) -> list[ReportEvent]:
        """``events`` with the ``shedding`` object's fields in each ``shedding`` event, and
        the limit tracker's ``concurrency`` event, if any."""
        assert self._shedding is not None
        shedding = self._shedding(capability, status.shedding)
        if shedding is None:
            return events
        out = [
            replace(e, data={**e.data, **shedding}) if e.type == "shedding" else e for e in events
        ]
        limit_event = self.limits.observe(capability, shedding.get("concurrency"), at)
        return out if limit_event is None else [*out, limit_event]

    def _judge_throughput(self, status: SLOStatus, slo: SLOFile, at: float) -> SLOStatus:
        """``status`` with refusals added to its demand and a throughput shortfall, if
        any, among its violations (see the module docs)."""
        if slo.slo.throughput is None:
            return status
        refused = 0.0
        if self._refusals is not None:
            refused = self._refusals.rate(status.capability, at, status.window_seconds)
        demand = (status.demand_rps or 0.0) + refused
        throughput = status.throughput_rps
        if throughput is None and demand > 0:
            throughput = 0.0  # everything refused
        status = replace(status, demand_rps=demand, throughput_rps=throughput)
        _, shortfall = check_compliance(slo, {"throughput_rps": throughput, "demand_rps": demand})
        if not shortfall:
            return status
        return replace(status, compliant=False, violations=(*status.violations, *shortfall))

    async def _escalate(self, alert: Alert) -> None:
        if self.escalator is None:
            return
        try:
            await self.escalator.observe(alert)
        except Exception:
            logger.exception("starting or stopping the escalation of alert %s failed", alert.id)

    async def run(self, interval_s: float = 5.0) -> None:
        """``tick`` every ``interval_s`` seconds, forever (run it as a task). A failure is
        logged (once until it works again) and skipped; :attr:`liveness` tells how it goes."""
        await self.liveness.run_every(interval_s, "SLO monitor tick", self.tick, logger)

    async def _save(self, breach: Breach) -> None:
        if self._save_breach is None:
            return
        try:
            result = self._save_breach(breach)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("saving breach %s failed", breach.id)
