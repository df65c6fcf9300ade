"""RedisStore on real Redis servers: replicas, leases, fencing, TTLs, round trips, failures.

The Store contract and the middleware's HTTP behaviour run against RedisStore
too (the ``backend`` fixture in conftest.py); this module covers what only a
shared, networked store has.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from sloguard import ConfigurationError, IdempotencyMiddleware, RedisStore, StoreUnavailable
from sloguard.idempotency import ClaimStatus, StoredResponse
from sloguard.idempotency.keys import Fingerprinter, store_key
from tests.idempotency.conftest import Handlers
from tests.redis_server import PrivateRedis, RedisKeys, free_port

KEY = {"Idempotency-Key": "order-42"}
STORE_KEY = store_key(Fingerprinter().principal(""), "order-42")
"""The store key of a POST /items with KEY and no Authorization."""


def fingerprint_of(body: bytes) -> bytes:
    """The fingerprint of a POST /items with ``body`` and no query."""
    return Fingerprinter().request("POST", "/items", b"", [body])


def is_replay(response: httpx.Response) -> bool:
    return response.headers.get("idempotent-replayed") == "true"


class Tally:
    """Claims answered by any replica; ``reached`` is set once there are ``target`` of them."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.reached = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


class CountingStore(RedisStore):
    """A RedisStore that counts the claims it has answered."""

    def __init__(self, *args: Any, tally: Tally | None = None, **options: Any) -> None:
        super().__init__(*args, **options)
        self.claims = 0
        self.tally = tally

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Any:
        claim = await super().claim(key, fingerprint, lease_seconds)
        self.claims += 1
        if self.tally is not None:
            self.tally.add()
        return claim


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """In-process clients, each for one replica: an app behind its own middleware."""
    made: list[httpx.AsyncClient] = []

    def replica(handlers: Handlers, store: RedisStore, **options: Any) -> httpx.AsyncClient:
        app = IdempotencyMiddleware(handlers.app(), store=store, **options)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        made.append(client)
        return client

    yield replica
    for client in made:
        await client.aclose()


@pytest.fixture
async def stores(redis_keys: RedisKeys) -> AsyncIterator[Callable[..., CountingStore]]:
    """RedisStores under the test's prefix, each with a client of its own (a replica)."""
    made: list[RedisStore] = []

    def store(url: str | None = None, **options: Any) -> CountingStore:
        options.setdefault("prefix", redis_keys.prefix)
        options.setdefault("timeout_seconds", 5.0)
        made.append(CountingStore(url or redis_keys.url, **options))
        return made[-1]

    yield store
    for made_store in made:
        await made_store.aclose()


