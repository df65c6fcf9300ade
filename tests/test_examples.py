"""The README's quick start, served by a real uvicorn on a free loopback port."""

from __future__ import annotations

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
