"""RedisStore: idempotency claims and responses shared by every replica through Redis.

Each store key maps to one Redis key, ``prefix`` + the hex blake2b digest of
the store key (a principal digest and the client's key: neither reaches Redis
as such). That key holds either

- a lease: ``L``, a random 64-bit fencing token, the request's fingerprint (a
  digest); it expires after the lease (``PX``), so a crashed replica never
  locks a key, and a lease that expired is gone, whoever looks;
- or a completed record: ``R``, status, fingerprint, headers and body in a
  length-prefixed binary layout; it expires after ``ttl_seconds``.

Lua scripts on that one key make every transition atomic and one round trip:
claim (return the value, or set a lease when there is none), complete
(replace our own lease by the record), renew (move our own lease's expiry) and
release (delete our own lease). A replay costs one round trip, a miss two
(claim, complete). With ``max_entries_per_principal``, complete also keeps
each principal's newest records in a sorted set of their names
(``prefix`` + ``p:`` + a digest of the principal, with the records' TTL) and
deletes the oldest past the cap, in the same script.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import secrets
import struct
from typing import Any, Literal, Protocol

try:
    import redis.asyncio as aioredis
    from redis import Redis as SyncRedis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError, RedisError
except ImportError as exc:
    raise ImportError(
        "RedisStore needs redis-py: install sloguard with the redis extra, "
        "pip install 'sloguard[redis]'"
    ) from exc

from sloguard.exceptions import ConfigurationError, StoreUnavailable
from sloguard.idempotency.keys import principal_of
from sloguard.idempotency.store import Claim, ClaimStatus, StoredResponse
from sloguard.liveness import stop_task

logger = logging.getLogger("sloguard.idempotency")

DEFAULT_PREFIX = "sloguard:idem:"
DEFAULT_TTL_SECONDS = 86_400.0
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_TIMEOUT_SECONDS = 0.05

OnError = Literal["fail_closed", "fail_open"]
"""What a request meets when Redis fails: a 503, or its handler run without idempotency."""

_LEASE = b"L"
_RECORD = b"R"
_TOKEN = struct.Struct(">Q")
_RECORD_HEAD = struct.Struct(">HHI")  # status, fingerprint length, header count
_HEADER_HEAD = struct.Struct(">II")  # name length, value length

# ``wait`` polls the key's first byte: from 5 ms, doubling, up to 100 ms apart.
_FIRST_POLL_SECONDS = 0.005
_MAX_POLL_SECONDS = 0.1

_CLAIM = b"""
local value = redis.call('GET', KEYS[1])
if value then return value end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
# KEYS[2], when given, is the principal's index: record names scored by time of storing.
_COMPLETE = b"""
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, 9) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if KEYS[2] then
  local now = redis.call('TIME')
  redis.call('ZADD', KEYS[2], now[1] .. string.format('%06d', now[2]), KEYS[1])
  local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
  if excess > 0 then
    local oldest = redis.call('ZPOPMIN', KEYS[2], excess)
    for i = 1, #oldest, 2 do
      if redis.call('GETRANGE', oldest[i], 0, 0) == 'R' then redis.call('DEL', oldest[i]) end
    end
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""
_RENEW = b"""
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, 9) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_RELEASE = b"""
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, 9) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
_SCRIPTS = {
    hashlib.sha1(source).hexdigest(): source for source in (_CLAIM, _COMPLETE, _RENEW, _RELEASE)
}
_CLAIM_SHA, _COMPLETE_SHA, _RENEW_SHA, _RELEASE_SHA = _SCRIPTS

_MAX_PENDING_RELEASES = 10_000
"""Leases of timed-out claims still to take back; past this, the oldest are left to expire."""
_MAX_RELEASE_BACKOFF_SECONDS = 1.0

_BACKEND_ERRORS = (RedisError, OSError, TimeoutError)


class RedisClient(Protocol):
    """The part of ``redis.asyncio.Redis`` that RedisStore uses."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...

    async def aclose(self) -> None: ...


