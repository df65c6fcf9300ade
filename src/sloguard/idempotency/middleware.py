"""IdempotencyMiddleware: execute each keyed request at most once and replay its response.

A short shell over :class:`~sloguard.idempotency.gate.IdempotencyGate`, for apps
that want idempotency alone; SLOGuard drives the same gate between its other steps.
"""

from __future__ import annotations

from typing import Unpack

from starlette.types import ASGIApp, Receive, Scope, Send

from sloguard._clock import monotonic
from sloguard.http import REPLAY_HEADERS, Exchange, Reply
from sloguard.idempotency.gate import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_METHODS,
    UNSTORED_HEADERS,
    EventHook,
    GateOptions,
    IdempotencyGate,
    Principal,
)
from sloguard.request import Classifier

DEFAULT_REPLAY_HEADERS = REPLAY_HEADERS

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_METHODS",
    "DEFAULT_REPLAY_HEADERS",
    "UNSTORED_HEADERS",
    "EventHook",
    "GateOptions",
    "IdempotencyMiddleware",
    "Principal",
]


class IdempotencyMiddleware:
    """Pure ASGI middleware honouring ``Idempotency-Key`` on unsafe requests.

    Takes :class:`~sloguard.idempotency.gate.IdempotencyGate`'s options
    (:class:`~sloguard.idempotency.gate.GateOptions`); see the
    docs ("HTTP semantics") for what a client sees. ``IdempotencyMiddleware(app)``
    keeps responses in a ``MemoryStore``.
    """

    def __init__(self, app: ASGIApp, **options: Unpack[GateOptions]) -> None:
        self.app = app
        self.gate = IdempotencyGate(**options)
        self.store = self.gate.store
        self.key_header = self.gate.key_header
        self._classifier = Classifier(
            clock=monotonic, key_header=self.key_header, capabilities=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self.gate
        if scope["type"] != "http" or not gate.applies(scope):
            await self.app(scope, receive, send)
            return
        request = self._classifier.classify_keyed(scope, receive, required=gate.require_key)
        if request is None:
            await self.app(scope, receive, send)
            return
        begun = await gate.begin(request)
        if isinstance(begun, Reply):
            await begun.send(send)
            return
        exchange = Exchange(send, begun)
        try:
            await self.app(request.scope, request.receive, exchange.send)
        finally:
            if not begun.settled:  # mostly stored as the response left
                await begun.finish(exchange)
