"""RedisStore: idempotency claims and responses shared by every replica through Redis.

Each scoped key maps to one Redis key, ``prefix`` + the hex blake2b digest of
the scoped key (which holds the ``Authorization`` header in clear, so it never
leaves the process). That key holds either

- a lease: ``L``, a random 64-bit fencing token, the request's fingerprint;
  it expires after the lease (``PX``), so a crashed replica never locks a key;
- or a completed record: ``R``, status, fingerprint, headers and body in a
  length-prefixed binary layout; it expires after ``ttl_seconds``.

Nothing else is ever written, so no key lives without a TTL. Three Lua scripts
on that one key make every transition atomic and one round trip: claim
(return the value, or set a lease when there is none), complete (replace our
own lease, or an absent one, by the record) and release (delete our own lease).
A replay costs one round trip, a miss two (claim, complete).
"""

from __future__ import annotations

import asyncio
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
from sloguard.idempotency.store import Claim, ClaimStatus, StoredResponse

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
_COMPLETE = b"""
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, 9) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
_RELEASE = b"""
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, 9) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
_SCRIPTS = {hashlib.sha1(source).hexdigest(): source for source in (_CLAIM, _COMPLETE, _RELEASE)}
_CLAIM_SHA, _COMPLETE_SHA, _RELEASE_SHA = _SCRIPTS

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
    caps how long any claim holds a key (the middleware's own
    ``lease_seconds`` applies when it is shorter). Every Redis call is bounded
    by ``timeout_seconds``; when one fails or runs out of time, ``claim`` and
    ``wait`` raise ``StoreUnavailable`` with ``fail_open`` set from
    ``on_error``. Failures are counted in ``errors`` and logged (a warning when
    Redis stops answering, a line when it answers again); the client
    reconnects by itself.

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
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.lease_seconds = lease_seconds
        self.on_error: OnError = on_error
        self.fail_open = on_error == "fail_open"
        self.timeout_seconds = timeout_seconds
        self.errors = 0
        """Redis calls that failed or timed out, since the store was made."""
        self._client, self._owns_client = _client_for(url_or_client, timeout_seconds)
        self._prefix = prefix.encode()
        self._ttl_ms = _milliseconds(ttl_seconds)
        self._failing = False

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        token = secrets.randbits(64) or 1
        lease = _LEASE + _TOKEN.pack(token) + fingerprint
        px = _milliseconds(min(lease_seconds, self.lease_seconds))
        value = await self._call("EVALSHA", _CLAIM_SHA, 1, self._name(key), lease, px)
        if value is None:
            return Claim(ClaimStatus.CLAIMED, token, fingerprint)
        try:
            return _decode(value)
        except (ValueError, struct.error) as exc:
            raise self._failure(
                ValueError(f"unreadable value under an idempotency key ({exc})")
            ) from exc

    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        stored: int = await self._call(
            "EVALSHA",
            _COMPLETE_SHA,
            1,
            self._name(key),
            _LEASE + _TOKEN.pack(token),
            _encode_record(response),
            self._ttl_ms,
        )
        return stored == 1

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
        """Close the Redis client if this store created it from a URL."""
        if self._owns_client:
            await self._client.aclose()

    def _name(self, key: str) -> bytes:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16)
        return self._prefix + digest.hexdigest().encode()

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
