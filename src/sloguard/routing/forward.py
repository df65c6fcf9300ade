"""Forwarding one capability request to one worker: a streaming reverse proxy over aiohttp.

One :class:`Forwarder` per process holds one ``aiohttp.ClientSession`` whose
``TCPConnector`` keeps connections to each worker alive (``limit_per_host``
at once). :meth:`Forwarder.send` sends ``POST {worker.url}{path}`` and returns
once the worker's status line and headers are in; the caller streams the
body with :meth:`Upstream.chunks`. Failures are classified by what the worker
may have seen (:class:`Failure`), which decides whether another worker may
be tried.

Headers: hop-by-hop fields (RFC 9110 §7.6.1: ``Connection`` and the fields
it names, ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``,
``Transfer-Encoding``, ``Upgrade``) are dropped both ways; so are ``Host``
(the worker's own), ``Authorization`` and ``Proxy-Authorization`` (the
caller's credentials are the controller's business) and ``Expect``. The
worker gets ``Via`` and ``X-Forwarded-For``/``-Proto`` added. The worker's
status and end-to-end headers come back, except ``Date`` and ``Server``,
which the controller's server sets (as nginx does), with ``Via`` and
``X-Worker-Id`` added.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterable

import aiohttp
from multidict import CIMultiDict

from sloguard.routing.registry import Worker

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""RFC 9110 §7.6.1: fields that describe one connection, never forwarded."""
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"authorization", b"proxy-authorization", b"expect"}
_NOT_RETURNED = HOP_BY_HOP | {b"date", b"server"}
VIA = b"1.1 sloguard"

DEFAULT_LIMIT_PER_HOST = 256
"""Connections to one worker at once; a forward beyond them waits for one."""
DEFAULT_KEEPALIVE_S = 4.0
"""How long an idle connection to a worker is kept: under uvicorn's default of
5 s, so that the controller closes an idle connection before the worker does
(a request written into a connection the worker is closing would be lost)."""
SMALL_BODY_BYTES = 64 * 1024
"""A response of a known length up to this size is read whole and sent in one message."""


class Failure(enum.Enum):
    """How a forward failed, which decides whether it may be sent to another worker."""

    NOT_SENT = "not_sent"
    """No connection was made: the worker never saw the request. Always safe to retry."""
    LOST = "lost"
    """The connection broke after the request went out: it may have run. Retried only
    when the request carries an idempotency key."""
    TIMEOUT = "timeout"
    """The worker took too long: answered 504, not retried (it may still be running)."""
    MALFORMED = "malformed"
    """The worker answered with something that is not HTTP: 502, not retried."""


