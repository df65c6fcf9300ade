"""Client-side protection for an overloaded server: adaptive throttling and a retry budget.

Both count events over a sliding window of time and take the time as an
argument, so they are tested without sleeping. Neither is thread-safe on its
own: the transport serialises access to them.
"""

from __future__ import annotations

import math

from sloguard.client.backoff import Random

WINDOW_BUCKETS = 12
"""Slices a window is kept in: the window covers between 11/12 and all of its length."""


class WindowCounts:
    """Two running counts over the last ``window`` seconds, in a fixed ring of buckets."""

    __slots__ = ("_epochs", "_firsts", "_seconds", "_width")

    def __init__(self, window: float) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        self._width = window / WINDOW_BUCKETS
        self._epochs = [-1] * WINDOW_BUCKETS
        self._firsts = [0] * WINDOW_BUCKETS
        self._seconds = [0] * WINDOW_BUCKETS

    def add(self, now: float, first: int = 0, second: int = 0) -> None:
        epoch = int(now // self._width)
        slot = epoch % WINDOW_BUCKETS
        if self._epochs[slot] != epoch:  # the slot last held a bucket that has left the window
            self._epochs[slot] = epoch
            self._firsts[slot] = 0
            self._seconds[slot] = 0
        self._firsts[slot] += first
        self._seconds[slot] += second

    def totals(self, now: float) -> tuple[int, int]:
        newest = int(now // self._width)
        oldest = newest - WINDOW_BUCKETS + 1
        firsts = seconds = 0
        for slot, epoch in enumerate(self._epochs):
            if oldest <= epoch <= newest:
                firsts += self._firsts[slot]
                seconds += self._seconds[slot]
        return firsts, seconds


class AdaptiveThrottle:
    """Refuse requests locally while the server refuses them (Google SRE book, ch. 21).

    Over the window it counts ``requests`` (what the application asked for, including
    requests refused here) and ``accepts`` (requests the server did not refuse for
    overload), and refuses with probability ``max(0, (requests - k * accepts) /
    (requests + 1))``. With ``k = 2`` the server keeps seeing about twice what it
    accepts, enough to notice when it recovers; the probability never reaches 1.
    """

    __slots__ = ("_counts", "k")

    def __init__(self, window: float, k: float) -> None:
        self.k = k
        self._counts = WindowCounts(window)

    def rejection_probability(self, now: float) -> float:
        requests, accepts = self._counts.totals(now)
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def admit(self, now: float, random: Random) -> bool:
        """Whether to send a new request; a refusal is counted as a request not accepted."""
        if self.allows_retry(now, random):
            return True
        self._counts.add(now, first=1)
        return False

    def allows_retry(self, now: float, random: Random) -> bool:
        """The same draw for a retry, which counts nothing: its request is counted once,
        with its final outcome."""
        probability = self.rejection_probability(now)
        return probability <= 0 or random() >= probability

    def record(self, now: float, *, accepted: bool) -> None:
        """Count a request that was sent, with its final outcome."""
        self._counts.add(now, first=1, second=int(accepted))


class RetryBudget:
    """Retries may be at most ``ratio`` of requests over the window, plus ``min_retries``.

    The floor lets a quiet client retry its occasional failure; the ratio keeps a
    busy one from multiplying the load on a server that is failing.
    """

    __slots__ = ("_counts", "min_retries", "ratio")

    def __init__(self, window: float, ratio: float, min_retries: int) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self._counts = WindowCounts(window)

    def record_request(self, now: float) -> None:
        self._counts.add(now, first=1)

    def try_spend(self, now: float) -> bool:
        """Take one retry from the budget; ``False`` (and nothing taken) when it is spent."""
        requests, retries = self._counts.totals(now)
        if retries + 1 > self.ratio * requests + self.min_retries:
            return False
        self._counts.add(now, second=1)
        return True
