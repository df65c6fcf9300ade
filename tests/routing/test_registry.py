"""WorkerRegistry: membership, health, heartbeat expiry and power of two choices; and what
both registries (this process's, and Redis's) refuse of the writes workers make."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from sloguard import ConfigurationError
from sloguard._clock import ManualClock
from sloguard.exceptions import RegistryFull, StaticWorker, WorkerIdInUse
from sloguard.routing import WorkerRegistry
from sloguard.routing.redis_registry import RedisRegistry
from tests.redis_server import RedisKeys

CAP = "convert:document_to_pdf"


def test_p2c_never_picks_the_busiest_of_three_and_spreads_over_the_others() -> None:
    registry = WorkerRegistry(random_source=random.Random(7).randrange)
    for worker_id, outstanding in [("idle", 0), ("light", 1), ("busy", 9)]:
        registry.register(worker_id, f"http://{worker_id}", [CAP]).outstanding = outstanding

    picks = Counter(registry.choose(CAP).id for _ in range(300))  # type: ignore[union-attr]

    # Of any two, the busier loses: "busy" never wins, "light" wins only against "busy".
    assert picks["busy"] == 0
    assert picks["idle"] > picks["light"] > 0


def test_choose_skips_excluded_unhealthy_and_other_capabilities() -> None:
    registry = WorkerRegistry()
    registry.register("a", "http://a", [CAP])
    registry.register("b", "http://b", [CAP])
    registry.register("c", "http://c", ["classify:email"])
    registry.unreachable(registry.get("a"), "ConnectError")  # type: ignore[arg-type]

    assert registry.choose(CAP).id == "b"  # type: ignore[union-attr]
    assert registry.choose(CAP, exclude=["b"]) is None
    assert registry.choose("nothing:here") is None
    assert registry.serves(CAP)
    assert not registry.serves("nothing:here")


def test_heartbeats_expire_only_for_workers_registered_over_http(clock: ManualClock) -> None:
    registry = WorkerRegistry(clock=clock, heartbeat_ttl_s=5)
    dynamic = registry.register("dyn", "http://d", [CAP])
    static = registry.register("static", "http://s", [CAP], static=True)

    clock.advance(5)
    assert registry.is_healthy(dynamic)
    clock.advance(0.1)
    assert not registry.is_healthy(dynamic)
    assert registry.is_healthy(static)
    registry.heartbeat("dyn")
    assert registry.is_healthy(dynamic)
    assert registry.heartbeat("unknown") is None


def test_a_failed_check_ejects_after_the_threshold_and_one_pass_restores() -> None:
    registry = WorkerRegistry()
    worker = registry.register("a", "http://a", [CAP])
    registry.check_failed(worker, "boom", unhealthy_after=2)
    assert registry.is_healthy(worker)
    registry.check_failed(worker, "boom again", unhealthy_after=2)
    assert not registry.is_healthy(worker)
    registry.check_passed(worker)
    assert registry.is_healthy(worker)
    assert worker.last_error == "boom again"  # kept for GET /workers


def test_registering_again_keeps_the_in_flight_count() -> None:
    registry = WorkerRegistry()
    registry.register("a", "http://a/", [CAP]).outstanding = 3
    again = registry.register("a", "http://a2", ["classify:email"])
    assert (again.url, again.outstanding, again.capabilities) == (
        "http://a2",
        3,
        frozenset({"classify:email"}),
    )


def test_bad_options_and_capabilities_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="heartbeat_ttl_s"):
        WorkerRegistry(heartbeat_ttl_s=0)
    with pytest.raises(ConfigurationError, match="not verb:name"):
        WorkerRegistry().register("a", "http://a", ["pdf"])
    with pytest.raises(ConfigurationError, match="max_workers"):
        WorkerRegistry(max_workers=0)
    with pytest.raises(ConfigurationError, match="url: port must be"):
        WorkerRegistry().register("a", "http://127.0.0.1:99999", [CAP])
    with pytest.raises(ConfigurationError, match="id: not 1 to 200"):
        WorkerRegistry().register("a#b", "http://a", [CAP])


# -- both registries: the same refusals ----------------------------------------------


class Shared:
    """A registry under test and how to let time pass for it (its clock, and for Redis
    its keys' time to live too)."""

    def __init__(self, registry: WorkerRegistry, clock: ManualClock, keys: RedisKeys | None):
        self.registry = registry
        self._clock = clock
        self._keys = keys

    async def travel(self, seconds: float) -> None:
        self._clock.advance(seconds)
        if self._keys is not None:
            await self._keys.travel(seconds)


@pytest.fixture(params=["memory", "redis"])
async def shared(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Shared]:
    if request.param == "memory":
        yield Shared(WorkerRegistry(heartbeat_ttl_s=10, max_workers=2, clock=clock), clock, None)
        return
    keys = RedisKeys(request.getfixturevalue("redis_url"))
    registry = RedisRegistry(
        keys.url, prefix=keys.prefix, heartbeat_ttl_s=10, max_workers=2, clock=clock
    )
    yield Shared(registry, clock, keys)
    await registry.close()
    await keys.close()


async def test_a_live_id_keeps_its_url_and_a_silent_one_frees_it(shared: Shared) -> None:
    registry = shared.registry
    assert await registry.join("w1", "http://10.0.0.1:80/", [CAP]) is False
    with pytest.raises(WorkerIdInUse) as refused:
        await registry.join("w1", "http://10.6.6.6:80", [CAP])
    assert refused.value.url == "http://10.0.0.1:80"
    assert await registry.join("w1", "HTTP://10.0.0.1:80", ["a:b"]) is True  # the same URL
    await shared.travel(6)
    assert await registry.beat("w1") is not None
    await shared.travel(6)  # 6 s since the heartbeat: still live
    with pytest.raises(WorkerIdInUse):
        await registry.join("w1", "http://10.6.6.6:80", [CAP])
    await shared.travel(5)  # 11 s: expired
    await registry.join("w1", "http://10.0.0.2:80", [CAP])
    await registry.refresh()
    worker = registry.get("w1")
    assert worker is not None
    assert (worker.url, worker.capabilities) == ("http://10.0.0.2:80", {CAP})


async def test_leaving_frees_the_id_for_another_url(shared: Shared) -> None:
    registry = shared.registry
    await registry.join("w1", "http://10.0.0.1", [CAP])
    assert await registry.leave("w1") is True
    assert await registry.join("w1", "http://10.0.0.2", [CAP]) is False
    assert await registry.leave("nobody") is False


async def test_static_workers_are_never_written_by_joins_beats_or_leaves(shared: Shared) -> None:
    registry = shared.registry
    registry.register("s1", "http://10.0.0.1", [CAP], static=True)
    for write in (
        registry.join("s1", "http://10.6.6.6", [CAP]),
        registry.beat("s1"),
        registry.leave("s1"),
    ):
        with pytest.raises(StaticWorker):
            await write
    await registry.refresh()
    worker = registry.get("s1")
    assert worker is not None
    assert (worker.url, worker.static, worker.last_heartbeat) == ("http://10.0.0.1", True, None)


async def test_at_most_max_workers_live_at_once(shared: Shared) -> None:
    registry = shared.registry
    registry.register("static", "http://10.0.0.9", [CAP], static=True)  # not counted
    await registry.join("w1", "http://10.0.0.1", [CAP])
    await registry.join("w2", "http://10.0.0.2", [CAP])
    with pytest.raises(RegistryFull) as full:
        await registry.join("w3", "http://10.0.0.3", [CAP])
    assert full.value.limit == 2
    assert await registry.join("w1", "http://10.0.0.1", [CAP]) is True  # no more room taken
    await registry.leave("w2")
    await registry.join("w3", "http://10.0.0.3", [CAP])
    await shared.travel(6)
    await registry.beat("w3")
    await shared.travel(6)  # w1 expired, w3 live
    await registry.join("w4", "http://10.0.0.4", [CAP])
    with pytest.raises(RegistryFull):
        await registry.join("w5", "http://10.0.0.5", [CAP])
    await registry.refresh()
    live = sorted(w.id for w in registry if not w.static and registry.is_healthy(w))
    assert live == ["w3", "w4"]


async def test_a_bad_registration_writes_nothing(shared: Shared) -> None:
    registry = shared.registry
    for worker_id, url, caps in [
        ("w1", "http://10.0.0.1:0", [CAP]),
        ("w1", "http://u@10.0.0.1", [CAP]),
        ("w1", "http://10.0.0.1", ["pdf"]),
        ("w#1", "http://10.0.0.1", [CAP]),
    ]:
        with pytest.raises(ConfigurationError):
            await registry.join(worker_id, url, caps)
    await registry.refresh()
    assert len(registry) == 0


async def test_what_is_no_worker_id_names_no_worker_nor_any_key(shared: Shared) -> None:
    registry = shared.registry
    await registry.join("w1", "http://10.0.0.1", [CAP])
    for name in ("#index", "", "a/b", "w1 ", "x" * 201):
        assert await registry.beat(name) is None
        assert await registry.leave(name) is False
    await registry.refresh()
    assert [w.id for w in registry] == ["w1"]  # its index (in Redis) untouched
