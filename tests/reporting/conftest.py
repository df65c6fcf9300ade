from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sloguard.reporting._sql import SQLHistory
from sloguard.reporting.repository import open_repository
from sloguard.reporting.sqlite import SQLiteHistory
from tests.postgres_server import check_postgres, unique_schema

SLO = """\
capability: {{verb: {verb}, name: {name}}}
slo:
  latency: {{p50_ms: 50, p95_ms: 100, p99_ms: 200}}
  availability: {{target: 0.99}}
{extra}"""


def write_slo(directory: Path, verb: str = "convert", name: str = "pdf", extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{verb}_{name}.yml"
    path.write_text(SLO.format(verb=verb, name=name, extra=extra), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def database_url() -> str:
    return check_postgres()


@pytest.fixture
def sqlite_repository(tmp_path: Path) -> Iterator[SQLiteHistory]:
    repository = SQLiteHistory(tmp_path / "history.sqlite3")
    repository.migrate()
    yield repository
    repository.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """``(target, schema)`` of an empty store: a SQLite file, or a PostgreSQL schema of
    this test's own (dropped afterwards)."""
    if request.param == "sqlite":
        yield str(tmp_path / "history.sqlite3"), None
        return
    url = request.getfixturevalue("database_url")
    schema = unique_schema()
    yield url, schema
    from sloguard.reporting.postgres import PostgresHistory

    cleaner = PostgresHistory(url, schema=schema)
    cleaner.drop_schema()
    cleaner.close()


@pytest.fixture
def repository(backend: tuple[str, str | None]) -> Iterator[SQLHistory]:
    target, schema = backend
    repository = open_repository(target, schema=schema)
    assert isinstance(repository, SQLHistory)
    yield repository
    repository.close()