def counting_client(url: str) -> tuple[aioredis.Redis, Callable[[], int]]:
    """A client that counts the commands it sends: each is one round trip, awaited alone."""
    sent = 0

    class CountingConnection(aioredis.Connection):
        async def send_packed_command(
            self, command: bytes | str | Iterable[bytes], check_health: bool = True
        ) -> None:
            nonlocal sent
            sent += 1
            await super().send_packed_command(command, check_health)

    pool = aioredis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return aioredis.Redis.from_pool(pool), lambda: sent


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"prefix": ""}, "prefix"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": float("inf")}, "ttl_seconds"),
        ({"lease_seconds": -1}, "lease_seconds"),
        ({"lease_seconds": float("nan")}, "lease_seconds"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": "50ms"}, "timeout_seconds"),
        ({"on_error": "ignore"}, "on_error"),
        ({"max_entries_per_principal": 0}, "max_entries_per_principal"),
        ({"max_entries_per_principal": 1.5}, "max_entries_per_principal"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        RedisStore("redis://127.0.0.1:6379/0", **options)


def test_a_bad_url_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="not a Redis URL"):
        RedisStore("http://127.0.0.1:6379/0")


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (redis.Redis(), "asyncio client"),
        (aioredis.Redis(decode_responses=True), "decode_responses=False"),
        (object(), "redis:// URL or a redis.asyncio.Redis client"),
    ],
    ids=["sync-client", "decoding-client", "not-a-client"],
)
def test_a_client_that_cannot_serve_is_rejected(client: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        RedisStore(client)


def test_without_redis_py_the_import_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` fail
    monkeypatch.delitem(sys.modules, "sloguard.idempotency.redis")
    with pytest.raises(ImportError, match=re.escape("pip install 'sloguard[redis]'")):
        importlib.import_module("sloguard.idempotency.redis")


# --- what lands in Redis -------------------------------------------------------------


async def test_redis_keys_are_digests_that_hold_no_credentials(
    stores: Callable[..., CountingStore],
    clients: Callable[..., httpx.AsyncClient],
    redis_keys: RedisKeys,
) -> None:
    client = clients(Handlers(), stores())
    secret = {**KEY, "Authorization": "Bearer top-secret"}
    await client.post("/items", content=b"payload", headers=secret)
    assert is_replay(await client.post("/items", content=b"payload", headers=secret))

    names = await redis_keys.names()
    assert len(names) == 1
    assert re.fullmatch(re.escape(redis_keys.prefix.encode()) + rb"[0-9a-f]{32}", names[0])
    value = await redis_keys.admin.get(names[0])
    assert b"top-secret" not in value
    assert b"order-42" not in value


async def test_a_small_request_body_never_reaches_redis(
    stores: Callable[..., CountingStore],
    clients: Callable[..., httpx.AsyncClient],
    redis_keys: RedisKeys,
) -> None:
    # Under 128 bytes, a body was its own fingerprint: stored verbatim in the lease
    # and in the record, for the key's whole TTL.
    card = b'{"card": "4242424242424242", "cvc": "123"}'
    handlers = Handlers()
    client = clients(handlers, stores())
    held = await handlers.hold(client.post("/items", content=card, headers=KEY))
    [lease_name] = await redis_keys.names()
    lease = await redis_keys.admin.get(lease_name)
    handlers.gate.set()
    await held
    other = {"Idempotency-Key": "another"}
    await client.post("/stream", content=card, headers=other)  # a handler that echoes nothing
    record = await redis_keys.admin.get(
        next(name for name in await redis_keys.names() if name != lease_name)
    )

    assert lease[:1] == b"L"
    assert record[:1] == b"R"
    for value in (lease, record):
        assert b"4242" not in value
        assert b"cvc" not in value


async def test_every_key_has_a_ttl_and_nothing_else_is_written(
    stores: Callable[..., CountingStore],
    clients: Callable[..., httpx.AsyncClient],
    redis_keys: RedisKeys,
) -> None:
    handlers = Handlers()
    replicas = [
        clients(handlers, stores(ttl_seconds=3600, lease_seconds=30)),
        clients(handlers, stores(ttl_seconds=3600, lease_seconds=30)),
    ]
    for i in range(20):  # completed, then replayed from the other replica
        await replicas[i % 2].post("/items", headers={"Idempotency-Key": f"done-{i}"})
        await replicas[(i + 1) % 2].post("/items", headers={"Idempotency-Key": f"done-{i}"})
    await replicas[0].post("/fail", headers={"Idempotency-Key": "released-5xx"})
    await replicas[1].post("/boom", headers={"Idempotency-Key": "released-exception"})
    await replicas[0].post("/big", headers={"Idempotency-Key": "released-too-big"})
    await replicas[1].post("/items", content=b"other", headers={"Idempotency-Key": "done-0"})
    held = await handlers.hold(replicas[0].post("/items", headers={"Idempotency-Key": "held"}))
    assert (await replicas[1].post("/items", headers={"Idempotency-Key": "held"})).status_code == (
        409
    )

    names = await redis_keys.names()
    ttls = {name: await redis_keys.admin.pttl(name) for name in names}
    assert len(names) == 20 + 1  # the responses and the lease in flight: no index, no counter
    assert all(0 < ttl <= 3_600_000 for ttl in ttls.values()), ttls
    leases = [name for name in names if (await redis_keys.admin.getrange(name, 0, 0)) == b"L"]
    assert len(leases) == 1
    assert 0 < ttls[leases[0]] <= 30_000

    handlers.gate.set()
    assert (await held).status_code == 201
    ttls_after = [await redis_keys.admin.pttl(name) for name in await redis_keys.names()]
    assert len(ttls_after) == 21
    assert all(ttl > 0 for ttl in ttls_after)


async def test_the_store_caps_the_lease_the_middleware_asks_for(
    stores: Callable[..., CountingStore], redis_keys: RedisKeys
) -> None:
    store = stores(lease_seconds=5)
    await store.claim("long", b"fp", 600)
    await store.claim("short", b"fp", 2)
    lease_ttls = sorted([await redis_keys.admin.pttl(name) for name in await redis_keys.names()])
    assert 0 < lease_ttls[0] <= 2_000 < lease_ttls[1] <= 5_000


async def test_a_corrupt_value_is_a_store_failure_not_a_crash(
    stores: Callable[..., CountingStore], redis_keys: RedisKeys
) -> None:
    store = stores()
    await store.claim("k", b"fp", 60)
    [name] = await redis_keys.names()
    await redis_keys.admin.set(name, b"R\x00", px=60_000)

    with pytest.raises(StoreUnavailable, match="unreadable value"):
        await store.claim("k", b"fp", 60)
    assert store.errors == 1


async def test_a_replay_is_one_round_trip_and_a_miss_two(redis_keys: RedisKeys) -> None:
    client, sent = counting_client(redis_keys.url)
    store = RedisStore(client, prefix=redis_keys.prefix, timeout_seconds=5.0)
    handlers = Handlers()
    app = IdempotencyMiddleware(handlers.app(), store=store)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await http.post("/items", headers={"Idempotency-Key": "warm-up"})  # connects

            async def round_trips(path: str, headers: dict[str, str]) -> int:
                before = sent()
                await http.post(path, headers=headers)
                return sent() - before

            assert await round_trips("/items", KEY) == 2  # claim, complete
            assert await round_trips("/items", KEY) == 1  # replay: claim answers it
            assert await round_trips("/fail", {"Idempotency-Key": "failing"}) == 2  # claim, release
            assert await round_trips("/items", {}) == 0  # no key: Redis is not involved
            held = await handlers.hold(http.post("/items", headers={"Idempotency-Key": "held"}))
            assert await round_trips("/items", {"Idempotency-Key": "held"}) == 1  # 409
            handlers.gate.set()
            await held
    finally:
        await client.aclose()


# --- replicas ------------------------------------------------------------------------


async def test_fifty_concurrent_requests_on_two_replicas_run_the_handler_once(
    stores: Callable[..., CountingStore], clients: Callable[..., httpx.AsyncClient]
) -> None:
    handlers = Handlers()  # one count for both replicas: the work they must not repeat
    tally = Tally(50)
    store_a, store_b = stores(tally=tally), stores(tally=tally)
    replicas = [
        clients(handlers, store_a, wait_seconds=30),
        clients(handlers, store_b, wait_seconds=30),
    ]
    handlers.gate.clear()

    tasks = [
        asyncio.create_task(replicas[i % 2].post("/items", content=b"same", headers=KEY))
        for i in range(50)
    ]
    # Every request has claimed (one holds the key, 49 wait) before the handler may finish.
    await asyncio.wait_for(tally.reached.wait(), timeout=30)
    handlers.gate.set()
    responses = await asyncio.gather(*tasks)

    assert handlers.calls["items"] == 1
    assert {r.status_code for r in responses} == {201}
    assert {r.content for r in responses} == {responses[0].content}
    assert sum(is_replay(r) for r in responses) == 49
    assert tally.count > 50  # the 49 that waited claimed again, and found the response


async def test_a_replica_that_crashed_holds_its_key_only_until_its_lease_expires(
    stores: Callable[..., CountingStore], clients: Callable[..., httpx.AsyncClient]
) -> None:
    # Replica A claims the key with a short lease, then dies: it never completes or releases.
    crashed = stores()
    claim = await crashed.claim(STORE_KEY, fingerprint_of(b"payload"), 0.3)
    assert claim.status is ClaimStatus.CLAIMED
    await crashed.aclose()

    handlers = Handlers()
    store_b = stores()
    replica_b = clients(handlers, store_b)
    retry = await replica_b.post("/items", content=b"payload", headers=KEY)
    if retry.status_code == 409:  # still within the lease: wait until Redis expires it
        await asyncio.wait_for(store_b.wait(STORE_KEY), timeout=30)
        retry = await replica_b.post("/items", content=b"payload", headers=KEY)

    assert retry.status_code == 201
    assert handlers.calls["items"] == 1
    assert is_replay(await replica_b.post("/items", content=b"payload", headers=KEY))


async def test_a_replica_whose_lease_expired_cannot_overwrite_the_one_that_took_over(
    stores: Callable[..., CountingStore],
    clients: Callable[..., httpx.AsyncClient],
    redis_keys: RedisKeys,
) -> None:
    slow, fast = Handlers(), Handlers()
    replica_a = clients(slow, stores(), lease_seconds=30)
    replica_b = clients(fast, stores(), lease_seconds=30)
    late = await slow.hold(replica_a.post("/items", content=b"x", headers=KEY))

    assert (await replica_b.post("/items", content=b"x", headers=KEY)).status_code == 409
    await redis_keys.travel(31)  # A's lease runs out while its handler still runs
    takeover = await replica_b.post("/items", content=b"x", headers=KEY)
    slow.gate.set()
    late_response = await late

    assert takeover.status_code == late_response.status_code == 201
    assert slow.calls["items"] == fast.calls["items"] == 1
    for replica in (replica_a, replica_b):
        replay = await replica.post("/items", content=b"x", headers=KEY)
        assert is_replay(replay)
        assert replay.content == takeover.content
    # A's late complete was fenced off by its token: Redis holds B's response.
    [name] = await redis_keys.names()
    assert (await redis_keys.admin.get(name)).endswith(takeover.content)


# --- failure modes ----------------------------------------------------------------------


async def test_fail_closed_answers_503_without_running_the_handler(
    clients: Callable[..., httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    handlers = Handlers()
    client = clients(handlers, store)
    secret = {**KEY, "Authorization": "Bearer top-secret"}
    try:
        with caplog.at_level(logging.DEBUG, logger="sloguard.idempotency"):
            responses = [await client.post("/items", headers=secret) for _ in range(3)]
            unkeyed = await client.post("/items")
    finally:
        await store.aclose()

    for response in responses:
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"] == "idempotency_store_unavailable"
        assert "Idempotency-Key" in response.json()["detail"]
    assert unkeyed.status_code == 201  # requests without a key never touch the store
    assert handlers.calls["items"] == 1
    assert store.errors == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once when Redis stops answering, not once per request
    assert "answering 503" in warnings[0].getMessage()
    assert "top-secret" not in caplog.text


async def test_fail_open_runs_the_handler_and_says_nothing_was_stored(
    clients: Callable[..., httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", on_error="fail_open")
    handlers = Handlers()
    client = clients(handlers, store)
    try:
        with caplog.at_level(logging.WARNING, logger="sloguard.idempotency"):
            first = await client.post("/items", content=b"payload", headers=KEY)
            second = await client.post("/items", content=b"payload", headers=KEY)
    finally:
        await store.aclose()

    for n, response in enumerate((first, second), start=1):
        assert response.status_code == 201
        assert response.headers["idempotency-stored"] == "false"
        assert response.json() == {"n": n, "echo": "payload"}
        assert not is_replay(response)
    assert handlers.seen_bodies == [b"payload", b"payload"]
    # Only the two claims failed: the middleware tried no complete and no release.
    assert store.errors == 2
    assert "running requests without idempotency" in caplog.text


async def test_a_slow_redis_fails_closed_within_the_timeout_then_recovers(
    private_redis: PrivateRedis, clients: Callable[..., httpx.AsyncClient]
) -> None:
    # A timeout well under the 1 s pause, and far enough above a busy machine's
    # scheduling delays that the request after the pause does not time out too.
    store = RedisStore(private_redis.url, timeout_seconds=0.25)
    handlers = Handlers()
    client = clients(handlers, store)
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        await store.claim("warm-up", b"", 60)  # connect before the server stalls
        await admin.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        stalled = await client.post("/items", headers=KEY)
        errors_while_stalled = store.errors
        await admin.ping()  # answered once the pause is over
        recovered = await client.post("/items", headers=KEY)
        replay = await client.post("/items", headers=KEY)
    finally:
        await admin.aclose()
        await store.aclose()

    assert stalled.status_code == 503
    assert stalled.json()["error"] == "idempotency_store_unavailable"
    assert errors_while_stalled == 1
    assert recovered.status_code == 201
    assert is_replay(replay)
    assert handlers.calls["items"] == 1


async def test_the_app_recovers_by_itself_when_redis_comes_back(
    private_redis: PrivateRedis,
    clients: Callable[..., httpx.AsyncClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisStore(private_redis.url, timeout_seconds=5.0)
    handlers = Handlers()
    client = clients(handlers, store)
    try:
        with caplog.at_level(logging.INFO, logger="sloguard.idempotency"):
            before = await client.post("/items", headers={"Idempotency-Key": "before"})
            private_redis.stop()
            during = await client.post("/items", headers={"Idempotency-Key": "during"})
            private_redis.start()  # empty, and with no scripts loaded
            after = await client.post("/items", headers={"Idempotency-Key": "after"})
            replay = await client.post("/items", headers={"Idempotency-Key": "after"})
    finally:
        await store.aclose()

    assert before.status_code == 201
    assert during.status_code == 503
    assert after.status_code == 201
    assert is_replay(replay)
    assert store.errors == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("unavailable" in m for m in messages)
    assert any("answers again" in m for m in messages)


async def test_a_lost_script_cache_costs_one_extra_round_trip_once(
    private_redis: PrivateRedis,
) -> None:
    client, sent = counting_client(private_redis.url)
    store = RedisStore(client, prefix="t:", timeout_seconds=5.0)
    admin = aioredis.Redis.from_url(private_redis.url)
    response = StoredResponse(b"fp", 201, (), b"ok")
    try:
        await store.complete("k", (await store.claim("k", b"fp", 60)).token, response)
        await admin.script_flush()  # as after a restart or failover

        before = sent()
        assert (await store.claim("k", b"fp", 60)).response == response
        after_flush = sent() - before
        before = sent()
        assert (await store.claim("k", b"fp", 60)).response == response
        next_time = sent() - before
    finally:
        await admin.aclose()
        await client.aclose()

    assert after_flush == 2  # EVALSHA answered NOSCRIPT, then EVAL
    assert next_time == 1
    assert store.errors == 0


# --- each principal's share -------------------------------------------------------------


async def test_a_principal_keeps_at_most_its_cap_of_responses(
    stores: Callable[..., CountingStore], redis_keys: RedisKeys
) -> None:
    store = stores(max_entries_per_principal=2, ttl_seconds=3600)
    alice = Fingerprinter().principal("Bearer top-secret")
    keys = [store_key(alice, f"order-{i}") for i in range(4)]
    for key in keys:
        token = (await store.claim(key, b"fp", 60)).token
        assert await store.complete(key, token, StoredResponse(b"fp", 201, (), b"ok"))

    kept = [(await store.claim(key, b"fp", 60)).status for key in keys]
    assert kept[2:] == [ClaimStatus.COMPLETED] * 2
    names = await redis_keys.names()
    index = [name for name in names if name.startswith(redis_keys.prefix.encode() + b"p:")]
    assert len(index) == 1  # alice's: the names of her records, oldest first
    assert await redis_keys.admin.zcard(index[0]) == 2
    assert 0 < await redis_keys.admin.pttl(index[0]) <= 3_600_000
    assert not any(b"top-secret" in name or alice.encode() in name for name in names)


async def test_the_cap_deletes_old_records_never_a_lease_in_flight(
    stores: Callable[..., CountingStore], redis_keys: RedisKeys
) -> None:
    store = stores(max_entries_per_principal=2, ttl_seconds=100)
    k1, k2, k3 = (store_key("", f"k{i}") for i in range(1, 4))

    async def complete(key: str) -> None:
        token = (await store.claim(key, b"fp", 60)).token
        assert await store.complete(key, token, StoredResponse(b"fp", 201, (), key.encode()))

    await complete(k1)
    await redis_keys.travel(50)
    await complete(k2)
    await redis_keys.travel(60)  # k1's record has expired; its name is still indexed
    claim = await store.claim(k1, b"fp", 60)
    assert claim.status is ClaimStatus.CLAIMED
    await complete(k3)  # over the cap: the index's oldest name is k1's, now a lease

    assert (await store.claim(k1, b"fp", 60)).status is ClaimStatus.IN_FLIGHT
    assert await store.complete(k1, claim.token, StoredResponse(b"fp", 201, (), b"k1"))
    kept = [(await store.claim(key, b"fp", 60)).status for key in (k1, k2, k3)]
    assert kept == [ClaimStatus.COMPLETED, ClaimStatus.CLAIMED, ClaimStatus.COMPLETED]


# --- timeouts leave nothing behind -------------------------------------------------------

BUSY_SCRIPT = """
local start = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > tonumber(ARGV[1]) then return 0 end
end
"""


async def busy_server(url: str, seconds: float) -> asyncio.Task[Any]:
    """Keep the server busy running a script for ``seconds``, as a slow command or a
    stalled host would: commands sent meanwhile run afterwards, answered too late.
    Returns once the server has begun (a probe's PING goes unanswered)."""
    runner = aioredis.Redis.from_url(url, single_connection_client=True)

    async def run() -> Any:
        try:
            return await runner.eval(BUSY_SCRIPT, 0, int(seconds * 1e6))
        finally:
            await runner.aclose()

    busy = asyncio.create_task(run())
    probe = aioredis.Redis.from_url(url, single_connection_client=True)
    try:
        while True:
            try:
                async with asyncio.timeout(0.05):
                    await probe.ping()
            except TimeoutError:
                return busy
    finally:
        await probe.aclose()


async def test_a_claim_that_times_out_leaves_no_lease_behind(
    private_redis: PrivateRedis, clients: Callable[..., httpx.AsyncClient]
) -> None:
    # The claim runs once the server is free again, after the client gave up: its lease
    # used to lock the key for 60 s (409 to every retry) although nothing ran.
    store = RedisStore(private_redis.url, timeout_seconds=0.25)
    observer = RedisStore(private_redis.url, timeout_seconds=5.0)
    admin = aioredis.Redis.from_url(private_redis.url)
    handlers = Handlers()
    client = clients(handlers, store)
    try:
        await store.claim("warm-up", b"", 60)  # connect before the server stalls
        busy = await busy_server(private_redis.url, 1.0)
        stalled = await client.post("/items", headers=KEY)
        await busy
        await asyncio.wait_for(observer.wait(STORE_KEY), timeout=10)  # the lease is gone
        retry = await client.post("/items", headers=KEY)
    finally:
        await admin.aclose()
        await observer.aclose()
        await store.aclose()

    assert stalled.status_code == 503
    assert retry.status_code == 201
    assert handlers.calls["items"] == 1


async def test_every_redis_call_is_bounded_by_the_timeout(private_redis: PrivateRedis) -> None:
    store = RedisStore(private_redis.url, timeout_seconds=0.2)
    admin = aioredis.Redis.from_url(private_redis.url)
    response = StoredResponse(b"fp", 201, (), b"ok")
    try:
        token = (await store.claim("k", b"fp", 60)).token  # connects
        busy = await busy_server(private_redis.url, 2.0)
        # Each would be answered once the server is free again: failing instead, every
        # one of them came back before it was.
        calls = [
            store.claim("other", b"fp", 60),
            store.renew("k", token, 60),
            store.complete("k", token, response),
            store.release("k", token),
            store.wait("k"),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await call
        assert not busy.done()
        await store.aclose()  # bounded too, with a timed-out claim's lease still pending
        assert not busy.done()
        await busy
    finally:
        await admin.aclose()
        await store.aclose()
    assert store.errors == 5
