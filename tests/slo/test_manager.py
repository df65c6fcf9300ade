from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import sloguard
from sloguard import ConfigurationError, SLOFile, SLOManager, SLOStatus
from sloguard._clock import ManualClock
from tests.tracked import tracked_from

SLOText = Callable[..., str]
WriteFile = Callable[[str, str], Path]
PDF = "convert:document_to_pdf"


@pytest.fixture
def mgr(state_slos: Path, clock: ManualClock) -> SLOManager:
    return SLOManager(state_slos, clock=clock)


def test_exported_from_the_package() -> None:
    for name in ("SLOManager", "SLOFile", "SLOStatus", "SLOFileError"):
        assert name in sloguard.__all__
        assert hasattr(sloguard, name)


def test_loads_the_shipped_files(mgr: SLOManager, state_slos: Path) -> None:
    assert mgr.capabilities == ("classify:email", "convert:document_to_pdf", "example:capability")
    assert mgr.errors == []
    assert mgr.slo_dir == state_slos
    slo = mgr.get_slo(PDF)
    assert isinstance(slo, SLOFile)
    assert slo.slo.latency.p95_ms == 100
    assert mgr.get_slo("convert:nothing") is None


def test_check_compliance_on_the_seed_example(mgr: SLOManager) -> None:
    assert mgr.check_compliance(PDF, {"p95_ms": 250, "availability": 0.999}) == (
        False,
        ["p95 latency 250ms > target 100ms"],
    )
    assert mgr.check_compliance(PDF, {"p95_ms": 80, "availability": 0.995}) == (
        False,
        ["availability 99.50% < target 99.90%"],
    )
    assert mgr.check_compliance(PDF, {"p95_ms": 80, "availability": 0.9995}) == (True, [])


def test_unknown_capability_is_compliant_like_the_seed(mgr: SLOManager) -> None:
    assert mgr.check_compliance("unknown:cap", {"p95_ms": 10_000}) == (True, [])


def test_no_directory_means_no_capabilities() -> None:
    mgr = SLOManager()
    assert mgr.capabilities == ()
    mgr.reload()
    assert mgr.reload_if_changed() is False
    assert mgr.status(PDF) is None


def test_missing_directory_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no-such-dir"):
        SLOManager(str(tmp_path / "no-such-dir"))


