"""Sending one capability request to one worker: ``POST {url}/{verb}/{name}``."""

from __future__ import annotations

import enum
from collections.abc import Iterable

import httpx

from sloguard.routing.registry import Worker

FORWARDED_HEADERS = frozenset(
    {"idempotency-key", "x-priority", "traceparent", "tracestate", "x-request-id"}
)
"""Request headers passed on to the worker (besides ``Content-Type``)."""
RETURNED_HEADERS = ("content-type", "retry-after")
"""Response headers passed back from the worker."""


class Failure(enum.Enum):
    """How a forward failed, which decides whether it may be sent to another worker."""

    NOT_SENT = "not_sent"
    """No connection was made: the worker never saw the request. Always safe to retry."""
    LOST = "lost"
    """The connection broke after the request went out: it may have run. Retried only
    when the request carries an idempotency key."""
    TIMEOUT = "timeout"
    """The worker took too long: answered 504, not retried (it may still be running)."""


class ForwardError(Exception):
    def __init__(self, failure: Failure, worker: Worker, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.worker = worker
        self.detail = detail


def forwarded_headers(
    headers: Iterable[tuple[str, str]], content_type: str | None
) -> list[tuple[str, str]]:
    """The request headers a worker gets: the propagated ones and the content type."""
    out = [(name, value) for name, value in headers if name.lower() in FORWARDED_HEADERS]
    if content_type:
        out.append(("content-type", content_type))
    return out


async def send_to_worker(
    client: httpx.AsyncClient,
    worker: Worker,
    path: str,
    body: bytes,
    headers: list[tuple[str, str]],
    timeout_s: float,
) -> httpx.Response:
    """POST ``body`` to ``worker.url + path``; raise :class:`ForwardError` on failure."""
    try:
        return await client.post(
            worker.url + path, content=body, headers=headers, timeout=timeout_s
        )
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ForwardError(Failure.NOT_SENT, worker, _describe(exc)) from exc
    except httpx.TimeoutException as exc:
        detail = f"no answer within {timeout_s:g} s ({type(exc).__name__})"
        raise ForwardError(Failure.TIMEOUT, worker, detail) from exc
    except httpx.TransportError as exc:
        raise ForwardError(Failure.LOST, worker, _describe(exc)) from exc


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
