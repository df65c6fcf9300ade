"""RedisRegistry: workers that register with one controller are seen by every other."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sloguard._clock import ManualClock
from sloguard.routing import create_controller_app
from sloguard.routing.redis_registry import RedisRegistry
from tests.redis_server import PrivateRedis, RedisKeys
from tests.servers import serving

CAP = "convert:document_to_pdf"


@pytest.fixture
async def pair(redis_keys: RedisKeys, clock: ManualClock) -> AsyncIterator[list[RedisRegistry]]:
    """Two controllers' registries on one Redis (never started: no sync loop)."""
    registries = [
        RedisRegistry(redis_keys.url, prefix=redis_keys.prefix, heartbeat_ttl_s=10, clock=clock)
        for _ in range(2)
    ]
    yield registries
    for registry in registries:
        await registry.close()


async def test_a_worker_joining_one_is_routed_to_by_the_other(
    pair: list[RedisRegistry],
) -> None:
    one, other = pair
    assert await one.join("w1", "http://127.0.0.1:9001/", [CAP]) is False
    assert other.choose(CAP) is None  # not read yet
    await other.refresh()
    chosen = other.choose(CAP)

    assert chosen is not None
    assert (chosen.id, chosen.url, chosen.capabilities) == ("w1", "http://127.0.0.1:9001", {CAP})
    assert await other.join("w1", "http://127.0.0.1:9001", [CAP]) is True  # known to Redis


async def test_expiry_and_leaving_remove_a_worker_from_every_controller(
    pair: list[RedisRegistry], redis_keys: RedisKeys
) -> None:
    one, other = pair
    await one.join("w1", "http://a:1", [CAP])
    await one.join("w2", "http://b:1", [CAP])
    await other.refresh()
    beat = await other.beat("w1")  # a heartbeat through the other controller renews it
    await redis_keys.travel(9)
    assert await one.beat("w1") is not None
    await redis_keys.travel(2)  # w2's registration expires; w1 was renewed 2 s ago
    await one.refresh()
    await other.refresh()
    after_expiry = [sorted(w.id for w in r) for r in pair]
    assert await other.leave("w1") is True
    await one.refresh()

    assert beat is not None
    assert after_expiry == [["w1"], ["w1"]]
    assert len(one) == len(other) == 0
    assert await one.beat("w2") is None  # expired: the worker must join again


async def test_the_heartbeat_age_comes_from_the_keys_ttl_and_health_stays_local(
    pair: list[RedisRegistry], redis_keys: RedisKeys
) -> None:
    one, other = pair
    await one.join("w1", "http://a:1", [CAP])
    await redis_keys.travel(4)
    await other.refresh()
    [listed] = other.snapshot()
    worker = other.get("w1")
    assert worker is not None
    other.unreachable(worker, "ConnectError")
    await one.refresh()

    assert 3.9 <= listed["heartbeat_age_s"] <= 4.5
    assert listed["healthy"] is True
    assert other.choose(CAP) is None
    assert one.choose(CAP) is not None


async def test_an_unreadable_registration_is_ignored(
    pair: list[RedisRegistry], redis_keys: RedisKeys
) -> None:
    one, _ = pair
    entries = {
        "junk": b"{not json",
        "bad-cap": b'{"url": "http://a:1", "capabilities": ["nope"]}',
        "bad-url": b'{"url": "http://a:99999", "capabilities": ["a:b"]}',
    }
    for worker_id, value in entries.items():
        await redis_keys.admin.set(redis_keys.prefix + worker_id, value, px=10_000)
        await redis_keys.admin.sadd(one.index, worker_id)
    await one.join("w1", "http://a:1", [CAP])
    await one.refresh()

    assert [w.id for w in one] == ["w1"]


async def test_every_key_expires_and_the_index_goes_with_the_last_worker(
    pair: list[RedisRegistry], redis_keys: RedisKeys
) -> None:
    one, other = pair
    await one.join("w1", "http://a:1", [CAP])
    await redis_keys.travel(5)
    await other.join("w2", "http://a:2", [CAP])
    ttls = {name: await redis_keys.admin.pttl(name) for name in await redis_keys.names()}
    await redis_keys.travel(5)  # w1 expires; the index lives on with w2
    await one.refresh()
    after_w1 = [w.id for w in one]
    await redis_keys.travel(5)

    assert set(ttls) == {
        one.index.encode(),
        (one.prefix + "w1").encode(),
        one.prefix.encode() + b"w2",
    }
    assert all(0 < ttl <= 10_000 for ttl in ttls.values())
    assert after_w1 == ["w2"]
    assert await redis_keys.names() == []


async def test_static_workers_stay_local_and_survive_a_refresh(pair: list[RedisRegistry]) -> None:
    one, other = pair
    one.register("static-1", "http://s:1", [CAP], static=True)
    await one.refresh()
    await other.refresh()

    assert [w.id for w in one] == ["static-1"]
    assert len(other) == 0


async def test_with_redis_down_writes_are_503_problems_and_reads_keep_the_last_view(
    private_redis: PrivateRedis,
) -> None:
    registry = RedisRegistry(private_redis.url, prefix="t:", sync_interval_s=0.01)
    await registry.join("w1", "http://127.0.0.1:9001", [CAP])
    app = create_controller_app(registry=registry, health_interval_s=None, registry_token="t")
    auth = {"authorization": "Bearer t"}
    spec = {"id": "w2", "url": "http://127.0.0.1:9002", "capabilities": [CAP]}
    with serving(app) as url:
        async with httpx.AsyncClient(base_url=url, headers=auth) as client:
            private_redis.stop()
            answers = [
                await client.post("/workers", json=spec),
                await client.post("/workers/w1/heartbeat"),
                await client.delete("/workers/w1"),
            ]
            listed = (await client.get("/workers")).json()["workers"]
            health = (await client.get("/healthz")).json()

    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["error"] == "registry_unavailable"
        assert answer.headers["retry-after"] == "1"
    assert [w["id"] for w in listed] == ["w1"]  # the last view
    sync = health["loops"]["worker_registry_sync"]
    assert sync["failures"] >= 1
    assert sync["state"] == "running"
