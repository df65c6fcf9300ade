"""The client's options: defaults, normalisation and a clear error for each bad value."""

from __future__ import annotations

from typing import Any

import pytest

from sloguard import ConfigurationError
from sloguard.client import PRIORITIES, RetryPolicy


def test_the_defaults_are_the_documented_ones() -> None:
    policy = RetryPolicy()

    assert policy.max_attempts == 4
    assert policy.throttle_k == 2
    assert policy.retry_ratio == 0.1
    assert policy.keyed_methods == frozenset({"POST", "PATCH"})
    assert policy.priority is None


def test_priority_and_methods_are_normalised() -> None:
    policy = RetryPolicy(priority=" HIGH ", keyed_methods=["post", "Put"])

    assert policy.priority == "high"
    assert policy.keyed_methods == frozenset({"POST", "PUT"})
    assert policy.retries_method("PUT")


def test_only_idempotent_and_keyed_methods_are_retried() -> None:
    policy = RetryPolicy()

    for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "POST", "PATCH"):
        assert policy.retries_method(method), method
    for method in ("CONNECT", "PURGE", "LOCK"):
        assert not policy.retries_method(method), method


def test_the_priorities_are_the_servers() -> None:
    assert PRIORITIES == ("critical", "high", "normal", "low")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_attempts", 0, "max_attempts must be a whole number >= 1"),
        ("max_attempts", 2.5, "max_attempts must be a whole number >= 1"),
        ("max_attempts", True, "max_attempts must be a whole number >= 1"),
        ("min_retries", -1, "min_retries must be a whole number >= 0"),
        ("max_hosts", 0, "max_hosts must be a whole number >= 1"),
        ("deadline", 0, "deadline must be a positive finite number"),
        ("deadline", float("inf"), "deadline must be a positive finite number"),
        ("throttle_k", -2, "throttle_k must be a positive finite number"),
        ("throttle_window", float("nan"), "throttle_window must be a positive finite number"),
        ("budget_window", "10", "budget_window must be a positive finite number"),
        ("backoff_base", -0.1, "backoff_base must be a non-negative finite number"),
        ("retry_ratio", -1, "retry_ratio must be a non-negative finite number"),
        ("backoff_cap", 0.01, r"backoff_cap \(0.01\) must not be below backoff_base \(0.1\)"),
        ("priority", "urgent", "priority must be one of critical, high, normal, low"),
        ("priority", 3, "priority must be one of critical, high, normal, low"),
        ("keyed_methods", "POST", "keyed_methods must be a collection of method names"),
        ("keyed_methods", ["POST", ""], "keyed_methods must be a collection of method names"),
    ],
)
def test_a_bad_option_is_refused_by_name(option: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RetryPolicy(**{option: value})
