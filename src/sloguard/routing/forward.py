"""Forwarding one capability request to one worker: a streaming HTTP/1.1 reverse proxy.

One :class:`Forwarder` per process keeps connections to each worker alive
(``limit_per_host`` at once) and speaks HTTP/1.1 on them itself: asyncio
protocols, httptools (uvicorn's parser) for the worker's answers. It is
made for exactly this exchange, ``POST`` a body and relay the answer, at a
fraction of a general client's CPU per request (benchmarks/RESULTS.md).
:meth:`Forwarder.send` sends ``POST {worker.url}{path}`` and returns once the
worker's status line and headers are in; the caller streams the body with
:meth:`Upstream.chunks`. Failures are classified by what the worker may
have seen (:class:`Failure`), which decides whether another worker may be
tried. A connection goes back to the pool only after a complete response to
a completely sent request.

Headers: hop-by-hop fields (RFC 9110 §7.6.1: ``Connection`` and the fields
it names, ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``,
``Transfer-Encoding``, ``Upgrade``) are dropped both ways; so are ``Host``
(the worker's own), ``Authorization`` and ``Proxy-Authorization`` (the
caller's credentials are the controller's business) and ``Expect``. The
worker gets ``Via`` and ``X-Forwarded-For``/``-Proto`` added. The worker's
status and end-to-end headers come back, except ``Date`` and ``Server``,
which the controller's server sets (as nginx does), with ``Via`` and
``X-Worker-Id`` added.

An ``https://`` worker's certificate and host name are verified
(:func:`worker_tls_context`: the system's trust store, or a CA file given);
a handshake that fails is :attr:`Failure.NOT_SENT`, nothing of the request
having been written.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import os
import re
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import cast
from urllib.parse import quote, urlsplit

import httptools

from sloguard.exceptions import ConfigurationError
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
PAUSE_BYTES = 256 * 1024
"""Response bytes buffered for a client that is behind, at which reading the worker pauses."""
RESUME_BYTES = 64 * 1024
"""...and at or under which it resumes."""
MAX_HEAD_BYTES = 64 * 1024
"""The most a worker may send before its answer's headers end (a malformed answer above)."""
_HEAD_TOO_LARGE = f"the answer's headers are over {MAX_HEAD_BYTES} bytes"

_TARGET = re.compile(r"[!-~]+")
"""A request target that needs no escaping: visible ASCII, no space or control character."""


class Failure(enum.Enum):
    """How a forward failed, which decides whether it may be sent to another worker."""

    NOT_SENT = "not_sent"
    """No connection was made (or a pooled one was found dead before anything was
    written): the worker never saw the request. Always safe to retry."""
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


class _StopParsing(Exception):
    """Raised from a parser callback: httptools stops and ``feed_data`` raises."""


class _Broken(Exception):
    """Why one exchange on a connection failed; :meth:`Forwarder.send` names the worker."""

    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


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


