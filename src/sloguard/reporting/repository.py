"""The history repository: where minute aggregates, breaches and alerts are kept.

One small synchronous interface, :class:`HistoryRepository`, with two
implementations: SQLite (the embedded default, :mod:`sloguard.reporting.sqlite`)
and PostgreSQL for several replicas (:mod:`sloguard.reporting.postgres`, extra
``sloguard[postgres]``). Callers on an event loop call it through
``asyncio.to_thread``: it blocks on disk and network.

Every replica writes its own minute rows; queries aggregate across replicas:

- counts (requests, errors, shed) are summed;
- a latency quantile is the **largest** of the replicas' quantiles. The quantile
  of a union of samples never exceeds the largest quantile of its parts, so the
  figure is an upper bound: a report never shows latency better than it was;
- a minute is **compliant** only if every replica that reported it was.

Minutes older than ``rollup_after_days`` (30) are rolled into one row per
capability and UTC day (merged across replicas, with its compliant and
non-compliant minutes counted); rows older than ``retention_days`` (400) are
dropped by :meth:`HistoryRepository.prune`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sloguard.exceptions import ConfigurationError
from sloguard.reporting._sql import DEFAULT_RETENTION_DAYS, DEFAULT_ROLLUP_AFTER_DAYS
from sloguard.reporting.records import (
    DAY_SECONDS,
    Alert,
    Breach,
    BreachState,
    HistoryPoint,
    MinuteAggregate,
    PruneResult,
)

__all__ = [
    "DAY_SECONDS",
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_ROLLUP_AFTER_DAYS",
    "HistoryPoint",
    "HistoryRepository",
    "PruneResult",
    "open_repository",
]


@runtime_checkable
class HistoryRepository(Protocol):
    """Durable SLO history. Synchronous: call it off the event loop (``asyncio.to_thread``).

    Safe to call from several threads at once.
    """

    def migrate(self) -> int:
        """Create or upgrade the schema; idempotent, safe from two processes at once.

        Returns the schema version.
        """
        ...

    def write_minutes(self, rows: Sequence[MinuteAggregate]) -> None:
        """Store ``rows``; a row with the same (capability, minute, replica) is replaced."""
        ...

    def history(self, capability: str, since: int, until: int, step: int) -> list[HistoryPoint]:
        """The points of ``capability`` in ``[since, until)``, one per ``step`` seconds
        (a multiple of 60) that has data, oldest first, merged across replicas."""
        ...

    def capabilities(self) -> list[str]:
        """Every capability with history, sorted."""
        ...

    def save_breach(self, breach: Breach) -> None:
        """Insert ``breach``, or replace the one with its id."""
        ...

    def breach(self, breach_id: str) -> Breach | None:
        """The breach with this id, or None."""
        ...

    def breaches(
        self,
        capability: str | None = None,
        state: BreachState | None = None,
        since: float | None = None,
        until: float | None = None,
        severities: Sequence[str] | None = None,
    ) -> list[Breach]:
        """Breaches, oldest first, filtered by capability, state, start in ``[since, until)``
        and severity (any of ``severities``)."""
        ...

    def save_alert(self, alert: Alert) -> bool:
        """Store ``alert``; False (and nothing changes) when one with its id exists already."""
        ...

    def alerts(
        self, capability: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[Alert]:
        """Alerts fired at or after ``since``, newest first, at most ``limit``."""
        ...

    def prune(self, now: float) -> PruneResult:
        """Roll minutes older than the rollup age into days; drop what is past retention."""
        ...

    def close(self) -> None:
        """Release connections; the repository is unusable afterwards."""
        ...


def open_repository(
    target: str | os.PathLike[str],
    *,
    rollup_after_days: int = DEFAULT_ROLLUP_AFTER_DAYS,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    schema: str | None = None,
    migrate: bool = True,
) -> HistoryRepository:
    """Open (and by default migrate) the repository at ``target``.

    ``target`` is a file path or ``sqlite:///path`` (SQLite), or
    ``postgresql://...`` / ``postgres://...`` (PostgreSQL; needs
    ``sloguard[postgres]``). ``schema``: the PostgreSQL schema to keep the
    tables in (default ``public``).
    """
    text = os.fspath(target)
    repository: HistoryRepository
    if text.startswith(("postgresql://", "postgres://")):
        from sloguard.reporting.postgres import PostgresHistory

        repository = PostgresHistory(
            text,
            schema=schema,
            rollup_after_days=rollup_after_days,
            retention_days=retention_days,
        )
    else:
        if schema is not None:
            raise ConfigurationError("schema applies to PostgreSQL only")
        if text.startswith("sqlite://"):
            text = text.removeprefix("sqlite://")
            # sqlite:///relative/path is relative; sqlite:////abs/path is absolute
            text = text[1:] if text.startswith("/") else text
        elif "://" in text:
            raise ConfigurationError(
                f"unsupported history store {text!r}: use a path, sqlite:///path "
                "or postgresql://..."
            )
        if not text:
            raise ConfigurationError("the SQLite history store needs a file path")
        from sloguard.reporting.sqlite import SQLiteHistory

        repository = SQLiteHistory(
            text, rollup_after_days=rollup_after_days, retention_days=retention_days
        )
    if migrate:
        repository.migrate()
    return repository
