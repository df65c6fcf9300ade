"""Active health checks: ``GET {url}/health`` on every worker, with a timeout.

Each worker's check is isolated: one that raises where no check should (a URL
the client cannot use, a bug) counts as a failed check for that worker, is
logged once until it works again, and the round goes on; a round that raises
is skipped and the loop goes on. :attr:`HealthChecker.liveness` tells
``/healthz`` how the loop is doing.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from sloguard._clock import Clock
from sloguard.exceptions import ConfigurationError
from sloguard.liveness import Liveness
from sloguard.routing.registry import Registry, Worker

logger = logging.getLogger("sloguard.routing")


class HealthChecker:
    """Marks a worker unhealthy after ``unhealthy_after`` failed checks in a row, and
    healthy again after one that passes. ``check_once`` is one round; ``run`` loops."""

    def __init__(
        self,
        registry: Registry,
        *,
        timeout_s: float = 1.0,
        unhealthy_after: int = 2,
        clock: Clock = time.time,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigurationError(f"health timeout must be positive, got {timeout_s!r}")
        if unhealthy_after < 1:
            raise ConfigurationError(f"unhealthy_after must be at least 1, got {unhealthy_after!r}")
        self.registry = registry
        self.timeout_s = timeout_s
        self.unhealthy_after = unhealthy_after
        self.liveness = Liveness("health_checks", clock=clock)
        """The liveness of :meth:`run` (``idle`` until it runs); ``clock`` is its wall clock."""

    async def check_once(self, client: httpx.AsyncClient) -> None:
        """Check every worker once, concurrently; a check that raises is that worker's
        failure alone."""
        await asyncio.gather(*(self._isolated(client, w) for w in list(self.registry)))

    async def run(self, client: httpx.AsyncClient, interval_s: float) -> None:
        """:meth:`check_once` every ``interval_s`` seconds, forever (run it as a task)."""
        await self.liveness.run_every(
            interval_s, "health check round", lambda: self.check_once(client), logger
        )

    async def _isolated(self, client: httpx.AsyncClient, worker: Worker) -> None:
        item = f"health check of worker {worker.id}"
        try:
            await self._check(client, worker)
        except Exception as exc:
            self.liveness.failed(item, exc, logger)
            error = f"health check raised {type(exc).__name__}: {exc}"[:300]
            was_healthy = worker.checks_ok
            self.registry.check_failed(worker, error, unhealthy_after=self.unhealthy_after)
            if was_healthy and not worker.checks_ok:
                logger.warning("worker %s is unhealthy: %s", worker.id, error)
        else:
            self.liveness.recovered(item, logger)

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
