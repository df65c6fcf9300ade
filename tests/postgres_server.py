"""The PostgreSQL server the tests use: ``DATABASE_URL`` (default ``test`` on 127.0.0.1:5432).

Every test works in a schema of its own (``sloguard_test_<random>``), dropped
afterwards, so parallel runs never collide. When no server answers, the tests
that need one are skipped with the reason, unless ``CI`` is set: then they
fail. ``.ci/run`` starts one.
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from tests.redis_server import in_ci

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def check_postgres(url: str = DATABASE_URL) -> str:
    """Return ``url`` if PostgreSQL answers there; otherwise skip (or fail in CI)."""
    try:
        with psycopg.connect(url, connect_timeout=2) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"no PostgreSQL answers at {url} ({str(exc).strip()})"
        if in_ci():
            pytest.fail(f"{reason} (CI is set: PostgreSQL tests must run, not skip)", pytrace=False)
        pytest.skip(f"{reason}; set DATABASE_URL, or run .ci/run, which starts one")
    return url


def unique_schema() -> str:
    """A schema name no other test run uses."""
    return f"sloguard_test_{uuid.uuid4().hex[:16]}"