class _Origin:
    """Where a worker's URL (validated at registration: no user info) points: the
    connection's address and the request's preamble."""

    __slots__ = ("address", "host", "port", "preamble", "prefix", "tls")

    def __init__(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise _Broken(Failure.NOT_SENT, f"InvalidURL: {url}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Broken(Failure.NOT_SENT, f"InvalidURL: {url}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = port if port is not None else (443 if self.tls else 80)
        self.address = (self.tls, self.host, self.port)
        self.prefix = parts.path
        self.preamble = f"host: {parts.netloc}\r\n"


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a worker, carrying one exchange at a time.

    httptools calls the ``on_*`` methods as the worker's answer arrives; the
    forward waits on :meth:`wait` until something it waits for has happened.
    """

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.active = False
        self.counted = True
        """Whether it counts against its pool's limit (until it closes)."""
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.write_paused = False
        self._begin()

    def _begin(self) -> None:
        self.status = 0
        self.head_bytes = 0
        self.header_bytes = 0
        self.raw_headers: Headers = []
        self.length: int | None = None
        self.until_close = False
        self.informational = False
        self.head_done = False
        self.complete = False
        self.reusable = True
        self.request_sent = False
        self.error: _Broken | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.reading_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.writer: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.active:  # a worker has nothing to say on an idle connection
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(Failure.MALFORMED, "the worker answered by switching protocols")
        except httptools.HttpParserError as exc:
            self.fail(Failure.MALFORMED, f"{type(exc).__name__}: {exc}")
        else:
            if not self.head_done:  # a header that never ends, read after read
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:
                    self.fail(Failure.MALFORMED, _HEAD_TOO_LARGE)

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.reusable = False
        self.pool.forget(self)
        if self.active and not self.complete and self.error is None:
            if self.head_done and self.until_close and exc is None:
                self.complete = True  # a body without a length ends with the connection
            else:
                self.error = _Broken(Failure.LOST, _lost(exc, self.head_done))
        self._wake()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- httptools callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # more than one answer to one request: the first one stands
            self.reusable = False
            raise _StopParsing("a second answer to one request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEAD_BYTES:  # a head that came in one read, too
            self.fail(Failure.MALFORMED, _HEAD_TOO_LARGE)
            raise _StopParsing("headers over the limit")
        if len(name) == 14 and name.lower() == b"content-length":
            self.length = int(value) if value.isdigit() else None
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            self.length = -1  # chunked (or another coding): its end is in the body

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: an interim answer; the real one follows
            self.informational = True
            self.raw_headers = []
            self.length = None
            return
        self.status = status
        self.head_done = True
        if self.length == -1:
            self.length = None
        elif self.length is None and status not in (204, 304):
            self.until_close = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_BYTES and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        if not self.parser.should_keep_alive():
            self.reusable = False
        self._wake()

    # -- the exchange ------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until the worker's answer moves on (or breaks off)."""
        waiter = self._waiter = self.pool.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def expire(self, timeout_s: float) -> None:
        """The forward's deadline passed: whatever has not completed breaks off."""
        if not self.complete:
            where = "mid-body" if self.head_done else "before the worker answered"
            self.fail(Failure.TIMEOUT, f"the forward's deadline ({timeout_s:.3g} s) passed {where}")

    def fail(self, failure: Failure, detail: str) -> None:
        if self.error is None and not self.complete:
            self.error = _Broken(failure, detail)
        self.abort()
        self._wake()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def take(self) -> bytes:
        """The body buffered so far, as one piece; reading resumes if it had paused."""
        body = self.body
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    async def write_body(self, chunks: AsyncIterator[bytes], chunked: bool) -> None:
        """Send a streamed request body (the head is out); a body that breaks off
        breaks the exchange."""
        transport = self.transport
        assert transport is not None
        try:
            async for chunk in chunks:
                if self.lost or self.complete:
                    return
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self.write_paused:
                    self._drained = self.pool.loop.create_future()
                    await self._drained
            if chunked and not self.lost:
                transport.write(b"0\r\n\r\n")
            self.request_sent = True
        except Exception as exc:  # the client's body: it ended, or grew past the limit
            self.fail(Failure.LOST, f"the request body broke off: {type(exc).__name__}: {exc}")

    def finish(self) -> None:
        """End the exchange: back to the pool if it completed cleanly, else closed."""
        if not self.active:
            return
        self.active = False
        if self.timer is not None:
            self.timer.cancel()
        writer = self.writer
        if writer is not None and not writer.done():
            writer.cancel()
        if self.complete and self.reusable and self.request_sent and self.error is None:
            self.pool.release(self)
        else:
            self.abort()


def _tls_failure(exc: ssl.SSLError) -> str:
    """What a failed TLS handshake says: the verification's own words when it was that."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS verification failed: {exc.verify_message or exc.reason}"
    return f"TLS handshake failed: {exc.reason or exc}"


def _lost(exc: Exception | None, answered: bool) -> str:
    if exc is not None:
        return f"{type(exc).__name__}: {exc}"
    return "the worker closed the connection " + ("mid-body" if answered else "before answering")


class _Pool:
    """The connections to one worker's address: idle ones (most recent last) and a count."""

    def __init__(self, forwarder: Forwarder, origin: _Origin) -> None:
        self.loop = forwarder.loop
        self.limit = forwarder.limit_per_host
        self.keepalive_s = forwarder.keepalive_s
        self.tls = forwarder.tls_context() if origin.tls else None
        self.host, self.port = origin.host, origin.port
        self.idle: list[_Connection] = []
        self.open = 0
        self.closed = False
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, deadline: float) -> _Connection:
        loop = self.loop
        while True:
            idle = self.idle
            while idle:
                conn = idle.pop()
                if conn.lost or conn.transport is None or conn.transport.is_closing():
                    continue  # found dead before anything was written: never sent
                if loop.time() - conn.idle_since <= self.keepalive_s:
                    conn.active = True
                    return conn
                for old in (conn, *idle):  # this one and every one idle longer
                    old.abort()
                idle.clear()
            if self.open < self.limit:
                return await self._connect(deadline)
            waiter = loop.create_future()
            self.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, deadline - loop.time())
            except TimeoutError:
                raise _Broken(
                    Failure.TIMEOUT, f"no free connection to the worker ({self.limit} in use)"
                ) from None
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)

    async def _connect(self, deadline: float) -> _Connection:
        self.open += 1
        conn = _Connection(self)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                ),
                deadline - self.loop.time(),
            )
        except TimeoutError:
            self.forget(conn)
            raise _Broken(
                Failure.NOT_SENT,
                f"ConnectError: no connection within the deadline ({self.host}:{self.port})",
            ) from None
        except ssl.SSLError as exc:  # an OSError too: before the TLS handshake ended
            self.forget(conn)
            detail = f"{_tls_failure(exc)} ({self.host}:{self.port})"
            raise _Broken(Failure.NOT_SENT, detail) from None
        except OSError as exc:
            self.forget(conn)
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise _Broken(
                Failure.NOT_SENT, f"ConnectError: {reason} ({self.host}:{self.port})"
            ) from None
        except BaseException:
            self.forget(conn)
            raise
        conn.active = True
        return conn

    def release(self, conn: _Connection) -> None:
        if self.closed:  # the forwarder closed while this exchange ran
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        conn._begin()
        self.idle.append(conn)
        self._wake_one()

    def forget(self, conn: _Connection) -> None:
        """``conn`` closed: it no longer counts against the limit."""
        if not conn.counted:
            return
        conn.counted = False
        if conn in self.idle:
            self.idle.remove(conn)
        self.open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class Upstream:
    """A worker's response whose status and headers are in; the body follows."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Connection, worker_id: str) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers = response_headers(conn.raw_headers, worker_id)

    @property
    def small(self) -> bool:
        """Whether the body has a known length of at most ``SMALL_BODY_BYTES``."""
        length = self._conn.length
        return length is not None and length <= SMALL_BODY_BYTES

    async def read(self, worker: Worker) -> bytes:
        """The whole body (for a small one, before answering); :class:`ForwardError`
        if it breaks off."""
        conn = self._conn
        while not conn.complete:
            if conn.error is not None:
                raise ForwardError(conn.error.failure, worker, conn.error.detail)
            await conn.wait()
        data = conn.take() if conn.body else b""
        conn.finish()
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; :class:`ResponseAborted` if it breaks off or times out."""
        conn = self._conn
        while True:
            if conn.body:
                yield conn.take()
            elif conn.complete:
                return
            elif conn.error is not None:
                raise ResponseAborted(conn.error.detail)
            else:
                await conn.wait()

    def close(self) -> None:
        """Give the connection back to the pool (or close it if the answer did not complete)."""
        self._conn.finish()


