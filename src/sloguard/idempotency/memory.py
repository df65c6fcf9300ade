"""An in-process idempotency store: LRU + TTL over completed responses, bounded three ways."""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque

from sloguard._clock import Clock, monotonic
from sloguard.exceptions import ConfigurationError
from sloguard.idempotency.store import (
    CLAIMED,
    COMPLETED,
    IN_FLIGHT,
    Claim,
    Headers,
    StoredResponse,
)

DEFAULT_TTL_SECONDS = 86_400.0
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_Entry = tuple[float, int, str, bytes, int, Headers, bytes]
"""A stored response: the time it expires, its size in bytes, its key, then the
fields of the ``StoredResponse`` (fingerprint, status, headers, body). The same
tuple is queued for expiry, and the queue tells a live response from a replaced
one by identity.

One plain tuple of plain values per response, and no ``StoredResponse`` kept: the
garbage collector stops tracking such a tuple the first time it sees it, while a
tuple subclass (a named tuple) stays tracked, and every full collection would
walk each stored response again (benchmarks/gc_pause.py)."""

_Lease = tuple[int, bytes, float]
"""An in-flight claim: its fencing token, the request's fingerprint, its expiry."""

_COMPACT_SLACK = 1024
_new = tuple.__new__  # a named tuple without its Python-level constructor (hot path)


