"""An in-process idempotency store: LRU + TTL over completed responses, bounded three ways,
with a fair share per principal."""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from sys import getsizeof
from typing import Final, NamedTuple

from sloguard._clock import Clock, monotonic
from sloguard.exceptions import ConfigurationError
from sloguard.idempotency.keys import principal_of
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
DEFAULT_PRINCIPAL_SHARE = 0.1

_Entry = tuple[float, int, str, str, bytes, int, Headers, bytes]
"""A stored response: one flat, plain tuple of plain values, its slots named below.

Not a named tuple, nor a slotted class, nor a tuple holding another: the garbage
collector stops tracking a plain tuple of plain values the first time it sees it,
while a tuple subclass or a class instance stays tracked, and every full
collection would walk each stored response again (``benchmarks/gc_pause.py``:
42 ms against 12 ms for 100,000)."""
EXPIRES: Final = 0
"""When the response stops being served (the store's clock)."""
NBYTES: Final = 1
"""What it counts against ``max_bytes``: the response's ``nbytes``, its key and the
store's bookkeeping."""
KEY: Final = 2
PRINCIPAL: Final = 3
"""The principal digest of its key, whose share of the store it counts against."""
RESPONSE: Final = 4
"""The fields of its ``StoredResponse`` fill the slots from here on."""


class _Lease(NamedTuple):
    """An in-flight claim."""

    token: int
    fingerprint: bytes
    expires: float


class _Holdings:
    """One principal's stored responses: their keys, least recently used first, and
    their bytes."""

    __slots__ = ("keys", "nbytes", "principal")

    def __init__(self, principal: str) -> None:
        self.principal = principal
        """The digest, one string for all its entries (a slice of each key would be one each)."""
        self.keys: OrderedDict[str, None] = OrderedDict()
        self.nbytes = PRINCIPAL_OVERHEAD


ENTRY_OVERHEAD = 240
"""Bytes the store's own bookkeeping takes for each response: its entry tuple, expiry
and size, and its places in the LRU order, its principal's order and the expiry order."""
PRINCIPAL_OVERHEAD = 480
"""Bytes the store's bookkeeping takes for each principal holding responses.
Both measured with tracemalloc (docs/idempotency.md, "Bounds")."""
_ASCII_STR = getsizeof("")
_new = tuple.__new__
"""A named tuple without its Python-level constructor: ~1,200 instructions less for
each record built on the request path (callgrind), a claim on every request and a
response on every replay (~2% of a replay's instructions each)."""


