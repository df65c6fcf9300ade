"""Hot-path cost of sloguard's middleware, in-process (ASGI calls, no server).

    pip install -e ".[bench]" && python benchmarks/hot_path.py

Every variant serves the same JSON POST handler on plain Starlette. Variants are
measured round-robin in the same run, so machine noise hits them alike; the
table gives the median and p99 of per-request times and the ratio of medians
to the bare app.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import itertools
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from starlette.types import ASGIApp, Message

from servers import bare_app, guarded_app, peer_app
from sloguard import IdempotencyMiddleware, MemoryStore
from sloguard._clock import Clock, monotonic

BODY = b'{"document": "report.docx", "format": "pdf", "pages": 12}'


def scope_for(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/items",
        "raw_path": b"/items",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"authorization", b"Bearer bench-token"),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


KeyMaker = Callable[[], list[tuple[bytes, bytes]]]


@dataclass
class Variant:
    name: str
    app: ASGIApp
    headers: KeyMaker
    expect_status: int = 201
    samples: list[float] = field(default_factory=list)


def no_key() -> list[tuple[bytes, bytes]]:
    return []


def fresh_keys(name: bytes) -> KeyMaker:
    counter = itertools.count()
    return lambda: [(b"idempotency-key", b"%s-%d" % (name, next(counter)))]


def same_key() -> list[tuple[bytes, bytes]]:
    return [(b"idempotency-key", b"replayed-key")]


async def request_once(variant: Variant) -> float:
    scope = scope_for(variant.headers())
    request: Message = {"type": "http.request", "body": BODY, "more_body": False}
    status = 0

    async def receive() -> Message:
        return request

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    start = time.perf_counter_ns()
    await variant.app(scope, receive, send)
    elapsed = time.perf_counter_ns() - start
    if status != variant.expect_status:
        raise RuntimeError(f"{variant.name}: status {status}, expected {variant.expect_status}")
    return elapsed / 1000


FULL_STACK_KINDS = ("no key", "miss", "replay")


def variants(*, redis_rows: bool = True, clock: Clock = monotonic) -> list[Variant]:
    """Every variant, in table order (``redis_rows`` False: none against Redis;
    ``clock``: SLOGuard's)."""
    guarded = partial(guarded_app, clock=clock)
    found = [
        Variant("bare Starlette app", bare_app(), no_key),
        Variant("IdempotencyMiddleware, no key", IdempotencyMiddleware(bare_app()), no_key),
        Variant(
            "IdempotencyMiddleware, miss (fresh key)",
            IdempotencyMiddleware(bare_app(), store=MemoryStore()),
            fresh_keys(b"miss"),
        ),
        Variant(
            "IdempotencyMiddleware, replay",
            IdempotencyMiddleware(bare_app(), store=MemoryStore()),
            same_key,
        ),
        Variant("SLOGuard full stack, no key", guarded(), no_key),
        Variant("SLOGuard full stack, miss", guarded(), fresh_keys(b"guard")),
        Variant("SLOGuard full stack, replay", guarded(), same_key),
        Variant("SLOGuard, metrics off, miss", guarded(metrics=False), fresh_keys(b"nom")),
        Variant("SLOGuard, tracing on, miss", guarded(tracing=True), fresh_keys(b"otel")),
    ]
    if redis_rows:
        found += redis_variants()
    try:
        peers = [peer_app(), peer_app()]
    except ImportError:
        print("asgi-idempotency-header not installed: pip install -e '.[bench]' to compare\n")
        return found
    found += [
        Variant("peer asgi-idempotency-header, miss", peers[0], fresh_keys(b"peer")),
        Variant("peer asgi-idempotency-header, replay", peers[1], same_key),
    ]
    return found


def redis_variants() -> list[Variant]:
    # RedisStore against the server at REDIS_URL, under a prefix of this run's own. Its
    # connections count the commands they send (each is one round trip); the counts per
    # request print after the table. The keys are deleted at exit (and expire in 10 min).
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis
        import redis.asyncio as aioredis

        from sloguard import RedisStore

        redis.Redis.from_url(redis_url, socket_connect_timeout=0.5).ping()
    except Exception as exc:  # ImportError, or no server: either way, no Redis rows
        print(f"RedisStore rows skipped: no Redis at {redis_url} ({exc})\n")
    else:
        prefix = f"sloguard-bench:{uuid.uuid4().hex}:"
        tally = {"miss": [0, 0], "replay": [0, 0]}  # per row: requests, commands sent

        def redis_row(row: str, headers: KeyMaker) -> Variant:
            class Counting(aioredis.Connection):
                async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
                    tally[row][1] += 1
                    await super().send_packed_command(*args, **kwargs)

            def counted_headers() -> list[tuple[bytes, bytes]]:
                tally[row][0] += 1
                return headers()

            pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=Counting)
            # timeout_seconds: the default (50 ms) would turn a stall of this shared
            # machine into a 503 and stop the run; its cost does not depend on the value.
            store = RedisStore(aioredis.Redis.from_pool(pool), prefix, 600, timeout_seconds=1)
            name = f"RedisStore, {'miss (fresh key)' if row == 'miss' else row}"
            return Variant(name, IdempotencyMiddleware(bare_app(), store=store), counted_headers)

        def round_trips_and_cleanup() -> None:
            for row, (requests, sent) in tally.items():
                print(
                    f"RedisStore {row}: {sent} commands for {requests} requests, "
                    f"{sent / requests:.3f} round trips per request (with the connection's "
                    "handshake, and the first request's miss on the replay row)"
                )
            client = redis.Redis.from_url(redis_url)
            names = list(client.scan_iter(match=prefix + "*", count=1000))
            for start in range(0, len(names), 1000):
                client.delete(*names[start : start + 1000])

        atexit.register(round_trips_and_cleanup)
        return [redis_row("miss", fresh_keys(b"redis-miss")), redis_row("replay", same_key)]
    return []