class ForwardError(Exception):
    """A forward that failed before the worker's response started."""

    def __init__(self, failure: Failure, worker: Worker, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.worker = worker
        self.detail = detail


class ResponseAborted(Exception):
    """The worker's response broke off (or ran out of time) after it had started.

    Raised out of the controller's app, so that the server aborts the client's
    response (never a truncated 200) and no idempotency layer stores it.
    """


def classify(exc: BaseException) -> Failure | None:
    """The :class:`Failure` an exception from aiohttp means; None for anything else."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return Failure.NOT_SENT
    if isinstance(exc, TimeoutError):
        return Failure.TIMEOUT
    if isinstance(exc, aiohttp.ClientResponseError):
        return Failure.MALFORMED
    if isinstance(exc, aiohttp.ClientError):
        return Failure.LOST
    return None


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, for ``last_error`` and problem details."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"ConnectError: {exc.os_error} ({exc.host}:{exc.port})"
    # A ClientResponseError's str() repeats the whole request: its message is enough.
    text = exc.message if isinstance(exc, aiohttp.ClientResponseError) else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    scheme: str,
    *,
    keep_length: bool,
) -> list[tuple[str, str]]:
    """The headers a worker gets for a request that came with ``headers``.

    ``keep_length``: the body goes on as it came, so its ``Content-Length`` holds.
    """
    dropped = _NOT_FORWARDED if keep_length else _NOT_FORWARDED | {b"content-length"}
    named: set[bytes] = set()
    forwarded_for = via = b""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if name in dropped:
            if name == b"connection":
                named.update(v.strip().lower() for v in value.split(b","))
        elif name == b"x-forwarded-for":
            forwarded_for = value + b", " if not forwarded_for else forwarded_for + value + b", "
        elif name == b"via":
            via = via + value + b", "
        else:
            out.append((name.decode("latin-1"), value.decode("latin-1")))
    if named:
        out = [(n, v) for n, v in out if n.encode("latin-1").lower() not in named]
    if client is not None:
        out.append(("x-forwarded-for", (forwarded_for + client[0].encode()).decode("latin-1")))
    elif forwarded_for:
        out.append(("x-forwarded-for", forwarded_for[:-2].decode("latin-1")))
    out.append(("x-forwarded-proto", scheme))
    out.append(("via", (via + VIA).decode("latin-1")))
    return out


def response_headers(raw: Iterable[tuple[bytes, bytes]], worker_id: str) -> Headers:
    """The worker's end-to-end response headers, plus ``Via`` and ``X-Worker-Id``."""
    named: set[bytes] = set()
    via = b""
    out: Headers = []
    for name, value in raw:
        lower = name.lower()
        if lower in _NOT_RETURNED:
            if lower == b"connection":
                named.update(v.strip().lower() for v in value.split(b","))
        elif lower == b"via":
            via = via + value + b", "
        else:
            out.append((lower, value))
    if named:
        out = [(n, v) for n, v in out if n not in named]
    out.append((b"via", via + VIA))
    out.append((b"x-worker-id", worker_id.encode("latin-1")))
    return out


class Upstream:
    """A worker's response whose status and headers are in; the body follows."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, worker_id: str) -> None:
        self._response = response
        self.status = response.status
        self.headers = response_headers(response.raw_headers, worker_id)

    @property
    def small(self) -> bool:
        """Whether the body has a known length of at most ``SMALL_BODY_BYTES``."""
        length = self._response.content_length
        return length is not None and length <= SMALL_BODY_BYTES

    async def read(self, worker: Worker) -> bytes:
        """The whole body (for a small one, before answering); :class:`ForwardError`
        if it breaks off."""
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = classify(exc)
            assert failure is not None
            raise ForwardError(failure, worker, describe(exc)) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; :class:`ResponseAborted` if it breaks off or times out."""
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ResponseAborted(describe(exc)) from exc

    def close(self) -> None:
        """Give the connection back to the pool (or close it if the body was not read)."""
        self._response.release()


class _ProxyRequest(aiohttp.ClientRequest):
    """A request that carries the headers it is given and none of aiohttp's own: no
    ``Accept``, ``Accept-Encoding`` or ``User-Agent`` the client did not send, and no
    ``Content-Type`` guessed for its body. (The session-wide ``skip_auto_headers``
    does the first part at about a fifth of a forward's client time.)"""

    _skip_auto_headers = CIMultiDict({"Content-Type": None})

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        return


class Forwarder:
    """The process's one pooled HTTP client for forwards: open with :meth:`start`."""

    def __init__(
        self,
        *,
        limit_per_host: int = DEFAULT_LIMIT_PER_HOST,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
    ) -> None:
        self.limit_per_host = limit_per_host
        self.keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,  # no overall cap: per worker only
            limit_per_host=self.limit_per_host,
            keepalive_timeout=self.keepalive_s,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # bodies pass as the worker encoded them
            request_class=_ProxyRequest,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        worker: Worker,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes],
        timeout_s: float,
    ) -> Upstream:
        """POST to ``worker.url + path``; :class:`ForwardError` unless its response starts.

        ``timeout_s`` bounds the whole exchange, the response body included.
        """
        session = self._session
        if session is None:
            raise RuntimeError("the forwarder starts with the controller's ASGI lifespan")
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            response = await session.post(
                worker.url + path, data=body, headers=headers, timeout=timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = classify(exc)
            assert failure is not None
            detail = describe(exc)
            if failure is Failure.TIMEOUT:
                detail = f"no answer within {timeout_s:.3g} s ({type(exc).__name__})"
            raise ForwardError(failure, worker, detail) from exc
        return Upstream(response, worker.id)
