"""RedisRegistry: the workers that register over HTTP, shared by every controller on one Redis.

Each such worker is one key, ``prefix`` + its id, holding its URL and
capabilities (JSON) and expiring after the heartbeat TTL: a registration sets
the key, a heartbeat renews its expiry, a worker that stops beating simply
disappears, from every controller at once. Each controller keeps a local view
(refreshed every ``sync_interval_s``, when a worker is listed, and when a
request finds no worker) and decides on it alone: health-check results,
in-flight counts and selection stay local, as with :class:`WorkerRegistry`.
Static workers (``workers.yml``, demo workers) are local too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:
    raise ImportError(
        "RedisRegistry needs redis-py: install sloguard with the redis extra, "
        "pip install 'sloguard[redis]'"
    ) from exc

from sloguard._clock import Clock, monotonic
from sloguard.exceptions import ConfigurationError
from sloguard.routing.registry import DEFAULT_HEARTBEAT_TTL_S, Worker, WorkerRegistry

logger = logging.getLogger("sloguard.routing")

DEFAULT_PREFIX = "sloguard:workers:"
DEFAULT_SYNC_INTERVAL_S = 1.0


class RedisRegistry(WorkerRegistry):
    """A :class:`WorkerRegistry` whose HTTP-registered workers live in Redis."""

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        heartbeat_ttl_s: float = DEFAULT_HEARTBEAT_TTL_S,
        sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S,
        clock: Clock = monotonic,
        random_source: Any = None,
    ) -> None:
        super().__init__(heartbeat_ttl_s=heartbeat_ttl_s, clock=clock, random_source=random_source)
        if sync_interval_s <= 0:
            raise ConfigurationError(f"sync_interval_s must be positive, got {sync_interval_s!r}")
        if isinstance(url_or_client, str):
            url_or_client = aioredis.Redis.from_url(
                url_or_client, socket_timeout=1.0, socket_connect_timeout=1.0
            )
        self.redis = url_or_client
        self.prefix = prefix
        self.sync_interval_s = sync_interval_s
        self._ttl_ms = max(1, round(heartbeat_ttl_s * 1000))
        self._refreshing: asyncio.Task[None] | None = None
        self._loop: asyncio.Task[None] | None = None
        self._failing = False

    # -- the writes a worker makes -------------------------------------------------

    async def join(self, worker_id: str, url: str, capabilities: Iterable[str]) -> bool:
        caps = sorted(set(capabilities))
        worker = self.register(worker_id, url, caps)  # validates before anything is written
        value = json.dumps({"url": worker.url, "capabilities": caps})
        previous = await self.redis.set(self.prefix + worker_id, value, px=self._ttl_ms, get=True)
        return previous is not None

    async def beat(self, worker_id: str) -> Worker | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.pexpire(self.prefix + worker_id, self._ttl_ms)
            pipe.get(self.prefix + worker_id)
            renewed, value = await pipe.execute()
        if not renewed or value is None:
            self.remove(worker_id)
            return None
        return self._apply(worker_id, value, self._ttl_ms)

    async def leave(self, worker_id: str) -> bool:
        deleted = await self.redis.delete(self.prefix + worker_id)
        return self.remove(worker_id) or bool(deleted)

    # -- the local view --------------------------------------------------------------

    async def refresh(self) -> None:
        """Read every registered worker now; concurrent callers share one read."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_all())
        await asyncio.shield(self._refreshing)

    async def _read_all(self) -> None:
        names = [name async for name in self.redis.scan_iter(match=self.prefix + "*", count=1000)]
        found: dict[str, tuple[bytes, int]] = {}
        if names:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.get(name)
                    pipe.pttl(name)
                answers = await pipe.execute()
            for index, name in enumerate(names):
                value, left_ms = answers[2 * index], answers[2 * index + 1]
                if value is not None and left_ms > 0:
                    found[name.decode()[len(self.prefix) :]] = (value, left_ms)
        for worker in list(self):
            if not worker.static and worker.id not in found:
                self.remove(worker.id)
        for worker_id, (value, left_ms) in found.items():
            self._apply(worker_id, value, left_ms)

    def _apply(self, worker_id: str, value: bytes, left_ms: int) -> Worker | None:
        """Bring the local entry of one registered worker in line with its key."""
        try:
            entry = json.loads(value)
            url, capabilities = str(entry["url"]), frozenset(entry["capabilities"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring worker %r: its registration in Redis is unreadable", worker_id)
            return None
        worker = self.get(worker_id)
        if worker is None or worker.static or worker.url != url:
            try:
                worker = self.register(worker_id, url, capabilities)
            except ConfigurationError as exc:
                logger.warning("ignoring worker %r from Redis: %s", worker_id, exc)
                return None
        elif worker.capabilities != capabilities:
            worker.capabilities = capabilities
        # The key's remaining time says when its last heartbeat came.
        worker.last_heartbeat = self._clock() - (self._ttl_ms - left_ms) / 1000
        return worker

    async def start(self) -> None:
        try:
            await self.refresh()
        except (RedisError, OSError) as exc:
            self._log_failure(exc)
        self._loop = asyncio.create_task(self._keep_in_sync())

    async def _keep_in_sync(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval_s)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                self._log_failure(exc)
            except Exception:  # one bad read must not end the loop
                logger.exception("the worker registry could not be read from Redis")
            else:
                if self._failing:
                    logger.info("the worker registry is read from Redis again")
                    self._failing = False

    def _log_failure(self, exc: BaseException) -> None:
        if not self._failing:
            logger.warning(
                "cannot read the worker registry from Redis (%s); keeping the last view", exc
            )
            self._failing = True

    async def close(self) -> None:
        for task in (self._loop, self._refreshing):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                    await task
        self._loop = self._refreshing = None
        await self.redis.aclose()
