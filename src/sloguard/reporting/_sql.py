"""What the SQLite and PostgreSQL repositories share: schema, migrations and queries.

SQL is written once, with ``?`` placeholders (PostgreSQL's driver gets
``%s``) and type names filled in per dialect. Results are converted with
``int``/``float`` because PostgreSQL sums integers into ``numeric``.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

from sloguard.exceptions import ConfigurationError
from sloguard.reporting.records import (
    DAY_SECONDS,
    Alert,
    Breach,
    BreachState,
    Escalation,
    HistoryPoint,
    MinuteAggregate,
    PruneResult,
)

DEFAULT_ROLLUP_AFTER_DAYS = 30
DEFAULT_RETENTION_DAYS = 400

Row = tuple[Any, ...]

# Version n is MIGRATIONS[n - 1]; a new version appends, never edits one that shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE sloguard_minutes (
            capability TEXT NOT NULL, minute {int} NOT NULL, replica TEXT NOT NULL,
            requests {int} NOT NULL, errors {int} NOT NULL, shed {int} NOT NULL,
            p50_ms {real}, p95_ms {real}, p99_ms {real}, compliant {small} NOT NULL,
            PRIMARY KEY (capability, minute, replica)){norowid}""",
        """CREATE TABLE sloguard_days (
            capability TEXT NOT NULL, day {int} NOT NULL,
            requests {int} NOT NULL, errors {int} NOT NULL, shed {int} NOT NULL,
            p50_ms {real}, p95_ms {real}, p99_ms {real},
            uptime_minutes {int} NOT NULL, downtime_minutes {int} NOT NULL,
            PRIMARY KEY (capability, day)){norowid}""",
        """CREATE TABLE sloguard_breaches (
            id TEXT PRIMARY KEY, capability TEXT NOT NULL, state TEXT NOT NULL,
            started_at {real} NOT NULL, ended_at {real}, violations TEXT NOT NULL,
            worst TEXT NOT NULL)""",
        "CREATE INDEX sloguard_breaches_by_capability "
        "ON sloguard_breaches (capability, started_at)",
        """CREATE TABLE sloguard_alerts (
            id TEXT PRIMARY KEY, capability TEXT NOT NULL, kind TEXT NOT NULL,
            channel TEXT NOT NULL, severity TEXT NOT NULL, summary TEXT NOT NULL,
            fired_at {real} NOT NULL, details TEXT NOT NULL)""",
        "CREATE INDEX sloguard_alerts_by_time ON sloguard_alerts (fired_at)",
    ),
    (
        "ALTER TABLE sloguard_breaches ADD COLUMN severity TEXT",
        "ALTER TABLE sloguard_breaches ADD COLUMN credit_pct {real}",
        """CREATE TABLE sloguard_escalations (
            alert_id TEXT PRIMARY KEY, capability TEXT NOT NULL, policy TEXT NOT NULL,
            summary TEXT NOT NULL, started_at {real} NOT NULL, level {int} NOT NULL,
            acked_at {real}, acked_by TEXT, stopped_at {real}, stop_reason TEXT)""",
        "CREATE INDEX sloguard_escalations_by_stop ON sloguard_escalations (stopped_at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_MINUTE_COLUMNS = (
    "capability, minute, replica, requests, errors, shed, p50_ms, p95_ms, p99_ms, compliant"
)
_UPSERT_MINUTE = (
    f"INSERT INTO sloguard_minutes ({_MINUTE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (capability, minute, replica) DO UPDATE SET requests = excluded.requests, "
    "errors = excluded.errors, shed = excluded.shed, p50_ms = excluded.p50_ms, "
    "p95_ms = excluded.p95_ms, p99_ms = excluded.p99_ms, compliant = excluded.compliant"
)
# One row per minute, merged across replicas (the rules in repository.py's docstring).
_PER_MINUTE = (
    "SELECT {keys}, SUM(requests) AS req, SUM(errors) AS err, SUM(shed) AS sh, "
    "MAX(p50_ms) AS p50, MAX(p95_ms) AS p95, MAX(p99_ms) AS p99, MIN(compliant) AS ok "
    "FROM sloguard_minutes WHERE {where} GROUP BY {keys}"
)
# The same merge in one pass (twice as fast as grouping by minute first): a minute
# is downtime when any replica's row for it is non-compliant.
_DOWN = "COUNT(DISTINCT CASE WHEN compliant = 0 THEN minute END)"
_HISTORY_MINUTES = (
    "SELECT (minute / {step}) * {step} AS t, SUM(requests), SUM(errors), SUM(shed), "
    f"MAX(p50_ms), MAX(p95_ms), MAX(p99_ms), COUNT(DISTINCT minute) - {_DOWN}, {_DOWN} "
    "FROM sloguard_minutes WHERE capability = ? AND minute >= ? AND minute < ? "
    "GROUP BY 1 ORDER BY 1"
)
_HISTORY_DAYS = (
    "SELECT (day / {step}) * {step} AS t, SUM(requests), SUM(errors), SUM(shed), MAX(p50_ms), "
    "MAX(p95_ms), MAX(p99_ms), SUM(uptime_minutes), SUM(downtime_minutes) FROM sloguard_days "
    "WHERE capability = ? AND day >= ? AND day < ? GROUP BY 1 ORDER BY 1"
)


