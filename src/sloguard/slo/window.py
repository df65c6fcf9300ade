"""The live sliding window of one capability: rotating time buckets of latency sketches.

A window of ``window_seconds`` is cut into ``buckets`` buckets of equal width,
aligned on the clock (bucket ``k`` covers ``[k*width, (k+1)*width)``). Only
the open bucket is written: it holds a DDSketch of latencies and counts of
requests and errors. Buckets rotate lazily, when a write or a read finds the
clock in a later bucket, so there is no background task.

DDSketch (Datadog) has a relative-accuracy guarantee: every quantile it
reports is within ``relative_accuracy`` of the exact one, and merging sketches
built on one mapping keeps that guarantee. A bucket that closes is never
written again, so it is frozen into a :class:`FrozenBucket`: the sketch's
non-empty bins packed into one ``bytes``, over ten times smaller than the sketch.
Frozen buckets merge bin by bin, exactly as the sketches would, so quantiles
over the window are the ones the merged sketches would give.
"""

from __future__ import annotations

import math
import struct
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress
from typing import NamedTuple, TypeVar

from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

DEFAULT_RELATIVE_ACCURACY = 0.01

BucketClosed = Callable[[float, int, int], None]
"""Called with ``(bucket_start_s, requests, errors)`` when a bucket stops being written."""

_NO_BUCKET = -math.inf
_INF = math.inf
_ceil = math.ceil
_log = math.log
_CHUNK = 32
_BATCH = 128  # latencies binned at a time (see LatencyWindow)
_QUANTILES = (0.50, 0.95, 0.99)
_Count = TypeVar("_Count", int, float)