class RedisStore:
    """Idempotency state in Redis, shared by every replica of an app.

    ``url_or_client`` is a ``redis://`` (or ``rediss://``, ``unix://``) URL, or a
    ``redis.asyncio.Redis`` client (created with ``decode_responses=False``).
    A store made from a URL owns its client: ``aclose()`` closes it.

    ``ttl_seconds`` bounds how long a response is replayed; ``lease_seconds``
    caps how long any claim or renewal holds a key (the caller's own lease
    applies when it is shorter). Every Redis call is bounded by
    ``timeout_seconds``; when one fails or runs out of time, the operation
    raises ``StoreUnavailable`` with ``fail_open`` set from ``on_error``.
    Failures are counted in ``errors`` and logged (a warning when Redis stops
    answering, a line when it answers again); the client reconnects by itself.

    **A claim that times out leaves nothing behind.** Its script may have run
    although no answer came back in time; the store then takes the lease back
    (a release with the token it drew) in the background, retrying with backoff
    until Redis answers or the lease would have expired anyway. So a request
    answered 503 does not lock its key for the lease's length; at worst (Redis
    running the claim after the release, which the network can reorder) the
    key stays locked for the lease the caller asked for, which the gate keeps
    short until the handler has run for a while and renews.

    ``max_entries_per_principal`` (default None: no cap), when set, bounds how
    many responses one principal holds at once: storing one more deletes that
    principal's oldest. With Redis's recommended ``noeviction`` policy nothing
    evicts another principal's responses; the cap keeps one principal from
    filling the memory that everyone's next responses need.

    Keys live in Redis's clock: a lease or a record expires on the server, so
    this store takes no ``clock``.
    """

    def __init__(
        self,
        url_or_client: str | RedisClient,
        prefix: str = DEFAULT_PREFIX,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        on_error: OnError = "fail_closed",
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_entries_per_principal: int | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(f"prefix must be a non-empty string, got {prefix!r}")
        for name, value in (
            ("ttl_seconds", ttl_seconds),
            ("lease_seconds", lease_seconds),
            ("timeout_seconds", timeout_seconds),
        ):
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
        if on_error not in ("fail_closed", "fail_open"):
            raise ConfigurationError(
                f"on_error must be 'fail_closed' or 'fail_open', got {on_error!r}"
            )
        if max_entries_per_principal is not None and (
            not isinstance(max_entries_per_principal, int) or max_entries_per_principal < 1
        ):
            raise ConfigurationError(
                "max_entries_per_principal must be None or a positive integer, "
                f"got {max_entries_per_principal!r}"
            )
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.lease_seconds = lease_seconds
        self.on_error: OnError = on_error
        self.fail_open = on_error == "fail_open"
        self.timeout_seconds = timeout_seconds
        self.max_entries_per_principal = max_entries_per_principal
        self.errors = 0
        """Redis calls made for a request that failed or timed out, since the store was made."""
        self._client, self._owns_client = _client_for(url_or_client, timeout_seconds)
        self._prefix = prefix.encode()
        self._ttl_ms = _milliseconds(ttl_seconds)
        self._failing = False
        # Leases of timed-out claims to take back: Redis key name -> (lease head, deadline).
        self._pending_releases: dict[bytes, tuple[bytes, float]] = {}
        self._releaser: asyncio.Task[None] | None = None

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        token = secrets.randbits(64) or 1
        name = self._name(key)
        head = _LEASE + _TOKEN.pack(token)
        px = self._lease_ms(lease_seconds)
        try:
            value = await self._call("EVALSHA", _CLAIM_SHA, 1, name, head + fingerprint, px)
        except StoreUnavailable:
            self._release_later(name, head, px)
            raise
        if value is None:
            return Claim(ClaimStatus.CLAIMED, token, fingerprint)
        try:
            return _decode(value)
        except (ValueError, struct.error) as exc:
            raise self._failure(
                ValueError(f"unreadable value under an idempotency key ({exc})")
            ) from exc

    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        name = self._name(key)
        head = _LEASE + _TOKEN.pack(token)
        record = _encode_record(response)
        cap = self.max_entries_per_principal
        if cap is None:
            stored = await self._call("EVALSHA", _COMPLETE_SHA, 1, name, head, record, self._ttl_ms)
        else:
            index = self._index_name(principal_of(key))
            stored = await self._call(
                "EVALSHA", _COMPLETE_SHA, 2, name, index, head, record, self._ttl_ms, cap
            )
        return bool(stored == 1)

    async def renew(self, key: str, token: int, lease_seconds: float) -> bool:
        head = _LEASE + _TOKEN.pack(token)
        px = self._lease_ms(lease_seconds)
        renewed = await self._call("EVALSHA", _RENEW_SHA, 1, self._name(key), head, px)
        return bool(renewed == 1)

    async def release(self, key: str, token: int) -> None:
        await self._call("EVALSHA", _RELEASE_SHA, 1, self._name(key), _LEASE + _TOKEN.pack(token))

    async def wait(self, key: str) -> None:
        """Poll until the key holds no lease, from 5 ms apart up to 100 ms apart.

        Polling (rather than pub/sub) sees a lease expire, costs the claim and
        complete paths nothing, and needs no connection held per waiter.
        """
        name = self._name(key)
        delay = _FIRST_POLL_SECONDS
        while await self._call("GETRANGE", name, 0, 0) == _LEASE:
            await asyncio.sleep(delay * (0.5 + random.random() / 2))  # jitter spreads waiters
            delay = min(2 * delay, _MAX_POLL_SECONDS)

    async def aclose(self) -> None:
        """Take back the leases of timed-out claims if Redis answers at once, then close
        the Redis client if this store created it from a URL. Bounded: at most one
        ``timeout_seconds`` per pending lease and one for closing."""
        releaser, self._releaser = self._releaser, None
        if releaser is not None:
            await stop_task(releaser)
        await self._release_pending(give_up=True)
        if self._owns_client:
            with contextlib.suppress(*_BACKEND_ERRORS):
                async with asyncio.timeout(self.timeout_seconds):
                    await self._client.aclose()

    def _name(self, key: str) -> bytes:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16)
        return self._prefix + digest.hexdigest().encode()

    def _index_name(self, principal: str) -> bytes:
        digest = hashlib.blake2b(principal.encode("utf-8", "surrogatepass"), digest_size=16)
        return self._prefix + b"p:" + digest.hexdigest().encode()

    def _lease_ms(self, lease_seconds: float) -> int:
        return _milliseconds(min(lease_seconds, self.lease_seconds))

    def _release_later(self, name: bytes, head: bytes, px: int) -> None:
        """Queue the lease a timed-out claim may have taken, for the background releaser."""
        pending = self._pending_releases
        if len(pending) >= _MAX_PENDING_RELEASES:
            del pending[next(iter(pending))]  # the oldest: it expires soonest anyway
        pending[name] = (head, asyncio.get_running_loop().time() + px / 1000)
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.create_task(self._release_until_answered())

    async def _release_until_answered(self) -> None:
        delay = self.timeout_seconds
        while self._pending_releases:
            if await self._release_pending(give_up=False):
                delay = self.timeout_seconds
            else:
                await asyncio.sleep(delay)
                delay = min(2 * delay, _MAX_RELEASE_BACKOFF_SECONDS)

    async def _release_pending(self, *, give_up: bool) -> bool:
        """Release each pending lease, each call bounded by the timeout; False once a call
        fails (the rest stay pending, unless ``give_up``)."""
        pending = self._pending_releases
        now = asyncio.get_running_loop().time()
        for name, (head, deadline) in list(pending.items()):
            if deadline <= now:
                del pending[name]  # expired in Redis by now
                continue
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    await self._client.execute_command("EVAL", _RELEASE, 1, name, head)
            except _BACKEND_ERRORS as exc:
                logger.debug("could not yet take back a timed-out claim's lease: %r", exc)
                if give_up:
                    pending.clear()
                return False
            pending.pop(name, None)
        return True

    async def _call(self, *args: Any) -> Any:
        client = self._client
        try:
            async with asyncio.timeout(self.timeout_seconds):
                try:
                    reply = await client.execute_command(*args)
                except NoScriptError:
                    # The server lost its script cache (restart, SCRIPT FLUSH): EVAL reloads it.
                    reply = await client.execute_command("EVAL", _SCRIPTS[args[1]], *args[2:])
        except _BACKEND_ERRORS as exc:
            raise self._failure(exc) from exc
        if self._failing:
            self._failing = False
            logger.info("Redis idempotency store answers again (%d errors so far)", self.errors)
        return reply

    def _failure(self, exc: BaseException) -> StoreUnavailable:
        self.errors += 1
        reason = _describe(exc, self.timeout_seconds)
        if not self._failing:
            self._failing = True
            logger.warning(
                "Redis idempotency store unavailable (%s): %s until it answers again",
                reason,
                "running requests without idempotency"
                if self.fail_open
                else "answering 503 to keyed requests",
            )
        else:
            logger.debug("Redis idempotency store still unavailable (%s)", reason)
        return StoreUnavailable(
            f"the Redis idempotency store is unavailable: {reason}", fail_open=self.fail_open
        )


