"""RetryTransport and SyncRetryTransport against a real sloguard service under uvicorn.

Every test runs with both transports (the ``flavour`` fixture). Back-off never
really sleeps: the injected sleep records the delay and moves the clock.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from sloguard import ConfigurationError
from sloguard._clock import ManualClock
from sloguard.client import RetryTransport, SyncRetryTransport, Throttled
from tests.client.conftest import SHED, Backend, Caller, MakeCaller, Reply, Sleeper
from tests.servers import free_port

DRAW = 0.5  # the random draw make_caller injects


def backoff(caller: Caller, retry: int) -> float:
    """The jittered backoff before retry number ``retry`` (from 0), with the fixed draw."""
    policy = caller.transport.policy
    return DRAW * min(policy.backoff_cap, policy.backoff_base * 2.0**retry)


def is_uuid4(value: str | None) -> bool:
    return value is not None and uuid.UUID(value).version == 4


# --- Idempotency-Key ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_an_unsafe_request_gets_a_uuid4_key_kept_on_every_retry(
    make_caller: MakeCaller, backend: Backend, method: str
) -> None:
    caller = make_caller()
    backend.plan(SHED, SHED)

    response = await caller.request(method, "/orders", json={"item": "book"})

    assert response.status_code in (200, 201)
    keys = [arrival.key for arrival in backend.arrivals]
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert is_uuid4(keys[0])
    assert response.request.headers["idempotency-key"] == keys[0]
    assert backend.executions == 1
    stats = caller.transport.stats
    assert (stats.requests, stats.attempts, stats.retries) == (1, 3, 2)


async def test_each_request_gets_its_own_key(make_caller: MakeCaller, backend: Backend) -> None:
    caller = make_caller()

    await caller.request("POST", "/orders", content=b"a")
    await caller.request("POST", "/orders", content=b"a")

    first, second = (arrival.key for arrival in backend.arrivals)
    assert first != second
    assert backend.executions == 2


async def test_a_key_the_caller_set_is_kept_and_replayed(
    make_caller: MakeCaller, backend: Backend
) -> None:
    caller = make_caller()
    backend.plan(SHED)
    headers = {"Idempotency-Key": "order-42"}

    first = await caller.request("POST", "/orders", content=b"x", headers=headers)
    again = await caller.request("POST", "/orders", content=b"x", headers=headers)

    assert [arrival.key for arrival in backend.arrivals] == ["order-42"] * 3
    assert backend.executions == 1
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert caller.transport.stats.replays == 1


async def test_without_keyed_methods_a_post_is_neither_keyed_nor_retried(
    make_caller: MakeCaller, backend: Backend
) -> None:
    caller = make_caller(keyed_methods=())
    backend.plan(SHED)

    response = await caller.request("POST", "/orders")

    assert response.status_code == 503
    assert [arrival.key for arrival in backend.arrivals] == [None]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_idempotent_methods_are_retried_without_a_key(
    make_caller: MakeCaller, backend: Backend, method: str
) -> None:
    caller = make_caller()
    backend.plan(SHED)

    response = await caller.request(method, "/orders")

    assert response.status_code == 200
    assert [arrival.key for arrival in backend.arrivals] == [None, None]
    assert caller.transport.stats.retries == 1


# --- exactly once, over a timeout and an in-flight 409 -------------------------------


async def test_a_post_that_timed_out_after_running_is_retried_with_its_key_and_runs_once(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper, caplog: pytest.LogCaptureFixture
) -> None:
    caller = make_caller(client={"timeout": httpx.Timeout(5.0, read=0.5)})
    backend.stalls = 1  # the first run does its work, then answers too late

    def finish_the_first_run() -> None:
        backend.release()
        backend.wait_finished(2)  # the stalled first attempt, and the 409 to the second

    sleeper.then(2, finish_the_first_run)  # the second sleep follows the 409

    with caplog.at_level(logging.INFO, logger="sloguard.client"):
        response = await caller.request("POST", "/orders", json={"item": "book"})

    assert response.status_code == 201
    assert response.json()["n"] == 1
    assert response.headers["idempotent-replayed"] == "true"
    assert backend.executions == 1
    keys = {arrival.key for arrival in backend.arrivals}
    assert len(backend.arrivals) == 3
    assert len(keys) == 1
    retried_after = [m.split("retrying after ")[1].split()[0] for m in caplog.messages[:2]]
    assert retried_after == ["ReadTimeout", "409"]
    assert sleeper.delays[0] == backoff(caller, 0)  # after the timeout: backoff alone
    assert sleeper.delays[1] == 1 + backoff(caller, 1)  # the 409's Retry-After: 1, then jitter
    stats = caller.transport.stats
    assert (stats.attempts, stats.retries, stats.replays) == (3, 2, 1)


async def test_a_409_in_flight_is_waited_out_then_replayed(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper, server: str
) -> None:
    caller = make_caller()
    key = {"Idempotency-Key": "order-7"}
    backend.stalls = 1
    first = asyncio.ensure_future(
        asyncio.to_thread(httpx.post, f"{server}/orders", content=b"x", headers=key)
    )
    assert await asyncio.to_thread(backend.stalled.wait, 10)

    def finish_the_first() -> None:
        backend.release()
        backend.wait_finished(2)  # the first request, and the 409

    sleeper.then(1, finish_the_first)

    retried = await caller.request("POST", "/orders", content=b"x", headers=key)

    original = await first
    assert retried.status_code == original.status_code == 201
    assert retried.json() == original.json()
    assert retried.headers["idempotent-replayed"] == "true"
    assert backend.executions == 1
    assert sleeper.delays == [1 + backoff(caller, 0)]


# --- what is retried, and how long it waits ------------------------------------------


async def test_a_shed_request_waits_the_servers_retry_after(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper
) -> None:
    caller = make_caller()
    backend.plan(Reply(retry_after="7"))

    response = await caller.request("POST", "/orders")

    assert response.status_code == 201
    assert sleeper.delays == [7 + backoff(caller, 0)]


async def test_a_retry_after_date_is_measured_from_the_servers_date(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper
) -> None:
    caller = make_caller()
    now = 1_700_000_000
    backend.plan(
        Reply(retry_after=formatdate(now + 9, usegmt=True), date=formatdate(now, usegmt=True))
    )

    await caller.request("POST", "/orders")

    assert sleeper.delays == [9 + backoff(caller, 0)]


async def test_a_retry_after_date_without_a_date_header_uses_the_wall_clock(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper
) -> None:
    wall = 1_700_000_000.0
    caller = make_caller(wall_clock=lambda: wall)
    backend.plan(Reply(retry_after=formatdate(wall + 4, usegmt=True)))

    await caller.request("POST", "/orders")

    assert sleeper.delays == [4 + backoff(caller, 0)]


async def test_without_retry_after_the_backoff_doubles_each_time(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper
) -> None:
    caller = make_caller(max_attempts=4)
    backend.plan(*[Reply(retry_after=None)] * 3)

    response = await caller.request("POST", "/orders")

    assert response.status_code == 201
    assert sleeper.delays == [backoff(caller, retry) for retry in range(3)]


@pytest.mark.parametrize("status", [429, 502, 504])
async def test_other_overload_answers_are_retried(
    make_caller: MakeCaller, backend: Backend, status: int
) -> None:
    caller = make_caller()
    backend.plan(Reply(status, error="overloaded"))

    response = await caller.request("PUT", "/orders")

    assert response.status_code == 200
    assert len(backend.arrivals) == 2


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 500])
async def test_other_errors_are_returned_at_once(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper, status: int
) -> None:
    caller = make_caller()
    backend.plan(Reply(status, error="refused"))

    response = await caller.request("GET", "/orders")

    assert response.status_code == status
    assert response.json()["error"] == "refused"
    assert len(backend.arrivals) == 1
    assert sleeper.delays == []


async def test_attempts_stop_at_max_attempts_with_the_last_answer(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper
) -> None:
    caller = make_caller(max_attempts=3)
    backend.answer = lambda n: SHED

    response = await caller.request("POST", "/orders")

    assert response.status_code == 503
    assert response.json()["error"] == "slo_violation"
    assert len(backend.arrivals) == 3
    assert len(sleeper.delays) == 2


async def test_a_refused_connection_is_retried_then_raised(
    make_caller: MakeCaller, sleeper: Sleeper
) -> None:
    caller = make_caller(client={"base_url": f"http://127.0.0.1:{free_port()}"})

    with pytest.raises(httpx.ConnectError):
        await caller.request("GET", "/orders")

    stats = caller.transport.stats
    assert stats.attempts == caller.transport.policy.max_attempts
    assert len(sleeper.delays) == stats.retries == stats.attempts - 1


# --- the deadline -----------------------------------------------------------------


async def test_a_retry_after_past_the_deadline_returns_the_answer_at_once(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper
) -> None:
    caller = make_caller(deadline=30)
    backend.plan(Reply(retry_after="60"))

    response = await caller.request("POST", "/orders")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"
    assert sleeper.delays == []


class TimeoutSpy(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A pass-through to the real HTTP transports that notes each attempt's timeouts."""

    def __init__(self) -> None:
        self.timeouts: list[dict[str, float]] = []
        self._sync = httpx.HTTPTransport()
        self._async = httpx.AsyncHTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.timeouts.append(dict(request.extensions["timeout"]))
        return self._sync.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.timeouts.append(dict(request.extensions["timeout"]))
        return await self._async.handle_async_request(request)

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()