async def measure(rounds: int, per_round: int, warmup: int) -> list[Variant]:
    measured = variants()
    for variant in measured:
        for _ in range(warmup):
            await request_once(variant)
    gc.collect()
    for _ in range(rounds):
        for variant in measured:
            variant.samples.extend([await request_once(variant) for _ in range(per_round)])
    return measured


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(measured: list[Variant]) -> None:
    bare = statistics.median(measured[0].samples)
    medians = {v.name: statistics.median(v.samples) for v in measured}
    width = max(len(v.name) for v in measured)
    print(f"{'variant':<{width}}  {'median µs':>9}  {'p99 µs':>8}  {'x bare':>6}  {'added µs':>8}")
    for variant in measured:
        median = medians[variant.name]
        print(
            f"{variant.name:<{width}}  {median:9.2f}  {percentile(variant.samples, 0.99):8.2f}"
            f"  {median / bare:6.2f}  {median - bare:8.2f}"
        )
    ours = medians["IdempotencyMiddleware, miss (fresh key)"]
    peer = medians.get("peer asgi-idempotency-header, miss")
    print(f"\nsamples per variant: {len(measured[0].samples)}")
    print(f"miss / bare: {ours / bare:.2f} (target <= 1.5)")
    print(f"replay / bare: {medians['IdempotencyMiddleware, replay'] / bare:.2f} (target <= 0.5)")
    print(f"no key / bare: {medians['IdempotencyMiddleware, no key'] / bare:.2f} (target <= 1.05)")
    full = {kind: medians[f"SLOGuard full stack, {kind}"] / bare for kind in FULL_STACK_KINDS}
    print(f"full stack miss / bare: {full['miss']:.2f} (target <= 1.8)")
    print(f"full stack replay / bare: {full['replay']:.2f} (target <= 0.6)")
    print(f"full stack no key / bare: {full['no key']:.2f}")
    if peer is not None:
        print(f"miss / peer miss: {ours / peer:.2f}")
        print(
            f"added cost of a miss, ours / peer's: {(ours - bare) / (peer - bare):.2f}"
            " (target <= 0.4)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    report(asyncio.run(measure(args.rounds, args.per_round, args.warmup)))


if __name__ == "__main__":
    main()
