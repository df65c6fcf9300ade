"""Retry decisions for one request, shared by the async and the sync transport.

Nothing here knows httpx or does I/O. A transport starts a :class:`RetryRun` per
request, reports each outcome (a status and the response headers, or an error)
and is told whether to retry and after how long; it only sends and sleeps.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields

from sloguard._clock import Clock
from sloguard.client.backoff import Random, full_jitter, parse_http_date, parse_retry_after
from sloguard.client.policy import (
    IN_FLIGHT_STATUS,
    OVERLOAD_STATUSES,
    REPLAY_HEADERS,
    RetryPolicy,
)
from sloguard.client.throttle import AdaptiveThrottle, RetryBudget
from sloguard.exceptions import Throttled

logger = logging.getLogger("sloguard.client")


@dataclass(frozen=True, slots=True)
class RetryStats:
    """A transport's counters since it was made (a snapshot)."""

    requests: int = 0
    """Requests handed to the transport."""
    attempts: int = 0
    """Attempts sent to the wrapped transport (first attempts and retries)."""
    retries: int = 0
    """Attempts after the first."""
    throttled: int = 0
    """Attempts refused locally by the adaptive throttle: a first one raises ``Throttled``,
    a retry is not made (the last response or error is returned)."""
    budget_exhausted: int = 0
    """Retries not made because the retry budget was spent."""
    replays: int = 0
    """Responses the server marked ``Idempotent-Replayed: true``."""


_STAT_NAMES = tuple(f.name for f in fields(RetryStats))


class _Host:
    """What is kept per host: its throttle and its retry budget."""

    __slots__ = ("budget", "throttle")

    def __init__(self, policy: RetryPolicy) -> None:
        self.throttle = AdaptiveThrottle(policy.throttle_window, policy.throttle_k)
        self.budget = RetryBudget(policy.budget_window, policy.retry_ratio, policy.min_retries)


