"""Aids for testing code that uses sloguard, as httpx ships ``MockTransport``.

- :class:`ManualClock`: a clock that moves only when told to; pass it as
  ``SLOGuard(..., clock=clock)`` and ``SLOManager(..., clock=clock)`` and move
  time instead of sleeping.
- :func:`drive`: one request through an ASGI app in-process, returning the exact
  response (status, headers, body) without a server or a client library.
- :class:`RecordingStore`: a ``MemoryStore`` that records every operation the
  idempotency gate performs on it, to assert what ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message

from sloguard._clock import ManualClock
from sloguard.idempotency.memory import MemoryStore
from sloguard.idempotency.store import Claim, StoredResponse

__all__ = ["DrivenResponse", "ManualClock", "RecordingStore", "drive"]


@dataclass(frozen=True)
class DrivenResponse:
    """What an app sent back for one request."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    messages: list[Message] = field(repr=False)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower().encode("latin-1")
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == wanted), None)


async def drive(
    app: ASGIApp,
    method: str = "GET",
    path: str = "/",
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes | Iterable[bytes] = b"",
    query_string: bytes = b"",
) -> DrivenResponse:
    """Send one HTTP request to ``app`` in-process and collect its response.

    ``body`` given as several chunks arrives as several ``http.request``
    messages; once they are read, ``receive`` reports a disconnect.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    chunks = [body] if isinstance(body, bytes) else list(body) or [b""]
    incoming: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string,
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    if start is None:
        raise AssertionError(f"{method} {path}: the app sent no response")
    return DrivenResponse(
        status=start["status"],
        headers=list(start.get("headers", [])),
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        messages=sent,
    )


class RecordingStore(MemoryStore):
    """A ``MemoryStore`` that records the operations made on it, in order, as
    ``(operation, key)`` pairs in :attr:`operations` (``claim``, ``complete``,
    ``release``, ``wait``)."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.operations: list[tuple[str, str]] = []

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        self.operations.append(("claim", key))
        return await super().claim(key, fingerprint, lease_seconds)

    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        self.operations.append(("complete", key))
        return await super().complete(key, token, response)

    async def release(self, key: str, token: int) -> None:
        self.operations.append(("release", key))
        await super().release(key, token)

    async def wait(self, key: str) -> None:
        self.operations.append(("wait", key))
        await super().wait(key)

    def count(self, operation: str) -> int:
        """How many times ``operation`` was performed."""
        return sum(1 for done, _ in self.operations if done == operation)
