"""An in-process idempotency store: TTL + LRU over completed responses, bounded three ways."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

from cachetools import TTLCache

from sloguard._clock import Clock, monotonic
from sloguard.exceptions import ConfigurationError
from sloguard.idempotency.store import Claim, ClaimStatus, StoredResponse

DEFAULT_TTL_SECONDS = 86_400.0
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class _Lease:
    token: int
    fingerprint: bytes
    expires_at: float
    ended: asyncio.Event | None = None
    """Created only when somebody waits for this lease to end."""

    def end(self) -> None:
        if self.ended is not None:
            self.ended.set()


class MemoryStore:
    """Completed responses in a ``cachetools.TTLCache``; in-flight leases beside it.

    Bounds: every response expires ``ttl_seconds`` after it was stored; past
    ``max_entries`` responses or ``max_bytes`` of them (headers and body, plus a
    small per-entry overhead), the least recently used are evicted. A response
    larger than ``max_bytes`` on its own is not stored.

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
        self._responses: TTLCache[str, StoredResponse] = TTLCache(
            maxsize=max_bytes, ttl=ttl_seconds, timer=clock, getsizeof=_nbytes
        )
        self._leases: dict[str, _Lease] = {}
        self._tokens = itertools.count(1)
        self._sweep_leases_at = 1024

    def __len__(self) -> int:
        """The number of stored responses (expired ones are dropped first)."""
        self._responses.expire()
        return len(self._responses)

    @property
    def nbytes(self) -> int:
        """Approximate bytes held by stored responses."""
        self._responses.expire()
        return int(self._responses.currsize)

    @property
    def in_flight(self) -> int:
        """The number of unexpired leases."""
        now = self._clock()
        return sum(1 for lease in self._leases.values() if lease.expires_at > now)

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        response = self._responses.get(key)
        if response is not None:
            return Claim(ClaimStatus.COMPLETED, fingerprint=response.fingerprint, response=response)
        now = self._clock()
        lease = self._leases.get(key)
        if lease is not None:
            if lease.expires_at > now:
                return Claim(ClaimStatus.IN_FLIGHT, fingerprint=lease.fingerprint)
            lease.end()  # its holder is presumed dead; wake anyone waiting on it
        token = next(self._tokens)
        self._leases[key] = _Lease(token, fingerprint, now + lease_seconds)
        if len(self._leases) >= self._sweep_leases_at:
            self._sweep_expired_leases(now)
        return Claim(ClaimStatus.CLAIMED, token=token, fingerprint=fingerprint)

    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        lease = self._leases.get(key)
        if lease is None or lease.token != token:
            return False
        del self._leases[key]
        stored = response.nbytes <= self.max_bytes
        if stored:
            responses = self._responses
            responses[key] = response
            while len(responses) > self.max_entries:
                responses.popitem()
        lease.end()
        return stored

    async def release(self, key: str, token: int) -> None:
        lease = self._leases.get(key)
        if lease is not None and lease.token == token:
            del self._leases[key]
            lease.end()

    async def wait(self, key: str) -> None:
        lease = self._leases.get(key)
        if lease is None or lease.expires_at <= self._clock():
            return
        if lease.ended is None:
            lease.ended = asyncio.Event()
        await lease.ended.wait()

    def clear(self) -> None:
        """Forget every response and lease."""
        self._responses.clear()
        for lease in self._leases.values():
            lease.end()
        self._leases.clear()

    def _sweep_expired_leases(self, now: float) -> None:
        expired = [key for key, lease in self._leases.items() if lease.expires_at <= now]
        for key in expired:
            self._leases.pop(key).end()
        self._sweep_leases_at = max(1024, 2 * len(self._leases))


def _nbytes(response: StoredResponse) -> int:
    return response.nbytes