class RetryState:
    """What one transport shares between its requests: per-host throttles and budgets
    (the least recently used host is forgotten past ``max_hosts``) and the counters.
    ``lock`` guards both, so that one transport can serve many threads."""

    def __init__(
        self, policy: RetryPolicy, clock: Clock, wall_clock: Clock, random: Random
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.wall_clock = wall_clock
        self.random = random
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(_STAT_NAMES, 0)
        self._hosts: OrderedDict[str, _Host] = OrderedDict()

    def host(self, name: str) -> _Host:
        """The state kept for ``name``; call with ``lock`` held."""
        state = self._hosts.get(name)
        if state is None:
            state = self._hosts[name] = _Host(self.policy)
            if len(self._hosts) > self.policy.max_hosts:
                self._hosts.popitem(last=False)
        else:
            self._hosts.move_to_end(name)
        return state

    def hosts(self) -> list[str]:
        """Hosts with state, least recently used first."""
        with self.lock:
            return list(self._hosts)

    def rejection_probability(self, host: str) -> float:
        """The throttle's current probability of refusing an attempt to ``host``."""
        with self.lock:
            known = self._hosts.get(host)
            return 0.0 if known is None else known.throttle.rejection_probability(self.clock())

    def stats(self) -> RetryStats:
        with self.lock:
            return RetryStats(**self.counts)


class RetryRun:
    """The decisions for one request: whether each attempt may go, and when to retry.

    ``host`` keys the throttle and budget (scheme, host and port); ``target`` names
    the request in log lines; ``key`` is the ``Idempotency-Key`` it carries, if any;
    ``why_not`` says why it must never be retried (``None`` when it may be).
    """

    def __init__(
        self,
        state: RetryState,
        *,
        host: str,
        target: str,
        key: str | None,
        why_not: str | None,
    ) -> None:
        self._state = state
        self._policy = state.policy
        self._host = host
        self._target = target
        self._key = key
        self._why_not = why_not
        self._deadline_at = state.clock() + state.policy.deadline
        self.attempt = 0

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self._deadline_at - self._state.clock())

    def start(self) -> None:
        """Admit the first attempt, or raise :class:`Throttled` (nothing is sent)."""
        state = self._state
        now = state.clock()
        with state.lock:
            state.counts["requests"] += 1
            host = state.host(self._host)
            probability = host.throttle.rejection_probability(now)
            if not host.throttle.admit(now, state.random):
                state.counts["throttled"] += 1
                admitted = False
            else:
                host.budget.record_request(now)
                state.counts["attempts"] += 1
                admitted = True
        if not admitted:
            logger.info(
                "%s: not sent: throttled locally (rejection probability %.2f)",
                self._target,
                probability,
            )
            raise Throttled(self._host, probability)
        self.attempt = 1
        logger.debug("%s: attempt 1%s", self._target, self._key_note())

    def after_response(self, status: int, headers: Mapping[str, str]) -> float | None:
        """Seconds to wait before retrying after this response, or ``None``: return it.

        ``headers`` must look names up in lower case (``httpx.Headers`` does).
        """
        if any(headers.get(name, "").lower() == "true" for name in REPLAY_HEADERS):
            with self._state.lock:
                self._state.counts["replays"] += 1
            logger.info("%s: response replayed by the server%s", self._target, self._key_note())
        delay: float | None = None
        if status in OVERLOAD_STATUSES or (status == IN_FLIGHT_STATUS and self._key is not None):
            delay = self._retry_delay(str(status), self._retry_after(headers))
        if delay is None:
            self._finish(accepted=status not in OVERLOAD_STATUSES)
        return delay

    def after_error(self, error: str) -> float | None:
        """Seconds to wait before retrying after a connection error or timeout
        (``error`` names it), or ``None``: re-raise it."""
        delay = self._retry_delay(error, None)
        if delay is None:
            self._finish(accepted=False)
        return delay

    def _finish(self, *, accepted: bool) -> None:
        """Give the throttle this request's final outcome."""
        state = self._state
        with state.lock:
            state.host(self._host).throttle.record(state.clock(), accepted=accepted)

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        value = headers.get("retry-after")
        if value is None:
            return None
        date = headers.get("date")
        now = parse_http_date(date) if date is not None else None
        return parse_retry_after(value, self._state.wall_clock() if now is None else now)

    def _retry_delay(self, reason: str, retry_after: float | None) -> float | None:
        state, policy = self._state, self._policy
        target = self._target
        if self._why_not is not None:
            logger.debug("%s: not retried after %s: %s", target, reason, self._why_not)
            return None
        if self.attempt >= policy.max_attempts:
            logger.info("%s: giving up after %d attempts (%s)", target, self.attempt, reason)
            return None
        retry = self.attempt - 1
        jitter = full_jitter(retry, policy.backoff_base, policy.backoff_cap, state.random)
        # Retry-After is a minimum; the jitter on top keeps clients told the same
        # Retry-After from coming back in the same instant.
        delay = jitter if retry_after is None else retry_after + jitter
        if delay >= self.remaining():
            logger.info(
                "%s: not retried after %s: waiting %.3fs would pass the %gs deadline",
                target,
                reason,
                delay,
                policy.deadline,
            )
            return None
        now = state.clock()
        with state.lock:
            host = state.host(self._host)
            if not host.throttle.allows_retry(now, state.random):
                state.counts["throttled"] += 1
                refusal: str | None = "throttled locally"
            elif not host.budget.try_spend(now):
                state.counts["budget_exhausted"] += 1
                refusal = "retry budget spent"
            else:
                state.counts["attempts"] += 1
                state.counts["retries"] += 1
                refusal = None
        if refusal is not None:
            logger.info("%s: not retried after %s: %s", target, reason, refusal)
            return None
        self.attempt += 1
        logger.info(
            "%s: retrying after %s in %.3fs (attempt %d of %d)%s",
            target,
            reason,
            delay,
            self.attempt,
            policy.max_attempts,
            self._key_note(),
        )
        return delay

    def _key_note(self) -> str:
        return "" if self._key is None else f" with Idempotency-Key {self._key}"
