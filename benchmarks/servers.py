"""Apps and a uvicorn runner shared by the through-a-server benchmarks.

cd benchmarks && uvicorn servers:bare       # the JSON POST handler alone
cd benchmarks && uvicorn servers:guarded    # the same under SLOGuard
cd benchmarks && uvicorn servers:peer       # the same under asgi-idempotency-header
cd benchmarks && uvicorn servers:idempotency            # under IdempotencyMiddleware alone
cd benchmarks && uvicorn servers:idempotency_forgetful  # the same, its store keeping nothing
cd benchmarks && uvicorn servers:limited    # a handler of fixed capacity (overload.py)
cd benchmarks && uvicorn servers:limited_guarded  # SLOGuard, the adaptive limit (the default)
cd benchmarks && uvicorn servers:limited_window   # SLOGuard, SLO-window shedding alone
cd benchmarks && uvicorn servers:limited_oracle   # SLOGuard, a fixed limit at the true capacity
cd benchmarks && uvicorn servers:route_worker      # the demo worker (route.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sloguard import MemoryStore, SLOGuard
from sloguard._clock import Clock, monotonic
from sloguard.idempotency import Claim, ClaimStatus, IdempotencyMiddleware, StoredResponse

ROOT = Path(__file__).resolve().parents[1]

BENCH_SLO = """\
capability: {verb: bench, name: items}
slo:
  latency: {p50_ms: 1000, p95_ms: 2000, p99_ms: 5000}
  availability: {target: 0.99}
enforcement: {reject_on_violation: true}
"""


async def create_item(request: Request) -> JSONResponse:
    data = await request.json()
    return JSONResponse({"id": 1, **data}, status_code=201)


def bare_app() -> Starlette:
    return Starlette(routes=[Route("/items", create_item, methods=["POST"])])


def slo_dir_with(text: str) -> Path:
    """A fresh temporary directory holding one SLO file with ``text``."""
    slo_dir = Path(tempfile.mkdtemp(prefix="sloguard-bench-"))
    (slo_dir / "slo.yml").write_text(text, encoding="utf-8")
    return slo_dir


def guarded_app(
    *, metrics: bool = True, tracing: bool = False, clock: Clock = monotonic
) -> SLOGuard:
    """The full stack: SLOGuard with an SLO file for the handler's capability (and, by
    default, its Prometheus metrics)."""
    slo_dir = slo_dir_with(BENCH_SLO)
    return SLOGuard(
        bare_app(),
        slo_dir=slo_dir,
        store=MemoryStore(),
        route_table={"/items": "bench:items"},
        metrics=metrics,
        tracing=tracing,
        tracer_provider=_recording_provider() if tracing else None,
        clock=clock,
    )


def peer_app() -> ASGIApp:
    """The same handler under the peer library asgi-idempotency-header (``[bench]``)."""
    from idempotency_header_middleware import IdempotencyHeaderMiddleware
    from idempotency_header_middleware.backends.memory import MemoryBackend

    app: ASGIApp = IdempotencyHeaderMiddleware(bare_app(), backend=MemoryBackend())
    return app


def idempotency_app() -> IdempotencyMiddleware:
    return IdempotencyMiddleware(bare_app(), store=MemoryStore())


class ForgetfulStore(MemoryStore):
    """Every key is free and nothing is kept: what IdempotencyMiddleware costs
    beyond its store (a floor for any store that keeps responses)."""

    def claim_nowait(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        return Claim(ClaimStatus.CLAIMED, 1, fingerprint)

    def complete_nowait(
        self, key: str, token: int, response: StoredResponse, nbytes: int | None = None
    ) -> bool:
        return True

    # Overridden beside the plain calls, so that the gate takes the plain-call path.
    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        return self.claim_nowait(key, fingerprint, lease_seconds)

    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        return True


def idempotency_forgetful_app() -> IdempotencyMiddleware:
    return IdempotencyMiddleware(bare_app(), store=ForgetfulStore())


def _recording_provider() -> object:
    """An SDK tracer provider: spans are recorded (and dropped; no exporter)."""
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider()


CAPACITY = 4
"""Requests the limited handler serves at once."""
SERVICE_S = 0.025
"""How long each takes: capacity is CAPACITY / SERVICE_S = 160 requests a second."""

LIMITED_SLO = """\
capability: {verb: bench, name: work}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 250}
  availability: {target: 0.99}