async def test_the_deadline_bounds_both_the_sleeps_and_each_attempts_timeouts(
    make_caller: MakeCaller, backend: Backend, sleeper: Sleeper
) -> None:
    deadline = 2.5
    spy = TimeoutSpy()
    caller = make_caller(wrapped=spy, deadline=deadline, max_attempts=50)
    backend.answer = lambda n: SHED

    response = await caller.request("POST", "/orders")

    assert response.status_code == 503
    assert 1 < len(backend.arrivals) < 50
    assert sum(sleeper.delays) < deadline
    started = [sum(sleeper.delays[:i]) for i in range(len(spy.timeouts))]
    for began, timeouts in zip(started, spy.timeouts, strict=True):
        assert timeouts == pytest.approx(dict.fromkeys(timeouts, min(5.0, deadline - began)))


# --- bodies that cannot be sent twice ---------------------------------------------


def chunks(flavour: str) -> Iterator[bytes] | AsyncIterator[bytes]:
    async def async_chunks() -> AsyncIterator[bytes]:
        yield b"streamed"

    def sync_chunks() -> Iterator[bytes]:
        yield b"streamed"

    return async_chunks() if flavour == "async" else sync_chunks()


async def test_a_streamed_body_is_never_retried(
    make_caller: MakeCaller, backend: Backend, flavour: str
) -> None:
    caller = make_caller()
    backend.plan(SHED)

    response = await caller.request("POST", "/orders", content=chunks(flavour))

    assert response.status_code == 503
    assert len(backend.arrivals) == 1
    assert is_uuid4(backend.arrivals[0].key)  # keyed all the same: a later retry by hand is safe


