"""RetryRun's decisions, without a network: a hand-moved clock and a chosen random draw."""

from __future__ import annotations

import logging
import math
from email.utils import formatdate
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard._clock import ManualClock
from sloguard.client import RetryPolicy, Throttled
from sloguard.client.retries import RetryRun, RetryState

HOST = "http://api.test:8000"
WALL = 1_700_000_000.0
KEY = "4b2d6c43-6a3b-4d41-9f0e-1c8d7e6f5a4b"


class Draw:
    """A random source that returns whatever the test sets: ``values`` in turn, then
    ``value`` (the last of them) for ever."""

    def __init__(self, *values: float) -> None:
        self.queue = list(values or [0.5])
        self.value = self.queue[-1]

    def __call__(self) -> float:
        return self.queue.pop(0) if self.queue else self.value


def make_state(clock: ManualClock, draw: Draw | None = None, **options: Any) -> RetryState:
    return RetryState(RetryPolicy(**options), clock, lambda: WALL, draw or Draw())


def start(
    state: RetryState, *, key: str | None = KEY, host: str = HOST, why_not: str | None = None
) -> RetryRun:
    run = RetryRun(state, host=host, target=f"POST {host}/orders", key=key, why_not=why_not)
    run.start()
    return run


def overload(state: RetryState, requests: int, host: str = HOST) -> None:
    """``requests`` requests that the server sheds, each on its only attempt."""
    for _ in range(requests):
        start(state, host=host, why_not="one attempt only").after_response(503, {})


def jitter(state: RetryState, retry: int) -> float:
    policy = state.policy
    return state.random() * min(policy.backoff_cap, policy.backoff_base * 2.0**retry)


# --- the first attempt ---------------------------------------------------------------


def test_a_first_attempt_is_admitted_and_counted(clock: ManualClock) -> None:
    state = make_state(clock)
    run = start(state)

    assert run.attempt == 1
    assert state.stats().requests == state.stats().attempts == 1
    assert state.stats().throttled == 0


def test_a_throttled_first_attempt_raises_before_anything_is_sent(clock: ManualClock) -> None:
    draw = Draw(0.999_999)  # above any rejection probability: everything is admitted
    state = make_state(clock, draw, max_attempts=1)
    overload(state, 50)
    probability = state.rejection_probability(HOST)
    draw.value = 0.0

    with pytest.raises(Throttled) as caught:
        start(state)

    assert caught.value.host == HOST
    assert caught.value.probability == probability
    assert "not sent" in str(caught.value)
    stats = state.stats()
    assert (stats.requests, stats.attempts, stats.throttled) == (51, 50, 1)


# --- which outcomes are retried ------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304])
def test_a_success_or_redirect_is_returned(clock: ManualClock, status: int) -> None:
    assert start(make_state(clock)).after_response(status, {}) is None


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_an_overload_answer_is_retried_after_a_jittered_backoff(
    clock: ManualClock, status: int
) -> None:
    state = make_state(clock)

    assert start(state).after_response(status, {}) == jitter(state, 0)
    assert state.stats().retries == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422, 500, 501])
def test_other_errors_are_not_retried(clock: ManualClock, status: int) -> None:
    state = make_state(clock)

    assert start(state).after_response(status, {"retry-after": "1"}) is None
    assert state.stats().retries == 0


def test_409_means_in_flight_only_for_a_keyed_request(clock: ManualClock) -> None:
    state = make_state(clock)

    assert start(state, key=KEY).after_response(409, {"retry-after": "1"}) == 1 + jitter(state, 0)
    assert start(state, key=None).after_response(409, {"retry-after": "1"}) is None


def test_a_connection_error_is_retried(clock: ManualClock) -> None:
    state = make_state(clock)

    assert start(state).after_error("ReadTimeout") == jitter(state, 0)


def test_a_request_that_cannot_be_replayed_is_never_retried(clock: ManualClock) -> None:
    state = make_state(clock)
    run = start(state, why_not="its body is a stream")

    assert run.after_response(503, {}) is None
    assert run.after_error("ConnectError") is None
    assert state.stats().retries == 0


# --- how long to wait ----------------------------------------------------------------


def test_each_retry_doubles_the_backoff_interval(clock: ManualClock) -> None:
    state = make_state(clock, max_attempts=5)
    run = start(state)

    delays = [run.after_response(503, {}) or 0.0 for _ in range(4)]

    assert delays == [jitter(state, retry) for retry in range(4)]
    assert delays == sorted(delays)
    assert delays[0] > 0


def test_retry_after_is_a_minimum_with_the_jitter_on_top(clock: ManualClock) -> None:
    state = make_state(clock)

    assert start(state).after_response(503, {"retry-after": "7"}) == 7 + jitter(state, 0)


def test_a_retry_after_date_is_measured_from_the_responses_date(clock: ManualClock) -> None:
    state = make_state(clock)  # its wall clock is far from the server's Date
    sent = 1_500_000_000
    headers = {
        "date": formatdate(sent, usegmt=True),
        "retry-after": formatdate(sent + 9, usegmt=True),
    }

    assert start(state).after_response(503, headers) == 9 + jitter(state, 0)


def test_without_a_date_header_a_retry_after_date_is_measured_from_the_wall_clock(
    clock: ManualClock,
) -> None:
    state = make_state(clock)
    headers = {"retry-after": formatdate(WALL + 4, usegmt=True)}

    assert start(state).after_response(503, headers) == 4 + jitter(state, 0)


