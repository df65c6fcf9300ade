"""Step 2 of the request path: the idempotency gate.

:meth:`IdempotencyGate.begin` looks a keyed request up in the store and answers
one of two ways:

- a :class:`~sloguard.http.Reply` to send instead of running the app: the stored
  response (a replay), or a problem (400 malformed or missing key, 409 in
  flight, 422 reused for another request, 503 store unavailable);
- a :class:`Lease`: the request holds the key and runs. The app's response
  passes through an :class:`~sloguard.http.Exchange` that keeps a copy, and
  :meth:`Lease.finish` stores it, or releases the key when there is nothing to
  replay (a server error, an app that raised, a response too large to keep).

SLOGuard and :class:`~sloguard.idempotency.middleware.IdempotencyMiddleware`
both drive it; it never calls back into them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import TypedDict

from starlette.types import Message, Scope, Send

from sloguard.exceptions import ConfigurationError, InvalidIdempotencyKey, StoreUnavailable
from sloguard.http import (
    HOP_BY_HOP,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_STORED,
    REPLAY_HEADERS,
    BufferedReceive,
    Exchange,
    Reply,
)
from sloguard.idempotency.keys import BARE_KEY, Fingerprinter, parse_idempotency_key, store_key
from sloguard.idempotency.memory import MemoryStore
from sloguard.idempotency.store import (
    COMPLETED,
    IN_FLIGHT,
    Claim,
    Store,
    StoredResponse,
    SyncStore,
    stored_nbytes,
    sync_path,
)
from sloguard.problems import problem_reply
from sloguard.request import GuardedRequest

logger = logging.getLogger("sloguard.idempotency")

Principal = Callable[[Scope], str]
"""Maps a request to the identity its keys are scoped to."""

EventHook = Callable[[str], None]
"""Told each keyed request's outcomes: ``hit``, ``miss``, ``conflict``, ``mismatch``,
``released``, ``stored``, ``too_large`` (metrics use it; it must not raise)."""
DecisionHook = Callable[[str | None, str], None]
"""Told the request's capability and each decision :meth:`IdempotencyGate.begin`
makes (``hit``, ``miss``, ``conflict``, ``mismatch``); the /slo API counts them."""

DEFAULT_METHODS = frozenset({"POST", "PATCH"})
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
DEFAULT_RELEASED_STATUSES = frozenset({429})
"""Responses that say "not done, try later": not results, so the key is released
(besides every 5xx, with ``release_on_server_error``)."""
SCOPE_KEY = "sloguard.idempotency"
"""Where a leased request's scope carries ``{"key", "token", "principal"}``: the fencing
token lets a handler fence its own writes (a write with an older token than the last seen
is stale); the principal's digest lets a proxy scope the key it forwards."""

UNSTORED_HEADERS = HOP_BY_HOP | {b"set-cookie"}
"""Never stored: hop-by-hop headers describe one connection, and a replayed
Set-Cookie would hand one session's cookie to a retry."""
_SERVER_ERRORS = frozenset(range(500, 1000))
_RETRY_AFTER_1 = ((b"retry-after", b"1"),)
_NOT_STORED = ((IDEMPOTENCY_STORED.lower().encode(), b"false"),)
_NOTHING = Reply(0, [], b"")  # the client left before its request was complete


def _no_principal() -> Reply:
    # Not a 500: nothing ran, and running the request under no identity (or another's) would
    # break "at most once per principal and key". A 503 says: not processed, retry is safe.
    return problem_reply(
        503,
        "idempotency_principal_unavailable",
        "Idempotency principal unavailable",
        "The identity this idempotency key belongs to could not be determined (the server's "
        "principal function failed), so the request was not processed; retrying it with the "
        "same key is safe.",
    )


