"""SLOGuard: idempotency, SLO recording and priority load shedding in one ASGI middleware.

``SLOGuard.__call__`` serves an HTTP request in DESIGN.md's six steps, each a
stage object it calls (none calls back up):

1. classify     (``request.py``)           one pass over the headers → a GuardedRequest
2. idempotency  (``idempotency/gate.py``)  replay, answer (400/409/422/503) or a lease
3. admission    (``shedding/admission.py``) refuse, or admit
4. the app      through one send wrapper (``http.Exchange``)
5. outcome      (``outcomes.py``)          live window, metrics, request observers
6. finish       the lease stores the response, or releases the key

A replay (step 2) is served before admission: it costs almost nothing and helps
a retrying client converge during overload. Requests with no capability, or one
without an SLO file, skip step 3.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sloguard._clock import Clock, monotonic
from sloguard.capability import RouteTable
from sloguard.exceptions import ConfigurationError
from sloguard.http import CAPABILITY, PRIORITY, Exchange, Reply
from sloguard.idempotency.gate import DEFAULT_MAX_REQUEST_BYTES, GateOptions, IdempotencyGate
from sloguard.idempotency.store import Store
from sloguard.liveness import stop_task
from sloguard.observability.metrics import MetricsSink, NoMetrics, default_metrics
from sloguard.observability.tracing import annotate, traced
from sloguard.outcomes import (
    OutcomeRecorder,
    RequestObserver,
    add_request_observer,
    remove_request_observer,
)
from sloguard.reporting.breaches import DEFAULT_OPEN_AFTER_S, DEFAULT_RESOLVE_AFTER_S
from sloguard.reporting.events import AlertCallback, BreachCallback
from sloguard.reporting.reporter import Reporter
from sloguard.reporting.repository import HistoryRepository
from sloguard.reporting.sinks import AlertsConfig
from sloguard.request import Classifier
from sloguard.shedding.admission import WAIT, Admission
from sloguard.slo.manager import SLOManager
from sloguard.slo.schema import Priority

__all__ = ["RequestObserver", "SLOGuard", "add_request_observer", "remove_request_observer"]

logger = logging.getLogger("sloguard")

DEFAULT_SLO_DIR = Path("state/controller/slos")
DEFAULT_ALERTS_FILE = Path("state/controller/alerts.yml")
_OnBreach = TypeVar("_OnBreach", bound=BreachCallback)
_OnAlert = TypeVar("_OnAlert", bound=AlertCallback)
_SPAN_EVENTS = frozenset({"hit", "miss", "conflict", "mismatch"})


class SLOGuard:
    """Pure ASGI middleware composing idempotency, SLO recording and load shedding.

    ``SLOGuard(app)`` works with no arguments: SLO files come from
    ``state/controller/slos`` when that directory exists, keyed requests use a
    ``MemoryStore``. ``idempotency`` takes the options of
    :class:`~sloguard.idempotency.gate.IdempotencyGate` (or False: off).
    ``capability_header`` names a request's capability only when
    ``trust_capability_header`` is True (any client) or lists the client
    addresses (proxies) trusted to set it. See the docs for every option.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        slo_dir: str | os.PathLike[str] | None = None,
        manager: SLOManager | None = None,
        store: Store | None = None,
        idempotency: GateOptions | bool = True,
        route_table: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        priority_header: str = PRIORITY,
        capability_header: str = CAPABILITY,
        trust_capability_header: bool | Iterable[str] = False,
        shed_status: int = 503,
        evaluate_every_s: float = 0.5,
        reload_every_s: float | None = 2.0,
        clock: Clock = monotonic,
        random_source: Callable[[], float] = random.random,
        metrics: MetricsSink | bool = True,
        tracing: bool = False,
        tracer_provider: Any = None,
        reporter: Reporter | None = None,
        history: HistoryRepository | str | os.PathLike[str] | None = None,
        alerts: AlertsConfig | str | os.PathLike[str] | None = None,
        open_after_s: float | None = None,
        resolve_after_s: float | None = None,
    ) -> None:
        if reload_every_s is not None and reload_every_s <= 0:
            raise ConfigurationError(f"reload_every_s must be positive, got {reload_every_s!r}")
        self.app = app
        self.manager = manager = _manager(slo_dir, manager, clock)
        self.reload_every_s = reload_every_s
        self.tracing = tracing
        self.metrics: MetricsSink = _metrics(metrics, manager)

        self.admission = Admission(
            manager,
            shed_status=shed_status,
            evaluate_every_s=evaluate_every_s,
            clock=clock,
            random_source=random_source,
            metrics=self.metrics,
        )
        self.outcomes = OutcomeRecorder(manager, self.metrics, clock=clock)
        self.reporter = _reporter(
            reporter,
            history,
            alerts,
            manager,
            self.admission,
            self.metrics,
            open_after_s=open_after_s,
            resolve_after_s=resolve_after_s,
        )
        on_event = None if isinstance(self.metrics, NoMetrics) else self.metrics.idempotency_event
        if tracing:
            on_event = self._idempotency_event
        self.gate = _gate(idempotency, store, on_event, self.reporter.idempotency.count)
        self.classifier = Classifier(
            clock=clock,
            route_table=RouteTable(route_table),
            key_header=None if self.gate is None else self.gate.key_header,
            priority_header=priority_header,
            capability_header=capability_header if trust_capability_header else None,
            trusted_clients=None
            if isinstance(trust_capability_header, bool)
            else list(trust_capability_header),
            seed_body_bytes=DEFAULT_MAX_REQUEST_BYTES
            if self.gate is None
            else self.gate.max_request_bytes,
        )
        store = None if self.gate is None else self.gate.store
        self.metrics.watch(manager, store, self.admission.concurrency)
        self._owns_reporter = False
        self._watch: asyncio.Task[None] | None = None
        # With tracing on, OpenTelemetry's ASGI middleware opens the request's span
        # around the steps, and the steps add attributes to it.
        self._serve: ASGIApp = traced(self._steps, tracer_provider) if tracing else self._steps

    @property
    def idempotency(self) -> IdempotencyGate | None:
        """The idempotency gate (None when idempotency is off)."""
        return self.gate

    # -- the request path -------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._serve(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
        else:
            await self.app(scope, receive, send)

    async def _steps(self, scope: Scope, receive: Receive, send: Send) -> None:
        # 1. classify
        classifier = self.classifier
        request = classifier.classify(scope, receive)
        if classifier.is_seed_form(request):
            refused = await classifier.read_seed_form(request, read_key=self.gate is not None)
            if refused is not None:
                await refused.send(send)
                return
        capability = request.capability
        slo = None if capability is None else self.manager.get_slo(capability)
        if self.tracing:
            _annotate(capability, request.priority)

        # 2. idempotency
        lease = None
        gate = self.gate
        if gate is not None and gate.wants(request):
            begun = await gate.begin(request)
            if isinstance(begun, Reply):
                await begun.send(send)
                return
            lease = begun

        # 3. admission
        permit = None
        if slo is not None:
            admitted = self.admission.admit(request, slo)
            if admitted is WAIT:  # at the concurrency limit: a place or a refusal, in time
                admitted = await self.admission.wait(request)
            if isinstance(admitted, Reply):
                if lease is not None:
                    await lease.release()
                if self.tracing:
                    annotate("sloguard.shed", True)
                await admitted.send(send)
                return
            permit = admitted

        # 4. the app, 5. its outcome, 6. the permit given back and the lease settled
        exchange = Exchange(send, lease)
        status: int | None = None
        latency = 0.0
        try:
            await self.app(request.scope, classifier.app_receive(request), exchange.send)
        except Exception:
            self.outcomes.record(request, slo, 500)
            raise
        else:
            status = exchange.status
            latency = self.outcomes.record(request, slo, status)
        finally:
            if permit is not None:
                self.admission.release(permit, status, latency)
            if lease is not None and not lease.settled:  # mostly stored as the response left
                await lease.finish(exchange)

    def _idempotency_event(self, event: str) -> None:
        self.metrics.idempotency_event(event)
        if self.tracing and event in _SPAN_EVENTS:
            annotate("sloguard.idempotency", event)

    # -- introspection ----------------------------------------------------------

    def shed_counts(self, capability: str, *, dry_run: bool = False) -> dict[Priority, int]:
        """Requests of ``capability`` refused so far, by priority (``dry_run``: the
        ones that would have been, had enforcement been on)."""
        return self.admission.shed_counts(capability, dry_run=dry_run)

    def rejection_ratios(self, capability: str) -> dict[Priority, float]:
        """The current share of each priority refused (empty when not shedding)."""
        return self.admission.rejection_ratios(capability)

    # -- lifespan: SLO file reloads and the reporter -----------------------------

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start()
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
            return message

        return lifespan_receive

    async def _start(self) -> None:
        reload = self.reload_every_s
        if reload is not None and self.manager.slo_dir is not None and self._watch is None:
            self._watch = asyncio.create_task(self.manager.watch(reload))
        if not self.reporter.running:
            await self.reporter.start()
            self._owns_reporter = True

    async def _stop(self) -> None:
        if self._watch is not None:
            await stop_task(self._watch)
            self._watch = None
        if self._owns_reporter:
            self._owns_reporter = False
            await self.reporter.stop()

    # -- reporting --------------------------------------------------------------

    def on_breach(self, fn: _OnBreach) -> _OnBreach:
        """Call ``fn(breach)`` (sync or async) when a breach warns, opens or resolves;
        usable as a decorator. It runs while the app runs (lifespan), every
        ``monitor_every_s`` of the reporter; a failing callback is logged."""
        return self.reporter.hub.on_breach(fn)

    def on_alert(self, fn: _OnAlert) -> _OnAlert:
        """Call ``fn(alert)`` (sync or async) for every alert fired; see :meth:`on_breach`."""
        return self.reporter.hub.on_alert(fn)


