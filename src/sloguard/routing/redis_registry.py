"""RedisRegistry: the workers that register over HTTP, shared by every controller on one Redis.

Each such worker is one key, ``prefix`` + its id, holding its URL and
capabilities (JSON) and expiring after the heartbeat TTL: a registration sets
the key, a heartbeat renews its expiry, a worker that stops beating simply
disappears, from every controller at once. A set, ``prefix`` + ``#index``,
names the registered ids (``#`` is never in an id): controllers read the
workers through it rather than scan the keyspace, and a registration counts
it against ``max_workers``. A registration is one Lua script (the URL check,
the count and the write at once), so two controllers never both take the last
place or both move one id. Each controller keeps a local view (refreshed every
``sync_interval_s``, when a worker is listed, and when a request finds no
worker) and decides on it alone: health-check results, in-flight counts and
selection stay local, as with :class:`WorkerRegistry`. Static workers
(``workers.yml``, demo workers) are local too, and a registration in Redis
never replaces one.
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
from sloguard.exceptions import (
    ConfigurationError,
    RegistryFull,
    RegistryUnavailable,
    WorkerIdInUse,
)
from sloguard.liveness import Liveness
from sloguard.routing.registration import DEFAULT_MAX_WORKERS
from sloguard.routing.registry import DEFAULT_HEARTBEAT_TTL_S, Worker, WorkerRegistry

logger = logging.getLogger("sloguard.routing")

DEFAULT_PREFIX = "sloguard:workers:"
DEFAULT_SYNC_INTERVAL_S = 1.0
INDEX_SUFFIX = "#index"

# KEYS: the index, the worker's key. ARGV: id, value, url, TTL (ms), max workers, prefix.
# Answers {"new"}, {"known"}, {"taken", url} or {"full"}.
_JOIN = """
local current = redis.call('GET', KEYS[2])
if current then
  local ok, entry = pcall(cjson.decode, current)
  if ok and type(entry) == 'table' and type(entry.url) == 'string' and entry.url ~= ARGV[3] then
    return {'taken', entry.url}
  end
elseif redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  local limit = tonumber(ARGV[5])
  if redis.call('SCARD', KEYS[1]) >= limit then
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
      if redis.call('EXISTS', ARGV[6] .. id) == 0 then
        redis.call('SREM', KEYS[1], id)
      end
    end
    if redis.call('SCARD', KEYS[1]) >= limit then
      return {'full'}
    end
  end
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
if current then
  return {'known'}
end
return {'new'}
"""

# KEYS: the index, the worker's key. ARGV: id, TTL (ms). Answers the value, or nil.
# The index lives as long as its longest-lived worker: it expires with the last one.
_BEAT = """
if redis.call('PEXPIRE', KEYS[2], ARGV[2]) == 0 then
  return false