class MemoryStore:
    """Completed responses in an LRU-ordered dict; in-flight leases beside it.

    Bounds: a response is never served more than ``ttl_seconds`` after it was
    stored, and expired responses are dropped as newer ones arrive; past
    ``max_entries`` responses or ``max_bytes`` (every byte held: headers, body,
    fingerprint, the key itself, plus a per-entry overhead measured for this
    layout) the least recently used are evicted. A response larger than
    ``max_bytes`` on its own is not stored.

    **Fair share.** A principal (the digest its keys start with) whose responses
    take more than ``principal_share`` of ``max_entries`` or of ``max_bytes``
    evicts its own least recently used responses, never another principal's,
    when the store is full; one of its responses that does not fit in its share
    is stored only while that evicts nobody else's. Below the bounds nothing is
    evicted: a store with one principal (an app without authentication) uses all
    of its room.

    Every response lives for the same TTL, so storing order is expiry order: a
    second ``OrderedDict`` in storing order finds the expired ones without
    scanning, and an evicted response leaves it at once (a FIFO queue kept
    evicted responses, uncounted, until it was compacted). The LRU order is an
    ``OrderedDict``'s, whose operations are single C calls: through a real
    server, ``cachetools.LRUCache`` (four Python-level calls per stored response)
    cost a keyed miss ~3.5 µs more (benchmarks/RESULTS.md, session 5).

    One instance serves one process (one event loop at a time); its operations
    never await, so each is atomic with respect to other requests, and its claim
    and complete are offered as plain calls
    (:class:`~sloguard.idempotency.store.SyncStore`). Use ``RedisStore`` to share
    keys between processes or hosts.
    """

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        principal_share: float = DEFAULT_PRINCIPAL_SHARE,
        clock: Clock = monotonic,
    ) -> None:
        if ttl_seconds <= 0:
            raise ConfigurationError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        if max_entries < 1:
            raise ConfigurationError(f"max_entries must be at least 1, got {max_entries!r}")
        if max_bytes < 1:
            raise ConfigurationError(f"max_bytes must be at least 1, got {max_bytes!r}")
        if not 0 < principal_share <= 1:
            raise ConfigurationError(f"principal_share must be in (0, 1], got {principal_share!r}")
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.principal_share = principal_share
        self._share_entries = max(1, int(principal_share * max_entries))
        self._share_bytes = principal_share * max_bytes
        self._clock = clock
        self._responses: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._nbytes = 0  # the sizes of the entries in _responses
        self._holdings: dict[str, _Holdings] = {}
        # The same entries in storing order, which is expiry order (one TTL for all).
        self._by_expiry: OrderedDict[str, _Entry] = OrderedDict()
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
        """Bytes held by stored, unexpired responses: every object kept for them, keys
        and bookkeeping included (what ``max_bytes`` bounds)."""
        self._expire(self._clock())
        return self._nbytes

    @property
    def in_flight(self) -> int:
        """The number of unexpired leases."""
        now = self._clock()
        return sum(1 for lease in self._leases.values() if lease.expires > now)

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        return self.claim_nowait(key, fingerprint, lease_seconds)

    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        return self.complete_nowait(key, token, response)

    async def release(self, key: str, token: int) -> None:
        self._end_lease(key, token, self._clock())

    async def renew(self, key: str, token: int, lease_seconds: float) -> bool:
        leases = self._leases
        lease = leases.get(key)
        now = self._clock()
        if lease is None or lease.token != token or lease.expires <= now:
            return False
        leases[key] = lease._replace(expires=now + lease_seconds)
        return True

    async def wait(self, key: str) -> None:
        while True:
            lease = self._leases.get(key)
            now = self._clock()
            if lease is None or lease.expires <= now:
                return
            ended = self._waiters.get(key)
            if ended is None:
                ended = self._waiters[key] = asyncio.Event()
            try:
                # Until it ends, or until it expires (nothing else would wake us then).
                async with asyncio.timeout(lease.expires - now):
                    await ended.wait()
                return
            except TimeoutError:
                continue

    # The operations themselves: neither waits, so a caller may call them as plain
    # calls (SyncStore, sync_path), saving a coroutine per call.

    def claim_nowait(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        """:meth:`claim`, as a plain call."""
        now = self._clock()
        entry = self._responses.get(key)
        if entry is not None:
            if entry[EXPIRES] > now:
                self._responses.move_to_end(key)
                self._holdings[entry[PRINCIPAL]].keys.move_to_end(key)
                response = _new(StoredResponse, entry[RESPONSE:])
                return _new(Claim, (COMPLETED, 0, response.fingerprint, response))
            self._drop(key, entry)
        leases = self._leases
        lease = leases.get(key)
        if lease is not None:
            if lease.expires > now:
                return _new(Claim, (IN_FLIGHT, 0, lease.fingerprint, None))
            self._wake(key)  # its holder is presumed dead; wake anyone waiting on it
        token = next(self._tokens)
        leases[key] = _new(_Lease, (token, fingerprint, now + lease_seconds))
        if len(leases) >= self._sweep_leases_at:
            self._sweep_expired_leases(now)
        return _new(Claim, (CLAIMED, token, fingerprint, None))

    def complete_nowait(
        self, key: str, token: int, response: StoredResponse, nbytes: int | None = None
    ) -> bool:
        """:meth:`complete`, as a plain call; ``nbytes``, when given, is
        ``response.nbytes`` counted by the caller."""
        now = self._clock()
        if not self._end_lease(key, token, now):
            return False  # no longer ours: expired, released, or taken over meanwhile
        size = entry_nbytes(key, response.nbytes if nbytes is None else nbytes)
        if size > self.max_bytes:
            return False
        responses = self._responses
        principal = principal_of(key)
        holdings = self._holdings.get(principal)
        if holdings is None:
            holdings = self._holdings[principal] = _Holdings(principal)
            self._nbytes += PRINCIPAL_OVERHEAD
        # The key is free: a claim deletes an expired response, and a stored one is
        # replayed rather than claimed. So the entry goes in last, most recently used.
        entry: _Entry = (now + self.ttl_seconds, size, key, holdings.principal, *response)
        responses[key] = entry
        by_expiry = self._by_expiry
        by_expiry[key] = entry
        self._nbytes += size
        holdings.keys[key] = None
        holdings.nbytes += size
        if len(responses) > self.max_entries or self._nbytes > self.max_bytes:
            self._evict(holdings)
            if key not in responses:
                return False  # over its principal's share, and only others' could make room
        if next(iter(by_expiry.values()))[EXPIRES] <= now:
            self._expire(now)
        return True

    def clear(self) -> None:
        """Forget every response and lease."""
        self._responses.clear()
        self._nbytes = 0
        self._holdings.clear()
        self._by_expiry.clear()
        self._leases.clear()
        for ended in self._waiters.values():
            ended.set()
        self._waiters.clear()

    def _end_lease(self, key: str, token: int, now: float) -> bool:
        """End ``token``'s lease on ``key``: True if it still held it (unexpired)."""
        lease = self._leases.get(key)
        if lease is None or lease.token != token:
            return False
        del self._leases[key]  # expired or not: either way the key is free now
        if self._waiters:
            self._wake(key)
        return lease.expires > now

    def _wake(self, key: str) -> None:
        ended = self._waiters.pop(key, None)
        if ended is not None:
            ended.set()

    def _drop(self, key: str, entry: _Entry) -> None:
        del self._responses[key]
        del self._by_expiry[key]
        size = entry[NBYTES]
        self._nbytes -= size
        principal = entry[PRINCIPAL]
        holdings = self._holdings[principal]
        del holdings.keys[key]
        holdings.nbytes -= size
        if not holdings.keys:
            del self._holdings[principal]
            self._nbytes -= PRINCIPAL_OVERHEAD

    def _evict(self, newcomer: _Holdings) -> None:
        """Drop responses until both bounds hold: the newcomer's principal's own least
        recently used while it holds more than its share, else the store's."""
        responses = self._responses
        while len(responses) > self.max_entries or self._nbytes > self.max_bytes:
            if newcomer.keys and (
                len(newcomer.keys) > self._share_entries or newcomer.nbytes > self._share_bytes
            ):
                key = next(iter(newcomer.keys))
            else:
                key = next(iter(responses))
            self._drop(key, responses[key])

    def _expire(self, now: float) -> None:
        by_expiry = self._by_expiry
        while by_expiry:
            key, entry = next(iter(by_expiry.items()))
            if entry[EXPIRES] > now:
                return
            self._drop(key, entry)

    def _sweep_expired_leases(self, now: float) -> None:
        expired = [key for key, lease in self._leases.items() if lease.expires <= now]
        for key in expired:
            del self._leases[key]
            self._wake(key)
        self._sweep_leases_at = max(1024, 2 * len(self._leases))


def entry_nbytes(key: str, response_nbytes: int) -> int:
    """What a response of ``response_nbytes`` (:attr:`StoredResponse.nbytes`) stored
    under ``key`` counts against a ``MemoryStore``'s ``max_bytes``: the response, the
    key and the store's bookkeeping (plus, once per principal holding responses,
    ``PRINCIPAL_OVERHEAD``)."""
    # An ASCII string's size is its length past a fixed header (sys.getsizeof's answer,
    # without its special-method lookup: ~1k instructions a stored response).
    key_size = _ASCII_STR + len(key) if key.isascii() else getsizeof(key)
    return response_nbytes + ENTRY_OVERHEAD + key_size
