"""Workers for the controller's tests: real ASGI apps, served by uvicorn on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from tests.servers import serving


@dataclass
class Received:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingWorker:
    """A worker that records every capability request it receives.

    ``mode``: ``ok`` answers at once with ``status`` and ``content_type``; ``hold``
    answers once ``release`` is set; ``break`` starts a response and drops the
    connection (a crash mid-request). ``healthy`` is what ``GET /health`` says.
    """

    name: str
    mode: str = "ok"
    status: int = 200
    content_type: str = "application/json"
    healthy: bool = True
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    """Released once per capability request received (workers may share one)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if scope["method"] == "GET" and scope["path"] == "/health":
            await self._answer(send, 200 if self.healthy else 503, b"{}", "application/json")
            return
        self.received.append(
            Received(
                scope["path"],
                scope["query_string"].decode(),
                {k.decode(): v.decode() for k, v in scope["headers"]},
                body,
            )
        )
        self.arrived.release()
        if self.mode == "hold":
            await asyncio.to_thread(self.release.wait)
        if self.mode == "break":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"1000")],
                }
            )
            raise RuntimeError("worker crashed mid-response (on purpose)")
        answer = f'{{"worker": "{self.name}", "bytes": {len(body)}}}'.encode()
        await self._answer(send, self.status, answer, self.content_type)

    @staticmethod
    async def _answer(send: Send, status: int, body: bytes, content_type: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def running(worker: RecordingWorker, **config: Any) -> Iterator[str]:
    """Serve ``worker`` on a free port; a held request is released when the block ends."""
    with serving(worker, **config) as url:
        try:
            yield url
        finally:
            worker.release.set()
