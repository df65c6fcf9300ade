"""Fixtures shared by every test module: clocks, stores and in-process clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import settings

from sloguard._clock import ManualClock
from tests.redis_server import REDIS_URL, PrivateRedis, RedisKeys, check_redis

pytest_plugins = ("pytester",)  # the pytest plugin's tests run pytest sessions of their own

# Tests assert behaviour, never wall time: hypothesis's per-example deadline is off.
settings.register_profile("sloguard", deadline=None)
settings.load_profile("sloguard")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis server; the test is skipped (failed in CI) when none answers."""
    return check_redis(REDIS_URL)


@pytest.fixture
async def redis_keys(redis_url: str) -> AsyncIterator[RedisKeys]:
    """A key prefix of this test's own on the shared server, emptied afterwards."""
    keys = RedisKeys(redis_url)
    yield keys
    await keys.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A running redis-server of this test's own, stopped afterwards."""
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()