def _larger(column: str) -> str:
    """The larger of the stored and the incoming value, either possibly NULL (both dialects)."""
    old, new = f"sloguard_days.{column}", f"excluded.{column}"
    return (
        f"{column} = CASE WHEN {old} IS NULL THEN {new} WHEN {new} IS NULL THEN {old} "
        f"WHEN {new} > {old} THEN {new} ELSE {old} END"
    )


_ROLLUP = (
    "INSERT INTO sloguard_days (capability, day, requests, errors, shed, p50_ms, p95_ms, p99_ms, "
    "uptime_minutes, downtime_minutes) "
    "SELECT capability, (minute / 86400) * 86400, SUM(req), SUM(err), SUM(sh), MAX(p50), "
    "MAX(p95), MAX(p99), SUM(ok), COUNT(*) - SUM(ok) FROM ("
    + _PER_MINUTE.format(keys="capability, minute", where="minute < ?")
    + ") AS m WHERE 1 = 1 GROUP BY capability, (minute / 86400) * 86400 "
    "ON CONFLICT (capability, day) DO UPDATE SET "
    "requests = sloguard_days.requests + excluded.requests, "
    "errors = sloguard_days.errors + excluded.errors, shed = sloguard_days.shed + excluded.shed, "
    + ", ".join(_larger(c) for c in ("p50_ms", "p95_ms", "p99_ms"))
    + ", uptime_minutes = sloguard_days.uptime_minutes + excluded.uptime_minutes, "
    "downtime_minutes = sloguard_days.downtime_minutes + excluded.downtime_minutes"
)
_BREACH_COLUMNS = (
    "id, capability, state, started_at, ended_at, violations, worst, severity, credit_pct"
)
_ESCALATION_COLUMNS = (
    "alert_id, capability, policy, summary, started_at, level, acked_at, acked_by, "
    "stopped_at, stop_reason"
)
_ALERT_COLUMNS = "id, capability, kind, channel, severity, summary, fired_at, details"


