"""The built-in demo worker and its latency model."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest

from sloguard.routing import LatencyProfile, demo_worker_app
from sloguard.slo.loader import load_slo_file

SLOS = Path(__file__).resolve().parents[2] / "state" / "controller" / "slos"


def test_the_latency_model_sits_at_half_the_slo_targets() -> None:
    slo = load_slo_file(SLOS / "classify_email.yml")
    profile = LatencyProfile.for_slo(slo)
    rng = random.Random(1)
    samples = sorted(profile.sample_ms(rng) for _ in range(20_000))
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    target = slo.slo.latency
    assert abs(p50 - target.p50_ms / 2) / (target.p50_ms / 2) < 0.05
    assert abs(p99 - target.p99_ms / 2) / (target.p99_ms / 2) < 0.1


async def test_the_demo_worker_serves_its_capabilities_and_its_health() -> None:
    app = demo_worker_app(["classify:email"], worker_id="d1")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        health = await client.get("/health")
        done = await client.post("/classify/email?delay_ms=0", content=b"abc")
        other = await client.post("/convert/document_to_pdf")

    assert health.json() == {"status": "ok", "worker": "d1"}
    assert done.status_code == 200
    assert done.json()["capability"] == "classify:email"
    assert done.json()["payload_bytes"] == 3
    assert done.json()["took_ms"] == 0
    assert other.status_code == 404
    assert other.headers["content-type"] == "application/problem+json"


async def test_a_worker_of_capacity_one_serves_one_request_at_a_time() -> None:
    finished: list[str] = []

    async def finish_order(capacity: int | None) -> list[str]:
        app = demo_worker_app(["classify:email"], capacity=capacity)
        transport = httpx.ASGITransport(app=app)
        finished.clear()
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:

            async def call(name: str, delay_ms: int) -> None:
                await client.post(f"/classify/email?delay_ms={delay_ms}")
                finished.append(name)

            first = asyncio.create_task(call("slow", 50))
            for _ in range(10):  # let the slow one reach the worker (and its slot) first
                await asyncio.sleep(0)
            await asyncio.gather(first, call("quick", 0))
        return list(finished)

    assert await finish_order(None) == ["quick", "slow"]
    assert await finish_order(1) == ["slow", "quick"]


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        demo_worker_app(["classify:email"], capacity=0)
