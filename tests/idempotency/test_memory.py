"""MemoryStore: its bounds, fair shares and bookkeeping (the contract is in test_store.py)."""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from typing import Any

import pytest

from sloguard import ConfigurationError, MemoryStore, Store
from sloguard._clock import ManualClock
from sloguard.idempotency import ClaimStatus, StoredResponse
from sloguard.idempotency.keys import Fingerprinter, store_key
from sloguard.idempotency.memory import ENTRY_OVERHEAD, PRINCIPAL_OVERHEAD, entry_nbytes
from sloguard.idempotency.store import SyncStore, sync_path

FP = b"fingerprint-1"


def response(body: bytes = b"{}", status: int = 200, fingerprint: bytes = FP) -> StoredResponse:
    return StoredResponse(fingerprint, status, ((b"content-type", b"application/json"),), body)


async def claimed(store: MemoryStore, key: str, fingerprint: bytes = FP) -> int:
    claim = await store.claim(key, fingerprint, 60)
    assert claim.status is ClaimStatus.CLAIMED
    return claim.token


@pytest.fixture
def store(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


def test_memory_store_implements_the_store_protocol() -> None:
    assert isinstance(MemoryStore(), Store)


async def test_tokens_count_up_and_leases_are_counted(
    store: MemoryStore, clock: ManualClock
) -> None:
    old = await claimed(store, "k")
    assert store.in_flight == 1
    clock.advance(61)
    assert store.in_flight == 0
    new = await claimed(store, "k")
    assert new > old
    assert await store.complete("k", new, response())
    assert len(store) == 1
    assert store.in_flight == 0


async def test_max_entries_evicts_the_least_recently_used(clock: ManualClock) -> None:
    store = MemoryStore(max_entries=3, clock=clock)
    for key in "abc":
        await store.complete(key, await claimed(store, key), response())
    await store.claim("a", FP, 60)  # touch a: b is now least recently used
    await store.complete("d", await claimed(store, "d"), response())

    assert len(store) == 3
    assert (await store.claim("b", FP, 60)).status is ClaimStatus.CLAIMED
    for key in "acd":
        assert (await store.claim(key, FP, 60)).status is ClaimStatus.COMPLETED


async def test_a_response_used_often_outlives_thousands_stored_after_it(
    clock: ManualClock,
) -> None:
    # "hot", used every 10 stores, stays however many are evicted around it.
    store = MemoryStore(max_entries=100, clock=clock)
    await store.complete("hot", await claimed(store, "hot"), response())
    for n in range(3000):
        await store.complete(f"k{n}", await claimed(store, f"k{n}"), response())
        if n % 10 == 9:
            assert (await store.claim("hot", FP, 60)).status is ClaimStatus.COMPLETED, n


@pytest.mark.parametrize("key", ["a", "0123abcd\x1forder-42", "caf\u00e9", "\u20ac", "\U0001f600"])
def test_a_key_counts_what_the_string_takes(key: str) -> None:
    assert entry_nbytes(key, 100) == 100 + ENTRY_OVERHEAD + sys.getsizeof(key)


async def test_max_bytes_evicts_until_the_total_fits(clock: ManualClock) -> None:
    one = entry_nbytes("a", response(b"x" * 1000).nbytes)
    store = MemoryStore(max_bytes=PRINCIPAL_OVERHEAD + 3 * one + 10, clock=clock)
    for key in "abcd":
        await store.complete(key, await claimed(store, key), response(b"x" * 1000))

    assert len(store) == 3
    assert store.nbytes <= store.max_bytes
    assert store.nbytes == PRINCIPAL_OVERHEAD + 3 * one
    assert (await store.claim("a", FP, 60)).status is ClaimStatus.CLAIMED


async def test_a_response_larger_than_the_store_is_not_stored(clock: ManualClock) -> None:
    small = entry_nbytes("small", response(b"s").nbytes)
    store = MemoryStore(max_bytes=PRINCIPAL_OVERHEAD + small + 500, clock=clock)
    await store.complete("small", await claimed(store, "small"), response(b"s"))
    token = await claimed(store, "huge")

    assert not await store.complete("huge", token, response(b"x" * 1000))
    assert (await store.claim("huge", FP, 60)).status is ClaimStatus.CLAIMED
    assert (await store.claim("small", FP, 60)).status is ClaimStatus.COMPLETED


async def test_every_byte_of_the_key_counts(clock: ManualClock) -> None:
    # Keys were left out of max_bytes: a store of long keys and short responses held
    # many times its bound.
    short, long = MemoryStore(clock=clock), MemoryStore(clock=clock)
    await short.complete("k", await claimed(short, "k"), response())
    await long.complete("k" * 1001, await claimed(long, "k" * 1001), response())
    assert long.nbytes - short.nbytes == 1000


@pytest.mark.parametrize(
    ("principals", "key_length", "headers", "body", "max_bytes"),
    [
        (1, 8, 2, 14, None),
        (1, 255, 2, 14, None),
        (1, 8, 0, 0, None),
        (1, 8, 8, 14, None),
        (100, 40, 2, 14, None),
        (4000, 8, 2, 14, None),
        (1, 255, 2, 14, 256 * 1024),  # ~10 times more stored than the store can hold
        (50, 255, 2, 14, 256 * 1024),
    ],
)
def test_the_bytes_counted_are_the_bytes_held(
    principals: int, key_length: int, headers: int, body: int, max_bytes: int | None
) -> None:
    """What the store holds in memory (tracemalloc: every object it keeps, keys included)
    is never more than 10% over what it counts against max_bytes, whatever the shape,
    nor when it evicts (the count errs on the safe side: an empty body or header list
    costs nothing). A 1 MiB store grew a process by 44.5 MiB."""
    count = 4000
    principal_digests = [Fingerprinter().principal(f"Bearer {i}") for i in range(principals)]
    fingerprint = Fingerprinter().request("POST", "/items", b"", [b"{}"])
    store = MemoryStore(
        max_entries=count, max_bytes=max_bytes or 1 << 40, principal_share=1 / principals
    )
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            # Fresh objects per response, as a server makes them.
            key = store_key(principal_digests[i % principals], f"{i:0{key_length}d}")
            token = store.claim_nowait(key, bytes(bytearray(fingerprint)), 60).token
            stored = StoredResponse(
                bytes(bytearray(fingerprint)),
                201,
                tuple((b"x-header-%d" % h, b"value-%d" % h) for h in range(headers)),
                bytes(bytearray(b"b" * body)),
            )
            assert store.complete_nowait(key, token, stored)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    if max_bytes is None:
        assert len(store) == count
    else:
        assert count // 20 < len(store) < count // 5
        assert store.nbytes <= max_bytes
    assert 0.75 < held / store.nbytes < 1.1, (held, store.nbytes)


async def test_expired_responses_release_their_memory_as_new_ones_arrive(
    clock: ManualClock,
) -> None:
    store = MemoryStore(ttl_seconds=10, clock=clock)
    tracemalloc.start()
    try:
        for i in range(100):
            body = bytes(bytearray(100_000))  # a fresh 100 kB each
            await store.complete(f"old{i}", await claimed(store, f"old{i}"), response(body))
        held = tracemalloc.get_traced_memory()[0]
        clock.advance(11)
        await store.complete("new", await claimed(store, "new"), response(b"x" * 100))
        released = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()

    assert released > 95 * 100_000  # without asking the store for its size
    assert len(store) == 1
    assert store.nbytes == PRINCIPAL_OVERHEAD + entry_nbytes("new", response(b"x" * 100).nbytes)


async def test_nbytes_counts_headers_and_body() -> None:
    small = StoredResponse(FP, 200, (), b"")
    big = StoredResponse(FP, 200, ((b"x-a", b"1" * 100),), b"b" * 100)
    assert big.nbytes - small.nbytes >= 203


async def test_expired_leases_are_swept_so_abandoned_claims_cannot_pile_up(
    store: MemoryStore, clock: ManualClock
) -> None:
    for i in range(1500):
        await claimed(store, f"k{i}")
        clock.advance(1)
    # Only leases taken in the last 59 seconds are alive; the sweep dropped most of the rest.
    assert store.in_flight == 59
    assert len(store._leases) < 1100


async def test_clear_forgets_everything(store: MemoryStore) -> None:
    await store.complete("a", await claimed(store, "a"), response())
    await claimed(store, "b")
    store.clear()
    assert len(store) == 0
    assert store.in_flight == 0


@pytest.mark.parametrize(
    "options",
    [
        {"ttl_seconds": 0},
        {"max_entries": 0},
        {"max_bytes": 0},
        {"principal_share": 0},
        {"principal_share": 1.5},
    ],
)
def test_bad_bounds_are_rejected(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        MemoryStore(**options)  # type: ignore[arg-type]


async def test_nbytes_is_the_size_of_the_live_responses_through_evictions_and_expiry(
    clock: ManualClock,
) -> None:
    # Eviction by count and by bytes, expiry, replays reordering the LRU and keys
    # stored anew after expiring: the running byte count must match what is held.
    store = MemoryStore(ttl_seconds=20, max_entries=30, max_bytes=30 * 700, clock=clock)
    hot = [f"hot{i}" for i in range(5)]  # back every 7.5 s: replayed
    cold = [f"cold{i}" for i in range(60)]  # back after ~45 s: expired by then
    keys = hot + cold
    for step in range(3_000):
        key = hot[step % 5] if step % 3 == 0 else cold[(step * 7) % len(cold)]
        claim = await store.claim(key, FP, 60)
        if claim.status is ClaimStatus.CLAIMED:
            await store.complete(key, claim.token, response(b"x" * (step % 200)))
        clock.advance(0.5)

    clock.advance(10)  # about half the responses expire, with nothing stored since
    held = PRINCIPAL_OVERHEAD  # the one principal, anonymous
    for key in keys:
        claim = await store.claim(key, FP, 60)
        if claim.status is ClaimStatus.COMPLETED:
            assert claim.response is not None
            held += entry_nbytes(key, claim.response.nbytes)
    assert PRINCIPAL_OVERHEAD < store.nbytes == held
    assert len(store) <= 30
    assert held <= store.max_bytes


async def test_stored_responses_are_not_walked_by_every_garbage_collection(
    store: MemoryStore,
) -> None:
    # A full collection walks every tracked object; a store of 100,000 responses
    # kept as named tuples made each one take twice as long. Plain tuples of plain
    # values stop being tracked the first time the collector sees them.
    for i in range(3):
        await store.complete(f"k{i}", await claimed(store, f"k{i}"), response(b"x" * i))
    gc.collect()

    assert not any(gc.is_tracked(entry) for entry in store._responses.values())
    claim = await store.claim("k2", FP, 60)
    assert claim.status is ClaimStatus.COMPLETED
    assert claim.response == response(b"xx")
    assert type(claim.response) is StoredResponse


# --- fair shares -----------------------------------------------------------------------

alice, bob, carol = (Fingerprinter().principal(f"Bearer {name}") for name in ("a", "b", "c"))


async def stored(store: MemoryStore, keys: list[str]) -> list[str]:
    return [key for key in keys if (await store.claim(key, FP, 60)).status is ClaimStatus.COMPLETED]


async def test_one_principal_alone_uses_the_whole_store(clock: ManualClock) -> None:
    # The share binds only when the store is full: an app without authentication (one
    # principal, anonymous) loses no room to it.
    store = MemoryStore(max_entries=100, principal_share=0.1, clock=clock)
    keys = [store_key("", f"k{i}") for i in range(100)]
    for key in keys:
        await store.complete(key, await claimed(store, key), response())
    assert await stored(store, keys) == keys


async def test_a_principal_over_its_share_evicts_its_own_least_recently_used(
    clock: ManualClock,
) -> None:
    store = MemoryStore(max_entries=10, principal_share=0.3, clock=clock)
    mine = [store_key(alice, f"a{i}") for i in range(8)]
    theirs = [store_key(bob, f"b{i}") for i in range(2)]
    for key in theirs + mine:
        await store.complete(key, await claimed(store, key), response())
    await store.claim(mine[0], FP, 60)  # a0 is now alice's most recently used

    more = [store_key(alice, f"a{i}") for i in range(8, 12)]
    for key in more:
        await store.complete(key, await claimed(store, key), response())

    assert await stored(store, theirs) == theirs
    assert await stored(store, mine + more) == [mine[0], *mine[5:], *more]


async def test_a_principal_within_its_share_makes_room_from_the_least_recently_used(
    clock: ManualClock,
) -> None:
    store = MemoryStore(max_entries=10, principal_share=0.3, clock=clock)
    flood = [store_key(alice, f"a{i}") for i in range(10)]
    for key in flood:
        await store.complete(key, await claimed(store, key), response())
    newcomer = [store_key(bob, f"b{i}") for i in range(3)]
    for key in newcomer:
        await store.complete(key, await claimed(store, key), response())

    assert await stored(store, newcomer) == newcomer
    assert await stored(store, flood) == flood[3:]


async def test_a_response_over_its_principals_share_is_stored_only_if_it_evicts_nobody_else(
    clock: ManualClock,
) -> None:
    small = entry_nbytes(store_key(bob, "b0"), response().nbytes)
    store = MemoryStore(
        max_bytes=3 * PRINCIPAL_OVERHEAD + 6 * small, principal_share=0.4, clock=clock
    )
    others = [store_key(bob, "b0"), store_key(carol, "c0")]
    for key in others:
        await store.complete(key, await claimed(store, key), response())
    big = response(b"x" * 3 * small)  # over 40% of the store, fits beside the others
    fits = store_key(alice, "fits")
    assert await store.complete(fits, await claimed(store, fits), big)
    too_big = store_key(alice, "too-big")
    assert not await store.complete(too_big, await claimed(store, too_big), big)

    assert await stored(store, others) == others
    assert await stored(store, [fits, too_big]) == []  # alice's own went first, then the rest
    assert store.nbytes == 2 * PRINCIPAL_OVERHEAD + 2 * small


async def test_a_principal_whose_responses_all_expired_or_went_costs_nothing(
    clock: ManualClock,
) -> None:
    store = MemoryStore(ttl_seconds=10, clock=clock)
    for i in range(3):
        key = store_key(f"{i:032x}", "k")
        await store.complete(key, await claimed(store, key), response())
    assert store.nbytes > 3 * PRINCIPAL_OVERHEAD
    clock.advance(11)
    assert store.nbytes == 0


# --- fencing, renewal and waiting, memory-specific ---------------------------------------


async def test_a_waiter_returns_when_the_lease_expires(clock: ManualClock) -> None:
    store = MemoryStore(clock=clock)
    await store.claim("k", FP, 0.01)  # its holder never comes back
    waiter = asyncio.create_task(store.wait("k"))
    await asyncio.sleep(0)
    assert not waiter.done()
    clock.advance(1)
    await asyncio.wait_for(waiter, timeout=5)  # the waiter looks again as the lease runs out


async def test_a_sweep_keeps_no_lease_alive_nor_takes_one_early(clock: ManualClock) -> None:
    store = MemoryStore(clock=clock)
    token = await claimed(store, "k")
    for i in range(1100):
        await store.claim(f"other-{i}", FP, 600)  # leases enough for a sweep
    assert await store.renew("k", token, 60)
    assert await store.complete("k", token, response())


# --- the plain-call fast path ----------------------------------------------------------------


class CountingClaims(MemoryStore):
    """Counts claims: an override of an async operation alone."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Any:
        self.claims += 1
        return await super().claim(key, fingerprint, lease_seconds)


class NothingStored(MemoryStore):
    """Stores nothing: an override of a plain call alone."""

    def complete_nowait(
        self, key: str, token: int, response: StoredResponse, nbytes: int | None = None
    ) -> bool:
        return False


async def test_a_memory_store_has_a_plain_call_path_that_does_the_same() -> None:
    store = MemoryStore()
    assert isinstance(store, SyncStore)
    assert sync_path(store) is store
    claim = store.claim_nowait("k", FP, 60)
    assert claim.status is ClaimStatus.CLAIMED
    assert store.complete_nowait("k", claim.token, response())
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.COMPLETED


async def test_a_subclass_overriding_an_async_operation_is_called_through_it() -> None:
    store = CountingClaims()
    assert sync_path(store) is None
    claim = await store.claim("k", FP, 60)
    assert await store.complete("k", claim.token, response())
    assert store.claims == 1


async def test_a_subclass_overriding_a_plain_call_is_followed_by_its_async_twin() -> None:
    store = NothingStored()
    claim = await store.claim("k", FP, 60)
    assert not await store.complete("k", claim.token, response())