def worker_tls_context(ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The TLS context ``https://`` workers are verified with: certificate and host name
    checked, against ``ca_file`` (PEM, one CA or several) alone when given, else the
    system's trust store (OpenSSL's default paths, which ``$SSL_CERT_FILE`` and
    ``$SSL_CERT_DIR`` override). :class:`ConfigurationError` naming a ``ca_file`` that
    cannot be read or holds no PEM certificate."""
    if ca_file is None:
        return ssl.create_default_context()
    path = os.fspath(ca_file)
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:  # before OSError: an SSLError is one
        raise ConfigurationError(
            f"worker CA file {path}: no PEM certificate in it ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigurationError(f"worker CA file {path}: cannot read it: {reason}") from None


class Forwarder:
    """The process's one pooled HTTP client for forwards: open with :meth:`start`.

    ``tls``: the context ``https://`` workers are verified with (default:
    :func:`worker_tls_context`, the system's trust store, made on first use).
    """

    def __init__(
        self,
        *,
        limit_per_host: int = DEFAULT_LIMIT_PER_HOST,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.limit_per_host = limit_per_host
        self.keepalive_s = keepalive_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._origins: dict[str, _Origin] = {}
        self._pools: dict[tuple[bool, str, int], _Pool] = {}
        self._tls = tls

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the forwarder starts with the controller's ASGI lifespan")
        return self._loop

    def tls_context(self) -> ssl.SSLContext:
        """The context ``https://`` workers are verified with (the health checks' too)."""
        if self._tls is None:
            self._tls = worker_tls_context()
        return self._tls

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._loop = None

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
        loop = self.loop
        deadline = loop.time() + timeout_s
        conn: _Connection | None = None
        try:
            origin = self._origin(worker.url)
            pool = self._pools.get(origin.address)
            if pool is None:
                pool = self._pools[origin.address] = _Pool(self, origin)
            conn = await pool.acquire(deadline)
            transport = conn.transport
            assert transport is not None
            conn.timer = loop.call_at(deadline, conn.expire, timeout_s)
            if isinstance(body, bytes):
                transport.write(_head(origin, path, headers, len(body))[0] + body)
                conn.request_sent = True
            else:
                head, chunked = _head(origin, path, headers, None)
                transport.write(head)
                conn.writer = loop.create_task(conn.write_body(body, chunked))
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except _Broken as exc:
            if conn is not None:
                conn.finish()
            raise ForwardError(exc.failure, worker, exc.detail) from None
        except BaseException:
            if conn is not None:
                conn.finish()
            raise
        return Upstream(conn, worker.id)

    def _origin(self, url: str) -> _Origin:
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) >= 4096:  # workers come and go: bound the memo
                self._origins.clear()
            origin = self._origins[url] = _Origin(url)
        return origin


def _head(
    origin: _Origin, path: str, headers: list[tuple[str, str]], length: int | None
) -> tuple[bytes, bool]:
    """The request line and headers, and whether the body goes chunked. ``length``: a body
    of that many bytes follows (else a stream: of the Content-Length among ``headers``,
    or chunked)."""
    target = origin.prefix + path
    if _TARGET.fullmatch(target) is None:
        target = quote(target, safe="/?&=%:@!$'()*+,;~-._")
    lines = [f"POST {target} HTTP/1.1\r\n{origin.preamble}"]
    framed = False
    for name, value in headers:
        if name.lower() == "content-length":
            if length is not None:
                continue  # the body's own length goes instead
            framed = True
        lines.append(f"{name}: {value}\r\n")
    chunked = False
    if length is not None:
        lines.append(f"content-length: {length}\r\n\r\n")
    elif framed:
        lines.append("\r\n")
    else:
        lines.append("transfer-encoding: chunked\r\n\r\n")
        chunked = True
    return "".join(lines).encode("latin-1"), chunked
