"""The SLO gate on this repository: the quick-start service, measured against its SLO files.

    pytest examples/ci --metrics-output test-results/metrics.yml
    sloguard check --slos state/controller/slos --metrics test-results/metrics.yml

sloguard's pytest plugin records every request that passes through a ``SLOGuard``
during these tests; ``sloguard check`` then judges each capability against
``state/controller/slos/``. (The project's own suite, under ``tests/``, overloads
these capabilities on purpose to test shedding: it is not what the gate measures.)
"""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path
from typing import Any

import httpx
import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "quickstart.py"
REQUESTS = 40
"""Per capability: more than the 20 a verdict needs (the SLOs' shedding.min_samples)."""


@pytest.fixture(scope="module")
def service() -> Any:
    """examples/quickstart.py's app: a Starlette app behind SLOGuard."""
    return runpy.run_path(str(QUICKSTART))["app"]


async def post_many(app: Any, path: str, count: int) -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        return [(await client.post(path)).status_code for _ in range(count)]


@pytest.mark.parametrize(
    "capability", ["classify/email", "convert/document_to_pdf", "example/capability"]
)
def test_each_capability_answers(service: Any, capability: str) -> None:
    path = f"/route/{capability}?delay_ms=1"  # the handler's own work: 1 ms
    statuses = asyncio.run(post_many(service, path, REQUESTS))
    assert statuses == [200] * REQUESTS