class MemoryStore:
    """Completed responses in an LRU-ordered dict; in-flight leases beside it.

    Bounds: a response is never served more than ``ttl_seconds`` after it was
    stored, and expired responses are dropped as newer ones arrive; past
    ``max_entries`` responses or ``max_bytes`` of them (headers and body, plus a
    small per-entry overhead) the least recently used are evicted. A response
    larger than ``max_bytes`` on its own is not stored.

    Every response lives for the same TTL, so storing order is expiry order and
    a FIFO of expiry times finds the expired ones without scanning. The LRU order
    is an ``OrderedDict``'s, whose operations are single C calls: through a real
    server, ``cachetools.LRUCache`` (four Python-level calls per stored response)
    cost a keyed miss ~3.5 µs more (benchmarks/RESULTS.md, session 5).

    One instance serves one process (one event loop at a time); its operations
    never await, so each is atomic with respect to other requests. Use
    ``RedisStore`` to share keys between processes or hosts.
    """

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        clock: Clock = monotonic,
    ) -> None:
        if ttl_seconds <= 0:
            raise ConfigurationError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        if max_entries < 1:
            raise ConfigurationError(f"max_entries must be at least 1, got {max_entries!r}")
        if max_bytes < 1:
            raise ConfigurationError(f"max_bytes must be at least 1, got {max_bytes!r}")
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._responses: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._nbytes = 0  # the sizes of the entries in _responses
        self._expiries: deque[_Entry] = deque()
        self._compact_at = _COMPACT_SLACK
        self._leases: dict[str, _Lease] = {}
        self._waiters: dict[str, asyncio.Event] = {}  # only for keys somebody waits on
        self._tokens = itertools.count(1)
        self._sweep_leases_at = 1024

    def __len__(self) -> int:
        """The number of stored, unexpired responses."""
        self._expire(self._clock())
        return len(self._responses)

    @property
    def nbytes(self) -> int:
        """Approximate bytes held by stored, unexpired responses."""
        self._expire(self._clock())
        return self._nbytes

    @property
    def in_flight(self) -> int:
        """The number of unexpired leases."""
        now = self._clock()
        return sum(1 for lease in self._leases.values() if lease[2] > now)

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        return self.claim_nowait(key, fingerprint, lease_seconds)

    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        return self.complete_nowait(key, token, response)

    async def release(self, key: str, token: int) -> None:
        self._end_lease(key, token)

    # The operations themselves: none of them waits, so the middleware calls them
    # directly (see `nowait_store`), saving a coroutine per call.

    def claim_nowait(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        """:meth:`claim`, as a plain call."""
        now = self._clock()
        responses = self._responses
        entry = responses.get(key)
        if entry is not None:
            if entry[0] > now:
                responses.move_to_end(key)
                response = _new(StoredResponse, entry[3:])
                return Claim(COMPLETED, 0, response.fingerprint, response)
            del responses[key]
            self._nbytes -= entry[1]
        lease = self._leases.get(key)
        if lease is not None:
            if lease[2] > now:
                return Claim(IN_FLIGHT, 0, lease[1])
            self._wake(key)  # its holder is presumed dead; wake anyone waiting on it
        token = next(self._tokens)
        leases = self._leases
        leases[key] = (token, fingerprint, now + lease_seconds)
        if len(leases) >= self._sweep_leases_at:
            self._sweep_expired_leases(now)
        return _new(Claim, (CLAIMED, token, fingerprint, None))

    def complete_nowait(
        self, key: str, token: int, response: StoredResponse, nbytes: int | None = None
    ) -> bool:
        """:meth:`complete`, as a plain call; ``nbytes``, when given, is ``response.nbytes``
        counted by the caller."""
        if not self._end_lease(key, token):
            return False  # the lease was taken over (or released) meanwhile
        size = response.nbytes if nbytes is None else nbytes
        if size > self.max_bytes:
            return False
        now = self._clock()
        responses = self._responses
        # The key is free: a claim deletes an expired response, and a stored one is
        # replayed rather than claimed. So the entry goes in last, most recently used.
        entry = (now + self.ttl_seconds, size, key, *response)
        responses[key] = entry
        self._nbytes += size
        if len(responses) > self.max_entries or self._nbytes > self.max_bytes:
            self._evict()
        expiries = self._expiries
        expiries.append(entry)
        if expiries[0][0] <= now or len(expiries) > self._compact_at:
            self._expire(now)
        return True

    async def wait(self, key: str) -> None:
        lease = self._leases.get(key)
        if lease is None or lease[2] <= self._clock():
            return
        ended = self._waiters.get(key)
        if ended is None:
            ended = self._waiters[key] = asyncio.Event()
        await ended.wait()

    def clear(self) -> None:
        """Forget every response and lease."""
        self._responses.clear()
        self._nbytes = 0
        self._expiries.clear()
        self._compact_at = _COMPACT_SLACK
        self._leases.clear()
        for ended in self._waiters.values():
            ended.set()
        self._waiters.clear()

    def _end_lease(self, key: str, token: int) -> bool:
        """End our own lease on ``key``; False if it is not ours (any more)."""
        lease = self._leases.get(key)
        if lease is None or lease[0] != token:
            return False
        del self._leases[key]
        if self._waiters:
            self._wake(key)
        return True

    def _wake(self, key: str) -> None:
        ended = self._waiters.pop(key, None)
        if ended is not None:
            ended.set()

    def _evict(self) -> None:
        """Drop least recently used responses until both bounds hold."""
        responses = self._responses
        while len(responses) > self.max_entries or self._nbytes > self.max_bytes:
            self._nbytes -= responses.popitem(last=False)[1][1]

    def _expire(self, now: float) -> None:
        expiries = self._expiries
        responses = self._responses
        while expiries and expiries[0][0] <= now:
            entry = expiries.popleft()
            key = entry[2]
            if responses.get(key) is entry:  # not evicted, nor stored anew since
                del responses[key]
                self._nbytes -= entry[1]
        # Entries of responses that LRU eviction dropped linger until they expire;
        # compacting when they outnumber the live ones twice over keeps the queue
        # within 2x (+ slack). The count is checked only past a threshold, which
        # doubles with the live entries, so the check is amortised O(1).
        if len(expiries) > self._compact_at:
            live = len(responses)
            if len(expiries) > 2 * live + _COMPACT_SLACK:
                self._expiries = deque(
                    entry for entry in expiries if responses.get(entry[2]) is entry
                )
            self._compact_at = 2 * live + _COMPACT_SLACK

    def _sweep_expired_leases(self, now: float) -> None:
        expired = [key for key, lease in self._leases.items() if lease[2] <= now]
        for key in expired:
            del self._leases[key]
            self._wake(key)
        self._sweep_leases_at = max(1024, 2 * len(self._leases))


def nowait_store(store: object) -> MemoryStore | None:
    """``store`` if its claim and complete can be called without awaiting: a
    ``MemoryStore`` whose async operations are its own (a subclass that overrides
    one is always called through it); otherwise None."""
    if not isinstance(store, MemoryStore):
        return None
    kind = type(store)
    if kind.claim is MemoryStore.claim and kind.complete is MemoryStore.complete:
        return store
    return None
