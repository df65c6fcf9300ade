"""Prometheus metrics for SLOGuard (prometheus-client).

Per-request series are counters and a histogram updated through children bound
once per label set (``metric.labels(...)`` is resolved on first use, then
cached), so the hot path pays an increment, not a label lookup. The SLO gauges
(compliance, shedding, error budget, burn rates) and the idempotency store's
size are computed when Prometheus scrapes, by a collector reading the live
state: they cost nothing per request.

Label values are bounded: ``capability`` is a loaded SLO's key or
``OTHER_CAPABILITY``; ``priority`` one of the four priorities.

Counters and histograms work in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``); the scrape-time gauges describe the process
that answers the scrape, so under several workers read them per process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    make_asgi_app,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp

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
        edges.update(ms / 1000.0 for ms in (latency.p50_ms, latency.p95_ms, latency.p99_ms))
    return tuple(sorted(edges))


class CapabilityMetrics:
    """The bound children of one ``capability`` label value."""

    __slots__ = ("_metrics", "_requests", "_shed", "capability", "duration")

    def __init__(self, metrics: Metrics, capability: str) -> None:
        self._metrics = metrics
        self.capability = capability
        self.duration = metrics.duration.labels(capability)
        self._requests: dict[tuple[str, bool], Any] = {}
        self._shed: dict[tuple[str, bool], Any] = {}

    def request(self, priority: str, ok: bool, latency_s: float) -> None:
        """Count one request that reached the app, and its latency."""
        child = self._requests.get((priority, ok))
        if child is None:
            outcome = "ok" if ok else "error"
            child = self._metrics.requests.labels(self.capability, priority, outcome)
            self._requests[priority, ok] = child
        child.inc()
        self.duration.observe(latency_s)

    def shed(self, priority: str, dry_run: bool) -> None:
        """Count one request refused (or, in a dry run, that would have been)."""
        child = self._shed.get((priority, dry_run))
        if child is None:
            child = self._metrics.shed.labels(self.capability, priority, str(dry_run).lower())
            self._shed[priority, dry_run] = child
        child.inc()


class Metrics:
    """sloguard's Prometheus metrics in one registry (default: the global one).

    One instance per registry: creating a second on the same registry raises
    prometheus-client's duplicate-series error. ``SLOGuard(metrics=True)``
    shares one instance on the global registry (:func:`default_metrics`).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        buckets: Iterable[float] = BASE_BUCKETS,
    ) -> None:
        self.registry = registry
        self.requests = Counter(
            "sloguard_requests_total",
            "Requests that reached the app, by capability, priority and outcome.",
            ["capability", "priority", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "sloguard_request_duration_seconds",
            "Latency of requests that reached the app, from arrival to the app's return.",
            ["capability"],
            buckets=tuple(buckets),
            registry=registry,
        )
        self.shed = Counter(
            "sloguard_shed_total",
            "Requests refused by the admission policy (dry_run: would have been).",
            ["capability", "priority", "dry_run"],
            registry=registry,
        )
        self.idempotency = Counter(
            "sloguard_idempotency_events_total",
            "Idempotency-Key outcomes: hit (replayed), miss (ran), conflict (409), "
            "mismatch (422), released, stored, too_large (not stored).",
            ["event"],
            registry=registry,
        )
        self.report_flush_errors = Counter(
            "sloguard_report_flush_errors_total",
            "Flushes of SLO history to the report store that failed (rows kept to retry).",
            registry=registry,
        )
        self.report_rows_dropped = Counter(
            "sloguard_report_rows_dropped_total",
            "Minute rows of SLO history dropped unwritten: the retry backlog was full.",
            registry=registry,
        )
        self._events = {event: self.idempotency.labels(event) for event in IDEMPOTENCY_EVENTS}
        self._capabilities: dict[str, CapabilityMetrics] = {}
        self._state = _StateCollector()
        if registry is not None:
            registry.register(self._state)

    def capability(self, key: str | None) -> CapabilityMetrics:
        """The bound children for ``key``; pass only keys with an SLO file (None: other)."""
        label = OTHER_CAPABILITY if key is None else key
        found = self._capabilities.get(label)
        if found is None:
            found = self._capabilities[label] = CapabilityMetrics(self, label)
        return found

    def idempotency_event(self, event: str) -> None:
        """Count one idempotency outcome (one of ``IDEMPOTENCY_EVENTS``)."""
        self._events[event].inc()

    def watch(self, manager: SLOManager, store: object | None = None) -> None:
        """Report ``manager``'s SLO gauges (and ``store``'s size, when it has one) at scrape."""
        self._state.manager = manager
        self._state.store = store


class _StateCollector(Collector):
    """Gauges read from the live SLO state when Prometheus scrapes."""

    def __init__(self) -> None:
        self.manager: SLOManager | None = None
        self.store: object | None = None

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
