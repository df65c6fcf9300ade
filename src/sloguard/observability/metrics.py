"""Prometheus metrics for SLOGuard (prometheus-client).

Per-request series (counters and a histogram) are plain counts per capability,
turned into samples when Prometheus scrapes, so the hot path pays a few
dictionary and list updates, not a lock per increment. The SLO gauges
(compliance, shedding, error budget, burn rates) and the idempotency store's
size are computed when Prometheus scrapes, by a collector reading the live
state: they cost nothing per request.

Label values are bounded: ``capability`` is a loaded SLO's key or
``OTHER_CAPABILITY``; ``priority`` one of the four priorities.

Under prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) the
counters and histogram are prometheus-client's own, kept in the shared files
its collector adds up; the scrape-time gauges describe the process
that answers the scrape, so under several workers read them per process.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import Any, Protocol

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    make_asgi_app,
    multiprocess,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp

from sloguard.observability.names import (
    IDEMPOTENCY_EVENTS_TOTAL,
    REPORT_FLUSH_ERRORS_TOTAL,
    REPORT_ROWS_DROPPED_TOTAL,
    REQUEST_DURATION_SECONDS,
    REQUESTS_TOTAL,
    SHED_TOTAL,
)
from sloguard.slo.manager import SLOManager
from sloguard.slo.schema import SLOFile

OTHER_CAPABILITY = "other"
"""The ``capability`` label of requests with no SLO file: one value, whatever they claim."""

IDEMPOTENCY_EVENTS = ("hit", "miss", "conflict", "mismatch", "released", "stored", "too_large")

BASE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Latency buckets in seconds; every loaded SLO's targets are added to them."""


def latency_buckets(slos: Iterable[SLOFile]) -> tuple[float, ...]:
    """The base buckets plus each SLO's p50/p95/p99 targets, so that "share of requests
    over target" is exact in PromQL (``le`` equal to the target)."""
    edges = set(BASE_BUCKETS)
    for slo in slos:
        latency = slo.slo.latency
        edges.update(ms / 1000.0 for ms in latency.targets().values() if ms is not None)
    return tuple(sorted(edges))


Concurrency = Callable[[str], "dict[str, Any] | None"]
"""A capability's concurrency-limit state: ``{limit, inflight, queued, refused:
{reason: {priority: count}}}``, None when no limit applies (``Admission.concurrency``)."""


class CapabilitySeries(Protocol):
    """The per-request series of one ``capability`` label value."""

    def request(self, priority: str, ok: bool, latency_s: float) -> None:
        """Count one request that reached the app, and its latency."""

    def shed(self, priority: str, dry_run: bool) -> None:
        """Count one request refused (or, in a dry run, that would have been)."""


class MetricsSink(Protocol):
    """Where SLOGuard counts requests, refusals and idempotency outcomes:
    :class:`Metrics` (Prometheus) or :class:`NoMetrics` (metrics off)."""

    def capability(self, key: str | None) -> CapabilitySeries:
        """The series of ``key``, a capability with an SLO file (None: all others)."""
        ...

    def idempotency_event(self, event: str) -> None:
        """Count one idempotency outcome (one of ``IDEMPOTENCY_EVENTS``)."""

    def idempotency_counts(self) -> dict[str, int] | None:
        """Idempotency outcomes so far in this process, by event; None when not counted."""
        ...

    def watch(
        self,
        manager: SLOManager,
        store: object | None = None,
        concurrency: Concurrency | None = None,
    ) -> None:
        """Report ``manager``'s SLO gauges (``store``'s size, each capability's
        ``concurrency`` limit, in flight, queued and refusals) when scraped."""


class _NoSeries:
    __slots__ = ()

    def request(self, priority: str, ok: bool, latency_s: float) -> None:
        pass

    def shed(self, priority: str, dry_run: bool) -> None:
        pass


class NoMetrics:
    """The metrics sink that counts nothing (``SLOGuard(metrics=False)``)."""

    _series = _NoSeries()

    def capability(self, key: str | None) -> CapabilitySeries:
        return self._series

    def idempotency_event(self, event: str) -> None:
        pass

    def idempotency_counts(self) -> dict[str, int] | None:
        return None

    def watch(
        self,
        manager: SLOManager,
        store: object | None = None,
        concurrency: Concurrency | None = None,
    ) -> None:
        pass


