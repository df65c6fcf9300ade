"""The Store contract, checked against every store kind (MemoryStore, RedisStore on a
real server): claims, expiry, fencing, renewal, waiting, completing and releasing,
and each principal's share. One suite, so that the two never disagree again."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sloguard import MemoryStore, Store
from sloguard.idempotency import ClaimStatus, StoredResponse
from sloguard.idempotency.keys import Fingerprinter, store_key
from sloguard.idempotency.store import SyncStore
from tests.idempotency.conftest import Backend, Travel

FP = b"fingerprint-1"


def response(body: bytes = b"{}", status: int = 200, fingerprint: bytes = FP) -> StoredResponse:
    return StoredResponse(fingerprint, status, ((b"content-type", b"application/json"),), body)


async def claimed(store: Store, key: str, fingerprint: bytes = FP) -> int:
    claim = await store.claim(key, fingerprint, 60)
    assert claim.status is ClaimStatus.CLAIMED
    assert claim.fingerprint == fingerprint
    return claim.token


def test_the_store_implements_the_store_protocol(store: Store) -> None:
    assert isinstance(store, Store)


async def test_claim_complete_then_claim_returns_the_response(store: Store) -> None:
    token = await claimed(store, "k")
    stored = response(b'{"ok":1}')
    assert await store.complete("k", token, stored)

    claim = await store.claim("k", b"other", 60)
    assert claim.status is ClaimStatus.COMPLETED
    assert claim.response == stored
    assert claim.fingerprint == FP


async def test_a_second_claim_sees_the_lease_in_flight(store: Store) -> None:
    await claimed(store, "k")
    claim = await store.claim("k", b"fp-2", 60)
    assert claim.status is ClaimStatus.IN_FLIGHT
    assert claim.fingerprint == FP
    assert claim.response is None


async def test_keys_are_independent(store: Store) -> None:
    await store.complete("a", await claimed(store, "a"), response(b"a"))
    await claimed(store, "b")
    assert (await store.claim("c", FP, 60)).status is ClaimStatus.CLAIMED


async def test_release_frees_the_key_and_only_for_its_own_token(store: Store) -> None:
    token = await claimed(store, "k")
    await store.release("k", token + 1)
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.IN_FLIGHT
    await store.release("k", token)
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.CLAIMED


async def test_a_stale_token_cannot_release_or_overwrite_a_completed_response(
    store: Store,
) -> None:
    token = await claimed(store, "k")
    assert await store.complete("k", token, response(b"first"))
    await store.release("k", token)
    assert not await store.complete("k", token, response(b"second"))

    claim = await store.claim("k", FP, 60)
    assert claim.response is not None
    assert claim.response.body == b"first"


async def test_an_expired_lease_is_taken_over_with_a_new_token(
    store: Store, travel: Travel
) -> None:
    old = await claimed(store, "k")
    await travel(61)
    new = await claimed(store, "k")
    assert new != old

    # Fencing: the holder whose lease expired can neither overwrite nor free the new one.
    assert not await store.complete("k", old, response(b"stale"))
    await store.release("k", old)
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.IN_FLIGHT
    assert await store.complete("k", new, response(b"fresh"))
    claim = await store.claim("k", FP, 60)
    assert claim.response is not None
    assert claim.response.body == b"fresh"


async def test_a_claim_holds_the_key_for_the_lease_it_asked_for(
    store: Store, travel: Travel
) -> None:
    await store.claim("k", FP, 30)
    await travel(29)
    assert (await store.claim("k", FP, 30)).status is ClaimStatus.IN_FLIGHT
    await travel(2)
    assert (await store.claim("k", FP, 30)).status is ClaimStatus.CLAIMED


@pytest.mark.parametrize("after_expiry", ["nothing", "taken over and released"])
async def test_a_token_whose_lease_expired_can_no_longer_complete_renew_or_release(
    store: Store, travel: Travel, after_expiry: str
) -> None:
    # Request A outlives its lease. Whether or not B took over (and failed) meanwhile,
    # A's late response is refused: A cannot know whether another ran, and the key is
    # free for a retry. (RedisStore stored it when the key was empty; MemoryStore
    # refused or stored depending on its lease sweeps.)
    token = await claimed(store, "k")
    await travel(61)
    if after_expiry == "taken over and released":
        await store.release("k", await claimed(store, "k"))

    assert not await store.renew("k", token, 60)
    assert not await store.complete("k", token, response(b"late"))
    await store.release("k", token)
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.CLAIMED


@pytest.mark.parametrize("other_leases", [0, 1100])
async def test_the_refusal_does_not_depend_on_other_keys(
    store: Store, travel: Travel, other_leases: int
) -> None:
    # MemoryStore swept expired leases once 1,024 were held: an expired lease could
    # complete with few leases around, and not with many.
    token = await claimed(store, "k")
    await travel(61)
    for i in range(other_leases):
        await store.claim(f"other-{i}", FP, 600)

    assert not await store.complete("k", token, response())
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.CLAIMED


async def test_a_token_holds_its_lease_until_it_completes(store: Store) -> None:
    token = await claimed(store, "k")
    assert await store.complete("k", token, response(b"first"))
    assert not await store.complete("k", token, response(b"second"))
    assert not await store.renew("k", token, 60)
    claim = await store.claim("k", FP, 60)
    assert claim.response is not None
    assert claim.response.body == b"first"


async def test_a_released_token_can_neither_complete_nor_renew(store: Store) -> None:
    token = await claimed(store, "k")
    await store.release("k", token)
    assert not await store.renew("k", token, 60)
    assert not await store.complete("k", token, response())
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.CLAIMED


async def test_concurrent_claims_on_a_free_key_give_one_lease(store: Store) -> None:
    claims = await asyncio.gather(*(store.claim("k", FP, 60) for _ in range(20)))
    statuses = [claim.status for claim in claims]
    assert statuses.count(ClaimStatus.CLAIMED) == 1
    assert statuses.count(ClaimStatus.IN_FLIGHT) == 19


# --- renewal ---------------------------------------------------------------------------


async def test_renewing_keeps_the_lease_past_its_first_expiry(store: Store, travel: Travel) -> None:
    token = (await store.claim("k", FP, 30)).token
    await travel(20)
    assert await store.renew("k", token, 30)
    await travel(20)  # 40 s after the claim: held only thanks to the renewal
    assert (await store.claim("k", FP, 30)).status is ClaimStatus.IN_FLIGHT
    assert await store.complete("k", token, response(b"slow"))
    claim = await store.claim("k", FP, 30)
    assert claim.response is not None
    assert claim.response.body == b"slow"


async def test_a_renewed_lease_still_expires_when_renewals_stop(
    store: Store, travel: Travel
) -> None:
    token = (await store.claim("k", FP, 30)).token
    await travel(20)
    assert await store.renew("k", token, 30)
    await travel(31)  # the holder died: nothing renews it
    assert (await store.claim("k", FP, 30)).status is ClaimStatus.CLAIMED
    assert not await store.renew("k", token, 30)


async def test_only_the_holder_renews(store: Store, travel: Travel) -> None:
    token = (await store.claim("k", FP, 30)).token
    assert not await store.renew("k", token + 1, 600)
    assert not await store.renew("absent", token, 600)
    await travel(31)
    assert (await store.claim("k", FP, 30)).status is ClaimStatus.CLAIMED


async def test_responses_expire_after_the_ttl(backend: Backend, travel: Travel) -> None:
    store = backend.make_store(ttl_seconds=10)
    await store.complete("k", await claimed(store, "k"), response())
    await travel(9)
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.COMPLETED
    await travel(2)
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.CLAIMED


async def test_wait_returns_when_the_lease_is_completed(store: Store) -> None:
    token = await claimed(store, "k")
    waiter = asyncio.create_task(store.wait("k"))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.complete("k", token, response())
    await asyncio.wait_for(waiter, timeout=5)


async def test_wait_returns_when_the_lease_is_released(store: Store) -> None:
    token = await claimed(store, "k")
    waiter = asyncio.create_task(store.wait("k"))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.release("k", token)
    await asyncio.wait_for(waiter, timeout=5)


async def test_wait_returns_at_once_when_there_is_no_live_lease(
    store: Store, travel: Travel
) -> None:
    await asyncio.wait_for(store.wait("nothing"), timeout=5)
    await claimed(store, "k")
    await travel(61)
    await asyncio.wait_for(store.wait("k"), timeout=5)
    await store.complete("done", await claimed(store, "done"), response())
    await asyncio.wait_for(store.wait("done"), timeout=5)


header_bytes = st.binary(max_size=64)
responses = st.builds(
    StoredResponse,
    fingerprint=st.binary(min_size=0, max_size=64),
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(header_bytes, header_bytes), max_size=12).map(tuple),
    body=st.binary(max_size=4096),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stored=responses, key=st.text(max_size=300))
async def test_any_response_comes_back_exactly_as_stored(
    store: Store, stored: StoredResponse, key: str
) -> None:
    key = f"{uuid.uuid4()}{key}"  # examples share the store: one key each
    token = await claimed(store, key, stored.fingerprint)
    assert await store.complete(key, token, stored)
    claim = await store.claim(key, b"", 60)
    assert claim.status is ClaimStatus.COMPLETED
    assert claim.response == stored
    assert claim.fingerprint == stored.fingerprint


# --- keys and principals ---------------------------------------------------------------


async def test_store_keys_of_principals_are_independent(store: Store) -> None:
    principal = Fingerprinter().principal
    alice, bob = store_key(principal("Bearer alice"), "k"), store_key(principal("Bearer bob"), "k")
    assert await store.complete(alice, await claimed(store, alice), response(b"alice"))
    assert (await store.claim(bob, FP, 60)).status is ClaimStatus.CLAIMED
    claim = await store.claim(alice, FP, 60)
    assert claim.response is not None
    assert claim.response.body == b"alice"


async def test_one_principal_cannot_evict_another_principals_responses(
    backend: Backend,
) -> None:
    store = backend.make_fair_store(per_principal=5)
    principal = Fingerprinter().principal
    quiet = [store_key(principal("Bearer quiet"), f"q{i}") for i in range(5)]
    noisy = [store_key(principal("Bearer noisy"), f"n{i}") for i in range(20)]
    for key in quiet + noisy:
        assert await store.complete(key, await claimed(store, key), response(key.encode()))

    for key in quiet:
        assert (await store.claim(key, FP, 60)).status is ClaimStatus.COMPLETED, key
    kept = [(await store.claim(key, FP, 60)).status is ClaimStatus.COMPLETED for key in noisy]
    assert kept == [False] * 15 + [True] * 5  # the noisy one's newest five


def test_only_a_store_that_never_waits_is_a_sync_store(store: Store) -> None:
    assert isinstance(store, SyncStore) == isinstance(store, MemoryStore)