@pytest.mark.parametrize(
    "options",
    [{"window_seconds": 0}, {"buckets": 0}, {"relative_accuracy": 0}, {"relative_accuracy": 1}],
)
def test_bad_options_are_configuration_errors(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        SLOManager(**options)  # type: ignore[arg-type]


def test_bad_file_is_listed_and_logged_without_taking_down_the_rest(
    write: WriteFile, slo_dir: Path, slo_text: SLOText, caplog: pytest.LogCaptureFixture
) -> None:
    write("good.yml", slo_text("convert", "good"))
    write("bad.yml", slo_text("convert", "bad", p95=-1))
    with caplog.at_level(logging.WARNING, logger="sloguard.slo"):
        mgr = SLOManager(slo_dir)
    assert mgr.capabilities == ("convert:good",)
    [error] = mgr.errors
    assert error.path == slo_dir / "bad.yml"
    assert error.fields == ("slo.latency.p95_ms",)
    assert f"{slo_dir / 'bad.yml'}: slo.latency.p95_ms" in caplog.text


def test_duplicate_capability_names_both_files(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    write("a.yml", slo_text("convert", "pdf", p95=100))
    write("b.yml", slo_text("convert", "pdf", p95=300, p99=400))
    mgr = SLOManager(slo_dir)
    assert mgr.capabilities == ("convert:pdf",)
    [error] = mgr.errors
    assert "a.yml" in str(error)
    assert "b.yml" in str(error)
    slo = mgr.get_slo("convert:pdf")
    assert slo is not None
    assert slo.slo.latency.p95_ms == 100


# -- reload ---------------------------------------------------------------------


def test_reload_picks_up_new_changed_and_deleted_files(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    write("a.yml", slo_text("convert", "a", p95=100))
    write("b.yml", slo_text("convert", "b"))
    mgr = SLOManager(slo_dir)
    write("a.yml", slo_text("convert", "a", p95=150))
    write("c.yaml", slo_text("convert", "c"))
    (slo_dir / "b.yml").unlink()
    mgr.reload()
    assert mgr.capabilities == ("convert:a", "convert:c")
    slo = mgr.get_slo("convert:a")
    assert slo is not None
    assert slo.slo.latency.p95_ms == 150


def test_invalid_edit_keeps_the_last_good_version(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    write("a.yml", slo_text("convert", "a", p95=100))
    mgr = SLOManager(slo_dir)
    write("a.yml", slo_text("convert", "a", p95=100).replace("p95_ms: 100", "p95_ms: oops"))
    mgr.reload()
    assert mgr.capabilities == ("convert:a",)
    slo = mgr.get_slo("convert:a")
    assert slo is not None
    assert slo.slo.latency.p95_ms == 100
    assert [(e.path.name, e.fields) for e in mgr.errors] == [("a.yml", ("slo.latency.p95_ms",))]
    write("a.yml", "")
    mgr.reload()
    assert mgr.get_slo("convert:a") == slo
    write("a.yml", slo_text("convert", "a", p95=120))  # fixed: the new version, no errors
    mgr.reload()
    assert mgr.errors == []
    slo = mgr.get_slo("convert:a")
    assert slo is not None
    assert slo.slo.latency.p95_ms == 120


def test_a_file_first_seen_invalid_defines_nothing(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    mgr = SLOManager(slo_dir)
    write("a.yml", slo_text("convert", "a", target=2))
    mgr.reload()
    assert mgr.capabilities == ()
    assert len(mgr.errors) == 1


def test_on_reload_the_file_that_held_a_capability_keeps_it(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    write("b.yml", slo_text("convert", "pdf", p95=100))
    mgr = SLOManager(slo_dir)
    write("a.yml", slo_text("convert", "pdf", p95=300, p99=400))  # sorts first, arrives later
    mgr.reload()
    slo = mgr.get_slo("convert:pdf")
    assert slo is not None
    assert slo.slo.latency.p95_ms == 100
    [error] = mgr.errors
    assert error.path == slo_dir / "a.yml"
    assert "b.yml" in str(error)


def test_a_file_moved_onto_a_taken_capability_keeps_its_own(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    write("a.yml", slo_text("convert", "a"))
    write("b.yml", slo_text("convert", "b"))
    mgr = SLOManager(slo_dir)
    write("b.yml", slo_text("convert", "a", p95=110))  # an invalid edit: a is a.yml's
    mgr.reload()
    assert mgr.capabilities == ("convert:a", "convert:b")
    assert [e.path.name for e in mgr.errors] == ["b.yml"]


def test_reload_if_changed_reloads_only_on_change(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    path = write("a.yml", slo_text("convert", "a"))
    mgr = SLOManager(slo_dir)
    assert mgr.reload_if_changed() is False
    write("a.yml", slo_text("convert", "a", p95=150))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert mgr.reload_if_changed() is True
    slo = mgr.get_slo("convert:a")
    assert slo is not None
    assert slo.slo.latency.p95_ms == 150
    assert mgr.reload_if_changed() is False
    write("b.yml", slo_text("convert", "b"))
    assert mgr.reload_if_changed() is True
    assert mgr.capabilities == ("convert:a", "convert:b")


async def test_poll_reads_in_a_thread_and_applies_changes(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    mgr = SLOManager(slo_dir)
    assert await mgr.poll() is False
    write("a.yml", slo_text("convert", "a"))
    assert await mgr.poll() is True
    assert mgr.capabilities == ("convert:a",)
    await asyncio.to_thread(slo_dir.rename, slo_dir.with_name("moved"))
    with pytest.raises(ConfigurationError, match="SLO directory not found"):
        await mgr.poll()
    assert mgr.capabilities == ("convert:a",)  # a vanished directory changes nothing


async def test_watch_polls_until_cancelled_and_survives_errors(
    write: WriteFile,
    slo_dir: Path,
    slo_text: SLOText,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mgr = SLOManager(slo_dir)
    polled = asyncio.Queue[bool | Exception]()
    poll = mgr.poll

    async def observed_poll() -> bool:
        try:
            changed = await poll()
        except Exception as exc:
            await polled.put(exc)
            raise
        await polled.put(changed)
        return changed

    monkeypatch.setattr(mgr, "poll", observed_poll)
    write("a.yml", slo_text("convert", "a"))
    task = asyncio.create_task(mgr.watch(interval_s=0))
    try:
        assert await asyncio.wait_for(polled.get(), timeout=10) is True
        assert mgr.capabilities == ("convert:a",)
        await asyncio.to_thread(slo_dir.rename, slo_dir.with_name("moved"))  # atomic
        while not isinstance(await asyncio.wait_for(polled.get(), timeout=10), Exception):
            pass
        await asyncio.wait_for(polled.get(), timeout=10)  # polled again after the error
        assert not task.done()
        assert "SLO reload failed" in caplog.text
        assert mgr.capabilities == ("convert:a",)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


BREAKS_THE_LOADER = [
    pytest.param("  latency: {p95_ms: " + "9" * 5000 + "}\n", id="a 5000-digit integer"),
    pytest.param("  latency: {p95_ms: 100}\n  when: 2025-13-45\n", id="an impossible date"),
    pytest.param("  when: 2001-12-14t21:59:43.10-99:00\n", id="a time zone 99 hours off"),
]


def _observed(mgr: SLOManager, monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[bool | Exception]:
    """A queue of what each of ``mgr``'s polls returned or raised."""
    polled = asyncio.Queue[bool | Exception]()
    poll = mgr.poll

    async def observed_poll() -> bool:
        try:
            changed = await poll()
        except Exception as exc:
            await polled.put(exc)
            raise
        await polled.put(changed)
        return changed

    monkeypatch.setattr(mgr, "poll", observed_poll)
    return polled


@pytest.mark.parametrize("bad", BREAKS_THE_LOADER)
def test_a_file_that_breaks_the_yaml_loader_is_a_file_error(
    write: WriteFile, slo_dir: Path, slo_text: SLOText, bad: str
) -> None:
    write("a.yml", slo_text("convert", "a"))
    write("bad.yml", "capability: {verb: convert, name: bad}\nslo:\n" + bad)
    mgr = SLOManager(slo_dir)
    assert mgr.capabilities == ("convert:a",)
    [error] = mgr.errors
    assert error.path == slo_dir / "bad.yml"
    assert "invalid YAML value" in str(error)


@pytest.mark.parametrize("bad", BREAKS_THE_LOADER)
async def test_the_watcher_survives_a_file_that_breaks_the_yaml_loader(
    write: WriteFile,
    slo_dir: Path,
    slo_text: SLOText,
    monkeypatch: pytest.MonkeyPatch,
    bad: str,
) -> None:
    def write_whole(name: str, text: str) -> None:  # the watch never sees half a file
        write(f".{name}", text).rename(slo_dir / name)

    mgr = SLOManager(slo_dir)
    polled = _observed(mgr, monkeypatch)
    write("a.yml", slo_text("convert", "a"))
    task = asyncio.create_task(mgr.watch(interval_s=0))
    try:
        assert await asyncio.wait_for(polled.get(), timeout=10) is True
        write_whole("bad.yml", "capability: {verb: convert, name: bad}\nslo:\n" + bad)
        while await asyncio.wait_for(polled.get(), timeout=10) is not True:
            pass
        assert [e.path.name for e in mgr.errors] == ["bad.yml"]
        assert "invalid YAML value" in str(mgr.errors[0])
        write_whole("b.yml", slo_text("convert", "b"))  # the watch goes on
        while await asyncio.wait_for(polled.get(), timeout=10) is not True:
            pass
        assert mgr.capabilities == ("convert:a", "convert:b")
        assert not task.done()
        assert mgr.watcher.state() == "running"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert mgr.watcher.state() == "stopped"


async def test_the_watcher_survives_any_failure_logs_it_once_and_reports_it(
    write: WriteFile,
    slo_dir: Path,
    slo_text: SLOText,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mgr = SLOManager(slo_dir)
    assert mgr.watcher.state() == "idle"
    polled = _observed(mgr, monkeypatch)
    observed = mgr.poll
    failures = 3

    async def failing_poll() -> bool:
        nonlocal failures
        if failures:
            failures -= 1
            await polled.put(RuntimeError())
            raise RuntimeError("injected: the poll broke")
        return await observed()

    monkeypatch.setattr(mgr, "poll", failing_poll)
    task = asyncio.create_task(mgr.watch(interval_s=0))
    try:
        for _ in range(3):
            assert isinstance(await asyncio.wait_for(polled.get(), timeout=10), RuntimeError)
        write("a.yml", slo_text("convert", "a"))
        while mgr.capabilities != ("convert:a",):  # a poll may catch the file half written
            await asyncio.wait_for(polled.get(), timeout=10)
        watcher = mgr.watcher
        assert watcher.failures == 3
        assert watcher.last_error == "SLO reload: RuntimeError: injected: the poll broke"
        assert watcher.state() == "running"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once, with its traceback
    assert errors[0].exc_info is not None
    assert "SLO reload failed" in errors[0].getMessage()
    assert "works again" in caplog.text


# -- live windows ---------------------------------------------------------------


def test_status_of_an_idle_capability(mgr: SLOManager) -> None:
    status = mgr.status(PDF)
    assert isinstance(status, SLOStatus)
    assert (status.requests, status.errors) == (0, 0)
    assert (status.p50_ms, status.p95_ms, status.p99_ms, status.availability) == (None,) * 4
    assert status.compliant is True
    assert status.violations == ()
    assert status.shedding is False
    assert status.window_seconds == 60.0
    assert status.budget.consumed == 0.0


def test_status_reports_live_percentiles_and_violations(mgr: SLOManager) -> None:
    rng = random.Random(7)
    latencies = [rng.lognormvariate(math.log(0.06), 0.5) for _ in range(5_000)]
    for i, latency in enumerate(latencies):
        mgr.record(PDF, latency_s=latency, ok=i % 100 != 0)
    status = mgr.status(PDF)
    assert status is not None
    ordered = sorted(latencies)
    for q, value in ((0.5, status.p50_ms), (0.95, status.p95_ms), (0.99, status.p99_ms)):
        exact_ms = ordered[math.floor(q * (len(ordered) - 1))] * 1000
        assert value == pytest.approx(exact_ms, rel=0.01)
    assert (status.requests, status.errors) == (5_000, 50)
    assert status.availability == pytest.approx(0.99)
    assert status.compliant is False
    assert status.violations[0].startswith("p50 latency ")
    assert status.violations[-1] == "availability 99.00% < target 99.90%"
    assert mgr.check_compliance(
        PDF,
        {
            "p50_ms": status.p50_ms,
            "p95_ms": status.p95_ms,
            "p99_ms": status.p99_ms,
            "availability": status.availability,
        },
    ) == (False, list(status.violations))


def test_window_slides_with_the_clock(mgr: SLOManager, clock: ManualClock) -> None:
    mgr.record(PDF, latency_s=0.5, ok=False)
    clock.advance(30)
    mgr.record(PDF, latency_s=0.01, ok=True)
    status = mgr.status(PDF)
    assert status is not None
    assert status.requests == 2
    clock.advance(31)
    status = mgr.status(PDF)
    assert status is not None
    assert (status.requests, status.errors) == (1, 0)
    assert status.compliant is True
    clock.advance(60)
    status = mgr.status(PDF)
    assert status is not None
    assert status.requests == 0


def test_window_length_is_configurable(state_slos: Path, clock: ManualClock) -> None:
    mgr = SLOManager(state_slos, window_seconds=10, buckets=5, clock=clock)
    mgr.record(PDF, latency_s=0.01)
    clock.advance(10)
    status = mgr.status(PDF)
    assert status is not None
    assert (status.requests, status.window_seconds) == (0, 10)


def test_burn_rates_with_a_fake_clock(mgr: SLOManager, clock: ManualClock) -> None:
    # 99.9% target: budget 0.1%. An hour ago a bad minute, then a clean stream.
    for i in range(1_000):
        mgr.record(PDF, latency_s=0.01, ok=i >= 10)  # 10 errors in 1,000: 1%, burn 10
    clock.advance(60)
    for _ in range(50):
        for _ in range(100):
            mgr.record(PDF, latency_s=0.01, ok=True)
        clock.advance(60)
    status = mgr.status(PDF)
    assert status is not None
    assert status.budget.requests == 6_000
    assert status.budget.errors == 10
    assert status.budget.burn_rate_5m == 0.0
    assert status.budget.burn_rate_1h == pytest.approx((10 / 6_000) / 0.001)
    assert status.budget.burn_rate_6h == pytest.approx((10 / 6_000) / 0.001)
    assert status.budget.consumed == pytest.approx((10 / 6_000) / 0.001)
    assert [a.channel for a in status.budget.alerts_crossed] == ["slack", "pagerduty"]
    clock.advance(2 * 3_600)
    status = mgr.status(PDF)
    assert status is not None
    assert status.budget.burn_rate_1h == 0.0
    assert status.budget.burn_rate_6h == pytest.approx((10 / 6_000) / 0.001)


def test_open_bucket_counts_in_the_budget_at_once(mgr: SLOManager) -> None:
    for i in range(100):
        mgr.record(PDF, latency_s=0.01, ok=i != 0)
    status = mgr.status(PDF)
    assert status is not None
    assert status.budget.burn_rate_5m == pytest.approx(10.0)
    assert status.budget.requests == 100


@pytest.mark.parametrize("latency", [math.nan, math.inf, -math.inf, -0.001])
def test_record_refuses_nan_infinite_and_negative_latencies(
    mgr: SLOManager, latency: float
) -> None:
    mgr.record(PDF, latency_s=0.0)  # zero is a latency like any other
    with pytest.raises(ValueError, match=f"latency_s .* got {re.escape(repr(latency))}$"):
        mgr.record(PDF, latency_s=latency, ok=False)
    with pytest.raises(ValueError, match=re.escape(repr(latency))):
        mgr.record("unknown:cap", latency_s=latency)  # refused whether or not it is counted
    status = mgr.status(PDF)
    assert status is not None
    assert (status.requests, status.errors, status.p99_ms) == (1, 0, 0.0)


def test_unknown_capabilities_are_not_kept(mgr: SLOManager) -> None:
    for i in range(1_000):
        mgr.record(f"unknown:cap{i}", latency_s=0.01, ok=True)
    assert mgr.status("unknown:cap1") is None
    assert mgr._windows == {}


def test_reload_keeps_the_window_of_a_changed_capability_and_drops_a_deleted_one(
    write: WriteFile, slo_dir: Path, slo_text: SLOText, clock: ManualClock
) -> None:
    write("a.yml", slo_text("convert", "a", p95=100))
    write("b.yml", slo_text("convert", "b"))
    mgr = SLOManager(slo_dir, clock=clock)
    for _ in range(10):
        mgr.record("convert:a", latency_s=0.2)
        mgr.record("convert:b", latency_s=0.2)
    mgr.set_shedding("convert:b", True)
    write("a.yml", slo_text("convert", "a", p50=300, p95=300, p99=300))
    (slo_dir / "b.yml").unlink()
    mgr.reload()
    status = mgr.status("convert:a")
    assert status is not None
    assert (status.requests, status.compliant) == (10, True)  # same data, new targets
    write("b.yml", slo_text("convert", "b"))
    mgr.reload()
    status = mgr.status("convert:b")
    assert status is not None
    assert (status.requests, status.shedding) == (0, False)


def test_set_shedding_is_reported(mgr: SLOManager) -> None:
    mgr.set_shedding(PDF, True)
    mgr.set_shedding("unknown:cap", True)
    status = mgr.status(PDF)
    assert status is not None
    assert status.shedding is True
    mgr.set_shedding(PDF, False)
    status = mgr.status(PDF)
    assert status is not None
    assert status.shedding is False


async def test_record_from_many_tasks_loses_nothing(mgr: SLOManager, clock: ManualClock) -> None:
    async def client(n: int) -> None:
        for i in range(200):
            mgr.record(PDF, latency_s=0.001 * (1 + i % 50), ok=(n + i) % 10 != 0)
            if i % 20 == 0:
                clock.advance(0.1)  # 50 s in all: buckets rotate, none leaves the window
            await asyncio.sleep(0)

    await asyncio.gather(*(client(n) for n in range(50)))
    status = mgr.status(PDF)
    assert status is not None
    assert (status.requests, status.errors) == (10_000, 1_000)
    assert status.budget.requests == 10_000


def _capabilities(directory: Path, count: int, p99: Callable[[int], int]) -> Path:
    directory.mkdir()
    for i in range(count):
        (directory / f"cap_{i}.yml").write_text(
            f"capability: {{verb: bench, name: cap_{i}}}\n"
            f"slo:\n  latency: {{p50_ms: 50, p99_ms: {p99(i)}}}\n"
            "  availability: {target: 0.999}\n"
            "  error_budget: {alerts: [{threshold: 0.5, channel: slack}]}\n",
            encoding="utf-8",
        )
    return directory


def test_files_share_their_equal_parts(tmp_path: Path) -> None:
    mgr = SLOManager(_capabilities(tmp_path / "slos", 3, lambda i: 200 if i < 2 else 300))
    a, b, c = (mgr.get_slo(f"bench:cap_{i}") for i in range(3))
    assert a is not None
    assert b is not None
    assert c is not None
    assert a.slo is b.slo  # one SLOSpec for the two files that say the same
    assert c.slo is not a.slo
    assert c.slo.latency.p99_ms == 300.0
    assert c.slo.availability is a.slo.availability  # and the parts that are equal
    assert c.slo.error_budget.alerts is a.slo.error_budget.alerts
    assert c.shedding is a.shedding
    assert (a.key, b.key, c.key) == ("bench:cap_0", "bench:cap_1", "bench:cap_2")


def test_a_busy_capability_is_four_objects_for_the_cyclic_collector(
    tmp_path: Path, clock: ManualClock
) -> None:
    # A full collection walks every tracked object: windows and budget counts keep
    # theirs in bytes, bytearrays and dicts of ints, which the collector does not track.
    count = 200
    mgr = SLOManager(_capabilities(tmp_path / "slos", count, lambda i: 200 + i), clock=clock)
    gc.collect()
    before = tracked_from(mgr)
    for _ in range(24 * 5):  # two minutes: every window full, its buckets rotated
        for i, capability in enumerate(mgr.capabilities):
            mgr.record(capability, latency_s=0.001 * (1 + i % 90), ok=i % 7 != 0)
            mgr.record(capability, latency_s=0.5)
        clock.advance(1.0)
        if clock() % 5 == 0:
            assert all(mgr.status(capability) is not None for capability in mgr.capabilities)
    gc.collect()
    assert (tracked_from(mgr) - before) / count < 4.1  # window, sketch, counter, its callback
