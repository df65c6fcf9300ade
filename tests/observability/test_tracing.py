"""OpenTelemetry: one span per request, with SLOGuard's decisions as attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sloguard import MemoryStore, SLOGuard
from sloguard._clock import ManualClock

SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}
  availability: {target: 0.99}
enforcement: {reject_on_violation: true}
shedding: {concurrency: {mode: "off"}}  # the window loop alone
"""


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def guard(
    tmp_path: Path, clock: ManualClock, exporter: InMemorySpanExporter, latency_s: float
) -> SLOGuard:
    (tmp_path / "pdf.yml").write_text(SLO, encoding="utf-8")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        clock.advance(latency_s)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    return SLOGuard(
        app,
        slo_dir=tmp_path,
        store=MemoryStore(clock=clock),
        clock=clock,
        random_source=lambda: 0.0,
        metrics=False,
        tracing=True,
        tracer_provider=provider,
    )


async def test_spans_carry_capability_priority_idempotency_and_shed(
    tmp_path: Path, clock: ManualClock, exporter: InMemorySpanExporter
) -> None:
    app = guard(tmp_path, clock, exporter, latency_s=0.5)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        url = "/route/convert/pdf"
        key = {"X-Priority": "HIGH", "Idempotency-Key": "k"}
        await client.post(url, headers=key)
        await client.post(url, headers=key)
        for _ in range(25):
            await client.post(url, headers={"X-Priority": "critical"})
        clock.advance(1)
        shed = await client.post(url, headers={"X-Priority": "low"})
    assert shed.status_code == 503

    spans = exporter.get_finished_spans()
    assert len(spans) == 28  # one per request: no receive/send child spans
    first, replay, shed_span = spans[0], spans[1], spans[-1]
    assert first.attributes is not None
    assert first.attributes["sloguard.capability"] == "convert:pdf"
    assert first.attributes["sloguard.priority"] == "high"
    assert first.attributes["sloguard.idempotency"] == "miss"
    assert replay.attributes is not None
    assert replay.attributes["sloguard.idempotency"] == "hit"
    assert shed_span.attributes is not None
    assert shed_span.attributes["sloguard.shed"] is True
    assert shed_span.attributes["sloguard.priority"] == "low"
    assert "sloguard.shed" not in first.attributes


def test_tracing_is_off_by_default(tmp_path: Path) -> None:
    plain = SLOGuard(lambda scope, receive, send: None, slo_dir=tmp_path, metrics=False)
    assert plain.tracing is False
    assert plain.idempotency is not None
    assert plain.idempotency.on_event is None