enforcement: {reject_on_violation: true}
"""


class Probe:
    """``GET /probe`` on the limited service: what the process saw since the last call.

    The overload benchmark polls it to tell the service's trouble from the machine's:
    the longest the event loop was late for a 10 ms timer (a process starved of CPU),
    and, behind SLOGuard, the concurrency limit and what it was computed from.
    """

    def __init__(self) -> None:
        self.guard: SLOGuard | None = None
        self.loop_lag_s = 0.0
        self._watch: asyncio.Task[None] | None = None

    async def endpoint(self, request: Request) -> JSONResponse:
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop())
        lag, self.loop_lag_s = self.loop_lag_s, 0.0
        body: dict[str, object] = {"loop_lag_s": lag}
        if self.guard is not None:
            state = self.guard.admission._capabilities.get("bench:work")  # a diagnostic peek
            limiter = None if state is None else state.limiter
            if limiter is not None:
                algorithm = limiter.algorithm
                body.update(
                    limit=limiter.limit,
                    inflight=limiter.inflight,
                    queued=limiter.queued,
                    latency_s=limiter.latency_s,
                    pressure=getattr(algorithm, "pressure", None),
                    median_s=getattr(algorithm, "median_s", None),
                    noload_s=getattr(algorithm, "noload_s", None),
                )
        return JSONResponse(body)

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.010)
            self.loop_lag_s = max(self.loop_lag_s, loop.time() - before - 0.010)


def limited_app(probe: Probe | None = None) -> Starlette:
    """A handler of fixed capacity: CAPACITY at once, SERVICE_S each; the rest queue."""
    slots = asyncio.Semaphore(CAPACITY)
    probe = probe or Probe()

    async def work(request: Request) -> JSONResponse:
        await request.body()
        async with slots:
            await asyncio.sleep(SERVICE_S)
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/work", work, methods=["POST"]),
            Route("/probe", probe.endpoint, methods=["GET"]),
        ]
    )


LIMITED_SHEDDING = {
    "adaptive": "",  # the concurrency limit's default when the file enforces
    "window": "shedding: {concurrency: {mode: off}}\n",
    "oracle": f"shedding: {{concurrency: {{mode: fixed, initial: {CAPACITY}}}}}\n",
}
"""The ``shedding:`` section of the limited service's SLO file, by admission under test:
the adaptive limit; the SLO-window shedding alone; a fixed limit at the true capacity."""


def limited_guarded_app(admission: str = "adaptive") -> SLOGuard:
    probe = Probe()
    slo_dir = slo_dir_with(LIMITED_SLO + LIMITED_SHEDDING[admission])
    guard = SLOGuard(limited_app(probe), slo_dir=slo_dir, route_table={"/work": "bench:work"})
    probe.guard = guard
    return guard


ROUTE_CAPABILITY = "bench:route"
ROUTE_SLO = """\
capability: {verb: bench, name: route}
slo:
  latency: {p50_ms: 1000, p95_ms: 2000, p99_ms: 5000}
  availability: {target: 0.99}
enforcement: {reject_on_violation: true}
"""


BIG_BYTES = 100 * 1024 * 1024
"""What ``POST /bench/big`` streams back, in 64 KiB chunks (route.py's memory check)."""


def route_worker_app() -> ASGIApp:
    """The demo worker serving ``bench:route`` (route.py asks it for ``?delay_ms=0``),
    and ``POST /bench/big``: a 100 MiB chunked response."""
    from sloguard.routing import demo_worker_app

    demo = demo_worker_app([ROUTE_CAPABILITY], worker_id="bench-worker")
    chunk = b"x" * 65536

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/bench/big":
            await demo(scope, receive, send)
            return
        while (await receive()).get("more_body", False):
            pass
        headers = [(b"content-type", b"application/octet-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(BIG_BYTES // len(chunk)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


_APPS: dict[str, Callable[[], object]] = {
    "bare": bare_app,
    "guarded": guarded_app,
    "peer": peer_app,
    "idempotency": idempotency_app,
    "idempotency_forgetful": idempotency_forgetful_app,
    "limited": limited_app,
    "limited_guarded": limited_guarded_app,
    "limited_window": lambda: limited_guarded_app("window"),
    "limited_oracle": lambda: limited_guarded_app("oracle"),
    "route_worker": route_worker_app,
}


def __getattr__(name: str) -> object:
    # Built on first access, so that importing this module starts nothing.
    if name in _APPS:
        return _APPS[name]()
    raise AttributeError(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def uvicorn_server(
    app: str,
    port: int | None = None,
    *,
    quiet: bool = False,
    wrapper: Sequence[str] = (),
    start_timeout_s: float = 30.0,
) -> Iterator[str]:
    """Run ``uvicorn <app>`` in a child process; yield its base URL once it answers.

    ``quiet`` drops the server's stderr (an overloaded server killed at the end
    logs a traceback for every request still queued). ``wrapper`` is a command
    the server runs under (instructions.py: valgrind).
    """
    with uvicorn_process(
        app, port, quiet=quiet, wrapper=wrapper, start_timeout_s=start_timeout_s
    ) as (url, _):
        yield url


@contextlib.contextmanager
def uvicorn_process(
    app: str,
    port: int | None = None,
    *,
    quiet: bool = False,
    wrapper: Sequence[str] = (),
    start_timeout_s: float = 30.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`uvicorn_server`, yielding the server's process too (to read its CPU time)."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            *wrapper,
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "1",
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL if quiet else None,
        env={**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")},
    )
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn {app} did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # an overloaded server may not drain its queue
            process.kill()
            process.wait()
