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

from sloguard import IdempotencyMiddleware, MemoryStore, RedisStore, Store
from sloguard._clock import ManualClock
from tests.redis_server import RedisKeys

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


class MemoryBackend:
    """MemoryStores on the test's manual clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def make_store(self, **options: Any) -> Store:
        return MemoryStore(clock=self.clock, **options)

    def make_fair_store(self, per_principal: int) -> Store:
        """A store in which one principal holds at most ``per_principal`` responses while
        another holds some: a full store of twice that, half of it each one's share."""
        return self.make_store(max_entries=2 * per_principal, principal_share=0.5)

    async def travel(self, seconds: float) -> None:
        self.clock.advance(seconds)


class RedisBackend:
    """RedisStores under one test's key prefix on the shared Redis server.

    Their timeout is generous: these tests check semantics on a busy machine; the
    failure tests in test_redis.py use the default.
    """

    def __init__(self, keys: RedisKeys) -> None:
        self.keys = keys
        self.stores: list[RedisStore] = []

    def make_store(self, **options: Any) -> RedisStore:
        options.setdefault("prefix", self.keys.prefix)
        options.setdefault("timeout_seconds", 5.0)
        store = RedisStore(self.keys.url, **options)
        self.stores.append(store)
        return store

    def make_fair_store(self, per_principal: int) -> RedisStore:
        """A store in which one principal holds at most ``per_principal`` responses."""
        return self.make_store(max_entries_per_principal=per_principal)

    async def travel(self, seconds: float) -> None:
        await self.keys.travel(seconds)

    async def close(self) -> None:
        for store in self.stores:
            await store.aclose()


Backend = MemoryBackend | RedisBackend


@pytest.fixture
async def redis_backend(redis_keys: RedisKeys) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_keys)
    yield backend
    await backend.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, clock: ManualClock) -> Backend:
    """Each store kind in turn: every test using it checks both against one contract."""
    if request.param == "memory":
        return MemoryBackend(clock)
    redis_backend: RedisBackend = request.getfixturevalue("redis_backend")
    return redis_backend


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.make_store()


Travel = Callable[[float], Awaitable[None]]


@pytest.fixture
def travel(backend: Backend) -> Travel:
    """Move the store's clock forward: the manual clock, or Redis's for the test's keys."""
    return backend.travel


Factory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client(handlers: Handlers, store: Store) -> AsyncIterator[Factory]:
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