def _client_for(url_or_client: str | RedisClient, timeout: float) -> tuple[RedisClient, bool]:
    if isinstance(url_or_client, str):
        try:
            client: RedisClient = aioredis.Redis.from_url(
                url_or_client,
                socket_connect_timeout=timeout,
                # No per-read timeout: RedisStore bounds each whole call itself, and
                # redis-py's own read timeout costs a timer per command.
                socket_timeout=None,
                # Fail at once and let the next request try again: a retry with
                # backoff would only spend the request's time budget.
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigurationError(f"not a Redis URL: {exc}") from exc
        return client, True
    if isinstance(url_or_client, aioredis.Redis):
        if url_or_client.connection_pool.connection_kwargs.get("decode_responses", False):
            raise ConfigurationError(
                "RedisStore stores bytes: create its client with decode_responses=False"
            )
        return url_or_client, False
    if isinstance(url_or_client, SyncRedis):
        raise ConfigurationError(
            "RedisStore needs an asyncio client: redis.asyncio.Redis, not redis.Redis"
        )
    if not callable(getattr(url_or_client, "execute_command", None)):
        raise ConfigurationError(
            "url_or_client must be a redis:// URL or a redis.asyncio.Redis client, "
            f"got {type(url_or_client).__name__}"
        )
    return url_or_client, False


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {timeout * 1000:g} ms"
    return f"{type(exc).__name__}: {exc}"


def _encode_record(response: StoredResponse) -> bytes:
    fingerprint = response.fingerprint
    parts = [_RECORD, _RECORD_HEAD.pack(response.status, len(fingerprint), len(response.headers))]
    parts.append(fingerprint)
    for name, value in response.headers:
        parts += (_HEADER_HEAD.pack(len(name), len(value)), name, value)
    parts.append(response.body)
    return b"".join(parts)


def _decode(value: bytes) -> Claim:
    kind = value[:1]
    if kind == _LEASE:
        if len(value) < 1 + _TOKEN.size:
            raise ValueError("a lease shorter than its token")
        return Claim(ClaimStatus.IN_FLIGHT, 0, value[1 + _TOKEN.size :])
    if kind != _RECORD:
        raise ValueError(f"unknown kind byte {kind!r}")
    status, fingerprint_size, count = _RECORD_HEAD.unpack_from(value, 1)
    offset = 1 + _RECORD_HEAD.size + fingerprint_size
    fingerprint = value[offset - fingerprint_size : offset]
    headers = []
    for _ in range(count):
        name_size, value_size = _HEADER_HEAD.unpack_from(value, offset)
        offset += _HEADER_HEAD.size
        name = value[offset : offset + name_size]
        offset += name_size
        headers.append((name, value[offset : offset + value_size]))
        offset += value_size
    if offset > len(value):
        raise ValueError("a record shorter than its lengths")
    response = StoredResponse(fingerprint, status, tuple(headers), value[offset:])
    return Claim(ClaimStatus.COMPLETED, 0, fingerprint, response)
