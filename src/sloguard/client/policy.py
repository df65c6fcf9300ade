"""What the client retries and how hard: the options, validated once, and the HTTP facts
they rest on (which methods, which statuses)."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from sloguard.exceptions import ConfigurationError
from sloguard.http import REPLAY_HEADERS as DEFAULT_REPLAY_HEADERS
from sloguard.shedding.priority import PRIORITIES

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Safe to repeat by definition (RFC 9110 section 9.2.2): retried without a key."""

OVERLOAD_STATUSES = frozenset({429, 502, 503, 504})
"""Answers meaning "not now": retried, and counted against the server by the throttle."""

IN_FLIGHT_STATUS = 409
"""To a keyed request: the first attempt is still running; a retry gets its replay."""

REPLAY_HEADERS = tuple(header.lower() for header in DEFAULT_REPLAY_HEADERS)
"""The headers a sloguard server marks a replay with (its defaults)."""


def parse_priority(value: object, source: str) -> str:
    """``value`` as a lower-case priority, or a ConfigurationError naming ``source``."""
    if isinstance(value, str) and value.strip().lower() in PRIORITIES:
        return value.strip().lower()
    raise ConfigurationError(
        f"{source} must be one of {', '.join(PRIORITIES)} (any case), got {value!r}"
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The transport's options, validated; see the README for what each one does."""

    max_attempts: int = 4
    deadline: float = 30.0
    backoff_base: float = 0.1
    backoff_cap: float = 10.0
    priority: str | None = None
    keyed_methods: Collection[str] = ("POST", "PATCH")
    throttle_k: float = 2.0
    throttle_window: float = 120.0
    retry_ratio: float = 0.1
    min_retries: int = 10
    budget_window: float = 10.0
    max_hosts: int = 1024

    def __post_init__(self) -> None:
        _whole("max_attempts", self.max_attempts, minimum=1)
        _whole("min_retries", self.min_retries, minimum=0)
        _whole("max_hosts", self.max_hosts, minimum=1)
        for name in ("deadline", "throttle_k", "throttle_window", "budget_window"):
            _number(name, getattr(self, name), positive=True)
        for name in ("backoff_base", "backoff_cap", "retry_ratio"):
            _number(name, getattr(self, name), positive=False)
        if self.backoff_cap < self.backoff_base:
            raise ConfigurationError(
                f"backoff_cap ({self.backoff_cap!r}) must not be below "
                f"backoff_base ({self.backoff_base!r})"
            )
        if self.priority is not None:
            object.__setattr__(self, "priority", parse_priority(self.priority, "priority"))
        if isinstance(self.keyed_methods, str) or not all(
            isinstance(m, str) and m for m in self.keyed_methods
        ):
            raise ConfigurationError(
                f"keyed_methods must be a collection of method names, got {self.keyed_methods!r}"
            )
        object.__setattr__(self, "keyed_methods", frozenset(m.upper() for m in self.keyed_methods))

    def retries_method(self, method: str) -> bool:
        return method in IDEMPOTENT_METHODS or method in self.keyed_methods


def _whole(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _number(name: str, value: object, *, positive: bool) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if not ok:
        kind = "positive" if positive else "non-negative"
        raise ConfigurationError(f"{name} must be a {kind} finite number, got {value!r}")
