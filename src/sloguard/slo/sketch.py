"""DDSketch for latency windows: the only module that touches ddsketch.

DDSketch (Datadog) has a relative-accuracy guarantee: every quantile it
reports is within ``relative_accuracy`` of the exact one, and merging sketches
built on one mapping keeps that guarantee. Latencies are never negative, so a
window's open bucket is a :class:`LiveSketch`: the bins of a DDSketch's store
of positive values (its keys, with their counts), values too small for a bin
counting as zeros. A bucket that closes is never written again, so it is frozen
into a :class:`FrozenBucket`: the non-empty bins packed into one ``bytes``, over
ten times smaller than the sketch. Frozen buckets merge bin by bin, exactly as
the sketches would, so quantiles over a window are the ones the merged sketches
would give.

Windows hold their frozen buckets as plain ``bytes`` in the same format, and the
open bucket's bins in a dict of ints: CPython's cyclic garbage collector tracks
every instance of a Python class (and every list), but no ``bytes`` and no dict
of ints, so 10,000 windows add little to what each full collection walks.

Of ddsketch (pyproject.toml pins the range this was tested with), this uses
``LogarithmicMapping`` and the documented attributes of ``DenseStore`` (its bins,
offset, key range and count; to freeze a store the tests build as a reference).
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate, compress
from typing import NamedTuple, TypeAlias, TypeVar

from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

DEFAULT_RELATIVE_ACCURACY = 0.01

KeyMapping: TypeAlias = LogarithmicMapping
"""Turns latencies into bin keys and keys back into latencies."""

_CHUNK = 32  # the bins a store grows by
_Count = TypeVar("_Count", int, float)


def latency_mapping(relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> KeyMapping:
    """The key mapping shared by every sketch of a manager (sketches merge only if it is one)."""
    return LogarithmicMapping(relative_accuracy)


class LiveSketch:
    """The latencies of a window's open bucket: a DDSketch's store of positive values.

    ``add`` never awaits, so on one event loop each call is atomic.
    """

    __slots__ = ("_bins", "_mapping", "_zeros")

    def __init__(self, mapping: KeyMapping) -> None:
        self._mapping = mapping
        # Key -> count, the store's non-empty bins: ints only, so the collector never tracks it.
        self._bins: dict[int, int] = {}
        self._zeros = 0

    @property
    def count(self) -> int:
        """The latencies added since the sketch started or was last drained."""
        return sum(self._bins.values()) + self._zeros

    def add(self, latency_s: float) -> None:
        """Add one latency, in seconds (finite and not negative: the caller checks)."""
        mapping = self._mapping
        if latency_s > mapping.min_possible:
            key = mapping.key(latency_s)
            bins = self._bins
            bins[key] = bins.get(key, 0) + 1
        else:
            self._zeros += 1

    def drain(self, *, epoch: float, errors: int) -> FrozenBucket:
        """Freeze the latencies added so far into a bucket, and start empty again."""
        bins, zeros = self._bins, self._zeros
        keys = sorted(bins)
        first_key = keys[0] if keys else 0
        frozen = FrozenBucket._pack(
            epoch,
            sum(bins.values()) + zeros,
            errors,
            zeros,
            first_key,
            [key - first_key for key in keys],
            [bins[key] for key in keys],
        )
        bins.clear()
        self._zeros = 0
        return frozen

    def quantiles(self, qs: Sequence[float], closed: bytes) -> tuple[float | None, ...]:
        """The latency at each quantile of ``qs`` over the latencies added and those of
        ``closed`` (a frozen bucket), as one DDSketch of them all would give it; None
        each with none.

        The bins are added into the closed ones' rather than frozen and merged: several
        times cheaper, and a window's status reads them every time.
        """
        part = _unpack(closed)
        bins = self._bins
        ranges = [r for r in (part.key_range(),) if r is not None]
        if bins:
            ranges.append((min(bins), max(bins)))
        low = min((low for low, _ in ranges), default=0)
        high = max((high for _, high in ranges), default=low - 1)
        counts = [0] * (high - low + 1)
        for key, count in bins.items():
            counts[key - low] = count
        part.add_into(counts, low)
        return _quantiles(
            qs,
            self._mapping,
            part.requests + self.count,
            part.zeros + self._zeros,
            range(low, high + 1),
            counts,
        )


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
    give exactly what the live sketches would. Any ``bytes`` in this format is a
    frozen bucket: :meth:`merge` and :meth:`LiveSketch.quantiles`
    take plain ``bytes`` and :meth:`header_of` reads one: the collector tracks no
    ``bytes``, but every instance of a class.
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
    def merge(cls, epoch: float, buckets: Iterable[bytes]) -> FrozenBucket:
        """One bucket holding the requests, errors and latencies of all of ``buckets``."""
        parts = [_unpack(bucket) for bucket in buckets]
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

    @staticmethod
    def header_of(bucket: bytes) -> tuple[int, int, int]:
        """``(epoch, requests, errors)`` of ``bucket``, a frozen bucket as plain ``bytes``."""
        epoch, requests, errors = _HEADER.unpack_from(bucket)[:3]
        return epoch, requests, errors

    @staticmethod
    def epoch_of(bucket: bytes) -> int:
        """The index of ``bucket``, a frozen bucket as plain ``bytes`` (see :attr:`epoch`)."""
        epoch: int = _HEADER.unpack_from(bucket)[0]
        return epoch

    @property
    def epoch(self) -> int:
        """The bucket's index: it started at ``epoch * bucket_seconds``."""
        return self.epoch_of(self)

    @property
    def requests(self) -> int:
        """Requests in the bucket: one latency each."""
        return self.header_of(self)[1]

    @property
    def errors(self) -> int:
        """Requests in the bucket that failed."""
        return self.header_of(self)[2]

    def quantiles(self, qs: Sequence[float], mapping: KeyMapping) -> tuple[float | None, ...]:
        """The latency at each quantile of ``qs``, exactly as the bucket's DDSketch would
        give it (``get_quantile_value``); None each when the bucket is empty."""
        part = _unpack(self)
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


def _unpack(bucket: bytes) -> _Unpacked:
    """The fields of a frozen bucket (a :class:`FrozenBucket` or plain ``bytes``)."""
    epoch, requests, errors, zeros, first_key, key_code, count_code = _HEADER.unpack_from(bucket)
    key_type, count_type = key_code.decode(), count_code.decode()
    body = memoryview(bucket)[_HEADER.size :]
    key_size = array(key_type).itemsize
    split = len(body) // (key_size + array(count_type).itemsize) * key_size
    offsets, counts = body[:split].cast(key_type), body[split:].cast(count_type)
    return _Unpacked(epoch, requests, errors, zeros, first_key, offsets, counts)


def _quantiles(
    qs: Sequence[float],
    mapping: KeyMapping,
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
