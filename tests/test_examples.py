"""The README's quick start, served by a real uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import runpy
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import serving

QUICKSTART = Path(__file__).parent.parent / "examples" / "quickstart.py"


@pytest.fixture
def server_url() -> Iterator[str]:
    with serving(runpy.run_path(str(QUICKSTART))["app"]) as url:
        yield url


def test_the_quickstart_replays_a_retried_order_over_real_http(server_url: str) -> None:
    with httpx.Client(base_url=server_url) as client:
        key = {"Idempotency-Key": "order-1"}
        first = client.post("/orders", json={"item": "book"}, headers=key)
        retry = client.post("/orders", json={"item": "book"}, headers=key)
        other = client.post("/orders", json={"item": "pen"}, headers=key)
        unkeyed = client.post("/orders", json={"item": "book"})

    assert first.status_code == 201
    assert retry.status_code == 201
    assert retry.content == first.content
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert unkeyed.json()["id"] == first.json()["id"] + 1


async def test_the_quickstart_sheds_low_priority_when_its_slo_is_missed(server_url: str) -> None:
    slow = "/route/classify/email?delay_ms=100"  # its SLO: p95 60 ms
    async with httpx.AsyncClient(base_url=server_url) as client:
        warmup = [client.post(slow, headers={"X-Priority": "high"}) for _ in range(25)]
        assert {r.status_code for r in await asyncio.gather(*warmup)} == {200}
        # The policy re-reads the window once a second; poll until it has.
        shed = None
        for _ in range(60):
            response = await client.post(slow, headers={"X-Priority": "low"})
            if response.status_code == 503:
                shed = response
                break
        assert shed is not None, "no low-priority request was shed"
        high = await client.post(slow, headers={"X-Priority": "high"})

    assert shed.headers["retry-after"] == "2"  # classify_email.yml: shedding.retry_after_s
    problem = shed.json()
    assert problem["error"] == "slo_violation"
    assert problem["capability"] == "classify:email"
    assert any(v.startswith("p95 latency") for v in problem["violations"])
    assert high.status_code == 200
