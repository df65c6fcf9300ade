"""The wire: header names sloguard reads and writes, the one send wrapper, the buffered receive.

Header names live here once, for the server side (SLOGuard, the idempotency
gate, the controller) and the client side (``sloguard.client``) alike.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from starlette.types import Message, Receive, Scope, Send

IDEMPOTENCY_KEY = "Idempotency-Key"
PRIORITY = "X-Priority"
CAPABILITY = "X-Capability"
REPLAY_HEADERS = ("Idempotent-Replayed", "X-Idempotent-Replay")
"""Set to ``true`` on a replayed response (the draft's name, and the common ``X-`` one)."""
IDEMPOTENCY_STORED = "Idempotency-Stored"
"""``false`` on a response that ran but could not be stored (the store was unavailable)."""

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Headers that describe one connection, not the message (RFC 9110 section 7.6.1)."""


class BufferedReceive:
    """A ``receive`` that hands out messages read ahead of the app first, then reads on."""

    __slots__ = ("_messages", "_next", "_receive")

    def __init__(self, messages: list[Message], receive: Receive) -> None:
        self._messages = messages
        self._next = 0
        self._receive = receive

    @property
    def body(self) -> bytes:
        """The body of the messages read ahead."""
        return b"".join(m.get("body", b"") for m in self._messages if m["type"] == "http.request")

    async def __call__(self) -> Message:
        index = self._next
        if index < len(self._messages):
            self._next = index + 1
            return self._messages[index]
        return await self._receive()


class Reply:
    """A complete response, ready to send in place of the app's: a replay, a problem,
    a refusal. Status 0 sends nothing (the client has gone)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    async def send(self, send: Send) -> None:
        if not self.status:
            return
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer as an ASGI app."""
        await self.send(send)


class ResponseKeeper(Protocol):
    """What the send wrapper needs of an idempotency lease (``idempotency.gate.Lease``)."""

    @property
    def max_body_bytes(self) -> int:
        """The largest response body kept to store."""
        ...

    @property
    def response_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """Headers added to the response."""
        ...

    def finish_then(self, exchange: Exchange, send: Send, last: Message) -> Awaitable[None]:
        """Settle on the response ``exchange`` has seen, then send its last message."""
        ...


class Exchange:
    """The one send wrapper of a request: notes the response's status and, for a
    request under an idempotency lease, keeps the copy of the response the lease
    stores (before the last chunk leaves, so that a client retrying the moment it
    has the response gets the replay rather than a 409).

    ``status`` is 500 until the app starts a response: an app that raises or
    returns without one has failed.
    """

    __slots__ = (
        "_send",
        "chunks",
        "extra_headers",
        "finished",
        "headers",
        "lease",
        "size",
        "status",
    )

    def __init__(self, send: Send, lease: ResponseKeeper | None = None) -> None:
        self._send = send
        self.lease = lease
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] | None = []
        """The body so far; None once it grew past what the lease may store."""
        self.size = 0
        self.finished = False
        self.extra_headers = () if lease is None else lease.response_headers

    def send(self, message: Message) -> Awaitable[None]:
        # A plain function returning what to await: no coroutine of its own per message.
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            if self.lease is not None:
                self.headers = list(message.get("headers", ()))
            if self.extra_headers:
                message = {**message, "headers": [*message.get("headers", ()), *self.extra_headers]}
        elif kind == "http.response.body":
            lease = self.lease
            if lease is not None:
                chunks = self.chunks
                if chunks is not None:
                    body: bytes = message.get("body", b"")
                    self.size += len(body)
                    if self.size > lease.max_body_bytes:
                        self.chunks = None  # too large to keep; the client still gets it all
                    elif body:
                        chunks.append(body)
                if not message.get("more_body", False):
                    self.finished = True
                    return lease.finish_then(self, self._send, message)
            elif not message.get("more_body", False):
                self.finished = True
        return self._send(message)
