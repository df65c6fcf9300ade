"""Prometheus metrics: scrape /metrics after real traffic and count what was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from sloguard import MemoryStore, SLOGuard
from sloguard._clock import ManualClock
from sloguard.observability.metrics import (
    BASE_BUCKETS,
    OTHER_CAPABILITY,
    Metrics,
    NoMetrics,
    latency_buckets,
    metrics_app,
)
from sloguard.slo import load_slo_file

CAP = "convert:pdf"
SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 120, p99_ms: 200}
  availability: {target: 0.99}
enforcement: {reject_on_violation: true}
shedding: {concurrency: {mode: "off"}}  # the window loop alone
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Service:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.latency_s = 0.01
        self.status = 200

    async def work(self, request: Request) -> Response:
        self.clock.advance(self.latency_s)
        return JSONResponse({"ok": True}, status_code=self.status)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def setup(
    tmp_path: Path, clock: ManualClock, registry: CollectorRegistry
) -> AsyncIterator[tuple[httpx.AsyncClient, Service, SLOGuard]]:
    (tmp_path / "pdf.yml").write_text(SLO, encoding="utf-8")
    service = Service(clock)
    inner = Starlette(routes=[Route("/work", service.work, methods=["GET", "POST"])])
    metrics = Metrics(registry, buckets=latency_buckets([load_slo_file(tmp_path / "pdf.yml")]))
    guard = SLOGuard(
        inner,
        slo_dir=tmp_path,
        store=MemoryStore(clock=clock),
        route_table={"/work": CAP},
        clock=clock,
        random_source=lambda: 0.0,
        metrics=metrics,
    )
    app = Starlette(routes=[Mount("/metrics", metrics_app(registry)), Mount("/", guard)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, service, guard


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics/")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counts_match_the_requests_sent_including_shed_and_replayed(
    setup: tuple[httpx.AsyncClient, Service, SLOGuard],
) -> None:
    client, service, _ = setup
    service.latency_s = 0.5  # p95 500 ms against 120 ms
    for _ in range(25):
        assert (await client.post("/work", headers={"X-Priority": "high"})).status_code == 200
    service.clock.advance(1)
    shed = [await client.post("/work", headers={"X-Priority": "low"}) for _ in range(3)]
    assert [r.status_code for r in shed] == [503] * 3
    key = {"X-Priority": "critical", "Idempotency-Key": "k1"}
    first = await client.post("/work", headers=key)
    replay = await client.post("/work", headers=key)
    assert replay.headers["idempotent-replayed"] == "true"
    service.status = 500
    await client.post("/work", headers={"X-Priority": "high"})

    samples = await scrape(client)
    requests = "sloguard_requests_total"
    assert value(samples, requests, capability=CAP, priority="high", outcome="ok") == 25
    assert value(samples, requests, capability=CAP, priority="high", outcome="error") == 1
    assert value(samples, requests, capability=CAP, priority="critical", outcome="ok") == 1
    shed_total = "sloguard_shed_total"
    assert value(samples, shed_total, capability=CAP, priority="low", dry_run="false") == 3
    assert value(samples, "sloguard_request_duration_seconds_count", capability=CAP) == 27
    # 25 requests at 500 ms, 1 at 500 ms (critical), 1 error at 500 ms: none under 120 ms
    assert (
        value(samples, "sloguard_request_duration_seconds_bucket", capability=CAP, le="0.12") == 0
    )
    events = "sloguard_idempotency_events_total"
    assert value(samples, events, event="miss") == 1
    assert value(samples, events, event="stored") == 1
    assert value(samples, events, event="hit") == 1
    assert first.status_code == 200
    assert value(samples, "sloguard_idempotency_entries") == 1
    assert value(samples, "sloguard_idempotency_bytes") > 0
    assert value(samples, "sloguard_slo_compliant", capability=CAP) == 0
    assert value(samples, "sloguard_shedding_active", capability=CAP) == 1
    assert value(samples, "sloguard_error_budget_remaining_ratio", capability=CAP) < 1
    assert value(samples, "sloguard_burn_rate", capability=CAP, window="5m") >= 0


async def test_unknown_capabilities_collapse_into_one_label(
    setup: tuple[httpx.AsyncClient, Service, SLOGuard],
) -> None:
    client, _, _ = setup
    for i in range(50):
        await client.post("/other", headers={"X-Capability": f"attack:n{i}"})
    samples = await scrape(client)
    capabilities = {
        dict(labels)["capability"]
        for (name, labels) in samples
        if name == "sloguard_requests_total"
    }
    assert capabilities == {OTHER_CAPABILITY}
    assert (
        sum(v for (name, labels), v in samples.items() if name == "sloguard_requests_total") == 50
    )


async def test_a_shed_key_is_counted_as_released(
    setup: tuple[httpx.AsyncClient, Service, SLOGuard],
) -> None:
    client, service, _ = setup
    service.latency_s = 0.5
    for _ in range(25):
        await client.post("/work", headers={"X-Priority": "high"})
    service.clock.advance(1)
    shed = await client.post("/work", headers={"X-Priority": "low", "Idempotency-Key": "k"})
    assert shed.status_code == 503
    samples = await scrape(client)
    assert value(samples, "sloguard_idempotency_events_total", event="miss") == 1
    assert value(samples, "sloguard_idempotency_events_total", event="released") == 1
    assert value(samples, "sloguard_idempotency_events_total", event="stored") == 0


def test_buckets_include_every_slo_target(tmp_path: Path) -> None:
    (tmp_path / "pdf.yml").write_text(SLO, encoding="utf-8")
    buckets = latency_buckets([load_slo_file(tmp_path / "pdf.yml")])
    assert {0.05, 0.12, 0.2} <= set(buckets)
    assert set(BASE_BUCKETS) <= set(buckets)
    assert list(buckets) == sorted(buckets)


async def test_metrics_can_be_switched_off(tmp_path: Path, clock: ManualClock) -> None:
    (tmp_path / "pdf.yml").write_text(SLO, encoding="utf-8")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = SLOGuard(app, slo_dir=tmp_path, metrics=False, clock=clock)
    assert isinstance(guard.metrics, NoMetrics)
    assert guard.idempotency is not None
    assert guard.idempotency.on_event is None
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/route/convert/pdf")
    assert response.status_code == 204
    status = guard.manager.status(CAP)
    assert status is not None
    assert status.requests == 1


def test_the_default_is_one_shared_instance_on_the_global_registry(tmp_path: Path) -> None:
    first = SLOGuard(Starlette(), slo_dir=tmp_path)
    second = SLOGuard(Starlette(), slo_dir=tmp_path)
    assert first.metrics is not None
    assert first.metrics is second.metrics


def exposition(registry: CollectorRegistry) -> Samples:
    samples: Samples = {}
    for family in registry.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_plain_counts_expose_what_prometheus_client_children_would() -> None:
    """The lock-free series and prometheus-client's own (multiprocess mode) scrape alike,
    including a latency exactly on a bucket bound (``le`` is inclusive)."""
    scraped = []
    for multiprocess in (False, True):
        registry = CollectorRegistry()
        metrics = Metrics(registry, buckets=(0.1, 0.5), multiprocess=multiprocess)
        pdf, other = metrics.capability(CAP), metrics.capability(None)
        for latency in (0.05, 0.1, 0.3, 0.5, 2.0):
            pdf.request("high", True, latency)
        pdf.request("low", False, 0.7)
        other.request("normal", True, 0.01)
        pdf.shed("low", dry_run=False)
        pdf.shed("normal", dry_run=True)
        metrics.idempotency_event("miss")
        metrics.idempotency_event("stored")
        scraped.append(exposition(registry))
    plain, client = scraped
    assert plain == client
    bucket = "sloguard_request_duration_seconds_bucket"
    assert value(plain, bucket, capability=CAP, le="0.1") == 2
    assert value(plain, bucket, capability=CAP, le="0.5") == 4
    assert value(plain, bucket, capability=CAP, le="+Inf") == 6
    assert value(plain, "sloguard_request_duration_seconds_sum", capability=CAP) == pytest.approx(
        3.65
    )
    assert value(plain, "sloguard_requests_total", capability=CAP, priority="low", outcome="error")
    assert value(plain, "sloguard_idempotency_events_total", event="hit") == 0