end
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('GET', KEYS[2])
"""


class RedisRegistry(WorkerRegistry):
    """A :class:`WorkerRegistry` whose HTTP-registered workers live in Redis."""

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        heartbeat_ttl_s: float = DEFAULT_HEARTBEAT_TTL_S,
        max_workers: int = DEFAULT_MAX_WORKERS,
        sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S,
        clock: Clock = monotonic,
        random_source: Any = None,
    ) -> None:
        super().__init__(
            heartbeat_ttl_s=heartbeat_ttl_s,
            max_workers=max_workers,
            clock=clock,
            random_source=random_source,
        )
        if sync_interval_s <= 0:
            raise ConfigurationError(f"sync_interval_s must be positive, got {sync_interval_s!r}")
        if isinstance(url_or_client, str):
            url_or_client = aioredis.Redis.from_url(
                url_or_client, socket_timeout=1.0, socket_connect_timeout=1.0
            )
        self.redis = url_or_client
        self.prefix = prefix
        self.index = prefix + INDEX_SUFFIX
        self.sync_interval_s = sync_interval_s
        self._ttl_ms = max(1, round(heartbeat_ttl_s * 1000))
        self._join = self.redis.register_script(_JOIN)
        self._beat = self.redis.register_script(_BEAT)
        self._refreshing: asyncio.Task[None] | None = None
        self._loop: asyncio.Task[None] | None = None
        self.liveness = Liveness("worker_registry_sync")
        """The liveness of the loop that reads the registry from Redis."""

    # -- the writes a worker makes -------------------------------------------------

    async def join(self, worker_id: str, url: str, capabilities: Iterable[str]) -> bool:
        url, caps = self._checked(worker_id, url, capabilities)  # before anything is written
        self._registered(worker_id)
        value = json.dumps({"url": url, "capabilities": sorted(caps)})
        keys = [self.index, self.prefix + worker_id]
        args: list[str | int] = [worker_id, value, url, self._ttl_ms, self.max_workers, self.prefix]
        try:
            answer = [_text(part) for part in await self._join(keys=keys, args=args)]
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"cannot register {worker_id} in Redis: {exc}") from exc
        if answer[0] == "taken":
            raise WorkerIdInUse(worker_id, answer[1])
        if answer[0] == "full":
            raise RegistryFull(self.max_workers)
        self.register(worker_id, url, caps)
        return answer[0] == "known"

    async def beat(self, worker_id: str) -> Worker | None:
        if not self._registered(worker_id):  # "#index" is no id: it never reaches a key
            return None
        keys = [self.index, self.prefix + worker_id]
        try:
            value = await self._beat(keys=keys, args=[worker_id, self._ttl_ms])
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"cannot renew {worker_id} in Redis: {exc}") from exc
        if value is None:
            self.remove(worker_id)
            return None
        return self._apply(worker_id, value, self._ttl_ms)

    async def leave(self, worker_id: str) -> bool:
        if not self._registered(worker_id):
            return False
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.prefix + worker_id)
                pipe.srem(self.index, worker_id)
                deleted, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"cannot remove {worker_id} from Redis: {exc}") from exc
        return self.remove(worker_id) or bool(deleted)

    # -- the local view --------------------------------------------------------------

    async def refresh(self) -> None:
        """Read every registered worker now; concurrent callers share one read. When Redis
        fails the last view stays (the failure shows in :attr:`liveness`)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_all())
        item = "reading the worker registry from Redis (keeping the last view)"
        try:
            await asyncio.shield(self._refreshing)
        except Exception as exc:  # Redis down, or one bad read: requests go on
            self.liveness.failed(item, exc, logger)
        else:
            self.liveness.recovered(item, logger)

    async def _read_all(self) -> None:
        ids = sorted(_text(member) for member in await self.redis.smembers(self.index))
        found: dict[str, tuple[bytes, int]] = {}
        if ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for worker_id in ids:
                    pipe.get(self.prefix + worker_id)
                    pipe.pttl(self.prefix + worker_id)
                answers = await pipe.execute()
            for index, worker_id in enumerate(ids):
                value, left_ms = answers[2 * index], answers[2 * index + 1]
                if value is not None and left_ms > 0:
                    found[worker_id] = (value, left_ms)
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
        if worker is not None and worker.static:
            return None  # a static worker of this controller's keeps its id
        if worker is None or worker.url != url:
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
        self.liveness.interval_s = self.sync_interval_s
        self.liveness.started()
        await self._read_once()
        self._loop = asyncio.create_task(self._keep_in_sync())

    async def _keep_in_sync(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.sync_interval_s)
                await self._read_once()
        finally:
            self.liveness.stopped()

    async def _read_once(self) -> None:
        await self.refresh()
        self.liveness.passed()

    def loops(self) -> list[Liveness]:
        """The loop that reads the registry from Redis every ``sync_interval_s``."""
        return [self.liveness]

    async def close(self) -> None:
        for task in (self._loop, self._refreshing):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                    await task
        self._loop = self._refreshing = None
        await self.redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
