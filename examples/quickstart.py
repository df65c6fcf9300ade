"""A Starlette app whose POST /orders is made safe to retry by IdempotencyMiddleware.

python examples/quickstart.py          # serves on http://127.0.0.1:8000
"""

from __future__ import annotations

import itertools

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sloguard import IdempotencyMiddleware, MemoryStore

order_ids = itertools.count(1)


async def create_order(request: Request) -> JSONResponse:
    order = await request.json()
    return JSONResponse({"id": next(order_ids), **order}, status_code=201)


app = IdempotencyMiddleware(
    Starlette(routes=[Route("/orders", create_order, methods=["POST"])]),
    store=MemoryStore(ttl_seconds=3600, max_entries=10_000),
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
