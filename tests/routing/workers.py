"""Workers for the controller's tests: real ASGI apps, served by uvicorn on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
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


# -- a scripted worker on the test's own event loop ------------------------------------


@dataclass
class Arrival:
    """One request a :class:`ScriptedWorker` read the head of, and the act it got."""

    worker: str
    tag: str
    """The request's ``X-Fuzz-Id``: which client request it was."""
    key: str | None
    """The ``Idempotency-Key`` it carried (as the controller forwarded it)."""
    act: Any


class Peer:
    """One accepted connection of a :class:`ScriptedWorker`, as an act sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read_head(self) -> dict[str, str] | None:
        """The next request's headers (names in lower case), None at the end of the stream."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")[1:]
        return {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}

    async def read_body(self, headers: dict[str, str]) -> bytes:
        """The body the head announced: its Content-Length, or chunked."""
        if "content-length" in headers:
            return await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() != "chunked":
            return b""
        body = b""
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            body += (await self.reader.readexactly(size + 2))[:-2]
        await self.reader.readline()  # the last chunk's CRLF (no trailers)
        return body

    async def send(self, *pieces: bytes) -> None:
        """Each piece in a write of its own, drained before the next."""
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()

    async def until_closed(self) -> None:
        """Until the controller hangs up (a worker that never answers)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass

    def reset(self) -> None:
        """Close with a TCP reset (RST), not a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Act = Callable[[Peer, dict[str, str]], Awaitable[bool]]
"""What a worker does with one request whose head it read: True to keep the connection."""


async def answer_ok(peer: Peer, headers: dict[str, str]) -> bool:
    await peer.read_body(headers)
    await peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")
    return True


class ScriptedWorker:
    """An HTTP/1.1 worker on a free loopback port of the running event loop, written
    by hand so that it can misbehave: the n-th request it receives, on whichever
    connection, gets ``script[n]`` (an object with an async ``act(peer, headers)``),
    and every request after the script gets ``answer_ok``. ``arrivals`` records each
    request whose head it read; ``busy`` counts the requests it is still acting on."""

    def __init__(self, name: str, script: Iterable[Any] = ()) -> None:
        self.name = name
        self.script = list(script)
        self.arrivals: list[Arrival] = []
        self.busy = 0
        self.connections = 0
        self.open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1024 * 1024)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self.open):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open.add(writer)
        peer = Peer(reader, writer)
        try:
            while (headers := await peer.read_head()) is not None:
                act = self.script.pop(0) if self.script else None
                self.arrivals.append(
                    Arrival(
                        self.name, headers.get("x-fuzz-id", ""), headers.get("idempotency-key"), act
                    )
                )
                self.busy += 1
                try:
                    keep = await (
                        act.act(peer, headers) if act is not None else answer_ok(peer, headers)
                    )
                finally:
                    self.busy -= 1
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)
