"""HistoryRecorder: requests sent through a real SLOGuard become minute rows."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from sloguard import SLOGuard, SLOManager
from sloguard._clock import ManualClock
from sloguard.exceptions import ConfigurationError
from sloguard.observability.metrics import Metrics
from sloguard.reporting.monitor import SLOMonitor
from sloguard.reporting.recorder import HistoryRecorder
from sloguard.reporting.records import MinuteAggregate
from sloguard.reporting.repository import HistoryRepository
from sloguard.reporting.sqlite import SQLiteHistory
from tests.reporting.conftest import write_slo
from tests.servers import free_port
from tests.tracked import tracked_from

CAP = "convert:pdf"
PATH = "/route/convert/pdf"
WALL0 = 1_735_693_200.0  # 2025-01-01T01:00:00Z, on a minute
MINUTE0 = int(WALL0)
ENFORCING = """\
enforcement: {reject_on_violation: true}
shedding: {min_samples: 1, concurrency: {mode: "off"}}
"""


@dataclass
class Stack:
    """A real SLOGuard in front of an app whose latency moves the shared clocks."""

    mono: ManualClock
    wall: ManualClock
    manager: SLOManager
    guard: SLOGuard
    metrics: Metrics
    registry: CollectorRegistry

    def advance(self, seconds: float) -> None:
        self.mono.advance(seconds)
        self.wall.advance(seconds)

    async def send(
        self, n: int, *, delay_ms: float = 20.0, status: int = 200, priority: str = "normal"
    ) -> list[int]:
        transport = httpx.ASGITransport(app=self.guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            codes = []
            for _ in range(n):
                answer = await client.post(
                    PATH,
                    params={"delay_ms": delay_ms, "status": status},
                    headers={"x-priority": priority},
                )
                codes.append(answer.status_code)
        return codes

    def recorder(self, repository: HistoryRepository, **options: object) -> HistoryRecorder:
        return HistoryRecorder(
            self.manager,
            repository,
            guard=self.guard,
            monotonic_clock=self.mono,
            wall_clock=self.wall,
            metrics=self.metrics,
            **options,  # type: ignore[arg-type]
        )


def make_stack(slo_dir: Path) -> Stack:
    mono, wall = ManualClock(1_000.0), ManualClock(WALL0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope["query_string"].decode())
        mono.advance(float(query["delay_ms"][0]) / 1000)
        wall.advance(float(query["delay_ms"][0]) / 1000)
        status = int(query["status"][0])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    manager = SLOManager(slo_dir, clock=mono)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    guard = SLOGuard(
        app,
        manager=manager,
        clock=mono,
        metrics=metrics,
        random_source=lambda: 0.0,
        reload_every_s=None,
    )
    return Stack(mono, wall, manager, guard, metrics, registry)


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    write_slo(tmp_path / "slos", extra=ENFORCING)
    return make_stack(tmp_path / "slos")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteHistory]:
    repository = SQLiteHistory(tmp_path / "history.sqlite3")
    repository.migrate()
    yield repository
    repository.close()


async def test_requests_become_a_minute_row_with_counts_quantiles_and_compliance(
    stack: Stack, store: SQLiteHistory
) -> None:
    recorder = stack.recorder(store, replica="r1")
    assert await stack.send(10) == [200] * 10
    assert await stack.send(2, status=500) == [500, 500]
    assert await recorder.flush() == 0  # the bucket is still open: nothing closed yet

    stack.advance(10)
    assert await recorder.flush() == 1
    [row] = store.minute_rows(CAP, MINUTE0, MINUTE0 + 60)
    assert (row.replica, row.requests, row.errors, row.shed) == ("r1", 12, 2, 0)
    for quantile in (row.p50_ms, row.p95_ms, row.p99_ms):
        assert quantile == pytest.approx(20.0, rel=0.01)  # DDSketch's accuracy
    assert row.compliant is False  # availability 10/12 < 99%


class IndexingStore(SQLiteHistory):
    """A real SQLite store that reads the rows it is given by index and by slice too."""

    def write_minutes(self, rows: Sequence[MinuteAggregate]) -> None:
        self.read = (list(rows), [rows[i] for i in range(len(rows))], rows[:], rows[-1])
        super().write_minutes(rows)


async def test_the_store_reads_the_same_rows_however_it_reads_them(
    stack: Stack, tmp_path: Path
) -> None:
    store = IndexingStore(tmp_path / "history.sqlite3")
    store.migrate()
    recorder = stack.recorder(store, replica="r1")
    await stack.send(3)
    stack.advance(10)
    assert await recorder.flush() == 1
    iterated, indexed, sliced, last = store.read
    assert iterated == indexed == sliced == [last]
    assert (last.capability, last.minute, last.replica, last.requests) == (CAP, MINUTE0, "r1", 3)
    store.close()


async def test_refused_requests_are_counted_as_shed(stack: Stack, store: SQLiteHistory) -> None:
    recorder = stack.recorder(store)
    await stack.send(4, status=500)  # availability 0%: the SLO is violated
    stack.advance(1)
    codes = await stack.send(3, priority="low")
    assert codes == [503, 503, 503]
    shed = sum(stack.guard.shed_counts(CAP).values())
    assert shed == 3
    stack.advance(10)
    await recorder.flush()
    [row] = store.minute_rows(CAP, MINUTE0, MINUTE0 + 60)
    assert (row.requests, row.errors, row.shed) == (4, 4, 3)


async def test_each_minute_gets_its_row_and_a_minute_is_rewritten_until_it_is_over(
    stack: Stack, store: SQLiteHistory
) -> None:
    recorder = stack.recorder(store)
    await stack.send(3)
    stack.advance(10)
    await recorder.flush()
    await stack.send(2)
    stack.advance(10)
    await recorder.flush()  # the same minute again, now with 5 requests
    stack.advance(45)  # into the next minute
    await stack.send(4)
    stack.advance(10)
    await recorder.flush()

    rows = store.minute_rows(CAP, MINUTE0, MINUTE0 + 180)
    assert [(r.minute - MINUTE0, r.requests, r.compliant) for r in rows] == [
        (0, 5, True),
        (60, 4, True),
    ]
    assert await recorder.flush() == 0  # nothing new: nothing written


async def test_a_restarted_process_appends_its_own_rows(
    tmp_path: Path, store: SQLiteHistory
) -> None:
    write_slo(tmp_path / "slos")
    first = make_stack(tmp_path / "slos")
    await first.send(3)
    first.advance(10)
    await first.recorder(store, replica="host-1").flush()

    second = make_stack(tmp_path / "slos")  # a new process: new clocks, same minute
    second.advance(20)
    await second.send(2)
    second.advance(10)
    await second.recorder(store, replica="host-2").flush()

    rows = store.minute_rows(CAP, MINUTE0, MINUTE0 + 60)
    assert [(r.replica, r.requests) for r in rows] == [("host-1", 3), ("host-2", 2)]
    [point] = store.history(CAP, MINUTE0, MINUTE0 + 60, 60)
    assert point.requests == 5


@pytest.fixture(params=["sqlite-path-blocked", "postgres-gone"])
def broken_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HistoryRepository]:
    """A store whose every write fails: a SQLite path under a regular file, or a
    PostgreSQL URL where nothing listens."""
    if request.param == "sqlite-path-blocked":
        (tmp_path / "blocker").write_text("not a directory")
        repository: HistoryRepository = SQLiteHistory(tmp_path / "blocker" / "history.sqlite3")
    else:
        from sloguard.reporting.postgres import PostgresHistory

        repository = PostgresHistory(
            f"postgresql://postgres@127.0.0.1:{free_port()}/test", connect_timeout_s=1
        )
    yield repository
    repository.close()


async def test_a_failing_store_is_logged_once_counted_and_requests_still_succeed(
    stack: Stack, broken_store: HistoryRepository, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = stack.recorder(broken_store)
    with caplog.at_level(logging.ERROR, logger="sloguard.reporting"):
        for _ in range(3):
            assert await stack.send(2) == [200, 200]
            stack.advance(10)
            assert await recorder.flush() == 0
    assert recorder.flush_errors == 3
    assert stack.registry.get_sample_value("sloguard_report_flush_errors_total") == 3
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
    assert recorder.backlog == 1  # one minute, its newest row kept to retry


async def test_the_backlog_is_written_once_the_store_is_back(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    repository = SQLiteHistory(blocker / "history.sqlite3")
    recorder = stack.recorder(repository)
    await stack.send(3)
    stack.advance(10)
    assert await recorder.flush() == 0
    blocker.unlink()  # the path works again, with an empty database
    with caplog.at_level(logging.WARNING, logger="sloguard.reporting"):
        assert await recorder.flush() == 1
    assert "work again" in caplog.text
    assert [r.requests for r in repository.minute_rows(CAP, MINUTE0, MINUTE0 + 60)] == [3]
    assert recorder.backlog == 0
    repository.close()


async def test_a_full_backlog_drops_its_oldest_minutes_and_counts_them(
    stack: Stack, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    repository = SQLiteHistory(blocker / "history.sqlite3")
    recorder = stack.recorder(repository, max_backlog=2)
    for _ in range(3):  # three minutes, each flushed and failing
        await stack.send(1)
        stack.advance(60)
        await recorder.flush()
    assert (recorder.backlog, recorder.dropped_rows) == (2, 1)
    assert stack.registry.get_sample_value("sloguard_report_rows_dropped_total") == 1
    blocker.unlink()
    await recorder.flush()
    minutes = [r.minute - MINUTE0 for r in repository.minute_rows(CAP, MINUTE0, MINUTE0 + 300)]
    assert minutes == [60, 120]  # the first minute was the one dropped
    repository.close()


async def test_stop_flushes_what_was_collected(stack: Stack, store: SQLiteHistory) -> None:
    recorder = stack.recorder(store)
    recorder.start()
    await stack.send(2)
    stack.advance(10)
    await recorder.stop()
    assert [r.requests for r in store.minute_rows(CAP, MINUTE0, MINUTE0 + 60)] == [2]


def test_the_interval_must_be_shorter_than_the_window(stack: Stack, store: SQLiteHistory) -> None:
    with pytest.raises(ConfigurationError, match="below the live window"):
        stack.recorder(store, interval_s=60.0)
    with pytest.raises(ConfigurationError, match="max_backlog"):
        stack.recorder(store, max_backlog=0)


def test_the_default_replica_is_host_and_pid(stack: Stack, store: SQLiteHistory) -> None:
    import os
    import socket

    assert stack.recorder(store).replica == f"{socket.gethostname()}-{os.getpid()}"


class BrokenRefusals:
    """Refusal counts that cannot be read for the capabilities in ``broken``: an injected fault."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken

    def shed_counts(self, capability: str, *, dry_run: bool = False) -> dict[str, int]:
        if capability in self.broken:
            raise RuntimeError(f"injected: the refusals of {capability} are unreadable")
        return {"low": 0}


