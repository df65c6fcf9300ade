"""A small Starlette app whose handlers count how often they really run."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sloguard import IdempotencyMiddleware, MemoryStore
from sloguard._clock import ManualClock

BIG_BODY = bytes(range(256)) * (10 * 1024 * 1024 // 256)  # 10 MiB, every byte value


class Handlers:
    """The app under test, with its call counts and a gate to hold requests in flight."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        """Set once /items has been entered: the request now holds its key."""
        self.seen_bodies: list[bytes] = []

    async def hold(self, request: Awaitable[httpx.Response]) -> asyncio.Task[httpx.Response]:
        """Start ``request`` with the gate closed; return once it holds its key in /items."""
        self.gate.clear()
        self.entered.clear()
        task = asyncio.ensure_future(request)
        await self.entered.wait()
        return task

    async def items(self, request: Request) -> Response:
        self.calls["items"] += 1
        n = self.calls["items"]
        self.entered.set()
        body = await request.body()
        self.seen_bodies.append(body)
        await self.gate.wait()
        payload: dict[str, Any] = {"n": n, "echo": body.decode("latin-1")}
        return JSONResponse(payload, status_code=201, headers={"X-Handler": "items"})

    async def stream(self, request: Request) -> Response:
        self.calls["stream"] += 1

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"chunk-{i}-{self.calls['stream']};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def fail(self, request: Request) -> Response:
        self.calls["fail"] += 1
        return JSONResponse({"n": self.calls["fail"]}, status_code=503)

    async def boom(self, request: Request) -> Response:
        self.calls["boom"] += 1
        raise RuntimeError("handler exploded")

    async def cookie(self, request: Request) -> Response:
        self.calls["cookie"] += 1
        response = JSONResponse({"n": self.calls["cookie"]})
        response.set_cookie("session", "secret")
        return response

    async def big(self, request: Request) -> Response:
        self.calls["big"] += 1
        return Response(BIG_BODY, media_type="application/octet-stream")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/items", self.items, methods=["GET", "POST", "PATCH", "PUT"]),
                Route("/other", self.items, methods=["POST"]),
                Route("/stream", self.stream, methods=["POST"]),
                Route("/fail", self.fail, methods=["POST"]),
                Route("/boom", self.boom, methods=["POST"]),
                Route("/cookie", self.cookie, methods=["POST"]),
                Route("/big", self.big, methods=["POST"]),
            ]
        )


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def store(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


Factory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client(handlers: Handlers, store: MemoryStore) -> AsyncIterator[Factory]:
    """Build a client for the app wrapped in IdempotencyMiddleware with the given options."""
    clients: list[httpx.AsyncClient] = []

    def factory(**options: Any) -> httpx.AsyncClient:
        options.setdefault("store", store)
        app = IdempotencyMiddleware(handlers.app(), **options)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: Factory) -> httpx.AsyncClient:
    return make_client()
