"""SLOGuard: idempotency, SLO recording and priority load shedding in one ASGI middleware.

The path of one HTTP request (DESIGN.md):

1. resolve its capability and priority;
2. idempotency: replay, 409 or 422 (:class:`IdempotencyMiddleware`);
3. admission: refuse it if its capability is shedding its priority;
4. call the app;
5. record latency and outcome in the capability's live window;
6. idempotency: store the response.

Requests with no capability, or one without an SLO file, skip 3 and 5.

Request observers (:func:`add_request_observer`) see the capability, latency
and outcome of every request with a capability; the pytest plugin is one. With
none registered, the hot path pays one check of an empty tuple.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sloguard._clock import Clock, monotonic
from sloguard.capability import (
    SEED_ROUTE_PATH,
    RouteTable,
    capability_from_path,
    read_seed_body,
)
from sloguard.exceptions import ConfigurationError
from sloguard.idempotency.middleware import (
    SENT_TWICE,
    IdempotencyMiddleware,
    RawKey,
    run_admitted,
)
from sloguard.idempotency.store import Store
from sloguard.observability.metrics import CapabilityMetrics, Metrics, default_metrics
from sloguard.observability.tracing import annotate, traced
from sloguard.problems import PROBLEM_CONTENT_TYPE, problem_body
from sloguard.reporting.breaches import DEFAULT_OPEN_AFTER_S, DEFAULT_RESOLVE_AFTER_S
from sloguard.reporting.events import AlertCallback, BreachCallback
from sloguard.reporting.reporter import Reporter
from sloguard.reporting.repository import HistoryRepository
from sloguard.reporting.sinks import AlertsConfig
from sloguard.shedding.policy import SheddingPolicy
from sloguard.shedding.priority import DEFAULT_PRIORITY, parse_priority
from sloguard.slo.manager import SLOManager
from sloguard.slo.schema import Priority, SLOFile
from sloguard.slo.window import LatencyWindow

logger = logging.getLogger("sloguard.shedding")

DEFAULT_SLO_DIR = Path("state/controller/slos")
DEFAULT_ALERTS_FILE = Path("state/controller/alerts.yml")
_OnBreach = TypeVar("_OnBreach", bound=BreachCallback)
_OnAlert = TypeVar("_OnAlert", bound=AlertCallback)
SHED_STATUSES = frozenset({429, 503})
_DAY_SECONDS = 86_400.0
_SEED_BODY_LIMIT = 1024 * 1024
_SPAN_EVENTS = frozenset(
    {"hit", "miss", "conflict", "mismatch"}
)  # a seed-form body larger than this is not inspected

_IN_SPAN = "sloguard.in_span"
"""Names, in a request's scope, the SLOGuard whose span is open (tracing on)."""

RequestObserver = Callable[[str, float, bool], None]
"""Called with ``(capability, latency_s, ok)`` once per request that names a capability
(a blank one does not count)."""

_observers: tuple[RequestObserver, ...] = ()


def add_request_observer(observer: RequestObserver) -> None:
    """Have every SLOGuard of the process call ``observer`` after each request with a
    capability (with an SLO file or not); it runs on the request's thread, must be
    quick, and one that raises is logged, never breaks the request."""
    global _observers
    if observer not in _observers:
        _observers = (*_observers, observer)


def remove_request_observer(observer: RequestObserver) -> None:
    """Stop calling ``observer``; nothing happens if it was not registered."""
    global _observers
    _observers = tuple(o for o in _observers if o is not observer)


def _notify(capability: str, latency_s: float, ok: bool) -> None:
    for observer in _observers:
        try:
            observer(capability, latency_s, ok)
        except Exception:
            logger.exception("request observer %r failed", observer)