class CapabilityMetrics:
    """The per-request series of one ``capability`` label value.

    By default they are plain integers and floats, updated without a lock
    (SLOGuard runs on one event loop) and turned into Prometheus samples when
    the registry is scraped: a request costs a few dictionary and list updates
    where prometheus-client's children take a lock per increment and walk the
    bucket list in Python. Under ``PROMETHEUS_MULTIPROC_DIR`` the series are
    prometheus-client's own children instead, whose values live in the shared
    files the multiprocess collector adds up.
    """

    __slots__ = ("_buckets", "_metrics", "_requests", "_shed", "_sum", "capability")

    def __init__(self, metrics: Metrics, capability: str) -> None:
        self._metrics = metrics
        self.capability = capability
        self._requests: dict[tuple[str, bool], int] = {}
        self._shed: dict[tuple[str, bool], int] = {}
        self._buckets = [0] * (len(metrics.buckets) + 1)  # the last counts +Inf
        self._sum = 0.0

    def request(self, priority: str, ok: bool, latency_s: float) -> None:
        """Count one request that reached the app, and its latency."""
        requests = self._requests
        key = (priority, ok)
        requests[key] = requests.get(key, 0) + 1
        self._buckets[bisect_left(self._metrics.buckets, latency_s)] += 1
        self._sum += latency_s

    def shed(self, priority: str, dry_run: bool) -> None:
        """Count one request refused (or, in a dry run, that would have been)."""
        shed = self._shed
        key = (priority, dry_run)
        shed[key] = shed.get(key, 0) + 1


class _ClientCapabilityMetrics(CapabilityMetrics):
    """The same series as prometheus-client children (multiprocess mode)."""

    __slots__ = ("_children", "_client", "_duration", "_shed_children")

    def __init__(self, metrics: Metrics, capability: str) -> None:
        super().__init__(metrics, capability)
        client = metrics._client
        assert client is not None
        self._client = client
        self._duration = client.duration.labels(capability)
        self._children: dict[tuple[str, bool], Any] = {}
        self._shed_children: dict[tuple[str, bool], Any] = {}

    def request(self, priority: str, ok: bool, latency_s: float) -> None:
        child = self._children.get((priority, ok))
        if child is None:
            outcome = "ok" if ok else "error"
            child = self._client.requests.labels(self.capability, priority, outcome)
            self._children[priority, ok] = child
        child.inc()
        self._duration.observe(latency_s)

    def shed(self, priority: str, dry_run: bool) -> None:
        child = self._shed_children.get((priority, dry_run))
        if child is None:
            child = self._client.shed.labels(self.capability, priority, str(dry_run).lower())
            self._shed_children[priority, dry_run] = child
        child.inc()


class _ClientSeries:
    """prometheus-client metrics for multiprocess mode."""

    def __init__(self, registry: CollectorRegistry | None, buckets: tuple[float, ...]) -> None:
        self.requests = Counter(
            REQUESTS_TOTAL, REQUESTS_HELP, ["capability", "priority", "outcome"], registry=registry
        )
        self.duration = Histogram(
            REQUEST_DURATION_SECONDS,
            DURATION_HELP,
            ["capability"],
            buckets=buckets,
            registry=registry,
        )
        self.shed = Counter(
            SHED_TOTAL, SHED_HELP, ["capability", "priority", "dry_run"], registry=registry
        )
        self.idempotency = Counter(
            IDEMPOTENCY_EVENTS_TOTAL, IDEMPOTENCY_HELP, ["event"], registry=registry
        )
        self.events = {event: self.idempotency.labels(event) for event in IDEMPOTENCY_EVENTS}


REQUESTS_HELP = "Requests that reached the app, by capability, priority and outcome."
DURATION_HELP = "Latency of requests that reached the app, from arrival to the app's return."
SHED_HELP = "Requests refused by the admission policy (dry_run: would have been)."
IDEMPOTENCY_HELP = (
    "Idempotency-Key outcomes: hit (replayed), miss (ran), conflict (409), "
    "mismatch (422), released, stored, too_large (not stored)."
)


