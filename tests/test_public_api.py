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


def test_the_gate_exports_what_it_lists() -> None:
    import sloguard.gate

    for name in sloguard.gate.__all__:
        assert getattr(sloguard.gate, name) is not None, name


def test_the_pytest_plugin_is_registered_for_pytest() -> None:
    from importlib.metadata import entry_points

    [plugin] = [ep for ep in entry_points(group="pytest11") if ep.name == "sloguard"]
    assert plugin.value == "sloguard.pytest_plugin"
    # Loaded by every pytest run: the gate is imported only when an option asks for it.
    code = "import sys, sloguard.pytest_plugin; assert 'sloguard.gate' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