# -- wiring: each part validated on its own -------------------------------------


def _manager(
    slo_dir: str | os.PathLike[str] | None, manager: SLOManager | None, clock: Clock
) -> SLOManager:
    if manager is not None:
        if slo_dir is not None:
            raise ConfigurationError("pass slo_dir or manager, not both")
        return manager
    if slo_dir is None:
        if DEFAULT_SLO_DIR.is_dir():
            slo_dir = DEFAULT_SLO_DIR
        else:
            logger.info(
                "SLOGuard: no slo_dir given and no %s under %s: no SLO files loaded",
                DEFAULT_SLO_DIR,
                Path.cwd(),
            )
    return SLOManager(slo_dir, clock=clock)


def _metrics(metrics: MetricsSink | bool, manager: SLOManager) -> MetricsSink:
    if metrics is True:
        slos = (manager.get_slo(c) for c in manager.capabilities)
        return default_metrics(slo for slo in slos if slo is not None)
    if metrics is False:
        return NoMetrics()
    return metrics


def _gate(
    idempotency: GateOptions | bool,
    store: Store | None,
    on_event: Callable[[str], None] | None,
    on_decision: Callable[[str | None, str], None],
) -> IdempotencyGate | None:
    if idempotency is False:
        if store is not None:
            raise ConfigurationError("a store was given but idempotency is disabled")
        return None
    options: GateOptions = {} if idempotency is True else GateOptions(**idempotency)
    if store is not None:
        options["store"] = store
    if on_event is not None:
        options.setdefault("on_event", on_event)
    options.setdefault("on_decision", on_decision)
    return IdempotencyGate(**options)


