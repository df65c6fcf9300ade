"""A real HTTP receiver for alert sinks: records each request, answers as scripted."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    """The request body, parsed as JSON."""


@dataclass
class Receiver:
    """An ASGI app that records every request and answers with the next scripted status.

    ``script`` holds ``(status, headers)`` answers used in turn; once it is empty
    every request gets ``default`` (202, as PagerDuty and Alertmanager answer).
    """

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: int = 202
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with self._lock:
            self.received.append(
                Received(scope["method"], scope["path"], headers, json.loads(body or b"null"))
            )
            status, extra = self.script.pop(0) if self.script else (self.default, {})
        answer = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": b"{}"})

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.received]