async def test_a_streamed_body_read_beforehand_is_retried(
    make_caller: MakeCaller, backend: Backend, flavour: str
) -> None:
    caller = make_caller()
    backend.plan(SHED)
    client = caller.client
    request = client.build_request("POST", "/orders", content=chunks(flavour))

    if flavour == "async":
        await request.aread()
        response = await client.send(request)
    else:
        request.read()
        response = await asyncio.to_thread(client.send, request)

    assert response.status_code == 201
    assert response.json()["body"] == "streamed"
    assert len(backend.arrivals) == 2


# --- priority -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "extension", "header", "sent"),
    [
        (None, None, None, None),
        ("LOW", None, None, "low"),
        ("low", "Critical", None, "critical"),
        (None, "high", None, "high"),
        ("low", "critical", "normal", "normal"),  # a header the caller wrote wins
    ],
)
async def test_x_priority_comes_from_the_request_or_the_client_default(
    make_caller: MakeCaller,
    backend: Backend,
    default: str | None,
    extension: str | None,
    header: str | None,
    sent: str | None,
) -> None:
    caller = make_caller(priority=default)
    backend.plan(SHED)
    extensions = {} if extension is None else {"priority": extension}
    headers = {} if header is None else {"X-Priority": header}

    await caller.request("POST", "/orders", extensions=extensions, headers=headers)

    assert [arrival.priority for arrival in backend.arrivals] == [sent, sent]


async def test_a_bad_priority_is_refused_before_anything_is_sent(
    make_caller: MakeCaller, backend: Backend
) -> None:
    caller = make_caller()

    with pytest.raises(ConfigurationError, match="request extension 'priority' must be one of"):
        await caller.request("POST", "/orders", extensions={"priority": "urgent"})

    assert backend.arrivals == []
    assert caller.transport.stats.requests == 0


@pytest.mark.parametrize("transport", [RetryTransport, SyncRetryTransport])
def test_a_bad_option_is_refused_when_the_transport_is_made(transport: type[Any]) -> None:
    with pytest.raises(ConfigurationError, match="max_attempts must be a whole number >= 1"):
        transport(max_attempts=0)


