"""The live sliding window of one capability: rotating time buckets of latency sketches.

A window of ``window_seconds`` is cut into ``buckets`` buckets of equal width,
aligned on the clock (bucket ``k`` covers ``[k*width, (k+1)*width)``). Only
the open bucket is written: it holds a sketch of latencies
(:class:`~sloguard.slo.sketch.LiveSketch`) and a count of errors. Buckets
rotate lazily, when a write or a read finds the clock in a later bucket, so
there is no background task. A bucket that closes is frozen
(:class:`~sloguard.slo.sketch.FrozenBucket`); the window's quantiles are the
ones a single DDSketch of every latency in it would give.

A window is one object for CPython's cyclic garbage collector to walk, with its
open sketch: the closed buckets are plain ``bytes`` in a tuple, which the
collector stops tracking at its next pass (docs/slo.md, "The garbage collector").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sloguard.slo.sketch import (
    DEFAULT_RELATIVE_ACCURACY,
    FrozenBucket,
    KeyMapping,
    LiveSketch,
    latency_mapping,
)

__all__ = [
    "DEFAULT_RELATIVE_ACCURACY",
    "BucketClosed",
    "FrozenBucket",
    "LatencyWindow",
    "WindowSnapshot",
    "invalid_latency",
    "latency_mapping",
]

BucketClosed = Callable[[float, int, int], None]
"""Called with ``(bucket_start_s, requests, errors)`` when a bucket stops being written."""

_QUANTILES = (0.50, 0.95, 0.99)


def invalid_latency(latency_s: float) -> ValueError:
    """The error for a latency that is NaN, infinite or negative."""
    return ValueError(f"latency_s must be a finite number of seconds >= 0, got {latency_s!r}")


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """What a window holds at one instant; latencies in seconds, None when empty."""

    requests: int
    errors: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None

    @property
    def availability(self) -> float | None:
        """The fraction of requests that succeeded; None with no requests."""
        if not self.requests:
            return None
        return 1.0 - self.errors / self.requests


class LatencyWindow:
    """Latencies and outcomes of one capability over the last ``window_seconds``.

    ``add`` never awaits, so on one event loop each call is atomic and no lock
    is needed. Every read sees every latency added.
    """

    __slots__ = ("_closed", "_epoch", "_errors", "_merged", "_n", "_on_close", "_open", "_width")

    def __init__(
        self,
        mapping: KeyMapping,
        *,
        window_seconds: float = 60.0,
        buckets: int = 12,
        on_close: BucketClosed | None = None,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets!r}")
        self._width = window_seconds / buckets
        self._n = buckets
        self._on_close = on_close
        # The open bucket: its index (None while no bucket is open), latencies and errors.
        self._epoch: float | None = None
        self._open = LiveSketch(mapping)
        self._errors = 0
        # Frozen buckets, oldest first: a tuple of bytes, so the collector does not track it.
        self._closed: tuple[bytes, ...] = ()
        # The closed buckets merged, as of the bucket index in its header; None after a rotation.
        self._merged: bytes | None = None

    @property
    def bucket_seconds(self) -> float:
        """The width of one bucket: the window slides by this much at a time."""
        return self._width

    def add(self, latency_s: float, ok: bool, now: float) -> None:
        """Record one request that took ``latency_s`` and succeeded or not, at ``now``.

        Raises ValueError if ``latency_s`` is NaN, infinite or negative.
        """
        if not 0.0 <= latency_s < math.inf:  # NaN fails every comparison
            raise invalid_latency(latency_s)
        epoch = now // self._width
        if epoch != self._epoch:
            self._close()
            self._epoch = epoch
        self._open.add(latency_s)
        if not ok:
            self._errors += 1

    def roll(self, now: float) -> None:
        """Close the open bucket if ``now`` is past it (reports it to ``on_close``)."""
        if self._epoch is not None and self._epoch != now // self._width:
            self._close()

    def closed_buckets(self, now: float, *, after: float | None = None) -> list[FrozenBucket]:
        """The closed buckets still held, oldest first, after closing the open one if
        ``now`` is past it; bucket ``b`` started at ``b.epoch * bucket_seconds``. With
        ``after``, only those that started after ``after`` seconds."""
        self.roll(now)
        closed = self._closed
        if after is not None:
            new = len(closed)
            while new and FrozenBucket.epoch_of(closed[new - 1]) * self._width > after:
                new -= 1
            closed = closed[new:]
        return [FrozenBucket(bucket) for bucket in closed]

    def open_bucket(self) -> tuple[float, int, int]:
        """``(start_s, requests, errors)`` of the open bucket, not yet reported to ``on_close``."""
        if self._epoch is None:
            return 0.0, 0, 0
        return self._epoch * self._width, self._open.count, self._errors

    def snapshot(self, now: float) -> WindowSnapshot:
        """Quantiles and counts over the window ending at ``now``."""
        self.roll(now)
        epoch = now // self._width
        merged = self._merged
        if merged is None or FrozenBucket.epoch_of(merged) != epoch:
            self._drop_older_than(epoch - self._n)
            merged = self._merged = bytes(FrozenBucket.merge(epoch, self._closed))
        p50, p95, p99 = self._open.quantiles(_QUANTILES, merged)
        _, requests, errors = FrozenBucket.header_of(merged)
        return WindowSnapshot(
            requests=requests + self._open.count,
            errors=errors + self._errors,
            p50_s=p50,
            p95_s=p95,
            p99_s=p99,
        )

    def _close(self) -> None:
        """Freeze the open bucket, if it has requests, and report it to ``on_close``."""
        if self._epoch is None:
            return
        epoch, requests, errors = self._epoch, self._open.count, self._errors
        if requests:
            self._closed += (bytes(self._open.drain(epoch=epoch, errors=errors)),)
            self._drop_older_than(epoch - self._n)
            if self._on_close is not None:
                self._on_close(epoch * self._width, requests, errors)
        self._epoch = None
        self._errors = 0
        self._merged = None

    def _drop_older_than(self, oldest: float) -> None:
        """Forget closed buckets at or before epoch ``oldest``: they have left the window."""
        closed = self._closed
        stale = 0
        while stale < len(closed) and FrozenBucket.epoch_of(closed[stale]) <= oldest:
            stale += 1
        if stale:
            self._closed = closed[stale:]