class GateOptions(TypedDict, total=False):
    """:class:`IdempotencyGate`'s options, as the middlewares built on it take them
    (``IdempotencyMiddleware(app, **options)``, ``SLOGuard(idempotency=options)``)."""

    store: Store | None
    methods: Collection[str]
    paths: Collection[str] | None
    require_key: bool
    key_header: str
    replay_headers: Iterable[str]
    principal: Principal | None
    lease_seconds: float
    wait_seconds: float
    max_body_bytes: int
    max_request_bytes: int
    release_on_server_error: bool
    released_statuses: Collection[int]
    on_event: EventHook | None
    on_decision: DecisionHook | None
    fingerprint_secret: bytes | str | None


class IdempotencyGate:
    """Executes each keyed request at most once and replays its response.

    See docs for what a client sees. Every option has a default;
    ``IdempotencyGate()`` keeps responses in a ``MemoryStore``.
    """

    def __init__(
        self,
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
        on_decision: DecisionHook | None = None,
        fingerprint_secret: bytes | str | None = None,
    ) -> None:
        if isinstance(methods, str):
            raise ConfigurationError(
                f"methods must be a collection of method names, not the string {methods!r} "
                f"(write methods=[{methods!r}])"
            )
        if not key_header.strip():
            raise ConfigurationError("key_header must name a header, got an empty name")
        if lease_seconds <= 0:
            raise ConfigurationError(f"lease_seconds must be positive, got {lease_seconds!r}")
        if wait_seconds < 0:
            raise ConfigurationError(f"wait_seconds must not be negative, got {wait_seconds!r}")
        if max_body_bytes < 0:
            raise ConfigurationError(f"max_body_bytes must not be negative, got {max_body_bytes!r}")
        if max_request_bytes < 0:
            raise ConfigurationError(
                f"max_request_bytes must not be negative, got {max_request_bytes!r}"
            )
        self.store: Store = store if store is not None else MemoryStore()
        self._sync: SyncStore | None = sync_path(self.store)
        self.methods = frozenset(method.upper() for method in methods)
        self.paths = tuple(paths) if paths is not None else None
        self.require_key = require_key
        self.key_header = key_header
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.max_body_bytes = max_body_bytes
        self.max_request_bytes = max_request_bytes
        self.release_on_server_error = release_on_server_error
        self.released_statuses = frozenset(released_statuses)
        unkept_errors = _SERVER_ERRORS if release_on_server_error else frozenset()
        self._unkept = self.released_statuses | unkept_errors
        self._cookie_warned = principal is not None
        self.fingerprints = Fingerprinter(fingerprint_secret)
        """The digests of principals and requests (keyed with ``fingerprint_secret``)."""
        self._renewals = _Renewals(self)
        self.on_event = on_event
        self.on_decision = on_decision
        self._principal = principal
        self._principal_failed = False
        self._replay_headers = tuple((h.lower().encode("latin-1"), b"true") for h in replay_headers)
        # An app's own replay header is not stored: a replay says "true" once, in ours.
        self._unstored = UNSTORED_HEADERS | {name for name, _ in self._replay_headers}

    def applies(self, scope: Scope) -> bool:
        """Whether an HTTP request's method and path are ones keys are honoured on."""
        return scope["method"] in self.methods and (
            self.paths is None or scope["path"].startswith(self.paths)
        )

    def wants(self, request: GuardedRequest) -> bool:
        """Whether :meth:`begin` has anything to do for ``request``."""
        return (request.key is not None or self.require_key) and self.applies(request.scope)

    def _event(self, event: str) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _decide(self, event: str, request: GuardedRequest) -> None:
        if self.on_event is not None:
            self.on_event(event)
        if self.on_decision is not None:
            self.on_decision(request.capability, event)

    async def begin(self, request: GuardedRequest) -> Reply | Lease:
        """Replay, refuse, or lease the key of a request the gate :meth:`wants`.

        A lease's request body has been read (for its fingerprint): the app reads
        it from ``request.receive``, which this replaces.
        """
        scope = request.scope
        if request.key is None:
            return problem_reply(
                400,
                "idempotency_key_missing",
                "Idempotency key required",
                f"{scope['method']} {scope['path']} requires an {self.key_header} header.",
            )
        if request.key_repeated:
            return self._bad_key("the header must be sent once")
        raw_key = request.key
        if BARE_KEY.fullmatch(raw_key):  # the common case, without a call
            key = raw_key.decode("ascii")
        else:
            try:
                key = parse_idempotency_key(raw_key)
            except InvalidIdempotencyKey as exc:
                return self._bad_key(str(exc))

        if not self._cookie_warned and not request.authorization:
            self._warn_if_cookie(scope)
        credential = request.authorization if self._principal is None else self._principal_of(scope)
        if credential is None:
            return _no_principal()
        # One key, one operation: method and path are in the fingerprint, not the key,
        # so another operation under the same key is a 422, not a second execution.
        principal = self.fingerprints.principal(credential)
        leased_key = store_key(principal, key)
        # The body, read ahead of the app for its fingerprint (the app reads it again
        # from the lease's receive).
        receive = request.receive
        message = await receive()
        messages = [message]
        size = len(message.get("body", b""))
        while message["type"] == "http.request" and message.get("more_body", False):
            if size > self.max_request_bytes:
                break
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
        if size > self.max_request_bytes:
            return problem_reply(
                413,
                "idempotency_request_too_large",
                "Request too large",
                f"A request with an {self.key_header} may have a body of at most "
                f"{self.max_request_bytes} bytes (its body is kept until the response is "
                "stored).",
            )
        if message["type"] != "http.request":
            return _NOTHING  # the client left before its request was complete
        if len(messages) == 1:
            body: tuple[bytes, ...] = (message.get("body", b""),)
        else:
            body = tuple(m.get("body", b"") for m in messages)
        fingerprint = self.fingerprints.request(
            scope["method"], scope["path"], scope["query_string"], body
        )

        try:
            sync = self._sync
            if sync is not None:
                claim = sync.claim_nowait(leased_key, fingerprint, self.lease_seconds)
            else:
                claim = await self.store.claim(leased_key, fingerprint, self.lease_seconds)
            if claim.status is IN_FLIGHT and self.wait_seconds > 0:
                claim = await self._wait_for_lease(leased_key, fingerprint, claim)
        except StoreUnavailable as exc:
            if not exc.fail_open:
                return problem_reply(
                    503,
                    "idempotency_store_unavailable",
                    "Idempotency store unavailable",
                    f"This {self.key_header} cannot be checked right now, so the request was "
                    "not processed; retry later with the same key.",
                    headers=_RETRY_AFTER_1,
                )
            request.receive = BufferedReceive(messages, receive)
            return Lease(self, key, None, 0, fingerprint)  # fail open: run, store nothing

        if claim.fingerprint != fingerprint:
            self._decide("mismatch", request)
            return problem_reply(
                422,
                "idempotency_key_reused",
                "Idempotency key reused",
                f"This {self.key_header} was already used for a different request "
                "(other method, path, query or body).",
            )
        if claim.status is COMPLETED:
            assert claim.response is not None
            self._decide("hit", request)
            response = claim.response
            return Reply(response.status, [*response.headers, *self._replay_headers], response.body)
        if claim.status is IN_FLIGHT:
            self._decide("conflict", request)
            return problem_reply(
                409,
                "idempotency_request_in_flight",
                "Request in progress",
                f"A request with this {self.key_header} is still being processed; "
                "retry later to receive its response.",
                headers=_RETRY_AFTER_1,
            )
        self._decide("miss", request)
        request.receive = BufferedReceive(messages, receive)
        scope[SCOPE_KEY] = {"key": key, "token": claim.token, "principal": principal}
        lease = Lease(self, key, leased_key, claim.token, fingerprint)
        self._renewals.hold(lease)
        return lease

    def keeps(self, status: int) -> bool:
        """Whether a response with ``status`` is a result, stored to replay."""
        return status not in self._unkept

    def _principal_of(self, scope: Scope) -> str | None:
        """The app's ``principal(scope)``; None when it raises or gives no string (logged
        with its traceback the first time, then at debug level)."""
        assert self._principal is not None
        try:
            principal = self._principal(scope)
            if isinstance(principal, str):
                return principal
            raise TypeError(f"principal() returned {type(principal).__name__}, not str")
        except Exception:
            level = logging.DEBUG if self._principal_failed else logging.ERROR
            self._principal_failed = True
            logger.log(level, "principal= failed: keyed requests are answered 503", exc_info=True)
            return None

    def _warn_if_cookie(self, scope: Scope) -> None:
        if any(name == b"cookie" for name, _ in scope["headers"]):
            self._cookie_warned = True
            logger.warning(
                "a keyed request carries a Cookie and no Authorization: keys are scoped to "
                "the Authorization header by default, so cookie-authenticated users share "
                "them. Pass principal= (a function of the scope naming the user)."
            )

    def _bad_key(self, reason: str) -> Reply:
        return problem_reply(
            400,
            "idempotency_key_invalid",
            "Invalid idempotency key",
            f"{self.key_header}: {reason}. Send 1 to 255 printable ASCII characters, "
            'as a bare value (abc) or a quoted string ("abc").',
        )

    async def _wait_for_lease(self, leased_key: str, fingerprint: bytes, claim: Claim) -> Claim:
        """Wait (up to ``wait_seconds``) for an in-flight duplicate to finish, then claim again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while claim.status is IN_FLIGHT and claim.fingerprint == fingerprint:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.store.wait(leased_key)
            claim = await self.store.claim(leased_key, fingerprint, self.lease_seconds)
        return claim


class Lease:
    """A key claimed for one request: stores its response once complete, or releases
    the key so that a retry runs. ``store_key`` None: the store was unavailable and
    the gate fails open (the request runs, nothing is stored, the response says so)."""

    __slots__ = (
        "_fingerprint",
        "_gate",
        "_key",
        "_store_key",
        "_token",
        "max_body_bytes",
        "response_headers",
        "settled",
    )

    def __init__(
        self,
        gate: IdempotencyGate,
        key: str,
        store_key: str | None,
        token: int,
        fingerprint: bytes,
    ) -> None:
        self._gate = gate
        self._key = key
        self._store_key = store_key
        self._token = token
        self._fingerprint = fingerprint
        self.settled = store_key is None
        """Whether the response was stored or the key released (nothing left to do)."""
        self.max_body_bytes = -1 if store_key is None else gate.max_body_bytes
        """The largest response body kept to store (-1: none is, the lease stores nothing)."""
        self.response_headers = _NOT_STORED if store_key is None else ()
        """Headers added to the response the app sends under this lease."""

    @property
    def log_id(self) -> str:
        """The key as log lines name it: a digest, never the key (made only when logged)."""
        return self._gate.fingerprints.log_id(self._key)

    def finish_then(self, exchange: Exchange, send: Send, last: Message) -> Awaitable[None]:
        """Settle the lease on the response ``exchange`` has seen, then send its last message.

        A store that needs no waiting is called directly: no coroutine of its own.
        """
        gate = self._gate
        sync = gate._sync
        if self.settled or sync is None or not self._storable(exchange):
            return self._settle_then(exchange, send, last)
        self.settled = True
        gate._renewals.drop(self)
        chunks, key = exchange.chunks, self._store_key
        assert chunks is not None
        assert key is not None
        response, nbytes = self._response(exchange, chunks)
        try:
            stored = sync.complete_nowait(key, self._token, response, nbytes)
        except Exception:
            self._log_store_failure()
            return self._release_then(send, last)
        else:
            if stored:
                self._gate._event("stored")
        return send(last)

    async def _settle_then(self, exchange: Exchange, send: Send, last: Message) -> None:
        await self.finish(exchange)
        await send(last)

    async def _release_then(self, send: Send, last: Message) -> None:
        await self._release()
        await send(last)

    async def finish(self, exchange: Exchange) -> None:
        """Store the response ``exchange`` passed, or give the key up when there is
        nothing to replay: the app did not complete a response, a server error, a
        response too large to keep. Does nothing the second time."""
        if self.settled:
            return
        self.settled = True
        gate = self._gate
        gate._renewals.drop(self)
        assert self._store_key is not None
        if exchange.finished and exchange.chunks is None:
            gate._event("too_large")
            logger.info(
                "response to idempotency key %s not stored: over %d bytes",
                self.log_id,
                gate.max_body_bytes,
            )
        elif exchange.finished and self._storable(exchange):
            assert exchange.chunks is not None
            response, _ = self._response(exchange, exchange.chunks)
            try:
                stored = await gate.store.complete(self._store_key, self._token, response)
            except Exception:
                self._log_store_failure()
                await self._release()
                return
            if stored:
                gate._event("stored")
            return
        await self._release()

    async def release(self) -> None:
        """Give the key up unused (the request was refused), so that a retry runs."""
        if not self.settled:
            self.settled = True
            self._gate._renewals.drop(self)
            await self._release()

    async def _release(self) -> None:
        gate = self._gate
        assert self._store_key is not None
        gate._event("released")
        try:
            await gate.store.release(self._store_key, self._token)
        except Exception:
            # The lease expires on its own; a failed release must not mask the app's outcome.
            logger.warning("could not release idempotency key %s", self.log_id, exc_info=True)

    def _storable(self, exchange: Exchange) -> bool:
        """Whether ``exchange`` kept the whole response and it is a result (``keeps``)."""
        return exchange.chunks is not None and exchange.status not in self._gate._unkept

    def _response(self, exchange: Exchange, chunks: list[bytes]) -> tuple[StoredResponse, int]:
        kept = []
        header_bytes = 0
        unstored = self._gate._unstored
        for name, value in exchange.headers:
            if name.lower() not in unstored:
                kept.append((name, value))
                header_bytes += len(name) + len(value)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        nbytes = stored_nbytes(self._fingerprint, len(kept), header_bytes, body)
        response = StoredResponse(self._fingerprint, exchange.status, tuple(kept), body)
        return response, nbytes

    def _log_store_failure(self) -> None:
        # The client has its response; the key is released so that a retry runs again
        # (rather than getting 409s until the lease expires).
        logger.warning(
            "could not store the response to idempotency key %s; releasing it",
            self.log_id,
            exc_info=True,
        )


class _Renewals:
    """Renews the leases of requests still running, every third of ``lease_seconds``, so
    that a handler slower than its lease does not run twice at once. One task per gate
    while any lease is held (none per request); a dead process's leases still expire."""

    def __init__(self, gate: IdempotencyGate) -> None:
        self._gate = gate
        self._held: dict[Lease, None] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, lease: Lease) -> None:
        self._held[lease] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def drop(self, lease: Lease) -> None:
        self._held.pop(lease, None)

    async def _run(self) -> None:
        gate = self._gate
        every = gate.lease_seconds / 3
        while self._held:
            await asyncio.sleep(every)
            for lease in list(self._held):
                if lease.settled or lease._store_key is None:
                    self._held.pop(lease, None)
                    continue
                try:
                    renewed = await gate.store.renew(
                        lease._store_key, lease._token, gate.lease_seconds
                    )
                except Exception:
                    logger.warning(
                        "could not renew idempotency key %s", lease.log_id, exc_info=True
                    )
                    continue
                if not renewed and self._held.pop(lease, None) is not None:
                    logger.warning("the lease on idempotency key %s was lost", lease.log_id)