def _reporter(
    reporter: Reporter | None,
    history: HistoryRepository | str | os.PathLike[str] | None,
    alerts: AlertsConfig | str | os.PathLike[str] | None,
    manager: SLOManager,
    admission: Admission,
    metrics: MetricsSink,
    *,
    open_after_s: float | None,
    resolve_after_s: float | None,
) -> Reporter:
    if reporter is None:
        # A missing alerts file is the default configuration (everything to the log).
        alerts = DEFAULT_ALERTS_FILE if alerts is None else alerts
        return Reporter(
            manager,
            history=history,
            alerts=alerts,
            admission=admission,
            metrics=metrics,
            open_after_s=DEFAULT_OPEN_AFTER_S if open_after_s is None else open_after_s,
            resolve_after_s=DEFAULT_RESOLVE_AFTER_S if resolve_after_s is None else resolve_after_s,
        )
    if any(option is not None for option in (history, alerts, open_after_s, resolve_after_s)):
        raise ConfigurationError(
            "pass history, alerts, open_after_s and resolve_after_s to the Reporter, "
            "not to SLOGuard"
        )
    if reporter.manager is not manager:
        raise ConfigurationError("the reporter reports on another SLOManager than this guard's")
    reporter.report_admission(admission, metrics)
    return reporter


def _annotate(capability: str | None, priority: Priority) -> None:
    if capability is not None:
        annotate("sloguard.capability", capability)
    annotate("sloguard.priority", priority)