class _Guarded:
    """What SLOGuard keeps per capability with an SLO file."""

    __slots__ = (
        "enforce_from",
        "key",
        "next_update",
        "policy",
        "refusal",
        "refused",
        "series",
        "slo",
        "window",
    )

    def __init__(
        self,
        key: str,
        slo: SLOFile,
        window: LatencyWindow | None,
        enforce_from: float,
        series: CapabilityMetrics | None,
    ) -> None:
        self.key = key
        self.series = series
        self.slo = slo
        self.window = window  # the manager's, for as long as `slo` is the loaded SLOFile
        self.policy = SheddingPolicy(slo.shedding)
        self.enforce_from = enforce_from
        self.next_update = -float("inf")
        self.refusal: _Refusal | None = None
        self.refused: Counter[tuple[Priority, bool]] = Counter()

    def enforcing(self, now: float) -> bool:
        """Whether refusals are real: enforcement on and the grace period over."""
        return self.slo.enforcement.reject_on_violation and now >= self.enforce_from


class _Refusal:
    """The response to a shed request: a ready-made problem document."""

    __slots__ = ("body", "start")

    def __init__(self, status: int, retry_after_s: int, body: bytes) -> None:
        self.body: Message = {"type": "http.response.body", "body": body}
        self.start: Message = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after_s).encode()),
            ],
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self.start)
        await send(self.body)


