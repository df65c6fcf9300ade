"""SLOMonitor end to end: a real manager's window, a breach, its alert at a real receiver."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sloguard._clock import ManualClock
from sloguard.reporting import (
    Alert,
    AlertsConfig,
    Breach,
    Notifier,
    ReportEvent,
    SLOMonitor,
    Subscription,
)
from sloguard.slo import SLOManager, SLOStatus
from tests.reporting.receivers import Receiver
from tests.reporting.statuses import NOW
from tests.servers import serving

SLO = (
    "capability: {verb: convert, name: document_to_pdf}\n"
    "slo:\n"
    "  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}\n"
    "  availability: {target: 0.999}\n"
    "  error_budget: {alerts: [{threshold: 0.5, channel: slack}]}\n"
)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serving(app) as url:
        yield app, url


async def test_a_breach_is_saved_published_called_back_and_alerted(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver
    (tmp_path / "pdf.yml").write_text(SLO, encoding="utf-8")
    clock = ManualClock(start=NOW)
    manager = SLOManager(tmp_path, clock=clock)
    config = AlertsConfig.model_validate(
        {
            "sinks": {"hook": {"type": "webhook", "url": url}},
            "channels": {"breach": ["hook"], "warning": ["hook"]},
        }
    )
    saved: list[Breach] = []
    called: list[Breach | Alert] = []

    async def save_breach(breach: Breach) -> None:
        saved.append(breach)

    async with Notifier(config, env={}) as notifier:
        monitor = SLOMonitor(manager, notifier=notifier, save_breach=save_breach, clock=clock)
        monitor.hub.on_breach(called.append)
        monitor.hub.on_alert(called.append)
        subscription = monitor.hub.subscribe()
        for _ in range(14):  # 70 s of 300 ms requests, a tick every 5 s
            for _ in range(25):
                manager.record("convert:document_to_pdf", latency_s=0.3)
            await monitor.tick()
            clock.advance(5.0)
        await notifier.join()

    assert [b.state for b in saved] == ["warning", "open"]
    assert saved[0].id == saved[1].id
    # The warning reached its sink once (not at every tick it stayed on), then the breach.
    # (Delivered concurrently: their order of arrival is not theirs to keep.)
    warning, breach = sorted(app.bodies(), key=lambda body: body["kind"] != "warning")
    assert (warning["id"], warning["kind"], warning["channel"], warning["severity"]) == (
        f"{saved[0].id}:warning",
        "warning",
        "warning",
        "info",
    )
    assert (breach["id"], breach["kind"], breach["channel"]) == (saved[1].id, "breach", "breach")
    assert [type(x).__name__ for x in called] == ["Breach", "Alert", "Breach", "Alert"]
    events: list[ReportEvent] = []
    while (event := subscription.get_nowait()) is not None:
        events.append(event)
    assert [e.type for e in events] == ["warning", "alert", "breach", "alert"]


async def test_a_removed_capability_is_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "pdf.yml"
    path.write_text(SLO, encoding="utf-8")
    clock = ManualClock(start=NOW)
    manager = SLOManager(tmp_path, clock=clock)
    async with Notifier() as notifier:
        monitor = SLOMonitor(manager, notifier=notifier, clock=clock)
        for _ in range(25):
            manager.record("convert:document_to_pdf", latency_s=0.3)
        events, _ = await monitor.tick()
        assert [e.type for e in events] == ["warning"]
        path.unlink()
        manager.reload()
        assert await monitor.tick() == ([], [])
    assert monitor.tracker.active() == []


async def test_a_failing_save_is_logged_and_the_rest_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pdf.yml").write_text(SLO, encoding="utf-8")
    clock = ManualClock(start=NOW)
    manager = SLOManager(tmp_path, clock=clock)

    def broken(breach: Breach) -> None:
        raise OSError("disk full")

    async with Notifier() as notifier:
        monitor = SLOMonitor(manager, notifier=notifier, save_breach=broken, clock=clock)
        subscription = monitor.hub.subscribe()
        for _ in range(25):
            manager.record("convert:document_to_pdf", latency_s=0.3)
        await monitor.tick()
    assert "saving breach convert:document_to_pdf@1764000000 failed" in caplog.text
    event = subscription.get_nowait()
    assert event is not None
    assert event.type == "warning"


async def test_a_tick_over_many_capabilities_lets_other_tasks_run_between_slices(
    tmp_path: Path,
) -> None:
    for i in range(20):
        (tmp_path / f"c{i}.yml").write_text(
            SLO.replace("document_to_pdf", f"c{i}").replace(
                ", alerts: [{threshold: 0.5, channel: slack}]", ""
            ),
            encoding="utf-8",
        )
    clock = ManualClock(start=NOW)
    manager = SLOManager(tmp_path, clock=clock)
    for capability in manager.capabilities:
        for _ in range(30):
            manager.record(capability, latency_s=0.3)  # every one violates its p95
    monitor = SLOMonitor(manager, clock=clock, slice_s=0.0)  # hand back after each capability
    seen_by_other: list[int] = []  # events published so far, each time the other task ran

    async def other(subscription: Subscription) -> None:
        published = 0
        while True:
            while subscription.get_nowait() is not None:
                published += 1
            seen_by_other.append(published)
            await asyncio.sleep(0)

    with monitor.hub.subscribe() as subscription:
        task = asyncio.create_task(other(subscription))
        events, _ = await monitor.tick()
        task.cancel()
    assert sorted(e.capability for e in events) == sorted(manager.capabilities)  # all judged
    # The other task ran in the middle of the tick, not only before and after it.
    assert [n for n in seen_by_other if 0 < n < len(events)]


THROUGHPUT_SLO = SLO.replace(
    "  error_budget:", "  throughput: {min_rps: 1}\n  error_budget:"
)  # a floor of 1 request a second


@pytest.mark.parametrize("refused_per_tick", [0, 5])
async def test_a_throughput_floor_counts_refusals_as_demand(
    tmp_path: Path, refused_per_tick: int
) -> None:
    (tmp_path / "pdf.yml").write_text(THROUGHPUT_SLO, encoding="utf-8")
    clock = ManualClock(start=NOW)
    manager = SLOManager(tmp_path, clock=clock)
    refused = {"convert:document_to_pdf": 0}
    async with Notifier() as notifier:
        monitor = SLOMonitor(manager, notifier=notifier, refusals=refused.__getitem__, clock=clock)
        for _ in range(24):  # 2 minutes, a tick every 5 s: the 60 s window fills, then slides
            for _ in range(2):  # ... served: 0.4 a second
                manager.record("convert:document_to_pdf", latency_s=0.01)
            refused["convert:document_to_pdf"] += refused_per_tick  # refused: 1 a second
            clock.advance(5.0)
            await monitor.tick()
    current = monitor.tracker.current("convert:document_to_pdf")
    status = manager.status("convert:document_to_pdf")
    assert status is not None
    assert status.compliant  # the live status (what shedding reads) never judges throughput
    if not refused_per_tick:
        assert current is None  # 0.4 rps asked and served: below the floor, not judged
        return
    assert current is not None
    assert current.state == "open"  # a shortfall is a breach
    [violation] = current.violations
    assert violation.startswith("throughput 0.")
    assert violation.endswith(" rps < target 1.0 rps")
    assert current.worst["throughput_rps"] < 1.0 <= current.worst["demand_rps"]


class BrokenManager(SLOManager):
    """An SLO manager whose status of the capabilities in ``broken`` raises: an injected fault."""

    broken: frozenset[str] = frozenset()

    def status(self, capability: str) -> SLOStatus | None:
        if capability in self.broken:
            raise RuntimeError(f"injected: the status of {capability} is broken")
        return super().status(capability)


def three_capabilities(directory: Path, clock: ManualClock, broken: set[str]) -> BrokenManager:
    for name in ("a", "b", "c"):
        (directory / f"{name}.yml").write_text(
            SLO.replace("document_to_pdf", name), encoding="utf-8"
        )
    manager = BrokenManager(directory, clock=clock)
    manager.broken = frozenset(broken)
    for capability in manager.capabilities:
        for _ in range(25):
            manager.record(capability, latency_s=0.3)  # every one misses its p95
    return manager


@pytest.mark.parametrize("broken", [{"convert:a"}, {"convert:b"}, {"convert:a", "convert:c"}])
async def test_a_capability_that_fails_never_stops_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: set[str]
) -> None:
    clock = ManualClock(start=NOW)
    manager = three_capabilities(tmp_path, clock, broken)
    healthy = sorted(set(manager.capabilities) - broken)
    async with Notifier() as notifier:
        monitor = SLOMonitor(manager, notifier=notifier, clock=clock)
        for tick in range(3):
            events, alerts = await monitor.tick()
            if tick == 0:
                assert sorted(e.capability for e in events) == healthy
                assert sorted(a.capability for a in alerts) == healthy
            clock.advance(5.0)
        await notifier.join()
    assert notifier.stats.delivered == len(healthy)
    assert monitor.liveness.failures == 3 * len(broken)
    assert monitor.liveness.last_error is not None
    assert "injected: the status of convert:" in monitor.liveness.last_error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert len(errors) == len(broken)  # each logged once, with its traceback


async def test_the_monitor_loop_survives_a_failing_tick_and_reports_its_liveness(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=NOW)
    manager = three_capabilities(tmp_path, clock, {"convert:a"})
    alerted = asyncio.Event()
    async with Notifier() as notifier:
        monitor = SLOMonitor(manager, notifier=notifier, clock=clock)
        monitor.hub.on_alert(lambda alert: alerted.set())
        assert monitor.liveness.state() == "idle"
        task = asyncio.create_task(monitor.run(interval_s=0.001))
        try:
            await asyncio.wait_for(alerted.wait(), timeout=10)
            assert not task.done()
            assert monitor.liveness.state() == "running"
            assert monitor.liveness.failures >= 1
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert monitor.liveness.state() == "stopped"
