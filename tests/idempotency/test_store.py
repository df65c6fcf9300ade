"""The Store contract, checked against every store kind (MemoryStore, RedisStore)."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sloguard import Store
from sloguard.idempotency import ClaimStatus, StoredResponse
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


async def test_an_expired_lease_nobody_took_over_may_still_complete(
    store: Store, travel: Travel
) -> None:
    token = await claimed(store, "k")
    await travel(600)
    assert await store.complete("k", token, response())
    assert (await store.claim("k", FP, 60)).status is ClaimStatus.COMPLETED


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