def two_capabilities(slo_dir: Path) -> tuple[SLOManager, ManualClock, ManualClock]:
    write_slo(slo_dir, "convert", "a")
    write_slo(slo_dir, "convert", "b")
    mono, wall = ManualClock(1_000.0), ManualClock(WALL0)
    return SLOManager(slo_dir, clock=mono), mono, wall


async def test_a_capability_that_fails_never_stops_the_others_being_recorded(
    tmp_path: Path, store: SQLiteHistory, caplog: pytest.LogCaptureFixture
) -> None:
    manager, mono, wall = two_capabilities(tmp_path / "slos")
    recorder = HistoryRecorder(
        manager,
        store,
        guard=BrokenRefusals({"convert:a"}),
        monotonic_clock=mono,
        wall_clock=wall,
        metrics=Metrics(CollectorRegistry()),
    )
    for second in range(3):
        for capability in manager.capabilities:
            manager.record(capability, latency_s=0.02)
        mono.advance(10)
        wall.advance(10)
        assert await recorder.flush() == 1, second  # convert:b's minute row
    assert [r.requests for r in store.minute_rows("convert:b", MINUTE0, MINUTE0 + 60)] == [3]
    assert recorder.liveness.failures == 3
    assert recorder.liveness.last_error == (
        "reading convert:a: RuntimeError: injected: the refusals of convert:a are unreadable"
    )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # logged once, with its traceback
    assert errors[0].exc_info is not None


