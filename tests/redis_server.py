"""Real Redis servers for tests: the shared one at REDIS_URL, and private ones.

The shared server (default ``redis://127.0.0.1:6379/0``) also serves other
test runs: every test works under its own key prefix and deletes its keys
afterwards. Tests that stop a server, pause it or flush its script cache start
a private ``redis-server`` on a free port instead.

When no server answers (or ``redis-server`` is missing), Redis tests are
skipped with the reason, unless ``CI`` is set: then they fail, so that CI never
passes without having run them. ``.ci/run`` starts and installs what they need.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from typing import NoReturn

import pytest
import redis
import redis.asyncio as aioredis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when running in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: Redis tests must run, not skip)", pytrace=False)
    pytest.skip(f"{reason}; set REDIS_URL, or run .ci/run, which starts one")


def check_redis(url: str) -> str:
    """Return ``url`` if a Redis server answers there; otherwise skip (or fail in CI)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        unavailable(f"no Redis server answers at {url} ({exc})")
    finally:
        client.close()
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisKeys:
    """One test's corner of a Redis server: a unique key prefix and an admin client."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"sloguard-test:{uuid.uuid4().hex}:"
        self.admin = aioredis.Redis.from_url(url)

    async def names(self) -> list[bytes]:
        """Every key under this test's prefix."""
        return [name async for name in self.admin.scan_iter(match=self.prefix + "*", count=1000)]

    async def travel(self, seconds: float) -> None:
        """Move the server's clock forward, for this test's keys only.

        Each key's time to live shrinks by ``seconds``, and a key whose time runs
        out is deleted, as Redis would expire it: a test sees a lease or a TTL end
        without sleeping through it.
        """
        shift = round(seconds * 1000)
        for name in await self.names():
            left = await self.admin.pttl(name)
            if left < 0:  # gone meanwhile (-2), or no TTL (-1): the TTL tests catch that
                continue
            if left <= shift:
                await self.admin.delete(name)
            else:
                await self.admin.pexpire(name, left - shift)

    async def close(self) -> None:
        names = await self.names()
        if names:
            await self.admin.delete(*names)
        await self.admin.aclose()


class PrivateRedis:
    """A ``redis-server`` process of this test's own, which it may stop and start again."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            unavailable("redis-server is not installed")
        self.executable = executable
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=1)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    return
                except (redis.RedisError, OSError):
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        self.stop()
                        unavailable(f"redis-server did not start on port {self.port}")
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
