"""IdempotencyMiddleware: execute each keyed request at most once and replay its response.

A short shell over :class:`~sloguard.idempotency.gate.IdempotencyGate`, for apps
that want idempotency alone; SLOGuard drives the same gate between its other steps.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from sloguard._clock import monotonic
from sloguard.http import IDEMPOTENCY_KEY, REPLAY_HEADERS, Exchange, Reply
from sloguard.idempotency.gate import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_METHODS,
    DEFAULT_RELEASED_STATUSES,
    UNSTORED_HEADERS,
    EventHook,
    IdempotencyGate,
    Principal,
)
from sloguard.idempotency.store import Store
from sloguard.request import Classifier

DEFAULT_REPLAY_HEADERS = REPLAY_HEADERS

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_METHODS",
    "DEFAULT_REPLAY_HEADERS",
    "UNSTORED_HEADERS",
    "EventHook",
    "IdempotencyMiddleware",
    "Principal",
]


class IdempotencyMiddleware:
    """Pure ASGI middleware honouring ``Idempotency-Key`` on unsafe requests.

    Takes :class:`~sloguard.idempotency.gate.IdempotencyGate`'s options; see the
    docs ("HTTP semantics") for what a client sees. ``IdempotencyMiddleware(app)``
    keeps responses in a ``MemoryStore``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Store | None = None,
        methods: Collection[str] = DEFAULT_METHODS,
        paths: Collection[str] | None = None,
        require_key: bool = False,
        key_header: str = IDEMPOTENCY_KEY,
        replay_headers: Iterable[str] = REPLAY_HEADERS,
        principal: Principal | None = None,
        lease_seconds: float = 60.0,
        wait_seconds: float = 0.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        release_on_server_error: bool = True,
        released_statuses: Collection[int] = DEFAULT_RELEASED_STATUSES,
        on_event: EventHook | None = None,
        fingerprint_secret: bytes | str | None = None,
    ) -> None:
        self.app = app
        self.gate = IdempotencyGate(
            store=store,
            methods=methods,
            paths=paths,
            require_key=require_key,
            key_header=key_header,
            replay_headers=replay_headers,
            principal=principal,
            lease_seconds=lease_seconds,
            wait_seconds=wait_seconds,
            max_body_bytes=max_body_bytes,
            max_request_bytes=max_request_bytes,
            release_on_server_error=release_on_server_error,
            released_statuses=released_statuses,
            on_event=on_event,
            fingerprint_secret=fingerprint_secret,
        )
        self.store = self.gate.store
        self.key_header = key_header
        self._classifier = Classifier(clock=monotonic, key_header=key_header, capabilities=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self.gate
        if scope["type"] != "http" or not gate.applies(scope):
            await self.app(scope, receive, send)
            return
        request = self._classifier.classify(scope, receive)
        if request.key is None and not gate.require_key:
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
            await begun.finish(exchange)