class BlockingStore(SQLiteHistory):
    """A real SQLite store whose writes block until ``release`` is set: a hung store."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.written = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def write_minutes(self, rows: Sequence[MinuteAggregate]) -> None:
        self.entered.set()
        self.release.wait()
        super().write_minutes(rows)
        self.loop.call_soon_threadsafe(self.written.set)


async def test_a_hung_store_is_a_failed_write_after_its_deadline_and_no_thread_piles_up(
    stack: Stack, tmp_path: Path
) -> None:
    repository = BlockingStore(tmp_path / "history.sqlite3")
    repository.migrate()
    recorder = stack.recorder(repository, store_timeout_s=0.05)
    await stack.send(2)
    stack.advance(10)
    try:
        assert await recorder.flush() == 0  # the write hangs: given up after its deadline
        threads = threading.active_count()
        for _ in range(3):  # the first write is still stuck: these fail at once
            assert await recorder.flush() == 0
        assert threading.active_count() == threads
        assert recorder.flush_errors == 4
        assert recorder.backlog == 1
    finally:
        repository.release.set()
    await asyncio.wait_for(repository.written.wait(), timeout=10)  # the stuck write ends
    for _ in range(1000):  # and once its thread is free, the next one goes through
        if await recorder.flush():
            break
        await asyncio.sleep(0.001)
    assert recorder.backlog == 0
    assert [r.requests for r in repository.minute_rows(CAP, MINUTE0, MINUTE0 + 60)] == [2]
    repository.close()


async def test_stop_waits_for_the_write_in_flight_then_writes_the_rest(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repository = BlockingStore(tmp_path / "history.sqlite3")
    repository.migrate()
    recorder = stack.recorder(repository)
    await stack.send(2)
    stack.advance(10)
    writing = asyncio.ensure_future(recorder.flush())  # the loop's write, when stop() comes
    assert await asyncio.to_thread(repository.entered.wait, 10)
    writing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writing
    await stack.send(1)  # served while the write was stuck: for the last flush
    stack.advance(10)

    stopping = asyncio.ensure_future(recorder.stop())
    await asyncio.sleep(0)
    assert not stopping.done()  # waits for the stuck write, not failing past it
    repository.release.set()
    await stopping

    assert [r.requests for r in repository.minute_rows(CAP, MINUTE0, MINUTE0 + 60)] == [3]
    assert recorder.flush_errors == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    repository.close()


async def test_the_recorder_loop_survives_a_failing_capability_and_reports_its_liveness(
    tmp_path: Path,
) -> None:
    manager, mono, wall = two_capabilities(tmp_path / "slos")
    repository = BlockingStore(tmp_path / "history.sqlite3")
    repository.migrate()
    repository.release.set()
    recorder = HistoryRecorder(
        manager,
        repository,
        guard=BrokenRefusals({"convert:a"}),
        interval_s=0.001,
        monotonic_clock=mono,
        wall_clock=wall,
        metrics=Metrics(CollectorRegistry()),
    )
    assert recorder.liveness.state() == "idle"
    manager.record("convert:b", latency_s=0.02)
    mono.advance(10)
    recorder.start()
    try:
        await asyncio.wait_for(repository.written.wait(), timeout=10)
        assert recorder.liveness.state() == "running"
        assert recorder.liveness.failures >= 1
    finally:
        await recorder.stop()
    assert recorder.liveness.state() == "stopped"
    assert [r.requests for r in repository.minute_rows("convert:b", 0, 2**40)] == [1]
    repository.close()


class FailingStore(SQLiteHistory):
    """A real SQLite store whose minute writes fail: the rows wait in the backlog."""

    def migrate(self) -> None:
        if not self.path.exists():  # once: the schema stays
            super().migrate()

    def write_minutes(self, rows: Sequence[MinuteAggregate]) -> None:
        raise OSError("injected: the disk is full")


async def test_reporting_adds_no_objects_per_capability_for_the_cyclic_collector(
    tmp_path: Path,
) -> None:
    # A full collection walks every tracked object: the recorder's minutes and backlog
    # are tuples of bytes and numbers, and a healthy capability has no breach track.
    count = 400
    for i in range(count):
        write_slo(tmp_path / "slos", name=f"cap_{i}")
    mono, wall = ManualClock(1_000.0), ManualClock(WALL0)
    manager = SLOManager(tmp_path / "slos", clock=mono)
    store = FailingStore(tmp_path / "history.sqlite3")
    store.migrate()
    recorder = HistoryRecorder(manager, store, monotonic_clock=mono, wall_clock=wall)
    monitor = SLOMonitor(manager, clock=wall)

    async def serve(seconds: int) -> None:
        for second in range(1, seconds + 1):
            for capability in manager.capabilities:
                manager.record(capability, latency_s=0.02)
            mono.advance(1.0)
            wall.advance(1.0)
            if second % 5 == 0:
                await monitor.tick()
            if second % 10 == 0:
                assert await recorder.flush() == 0  # every write fails: the backlog grows

    await serve(20)  # every window started
    gc.collect()
    started = tracked_from(manager, monitor, recorder)
    await serve(180)
    assert recorder.backlog >= 3 * count
    gc.collect()
    assert (tracked_from(manager, monitor, recorder) - started) / count < 0.1
    store.close()
