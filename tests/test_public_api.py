"""The names other code relies on (DESIGN.md, "Public API")."""

from __future__ import annotations

import importlib.resources

import sloguard


def test_exported_members() -> None:
    for name in sloguard.__all__:
        assert getattr(sloguard, name) is not None, name
    assert {"IdempotencyMiddleware", "MemoryStore", "Store"} <= set(sloguard.__all__)


def test_the_package_ships_type_information() -> None:
    assert importlib.resources.files("sloguard").joinpath("py.typed").is_file()
