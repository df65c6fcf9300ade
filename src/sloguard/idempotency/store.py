"""The storage contract behind IdempotencyMiddleware, and the records it keeps.

A store knows three states of a store key: free (the first request may claim
it), in flight (a lease with a fencing token and an expiry) or completed (a
stored response). ``claim`` folds "look up" and "claim if free" into one atomic
operation, so that a networked store answers a replay in one round trip and a
miss in two (claim, then complete).

Records are named tuples: one is built on every request, and a tuple costs a
fraction of a frozen dataclass.
"""

from __future__ import annotations

import enum
from itertools import chain
from typing import NamedTuple, Protocol, runtime_checkable

Headers = tuple[tuple[bytes, bytes], ...]


class StoredResponse(NamedTuple):
    """A completed response, kept whole so that a replay is byte for byte."""

    fingerprint: bytes
    status: int
    headers: Headers
    body: bytes

    @property
    def nbytes(self) -> int:
        """The memory its objects take in CPython: payload bytes plus their overheads."""
        headers = self.headers
        header_bytes = sum(map(len, chain.from_iterable(headers)))
        return stored_nbytes(self.fingerprint, len(headers), header_bytes, self.body)


RESPONSE_OVERHEAD = 192
"""Bytes a response's objects take beyond their payload: its tuple, the bytes objects
of fingerprint and body, the tuple of headers."""
HEADER_OVERHEAD = 136
"""Bytes one header takes beyond its name and value: a pair and two bytes objects.
Both figures are tracemalloc's, rounded up (docs/idempotency.md, "Bounds")."""


def stored_nbytes(fingerprint: bytes, header_count: int, header_bytes: int, body: bytes) -> int:
    """:attr:`StoredResponse.nbytes` of a response with ``header_count`` headers of
    ``header_bytes`` bytes in all (names and values), for a caller that has counted
    them already (IdempotencyMiddleware, as the response passes)."""
    return (
        RESPONSE_OVERHEAD
        + len(fingerprint)
        + len(body)
        + HEADER_OVERHEAD * header_count
        + header_bytes
    )


class ClaimStatus(enum.Enum):
    CLAIMED = "claimed"
    """The caller now holds the lease and must ``complete`` or ``release`` it."""
    IN_FLIGHT = "in_flight"
    """Another request holds an unexpired lease on the key."""
    COMPLETED = "completed"
    """A response is stored under the key."""


# The members as module constants: in Python 3.11 reading `ClaimStatus.COMPLETED` is a
# descriptor lookup, and the request path's reads of them cost ~1.5% of a keyed miss.
CLAIMED = ClaimStatus.CLAIMED
IN_FLIGHT = ClaimStatus.IN_FLIGHT
COMPLETED = ClaimStatus.COMPLETED


class Claim(NamedTuple):
    """The answer to :meth:`Store.claim`."""

    status: ClaimStatus
    token: int = 0
    """The fencing token of the lease; meaningful when ``CLAIMED``."""
    fingerprint: bytes = b""
    """The fingerprint of the request holding or having completed the key."""
    response: StoredResponse | None = None
    """The stored response; set when ``COMPLETED``."""


@runtime_checkable
class Store(Protocol):
    """Where idempotency claims and completed responses live.

    **Keys** are made by :func:`sloguard.idempotency.keys.store_key`: a principal
    digest and the client's key. A store may read the principal back
    (:func:`~sloguard.idempotency.keys.principal_of`) to share its room fairly
    between principals; it never sees a credential or a request body.

    **Claims** are atomic: of any number of concurrent claims on one free key,
    exactly one returns ``CLAIMED``.

    **Leases and fencing.** A claim takes a lease on the key with a fencing
    token, for ``lease_seconds``. The token *holds* the lease until the lease
    expires, is released, or is completed, whichever comes first; ``renew``
    moves the expiry while the token holds it. A token that no longer holds the
    lease can neither complete (``False``), release (no-op) nor renew
    (``False``), whether or not another request has claimed the key since: a
    holder that outlived its lease cannot know whether another ran meanwhile, so
    its response is refused, and the key is free for a retry. The answer
    depends on the key alone, never on other keys' traffic.

    **Failures.** A store whose backend fails raises ``sloguard.StoreUnavailable``
    from any operation; the caller decides what a failed ``complete``,
    ``release`` or ``renew`` means for the request.
    """

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        """Return the stored response, report an in-flight lease, or take a new lease.

        An expired lease counts as free: the new claimant gets a new token, never
        equal to an earlier one's (``MemoryStore`` counts up, ``RedisStore`` draws
        64 random bits).
        """
        ...

    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        """Store ``response`` in place of the lease if ``token`` still holds it. False
        if it does not (expired, released, completed or taken over) or if the
        response cannot be stored (too large for the store, or for its principal's
        share of it); either way the lease has ended and the key is free."""
        ...

    async def release(self, key: str, token: int) -> None:
        """End the lease if ``token`` still holds it, so that a retry runs again."""
        ...

    async def renew(self, key: str, token: int, lease_seconds: float) -> bool:
        """Extend the lease to ``lease_seconds`` from now if ``token`` still holds it;
        False if it does not (the caller has lost the key and must not store)."""
        ...

    async def wait(self, key: str) -> None:
        """Return once the lease on ``key`` has ended: completed, released or expired.

        Callers bound the wait themselves (``asyncio.timeout``).
        """
        ...


@runtime_checkable
class SyncStore(Protocol):
    """A store whose claim and complete need no waiting (``MemoryStore``): the gate
    calls these plain functions instead of awaiting a coroutine per call."""

    def claim_nowait(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        """:meth:`Store.claim`, as a plain call."""
        ...

    def complete_nowait(
        self, key: str, token: int, response: StoredResponse, nbytes: int | None = None
    ) -> bool:
        """:meth:`Store.complete`, as a plain call; ``nbytes``, when given, is
        ``response.nbytes`` counted by the caller (:func:`stored_nbytes`)."""
        ...


def sync_path(store: Store) -> SyncStore | None:
    """``store``'s plain-call path, when it has one that does what its async ``claim``
    and ``complete`` do: a subclass that overrides only the async operations is
    always called through them."""
    if not isinstance(store, SyncStore):
        return None
    mro = type(store).__mro__

    def owner(name: str) -> type:
        return next(kind for kind in mro if name in vars(kind))

    if owner("claim") is owner("claim_nowait") and owner("complete") is owner("complete_nowait"):
        return store
    return None
