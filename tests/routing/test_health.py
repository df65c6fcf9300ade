"""The health loop survives any one worker's check raising, logs it once, and says how it
is doing in /healthz."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import httpx
import pytest

from sloguard.routing import HealthChecker, Worker, WorkerRegistry, create_controller_app
from tests.routing.workers import RecordingWorker, running
from tests.servers import serving

CAP = "convert:document_to_pdf"


class FaultyTransport(httpx.AsyncBaseTransport):
    """A real HTTP transport that raises, as no transport should, for the URLs in ``faulty``
    (what a URL the client cannot use, or a bug, does to a check)."""

    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.faulty: set[str] = set()
        self.raised = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if f"{request.url.scheme}://{request.url.netloc.decode()}" in self.faulty:
            self.raised += 1
            raise RuntimeError("the check itself broke (on purpose)")
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


async def passes(checker: HealthChecker, at_least: int) -> None:
    for _ in range(1_000):
        if checker.liveness.passes >= at_least:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the loop made {checker.liveness.passes} passes, not {at_least}")


async def test_a_check_that_raises_is_that_workers_failure_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, faulty, sick = RecordingWorker("good"), RecordingWorker("faulty"), RecordingWorker("s")
    sick.healthy = False
    registry = WorkerRegistry()
    checker = HealthChecker(registry, unhealthy_after=2)
    transport = FaultyTransport()
    with running(good) as good_url, running(faulty) as faulty_url, running(sick) as sick_url:
        for name, url in [("good", good_url), ("faulty", faulty_url), ("sick", sick_url)]:
            registry.register(name, url, [CAP], static=True)
        transport.faulty.add(faulty_url)
        async with httpx.AsyncClient(transport=transport) as client:
            loop = asyncio.create_task(checker.run(client, 0.001))
            try:
                with caplog.at_level(logging.INFO, logger="sloguard.routing"):
                    await passes(checker, 20)
                    during = {w["id"]: w for w in registry.snapshot()}
                    transport.faulty.clear()  # the fault goes away
                    await passes(checker, checker.liveness.passes + 3)
                    after = {w["id"]: w for w in registry.snapshot()}
                survived = not loop.done()
            finally:
                loop.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await loop

    assert survived
    assert 20 <= checker.liveness.failures <= transport.raised
    assert checker.liveness.state() == "stopped"  # cancelled at the end, not before
    assert "health check of worker faulty: RuntimeError" in (checker.liveness.last_error or "")
    assert during["faulty"]["healthy"] is False
    assert during["faulty"]["last_error"].startswith("health check raised RuntimeError")
    assert during["good"]["healthy"] is True
    assert during["sick"]["healthy"] is False  # the others were still checked
    assert during["sick"]["last_error"] == "health check answered 503"
    assert after["faulty"]["healthy"] is True
    messages = [r.getMessage() for r in caplog.records]
    skipped = [m for m in messages if "worker faulty failed and was skipped" in m]
    assert len(skipped) == 1  # logged once, not once a round
    assert any("worker faulty works again" in m for m in messages)


class BrokenRegistry(WorkerRegistry):
    """A registry whose bookkeeping raises for one worker: the check after the request."""

    def check_passed(self, worker: Worker) -> None:
        if worker.id == "broken":
            raise ValueError("bookkeeping failed (on purpose)")
        super().check_passed(worker)


async def test_healthz_shows_the_loop_running_and_counting_failures() -> None:
    good, broken = RecordingWorker("good"), RecordingWorker("broken")
    registry = BrokenRegistry()
    app = create_controller_app(registry=registry, health_interval_s=0.01, open_registry=True)
    checker: HealthChecker = app.state.controller.health
    with running(good) as good_url, running(broken) as broken_url, serving(app) as url:
        registry.register("good", good_url, [CAP], static=True)
        registry.register("broken", broken_url, [CAP], static=True)
        await passes(checker, checker.liveness.passes + 5)
        async with httpx.AsyncClient(base_url=url) as client:
            health = (await client.get("/healthz")).json()
            routed = await client.post("/route/convert/document_to_pdf", content=b"{}")

    loop = health["loops"]["health_checks"]
    assert health["status"] == "ok"
    assert loop["state"] == "running"
    assert loop["failures"] >= 3
    assert loop["last_error"].startswith("health check of worker broken: ValueError")
    assert (health["workers"], health["healthy"]) == (2, 1)
    assert routed.headers["x-worker-id"] == "good"


async def test_a_round_that_raises_is_skipped_and_the_next_one_runs() -> None:
    class Flaky(WorkerRegistry):
        def __init__(self) -> None:
            super().__init__()
            self.rounds = 0

        def __iter__(self) -> Iterator[Worker]:
            self.rounds += 1
            if self.rounds % 2:
                raise RuntimeError("listing the workers failed (on purpose)")
            return super().__iter__()

    registry = Flaky()
    checker = HealthChecker(registry)
    async with httpx.AsyncClient() as client:
        loop = asyncio.create_task(checker.run(client, 0.001))
        await passes(checker, 10)
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop

    assert checker.liveness.failures >= 4
    assert checker.liveness.last_error is not None
    assert checker.liveness.last_error.startswith("health check round: RuntimeError")
