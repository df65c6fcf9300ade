"""Active health checks: ``GET {url}/health`` on every worker, with a timeout."""

from __future__ import annotations

import asyncio
import logging

import httpx

from sloguard.exceptions import ConfigurationError
from sloguard.routing.registry import Registry, Worker

logger = logging.getLogger("sloguard.routing")


class HealthChecker:
    """Marks a worker unhealthy after ``unhealthy_after`` failed checks in a row, and
    healthy again after one that passes. ``check_once`` is one round; ``run`` loops."""

    def __init__(
        self, registry: Registry, *, timeout_s: float = 1.0, unhealthy_after: int = 2
    ) -> None:
        if timeout_s <= 0:
            raise ConfigurationError(f"health timeout must be positive, got {timeout_s!r}")
        if unhealthy_after < 1:
            raise ConfigurationError(f"unhealthy_after must be at least 1, got {unhealthy_after!r}")
        self.registry = registry
        self.timeout_s = timeout_s
        self.unhealthy_after = unhealthy_after

    async def check_once(self, client: httpx.AsyncClient) -> None:
        """Check every worker once, concurrently."""
        await asyncio.gather(*(self._check(client, w) for w in self.registry))

    async def run(self, client: httpx.AsyncClient, interval_s: float) -> None:
        while True:
            await self.check_once(client)
            await asyncio.sleep(interval_s)

    async def _check(self, client: httpx.AsyncClient, worker: Worker) -> None:
        was_healthy = worker.checks_ok
        try:
            response = await client.get(f"{worker.url}/health", timeout=self.timeout_s)
        except httpx.TimeoutException:
            error = f"health check timed out after {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"health check failed: {type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                self.registry.check_passed(worker)
                if not was_healthy:
                    logger.info("worker %s passes its health check again", worker.id)
                return
            error = f"health check answered {response.status_code}"
        self.registry.check_failed(worker, error, unhealthy_after=self.unhealthy_after)
        if was_healthy and not worker.checks_ok:
            logger.warning("worker %s is unhealthy: %s", worker.id, error)
