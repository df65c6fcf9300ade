"""History in PostgreSQL, for several replicas writing one store (psycopg 3).

Install with ``pip install 'sloguard[postgres]'``. Each replica writes its own
minute rows (keyed by replica id), so writers never contend for a row;
queries merge replicas as :mod:`sloguard.reporting.repository` describes.
Migrations and rollups hold a transaction-scoped advisory lock, so two
replicas starting or pruning together do not collide or count twice.

One connection per repository, behind a lock: the recorder flushes every few
seconds and reports are occasional, so a pool would only add a dependency.
A connection that breaks is replaced at the next call.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from sloguard.exceptions import ConfigurationError
from sloguard.reporting._sql import (
    DEFAULT_RETENTION_DAYS,
    DEFAULT_ROLLUP_AFTER_DAYS,
    Row,
    SQLHistory,
)

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the PostgreSQL history store needs psycopg 3: pip install 'sloguard[postgres]'"
    ) from exc

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class _PostgresTransaction:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: psycopg.Cursor[Row]) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cursor.execute(_placeholders(sql), params)
        return self._cursor.rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(_placeholders(sql), rows)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cursor.execute(_placeholders(sql), params)
        return self._cursor.fetchall()


class PostgresHistory(SQLHistory):
    """History in the PostgreSQL database at ``url``, in ``schema`` (default ``public``)."""

    ddl_types: ClassVar[dict[str, str]] = {
        "int": "BIGINT",
        "real": "DOUBLE PRECISION",
        "small": "SMALLINT",
        "norowid": "",
    }

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        rollup_after_days: int = DEFAULT_ROLLUP_AFTER_DAYS,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        connect_timeout_s: int = 5,
    ) -> None:
        super().__init__(rollup_after_days=rollup_after_days, retention_days=retention_days)
        if schema is not None and not _IDENTIFIER.match(schema):
            raise ConfigurationError(
                f"schema must be a plain SQL identifier (letters, digits, _), got {schema!r}"
            )
        self.url = url
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        self._lock_key = zlib.crc32(f"sloguard-history:{schema or 'public'}".encode())
        self._mutex = threading.Lock()
        self._connection: psycopg.Connection[Row] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresHistory(schema={self.schema or 'public'!r})"  # the URL may hold a secret

    def _connect(self) -> psycopg.Connection[Row]:
        connection = self._connection
        if connection is not None and not connection.closed and not connection.broken:
            return connection
        if self._closed:
            raise RuntimeError("the history repository is closed")
        if connection is not None:
            connection.close()
        connection = psycopg.connect(
            self.url, autocommit=True, connect_timeout=self.connect_timeout_s
        )
        if self.schema is not None:
            connection.execute(f'SET search_path TO "{self.schema}"')
        self._connection = connection
        return connection

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[_PostgresTransaction]:
        with self._mutex:
            connection = self._connect()
            with connection.transaction(), connection.cursor() as cursor:
                if exclusive:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                yield _PostgresTransaction(cursor)

    def _prepare(self, tx: Any) -> None:
        if self.schema is not None:
            tx.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

    def drop_schema(self) -> None:
        """Drop this repository's schema and everything in it (tests use one schema each)."""
        if self.schema is None:
            raise ConfigurationError("refusing to drop the public schema")
        with self.transaction() as tx:
            tx.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _placeholders(sql: str) -> str:
    return sql.replace("?", "%s")