class Metrics:
    """sloguard's Prometheus metrics in one registry (default: the global one).

    One instance per registry: creating a second on the same registry raises
    prometheus-client's duplicate-series error. ``SLOGuard(metrics=True)``
    shares one instance on the global registry (:func:`default_metrics`).
    ``multiprocess`` (default: whether ``PROMETHEUS_MULTIPROC_DIR`` is set)
    keeps the per-request series in prometheus-client's shared files.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        buckets: Iterable[float] = BASE_BUCKETS,
        multiprocess: bool | None = None,
    ) -> None:
        if multiprocess is None:
            multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = registry
        self.buckets = tuple(sorted(set(buckets)))
        self.report_flush_errors = Counter(
            REPORT_FLUSH_ERRORS_TOTAL,
            "Flushes of SLO history to the report store that failed (rows kept to retry).",
            registry=registry,
        )
        self.report_rows_dropped = Counter(
            REPORT_ROWS_DROPPED_TOTAL,
            "Minute rows of SLO history dropped unwritten: the retry backlog was full.",
            registry=registry,
        )
        self._capabilities: dict[str, CapabilityMetrics] = {}
        self._client = _ClientSeries(registry, self.buckets) if multiprocess else None
        self._series: type[CapabilityMetrics] = (
            _ClientCapabilityMetrics if multiprocess else CapabilityMetrics
        )
        self._events = dict.fromkeys(IDEMPOTENCY_EVENTS, 0)
        self.idempotency_event: Callable[[str], None] = (
            self._count_event if self._client is None else self._client_event
        )
        """Count one idempotency outcome (one of ``IDEMPOTENCY_EVENTS``)."""
        self._state = _StateCollector()
        if registry is not None:
            if self._client is None:
                registry.register(_SeriesCollector(self))
            registry.register(self._state)

    def capability(self, key: str | None) -> CapabilityMetrics:
        """The per-request series for ``key``; pass only keys with an SLO file (None: other)."""
        label = OTHER_CAPABILITY if key is None else key
        found = self._capabilities.get(label)
        if found is None:
            found = self._capabilities[label] = self._series(self, label)
        return found

    def _count_event(self, event: str) -> None:
        self._events[event] += 1

    def idempotency_counts(self) -> dict[str, int]:
        """Idempotency outcomes so far in this process, by event (see ``idempotency_event``)."""
        if self._client is None:
            return dict(self._events)
        return {event: int(child._value.get()) for event, child in self._client.events.items()}

    def _client_event(self, event: str) -> None:
        assert self._client is not None
        self._client.events[event].inc()

    def watch(
        self,
        manager: SLOManager,
        store: object | None = None,
        concurrency: Concurrency | None = None,
    ) -> None:
        """Report ``manager``'s SLO gauges (``store``'s size, when it has one, and each
        capability's ``concurrency`` state) at scrape."""
        self._state.manager = manager
        self._state.store = store
        self._state.concurrency = concurrency


