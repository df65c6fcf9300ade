"""A Starlette app behind SLOGuard: idempotent POST /orders and an SLO-guarded capability.

python examples/quickstart.py          # serves on http://127.0.0.1:8000

``POST /orders`` is made safe to retry by its ``Idempotency-Key``.
``POST /route/classify/email?delay_ms=N`` answers after N ms; its SLO
(state/controller/slos/classify_email.yml: p95 60 ms, enforced) makes SLOGuard
shed low-priority requests once it is missed.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sloguard import MemoryStore, SLOGuard

SLO_DIR = Path(__file__).resolve().parents[1] / "state" / "controller" / "slos"

order_ids = itertools.count(1)


async def create_order(request: Request) -> JSONResponse:
    order = await request.json()
    return JSONResponse({"id": next(order_ids), **order}, status_code=201)


async def capability(request: Request) -> JSONResponse:
    delay_ms = float(request.query_params.get("delay_ms", "5"))
    await asyncio.sleep(min(delay_ms, 10_000) / 1000)
    verb, name = request.path_params["verb"], request.path_params["name"]
    return JSONResponse({"capability": f"{verb}:{name}"})


app = SLOGuard(
    Starlette(
        routes=[
            Route("/orders", create_order, methods=["POST"]),
            Route("/route/{verb}/{name}", capability, methods=["POST"]),
        ]
    ),
    slo_dir=SLO_DIR,
    store=MemoryStore(ttl_seconds=3600, max_entries=10_000),
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
