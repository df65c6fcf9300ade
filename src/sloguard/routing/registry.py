"""The controller's workers: who serves what, who is healthy, and which one gets a request.

A worker is healthy when its last health check passed (or none has run yet)
and, if it registered over HTTP, its last heartbeat is fresh. Static workers
(``state/workers.yml``, the built-in demo workers) never heartbeat. Time comes
from an injected clock, so heartbeat expiry is tested without sleeping.

:class:`Registry` is what the controller needs of a registry; two classes
implement it: :class:`WorkerRegistry` keeps the workers in this process (the
default), ``RedisRegistry`` (:mod:`sloguard.routing.redis_registry`) shares
the workers that register over HTTP with every controller on one Redis.
Health-check results, in-flight counts and selection stay local either way.

The writes a worker makes over HTTP are checked the same way by both: a live
worker (one still heartbeating) keeps its URL until it leaves or expires
(:class:`~sloguard.exceptions.WorkerIdInUse`), static workers are never
written over HTTP (:class:`~sloguard.exceptions.StaticWorker`), and at most
``max_workers`` live registered workers are kept
(:class:`~sloguard.exceptions.RegistryFull`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sloguard._clock import Clock, monotonic
from sloguard.capability import is_capability
from sloguard.exceptions import ConfigurationError, RegistryFull, StaticWorker, WorkerIdInUse
from sloguard.liveness import Liveness
from sloguard.routing.registration import DEFAULT_MAX_WORKERS, is_worker_id, worker_url

DEFAULT_HEARTBEAT_TTL_S = 15.0


@dataclass(slots=True)
class Worker:
    """One worker and what the controller knows about it."""

    id: str
    url: str
    capabilities: frozenset[str]
    static: bool = False
    checks_ok: bool = True
    """False after ``unhealthy_after`` failed health checks or an unreachable forward."""
    failures: int = 0
    """Consecutive failed health checks."""
    outstanding: int = 0
    last_error: str | None = None
    last_heartbeat: float | None = None
    served: int = 0
    """Requests forwarded to it so far."""

    def as_json(self, *, healthy: bool, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "capabilities": sorted(self.capabilities),
            "static": self.static,
            "healthy": healthy,
            "outstanding": self.outstanding,
            "served": self.served,
            "last_error": self.last_error,
            "heartbeat_age_s": (
                None if self.last_heartbeat is None else round(now - self.last_heartbeat, 3)
            ),
        }


class Registry(Protocol):
    """The workers a controller routes to. Reads are synchronous (the request path asks
    them); the writes a worker makes over HTTP (``join``, ``beat``, ``leave``) and
    ``refresh`` are coroutines, since a shared registry keeps them elsewhere."""

    heartbeat_ttl_s: float
    max_workers: int

    def register(
        self, worker_id: str, url: str, capabilities: Iterable[str], *, static: bool = False
    ) -> Worker:
        """Add a worker known to this process alone (``workers.yml``, demo workers);
        :class:`ConfigurationError` for a bad id, URL or capability."""
        ...

    async def join(self, worker_id: str, url: str, capabilities: Iterable[str]) -> bool:
        """A worker registers (or registers again): False when it is new. Raises
        :class:`WorkerIdInUse`, :class:`StaticWorker` or :class:`RegistryFull`."""
        ...

    async def beat(self, worker_id: str) -> Worker | None:
        """A worker's heartbeat; None when no worker has this id (it should join again).
        Raises :class:`StaticWorker`."""
        ...

    async def leave(self, worker_id: str) -> bool:
        """A worker leaves; False when there was none with this id. Raises
        :class:`StaticWorker`."""
        ...

    async def refresh(self) -> None:
        """Bring this process's view up to date (a shared registry reads it now)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def loops(self) -> list[Liveness]:
        """The liveness of the registry's own background loops, for ``/healthz``."""
        ...

    def get(self, worker_id: str) -> Worker | None: ...

    def __iter__(self) -> Iterator[Worker]: ...

    def __len__(self) -> int: ...

    def is_healthy(self, worker: Worker) -> bool: ...

    def check_passed(self, worker: Worker) -> None: ...

    def check_failed(self, worker: Worker, error: str, *, unhealthy_after: int = 1) -> None: ...

    def unreachable(self, worker: Worker, error: str) -> None: ...

    def snapshot(self) -> list[dict[str, Any]]: ...

    def serves(self, capability: str) -> bool: ...

    def choose(self, capability: str, exclude: Iterable[str] = ()) -> Worker | None: ...


