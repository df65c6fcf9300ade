"""The README's quick start, served by a real uvicorn on a free loopback port."""

from __future__ import annotations

import runpy
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

QUICKSTART = Path(__file__).parent.parent / "examples" / "quickstart.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server_url() -> Iterator[str]:
    app = runpy.run_path(str(QUICKSTART))["app"]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


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
