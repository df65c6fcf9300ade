"""MemoryStore: its three bounds and its bookkeeping (the contract is in test_store.py)."""

from __future__ import annotations

import gc

import pytest

from sloguard import ConfigurationError, MemoryStore, Store
from sloguard._clock import ManualClock
from sloguard.idempotency import ClaimStatus, StoredResponse

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


async def test_dropping_evicted_responses_from_the_expiry_queue_keeps_the_lru_order(
    clock: ManualClock,
) -> None:
    # Evictions leave entries in the expiry queue; dropping them (past 2x the live
    # responses + 1024) must not reorder the LRU: "hot", used every 10 stores, stays.
    store = MemoryStore(max_entries=100, clock=clock)
    await store.complete("hot", await claimed(store, "hot"), response())
    for n in range(3000):
        await store.complete(f"k{n}", await claimed(store, f"k{n}"), response())
        if n % 10 == 9:
            assert (await store.claim("hot", FP, 60)).status is ClaimStatus.COMPLETED, n
    assert len(store._expiries) < 2 * 100 + 1024 + 1  # the queue was compacted


async def test_max_bytes_evicts_until_the_total_fits(clock: ManualClock) -> None:
    one = response(b"x" * 1000)
    store = MemoryStore(max_bytes=3 * one.nbytes + 10, clock=clock)
    for key in "abcd":
        await store.complete(key, await claimed(store, key), response(b"x" * 1000))

    assert len(store) == 3
    assert store.nbytes <= store.max_bytes
    assert store.nbytes == 3 * one.nbytes
    assert (await store.claim("a", FP, 60)).status is ClaimStatus.CLAIMED


async def test_a_response_larger_than_the_store_is_not_stored(clock: ManualClock) -> None:
    store = MemoryStore(max_bytes=500, clock=clock)
    await store.complete("small", await claimed(store, "small"), response(b"s"))
    token = await claimed(store, "huge")

    assert not await store.complete("huge", token, response(b"x" * 1000))
    assert (await store.claim("huge", FP, 60)).status is ClaimStatus.CLAIMED
    assert (await store.claim("small", FP, 60)).status is ClaimStatus.COMPLETED


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
    [{"ttl_seconds": 0}, {"max_entries": 0}, {"max_bytes": 0}],
)
def test_bad_bounds_are_rejected(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        MemoryStore(**options)  # type: ignore[arg-type]


async def test_expired_responses_release_their_memory_as_new_ones_arrive(
    clock: ManualClock,
) -> None:
    store = MemoryStore(ttl_seconds=10, clock=clock)
    for i in range(100):
        await store.complete(f"old{i}", await claimed(store, f"old{i}"), response(b"x" * 100))
    held = store.nbytes
    clock.advance(11)
    await store.complete("new", await claimed(store, "new"), response(b"x" * 100))

    assert store._nbytes == held // 100  # only "new" is still held
    assert len(store) == 1


async def test_the_expiry_queue_stays_bounded_under_lru_eviction(clock: ManualClock) -> None:
    store = MemoryStore(max_entries=10, clock=clock)
    for i in range(20_000):
        await store.complete(f"k{i}", await claimed(store, f"k{i}"), response())

    assert len(store) == 10
    assert len(store._expiries) <= 2 * 10 + 1024 + 1


async def test_nbytes_is_the_size_of_the_live_responses_through_evictions_and_expiry(
    clock: ManualClock,
) -> None:
    # Eviction by count and by bytes, expiry, replays reordering the LRU and keys
    # stored anew after expiring: the running byte count must match what is held.
    store = MemoryStore(ttl_seconds=20, max_entries=30, max_bytes=30 * 400, clock=clock)
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
    held = 0
    for key in keys:
        claim = await store.claim(key, FP, 60)
        if claim.status is ClaimStatus.COMPLETED:
            assert claim.response is not None
            held += claim.response.nbytes
    assert 0 < store.nbytes == held
    assert len(store) <= 30
    assert held <= 30 * 400


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
