"""SLOApp: /slo, /slo/ws and /slo/ui mounted in one's own FastAPI or Starlette app,
with the guard added by ``app.add_middleware(SLOGuard, ...)``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import connect

from sloguard import SLOGuard
from sloguard.observability.metrics import Metrics
from sloguard.reporting import SLOApp
from sloguard.reporting.incident import iso
from sloguard.reporting.records import ReportEvent
from sloguard.reporting.reporter import Reporter
from sloguard.slo.manager import SLOManager
from tests.reporting.conftest import write_slo
from tests.servers import serving

CAP = "convert:pdf"


async def work(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/route/{verb}/{name}", work, methods=["POST"])])


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/route/{verb}/{name}")
    async def route(verb: str, name: str) -> dict[str, bool]:
        return {"ok": True}

    return app


FRAMEWORKS: dict[str, Callable[[], Any]] = {"starlette": starlette_app, "fastapi": fastapi_app}


@pytest.fixture(params=sorted(FRAMEWORKS))
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The README's way: the guard as a middleware, the /slo site mounted."""
    write_slo(tmp_path / "slos")
    app = FRAMEWORKS[request.param]()
    app.add_middleware(
        SLOGuard,
        slo_dir=tmp_path / "slos",
        history=tmp_path / "history.sqlite3",
        metrics=Metrics(CollectorRegistry()),
        reload_every_s=None,
    )
    app.mount("/slo", SLOApp(token=""))
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def test_the_api_and_the_dashboard_answer_under_the_mount(app: Any) -> None:
    async with client(app) as c:
        assert (await c.post("/route/convert/pdf")).status_code == 200
        everything = await c.get("/slo/")
        redirected = await c.get("/slo", follow_redirects=True)
        one = await c.get(f"/slo/{CAP}")
        page = await c.get("/slo/ui")
        script = await c.get("/slo/ui/dashboard.js")
        history = await c.get("/slo/history", params={"capability": CAP})
        breaches = await c.get("/slo/breaches")

    assert everything.status_code == 200
    [status] = everything.json()["capabilities"]
    assert status["capability"] == CAP
    assert status["requests"] == 1  # the guard's own window: the mount serves its reporter
    assert "shed" in status["shedding"]  # the guard's refusals are reported
    assert redirected.json()["capabilities"][0]["capability"] == CAP
    assert one.json()["capability"] == CAP
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<meta name="sloguard-api" content="/slo">' in page.text
    assert script.status_code == 200
    assert history.status_code == 200  # the guard's history store
    assert breaches.json() == {"breaches": []}


async def test_no_fixed_path_falls_into_the_capability_route(app: Any) -> None:
    expected = {
        "/slo/ui": 200,
        "/slo/ui/dashboard.css": 200,
        "/slo/history?capability=convert:pdf": 200,
        "/slo/breaches": 200,
        "/slo/compliance": 200,
        "/slo/compliance/monthly": 200,
        "/slo/ws": 404,  # the WebSocket's path, over HTTP
        "/slo/histroy": 404,
    }
    async with client(app) as c:
        answered = {path: await c.get(path) for path in expected}
    assert {path: r.status_code for path, r in answered.items()} == expected
    for path in ("/slo/ws", "/slo/histroy"):
        problem = answered[path].json()
        assert problem["error"] == "not_found"  # not "no SLO file for capability 'ws'"
        assert problem["detail"].startswith(path.split("?")[0] + " is no /slo endpoint")


async def test_a_reporter_given_is_served_when_the_guard_wraps_the_app(tmp_path: Path) -> None:
    write_slo(tmp_path / "slos")
    inner = starlette_app()
    guard = SLOGuard(inner, slo_dir=tmp_path / "slos", metrics=Metrics(CollectorRegistry()))
    inner.mount("/slo", SLOApp(guard.reporter, token=""))
    async with client(guard) as c:
        await c.post("/route/convert/pdf")
        status = (await c.get(f"/slo/{CAP}")).json()
    assert status["requests"] == 1


async def test_without_a_guard_it_says_what_to_do() -> None:
    app = starlette_app()
    app.mount("/slo", SLOApp(token=""))
    async with client(app) as c:
        response = await c.get("/slo/")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["error"] == "no_slo_guard"
    assert "SLOApp(guard.reporter)" in body["detail"]


async def test_the_token_protects_the_api_but_not_the_page(tmp_path: Path) -> None:
    write_slo(tmp_path / "slos")
    app = fastapi_app()
    app.add_middleware(SLOGuard, slo_dir=tmp_path / "slos", metrics=Metrics(CollectorRegistry()))
    app.mount("/slo", SLOApp(token="s3cret"))
    async with client(app) as c:
        assert (await c.get("/slo/ui")).status_code == 200
        assert (await c.get("/slo/")).status_code == 401
        authorized = await c.get("/slo/", headers={"Authorization": "Bearer s3cret"})
    assert authorized.status_code == 200


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
async def test_over_uvicorn_the_websocket_streams_events(tmp_path: Path, framework: str) -> None:
    write_slo(tmp_path / "slos")
    app = FRAMEWORKS[framework]()
    app.add_middleware(
        SLOGuard,
        slo_dir=tmp_path / "slos",
        metrics=Metrics(CollectorRegistry()),
        reload_every_s=None,
    )
    mounted = SLOApp(token="")
    app.mount("/slo", mounted)
    at = 1_800_000_000.0

    async def publish(request: Request) -> JSONResponse:
        # On the server's event loop, as the monitor publishes.
        assert mounted.reporter is not None
        mounted.reporter.hub.publish(ReportEvent("shedding", CAP, at, {"active": True}))
        return JSONResponse({"subscribers": mounted.reporter.hub.subscribers})

    app.add_route("/publish", publish, methods=["POST"])
    with serving(app) as base:
        async with httpx.AsyncClient(base_url=base) as c:
            assert (await c.get("/slo/ui")).status_code == 200  # the first request finds the guard
            reporter = mounted.reporter
            assert isinstance(reporter, Reporter)
            assert reporter.running  # the guard's lifespan started it
            async with connect(base.replace("http", "ws") + "/slo/ws") as ws:
                for _ in range(500):  # the server subscribes right after the handshake
                    if reporter.hub.subscribers:
                        break
                    await asyncio.sleep(0.01)
                assert (await c.post("/publish")).json() == {"subscribers": 1}
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert event == {"type": "shedding", "capability": CAP, "at": iso(at), "data": {"active": True}}


async def test_idempotency_is_counted_per_capability_once_the_request_path_reports_it(
    tmp_path: Path,
) -> None:
    write_slo(tmp_path / "slos")
    write_slo(tmp_path / "slos", "classify", "email")
    manager = SLOManager(tmp_path / "slos")
    reporter = Reporter(manager)
    app = SLOApp(reporter, token="")
    async with client(app) as c:
        before = (await c.get("/")).json()["capabilities"]
        # What the request path calls for each keyed request (the hook the guard needs).
        for event in ("miss", "hit", "hit", "stored"):
            reporter.idempotency.count(CAP, event)
        after = {s["capability"]: s for s in (await c.get("/")).json()["capabilities"]}

    assert all("idempotency" not in s for s in before)  # not reported: not claimed as zero
    assert after[CAP]["idempotency"] == {"hits": 2, "misses": 1, "hit_rate": 2 / 3}
    assert after["classify:email"]["idempotency"] == {"hits": 0, "misses": 0, "hit_rate": None}
