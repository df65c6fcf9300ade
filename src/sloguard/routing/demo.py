"""The built-in demo worker: answers ``POST /{verb}/{name}`` after a realistic delay.

``sloguard serve`` runs one per shipped SLO capability in-process when
``state/workers.yml`` lists no workers; ``sloguard worker`` serves one on a port.
Latency is log-normal (long-tailed, like real services), fitted so that its
median and p99 sit at half the SLO's p50 and p99 targets: the demo meets its SLO
until someone adds ``?delay_ms=N`` to a request to make it slow.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sloguard.problems import PROBLEM_CONTENT_TYPE, problem_body
from sloguard.slo.schema import SLOFile

_Z99 = 2.326  # the standard normal's 99th percentile
MAX_DELAY_MS = 10_000.0


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """A log-normal latency: ``median_ms`` and the shape ``sigma`` (0: constant)."""

    median_ms: float = 10.0
    sigma: float = 0.5

    @classmethod
    def for_slo(cls, slo: SLOFile | None) -> LatencyProfile:
        """Median at half the p50 target, p99 at half the p99 target (a missing p50:
        half the lowest target; a missing p99: the highest)."""
        if slo is None:
            return cls()
        latency = slo.slo.latency
        given = [v for v in latency.targets().values() if v is not None]
        p50 = latency.p50_ms or min(given) / 2
        p99 = latency.p99_ms or max(given)
        median = p50 / 2
        sigma = math.log(max(p99 / p50, 1.0)) / _Z99
        return cls(median, sigma)

    def sample_ms(self, rng: random.Random) -> float:
        return min(self.median_ms * math.exp(self.sigma * rng.gauss()), MAX_DELAY_MS)


def demo_worker_app(
    capabilities: Iterable[str],
    *,
    worker_id: str = "demo",
    profiles: Mapping[str, LatencyProfile] | None = None,
    rng: random.Random | None = None,
    capacity: int | None = None,
) -> Starlette:
    """A worker serving ``capabilities``; ``profiles`` gives each one's latency.

    ``capacity``: how many requests it works on at once; the others wait in
    line (a service of fixed capacity, as ``sloguard demo`` overloads). Default:
    no limit.
    """
    if capacity is not None and capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    served = frozenset(capabilities)
    profiles = dict(profiles or {})
    rng = rng or random.Random()
    slots = asyncio.Semaphore(capacity) if capacity is not None else None

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "worker": worker_id})

    async def work(request: Request) -> Response:
        capability = f"{request.path_params['verb']}:{request.path_params['name']}"
        if capability not in served:
            body = problem_body(
                404,
                "unknown_capability",
                "Capability not served here",
                f"worker {worker_id} does not serve {capability}",
            )
            return Response(body, 404, media_type=PROBLEM_CONTENT_TYPE.decode())
        payload = await request.body()
        requested = request.query_params.get("delay_ms")
        try:
            delay_ms = float(requested) if requested is not None else None
        except ValueError:
            delay_ms = None
        if delay_ms is None or not 0 <= delay_ms <= MAX_DELAY_MS:
            delay_ms = profiles.get(capability, LatencyProfile()).sample_ms(rng)
        if slots is None:
            await asyncio.sleep(delay_ms / 1000)
        else:
            async with slots:
                await asyncio.sleep(delay_ms / 1000)
        return JSONResponse(
            {
                "worker": worker_id,
                "capability": capability,
                "status": "done",
                "payload_bytes": len(payload),
                "took_ms": round(delay_ms, 3),
            }
        )

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/{verb}/{name}", work, methods=["POST"]),
        ]
    )
