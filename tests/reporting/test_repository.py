"""One suite for both history stores: SQLite and PostgreSQL (a schema of each test's own)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from sloguard.exceptions import ConfigurationError
from sloguard.reporting._sql import SCHEMA_VERSION, SQLHistory
from sloguard.reporting.records import Alert, Breach, MinuteAggregate
from sloguard.reporting.repository import (
    DAY_SECONDS,
    HistoryPoint,
    HistoryRepository,
    open_repository,
)
from sloguard.reporting.sqlite import SQLiteHistory

CAP = "convert:pdf"
DAY0 = 1_735_689_600  # 2025-01-01T00:00:00Z


def row(
    minute: int,
    *,
    replica: str = "r1",
    requests: int = 10,
    errors: int = 0,
    shed: int = 0,
    p95: float | None = 80.0,
    compliant: bool = True,
    capability: str = CAP,
) -> MinuteAggregate:
    return MinuteAggregate(
        capability=capability,
        minute=minute,
        replica=replica,
        requests=requests,
        errors=errors,
        shed=shed,
        p50_ms=None if p95 is None else p95 / 2,
        p95_ms=p95,
        p99_ms=None if p95 is None else p95 * 2,
        compliant=compliant,
    )


def test_both_stores_implement_the_protocol(repository: SQLHistory) -> None:
    assert isinstance(repository, HistoryRepository)


def test_migrating_again_changes_nothing(
    repository: SQLHistory, backend: tuple[str, str | None]
) -> None:
    repository.write_minutes([row(DAY0)])
    assert repository.migrate() == SCHEMA_VERSION
    again = open_repository(backend[0], schema=backend[1])
    try:
        assert again.migrate() == SCHEMA_VERSION
        assert isinstance(again, SQLHistory)
        assert again.schema_version() == SCHEMA_VERSION
        assert [p.requests for p in again.history(CAP, DAY0, DAY0 + 60, 60)] == [10]
    finally:
        again.close()


def test_two_processes_migrating_at_once_both_succeed(backend: tuple[str, str | None]) -> None:
    target, schema = backend
    stores = [open_repository(target, schema=schema, migrate=False) for _ in range(4)]
    results: list[object] = []
    start = threading.Barrier(len(stores))

    def migrate(store: HistoryRepository) -> None:
        start.wait()
        try:
            results.append(store.migrate())
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert results == [SCHEMA_VERSION] * len(stores)
        first = stores[0]
        assert isinstance(first, SQLHistory)
        with first.transaction() as tx:
            versions = tx.fetch("SELECT version FROM sloguard_schema_version")
        # Each version applied once, not once per process.
        assert sorted(versions) == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    finally:
        for store in stores:
            store.close()


def test_a_store_newer_than_the_code_is_refused(repository: SQLHistory) -> None:
    with repository.transaction() as tx:
        tx.execute(
            "INSERT INTO sloguard_schema_version (version, applied_at) VALUES (?, ?)",
            (SCHEMA_VERSION + 1, 0.0),
        )
    with pytest.raises(ConfigurationError, match="newer than this sloguard"):
        repository.migrate()


def test_writing_a_minute_again_replaces_it(repository: SQLHistory) -> None:
    repository.write_minutes([row(DAY0, requests=5)])
    repository.write_minutes([row(DAY0, requests=7, errors=1)])
    repository.write_minutes([row(DAY0, requests=7, errors=1)])
    assert repository.minute_rows(CAP, DAY0, DAY0 + 60) == [row(DAY0, requests=7, errors=1)]


def test_replicas_are_merged_counts_summed_quantiles_maxed_compliance_all(
    repository: SQLHistory,
) -> None:
    repository.write_minutes(
        [
            row(DAY0, replica="a", requests=10, errors=1, shed=2, p95=90.0),
            row(DAY0, replica="b", requests=30, errors=0, shed=1, p95=150.0, compliant=False),
            row(DAY0 + 60, replica="a", requests=5, p95=None),
            row(DAY0 + 60, replica="b", requests=0, p95=None),
        ]
    )
    points = repository.history(CAP, DAY0, DAY0 + 120, 60)
    assert points == [
        HistoryPoint(DAY0, 40, 1, 3, 75.0, 150.0, 300.0, 0, 1),
        HistoryPoint(DAY0 + 60, 5, 0, 0, None, None, None, 1, 0),
    ]
    assert points[0].availability == pytest.approx(39 / 40)


def test_history_steps_and_bounds(repository: SQLHistory) -> None:
    rows = [row(DAY0 + 60 * i, requests=i, compliant=i % 4 != 0) for i in range(12)]
    repository.write_minutes([*rows, row(DAY0, capability="other:cap", requests=99)])
    points = repository.history(CAP, DAY0 + 60, DAY0 + 660, 300)
    # [since, until) covers minutes 1..10; steps of 5 minutes start at multiples of 300 s.
    assert [(p.start - DAY0, p.requests, p.downtime_minutes) for p in points] == [
        (0, 1 + 2 + 3 + 4, 1),
        (300, 5 + 6 + 7 + 8 + 9, 1),
        (600, 10, 0),
    ]
    assert repository.history(CAP, DAY0 + 720, DAY0 + 900, 60) == []
    with pytest.raises(ValueError, match="multiple of 60"):
        repository.history(CAP, DAY0, DAY0 + 60, 90)
    assert repository.capabilities() == [CAP, "other:cap"]


def test_prune_rolls_old_minutes_into_days_and_keeps_the_history_the_same(
    repository: SQLHistory,
) -> None:
    old = DAY0 - 40 * DAY_SECONDS
    rows = [
        row(old + 60 * i, replica=r, requests=10, errors=e, p95=p, compliant=c)
        for i, (e, p, c) in enumerate([(0, 50.0, True), (3, 120.0, False), (1, 70.0, True)])
        for r in ("a", "b")
    ]
    rows.append(row(DAY0 + 60, requests=4))  # recent: stays a minute row
    repository.write_minutes(rows)
    before = repository.history(CAP, old, DAY0 + DAY_SECONDS, DAY_SECONDS)

    result = repository.prune(DAY0 + 3600.0)

    assert result.rolled_minutes == 6
    after = repository.history(CAP, old, DAY0 + DAY_SECONDS, DAY_SECONDS)
    assert after == before
    assert after[0] == HistoryPoint(old, 60, 8, 0, 60.0, 120.0, 240.0, 2, 1)
    assert repository.minute_rows(CAP, old, DAY0) == []
    assert repository.prune(DAY0 + 3600.0).rolled_minutes == 0
    # A late row for a rolled day is added to it at the next prune.
    repository.write_minutes([row(old + 600, replica="late", requests=1, p95=500.0)])
    repository.prune(DAY0 + 3600.0)
    [day] = repository.history(CAP, old, old + DAY_SECONDS, DAY_SECONDS)
    assert (day.requests, day.p95_ms, day.compliant_minutes) == (61, 500.0, 3)


def test_prune_drops_what_is_past_retention(backend: tuple[str, str | None]) -> None:
    target, schema = backend
    repository = open_repository(target, schema=schema, rollup_after_days=2, retention_days=5)
    try:
        repository.write_minutes([row(DAY0 - d * DAY_SECONDS) for d in range(8)])
        old_breach = Breach("b-old", CAP, "resolved", DAY0 - 7 * DAY_SECONDS, DAY0 - 7 * 86_000, ())
        open_breach = Breach("b-open", CAP, "open", DAY0 - 7 * DAY_SECONDS, None, ())
        repository.save_breach(old_breach)
        repository.save_breach(open_breach)
        repository.save_alert(Alert("a-old", CAP, "budget", "x", "info", "s", DAY0 - 6 * 86_400))
        result = repository.prune(DAY0 + 10.0)
        # Days -7..-3 are before the rollup cutoff (day -2): rolled; -7 and -6 then dropped.
        assert (result.rolled_minutes, result.dropped_days) == (5, 2)
        assert (result.dropped_breaches, result.dropped_alerts) == (1, 1)
        days = repository.history(CAP, DAY0 - 9 * DAY_SECONDS, DAY0 + 60, DAY_SECONDS)
        assert [(p.start - DAY0) // DAY_SECONDS for p in days] == [-5, -4, -3, -2, -1, 0]
        assert [b.id for b in repository.breaches()] == ["b-open"]  # an open breach stays
    finally:
        repository.close()


def test_retention_must_cover_the_rollup(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="retention_days"):
        SQLiteHistory(tmp_path / "h.db", rollup_after_days=30, retention_days=10)


def test_breaches_are_upserted_and_filtered(repository: SQLHistory) -> None:
    first = Breach("b1", CAP, "open", DAY0, None, ("p95 latency 150ms > target 100ms",))
    repository.save_breach(first)
    resolved = Breach(
        "b1",
        CAP,
        "resolved",
        DAY0,
        DAY0 + 300,
        ("p95 latency 150ms > target 100ms", "availability 98.00% < target 99.00%"),
        {"p95_ms": 180.0, "availability": 0.98},
    )
    repository.save_breach(resolved)
    later = Breach("b2", "other:cap", "open", DAY0 + 600, None, ())
    repository.save_breach(later)

    assert repository.breach("b1") == resolved
    assert repository.breach("nope") is None
    assert repository.breaches() == [resolved, later]
    assert repository.breaches(capability=CAP) == [resolved]
    assert repository.breaches(state="open") == [later]
    assert repository.breaches(since=DAY0 + 1) == [later]
    assert repository.breaches(until=DAY0 + 1) == [resolved]


def test_an_alert_is_stored_once_per_id(repository: SQLHistory) -> None:
    alert = Alert("budget-50", CAP, "budget", "slack", "warning", "half spent", DAY0, {"n": 1})
    assert repository.save_alert(alert) is True
    assert repository.save_alert(alert) is False
    newer = Alert("burn-1", CAP, "burn", "pager", "critical", "fast burn", DAY0 + 60)
    assert repository.save_alert(newer) is True
    assert repository.alerts() == [newer, alert]
    assert repository.alerts(since=DAY0 + 1) == [newer]
    assert repository.alerts(capability="other:cap") == []
    assert repository.alerts(limit=1) == [newer]


def test_sqlite_reads_while_another_thread_holds_a_write(
    sqlite_repository: SQLiteHistory,
) -> None:
    sqlite_repository.write_minutes([row(DAY0, requests=3)])
    writing, release = threading.Event(), threading.Event()

    def slow_flush() -> None:
        with sqlite_repository.transaction() as tx:
            tx.executemany(
                "INSERT INTO sloguard_minutes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(CAP, DAY0 + 60, "r1", 5, 0, 0, None, None, None, 1)],
            )
            writing.set()
            release.wait(10)

    writer = threading.Thread(target=slow_flush)
    writer.start()
    try:
        assert writing.wait(10)
        # The read is answered while the write is still open, from the last commit.
        assert [p.requests for p in sqlite_repository.history(CAP, DAY0, DAY0 + 120, 60)] == [3]
    finally:
        release.set()
        writer.join()
    assert [p.requests for p in sqlite_repository.history(CAP, DAY0, DAY0 + 120, 60)] == [3, 5]


def test_open_repository_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_repository("sqlite:///rel/h.db")
    absolute = open_repository(f"sqlite:///{tmp_path}/abs/h.db")
    plain = open_repository(tmp_path / "plain.db")
    for store in (relative, absolute, plain):
        store.close()
    assert (tmp_path / "rel" / "h.db").is_file()
    assert (tmp_path / "abs" / "h.db").is_file()
    assert (tmp_path / "plain.db").is_file()
    with pytest.raises(ConfigurationError, match="unsupported history store"):
        open_repository("mysql://x/y")
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        open_repository(tmp_path / "x.db", schema="s")


def test_a_postgres_schema_must_be_an_identifier() -> None:
    from sloguard.reporting.postgres import PostgresHistory

    with pytest.raises(ConfigurationError, match="plain SQL identifier"):
        PostgresHistory("postgresql://127.0.0.1/x", schema='x"; DROP TABLE y; --')


def test_sqlite_recovers_from_a_failed_commit(sqlite_repository: SQLiteHistory) -> None:
    # A deferred foreign-key violation fails at COMMIT, as a full disk would.
    with sqlite_repository.transaction() as tx:
        tx.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        tx.execute(
            "CREATE TABLE child (parent INTEGER REFERENCES parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)"
        )
    connection = sqlite_repository._connection()
    connection.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError), sqlite_repository.transaction() as tx:
        tx.execute("INSERT INTO child VALUES (1)")
    assert not connection.in_transaction
    sqlite_repository.write_minutes([row(DAY0)])  # the connection still works
    assert [p.requests for p in sqlite_repository.history(CAP, DAY0, DAY0 + 60, 60)] == [10]