def test_an_unreadable_retry_after_falls_back_to_the_backoff(clock: ManualClock) -> None:
    state = make_state(clock)

    assert start(state).after_response(503, {"retry-after": "soon"}) == jitter(state, 0)


# --- limits --------------------------------------------------------------------------


def test_attempts_stop_at_max_attempts(clock: ManualClock) -> None:
    state = make_state(clock, max_attempts=3)
    run = start(state)

    decisions = [run.after_response(503, {}) for _ in range(3)]

    assert [d is not None for d in decisions] == [True, True, False]
    assert run.attempt == 3
    assert state.stats().attempts == 3


def test_a_wait_that_would_pass_the_deadline_is_not_made(clock: ManualClock) -> None:
    state = make_state(clock, deadline=30)

    assert start(state).after_response(503, {"retry-after": "60"}) is None
    assert state.stats().retries == 0


@given(
    deadline=st.floats(0.5, 60),
    attempt_seconds=st.lists(st.floats(0, 20), min_size=1, max_size=20),
    draw=st.floats(0, 1, exclude_max=True),
    retry_after=st.sampled_from([None, "0", "1", "5"]),
)
def test_the_deadline_bounds_sleeps_and_attempts_together(
    deadline: float, attempt_seconds: list[float], draw: float, retry_after: str | None
) -> None:
    clock = ManualClock()
    state = make_state(clock, Draw(draw), deadline=deadline, max_attempts=20, min_retries=20)
    began = clock()
    run = start(state)
    headers = {} if retry_after is None else {"retry-after": retry_after}
    for seconds in attempt_seconds:
        clock.advance(min(seconds, run.remaining()))  # the transport's timeouts are cut so
        delay = run.after_response(503, headers)
        if delay is None:
            break
        clock.advance(delay)

    elapsed = clock() - began
    assert elapsed <= deadline or math.isclose(elapsed, deadline)  # float rounding only


def test_the_budget_stops_retries_and_says_so(clock: ManualClock) -> None:
    state = make_state(clock, retry_ratio=0, min_retries=1)

    assert start(state).after_response(503, {}) is not None
    assert start(state).after_response(503, {}) is None
    stats = state.stats()
    assert (stats.retries, stats.budget_exhausted) == (1, 1)


def test_a_throttled_retry_is_not_made(clock: ManualClock) -> None:
    draw = Draw(0.999_999)  # above any rejection probability: everything is admitted
    state = make_state(clock, draw)
    overload(state, 20)
    retries = state.stats().retries
    run = start(state)
    draw.queue = [0.5, 0.0]  # the jitter, then the throttle's draw

    assert run.after_response(503, {}) is None
    stats = state.stats()
    assert stats.throttled == 1
    assert stats.retries == retries


def test_a_request_counts_once_with_its_final_outcome(clock: ManualClock) -> None:
    state = make_state(clock, Draw(0.0))  # any positive probability would refuse
    run = start(state)

    assert run.after_error("ReadTimeout") is not None  # its own failures do not throttle it
    assert run.after_response(503, {}) is not None
    assert state.rejection_probability(HOST) == 0
    assert run.after_response(201, {}) is None
    assert state.rejection_probability(HOST) == 0  # served in the end: one accepted request

    failed = start(state, key=None, why_not="not replayable")
    assert failed.after_error("ConnectError") is None
    assert state.rejection_probability(HOST) == max(0, (2 - 2 * 1) / 3)
    overload(state, 1)
    assert state.rejection_probability(HOST) == (3 - 2 * 1) / 4


def test_replays_are_counted(clock: ManualClock) -> None:
    state = make_state(clock)

    assert start(state).after_response(201, {"idempotent-replayed": "true"}) is None
    assert start(state).after_response(201, {"idempotent-replayed": "false"}) is None
    assert state.stats().replays == 1


# --- per host, bounded ---------------------------------------------------------------


def test_hosts_are_throttled_separately(clock: ManualClock) -> None:
    state = make_state(clock, Draw(0.999_999), max_attempts=1)
    overload(state, 30, host="http://sick.test")
    start(state, host="http://well.test").after_response(200, {})

    assert state.rejection_probability("http://sick.test") > 0.5
    assert state.rejection_probability("http://well.test") == 0


def test_the_host_table_forgets_the_least_recently_used_host(clock: ManualClock) -> None:
    state = make_state(clock, max_hosts=2)
    for host in ("http://a.test", "http://b.test", "http://a.test", "http://c.test"):
        start(state, host=host).after_response(200, {})

    assert state.hosts() == ["http://a.test", "http://c.test"]


# --- log lines -----------------------------------------------------------------------


def test_each_decision_is_logged(clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    state = make_state(clock, max_attempts=2)
    with caplog.at_level(logging.INFO, logger="sloguard.client"):
        run = start(state)
        run.after_response(503, {})
        run.after_response(503, {})
        start(state).after_response(200, {"idempotent-replayed": "true"})

    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith(f"POST {HOST}/orders: retrying after 503 in ")
    assert messages[0].endswith(f"(attempt 2 of 2) with Idempotency-Key {KEY}")
    assert messages[1] == f"POST {HOST}/orders: giving up after 2 attempts (503)"
    assert (
        messages[2]
        == f"POST {HOST}/orders: response replayed by the server with Idempotency-Key {KEY}"
    )