def latency_mapping(relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> LogarithmicMapping:
    """The key mapping shared by every sketch of a manager (sketches merge only if it is one)."""
    return LogarithmicMapping(relative_accuracy)


# Stands in while no bucket is open; never written, since add() opens a bucket first.
_NO_STORE = DenseStore(_CHUNK)


class _KeyOf(NamedTuple):
    """What :meth:`LatencyWindow.add` needs of a mapping to compute a value's bin key inline.

    ``key(v) = int(ceil(log2(v) * multiplier) + offset)`` for ``v > min_possible``,
    exactly ``LogarithmicMapping.key`` (tests check it on every value they draw):
    a sketch's ``add`` goes through five Python calls to do the same.
    """

    multiplier: float
    offset: float
    min_possible: float


def _key_of(mapping: LogarithmicMapping) -> _KeyOf:
    return _KeyOf(mapping._multiplier, mapping._offset, mapping.min_possible)


def invalid_latency(latency_s: float) -> ValueError:
    """The error for a latency that is NaN, infinite or negative."""
    return ValueError(f"latency_s must be a finite number of seconds >= 0, got {latency_s!r}")


# A frozen bucket starts with: bucket index (epoch), requests, errors, zero latencies,
# first key, then the typecodes of the key offsets and of the counts that follow.
_HEADER = struct.Struct("=qqqqqcc6x")
_TYPECODES = tuple((code, 1 << (8 * array(code).itemsize)) for code in "BHIQ")


def _narrowest(largest: int) -> str:
    """The smallest unsigned array typecode that holds ``largest``."""
    for code, limit in _TYPECODES:
        if largest < limit:
            return code
    raise OverflowError(f"{largest} does not fit in 64 bits")


class FrozenBucket(bytes):
    """A closed bucket, packed: its counts and the non-empty bins of its latency sketch.

    After a 48-byte header come the non-empty bins as two arrays: each key's
    offset from the first key, then its count, each in the narrowest unsigned
    type (1, 2, 4 or 8 bytes) that holds the largest. A bucket of 10 requests
    takes ~120 B where its live DDSketch took ~1.8 KB. Quantiles and merges
    give exactly what the live sketches would.
    """

    __slots__ = ()

    @classmethod
    def freeze(cls, store: DenseStore, *, epoch: float, requests: int, errors: int) -> FrozenBucket:
        """Pack a bucket of ``requests`` latencies: those above zero are in ``store``."""
        if not store.count:
            return cls._pack(epoch, requests, errors, requests, 0, [], [])
        bins = _live_bins(store)
        offsets = list(compress(range(len(bins)), bins))
        counts = [int(count) for count in compress(bins, bins)]
        zeros = requests - sum(counts)
        return cls._pack(epoch, requests, errors, zeros, store.min_key, offsets, counts)

    @classmethod
    def merge(cls, epoch: float, buckets: Iterable[FrozenBucket]) -> FrozenBucket:
        """One bucket holding the requests, errors and latencies of all of ``buckets``."""
        parts = [bucket._unpack() for bucket in buckets]
        ranges = [r for r in (part.key_range() for part in parts) if r is not None]
        first_key = min((low for low, _ in ranges), default=0)
        dense = [0] * (max((high for _, high in ranges), default=first_key - 1) - first_key + 1)
        for part in parts:
            part.add_into(dense, first_key)
        return cls._pack(
            epoch,
            sum(p.requests for p in parts),
            sum(p.errors for p in parts),
            sum(p.zeros for p in parts),
            first_key,
            list(compress(range(len(dense)), dense)),
            list(compress(dense, dense)),
        )

    @property
    def epoch(self) -> int:
        """The bucket's index: it started at ``epoch * bucket_seconds``."""
        epoch: int = _HEADER.unpack_from(self)[0]
        return epoch

    @property
    def requests(self) -> int:
        """Requests in the bucket: one latency each."""
        requests: int = _HEADER.unpack_from(self)[1]
        return requests

    @property
    def errors(self) -> int:
        """Requests in the bucket that failed."""
        errors: int = _HEADER.unpack_from(self)[2]
        return errors

    def quantiles(
        self, qs: Sequence[float], mapping: LogarithmicMapping
    ) -> tuple[float | None, ...]:
        """The latency at each quantile of ``qs``, exactly as the bucket's DDSketch would
        give it (``get_quantile_value``); None each when the bucket is empty."""
        part = self._unpack()
        keys = [part.first_key + offset for offset in part.offsets]
        return _quantiles(qs, mapping, part.requests, part.zeros, keys, part.counts)

    @classmethod
    def _pack(
        cls,
        epoch: float,
        requests: int,
        errors: int,
        zeros: int,
        first_key: int,
        offsets: list[int],
        counts: list[int],
    ) -> FrozenBucket:
        key_code = _narrowest(offsets[-1] if offsets else 0)
        count_code = _narrowest(max(counts, default=0))
        header = _HEADER.pack(
            int(epoch), requests, errors, zeros, first_key, key_code.encode(), count_code.encode()
        )
        return cls(
            header + array(key_code, offsets).tobytes() + array(count_code, counts).tobytes()
        )

    def _unpack(self) -> _Unpacked:
        epoch, requests, errors, zeros, first_key, key_code, count_code = _HEADER.unpack_from(self)
        key_type, count_type = key_code.decode(), count_code.decode()
        body = memoryview(self)[_HEADER.size :]
        key_size = array(key_type).itemsize
        split = len(body) // (key_size + array(count_type).itemsize) * key_size
        offsets, counts = body[:split].cast(key_type), body[split:].cast(count_type)
        return _Unpacked(epoch, requests, errors, zeros, first_key, offsets, counts)


class _Unpacked(NamedTuple):
    """A frozen bucket's fields; ``counts[i]`` latencies had key ``first_key + offsets[i]``."""

    epoch: int
    requests: int
    errors: int
    zeros: int
    first_key: int
    offsets: memoryview
    counts: memoryview

    def key_range(self) -> tuple[int, int] | None:
        """The lowest and highest key with a count; None when no latency is above zero."""
        if not self.offsets:
            return None
        return self.first_key, self.first_key + self.offsets[-1]

    def add_into(self, dense: list[_Count], first_key: int) -> None:
        """Add the counts into ``dense``, where ``dense[i]`` counts key ``first_key + i``."""
        shift = self.first_key - first_key
        for offset, count in zip(self.offsets, self.counts, strict=True):
            dense[shift + offset] += count


def _quantiles(
    qs: Sequence[float],
    mapping: LogarithmicMapping,
    requests: int,
    zeros: float,
    keys: Sequence[int],
    counts: Iterable[float],
) -> tuple[float | None, ...]:
    """DDSketch's ``get_quantile_value`` for each of ``qs``, over ``requests`` latencies:
    ``zeros`` of them zero, the others ``counts[i]`` at each of ``keys`` (increasing)."""
    if not requests:
        return (None,) * len(qs)
    cumulative = list(accumulate(counts))
    out: list[float | None] = []
    for q in qs:
        rank = q * (requests - 1)
        if rank < zeros:
            out.append(0.0)
        else:
            # DDSketch's key_at_rank: the first bin whose running count exceeds the rank.
            out.append(mapping.value(keys[bisect_right(cumulative, rank - zeros)]))
    return tuple(out)


def _live_bins(store: DenseStore) -> list[float]:
    """The bins of a live store from its lowest key with a count to its highest."""
    return store.bins[store.min_key - store.offset : store.max_key - store.offset + 1]


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

    ``add`` is the hot path: a range check, one division, one comparison, an
    append and a counter or two. The latencies are binned ``_BATCH`` at a time,
    and before anything reads the open bucket: inside a request, where little
    of this code is in the CPU's caches, one sample binned on its own cost
    ~1 µs more than its share of a batch (benchmarks/RESULTS.md, session 7).
    Every read sees every latency added. ``add`` never awaits, so on one event
    loop each call is atomic and no lock is needed. The open bucket is the
    positive-value store of a DDSketch, written directly (latencies are never
    negative, and values too small for a bin count as zeros).
    """

    __slots__ = (
        "_closed",
        "_epoch",
        "_errors",
        "_key",
        "_mapping",
        "_merged",
        "_n",
        "_on_close",
        "_pending",
        "_requests",
        "_store",
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
        self._key = _key_of(mapping)
        self._width = window_seconds / buckets
        self._n = buckets
        self._on_close = on_close
        self._epoch = _NO_BUCKET
        self._store = _NO_STORE
        self._pending: list[float] = []
        self._requests = 0
        self._errors = 0
        # A list, not a deque: it holds at most `buckets` entries, and an empty deque is ~600 B.
        self._closed: list[FrozenBucket] = []
        # The closed buckets merged, as of the bucket index in its header; None after a rotation.
        self._merged: FrozenBucket | None = None

    @property
    def bucket_seconds(self) -> float:
        """The width of one bucket: the window slides by this much at a time."""
        return self._width

    def add(self, latency_s: float, ok: bool, now: float) -> None:
        """Record one request that took ``latency_s`` and succeeded or not, at ``now``.

        Raises ValueError if ``latency_s`` is NaN, infinite or negative.
        """
        if not 0.0 <= latency_s < _INF:  # NaN fails every comparison
            raise invalid_latency(latency_s)
        epoch = now // self._width
        if epoch != self._epoch:
            self._open(epoch)
        pending = self._pending
        pending.append(latency_s)
        if len(pending) >= _BATCH:
            self._fold()
        self._requests += 1
        if not ok:
            self._errors += 1

    def _fold(self) -> None:
        """Add the latencies recorded since the last fold into the open bucket's sketch."""
        multiplier, offset, min_possible = self._key
        store = self._store
        bins, low, high = store.bins, store.min_key, store.max_key
        for latency_s in self._pending:
            if latency_s > min_possible:
                key = int(_ceil(_log(latency_s, 2) * multiplier) + offset)
                if low <= key <= high:
                    bins[key - store.offset] += 1.0
                    store.count += 1.0
                else:
                    store.add(key)  # grows the bins to reach the key
                    bins, low, high = store.bins, store.min_key, store.max_key
        self._pending.clear()

    def roll(self, now: float) -> None:
        """Close the open bucket if ``now`` is past it (reports it to ``on_close``)."""
        if self._epoch != _NO_BUCKET and self._epoch != now // self._width:
            self._close()

    def closed_buckets(self, now: float) -> list[FrozenBucket]:
        """The closed buckets still held, oldest first, after closing the open one if
        ``now`` is past it; bucket ``b`` started at ``b.epoch * bucket_seconds``."""
        self.roll(now)
        return list(self._closed)

    def open_bucket(self) -> tuple[float, int, int]:
        """``(start_s, requests, errors)`` of the open bucket, not yet reported to ``on_close``."""
        if self._epoch == _NO_BUCKET:
            return 0.0, 0, 0
        return self._epoch * self._width, self._requests, self._errors

    def snapshot(self, now: float) -> WindowSnapshot:
        """Quantiles and counts over the window ending at ``now``."""
        self.roll(now)
        epoch = now // self._width
        merged = self._merged
        if merged is None or merged.epoch != epoch:
            self._drop_older_than(epoch - self._n)
            merged = self._merged = FrozenBucket.merge(epoch, self._closed)
        closed = merged._unpack()
        requests = closed.requests + self._requests
        p50, p95, p99 = _quantiles(_QUANTILES, self._mapping, requests, *self._bins_with(closed))
        return WindowSnapshot(
            requests=requests, errors=closed.errors + self._errors, p50_s=p50, p95_s=p95, p99_s=p99
        )

    def _bins_with(self, closed: _Unpacked) -> tuple[float, range, list[float]]:
        """``(zeros, keys, counts)`` of the open bucket and ``closed`` together.

        The open bucket's bins are copied in whole rather than frozen and merged:
        several times cheaper, and a status reads it every time.
        """
        self._fold()
        store = self._store
        ranges = [r for r in (closed.key_range(),) if r is not None]
        if store.count:
            ranges.append((store.min_key, store.max_key))
        low = min((low for low, _ in ranges), default=0)
        high = max((high for _, high in ranges), default=low - 1)
        counts = [0.0] * (high - low + 1)
        if store.count:
            counts[store.min_key - low : store.max_key - low + 1] = _live_bins(store)
        closed.add_into(counts, low)
        zeros = closed.zeros + self._requests - store.count
        return zeros, range(low, high + 1), counts

    def _open(self, epoch: float) -> None:
        if self._epoch != _NO_BUCKET:
            self._close()
        self._epoch = epoch
        self._store = DenseStore(_CHUNK)

    def _freeze_open(self) -> FrozenBucket:
        self._fold()
        return FrozenBucket.freeze(
            self._store, epoch=self._epoch, requests=self._requests, errors=self._errors
        )

    def _close(self) -> None:
        if self._requests:
            closed = self._closed
            closed.append(self._freeze_open())
            if closed[0].epoch <= self._epoch - self._n:
                self._drop_older_than(self._epoch - self._n)
            if self._on_close is not None:
                self._on_close(self._epoch * self._width, self._requests, self._errors)
        self._epoch = _NO_BUCKET
        self._store = _NO_STORE
        self._requests = 0
        self._errors = 0
        self._merged = None

    def _drop_older_than(self, oldest: float) -> None:
        """Forget closed buckets at or before epoch ``oldest``: they have left the window."""
        closed = self._closed
        stale = 0
        while stale < len(closed) and closed[stale].epoch <= oldest:
            stale += 1
        del closed[:stale]
