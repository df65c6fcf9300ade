"""Adaptive throttling and the retry budget over sliding windows, on a hand-moved clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.client.throttle import (
    WINDOW_BUCKETS,
    AdaptiveThrottle,
    RetryBudget,
    WindowCounts,
)

WINDOW = 120.0
NOW = 1_000.0


def never_called() -> float:
    raise AssertionError("the random source was consulted")


def sends(throttle: AdaptiveThrottle, now: float, requests: int, accepts: int) -> None:
    for i in range(requests):
        throttle.record(now, accepted=i < accepts)


# --- windows ------------------------------------------------------------------------


def test_a_window_sums_both_counts_over_its_length() -> None:
    counts = WindowCounts(WINDOW)
    counts.add(NOW, first=2, second=1)
    counts.add(NOW + WINDOW / 2, first=3)

    assert counts.totals(NOW + WINDOW / 2) == (5, 1)


def test_counts_leave_the_window_once_it_has_passed() -> None:
    counts = WindowCounts(WINDOW)
    counts.add(NOW, first=2, second=2)
    counts.add(NOW + WINDOW / 2, first=1)

    assert counts.totals(NOW + WINDOW) == (1, 0)
    assert counts.totals(NOW + 2 * WINDOW) == (0, 0)


def test_a_slot_reused_after_a_full_turn_starts_from_zero() -> None:
    counts = WindowCounts(WINDOW)
    counts.add(NOW, first=5, second=5)
    counts.add(NOW + WINDOW, first=1)  # the same slot of the ring, one turn later

    assert counts.totals(NOW + WINDOW) == (1, 0)


@given(st.lists(st.tuples(st.floats(0, 1_000), st.integers(0, 5), st.integers(0, 5))))
def test_a_window_never_counts_what_is_older_than_its_length(
    events: list[tuple[float, int, int]],
) -> None:
    counts = WindowCounts(WINDOW)
    now = 0.0
    for delay, first, second in events:
        now += delay
        counts.add(now, first, second)
    width = WINDOW / WINDOW_BUCKETS

    recent_enough = [(f, s) for (f, s, t) in _stamped(events) if t > now - WINDOW - width]
    surely_in = [(f, s) for (f, s, t) in _stamped(events) if t > now - WINDOW + width]
    firsts, seconds = counts.totals(now)
    assert sum(f for f, _ in surely_in) <= firsts <= sum(f for f, _ in recent_enough)
    assert sum(s for _, s in surely_in) <= seconds <= sum(s for _, s in recent_enough)


def _stamped(events: list[tuple[float, int, int]]) -> list[tuple[int, int, float]]:
    stamped, now = [], 0.0
    for delay, first, second in events:
        now += delay
        stamped.append((first, second, now))
    return stamped


@pytest.mark.parametrize("window", [0, -1.0, float("inf"), float("nan")])
def test_a_window_must_be_a_positive_length(window: float) -> None:
    with pytest.raises(ValueError, match="window must be a positive number of seconds"):
        WindowCounts(window)


# --- adaptive throttling ------------------------------------------------------------


def test_a_throttle_without_history_admits_without_drawing() -> None:
    throttle = AdaptiveThrottle(WINDOW, k=2)

    assert throttle.rejection_probability(NOW) == 0
    assert throttle.admit(NOW, never_called)


def test_a_healthy_server_is_never_throttled() -> None:
    throttle = AdaptiveThrottle(WINDOW, k=2)
    sends(throttle, NOW, requests=1000, accepts=1000)

    assert throttle.rejection_probability(NOW) == 0
    assert throttle.admit(NOW, never_called)


@given(st.integers(0, 500), st.integers(0, 500), st.floats(1, 4))
def test_the_probability_is_the_sre_book_formula(requests: int, accepts: int, k: float) -> None:
    accepts = min(accepts, requests)
    throttle = AdaptiveThrottle(WINDOW, k=k)
    sends(throttle, NOW, requests, accepts)

    probability = throttle.rejection_probability(NOW)

    assert probability == max(0.0, (requests - k * accepts) / (requests + 1))
    assert 0 <= probability < 1


def test_rejection_starts_once_requests_outnumber_k_times_accepts() -> None:
    throttle = AdaptiveThrottle(WINDOW, k=2)
    sends(throttle, NOW, requests=20, accepts=10)
    assert throttle.rejection_probability(NOW) == 0

    throttle.record(NOW, accepted=False)

    assert throttle.rejection_probability(NOW) > 0


def test_a_local_refusal_counts_as_a_request_the_server_did_not_accept() -> None:
    throttle = AdaptiveThrottle(WINDOW, k=2)
    sends(throttle, NOW, requests=10, accepts=0)
    before = throttle.rejection_probability(NOW)

    assert not throttle.admit(NOW, lambda: 0.0)
    assert throttle.rejection_probability(NOW) > before
    assert throttle.admit(NOW, lambda: 0.999_999)


def test_a_retry_draws_like_a_request_but_counts_nothing() -> None:
    throttle = AdaptiveThrottle(WINDOW, k=2)
    sends(throttle, NOW, requests=10, accepts=0)
    probability = throttle.rejection_probability(NOW)

    assert not throttle.allows_retry(NOW, lambda: 0.0)
    assert throttle.allows_retry(NOW, lambda: probability)
    assert throttle.rejection_probability(NOW) == probability


def test_the_throttle_forgets_a_past_overload_within_one_window() -> None:
    throttle = AdaptiveThrottle(WINDOW, k=2)
    sends(throttle, NOW, requests=100, accepts=0)
    assert throttle.rejection_probability(NOW) > 0.9

    assert throttle.rejection_probability(NOW + WINDOW) == 0


# --- retry budget -------------------------------------------------------------------


def test_a_budget_allows_a_ratio_of_requests() -> None:
    budget = RetryBudget(WINDOW, ratio=0.1, min_retries=0)
    for _ in range(50):
        budget.record_request(NOW)

    spent = 0
    while budget.try_spend(NOW):
        spent += 1

    assert spent == int(0.1 * 50)


def test_the_floor_lets_a_quiet_client_retry() -> None:
    budget = RetryBudget(WINDOW, ratio=0.1, min_retries=3)
    budget.record_request(NOW)

    assert [budget.try_spend(NOW) for _ in range(4)] == [True, True, True, False]


def test_a_spent_budget_refills_as_the_window_slides() -> None:
    budget = RetryBudget(WINDOW, ratio=0.5, min_retries=0)
    for _ in range(4):
        budget.record_request(NOW)
    while budget.try_spend(NOW):
        pass
    budget.record_request(NOW + WINDOW)

    assert budget.try_spend(NOW + WINDOW) is False  # one request: half a retry
    budget.record_request(NOW + WINDOW)
    assert budget.try_spend(NOW + WINDOW)


@given(
    st.floats(0, 1),
    st.integers(0, 5),
    st.lists(st.tuples(st.booleans(), st.floats(0, 30)), max_size=300),
)
def test_every_retry_granted_keeps_the_window_within_budget(
    ratio: float, min_retries: int, operations: list[tuple[bool, float]]
) -> None:
    budget = RetryBudget(WINDOW, ratio=ratio, min_retries=min_retries)
    check = WindowCounts(WINDOW)  # the same window, counting what the budget agreed to
    now = NOW
    for is_request, delay in operations:
        now += delay
        if is_request:
            budget.record_request(now)
            check.add(now, first=1)
        elif budget.try_spend(now):
            check.add(now, second=1)
            requests, retries = check.totals(now)
            assert retries <= ratio * requests + min_retries
