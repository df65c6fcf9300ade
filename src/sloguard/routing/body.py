"""The client's request body on its way to a worker: streamed, and kept for a retry up to a bound.

A body that arrives in one ASGI message (any small one) is sent as bytes. A
longer one streams to the worker as it arrives; the chunks read so far are
kept, up to ``keep_bytes``, so that a forward that fails may be sent again to
another worker. Once more than ``keep_bytes`` have gone out, the body cannot
be sent again and the forward is not retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Receive

DEFAULT_KEEP_BYTES = 1024 * 1024
"""How much of a streamed request body is kept for a retry on another worker (1 MiB)."""


class BodyTooLarge(Exception):
    """The body grew past the controller's limit while it streamed."""


class ClientGone(Exception):
    """The client disconnected before its body was complete."""


class RequestBody:
    """Read :meth:`start` first; then each forward attempt sends :meth:`payload`."""

    def __init__(self, receive: Receive, *, max_bytes: int | None, keep_bytes: int) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.keep_bytes = keep_bytes
        self._kept: list[bytes] | None = []
        self.size = 0
        self.complete = False
        self.error: BodyTooLarge | ClientGone | None = None
        """Why the stream stopped, when it did not end: checked after a failed forward."""

    @classmethod
    def whole(cls, data: bytes) -> RequestBody:
        """A body already read (the seed form's payload)."""

        async def nothing() -> dict[str, Any]:
            raise RuntimeError("the body was read already")

        body = cls(nothing, max_bytes=None, keep_bytes=0)
        body._kept, body.size, body.complete = [data], len(data), True
        return body

    async def start(self) -> None:
        """Read the first message (the whole body, for most requests)."""
        await self._read()

    async def read_all(self) -> bytes:
        """The whole body, buffered (the seed form, which is JSON to parse)."""
        chunks = [await self._read()]
        while not self.complete:
            chunks.append(await self._read())
        return b"".join(chunks)

    @property
    def retryable(self) -> bool:
        """Whether all of the body read so far is kept, so it can be sent again."""
        return self._kept is not None

    def payload(self) -> bytes | AsyncIterator[bytes]:
        """What one forward attempt sends: bytes when the body is in, else a stream."""
        if self.complete and self._kept is not None:
            kept = self._kept
            return kept[0] if len(kept) == 1 else b"".join(kept)
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        if self._kept is None:
            raise RuntimeError("the body was sent once and not kept")
        for chunk in list(self._kept):  # an earlier attempt's part, sent again
            yield chunk
        while not self.complete:
            chunk = await self._read()
            if chunk:
                yield chunk

    async def _read(self) -> bytes:
        message = await self._receive()
        if message["type"] != "http.request":
            self.error = ClientGone("the client disconnected before its body was complete")
            raise self.error
        chunk: bytes = message.get("body", b"")
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            self.error = BodyTooLarge(f"the request body is over {self.max_bytes} bytes")
            raise self.error
        self.complete = not message.get("more_body", False)
        if self._kept is not None:
            if self.size <= self.keep_bytes or (self.complete and not self._kept):
                self._kept.append(chunk)
            else:
                self._kept = None
        return chunk