class _SeriesCollector(Collector):
    """The per-request counters and histogram, read from plain counts at scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self._families()  # names only matter: the registry checks them for clashes

    def collect(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[Metric]:
        metrics = self._metrics
        requests = CounterMetricFamily(
            REQUESTS_TOTAL, REQUESTS_HELP, labels=["capability", "priority", "outcome"]
        )
        duration = HistogramMetricFamily(
            REQUEST_DURATION_SECONDS, DURATION_HELP, labels=["capability"]
        )
        shed = CounterMetricFamily(
            SHED_TOTAL, SHED_HELP, labels=["capability", "priority", "dry_run"]
        )
        events = CounterMetricFamily(IDEMPOTENCY_EVENTS_TOTAL, IDEMPOTENCY_HELP, labels=["event"])
        bounds = [*(_go_float(b) for b in metrics.buckets), "+Inf"]
        for series in list(metrics._capabilities.values()):
            capability = series.capability
            for (priority, ok), count in list(series._requests.items()):
                requests.add_metric([capability, priority, "ok" if ok else "error"], count)
            for (priority, dry_run), count in list(series._shed.items()):
                shed.add_metric([capability, priority, str(dry_run).lower()], count)
            cumulative = list(accumulate(series._buckets))
            duration.add_metric(
                [capability], list(zip(bounds, cumulative, strict=True)), series._sum
            )
        for event, count in metrics._events.items():
            events.add_metric([event], count)
        return [requests, duration, shed, events]


class _StateCollector(Collector):
    """Gauges read from the live SLO state when Prometheus scrapes."""

    def __init__(self) -> None:
        self.manager: SLOManager | None = None
        self.store: object | None = None
        self.concurrency: Concurrency | None = None

    def describe(self) -> Iterable[Metric]:
        return ()  # computed at scrape; nothing to check against other collectors

    def collect(self) -> Iterator[Metric]:
        compliant = GaugeMetricFamily(
            "sloguard_slo_compliant",
            "1 when the capability meets its SLO over its live window, else 0.",
            labels=["capability"],
        )
        shedding = GaugeMetricFamily(
            "sloguard_shedding_active",
            "1 while the admission policy refuses (or in a dry run would refuse) requests.",
            labels=["capability"],
        )
        remaining = GaugeMetricFamily(
            "sloguard_error_budget_remaining_ratio",
            "Share of the month's error budget left (negative once overspent).",
            labels=["capability"],
        )
        burn = GaugeMetricFamily(
            "sloguard_burn_rate",
            "Error-budget burn rate over a window (1.0 spends the budget in exactly a month).",
            labels=["capability", "window"],
        )
        manager = self.manager
        if manager is not None:
            for capability in manager.capabilities:
                status = manager.status(capability)
                if status is None:
                    continue
                compliant.add_metric([capability], float(status.compliant))
                shedding.add_metric([capability], float(status.shedding))
                budget = status.budget
                remaining.add_metric([capability], budget.remaining)
                for window, rate in (
                    ("5m", budget.burn_rate_5m),
                    ("1h", budget.burn_rate_1h),
                    ("6h", budget.burn_rate_6h),
                ):
                    burn.add_metric([capability, window], rate)
        yield from (compliant, shedding, remaining, burn)
        if manager is not None and self.concurrency is not None:
            yield from _concurrency_families(manager, self.concurrency)
        store = self.store
        if store is not None and hasattr(store, "__len__") and hasattr(store, "nbytes"):
            yield GaugeMetricFamily(
                "sloguard_idempotency_entries",
                "Stored responses in the idempotency store.",
                value=len(store),
            )
            yield GaugeMetricFamily(
                "sloguard_idempotency_bytes",
                "Approximate bytes held by the idempotency store's responses.",
                value=store.nbytes,
            )


def _concurrency_families(manager: SLOManager, concurrency: Concurrency) -> Iterator[Metric]:
    """The concurrency limiter's state per capability (the inner loop of admission)."""
    limit = GaugeMetricFamily(
        "sloguard_concurrency_limit",
        "The capability's concurrency limit now.",
        labels=["capability"],
    )
    inflight = GaugeMetricFamily(
        "sloguard_inflight",
        "Requests of the capability admitted and running.",
        labels=["capability"],
    )
    queued = GaugeMetricFamily(
        "sloguard_queued", "Requests waiting at the concurrency limit.", labels=["capability"]
    )
    refused = CounterMetricFamily(
        "sloguard_concurrency_refused",
        "Requests refused at the concurrency limit, by reason and priority.",
        labels=["capability", "reason", "priority"],
    )
    for capability in manager.capabilities:
        state = concurrency(capability)
        if state is None:
            continue
        limit.add_metric([capability], state["limit"])
        inflight.add_metric([capability], state["inflight"])
        queued.add_metric([capability], state["queued"])
        for reason, by_priority in state["refused"].items():
            for priority, count in by_priority.items():
                refused.add_metric([capability, reason, priority], count)
    yield from (limit, inflight, queued, refused)


_default: Metrics | None = None


def default_metrics(slos: Iterable[SLOFile] = ()) -> Metrics:
    """The process's metrics on the global registry, created on first use (its
    latency buckets include the targets of ``slos`` passed then)."""
    global _default
    if _default is None:
        _default = Metrics(REGISTRY, buckets=latency_buckets(slos))
    return _default


def metrics_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app answering Prometheus scrapes; mount it at ``/metrics``.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes), it
    aggregates every process's counters and histograms, plus the scrape-time
    gauges of the process that answers.
    """
    if registry is None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            if _default is not None:
                registry.register(_default._state)
        else:
            registry = REGISTRY
    app: ASGIApp = make_asgi_app(registry)
    return app


def _go_float(value: float) -> str:
    """A bucket bound as prometheus-client writes ``le`` (``0.1``, ``1.0``, ``+Inf``)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text
