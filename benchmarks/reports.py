"""A year of SLO history for 100 capabilities: compliance report and flush costs.

Run: ``python benchmarks/reports.py [--capabilities N] [--runs R] [--skip-postgres]``
(PostgreSQL at ``$DATABASE_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``,
in a schema of its own, dropped afterwards).

The store is filled as retention keeps a year: the last 30 days as one row per
capability and minute (100 x 43,200 = 4.32 M rows), the 335 days before as one
day row each (what ``prune()`` rolls them into). Then, per store:

- a 30-day compliance report of one capability (``daily_compliance``: 30 days of
  minute rows), and a 90-day one (30 days of minutes + 60 day rows);
- the flush cost per minute: one ``write_minutes`` of 100 rows (one minute of
  every capability), the recorder's write each interval.

Each figure is the median of ``--runs`` runs (capabilities taken in turn).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from sloguard.reporting._sql import SQLHistory
from sloguard.reporting.compliance import daily_compliance
from sloguard.reporting.records import DAY_SECONDS, MinuteAggregate
from sloguard.reporting.sqlite import SQLiteHistory
from sloguard.slo.schema import SLOFile

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
MINUTE_DAYS = 30
YEAR_DAYS = 365


def slo(capability: str) -> SLOFile:
    verb, name = capability.split(":")
    return SLOFile.model_validate(
        {
            "capability": {"verb": verb, "name": name},
            "slo": {
                "latency": {"p50_ms": 50.0, "p95_ms": 100.0, "p99_ms": 200.0},
                "availability": {"target": 0.999},
            },
        }
    )


def minute_rows(
    capabilities: list[str], today: int, rng: random.Random
) -> Iterator[tuple[object, ...]]:
    first = today - (MINUTE_DAYS - 1) * DAY_SECONDS
    for capability in capabilities:
        for minute in range(first, today + DAY_SECONDS, 60):
            requests = rng.randint(50, 150)
            errors = 1 if rng.random() < 0.02 else 0
            p95 = rng.lognormvariate(4.2, 0.2)
            yield (
                capability,
                minute,
                "bench-1",
                requests,
                errors,
                0,
                p95 / 2,
                p95,
                p95 * 1.5,
                int(errors == 0 and p95 <= 100.0),
            )


def day_rows(capabilities: list[str], today: int, rng: random.Random) -> list[tuple[object, ...]]:
    first = today - (YEAR_DAYS - 1) * DAY_SECONDS
    last = today - (MINUTE_DAYS - 1) * DAY_SECONDS
    rows = []
    for capability in capabilities:
        for day in range(first, last, DAY_SECONDS):
            down = rng.randint(0, 40)
            rows.append((capability, day, 144_000, 30, 0, 40.0, 95.0, 140.0, 1440 - down, down))
    return rows


_MINUTES = "capability, minute, replica, requests, errors, shed, p50_ms, p95_ms, p99_ms, compliant"
_DAYS = (
    "capability, day, requests, errors, shed, p50_ms, p95_ms, p99_ms, "
    "uptime_minutes, downtime_minutes"
)


def fill_sqlite(store: SQLiteHistory, capabilities: list[str], today: int) -> None:
    rng = random.Random(1)
    with store.transaction() as tx:
        tx.executemany(
            f"INSERT INTO sloguard_minutes ({_MINUTES}) VALUES ({'?, ' * 9}?)",
            list(minute_rows(capabilities, today, rng)),
        )
        tx.executemany(
            f"INSERT INTO sloguard_days ({_DAYS}) VALUES ({'?, ' * 9}?)",
            day_rows(capabilities, today, rng),
        )
    store._connection().execute("ANALYZE")


def fill_postgres(store: SQLHistory, capabilities: list[str], today: int) -> None:
    from sloguard.reporting.postgres import PostgresHistory

    assert isinstance(store, PostgresHistory)
    rng = random.Random(1)
    connection = store._connect()
    with connection.transaction(), connection.cursor() as cursor:
        with cursor.copy(f"COPY sloguard_minutes ({_MINUTES}) FROM STDIN") as copy:
            for row in minute_rows(capabilities, today, rng):
                copy.write_row(row)
        with cursor.copy(f"COPY sloguard_days ({_DAYS}) FROM STDIN") as copy:
            for row in day_rows(capabilities, today, rng):
                copy.write_row(row)
    connection.execute("VACUUM ANALYZE sloguard_minutes")
    connection.execute("VACUUM ANALYZE sloguard_days")


def median_ms(runs: int, action: Callable[[int], object]) -> float:
    times = []
    for run in range(runs):
        start = time.perf_counter()
        action(run)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def measure(name: str, store: SQLHistory, capabilities: list[str], today: int, runs: int) -> None:
    to_date = dt.datetime.fromtimestamp(today, dt.UTC).date()
    slos = [slo(c) for c in capabilities]

    def report(days: int) -> Callable[[int], object]:
        def run(i: int) -> object:
            records = daily_compliance(
                store, slos[i % len(slos)], to_date - dt.timedelta(days=days - 1), to_date
            )
            assert len(records) == days
            assert records[0].uptime_minutes > 0
            return records

        return run

    def flush(i: int) -> None:
        minute = today + DAY_SECONDS + 60 * i  # minutes after the filled ones
        store.write_minutes(
            [
                MinuteAggregate(c, minute, "bench-1", 100, 0, 0, 20.0, 80.0, 120.0, True)
                for c in capabilities
            ]
        )

    report(30)(0)  # warm the cache once
    print(f"{name}: 30-day compliance report, one capability: {median_ms(runs, report(30)):.1f} ms")
    print(f"{name}: 90-day compliance report, one capability: {median_ms(runs, report(90)):.1f} ms")
    print(
        f"{name}: flush of one minute ({len(capabilities)} rows): {median_ms(runs, flush):.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capabilities", type=int, default=100)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    capabilities = [f"bench:cap_{i:03d}" for i in range(args.capabilities)]
    today = int(time.time() // DAY_SECONDS) * DAY_SECONDS
    minutes = args.capabilities * MINUTE_DAYS * 1440
    days = args.capabilities * (YEAR_DAYS - MINUTE_DAYS)
    print(f"history: {args.capabilities} capabilities, {minutes:,} minute rows + {days:,} day rows")

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "history.sqlite3"
        sqlite = SQLiteHistory(path)
        sqlite.migrate()
        start = time.perf_counter()
        fill_sqlite(sqlite, capabilities, today)
        size = path.stat().st_size / 2**20
        print(f"sqlite: filled in {time.perf_counter() - start:.0f} s, {size:.0f} MiB")
        measure("sqlite", sqlite, capabilities, today, args.runs)
        sqlite.close()

    if args.skip_postgres:
        return 0
    from sloguard.reporting.postgres import PostgresHistory

    postgres = PostgresHistory(DATABASE_URL, schema=f"sloguard_bench_{uuid.uuid4().hex[:12]}")
    try:
        postgres.migrate()
        start = time.perf_counter()
        fill_postgres(postgres, capabilities, today)
        print(f"postgres: filled in {time.perf_counter() - start:.0f} s")
        measure("postgres", postgres, capabilities, today, args.runs)
    finally:
        postgres.drop_schema()
        postgres.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