class SLOGuard:
    """Pure ASGI middleware composing idempotency, SLO recording and load shedding.

    ``SLOGuard(app)`` works with no arguments: SLO files come from
    ``state/controller/slos`` when that directory exists, keyed requests use a
    ``MemoryStore``. See README.md for every option.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        slo_dir: str | os.PathLike[str] | None = None,
        manager: SLOManager | None = None,
        store: Store | None = None,
        idempotency: Mapping[str, Any] | bool = True,
        route_table: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        priority_header: str = "X-Priority",
        capability_header: str = "X-Capability",
        shed_status: int = 503,
        evaluate_every_s: float = 0.5,
        reload_every_s: float | None = 2.0,
        clock: Clock = monotonic,
        random_source: Callable[[], float] = random.random,
        metrics: Metrics | bool = True,
        tracing: bool = False,
        tracer_provider: Any = None,
        reporter: Reporter | None = None,
        history: HistoryRepository | str | os.PathLike[str] | None = None,
        alerts: AlertsConfig | str | os.PathLike[str] | None = None,
        open_after_s: float | None = None,
        resolve_after_s: float | None = None,
    ) -> None:
        if manager is not None and slo_dir is not None:
            raise ConfigurationError("pass slo_dir or manager, not both")
        reporting = (history, alerts, open_after_s, resolve_after_s)
        if reporter is not None and any(option is not None for option in reporting):
            raise ConfigurationError(
                "pass history, alerts, open_after_s and resolve_after_s to the Reporter, "
                "not to SLOGuard"
            )
        if shed_status not in SHED_STATUSES:
            raise ConfigurationError(f"shed_status must be 429 or 503, got {shed_status!r}")
        if evaluate_every_s <= 0:
            raise ConfigurationError(f"evaluate_every_s must be positive, got {evaluate_every_s!r}")
        if reload_every_s is not None and reload_every_s <= 0:
            raise ConfigurationError(f"reload_every_s must be positive, got {reload_every_s!r}")
        if manager is None:
            if slo_dir is None and DEFAULT_SLO_DIR.is_dir():
                slo_dir = DEFAULT_SLO_DIR
            manager = SLOManager(slo_dir, clock=clock)
        self.app = app
        self.manager = manager
        self.shed_status = shed_status
        self.evaluate_every_s = evaluate_every_s
        self.reload_every_s = reload_every_s
        self.route_table = RouteTable(route_table)
        self._routes = len(self.route_table) > 0
        if metrics is True:
            slos = (manager.get_slo(c) for c in manager.capabilities)
            metrics = default_metrics(slo for slo in slos if slo is not None)
        self.metrics: Metrics | None = metrics or None
        self._other = None if self.metrics is None else self.metrics.capability(None)
        self.idempotency: IdempotencyMiddleware | None = None
        if idempotency is not False:
            options = {} if idempotency is True else dict(idempotency)
            if store is not None:
                options["store"] = store
            if tracing:
                options.setdefault("on_event", self._idempotency_event)
            elif self.metrics is not None:
                options.setdefault("on_event", self.metrics.idempotency_event)
            self.idempotency = IdempotencyMiddleware(app, **options)
        elif store is not None:
            raise ConfigurationError("a store was given but idempotency is disabled")
        # No header name is empty: without idempotency, no header is the key's.
        key_header = "" if self.idempotency is None else self.idempotency.key_header
        self._key_header = key_header.lower().encode("latin-1")
        self._priority_header = priority_header.lower().encode("latin-1")
        self._capability_header = capability_header.lower().encode("latin-1")
        self._clock = clock
        # The windows take the manager's clock time: a request ends at our clock's
        # reading when the two are one clock, else at a reading of the manager's.
        self._window_clock = None if manager.clock is clock else manager.clock
        self._random = random_source
        self._guarded: dict[str, _Guarded] = {}
        self._watch: asyncio.Task[None] | None = None
        self.tracing = tracing
        # With tracing on, each request comes back in through the OpenTelemetry
        # middleware, marked so that it is served, not traced twice.
        self._traced: ASGIApp | None = traced(self, tracer_provider) if tracing else None
        if self.metrics is not None:
            self.metrics.watch(
                manager, None if self.idempotency is None else self.idempotency.store
            )
        if reporter is None:
            # A missing alerts file is the default configuration (everything to the log).
            alerts = DEFAULT_ALERTS_FILE if alerts is None else alerts
            reporter = Reporter(
                manager,
                history=history,
                alerts=alerts,
                open_after_s=DEFAULT_OPEN_AFTER_S if open_after_s is None else open_after_s,
                resolve_after_s=(
                    DEFAULT_RESOLVE_AFTER_S if resolve_after_s is None else resolve_after_s
                ),
            )
        elif reporter.manager is not manager:
            raise ConfigurationError("the reporter reports on another SLOManager than this guard's")
        self.reporter = reporter
        reporter.attach(self)
        self._owns_reporter = False

    # -- the request path -------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One coroutine serves the request (no `_serve` awaited from here): this is
        # the hot path.
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                receive = partial(self._lifespan_receive, receive)
            await self.app(scope, receive, send)
            return
        if self._traced is not None and scope.get(_IN_SPAN) is not self:
            await self._traced({**scope, _IN_SPAN: self}, receive, send)
            return
        start = self._clock()

        capability = self.route_table.match(scope["path"]) if self._routes else None
        if capability is None:
            capability = capability_from_path(scope["path"])
        # One pass over the headers, for us and for the idempotency middleware.
        raw_priority: bytes | str | None = None
        raw_key: RawKey = None
        authorization = b""
        key_header, priority_header = self._key_header, self._priority_header
        capability_header = self._capability_header
        for name, value in scope["headers"]:
            if name == key_header:
                raw_key = value if raw_key is None else SENT_TWICE
            elif name == b"authorization":
                authorization = value
            elif name == priority_header:
                raw_priority = value
            elif name == capability_header and capability is None:
                capability = value.decode("latin-1").strip()
        if capability is None and scope["path"] == SEED_ROUTE_PATH and scope["method"] == "POST":
            scope, receive, capability, raw_priority, raw_key = await self._read_seed_form(
                scope, receive, raw_priority, raw_key
            )

        if self.tracing:
            self._annotate(capability, raw_priority)
        admission = done = None
        slo = None if capability is None else self.manager.get_slo(capability)
        if slo is not None:
            assert capability is not None
            guarded = self._guarded.get(capability)
            if guarded is None or guarded.slo is not slo:
                guarded = self._guard(capability, slo)
            priority = DEFAULT_PRIORITY if raw_priority is None else parse_priority(raw_priority)
            done = partial(
                self._record, guarded.window, capability, guarded.series, priority, start
            )
            # Nothing to ask while no priority is shed and no update is due (a request
            # reading a stale "admit" between here and its admission is one that came
            # a moment earlier).
            if guarded.policy.ratios or start >= guarded.next_update:
                admission = partial(self._admit, guarded, priority, start)
        elif self._other is not None or (_observers and capability):
            priority = parse_priority(raw_priority)
            done = partial(self._record, None, capability, self._other, priority, start)

        idempotency = self.idempotency
        if (
            idempotency is not None
            and (raw_key is not None or idempotency.require_key)
            and idempotency.applies(scope)
        ):
            await idempotency.handle(
                scope,
                receive,
                send,
                self.app,
                admission,
                done,
                raw_key=raw_key,
                authorization=authorization,
            )
            return
        await run_admitted(self.app, scope, receive, send, admission, done)

    def _admit(self, guarded: _Guarded, priority: Priority, now: float) -> ASGIApp | None:
        """None to admit a request; the refusal to answer it with otherwise."""
        if now >= guarded.next_update:
            self._update(guarded, now)
        ratio = guarded.policy.ratios.get(priority)
        if ratio is None or self._random() >= ratio:
            return None
        enforcing = guarded.enforcing(now)
        guarded.refused[priority, enforcing] += 1
        if guarded.series is not None:
            guarded.series.shed(priority, dry_run=not enforcing)
        if self.tracing:
            annotate("sloguard.shed", enforcing)
        return guarded.refusal if enforcing else None

    def _idempotency_event(self, event: str) -> None:
        if self.metrics is not None:
            self.metrics.idempotency_event(event)
        if self.tracing and event in _SPAN_EVENTS:
            annotate("sloguard.idempotency", event)

    @staticmethod
    def _annotate(capability: str | None, raw_priority: bytes | str | None) -> None:
        if capability is not None:
            annotate("sloguard.capability", capability)
        annotate("sloguard.priority", parse_priority(raw_priority))

    def _record(
        self,
        window: LatencyWindow | None,
        claimed: str | None,
        series: CapabilityMetrics | None,
        priority: Priority,
        start: float,
        status: int,
    ) -> None:
        """Record a request the app answered with ``status``: its latency and outcome
        in the capability's window (``window`` None: no SLO), in the metrics
        (``series`` None: off) and for the request observers (``claimed``: the
        capability the request named)."""
        end = self._clock()
        latency = end - start
        ok = status < 500
        if window is not None:
            window_clock = self._window_clock
            window.add(latency, ok, end if window_clock is None else window_clock())
        if series is not None:
            series.request(priority, ok, latency)
        if _observers and claimed:
            _notify(claimed, latency, ok)

    async def _read_seed_form(
        self,
        scope: Scope,
        receive: Receive,
        raw_priority: bytes | str | None,
        raw_key: RawKey,
    ) -> tuple[Scope, Receive, str | None, bytes | str | None, RawKey]:
        """Read a seed-form ``POST /route`` body for its capability, priority and key
        (a key header, when sent, wins over the body's key)."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False) or size > _SEED_BODY_LIMIT:
                break
        replay = partial(_replay_then, messages, receive)
        if size > _SEED_BODY_LIMIT or messages[-1].get("more_body", False):
            return scope, replay, None, raw_priority, raw_key
        seed = read_seed_body(b"".join(m.get("body", b"") for m in messages))
        if raw_priority is None:
            raw_priority = seed.priority
        if seed.idempotency_key is not None and self.idempotency is not None and raw_key is None:
            raw_key = seed.idempotency_key.encode("latin-1", "replace")
            scope = {**scope, "headers": [*scope["headers"], (self._key_header, raw_key)]}
        return scope, replay, seed.capability, raw_priority, raw_key

    # -- the policy -------------------------------------------------------------

    def _guard(self, capability: str, slo: SLOFile) -> _Guarded:
        loaded_at = self.manager.loaded_at(capability)
        if loaded_at is None:
            loaded_at = self._clock()
        grace = slo.enforcement.grace_period_days * _DAY_SECONDS
        previous = self._guarded.get(capability)
        series = None if self.metrics is None else self.metrics.capability(capability)
        window = self.manager.live_window(capability)
        guarded = _Guarded(capability, slo, window, loaded_at + grace, series)
        if previous is not None:
            guarded.refused = previous.refused  # a reload keeps the counts
        self._guarded[capability] = guarded
        return guarded

    def _update(self, guarded: _Guarded, now: float) -> None:
        """Re-read the capability's live status and move its rejection ratios."""
        guarded.next_update = now + self.evaluate_every_s
        status = self.manager.status(guarded.key)
        if status is None:
            return  # the SLO file went away; the next request stops guarding it
        policy = guarded.policy
        was_active, was_ratios = policy.active, policy.ratios
        policy.update(now, guarded.slo, status)
        if policy.active:
            config = guarded.slo.shedding
            guarded.refusal = _Refusal(
                self.shed_status,
                config.retry_after_s,
                problem_body(
                    self.shed_status,
                    "slo_violation",
                    "Shedding load to meet the SLO",
                    f"{guarded.key} {_state(status.violations)}; retry after "
                    f"{config.retry_after_s} s or with a higher priority.",
                    capability=guarded.key,
                    violations=list(status.violations),
                    retry_after_s=config.retry_after_s,
                ),
            )
        self.manager.set_shedding(guarded.key, policy.active)
        if policy.active != was_active or (policy.active and policy.ratios != was_ratios):
            self._log_change(guarded, now, status.violations)

    def _log_change(self, guarded: _Guarded, now: float, violations: tuple[str, ...]) -> None:
        policy = guarded.policy
        mode = "" if guarded.enforcing(now) else " (dry run: nothing refused)"
        if not policy.active:
            logger.info("%s: shedding stopped%s", guarded.key, mode)
            return
        ratios = ", ".join(f"{p} {r:.0%}" for p, r in policy.ratios.items())
        logger.warning(
            "%s: shedding %s at severity %.2f: %s%s",
            guarded.key,
            ratios,
            policy.severity,
            "; ".join(violations) or "recovering",
            mode,
        )

    # -- introspection ----------------------------------------------------------

    def shed_counts(self, capability: str, *, dry_run: bool = False) -> dict[Priority, int]:
        """Requests of ``capability`` refused so far, by priority (``dry_run``: the
        ones that would have been, had enforcement been on)."""
        guarded = self._guarded.get(capability)
        if guarded is None:
            return {}
        return {
            priority: count
            for (priority, enforced), count in guarded.refused.items()
            if enforced is not dry_run
        }

    def rejection_ratios(self, capability: str) -> dict[Priority, float]:
        """The current share of each priority refused (empty when not shedding)."""
        guarded = self._guarded.get(capability)
        return {} if guarded is None else dict(guarded.policy.ratios)

    # -- SLO file reloads -------------------------------------------------------

    async def _lifespan_receive(self, receive: Receive) -> Message:
        message = await receive()
        if message["type"] == "lifespan.startup":
            reload = self.reload_every_s
            if reload is not None and self.manager.slo_dir is not None and self._watch is None:
                self._watch = asyncio.create_task(self.manager.watch(reload))
            if not self.reporter.running:
                await self.reporter.start()
                self._owns_reporter = True
        elif message["type"] == "lifespan.shutdown":
            if self._watch is not None:
                self._watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watch
                self._watch = None
            if self._owns_reporter:
                self._owns_reporter = False
                await self.reporter.stop()
        return message

    # -- reporting --------------------------------------------------------------

    def on_breach(self, fn: _OnBreach) -> _OnBreach:
        """Call ``fn(breach)`` (sync or async) when a breach warns, opens or resolves;
        usable as a decorator. It runs while the app runs (lifespan), every
        ``monitor_every_s`` of the reporter; a failing callback is logged."""
        return self.reporter.hub.on_breach(fn)

    def on_alert(self, fn: _OnAlert) -> _OnAlert:
        """Call ``fn(alert)`` (sync or async) for every alert fired; see :meth:`on_breach`."""
        return self.reporter.hub.on_alert(fn)


def _state(violations: tuple[str, ...]) -> str:
    if violations:
        return f"is not meeting its SLO ({'; '.join(violations)})"
    return "is recovering from an SLO violation"


async def _replay_then(messages: list[Message], receive: Receive) -> Message:
    """Hand out ``messages`` (read ahead) first, then what ``receive`` gives."""
    if messages:
        return messages.pop(0)
    return await receive()
