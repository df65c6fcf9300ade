"""The live sliding window of one capability: rotating time buckets of DDSketches.

A window of ``window_seconds`` is cut into ``buckets`` buckets of equal width,
aligned on the clock (bucket ``k`` covers ``[k*width, (k+1)*width)``). Each
bucket holds a DDSketch of latencies and counts of requests and errors. Only
the open bucket is written; buckets rotate lazily, when a write or a read
finds the clock in a later bucket, so there is no background task.

DDSketch (Datadog) has a relative-accuracy guarantee: every quantile it
reports is within ``relative_accuracy`` of the exact one, and merging sketches
built on one mapping keeps that guarantee. Buckets therefore merge into a
window, and windows of several replicas can be merged too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

DEFAULT_RELATIVE_ACCURACY = 0.01

BucketClosed = Callable[[float, int, int], None]
"""Called with ``(bucket_start_s, requests, errors)`` when a bucket stops being written."""

_NO_BUCKET = -math.inf
_CHUNK = 32


def latency_mapping(relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> LogarithmicMapping:
    """The key mapping shared by every sketch of a manager (sketches merge only if it is one)."""
    return LogarithmicMapping(relative_accuracy)


def new_sketch(mapping: LogarithmicMapping) -> BaseDDSketch:
    """An empty DDSketch on ``mapping``; sharing the mapping saves an object per sketch."""
    # Bins grow 32 at a time, not 128: a bucket with few requests holds ~0.9 KB, not ~1.7 KB.
    return BaseDDSketch(mapping, DenseStore(_CHUNK), DenseStore(_CHUNK), 0.0)


# Stands in while no bucket is open; never written, since add() opens a bucket first.
_NO_SKETCH = new_sketch(latency_mapping())


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

    ``add`` is the hot path: one division, one comparison, one sketch insert and
    a counter or two. It never awaits, so on one event loop each call is atomic
    and no lock is needed.
    """

    __slots__ = (
        "_closed",
        "_epoch",
        "_errors",
        "_mapping",
        "_merged",
        "_merged_epoch",
        "_merged_errors",
        "_merged_requests",
        "_n",
        "_on_close",
        "_requests",
        "_sketch",
        "_width",
    )

    def __init__(
        self,
        mapping: LogarithmicMapping,
        *,
        window_seconds: float = 60.0,
        buckets: int = 12,
        on_close: BucketClosed | None = None,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets!r}")
        self._mapping = mapping
        self._width = window_seconds / buckets
        self._n = buckets
        self._on_close = on_close
        self._epoch = _NO_BUCKET
        self._sketch = _NO_SKETCH
        self._requests = 0
        self._errors = 0
        # A list, not a deque: it holds at most `buckets` entries, and an empty deque is ~600 B.
        self._closed: list[tuple[float, BaseDDSketch, int, int]] = []
        self._merged: BaseDDSketch | None = None
        self._merged_epoch = _NO_BUCKET
        self._merged_requests = 0
        self._merged_errors = 0

    @property
    def bucket_seconds(self) -> float:
        """The width of one bucket: the window slides by this much at a time."""
        return self._width

    def add(self, latency_s: float, ok: bool, now: float) -> None:
        """Record one request that took ``latency_s`` and succeeded or not, at ``now``."""
        epoch = now // self._width
        if epoch != self._epoch:
            self._open(epoch)
        self._sketch.add(latency_s)
        self._requests += 1
        if not ok:
            self._errors += 1

    def roll(self, now: float) -> None:
        """Close the open bucket if ``now`` is past it (reports it to ``on_close``)."""
        if self._epoch != _NO_BUCKET and self._epoch != now // self._width:
            self._close()

    def open_bucket(self) -> tuple[float, int, int]:
        """``(start_s, requests, errors)`` of the open bucket, not yet reported to ``on_close``."""
        if self._epoch == _NO_BUCKET:
            return 0.0, 0, 0
        return self._epoch * self._width, self._requests, self._errors

    def snapshot(self, now: float) -> WindowSnapshot:
        """Quantiles and counts over the window ending at ``now``."""
        self.roll(now)
        epoch = now // self._width
        if self._merged_epoch != epoch:
            self._merge_closed(epoch)
        requests = self._merged_requests + self._requests
        errors = self._merged_errors + self._errors
        merged = self._merged
        assert merged is not None  # set by _merge_closed
        sketch = merged
        if self._requests:
            # Merge into a fresh sketch: the cached one serves until the next rotation.
            sketch = new_sketch(self._mapping)
            sketch.merge(merged)
            sketch.merge(self._sketch)
        return WindowSnapshot(
            requests=requests,
            errors=errors,
            p50_s=sketch.get_quantile_value(0.50),
            p95_s=sketch.get_quantile_value(0.95),
            p99_s=sketch.get_quantile_value(0.99),
        )

    def _open(self, epoch: float) -> None:
        if self._epoch != _NO_BUCKET:
            self._close()
        self._epoch = epoch
        self._sketch = new_sketch(self._mapping)

    def _close(self) -> None:
        if self._requests:
            closed = self._closed
            closed.append((self._epoch, self._sketch, self._requests, self._errors))
            if closed[0][0] <= self._epoch - self._n:
                self._drop_older_than(self._epoch - self._n)
            if self._on_close is not None:
                self._on_close(self._epoch * self._width, self._requests, self._errors)
        self._epoch = _NO_BUCKET
        self._sketch = _NO_SKETCH
        self._requests = 0
        self._errors = 0
        self._merged_epoch = _NO_BUCKET

    def _merge_closed(self, epoch: float) -> None:
        self._drop_older_than(epoch - self._n)
        merged = new_sketch(self._mapping)
        requests = errors = 0
        for _, sketch, bucket_requests, bucket_errors in self._closed:
            merged.merge(sketch)
            requests += bucket_requests
            errors += bucket_errors
        self._merged = merged
        self._merged_requests = requests
        self._merged_errors = errors
        self._merged_epoch = epoch

    def _drop_older_than(self, oldest: float) -> None:
        """Forget closed buckets at or before epoch ``oldest``: they have left the window."""
        closed = self._closed
        stale = 0
        while stale < len(closed) and closed[stale][0] <= oldest:
            stale += 1
        del closed[:stale]
