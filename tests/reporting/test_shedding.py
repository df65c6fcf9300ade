"""What reporting shows of admission: the ``shedding`` object and the limit's events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from sloguard import SLOGuard
from sloguard._clock import ManualClock
from sloguard.reporting import LimitTracker, ReportEvent, SLOMonitor, event_json, shedding_json
from sloguard.reporting.api import slo_routes
from sloguard.slo.manager import SLOManager
from tests.asgi import call, http_scope
from tests.reporting.conftest import write_slo
from tests.reporting.statuses import NOW

CAP = "convert:pdf"
FIXED_2 = (
    "enforcement: {reject_on_violation: true}\n"
    "shedding: {concurrency: {mode: fixed, initial: 2, min: 1, queue: {size: 0}}}\n"
)


def figures(limit: int, refused: dict[str, dict[str, int]] | None = None, **more: int) -> dict:  # type: ignore[type-arg]
    return {
        "mode": "adaptive",
        "limit": limit,
        "inflight": more.get("inflight", limit),
        "queued": more.get("queued", 0),
        "refused": refused or {},
    }


def changes(event: ReportEvent | None) -> list[str] | None:
    return None if event is None else list(event.data["changes"])


# -- LimitTracker -----------------------------------------------------------------------


def test_refusals_starting_and_stopping_are_one_event_each() -> None:
    tracker = LimitTracker(quiet_s=5.0)
    assert tracker.observe(CAP, figures(10), NOW) is None  # the first look: a baseline
    started = tracker.observe(CAP, figures(10, {"concurrency_limit": {"low": 3}}), NOW + 1)
    assert started is not None
    assert (started.type, started.capability, started.at) == ("concurrency", CAP, NOW + 1)
    assert started.data["changes"] == ["refusals_started"]
    assert started.data["new_refusals"] == {"concurrency_limit": 3}
    assert started.data["refusing"] is True
    assert started.data["concurrency"] == figures(10, {"concurrency_limit": {"low": 3}})
    assert started.data["summary"] == (
        "limit 10; refusing (concurrency_limit 3); 10 in flight, 0 queued"
    )
    # Still refusing, a tick later and more: nothing new to say.
    more = figures(10, {"concurrency_limit": {"low": 9}, "deadline": {"high": 1}})
    assert tracker.observe(CAP, more, NOW + 2) is None
    # Quiet, but not for long enough yet.
    assert tracker.observe(CAP, more, NOW + 6.5) is None
    stopped = tracker.observe(CAP, figures(10, more["refused"], inflight=1), NOW + 7)
    assert changes(stopped) == ["refusals_stopped"]
    assert stopped is not None
    assert stopped.data["refusing"] is False
    assert stopped.data["summary"] == "limit 10; refusals stopped; 1 in flight, 0 queued"
    assert tracker.observe(CAP, figures(10, more["refused"]), NOW + 20) is None


def test_a_limit_that_moves_materially_is_news_at_most_every_quiet_s() -> None:
    tracker = LimitTracker(quiet_s=5.0)
    tracker.observe(CAP, figures(10), NOW)
    assert tracker.observe(CAP, figures(7), NOW + 5) is None  # 10 to 7: not material
    cut = tracker.observe(CAP, figures(6), NOW + 10)  # 10 to 6: x1.67 and 4 fewer
    assert changes(cut) == ["limit"]
    assert cut is not None
    assert (cut.data["previous_limit"], cut.data["concurrency"]["limit"]) == (10, 6)
    assert cut.data["summary"] == "limit 10 → 6; 6 in flight, 0 queued"
    # Back up at once: material, but within quiet_s of the last event.
    assert tracker.observe(CAP, figures(12), NOW + 12) is None
    assert changes(tracker.observe(CAP, figures(12), NOW + 15)) == ["limit"]
    # Small limits: 2 to 3 is x1.5 but one request; 2 to 4 is news.
    tracker.observe("convert:png", figures(2), NOW)
    assert tracker.observe("convert:png", figures(3), NOW + 10) is None
    assert changes(tracker.observe("convert:png", figures(4), NOW + 20)) == ["limit"]


def test_refusals_starting_carry_the_limit_that_moved_with_them() -> None:
    tracker = LimitTracker(quiet_s=5.0)
    tracker.observe(CAP, figures(40), NOW)
    event = tracker.observe(CAP, figures(12, {"deadline": {"high": 2}}), NOW + 1)
    assert changes(event) == ["limit", "refusals_started"]
    assert event is not None
    assert event.data["summary"] == "limit 40 → 12; refusing (deadline 2); 12 in flight, 0 queued"


def test_the_first_look_is_a_baseline_and_no_limit_is_forgotten() -> None:
    tracker = LimitTracker(quiet_s=5.0)
    many = {"concurrency_limit": {"low": 50}}
    assert tracker.observe(CAP, figures(10), NOW) is None
    assert changes(tracker.observe(CAP, figures(10, many), NOW + 1)) == ["refusals_started"]
    assert tracker.observe(CAP, {"mode": "off"}, NOW + 2) is None  # forgotten
    assert tracker.observe(CAP, None, NOW + 3) is None
    # Seen again (a new limiter: made at its first request): its refusals are new.
    fresh = {"concurrency_limit": {"low": 2}}
    event = tracker.observe(CAP, figures(10, fresh), NOW + 4)
    assert changes(event) == ["refusals_started"]
    assert event is not None
    assert event.data["new_refusals"] == {"concurrency_limit": 2}
    assert event.data["previous_limit"] == 10
    # A reload that retunes the limit gives the capability a new limiter, counting from
    # 0: 1 refusal after 2 is 1 new one (still refusing), not -1.
    assert tracker.observe(CAP, figures(10, {"concurrency_limit": {"low": 1}}), NOW + 5) is None
    assert tracker.observe(CAP, figures(10, {"concurrency_limit": {"low": 1}}), NOW + 9) is None
    assert changes(
        tracker.observe(CAP, figures(10, {"concurrency_limit": {"low": 1}}), NOW + 11)
    ) == ["refusals_stopped"]


# -- shedding_json, and /slo with it ------------------------------------------------------


class Service:
    """SLOGuard in front of an app that holds requests at a gate and takes ``latency_s``
    of the manual clock; ``/{name}`` is ``convert:{name}``."""

    def __init__(self, slos: Path) -> None:
        self.clock = ManualClock()
        self.manager = SLOManager(slos, clock=self.clock)
        self.gate = asyncio.Event()
        self.gate.set()
        self.latency_s = 0.01
        self.answer = 200
        self.inside = 0

        async def app(scope: Any, receive: Any, send: Any) -> None:
            self.inside += 1
            await self.gate.wait()
            self.inside -= 1
            self.clock.advance(self.latency_s)
            await send({"type": "http.response.start", "status": self.answer, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        routes = {
            f"/{p.stem.split('_')[1]}": f"convert:{p.stem.split('_')[1]}"
            for p in slos.glob("*.yml")
        }
        self.guard = SLOGuard(
            app,
            manager=self.manager,
            route_table=routes,
            clock=self.clock,
            metrics=False,
            random_source=lambda: 0.0,  # a priority being shed is always refused
        )

    async def status(self, path: str, priority: str = "normal") -> int:
        headers = [(b"x-priority", priority.encode())]
        messages = await call(self.guard, http_scope(path=path, headers=headers))
        return int(messages[0]["status"])

    async def hold(self, path: str, count: int) -> list[asyncio.Future[int]]:
        """``count`` requests of ``path`` in the app, held at the gate until it opens."""
        self.gate.clear()
        held = [asyncio.ensure_future(self.status(path)) for _ in range(count)]
        for _ in range(10_000):
            if self.inside == count:
                return held
            await asyncio.sleep(0)
        raise AssertionError(f"{self.inside} of {count} requests reached the app")

    def shedding(self, capability: str, active: bool = False) -> dict[str, Any] | None:
        slo = self.manager.get_slo(capability)
        return None if slo is None else shedding_json(slo, active, self.guard.admission)


async def test_the_shedding_object_says_which_limit_applies(tmp_path: Path) -> None:
    slos = tmp_path / "slos"
    write_slo(slos, name="pdf", extra=FIXED_2)
    enforce = "enforcement: {reject_on_violation: true}\n"
    write_slo(slos, name="png", extra=enforce + 'shedding: {concurrency: {mode: "off"}}\n')
    write_slo(slos, name="gif")  # a dry run: no limit, whatever the mode
    write_slo(slos, name="svg", extra=enforce)
    service = Service(slos)
    slo = service.manager.get_slo(CAP)
    assert slo is not None
    assert shedding_json(slo, True, None) == {"active": True}  # no admission to read
    assert service.shedding("convert:png") == {
        "active": False,
        "rejection_ratios": {},
        "shed": {},
        "concurrency": {"mode": "off"},
    }
    assert (service.shedding("convert:gif") or {})["concurrency"] == {"mode": "off"}
    assert (service.shedding("convert:svg") or {})["concurrency"] == {"mode": "adaptive"}

    held = await service.hold("/pdf", 2)
    assert await service.status("/pdf", "low") == 503
    expected = {
        "active": False,
        "rejection_ratios": {},
        "shed": {"low": 1},
        "concurrency": {
            "mode": "fixed",
            "limit": 2,
            "inflight": 2,
            "queued": 0,
            "refused": {"concurrency_limit": {"low": 1}},
        },
    }
    assert service.shedding(CAP) == expected
    # GET /slo answers with the same object.
    api = Starlette(routes=slo_routes(service.manager, admission=service.guard.admission, token=""))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://test"
    ) as client:
        status = (await client.get(f"/slo/{CAP}")).json()
    assert status["shedding"] == expected
    service.gate.set()
    assert await asyncio.gather(*held) == [200, 200]


# -- the monitor: shedding events with the figures, concurrency events --------------------


async def test_the_monitor_publishes_the_limit_s_events_and_both_loops_figures(
    tmp_path: Path,
) -> None:
    slos = tmp_path / "slos"
    write_slo(slos, name="pdf", extra=FIXED_2)
    service = Service(slos)
    wall = ManualClock(NOW)
    monitor = SLOMonitor(service.manager, shedding=service.shedding, clock=wall)
    subscription = monitor.hub.subscribe()
    assert await service.status("/pdf") == 200
    assert await monitor.tick() == ([], [])  # the limit's baseline
    held = await service.hold("/pdf", 2)
    assert [await service.status("/pdf", "low") for _ in range(3)] == [503] * 3
    wall.advance(1)
    [started], _ = await monitor.tick()
    assert subscription.get_nowait() == started
    as_json = event_json(started)
    assert (as_json["type"], as_json["capability"]) == ("concurrency", CAP)
    assert as_json["data"]["changes"] == ["refusals_started"]
    assert as_json["data"]["concurrency"] == {
        "mode": "fixed",
        "limit": 2,
        "inflight": 2,
        "queued": 0,
        "refused": {"concurrency_limit": {"low": 3}},
    }
    assert as_json["data"]["concurrency"] == (service.shedding(CAP) or {})["concurrency"]
    service.gate.set()
    assert await asyncio.gather(*held) == [200, 200]
    wall.advance(5)
    [stopped], _ = await monitor.tick()
    assert stopped.data["changes"] == ["refusals_stopped"]
    assert stopped.data["concurrency"]["inflight"] == 0

    # The window policy starts shedding (with a limit, errors drive it, not latency): its
    # event has the fields of the /slo object.
    service.answer = 500
    for _ in range(25):
        await service.status("/pdf", "high")
    service.clock.advance(1)  # past the policy's next evaluation
    assert await service.status("/pdf", "low") == 503
    wall.advance(1)
    events, _ = await monitor.tick()
    [shedding] = [e for e in events if e.type == "shedding"]
    data = event_json(shedding)["data"]
    assert data["shedding"] is True  # as before: whether the window policy sheds
    assert data["active"] is True
    assert data["violations"]
    expected = service.shedding(CAP, True)
    assert expected is not None
    assert {key: data[key] for key in expected} == expected
    assert data["rejection_ratios"]["low"] > 0
    assert data["shed"] == {"low": 4}
    assert data["concurrency"]["refused"] == {"concurrency_limit": {"low": 3}}
