"""The embedded history store: one SQLite file in WAL mode (stdlib ``sqlite3``).

Each thread gets its own connection, so a report read in one worker thread
runs while a flush writes in another (WAL lets readers and one writer
proceed together). Writes take the database's write lock at ``BEGIN
IMMEDIATE`` and wait up to ``busy_timeout_s`` for another writer, in this
process or another.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from sloguard.reporting._sql import (
    DEFAULT_RETENTION_DAYS,
    DEFAULT_ROLLUP_AFTER_DAYS,
    Row,
    SQLHistory,
)


class _SQLiteTransaction:
    __slots__ = ("_connection",)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._connection.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._connection.executemany(sql, rows)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._connection.execute(sql, params).fetchall()


class SQLiteHistory(SQLHistory):
    """History in the SQLite file at ``path`` (created, with its directory, if missing)."""

    ddl_types: ClassVar[dict[str, str]] = {
        "int": "INTEGER",
        "real": "REAL",
        "small": "INTEGER",
        "norowid": " WITHOUT ROWID",
    }

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rollup_after_days: int = DEFAULT_ROLLUP_AFTER_DAYS,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        busy_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(rollup_after_days=rollup_after_days, retention_days=retention_days)
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteHistory({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise RuntimeError("the history repository is closed")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (isolation_level=None): transactions are the explicit BEGINs below.
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._use_wal(connection)
        # NORMAL is durable across a process crash in WAL mode; only a power loss can
        # lose the last commits, which the recorder's interval already allows.
        connection.execute("PRAGMA synchronous=NORMAL")
        self._local.connection = connection
        # Store calls come from short-lived threads: a thread that has ended leaves its
        # connection (and two file descriptors) behind, closed here.
        with self._lock:
            ended = [c for thread, c in self._connections if not thread.is_alive()]
            self._connections = [(t, c) for t, c in self._connections if t.is_alive()]
            self._connections.append((threading.current_thread(), connection))
        for stale in ended:
            stale.close()
        return connection

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """Put the file in WAL mode (it stays so; later connections find it done).

        SQLite does not call its busy handler while a connection changes the journal
        mode, so connections opening a new file at once can see "database is
        locked" here: retry, for up to ``busy_timeout_s`` as a write would wait.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.001
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 0.05)

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[_SQLiteTransaction]:
        connection = self._connection()
        # IMMEDIATE takes the write lock up front: a transaction that reads, then writes
        # would otherwise fail with "database is locked" instead of waiting its turn.
        connection.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")
        try:
            yield _SQLiteTransaction(connection)
            connection.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT (a full disk): a transaction left open would
            # make every later BEGIN on this thread's connection fail.
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for _, connection in connections:
            connection.close()
        self._local = threading.local()