class WorkerRegistry:
    """Workers by id, their health, and power-of-two-choices selection, in this process.

    ``heartbeat_ttl_s``: a worker registered over HTTP that has not sent a
    heartbeat for this long gets no traffic until its next heartbeat, and
    another registration may take its id. ``max_workers``: live workers
    registered over HTTP at once; when that many are, one that stopped
    heartbeating makes room for a new one (the one silent longest).
    """

    def __init__(
        self,
        *,
        heartbeat_ttl_s: float = DEFAULT_HEARTBEAT_TTL_S,
        max_workers: int = DEFAULT_MAX_WORKERS,
        clock: Clock = monotonic,
        random_source: Callable[[int], int] | None = None,
    ) -> None:
        if heartbeat_ttl_s <= 0:
            raise ConfigurationError(f"heartbeat_ttl_s must be positive, got {heartbeat_ttl_s!r}")
        if max_workers < 1:
            raise ConfigurationError(f"max_workers must be at least 1, got {max_workers!r}")
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.max_workers = max_workers
        self._clock = clock
        self._randrange = random_source or random.randrange
        self._workers: dict[str, Worker] = {}

    # -- membership -------------------------------------------------------------

    def register(
        self, worker_id: str, url: str, capabilities: Iterable[str], *, static: bool = False
    ) -> Worker:
        """Add a worker, or replace the one with this id (keeping its in-flight count)."""
        url, caps = self._checked(worker_id, url, capabilities)
        previous = self._workers.get(worker_id)
        worker = Worker(worker_id, url, caps, static=static)
        if not static:
            worker.last_heartbeat = self._clock()
        if previous is not None:
            worker.outstanding = previous.outstanding
            worker.served = previous.served
        self._workers[worker_id] = worker
        return worker

    @staticmethod
    def _checked(
        worker_id: str, url: str, capabilities: Iterable[str]
    ) -> tuple[str, frozenset[str]]:
        """The normalised URL and the capabilities; :class:`ConfigurationError` when bad."""
        if not is_worker_id(worker_id):
            raise ConfigurationError(f"worker {worker_id!r}: id: not 1 to 200 of A-Z a-z 0-9 _ . -")
        try:
            url = worker_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"worker {worker_id}: url: {exc}") from None
        caps = frozenset(capabilities)
        bad = sorted(c for c in caps if not is_capability(c))
        if bad:
            raise ConfigurationError(f"worker {worker_id}: capabilities: not verb:name: {bad}")
        return url, caps

    def heartbeat(self, worker_id: str) -> Worker | None:
        """Record a heartbeat; None when no worker has this id (it should register again)."""
        worker = self._workers.get(worker_id)
        if worker is not None:
            worker.last_heartbeat = self._clock()
        return worker

    def remove(self, worker_id: str) -> bool:
        return self._workers.pop(worker_id, None) is not None

    async def join(self, worker_id: str, url: str, capabilities: Iterable[str]) -> bool:
        url, caps = self._checked(worker_id, url, capabilities)
        current = self._workers.get(worker_id)
        if current is None:
            self._make_room()
        elif current.static:
            raise StaticWorker(worker_id)
        elif current.url != url and self._beating(current):
            raise WorkerIdInUse(worker_id, current.url)
        self.register(worker_id, url, caps)
        return current is not None

    async def beat(self, worker_id: str) -> Worker | None:
        if not self._registered(worker_id):
            return None
        return self.heartbeat(worker_id)

    async def leave(self, worker_id: str) -> bool:
        return self._registered(worker_id) and self.remove(worker_id)

    def _registered(self, worker_id: str) -> bool:
        """Whether ``worker_id`` may name a worker registered over HTTP: False for what is
        no id at all; :class:`StaticWorker` for a static worker's."""
        worker = self._workers.get(worker_id)
        if worker is not None and worker.static:
            raise StaticWorker(worker_id)
        return is_worker_id(worker_id)

    def _beating(self, worker: Worker) -> bool:
        """Whether a worker registered over HTTP heartbeat within the TTL (it is live)."""
        beat = worker.last_heartbeat
        return beat is not None and self._clock() - beat <= self.heartbeat_ttl_s

    def _make_room(self) -> None:
        registered = [w for w in self._workers.values() if not w.static]
        if len(registered) < self.max_workers:
            return
        silent = [w for w in registered if not self._beating(w)]
        if not silent:
            raise RegistryFull(self.max_workers)
        del self._workers[min(silent, key=lambda w: w.last_heartbeat or 0.0).id]

    async def refresh(self) -> None:
        """Nothing to do: this process's view is the registry."""

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to close."""

    def loops(self) -> list[Liveness]:
        """None: nothing runs in the background."""
        return []

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self._workers.values()))

    def __len__(self) -> int:
        return len(self._workers)

    # -- health -----------------------------------------------------------------

    def is_healthy(self, worker: Worker) -> bool:
        if not worker.checks_ok:
            return False
        if worker.last_heartbeat is None:
            return True
        return self._clock() - worker.last_heartbeat <= self.heartbeat_ttl_s

    def check_passed(self, worker: Worker) -> None:
        worker.failures = 0
        if not worker.checks_ok:
            worker.checks_ok = True

    def check_failed(self, worker: Worker, error: str, *, unhealthy_after: int = 1) -> None:
        worker.failures += 1
        worker.last_error = error
        if worker.failures >= unhealthy_after:
            worker.checks_ok = False

    def unreachable(self, worker: Worker, error: str) -> None:
        """A forward could not connect: no more traffic until a health check passes."""
        worker.last_error = error
        worker.checks_ok = False

    def snapshot(self) -> list[dict[str, Any]]:
        """Every worker as JSON, for ``GET /workers``; missed heartbeats show as last_error."""
        now = self._clock()
        out = []
        for worker in sorted(self._workers.values(), key=lambda w: w.id):
            healthy = self.is_healthy(worker)
            entry = worker.as_json(healthy=healthy, now=now)
            if worker.checks_ok and not healthy and worker.last_heartbeat is not None:
                entry["last_error"] = (
                    f"no heartbeat for {now - worker.last_heartbeat:.1f} s "
                    f"(limit {self.heartbeat_ttl_s:g} s)"
                )
            out.append(entry)
        return out

    # -- selection --------------------------------------------------------------

    def serves(self, capability: str) -> bool:
        """Whether any worker, healthy or not, lists ``capability``."""
        return any(capability in w.capabilities for w in self._workers.values())

    def choose(self, capability: str, exclude: Iterable[str] = ()) -> Worker | None:
        """A healthy worker for ``capability`` by power of two choices: of two picked at
        random, the one with fewer outstanding requests. None when there is none."""
        skip = set(exclude)
        candidates = [
            w
            for w in self._workers.values()
            if capability in w.capabilities and w.id not in skip and self.is_healthy(w)
        ]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        first = self._randrange(len(candidates))
        second = self._randrange(len(candidates) - 1)
        if second >= first:
            second += 1
        a, b = candidates[first], candidates[second]
        return b if b.outstanding < a.outstanding else a
