"""httpx transports that retry safely and back off when the server sheds load.

The decisions are :class:`~sloguard.client.retries.RetryRun`'s; the two transports
here only prepare the request, send it and sleep, one with ``await`` and one without.
"""

from __future__ import annotations

import random as _random
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Generic, TypeVar

import anyio
import httpx

from sloguard._clock import Clock
from sloguard.client.backoff import Random
from sloguard.client.policy import RetryPolicy, parse_priority
from sloguard.client.retries import RetryRun, RetryState, RetryStats
from sloguard.http import IDEMPOTENCY_KEY, PRIORITY

AsyncSleep = Callable[[float], Awaitable[None]]
SyncSleep = Callable[[float], None]

RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""Connection failures and timeouts: the request may or may not have reached the server."""

PRIORITY_EXTENSION = "priority"
"""Request extension carrying a per-request ``X-Priority``:
``client.post(url, extensions={"priority": "high"})``."""

_TIMEOUTS = ("connect", "read", "write", "pool")
_DEFAULT = RetryPolicy()

W = TypeVar("W")
S = TypeVar("S")


class _RetryingTransport(Generic[W, S]):
    """What the async and sync transports share: options, state and request preparation."""

    def __init__(
        self,
        wrapped: W | None = None,
        *,
        max_attempts: int = _DEFAULT.max_attempts,
        deadline: float = _DEFAULT.deadline,
        backoff_base: float = _DEFAULT.backoff_base,
        backoff_cap: float = _DEFAULT.backoff_cap,
        priority: str | None = None,
        keyed_methods: Collection[str] = _DEFAULT.keyed_methods,
        throttle_k: float = _DEFAULT.throttle_k,
        throttle_window: float = _DEFAULT.throttle_window,
        retry_ratio: float = _DEFAULT.retry_ratio,
        min_retries: int = _DEFAULT.min_retries,
        budget_window: float = _DEFAULT.budget_window,
        max_hosts: int = _DEFAULT.max_hosts,
        sleep: S | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        random: Random = _random.random,
    ) -> None:
        policy = RetryPolicy(
            max_attempts=max_attempts,
            deadline=deadline,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            priority=priority,
            keyed_methods=keyed_methods,
            throttle_k=throttle_k,
            throttle_window=throttle_window,
            retry_ratio=retry_ratio,
            min_retries=min_retries,
            budget_window=budget_window,
            max_hosts=max_hosts,
        )
        self._state = RetryState(policy, clock, wall_clock, random)
        self._wrapped: W = self._default_transport() if wrapped is None else wrapped
        self._sleep: S = self._default_sleep() if sleep is None else sleep

    def _default_transport(self) -> W:
        raise NotImplementedError

    def _default_sleep(self) -> S:
        raise NotImplementedError

    @property
    def policy(self) -> RetryPolicy:
        return self._state.policy

    @property
    def stats(self) -> RetryStats:
        """The counters so far (a snapshot)."""
        return self._state.stats()

    def rejection_probability(self, url: httpx.URL | str, priority: str | None = None) -> float:
        """How likely the throttle is, now, to refuse an attempt to ``url``'s host at
        ``priority`` (as sent in ``X-Priority``; None for requests sent without one)."""
        return self._state.rejection_probability(_throttle_key(_host(httpx.URL(url)), priority))

    def _begin(self, request: httpx.Request) -> RetryRun:
        """Add the headers, decide whether the request may ever be retried, and admit
        its first attempt (or raise ``Throttled``)."""
        policy = self._state.policy
        headers = request.headers
        priority = request.extensions.get(PRIORITY_EXTENSION)
        if priority is not None:
            priority = parse_priority(priority, f"request extension {PRIORITY_EXTENSION!r}")
        else:
            priority = policy.priority
        if priority is not None and PRIORITY not in headers:
            headers[PRIORITY] = priority
        method = request.method
        key = headers.get(IDEMPOTENCY_KEY)
        if key is None and method in policy.keyed_methods:
            key = headers[IDEMPOTENCY_KEY] = str(uuid.uuid4())

        why_not: str | None = None
        if not policy.retries_method(method):
            why_not = f"{method} is neither idempotent nor sent with an Idempotency-Key"
        elif not isinstance(request.stream, httpx.ByteStream):
            why_not = "its body is a stream that cannot be sent twice (read the request first)"
        host = _host(request.url)
        run = RetryRun(
            self._state,
            host=_throttle_key(host, headers.get(PRIORITY)),
            target=f"{method} {host}{request.url.path}",
            key=key,
            why_not=why_not,
        )
        run.start()
        return run


class RetryTransport(
    _RetryingTransport[httpx.AsyncBaseTransport, AsyncSleep], httpx.AsyncBaseTransport
):
    """An ``httpx.AsyncClient`` transport: retries safely, backs off, throttles itself.

    ``httpx.AsyncClient(transport=RetryTransport())``. It wraps ``wrapped`` (default
    ``httpx.AsyncHTTPTransport()``: pass your own for TLS, limits or proxies). POST and
    PATCH get an ``Idempotency-Key`` (a UUIDv4 unless the caller set one) kept on
    every retry. See the README, "Calling a sloguard service", for every option.
    """

    def _default_transport(self) -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport()

    def _default_sleep(self) -> AsyncSleep:
        return anyio.sleep

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        run = self._begin(request)
        while True:
            _clamp_timeouts(request, run.remaining())
            try:
                response = await self._wrapped.handle_async_request(request)
            except RETRYABLE_ERRORS as exc:
                delay = run.after_error(type(exc).__name__)
                if delay is None:
                    raise
            else:
                delay = run.after_response(response.status_code, response.headers)
                if delay is None:
                    return response
                await response.aclose()
            await self._sleep(delay)

    async def aclose(self) -> None:
        await self._wrapped.aclose()


class SyncRetryTransport(_RetryingTransport[httpx.BaseTransport, SyncSleep], httpx.BaseTransport):
    """:class:`RetryTransport` for ``httpx.Client``: the same options and behaviour.

    Its default ``wrapped`` is ``httpx.HTTPTransport()`` and it sleeps with ``time.sleep``.
    It is safe to share between threads, as ``httpx.Client`` is.
    """

    def _default_transport(self) -> httpx.BaseTransport:
        return httpx.HTTPTransport()

    def _default_sleep(self) -> SyncSleep:
        return time.sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        run = self._begin(request)
        while True:
            _clamp_timeouts(request, run.remaining())
            try:
                response = self._wrapped.handle_request(request)
            except RETRYABLE_ERRORS as exc:
                delay = run.after_error(type(exc).__name__)
                if delay is None:
                    raise
            else:
                delay = run.after_response(response.status_code, response.headers)
                if delay is None:
                    return response
                response.close()
            self._sleep(delay)

    def close(self) -> None:
        self._wrapped.close()


def _host(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def _clamp_timeouts(request: httpx.Request, remaining: float) -> None:
    """Cut each of the attempt's timeouts to what is left of the deadline, so that the
    deadline bounds attempts as well as sleeps."""
    timeouts = request.extensions.get("timeout", {})
    request.extensions["timeout"] = {
        name: remaining if timeouts.get(name) is None else min(timeouts[name], remaining)
        for name in _TIMEOUTS
    }


def _throttle_key(host: str, priority: str | None) -> str:
    """Throttles and budgets are kept per host and priority: a server that sheds its
    low-priority traffic must not make the client refuse its own high-priority requests."""
    if priority is None:
        return host
    return f"{host} [{priority.strip().lower()}]"