# --- protecting an overloaded server ------------------------------------------------


async def test_throttling_kicks_in_when_most_requests_are_shed_and_recovers(
    make_caller: MakeCaller, backend: Backend, clock: ManualClock
) -> None:
    window = 120.0
    caller = make_caller(
        max_attempts=1, throttle_window=window, random=random.Random(20240611).random
    )
    base = str(caller.client.base_url).rstrip("/")
    refusals: list[Throttled] = []

    async def call(times: int) -> list[int]:
        statuses = []
        for _ in range(times):
            try:
                statuses.append((await caller.request("GET", "/orders")).status_code)
            except Throttled as exc:
                refusals.append(exc)
        return statuses

    assert set(await call(20)) == {200}
    assert refusals == []

    backend.answer = lambda n: None if n % 10 == 0 else SHED  # nine in ten shed
    statuses = await call(100)

    assert len(refusals) > 0
    assert {exc.host for exc in refusals} == {base}
    assert statuses.count(503) > statuses.count(200)
    assert len(backend.arrivals) == 120 - len(refusals)  # refusals never left the client
    assert caller.transport.stats.throttled == len(refusals)

    backend.answer = lambda n: None
    for _ in range(12):  # one window, step by step: the overload ages out
        clock.advance(window / 12)
        statuses = await call(5)
    assert statuses == [200] * 5
    assert caller.transport.rejection_probability(base) == 0


async def test_a_throttled_priority_does_not_throttle_the_others(
    make_caller: MakeCaller, backend: Backend
) -> None:
    caller = make_caller(max_attempts=1, random=random.Random(7).random)
    base = str(caller.client.base_url).rstrip("/")
    backend.answer = lambda n: SHED  # the server sheds everything it is sent
    low_refused = 0
    for _ in range(60):
        try:
            await caller.request("GET", "/orders", headers={"X-Priority": "low"})
        except Throttled:
            low_refused += 1
    assert low_refused > 0
    assert caller.transport.rejection_probability(base, "low") > 0.5
    # High priority has its own throttle: its first requests all go out.
    assert caller.transport.rejection_probability(base, "high") == 0
    arrivals = len(backend.arrivals)
    response = await caller.request("GET", "/orders", headers={"X-Priority": "high"})
    assert response.status_code == 503
    assert len(backend.arrivals) == arrivals + 1


async def test_the_retry_budget_holds(make_caller: MakeCaller, backend: Backend) -> None:
    caller = make_caller(retry_ratio=0.1, min_retries=0)
    backend.answer = lambda n: SHED if n % 2 == 0 else None  # every other request shed

    statuses = [(await caller.request("POST", "/orders")).status_code for _ in range(60)]

    stats = caller.transport.stats
    assert 0 < stats.retries <= 0.1 * stats.requests
    assert stats.budget_exhausted == statuses.count(503) > 0
    assert len(backend.arrivals) == stats.attempts


# --- observability -----------------------------------------------------------------


async def test_retries_and_replays_are_logged(
    make_caller: MakeCaller, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caller = make_caller()
    backend.plan(SHED)
    headers = {"Idempotency-Key": "order-9"}

    with caplog.at_level(logging.INFO, logger="sloguard.client"):
        await caller.request("POST", "/orders", headers=headers)
        await caller.request("POST", "/orders", headers=headers)

    base = str(caller.client.base_url).rstrip("/")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith(f"POST {base}/orders: retrying after 503 in ")
    assert messages[0].endswith("(attempt 2 of 4) with Idempotency-Key order-9")
    assert messages[1] == (
        f"POST {base}/orders: response replayed by the server with Idempotency-Key order-9"
    )


async def test_the_default_sleep_and_clocks_work(
    server: str, backend: Backend, flavour: str
) -> None:
    backend.plan(Reply(retry_after=None))  # with a zero backoff, the sleep is sleep(0)

    if flavour == "async":
        async with httpx.AsyncClient(
            transport=RetryTransport(backoff_base=0), base_url=server
        ) as client:
            response = await client.post("/orders")
    else:
        with httpx.Client(transport=SyncRetryTransport(backoff_base=0), base_url=server) as sync:
            response = await asyncio.to_thread(sync.post, "/orders")

    assert response.status_code == 201
    assert len(backend.arrivals) == 2
