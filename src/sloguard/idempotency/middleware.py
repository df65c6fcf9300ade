"""IdempotencyMiddleware: execute each keyed request at most once and replay its response."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Final, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sloguard.exceptions import ConfigurationError, InvalidIdempotencyKey, StoreUnavailable
from sloguard.idempotency.keys import (
    BARE_KEY,
    parse_idempotency_key,
    request_fingerprint,
    scoped_key,
)
from sloguard.idempotency.memory import MemoryStore, nowait_store
from sloguard.idempotency.store import (
    COMPLETED,
    IN_FLIGHT,
    Claim,
    Headers,
    Store,
    StoredResponse,
    stored_nbytes,
)
from sloguard.problems import send_problem

logger = logging.getLogger("sloguard.idempotency")

Principal = Callable[[Scope], str]
"""Maps a request to the identity its keys are scoped to."""

DEFAULT_METHODS = frozenset({"POST", "PATCH"})
DEFAULT_REPLAY_HEADERS = ("Idempotent-Replayed", "X-Idempotent-Replay")
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

# Never stored: hop-by-hop headers (RFC 9110 section 7.6.1) describe one
# connection, and a replayed Set-Cookie would hand one session's cookie to a retry.
UNSTORED_HEADERS = frozenset(
    {
        b"set-cookie",
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
_IN_FLIGHT_RETRY_AFTER = (b"retry-after", b"1")
_UNAVAILABLE_RETRY_AFTER = (b"retry-after", b"1")
_NOT_STORED = (b"idempotency-stored", b"false")
_new_response = tuple.__new__  # a StoredResponse without its Python-level constructor


class KeyHeader(enum.Enum):
    """What :meth:`IdempotencyMiddleware.handle` is told of the key header besides its value."""

    UNREAD = "the caller has not read the headers"
    SENT_TWICE = "the header came more than once"


# Module constants: reading an enum member off its class is a descriptor lookup.
UNREAD: Final = KeyHeader.UNREAD
SENT_TWICE: Final = KeyHeader.SENT_TWICE
RawKey = bytes | Literal[KeyHeader.SENT_TWICE] | None
"""The key header as a caller read it: its value, None when absent, SENT_TWICE when repeated."""

Admission = Callable[[], ASGIApp | None]
"""Asked before a request runs: None admits it, an ASGI app answers in its place."""
EventHook = Callable[[str], None]
"""Told each keyed request's outcomes: ``hit``, ``miss``, ``conflict``, ``mismatch``,
``released``, ``stored``, ``too_large`` (metrics use it; it must not raise)."""
Done = Callable[[int], None]
"""Told, once the app has run, the status of its response: 500 when it raised an
exception or returned without one (SLOGuard records the request with it)."""


class IdempotencyMiddleware:
    """Pure ASGI middleware honouring ``Idempotency-Key`` on unsafe requests.

    See README.md ("HTTP semantics") for what a client sees. Every option has a
    default; ``IdempotencyMiddleware(app)`` keeps responses in a ``MemoryStore``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Store | None = None,
        methods: Collection[str] = DEFAULT_METHODS,
        paths: Collection[str] | None = None,
        require_key: bool = False,
        key_header: str = "Idempotency-Key",
        replay_headers: Iterable[str] = DEFAULT_REPLAY_HEADERS,
        principal: Principal | None = None,
        lease_seconds: float = 60.0,
        wait_seconds: float = 0.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        release_on_server_error: bool = True,
        on_event: EventHook | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigurationError(f"lease_seconds must be positive, got {lease_seconds!r}")
        if wait_seconds < 0:
            raise ConfigurationError(f"wait_seconds must not be negative, got {wait_seconds!r}")
        if max_body_bytes < 0:
            raise ConfigurationError(f"max_body_bytes must not be negative, got {max_body_bytes!r}")
        self.app = app
        self.store: Store = store if store is not None else MemoryStore()
        self._nowait = nowait_store(self.store)
        self.methods = frozenset(method.upper() for method in methods)
        self.paths = tuple(paths) if paths is not None else None
        self.require_key = require_key
        self.key_header = key_header
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.max_body_bytes = max_body_bytes
        self.release_on_server_error = release_on_server_error
        self.on_event = on_event
        self._principal = principal
        self._key_header = key_header.lower().encode("latin-1")
        self._replay_headers = tuple((h.lower().encode("latin-1"), b"true") for h in replay_headers)

    def applies(self, scope: Scope) -> bool:
        """Whether an HTTP request's method and path are ones keys are honoured on."""
        return scope["method"] in self.methods and (
            self.paths is None or scope["path"].startswith(self.paths)
        )

    async def handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        app: ASGIApp | None = None,
        admission: Admission | None = None,
        done: Done | None = None,
        *,
        raw_key: RawKey | Literal[KeyHeader.UNREAD] = UNREAD,
        authorization: bytes = b"",
    ) -> None:
        """Serve one request that :meth:`applies`: replay, refuse or run ``app`` under its key.

        ``admission``, when given, is asked just before ``app`` would run (after
        any replay, so replays are served even when new work is refused). It
        returns None to admit the request, or an ASGI app that answers instead;
        a refused request gives its key up, so its retry runs.

        ``done``, when given, is called with the response's status each time
        ``app`` itself has run (not for a replay, a refusal or a problem).

        A caller that has read the request's headers already (SLOGuard) passes
        what it found: ``raw_key``, the key header's value (None when absent,
        ``SENT_TWICE`` when repeated), and ``authorization``, the Authorization
        header's value (``b""`` when absent).

        Without ``app``, this is the middleware's ASGI entry point (``__call__``):
        it serves any request, passing the ones keys do not apply to straight on.
        """
        if app is None:
            if scope["type"] != "http" or not self.applies(scope):
                await self.app(scope, receive, send)
                return
            app = self.app
        if raw_key is UNREAD:
            raw_key = None
            key_header = self._key_header
            for name, value in scope["headers"]:
                if name == key_header:
                    raw_key = value if raw_key is None else SENT_TWICE
                elif name == b"authorization":
                    authorization = value
        if raw_key is None:
            if self.require_key:
                await send_problem(
                    send,
                    400,
                    "idempotency_key_missing",
                    "Idempotency key required",
                    f"{scope['method']} {scope['path']} requires an {self.key_header} header.",
                )
                return
            await run_admitted(app, scope, receive, send, admission, done)
            return
        if not isinstance(raw_key, bytes):  # SENT_TWICE
            await _bad_key(send, self.key_header, "the header must be sent once")
            return
        if BARE_KEY.fullmatch(raw_key):  # the common case, without a call
            key = raw_key.decode("ascii")
        else:
            try:
                key = parse_idempotency_key(raw_key)
            except InvalidIdempotencyKey as exc:
                await _bad_key(send, self.key_header, str(exc))
                return

        method: str = scope["method"]
        path: str = scope["path"]
        principal = (
            authorization.decode("latin-1") if self._principal is None else self._principal(scope)
        )
        store_key = scoped_key(principal, method, path, key)

        message = await receive()
        messages: list[Message] = [message]  # the common case: the body in one message
        if message["type"] != "http.request" or message.get("more_body", False):
            complete = await _read_rest(message, receive)
            if complete is None:
                return  # the client left before its request was complete: nothing to run
            messages = complete
            fingerprint = request_fingerprint(
                scope["query_string"], [m.get("body", b"") for m in messages]
            )
        else:
            fingerprint = request_fingerprint(scope["query_string"], (message.get("body", b""),))

        nowait = self._nowait
        try:
            if nowait is not None:
                claim = nowait.claim_nowait(store_key, fingerprint, self.lease_seconds)
            else:
                claim = await self.store.claim(store_key, fingerprint, self.lease_seconds)
            if claim.status is IN_FLIGHT and self.wait_seconds > 0:
                claim = await self._wait_for_lease(store_key, fingerprint, claim)
        except StoreUnavailable as exc:
            await self._without_store(exc, scope, messages, receive, send, app, admission, done)
            return

        on_event = self.on_event
        if claim.fingerprint != fingerprint:
            if on_event is not None:
                on_event("mismatch")
            await send_problem(
                send,
                422,
                "idempotency_key_reused",
                "Idempotency key reused",
                f"This {self.key_header} was already used for a different request "
                "(other method, path, query or body).",
            )
            return
        if claim.status is COMPLETED:
            assert claim.response is not None
            if on_event is not None:
                on_event("hit")
            await self._replay(claim.response, send)
            return
        if claim.status is IN_FLIGHT:
            if on_event is not None:
                on_event("conflict")
            await send_problem(
                send,
                409,
                "idempotency_request_in_flight",
                "Request in progress",
                f"A request with this {self.key_header} is still being processed; "
                "retry later to receive its response.",
                headers=(_IN_FLIGHT_RETRY_AFTER,),
            )
            return

        if on_event is not None:
            on_event("miss")
        if admission is not None:
            refusal = admission()
            if refusal is not None:
                await self._release(store_key, claim.token, key)
                await refusal(scope, receive, send)
                return

        exchange = _Exchange(
            self, key, store_key, claim.token, fingerprint, messages, receive, send
        )
        try:
            await app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            if not exchange.finished:
                await self._release(store_key, claim.token, key)
            if done is not None and isinstance(exc, Exception):
                done(500)
            raise
        if not exchange.finished:
            # The app returned without completing a response: nothing to replay.
            await self._release(store_key, claim.token, key)
        if done is not None:
            done(exchange.status)

    # The ASGI entry point is `handle` itself, not a coroutine awaiting it: one
    # coroutine less per request.
    __call__ = handle

    async def _release(self, store_key: str, token: int, key: str) -> None:
        """Give a claimed key up so that a retry runs the handler again."""
        if self.on_event is not None:
            self.on_event("released")
        try:
            await self.store.release(store_key, token)
        except Exception:
            # The lease expires on its own; a failed release must not mask the app's outcome.
            logger.warning("could not release idempotency key %r", key, exc_info=True)

    async def _wait_for_lease(self, store_key: str, fingerprint: bytes, claim: Claim) -> Claim:
        """Wait (up to ``wait_seconds``) for an in-flight duplicate to finish, then claim again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while claim.status is IN_FLIGHT and claim.fingerprint == fingerprint:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.store.wait(store_key)
            claim = await self.store.claim(store_key, fingerprint, self.lease_seconds)
        return claim

    async def _without_store(
        self,
        exc: StoreUnavailable,
        scope: Scope,
        messages: list[Message],
        receive: Receive,
        send: Send,
        app: ASGIApp,
        admission: Admission | None,
        done: Done | None,
    ) -> None:
        """Fail closed (503, the handler does not run) or open (it runs, if admitted,
        and nothing is stored)."""
        if not exc.fail_open:
            await send_problem(
                send,
                503,
                "idempotency_store_unavailable",
                "Idempotency store unavailable",
                f"This {self.key_header} cannot be checked right now, so the request was "
                "not processed; retry later with the same key.",
                headers=(_UNAVAILABLE_RETRY_AFTER,),
            )
            return

        async def replay_request() -> Message:
            return messages.pop(0) if messages else await receive()

        async def mark_unstored(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _NOT_STORED]}
            await send(message)

        await run_admitted(app, scope, replay_request, mark_unstored, admission, done)

    async def _replay(self, response: StoredResponse, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [*response.headers, *self._replay_headers],
            }
        )
        await send({"type": "http.response.body", "body": response.body})


class _Exchange:
    """One claimed request: hands the buffered request to the app, passes its
    response through and keeps a copy to store."""

    __slots__ = (
        "_chunks",
        "_fingerprint",
        "_header_bytes",
        "_headers",
        "_key",
        "_middleware",
        "_pending",
        "_receive",
        "_send",
        "_size",
        "_store_key",
        "_token",
        "finished",
        "status",
    )

    def __init__(
        self,
        middleware: IdempotencyMiddleware,
        key: str,
        store_key: str,
        token: int,
        fingerprint: bytes,
        request_messages: list[Message],
        receive: Receive,
        send: Send,
    ) -> None:
        self._middleware = middleware
        self._key = key  # the client's key, for logs (the store key holds credentials)
        self._store_key = store_key
        self._token = token
        self._fingerprint = fingerprint
        self._pending = request_messages
        self._receive = receive
        self._send = send
        self.status = 500  # until the app starts a response
        self._headers: Headers = ()
        self._header_bytes = 0
        self._chunks: list[bytes] | None = []
        self._size = 0
        self.finished = False

    async def receive(self) -> Message:
        if self._pending:
            return self._pending.pop(0)
        return await self._receive()

    def send(self, message: Message) -> Awaitable[None]:
        # A plain function returning what to await (the client's `send`, mostly): no
        # coroutine of its own per message.
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = tuple(message.get("headers", ()))
            # Counted here, as the headers pass: cheaper than StoredResponse.nbytes.
            header_bytes = 0
            for name, value in headers:
                if name.lower() in UNSTORED_HEADERS:  # rare: keep the others
                    headers = tuple(h for h in headers if h[0].lower() not in UNSTORED_HEADERS)
                    header_bytes = sum(len(name) + len(value) for name, value in headers)
                    break
                header_bytes += len(name) + len(value)
            self._headers = headers
            self._header_bytes = header_bytes
        elif message["type"] == "http.response.body":
            chunks = self._chunks
            if chunks is not None:
                body: bytes = message.get("body", b"")
                self._size += len(body)
                if self._size > self._middleware.max_body_bytes:
                    self._chunks = None  # too large to keep; the client still gets it all
                elif body:
                    chunks.append(body)
            if not message.get("more_body", False):
                self.finished = True
                # Store before the last chunk leaves, so that a client that has the
                # response and retries at once gets the replay rather than a 409.
                middleware = self._middleware
                if (
                    middleware._nowait is None
                    or self._chunks is None
                    or (self.status >= 500 and middleware.release_on_server_error)
                ):
                    return self._finish_then_send(message)
                self._complete_nowait(middleware._nowait)
        return self._send(message)

    async def _finish_then_send(self, message: Message) -> None:
        await self._finish()
        await self._send(message)

    def _complete_nowait(self, store: MemoryStore) -> None:
        """Store the response in a store that needs no waiting (the common case)."""
        chunks = self._chunks
        assert chunks is not None
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        fingerprint, headers = self._fingerprint, self._headers
        response = _new_response(StoredResponse, (fingerprint, self.status, headers, body))
        nbytes = stored_nbytes(fingerprint, len(headers), self._header_bytes, body)
        try:
            stored = store.complete_nowait(self._store_key, self._token, response, nbytes)
        except Exception:
            self._log_store_failure()
            return
        on_event = self._middleware.on_event
        if stored and on_event is not None:
            on_event("stored")

    async def _finish(self) -> None:
        """Store the response, or give the key up: too large to keep, or a server error."""
        middleware = self._middleware
        chunks = self._chunks
        if chunks is None:
            if middleware.on_event is not None:
                middleware.on_event("too_large")
            logger.info(
                "response to idempotency key %r not stored: over %d bytes",
                self._key,
                middleware.max_body_bytes,
            )
        elif self.status < 500 or not middleware.release_on_server_error:
            body = b"".join(chunks)
            response = StoredResponse(self._fingerprint, self.status, self._headers, body)
            try:
                stored = await middleware.store.complete(self._store_key, self._token, response)
            except Exception:
                self._log_store_failure()
                return
            if stored and middleware.on_event is not None:
                middleware.on_event("stored")
            return
        await middleware._release(self._store_key, self._token, self._key)

    def _log_store_failure(self) -> None:
        logger.warning("could not store the response to key %r", self._key, exc_info=True)


def run_admitted(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    admission: Admission | None,
    done: Done | None,
) -> Awaitable[None]:
    """Run ``app`` unless ``admission`` refuses it (its refusal answers instead); tell
    ``done``, when given, the status of the app's response.

    A plain function returning what to await: no coroutine of its own.
    """
    refusal = None if admission is None else admission()
    if refusal is not None:
        return refusal(scope, receive, send)
    if done is None:
        return app(scope, receive, send)
    return _observed(app, scope, receive, send, done)


async def _observed(app: ASGIApp, scope: Scope, receive: Receive, send: Send, done: Done) -> None:
    """Run ``app``, then tell ``done`` the status of its response (500 when the app
    raised an exception or returned without starting a response)."""
    status = 500

    async def observed_send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, observed_send)
    except Exception:
        done(500)
        raise
    done(status)


async def _read_rest(first: Message, receive: Receive) -> list[Message] | None:
    """Buffer the rest of a request body that did not come in one message, keeping the
    messages as received to hand on unchanged; ``None`` when the client disconnected."""
    messages: list[Message] = []
    message = first
    while True:
        if message["type"] != "http.request":
            return None
        messages.append(message)
        if not message.get("more_body", False):
            return messages
        message = await receive()


async def _bad_key(send: Send, key_header: str, reason: str) -> None:
    await send_problem(
        send,
        400,
        "idempotency_key_invalid",
        "Invalid idempotency key",
        f"{key_header}: {reason}. Send 1 to 255 printable ASCII characters, "
        'as a bare value (abc) or a quoted string ("abc").',
    )
