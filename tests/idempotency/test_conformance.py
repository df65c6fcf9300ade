"""Issue 24's gaps, on both stores: a 429 is no result, bodies are bounded, the token is
the app's to see, and cookie-authenticated apps are warned once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sloguard import IdempotencyMiddleware, MemoryStore, Store
from sloguard.idempotency.gate import SCOPE_KEY
from tests.idempotency.conftest import MemoryBackend
from tests.idempotency.test_middleware import KEY, assert_problem, is_replay


class Service:
    def __init__(self) -> None:
        self.calls = 0
        self.status = 429
        self.tokens: list[Any] = []

    async def busy(self, request: Request) -> Response:
        self.calls += 1
        return JSONResponse({"n": self.calls}, status_code=self.status)

    async def echo(self, request: Request) -> Response:
        self.calls += 1
        self.tokens.append(request.scope.get(SCOPE_KEY))
        return JSONResponse({"size": len(await request.body())}, status_code=201)

    def client(self, store: Store, **options: Any) -> httpx.AsyncClient:
        app = Starlette(
            routes=[
                Route("/busy", self.busy, methods=["POST"]),
                Route("/echo", self.echo, methods=["POST"]),
            ]
        )
        guarded = IdempotencyMiddleware(app, store=store, **options)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://t")


async def test_a_429_is_not_stored_so_the_retry_runs(store: Store) -> None:
    service = Service()
    async with service.client(store) as client:
        first = await client.post("/busy", headers=KEY)
        service.status = 201
        retry = await client.post("/busy", headers=KEY)
        replay = await client.post("/busy", headers=KEY)

    assert (first.status_code, retry.status_code) == (429, 201)
    assert not is_replay(retry)
    assert is_replay(replay)
    assert service.calls == 2


async def test_released_statuses_are_configurable(store: Store) -> None:
    service = Service()
    async with service.client(store, released_statuses=()) as client:
        first = await client.post("/busy", headers=KEY)
        again = await client.post("/busy", headers=KEY)
    assert first.status_code == again.status_code == 429
    assert is_replay(again)
    assert service.calls == 1


async def test_a_keyed_body_over_the_limit_is_a_413_and_never_reaches_the_app(
    store: Store,
) -> None:
    service = Service()
    read: list[int] = []

    async def chunks() -> Any:
        for _ in range(100):  # 100 KiB in all, offered 1 KiB at a time
            read.append(1)
            yield b"x" * 1024

    async with service.client(store, max_request_bytes=10 * 1024) as client:
        response = await client.post("/echo", headers=KEY, content=chunks())
        small = await client.post("/echo", headers=KEY, content=b"x" * 100)

    assert_problem(response, 413, "idempotency_request_too_large")
    assert service.calls == 1  # only the small one ran
    assert small.json() == {"size": 100}
    assert len(read) < 20  # it stopped reading soon after the limit, not at the end


async def test_the_app_sees_its_fencing_token(store: Store) -> None:
    service = Service()
    async with service.client(store) as client:
        await client.post("/echo", headers=KEY, content=b"a")
        await client.post("/echo", headers={"Idempotency-Key": "other"}, content=b"a")
        await client.post("/echo", content=b"a")  # unkeyed: no lease, no token

    first, second, unkeyed = service.tokens
    assert first["key"] == "order-42"
    assert second["key"] == "other"
    assert isinstance(first["token"], int)
    assert first["token"] != second["token"]
    assert unkeyed is None


async def test_a_cookie_without_a_principal_is_warned_about_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service()
    with caplog.at_level(logging.WARNING, logger="sloguard.idempotency"):
        async with service.client(store) as client:
            for i in range(3):
                headers = {"Idempotency-Key": f"k{i}", "Cookie": "session=abc"}
                await client.post("/echo", headers=headers)
    warnings = [r for r in caplog.records if "Cookie" in r.getMessage()]
    assert len(warnings) == 1
    assert "principal=" in warnings[0].getMessage()
    assert "abc" not in caplog.text


async def test_a_handler_slower_than_its_lease_still_runs_once(backend: Any, handlers: Any) -> None:
    # The lease (1 s) is renewed every third of it while the handler runs (2 s): a
    # duplicate meanwhile gets 409, not a second execution.
    # Leases expire on real time here: a MemoryStore on the monotonic clock, or Redis.
    store = MemoryStore() if isinstance(backend, MemoryBackend) else backend.make_store()
    app = IdempotencyMiddleware(handlers.app(), store=store, lease_seconds=1.0)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await handlers.hold(client.post("/items", headers=KEY))
        await asyncio.sleep(2.0)  # the renewer runs on the event loop's real timers
        # Without renewal the duplicate would run and wait at the handler's gate.
        duplicate = await asyncio.wait_for(client.post("/items", headers=KEY), 10)
        handlers.gate.set()
        done = await first

    assert done.status_code == 201
    assert_problem(duplicate, 409, "idempotency_request_in_flight")
    assert handlers.calls["items"] == 1
