"""Reporter: what reporting runs beside one SLOGuard, wired together.

- an :class:`SLOMonitor` ticking every ``monitor_every_s`` seconds (breaches,
  budget, burn-rate and breach alerts; with an admission, the ``concurrency``
  events of its limiter) whose events reach the :class:`EventHub`
  (``on_breach`` / ``on_alert`` callbacks, ``/slo/ws`` subscribers);
- a :class:`Notifier` delivering alerts to the sinks of ``alerts`` (default:
  everything to the log);
- with a ``history`` store: a :class:`HistoryRecorder` flushing minute
  aggregates, breaches saved with ``save_breach`` and alerts deduplicated with
  ``save_alert`` (across restarts and replicas);
- an :class:`Escalator` for the escalation policies of ``alerts``, its state in
  the history store (in memory without one).

``open_after_s`` and ``resolve_after_s`` tune breach detection (the
:class:`BreachTracker`'s; default 55 s and 60 s). Every call the monitor, the
notifier and the escalator make to the history store has a deadline
(``store_timeout_s``, default 5 s): a store that hangs never holds up alerts.

:meth:`Reporter.health` is how its background loops are doing (the SLO file
watcher, the monitor, the recorder, the notifier), for ``/healthz``.

SLOGuard creates one (``SLOGuard(app, history=..., alerts=...)``), or takes
yours (``SLOGuard(app, reporter=...)``), and starts and stops it with the
application's lifespan. :meth:`Reporter.routes` are the /slo API plus the
WebSocket ``/slo/ws``; the controller mounts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from sloguard._clock import Clock, monotonic
from sloguard.exceptions import ConfigurationError
from sloguard.liveness import Liveness, liveness_report, stop_task
from sloguard.observability.metrics import MetricsSink
from sloguard.reporting.api import api_token, slo_routes
from sloguard.reporting.breaches import (
    DEFAULT_OPEN_AFTER_S,
    DEFAULT_RESOLVE_AFTER_S,
    BreachTracker,
)
from sloguard.reporting.escalation import EscalationStore, Escalator, MemoryEscalations
from sloguard.reporting.events import EventHub, event_json
from sloguard.reporting.idempotency import IdempotencyCounts
from sloguard.reporting.monitor import SLOMonitor
from sloguard.reporting.notifier import Notifier
from sloguard.reporting.recorder import DEFAULT_INTERVAL_S, HistoryRecorder
from sloguard.reporting.records import Alert, Breach
from sloguard.reporting.repository import HistoryRepository, open_repository
from sloguard.reporting.shedding import shedding_json
from sloguard.reporting.sinks import AlertsConfig, load_alerts_file
from sloguard.reporting.storecalls import DEFAULT_STORE_TIMEOUT_S, StoreCalls
from sloguard.shedding.admission import Admission
from sloguard.slo.manager import SLOManager

logger = logging.getLogger("sloguard.reporting")

WS_POLICY_VIOLATION = 1008
"""The close code a WebSocket without the API token gets (before the handshake completes)."""


class Reporter:
    """Breach and alert monitoring, alert delivery and (with ``history``) durable history."""

    def __init__(
        self,
        manager: SLOManager,
        *,
        history: HistoryRepository | str | os.PathLike[str] | None = None,
        alerts: AlertsConfig | str | os.PathLike[str] | None = None,
        monitor_every_s: float | None = 5.0,
        flush_every_s: float = DEFAULT_INTERVAL_S,
        replica: str | None = None,
        open_after_s: float = DEFAULT_OPEN_AFTER_S,
        resolve_after_s: float = DEFAULT_RESOLVE_AFTER_S,
        wall_clock: Clock = time.time,
        monotonic_clock: Clock = monotonic,
        admission: Admission | None = None,
        metrics: MetricsSink | None = None,
        store_timeout_s: float = DEFAULT_STORE_TIMEOUT_S,
    ) -> None:
        if monitor_every_s is not None and monitor_every_s <= 0:
            raise ConfigurationError(f"monitor_every_s must be positive, got {monitor_every_s!r}")
        self.manager = manager
        self.repository = (
            open_repository(history) if isinstance(history, str | os.PathLike) else history
        )
        config = load_alerts_file(alerts) if isinstance(alerts, str | os.PathLike) else alerts
        repository = self.repository
        self.store_timeout_s = store_timeout_s
        self._store_calls = StoreCalls("sloguard-history", timeout_s=store_timeout_s)
        self.hub = EventHub()
        self.idempotency = IdempotencyCounts(manager.get_slo)
        """Per-capability idempotency hits and misses, counted by the request path."""
        self.notifier = Notifier(config, record=None if repository is None else self._save_alert)
        store: EscalationStore = (
            repository if isinstance(repository, EscalationStore) else MemoryEscalations()
        )
        self.escalator = Escalator(
            self.notifier.config.escalation,
            store,
            self.notifier,
            tier_of=self._tier_of,
            clock=wall_clock,
            call=self._store_calls,
        )
        self.monitor = SLOMonitor(
            manager,
            tracker=BreachTracker(
                open_after_s=open_after_s, resolve_after_s=resolve_after_s, clock=wall_clock
            ),
            notifier=self.notifier,
            hub=self.hub,
            save_breach=None if repository is None else self._save_breach,
            escalator=self.escalator,
            refusals=self._refusals,
            shedding=self._shedding,
            clock=wall_clock,
        )
        self.monitor_every_s = monitor_every_s
        self.flush_every_s = flush_every_s
        self.replica = replica
        self.admission = admission
        """Whose refusals the /slo API and the history report (SLOGuard's)."""
        self.metrics = metrics
        """Whose idempotency counts the /slo API reports."""
        self.recorder: HistoryRecorder | None = None
        if repository is not None:
            self.recorder = HistoryRecorder(
                manager,
                repository,
                guard=admission,
                replica=replica,
                interval_s=flush_every_s,
                monotonic_clock=monotonic_clock,
                wall_clock=wall_clock,
            )
        self._wall = wall_clock
        self._monotonic = monotonic_clock
        self._monitor_task: asyncio.Task[None] | None = None

    def report_admission(self, admission: Admission, metrics: MetricsSink | None = None) -> None:
        """Report ``admission``'s refusals (and ``metrics``' idempotency counts): for a
        reporter built before the SLOGuard whose they are."""
        self.admission = admission
        self.metrics = metrics
        if self.recorder is not None:
            self.recorder.guard = admission

    def _tier_of(self, capability: str) -> str | None:
        slo = self.manager.get_slo(capability)
        return None if slo is None else slo.tier

    def _shedding(self, capability: str, active: bool) -> dict[str, Any] | None:
        slo = self.manager.get_slo(capability)
        return None if slo is None else shedding_json(slo, active, self.admission)

    def _refusals(self, capability: str) -> int:
        admission = self.admission
        return 0 if admission is None else sum(admission.shed_counts(capability).values())

    # -- lifecycle --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._monitor_task is not None

    async def start(self) -> None:
        """Start the monitor loop and the history recorder (idempotent)."""
        if self._monitor_task is not None:
            return
        if self.monitor_every_s is not None:
            self._monitor_task = asyncio.create_task(self.monitor.run(self.monitor_every_s))
        if self.recorder is not None:
            self.recorder.start()

    async def stop(self) -> None:
        """Stop the loops, flush the history one last time, deliver what is queued."""
        task, self._monitor_task = self._monitor_task, None
        if task is not None:
            await stop_task(task)
        await self._store_calls.idle()  # a breach or alert the monitor was saving
        if self.recorder is not None:
            await self.recorder.stop()
        await self.notifier.aclose()
        await self.hub.aclose()

    # -- persistence (off the event loop) ----------------------------------------

    async def _save_breach(self, breach: Breach) -> None:
        assert self.repository is not None
        await self._store_calls(self.repository.save_breach, breach)

    async def _save_alert(self, alert: Alert) -> bool:
        assert self.repository is not None
        return await self._store_calls(self.repository.save_alert, alert)

    # -- liveness -----------------------------------------------------------------

    def loops(self) -> list[Liveness]:
        """The liveness of each background loop: the SLO file watcher (run by SLOGuard),
        the monitor, the history recorder (with a history store) and the notifier."""
        loops = [self.manager.watcher, self.monitor.liveness]
        if self.recorder is not None:
            loops.append(self.recorder.liveness)
        return [*loops, self.notifier.liveness]

    def health(self, *others: Liveness) -> dict[str, Any]:
        """``{"status": "ok" | "degraded", "loops": {...}}`` of :meth:`loops` and ``others``
        (e.g. the controller's health checks): what ``/healthz`` shows."""
        return liveness_report([*self.loops(), *others], self._wall())

    # -- HTTP ---------------------------------------------------------------------

    def routes(self, *, token: str | None = None, prefix: str = "/slo") -> Sequence[BaseRoute]:
        """The /slo API and the ``/slo/ws`` event stream, behind ``token`` when one is set
        (``None`` reads ``$SLOGUARD_API_TOKEN``; the WebSocket takes it as
        ``Authorization: Bearer`` or ``?token=``)."""
        token = api_token(token)
        stream = WebSocketRoute(prefix + "/ws", self._stream(token), name="slo_ws")
        routes = slo_routes(
            self.manager,
            self.repository,
            admission=lambda: self.admission,
            metrics=lambda: self.metrics,
            token=token,
            prefix=prefix,
            idempotency=self.idempotency,
            escalator=self.escalator,
            store_timeout_s=self.store_timeout_s,
        )
        return [stream, *routes]

    def _stream(self, token: str | None) -> Any:
        hub = self.hub

        async def stream(websocket: WebSocket) -> None:
            if token and not _authorized(websocket, token):
                await websocket.close(code=WS_POLICY_VIOLATION)
                return
            await websocket.accept()
            with hub.subscribe() as subscription:

                async def forward() -> None:
                    async for event in subscription:
                        await websocket.send_json(event_json(event))

                tasks = {
                    asyncio.create_task(forward()),
                    asyncio.create_task(_until_closed(websocket)),
                }
                try:
                    # Until the client leaves, or the hub closes (the app shuts down).
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)

        return stream


def _authorized(websocket: WebSocket, token: str) -> bool:
    given = websocket.headers.get("authorization", "").removeprefix("Bearer ")
    given = websocket.query_params.get("token", given)
    return hmac.compare_digest(given.encode("latin-1", "replace"), token.encode())


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
