"""Reporter: SLOGuard's monitor, callbacks, history and /slo/ws, over a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from sloguard import SLOGuard
from sloguard._clock import ManualClock
from sloguard.exceptions import ConfigurationError
from sloguard.observability.metrics import Metrics
from sloguard.reporting import Alert, AlertsConfig, Breach
from sloguard.reporting.reporter import Reporter
from sloguard.slo.manager import SLOManager
from tests.postgres_server import unique_schema
from tests.reporting.conftest import write_slo
from tests.servers import serving

CAP = "convert:pdf"
WALL_START = 1_800_000_000.0


class Stack:
    """SLOGuard in front of a handler taking ``latency_s`` of the manual clock, plus /slo."""

    def __init__(self, tmp_path: Path, *, token: str = "", extra: str = "") -> None:
        write_slo(tmp_path / "slos", extra=extra)
        self.clock = ManualClock()
        self.wall = ManualClock(WALL_START)
        self.manager = SLOManager(tmp_path / "slos", clock=self.clock)
        self.reporter = Reporter(
            self.manager,
            history=tmp_path / "history.sqlite3",
            monitor_every_s=0.02,
            wall_clock=self.wall,
            monotonic_clock=self.clock,
        )
        self.latency_s = 0.01
        self.gate = threading.Event()
        self.gate.set()
        self.inside = 0

        async def work(request: Request) -> Response:
            self.inside += 1
            if not self.gate.is_set():
                await anyio.to_thread.run_sync(self.gate.wait)
            self.inside -= 1
            self.clock.advance(self.latency_s)
            return JSONResponse({"ok": True})

        inner = Starlette(
            routes=[Route("/work", work, methods=["POST"]), *self.reporter.routes(token=token)]
        )
        self.guard = SLOGuard(
            inner,
            manager=self.manager,
            reporter=self.reporter,
            route_table={"/work": CAP},
            clock=self.clock,
            metrics=Metrics(CollectorRegistry()),
        )


async def next_event(ws: ClientConnection, wanted: str) -> dict[str, Any]:
    """The next event of type ``wanted`` (earlier ones of other types are skipped)."""
    async with asyncio.timeout(10):
        while True:
            event: dict[str, Any] = json.loads(await ws.recv())
            if event["type"] == wanted:
                return event


async def test_a_breach_reaches_callbacks_the_websocket_and_the_history(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    breaches: list[Breach] = []
    alerts: list[Alert] = []
    stack.guard.on_breach(breaches.append)
    stack.guard.on_alert(alerts.append)
    with serving(stack.guard) as base:
        async with (
            connect(base.replace("http", "ws") + "/slo/ws") as ws,
            httpx.AsyncClient(base_url=base) as client,
        ):
            stack.latency_s = 0.3  # p95 300 ms against a 100 ms target
            for _ in range(30):
                assert (await client.post("/work")).status_code == 200
            warning = await next_event(ws, "warning")
            assert warning["capability"] == CAP
            stack.wall.advance(61)  # non-compliant for longer than open_after_s
            opened = await next_event(ws, "breach")
            breach_id = opened["data"]["breach"]["id"]
            assert opened["data"]["breach"]["state"] == "open"
            alert = await next_event(ws, "alert")
            assert alert["capability"] == CAP

            async def saved() -> list[dict[str, Any]]:
                response = await client.get("/slo/breaches", params={"status": "open"})
                assert response.status_code == 200
                found: list[dict[str, Any]] = response.json()["breaches"]
                return found

            for _ in range(500):  # the breach is saved off the event loop, soon
                if found := await saved():
                    break
                await asyncio.sleep(0.02)
            assert [b["id"] for b in found] == [breach_id]
            status = (await client.get(f"/slo/{CAP}")).json()
            assert status["compliant"] is False
            keyed = {"Idempotency-Key": "k1"}
            _first, again = [await client.post("/work", headers=keyed) for _ in range(2)]
            assert again.headers["idempotent-replayed"] == "true"
            idempotency = (await client.get("/slo")).json()["idempotency"]
            assert idempotency == {"hits": 1, "misses": 1, "hit_rate": 0.5}
            stack.clock.advance(5)  # the last 5-second bucket closes, to be flushed at stop
    # The lifespan stopped the reporter: its last flush wrote the closed buckets' rows.
    assert [b.state for b in breaches][:2] == ["warning", "open"]
    assert any(a.capability == CAP for a in alerts)
    history = stack.reporter.repository
    assert history is not None
    points = history.history(CAP, int(WALL_START) - 60, int(WALL_START) + 120, 60)
    assert sum(p.requests for p in points) == 31  # the keyed miss ran; its replay did not


async def test_the_websocket_streams_the_concurrency_limit_with_the_figures_of_slo(
    tmp_path: Path,
) -> None:
    """The limiter starts refusing: a ``concurrency`` event, its figures those ``GET
    /slo`` shows; it stops: another."""
    limit_2 = (
        "enforcement: {reject_on_violation: true}\n"
        "shedding: {concurrency: {mode: fixed, initial: 2, min: 1, queue: {size: 0}}}\n"
    )
    stack = Stack(tmp_path, extra=limit_2)
    with serving(stack.guard) as base:
        async with (
            connect(base.replace("http", "ws") + "/slo/ws") as ws,
            httpx.AsyncClient(base_url=base) as client,
        ):
            assert (await client.post("/work")).status_code == 200  # the limiter exists
            stack.gate.clear()
            held = [asyncio.ensure_future(client.post("/work")) for _ in range(2)]
            async with asyncio.timeout(10):
                while stack.inside < 2:  # noqa: ASYNC110 (the handler runs on the server's loop)
                    await asyncio.sleep(0.01)
            low = {"x-priority": "low"}
            assert [(await client.post("/work", headers=low)).status_code for _ in range(3)] == [
                503
            ] * 3
            started = await next_event(ws, "concurrency")
            status = (await client.get(f"/slo/{CAP}")).json()
            assert started["capability"] == CAP
            assert started["data"]["changes"] == ["refusals_started"]
            assert started["data"]["refusing"] is True
            assert started["data"]["concurrency"] == {
                "mode": "fixed",
                "limit": 2,
                "inflight": 2,
                "queued": 0,
                "refused": {"concurrency_limit": {"low": 3}},
            }
            assert status["shedding"]["concurrency"] == started["data"]["concurrency"]
            assert status["shedding"]["shed"] == {"low": 3}
            assert "refusing (concurrency_limit 3)" in started["data"]["summary"]

            stack.gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            stack.wall.advance(5)  # quiet for 5 s: the refusals have stopped
            stopped = await next_event(ws, "concurrency")
            assert stopped["data"]["changes"] == ["refusals_stopped"]
            assert stopped["data"]["concurrency"]["inflight"] == 0


async def test_the_websocket_needs_the_api_token_when_one_is_set(tmp_path: Path) -> None:
    stack = Stack(tmp_path, token="s3cret")
    with serving(stack.guard) as base:
        url = base.replace("http", "ws") + "/slo/ws"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 403
        async with connect(url + "?token=s3cret") as ws:
            await ws.ping()
        async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            await ws.ping()
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/slo")).status_code == 401


def test_reporting_options_are_checked(tmp_path: Path) -> None:
    write_slo(tmp_path / "slos")
    manager = SLOManager(tmp_path / "slos")
    reporter = Reporter(manager)
    app = Starlette()
    with pytest.raises(ConfigurationError, match="not to SLOGuard"):
        SLOGuard(app, manager=manager, reporter=reporter, history=tmp_path / "h.sqlite3")
    with pytest.raises(ConfigurationError, match="another SLOManager"):
        SLOGuard(app, slo_dir=tmp_path / "slos", reporter=reporter)
    with pytest.raises(ConfigurationError, match="monitor_every_s"):
        Reporter(manager, monitor_every_s=0)
    guard = SLOGuard(app, manager=manager)  # a reporter of its own, logging alerts
    assert guard.reporter.manager is manager
    assert guard.reporter.repository is None
    assert guard.on_breach(print) is print


def test_breach_detection_is_tuned_through_the_reporter_and_slo_guard(tmp_path: Path) -> None:
    write_slo(tmp_path / "slos")
    manager = SLOManager(tmp_path / "slos")
    default = Reporter(manager).monitor.tracker
    assert (default.open_after_s, default.resolve_after_s) == (55.0, 60.0)
    tuned = Reporter(manager, open_after_s=20, resolve_after_s=90).monitor.tracker
    assert (tuned.open_after_s, tuned.resolve_after_s) == (20, 90)
    guard = SLOGuard(Starlette(), manager=manager, metrics=False, open_after_s=5)
    tracker = guard.reporter.monitor.tracker
    assert (tracker.open_after_s, tracker.resolve_after_s) == (5, 60.0)
    with pytest.raises(ConfigurationError, match="open_after_s"):
        SLOGuard(Starlette(), manager=manager, reporter=Reporter(manager), resolve_after_s=5)
    with pytest.raises(ConfigurationError, match="open_after_s must be a finite number >= 0"):
        Reporter(manager, open_after_s=-1)


async def test_by_default_a_breach_opens_within_60_s_of_the_first_violating_evaluation(
    tmp_path: Path,
) -> None:
    write_slo(tmp_path / "slos")
    clock, wall = ManualClock(), ManualClock(WALL_START)
    manager = SLOManager(tmp_path / "slos", clock=clock)
    reporter = Reporter(manager, wall_clock=wall, monotonic_clock=clock)
    first_bad = opened = None
    for _ in range(20):  # the monitor's default: an evaluation every 5 s
        for _ in range(25):
            manager.record(CAP, latency_s=0.3)  # every request over the 100 ms p95 target
        events, _ = await reporter.monitor.tick()
        types = [e.type for e in events]
        if "warning" in types:
            first_bad = wall()
        if "breach" in types:
            opened = wall()
            break
        # The run loop sleeps 5 s after each tick, so ticks drift a little later each time.
        clock.advance(5.01)
        wall.advance(5.01)
    await reporter.stop()
    assert first_bad == WALL_START
    assert opened is not None
    assert opened - first_bad <= 60.0


async def test_alerts_go_out_while_the_postgresql_history_hangs(
    tmp_path: Path, database_url: str
) -> None:
    """Another client holds every table locked: each store call hangs. Alerts are still
    delivered, the monitor still passes, /slo/history answers 503, no thread piles up;
    once the lock goes the store is used again. (The recorder's bounded writes are
    tested in test_recorder.py.)"""
    import psycopg

    from sloguard.reporting.postgres import PostgresHistory

    schema = unique_schema()
    repository = PostgresHistory(database_url, schema=schema)
    repository.migrate()
    write_slo(tmp_path / "slos")
    clock, wall = ManualClock(), ManualClock(WALL_START)
    manager = SLOManager(tmp_path / "slos", clock=clock)
    alerts = AlertsConfig.model_validate({"delivery": {"record_timeout_s": 0.2}})
    reporter = Reporter(
        manager,
        history=repository,
        alerts=alerts,
        monitor_every_s=None,
        wall_clock=wall,
        monotonic_clock=clock,
        store_timeout_s=0.2,
    )
    locker = psycopg.connect(database_url)
    locker.execute(f'SET search_path TO "{schema}"')
    locker.execute(
        "LOCK TABLE sloguard_alerts, sloguard_breaches, sloguard_escalations, sloguard_minutes "
        "IN ACCESS EXCLUSIVE MODE"
    )
    try:
        for _ in range(25):
            manager.record(CAP, latency_s=0.3)  # p95 300 ms against 100 ms: a warning
        events, fired = await asyncio.wait_for(reporter.monitor.tick(), timeout=10)
        assert [e.type for e in events] == ["warning"]
        assert [a.kind for a in fired] == ["warning"]
        threads = threading.active_count()
        for i in range(5):
            reporter.notifier.notify(Alert(f"a{i}", CAP, "budget", "slack", "warning", "x", 1.0))
        await asyncio.wait_for(reporter.notifier.join(), timeout=10)
        assert reporter.notifier.stats.delivered == 6
        assert threading.active_count() <= threads  # the two stuck calls, no more
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=Starlette(routes=list(reporter.routes(token="")))),
            base_url="http://test",
        ) as client:
            response = await client.get("/slo/history", params={"capability": CAP})
        assert response.status_code == 503
        assert response.json()["error"] == "history_unavailable"
        assert reporter.notifier.liveness.last_error is not None
    finally:
        locker.rollback()
        locker.close()
    # The lock is gone: the stuck calls finish (the warning's record among them), and
    # once they have, alerts are recorded again.
    recorded = await asyncio.to_thread(repository.alerts, CAP)
    assert [a.kind for a in recorded] == ["warning"]
    for attempt in range(100):
        alert_id = f"after-{attempt}"
        reporter.notifier.notify(Alert(alert_id, CAP, "budget", "slack", "warning", "x", 2.0))
        await reporter.notifier.join()
        if any(a.id == alert_id for a in await asyncio.to_thread(repository.alerts, CAP)):
            break
    else:
        pytest.fail("no alert was recorded after the lock was released")
    await reporter.stop()
    repository.drop_schema()
    repository.close()
