"""Workers for the controller's tests: real ASGI apps, served by uvicorn on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
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


class RawWorker:
    """A TCP server that is not a well-behaved HTTP worker: ``behaviour`` gets each
    accepted connection (a blocking socket) and does what the test needs with it.

    ``connections`` counts the connections it accepted.
    """

    def __init__(self, behaviour: Callable[[socket.socket], None]) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def __enter__(self) -> RawWorker:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                self.behaviour(conn)
            # Hold the connection until the test ends (a worker that never answers).
            self._stop.wait(30)


def read_request(conn: socket.socket) -> bytes:
    """Read one request's head and a body of its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset (RST), not a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
