"""The names other code relies on (DESIGN.md, "Public API")."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys

import pytest

import sloguard


def test_exported_members() -> None:
    for name in sloguard.__all__:
        assert getattr(sloguard, name) is not None, name
    assert {
        "IdempotencyMiddleware",
        "MemoryStore",
        "RedisStore",
        "Store",
        "StoreUnavailable",
    } <= set(sloguard.__all__)


def test_redis_store_is_imported_only_when_asked_for() -> None:
    code = (
        "import sys, sloguard; assert 'redis' not in sys.modules; "
        "from sloguard import RedisStore; assert 'redis' in sys.modules; "
        "assert RedisStore is sloguard.idempotency.RedisStore"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchStore"):
        sloguard.NoSuchStore  # noqa: B018


def test_the_package_ships_type_information() -> None:
    assert importlib.resources.files("sloguard").joinpath("py.typed").is_file()
