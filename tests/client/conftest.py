"""A real sloguard service on a loopback port, and clients that call it through the transports.

The service is ``IdempotencyMiddleware`` in front of a shedding stage and a handler:
the shedding stage answers as the shedding middleware will (503, ``Retry-After``,
problem+json with ``"error": "slo_violation"``) whenever the test says so, and
the handler can stall on demand. Sleeps and clocks are injected: a client's
back-off moves a ``ManualClock`` and never really waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sloguard import IdempotencyMiddleware, MemoryStore
from sloguard._clock import ManualClock
from sloguard.client import RetryTransport, SyncRetryTransport
from sloguard.problems import send_problem
from tests.servers import serving

STALL_LIMIT = 10.0
"""Seconds a stalled handler waits to be released before giving up (a test gone wrong)."""


@dataclass(frozen=True)
class Reply:
    """An answer the shedding stage gives instead of calling the handler."""

    status: int = 503
    retry_after: str | None = "1"
    error: str = "slo_violation"
    date: str | None = None


SHED = Reply()


@dataclass(frozen=True)
class Arrival:
    """A request as it reached the server."""

    method: str
    path: str
    key: str | None
    priority: str | None


class Backend:
    """The service under test and what it saw."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.executions = 0
        """How often the handler really ran (not replays, not shed requests)."""
        self.planned: deque[Reply] = deque()
        """Replies for the next requests past the idempotency stage, in order."""
        self.answer: Callable[[int], Reply | None] = lambda n: None
        """Once ``planned`` is empty: the reply to the n-th request (from 0) past the
        idempotency stage, or ``None`` to call the handler."""
        self.stalls = 0
        """How many of the next handler runs stall until ``release()``."""
        self.stalled = threading.Event()
        self._release = threading.Event()
        self._finished = threading.Condition()
        self.finished = 0
        """Requests completely handled (a stored response is stored by then)."""
        self._past_idempotency = 0

    def plan(self, *replies: Reply) -> None:
        self.planned.extend(replies)

    def release(self) -> None:
        """Let stalled handler runs finish."""
        self._release.set()

    def wait_finished(self, count: int) -> None:
        """Block until ``count`` requests in all have been completely handled."""
        with self._finished:
            done = self._finished.wait_for(lambda: self.finished >= count, STALL_LIMIT)
        assert done, f"the server finished {self.finished} requests, not {count}"

    def app(self) -> ASGIApp:
        inner = Starlette(
            routes=[
                Route("/orders", self._orders, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
            ]
        )
        return self._recorder(IdempotencyMiddleware(self._shedder(inner), store=MemoryStore()))

    async def _orders(self, request: Request) -> Response:
        self.executions += 1
        n = self.executions
        body = await request.body()
        if self.stalls:
            self.stalls -= 1
            self.stalled.set()
            await asyncio.to_thread(self._release.wait, STALL_LIMIT)
        status = 201 if request.method == "POST" else 200
        return JSONResponse({"n": n, "body": body.decode()}, status_code=status)

    def _shedder(self, app: ASGIApp) -> ASGIApp:
        async def shedder(scope: Scope, receive: Receive, send: Send) -> None:
            n = self._past_idempotency
            self._past_idempotency += 1
            reply = self.planned.popleft() if self.planned else self.answer(n)
            if reply is None:
                await app(scope, receive, send)
                return
            headers = []
            if reply.retry_after is not None:
                headers.append((b"retry-after", reply.retry_after.encode()))
            if reply.date is not None:
                headers.append((b"date", reply.date.encode()))
            await send_problem(
                send,
                reply.status,
                reply.error,
                "Service overloaded" if reply.status == 503 else "Refused",
                "Shed by the test's shedding stage.",
                headers=headers,
                violations=["p95 latency 250ms > target 100ms"],
            )

        return shedder

    def _recorder(self, app: ASGIApp) -> ASGIApp:
        async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = {name.decode(): value.decode() for name, value in scope["headers"]}
            self.arrivals.append(
                Arrival(
                    scope["method"],
                    scope["path"],
                    headers.get("idempotency-key"),
                    headers.get("x-priority"),
                )
            )
            try:
                await app(scope, receive, send)
            finally:
                with self._finished:
                    self.finished += 1
                    self._finished.notify_all()

        return recorder


@pytest.fixture
def backend() -> Backend:
    return Backend()


class Mount:
    """The served app, one test's backend at a time: one uvicorn serves a whole module."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "a request arrived between tests"
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def mounted() -> Iterator[tuple[Mount, str]]:
    mount = Mount()
    with serving(mount, date_header=False, lifespan="off") as url:
        yield mount, url


@pytest.fixture
def server(backend: Backend, mounted: tuple[Mount, str]) -> Iterator[str]:
    """The backend under uvicorn; its base URL. No ``Date`` header unless a Reply sets one."""
    mount, url = mounted
    mount.app = backend.app()
    try:
        yield url
    finally:
        backend.release()  # a stalled handler must not outlive its test
        mount.app = None


class Sleeper:
    """Stands in for the transport's sleep: records each delay and moves the clock by it;
    ``then`` queues an action to run during a given sleep (in a worker thread)."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []
        self._actions: dict[int, Callable[[], None]] = {}

    def then(self, sleep_number: int, action: Callable[[], None]) -> None:
        """Run ``action`` during the ``sleep_number``-th sleep (from 1)."""
        self._actions[sleep_number] = action

    def sync(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)
        action = self._actions.pop(len(self.delays), None)
        if action is not None:
            action()

    async def __call__(self, delay: float) -> None:
        await asyncio.to_thread(self.sync, delay)


@pytest.fixture
def sleeper(clock: ManualClock) -> Sleeper:
    return Sleeper(clock)


class Caller(Protocol):
    """An httpx client (async or sync) on a retry transport, called the same way."""

    @property
    def client(self) -> Any: ...

    @property
    def transport(self) -> RetryTransport | SyncRetryTransport: ...

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...


class AsyncCaller:
    def __init__(self, client: httpx.AsyncClient, transport: RetryTransport) -> None:
        self.client = client
        self.transport = transport

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, path, **kwargs)


class SyncCaller:
    def __init__(self, client: httpx.Client, transport: SyncRetryTransport) -> None:
        self.client = client
        self.transport = transport

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await asyncio.to_thread(self.client.request, method, path, **kwargs)


MakeCaller = Callable[..., Caller]


@pytest.fixture(params=["async", "sync"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Every transport test runs against both transports."""
    param: str = request.param
    return param


@pytest.fixture
async def make_caller(
    flavour: str, server: str, clock: ManualClock, sleeper: Sleeper
) -> AsyncIterator[MakeCaller]:
    """Build a caller of ``server``; transport options are keywords, client options go in
    ``client={...}``. The clock, the sleep and a fixed random draw (0.5) are injected."""
    closers: list[Callable[[], Any]] = []

    def factory(*, client: dict[str, Any] | None = None, **options: Any) -> Caller:
        options = {"clock": clock, "wall_clock": lambda: 0.0, "random": lambda: 0.5, **options}
        client_options = {"base_url": server, **(client or {})}
        if flavour == "async":
            transport = RetryTransport(sleep=sleeper, **options)
            async_client = httpx.AsyncClient(transport=transport, **client_options)
            closers.append(async_client.aclose)
            return AsyncCaller(async_client, transport)
        sync_transport = SyncRetryTransport(sleep=sleeper.sync, **options)
        sync_client = httpx.Client(transport=sync_transport, **client_options)
        closers.append(sync_client.close)
        return SyncCaller(sync_client, sync_transport)

    yield factory
    for close in closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result