class Transaction(Protocol):
    """One transaction on one connection; ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class SQLHistory(ABC):
    """A :class:`~sloguard.reporting.repository.HistoryRepository` over a SQL database."""

    ddl_types: ClassVar[dict[str, str]]
    """The dialect's names for ``{int}``, ``{real}``, ``{small}`` and ``{norowid}``."""

    def __init__(
        self,
        *,
        rollup_after_days: int = DEFAULT_ROLLUP_AFTER_DAYS,
        retention_days: int = DEFAULT_RETENTION_DAYS,
    ) -> None:
        if rollup_after_days < 1:
            raise ConfigurationError(
                f"rollup_after_days must be at least 1, got {rollup_after_days!r}"
            )
        if retention_days < rollup_after_days:
            raise ConfigurationError(
                f"retention_days ({retention_days}) must be at least "
                f"rollup_after_days ({rollup_after_days})"
            )
        self.rollup_after_days = rollup_after_days
        self.retention_days = retention_days

    @abstractmethod
    def transaction(self, *, exclusive: bool = False) -> AbstractContextManager[Transaction]:
        """A transaction; ``exclusive``: serialized with every other exclusive one,
        across processes (migrations, rollups)."""

    def _prepare(self, tx: Transaction) -> None:  # noqa: B027 - optional hook
        """Dialect set-up run first in the migration transaction (e.g. create the schema)."""

    # -- schema ------------------------------------------------------------------

    def migrate(self) -> int:
        with self.transaction(exclusive=True) as tx:
            self._prepare(tx)
            tx.execute(
                "CREATE TABLE IF NOT EXISTS sloguard_schema_version ("
                "version {int} NOT NULL, applied_at {real} NOT NULL)".format(**self.ddl_types)
            )
            (current,) = tx.fetch("SELECT MAX(version) FROM sloguard_schema_version")[0]
            current = int(current or 0)
            if current > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"the history store has schema version {current}, newer than this "
                    f"sloguard's {SCHEMA_VERSION}: upgrade sloguard"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    tx.execute(statement.format(**self.ddl_types))
                tx.execute(
                    "INSERT INTO sloguard_schema_version (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
        return SCHEMA_VERSION

    def schema_version(self) -> int:
        """The version recorded in the store (0 before :meth:`migrate`)."""
        with self.transaction() as tx:
            (version,) = tx.fetch("SELECT MAX(version) FROM sloguard_schema_version")[0]
        return int(version or 0)

    # -- minutes -----------------------------------------------------------------

    def write_minutes(self, rows: Sequence[MinuteAggregate]) -> None:
        if not rows:
            return
        params = [
            (
                r.capability,
                r.minute,
                r.replica,
                r.requests,
                r.errors,
                r.shed,
                r.p50_ms,
                r.p95_ms,
                r.p99_ms,
                int(r.compliant),
            )
            for r in rows
        ]
        with self.transaction() as tx:
            tx.executemany(_UPSERT_MINUTE, params)

    def history(self, capability: str, since: int, until: int, step: int) -> list[HistoryPoint]:
        if step < 60 or step % 60:
            raise ValueError(f"step must be a positive multiple of 60 seconds, got {step!r}")
        args = (capability, since, until)
        with self.transaction() as tx:
            rows = tx.fetch(_HISTORY_DAYS.format(step=int(step)), args)
            rows += tx.fetch(_HISTORY_MINUTES.format(step=int(step)), args)
        points: dict[int, HistoryPoint] = {}
        for row in rows:
            point = _point(row)
            earlier = points.get(point.start)
            points[point.start] = point if earlier is None else _merge(earlier, point)
        return [points[start] for start in sorted(points)]

    def capabilities(self) -> list[str]:
        with self.transaction() as tx:
            rows = tx.fetch(
                "SELECT DISTINCT capability FROM sloguard_minutes UNION "
                "SELECT DISTINCT capability FROM sloguard_days"
            )
        return sorted(str(capability) for (capability,) in rows)

    def minute_rows(self, capability: str, since: int, until: int) -> list[MinuteAggregate]:
        """The raw rows of every replica in ``[since, until)``, by minute then replica."""
        with self.transaction() as tx:
            rows = tx.fetch(
                f"SELECT {_MINUTE_COLUMNS} FROM sloguard_minutes WHERE capability = ? "
                "AND minute >= ? AND minute < ? ORDER BY minute, replica",
                (capability, since, until),
            )
        return [
            MinuteAggregate(
                capability=str(r[0]),
                minute=int(r[1]),
                replica=str(r[2]),
                requests=int(r[3]),
                errors=int(r[4]),
                shed=int(r[5]),
                p50_ms=_float(r[6]),
                p95_ms=_float(r[7]),
                p99_ms=_float(r[8]),
                compliant=bool(r[9]),
            )
            for r in rows
        ]

    # -- breaches and alerts -----------------------------------------------------

    def save_breach(self, breach: Breach) -> None:
        with self.transaction() as tx:
            tx.execute(
                f"INSERT INTO sloguard_breaches ({_BREACH_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET capability = excluded.capability, "
                "state = excluded.state, started_at = excluded.started_at, "
                "ended_at = excluded.ended_at, violations = excluded.violations, "
                "worst = excluded.worst, severity = excluded.severity, "
                "credit_pct = excluded.credit_pct",
                (
                    breach.id,
                    breach.capability,
                    breach.state,
                    breach.started_at,
                    breach.ended_at,
                    json.dumps(list(breach.violations)),
                    json.dumps(breach.worst),
                    breach.severity,
                    breach.credit_pct,
                ),
            )

    def breach(self, breach_id: str) -> Breach | None:
        with self.transaction() as tx:
            rows = tx.fetch(
                f"SELECT {_BREACH_COLUMNS} FROM sloguard_breaches WHERE id = ?", (breach_id,)
            )
        return _breach(rows[0]) if rows else None

    def breaches(
        self,
        capability: str | None = None,
        state: BreachState | None = None,
        since: float | None = None,
        until: float | None = None,
        severities: Sequence[str] | None = None,
    ) -> list[Breach]:
        where, params = _filters(
            ("capability = ?", capability),
            ("state = ?", state),
            ("started_at >= ?", since),
            ("started_at < ?", until),
            (_in("severity", severities), severities),
        )
        with self.transaction() as tx:
            rows = tx.fetch(
                f"SELECT {_BREACH_COLUMNS} FROM sloguard_breaches{where} ORDER BY started_at, id",
                params,
            )
        return [_breach(row) for row in rows]

    def save_alert(self, alert: Alert) -> bool:
        with self.transaction() as tx:
            changed = tx.execute(
                f"INSERT INTO sloguard_alerts ({_ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (
                    alert.id,
                    alert.capability,
                    alert.kind,
                    alert.channel,
                    alert.severity,
                    alert.summary,
                    alert.fired_at,
                    json.dumps(alert.details, default=str),
                ),
            )
        return changed == 1

    def alerts(
        self, capability: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[Alert]:
        where, params = _filters(("capability = ?", capability), ("fired_at >= ?", since))
        with self.transaction() as tx:
            rows = tx.fetch(
                f"SELECT {_ALERT_COLUMNS} FROM sloguard_alerts{where} "
                f"ORDER BY fired_at DESC, id LIMIT {int(limit)}",
                params,
            )
        return [
            Alert(
                id=str(r[0]),
                capability=str(r[1]),
                kind=r[2],
                channel=str(r[3]),
                severity=r[4],
                summary=str(r[5]),
                fired_at=float(r[6]),
                details=json.loads(r[7]),
            )
            for r in rows
        ]

    # -- escalations -------------------------------------------------------------

    def start_escalation(self, escalation: Escalation) -> bool:
        with self.transaction() as tx:
            changed = tx.execute(
                f"INSERT INTO sloguard_escalations ({_ESCALATION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_id) DO NOTHING",
                _escalation_row(escalation),
            )
        return changed == 1

    def escalations(
        self, alert_ids: Sequence[str] | None = None, *, active: bool = False
    ) -> list[Escalation]:
        where, params = _filters((_in("alert_id", alert_ids), alert_ids))
        if active:
            where += (" AND" if where else " WHERE") + " acked_at IS NULL AND stopped_at IS NULL"
        with self.transaction() as tx:
            rows = tx.fetch(
                f"SELECT {_ESCALATION_COLUMNS} FROM sloguard_escalations{where} "
                "ORDER BY started_at, alert_id",
                params,
            )
        return [_escalation(row) for row in rows]

    def claim_level(self, alert_id: str, level: int) -> bool:
        with self.transaction() as tx:
            changed = tx.execute(
                "UPDATE sloguard_escalations SET level = ? WHERE alert_id = ? AND level = ? "
                "AND acked_at IS NULL AND stopped_at IS NULL",
                (level, alert_id, level - 1),
            )
        return changed == 1

    def ack_escalation(self, alert_id: str, at: float, by: str | None) -> Escalation | None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE sloguard_escalations SET acked_at = ?, acked_by = ? "
                "WHERE alert_id = ? AND acked_at IS NULL",
                (at, by, alert_id),
            )
            rows = tx.fetch(
                f"SELECT {_ESCALATION_COLUMNS} FROM sloguard_escalations WHERE alert_id = ?",
                (alert_id,),
            )
        return _escalation(rows[0]) if rows else None

    def stop_escalation(self, alert_id: str, at: float, reason: str) -> bool:
        with self.transaction() as tx:
            changed = tx.execute(
                "UPDATE sloguard_escalations SET stopped_at = ?, stop_reason = ? "
                "WHERE alert_id = ? AND stopped_at IS NULL",
                (at, reason, alert_id),
            )
        return changed == 1

    # -- retention ---------------------------------------------------------------

    def prune(self, now: float) -> PruneResult:
        today = int(now // DAY_SECONDS) * DAY_SECONDS
        rollup_before = today - self.rollup_after_days * DAY_SECONDS
        keep_from = today - self.retention_days * DAY_SECONDS
        # Exclusive: two replicas rolling the same minutes at once would count them twice.
        with self.transaction(exclusive=True) as tx:
            tx.execute(_ROLLUP, (rollup_before,))
            rolled = tx.execute("DELETE FROM sloguard_minutes WHERE minute < ?", (rollup_before,))
            days = tx.execute("DELETE FROM sloguard_days WHERE day < ?", (keep_from,))
            breaches = tx.execute(
                "DELETE FROM sloguard_breaches WHERE ended_at IS NOT NULL AND ended_at < ?",
                (keep_from,),
            )
            alerts = tx.execute("DELETE FROM sloguard_alerts WHERE fired_at < ?", (keep_from,))
            tx.execute("DELETE FROM sloguard_escalations WHERE started_at < ?", (keep_from,))
        return PruneResult(rolled, days, breaches, alerts)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _point(row: Row) -> HistoryPoint:
    return HistoryPoint(
        start=int(row[0]),
        requests=int(row[1] or 0),
        errors=int(row[2] or 0),
        shed=int(row[3] or 0),
        p50_ms=_float(row[4]),
        p95_ms=_float(row[5]),
        p99_ms=_float(row[6]),
        compliant_minutes=int(row[7] or 0),
        downtime_minutes=int(row[8] or 0),
    )


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _merge(a: HistoryPoint, b: HistoryPoint) -> HistoryPoint:
    """One step that holds both day rows and minute rows (the rollup boundary)."""
    return HistoryPoint(
        start=a.start,
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        shed=a.shed + b.shed,
        p50_ms=_max(a.p50_ms, b.p50_ms),
        p95_ms=_max(a.p95_ms, b.p95_ms),
        p99_ms=_max(a.p99_ms, b.p99_ms),
        compliant_minutes=a.compliant_minutes + b.compliant_minutes,
        downtime_minutes=a.downtime_minutes + b.downtime_minutes,
    )


def _breach(row: Row) -> Breach:
    return Breach(
        id=str(row[0]),
        capability=str(row[1]),
        state=row[2],
        started_at=float(row[3]),
        ended_at=_float(row[4]),
        violations=tuple(json.loads(row[5])),
        worst={k: float(v) for k, v in json.loads(row[6]).items()},
        severity=row[7],
        credit_pct=_float(row[8]),
    )


def _escalation_row(e: Escalation) -> tuple[Any, ...]:
    return (
        e.alert_id,
        e.capability,
        e.policy,
        e.summary,
        e.started_at,
        e.level,
        e.acked_at,
        e.acked_by,
        e.stopped_at,
        e.stop_reason,
    )


def _escalation(row: Row) -> Escalation:
    return Escalation(
        alert_id=str(row[0]),
        capability=str(row[1]),
        policy=str(row[2]),
        summary=str(row[3]),
        started_at=float(row[4]),
        level=int(row[5]),
        acked_at=_float(row[6]),
        acked_by=None if row[7] is None else str(row[7]),
        stopped_at=_float(row[8]),
        stop_reason=None if row[9] is None else str(row[9]),
    )


def _in(column: str, values: Sequence[str] | None) -> str:
    """``column IN (?, ?, ...)``; never empty SQL (an empty list matches nothing)."""
    if values is not None and not values:
        return "1 = 0"
    return f"{column} IN ({', '.join('?' * len(values or ()))})"


def _filters(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """`` WHERE`` and the parameters of the conditions whose value is not None (a list
    value gives one parameter per item: an ``IN``)."""
    clauses = [(sql, value) for sql, value in conditions if value is not None]
    if not clauses:
        return "", []
    params: list[Any] = []
    for _, value in clauses:
        params += list(value) if isinstance(value, list | tuple) else [value]
    return " WHERE " + " AND ".join(sql for sql, _ in clauses), params
